"""Which exchange and accounts a storage file belongs to.

Broker order ids are unique only within one exchange's accounts, and everything in storage (the
inbox's dedupe keys, leader orders by id, copies by broker order id) assumes they are. Storage
opened for another exchange or another leader would take that account's orders for ones it has
already copied: modify and cancel calls for the wrong orders, and new orders never copied. So a
storage file records, when it is first used, the mode and every account's client id and API base
URL, and refuses, later, to be opened for anything else. A follower added to the config is the
same storage with one more account; a follower whose client id changed is not.

Paper mode does not keep storage between runs: its exchange lives in memory and numbers its
orders from the same start every run, so storage it leaves behind describes orders no exchange
holds. It starts with empty storage instead, and never empties storage a live run made.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Mapping

from storage import models as m
from storage.store import Store
from trading.leader import is_leader, leader_label

IDENTITY_SETTING = "storage_identity"


class StorageMismatch(RuntimeError):
    """The storage belongs to another exchange or leader; the message is one line naming it."""


@dataclass(frozen=True)
class Account:
    client_id: str
    api_base_url: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "api_base_url", self.api_base_url.rstrip("/"))


@dataclass(frozen=True)
class StorageIdentity:
    mode: str  # live | paper
    leader: Account
    followers: Mapping[str, Account] = field(default_factory=dict)  # by follower name

    def to_json(self) -> str:
        accounts = {"leader": self.leader, **self.followers}
        return json.dumps({"mode": self.mode, "accounts": {name: {"client_id": a.client_id,
                                                                  "api_base_url": a.api_base_url}
                                                           for name, a in accounts.items()}}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "StorageIdentity":
        data = json.loads(text)
        accounts = {name: Account(str(a["client_id"]), str(a["api_base_url"])) for name, a in data["accounts"].items()}
        leader = accounts.pop("leader")
        return cls(str(data["mode"]), leader, accounts)

    def with_followers_of(self, other: "StorageIdentity") -> "StorageIdentity":
        """This identity plus the followers only `other` names (a removed follower stays recorded,
        so bringing it back with another client id is still refused)."""
        return StorageIdentity(self.mode, self.leader, {**other.followers, **self.followers})


def differences(stored: StorageIdentity, config: StorageIdentity) -> list[str]:
    """What makes `config` another exchange or leader than `stored`, each as `key: stored X,
    config Y`; empty when it is the same (a follower `stored` does not name is new, not different)."""
    out: list[str] = []
    if stored.mode != config.mode:
        out.append(f"mode: stored {stored.mode}, config {config.mode}")
    pairs = [("leader", stored.leader, config.leader)]
    pairs += [(leader_label(name) if is_leader(name) else f"followers {name}", stored.followers[name], account)
              for name, account in config.followers.items() if name in stored.followers]
    for key, before, now in pairs:
        for name in ("client_id", "api_base_url"):
            if getattr(before, name) != getattr(now, name):
                out.append(f"{key}.{name}: stored {getattr(before, name)}, config {getattr(now, name)}")
    return out


def stored_identity(store: Store) -> StorageIdentity | None:
    text = store.settings.get(IDENTITY_SETTING)
    return StorageIdentity.from_json(text) if text else None


def holds_orders(store: Store) -> bool:
    """Anything of a trading session stored: leader orders, copies or received updates."""
    return store.read(lambda: any(model.select().limit(1).exists()
                                  for model in (m.LeaderOrder, m.FollowerOrder, m.InboundEvent)))


def check(store: Store, config: StorageIdentity, path: str) -> None:
    """Refuse (StorageMismatch) storage that belongs to another exchange or leader; record nothing."""
    _refuse_another(stored_identity(store), config, path)


def _refuse_another(stored: StorageIdentity | None, config: StorageIdentity, path: str) -> None:
    found = differences(stored, config) if stored is not None else []
    if found:
        raise StorageMismatch(f"storage.path {path} was made for another exchange or leader "
                              f"({'; '.join(found)}): give this config its own storage.path")


def claim(store: Store, config: StorageIdentity, path: str) -> bool:
    """Open storage for a live run: refuse it (StorageMismatch) when it belongs to another exchange
    or leader, else record `config` (with any new follower). True when the storage held orders but
    no identity (made before identities were recorded): it is adopted as this config's."""
    stored = stored_identity(store)
    if stored is None:
        store.settings.set(IDENTITY_SETTING, config.to_json())
        return holds_orders(store)
    _refuse_another(stored, config, path)
    updated = config.with_followers_of(stored)
    if updated != stored:
        store.settings.set(IDENTITY_SETTING, updated.to_json())
    return False


def start_afresh(store: Store, path: str) -> None:
    """Paper mode: empty the storage of an earlier paper run. Storage a live run made, or one that
    holds orders but does not say whose, is refused (StorageMismatch), never emptied."""
    stored = stored_identity(store)
    if stored is not None and stored.mode != "paper":
        raise StorageMismatch(f"storage.path {path} holds the orders of a {stored.mode} run (leader "
                              f"{stored.leader.client_id}); paper mode starts with empty storage and will not "
                              "erase them: give the demo its own storage.path")
    if stored is None and holds_orders(store):
        raise StorageMismatch(f"storage.path {path} holds orders but does not record which exchange they "
                              "belong to (made by an earlier version); paper mode starts with empty storage and "
                              "will not erase them: give the demo its own storage.path, or move the file away")

    def empty() -> None:
        for model in m.ALL_MODELS:
            model.delete().execute()

    store.write(empty)


def record(store: Store, identity: StorageIdentity) -> None:
    """Record the identity of storage that was just emptied or created."""
    store.settings.set(IDENTITY_SETTING, identity.to_json())


def add_follower(store: Store, name: str, account: Account, path: str) -> None:
    """A follower added while the copier runs: recorded like one added to the config before a start,
    refused (StorageMismatch) when storage knows that name with another account or URL."""
    stored = stored_identity(store)
    if stored is None:
        return  # an identity is recorded by every start; none means storage predates identities
    candidate = StorageIdentity(stored.mode, stored.leader, {name: account})
    found = differences(stored, candidate)
    if found:
        raise StorageMismatch(f"storage.path {path} knows follower {name} as another account ({'; '.join(found)}): "
                              "give it another name")
    updated = candidate.with_followers_of(stored)
    if updated != stored:
        store.settings.set(IDENTITY_SETTING, updated.to_json())
