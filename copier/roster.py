"""The followers of a running copier, added and removed while it runs (`run.py reload`, SIGHUP,
`run.py follower add|remove`), and the sizing rule each one uses now.

What the actors share about the followers (their names, gateways and rate limiters) is held in
collections that iterate over a snapshot (`SnapshotList`, `SnapshotDict`), so an actor walking them
on its own thread never sees one change under it.

Adding a follower starts what the copier starts for each at start-up, in the same order: its
token is checked with the broker, then its rate limiter, its sizing (rule, risk limits, filters,
copy window, first funds and positions, the operator's stored pause and sizing), its feed, and
only then is it named to the order actors: from then on new leader orders are copied to it. The
leader's orders seen before are not back-filled.

Removing one stops what would copy to it first (its name, then a pause in the sizing actor for
an order being sized at that instant), cancels its open copies (an order left working at the
broker that nobody follows any more would surprise its owner: it would fill, or not, whatever the
leader does), waits for them to close, and then stops its feed and rate limiter. Its positions are
left as they are (`run.py square-off NAME` first, to close them).
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import pykka

from actors.account_reader import read_capital, read_positions
from actors.follower_control import describe_rule, pause_detail
from actors.messages import CancelCopies, FollowerAdded, FollowerRemoved, PauseCopying
from copier.accounts import StartRefused, check_follower, record_accounts
from copier.config import Config, ConfigError, FollowerConfig, load, parse
from observability import metrics
from storage import Store
from storage.identity import Account, StorageMismatch, add_follower
from supervisors import Address, ChildSpec
from trading.leg_order import PARALLEL
from trading.sizing import SizingRule

log = logging.getLogger(__name__)

CANCEL_AGAIN_SECONDS = 5.0  # a removal asks again for the cancels of copies still open


class SnapshotList(list):
    """A list whose iteration walks a copy: changed by one thread while others iterate it."""

    def __iter__(self) -> Iterator[Any]:
        return iter(list.copy(self))


class SnapshotDict(dict):
    """A dict whose iteration (keys, values, items) walks a copy, for the same reason."""

    def __iter__(self) -> Iterator[Any]:
        return iter(list(dict.keys(self)))

    def keys(self) -> list[Any]:  # type: ignore[override]
        return list(dict.keys(self))

    def values(self) -> list[Any]:  # type: ignore[override]
        return list(dict.values(self))

    def items(self) -> list[tuple[Any, Any]]:  # type: ignore[override]
        return list(dict.items(self))


def sizing_with(rule: SizingRule, changes: Mapping[str, Any]) -> SizingRule:
    """`rule` with the sizing keys `changes` over it, validated by the config's own parser: a
    ValueError (a ConfigError) names the key as the config would, `sizing.ratio: must be ...`."""
    raw = {key: value for key, value in dataclasses.asdict(rule).items() if value is not None}
    raw.update(changes)
    try:
        config = parse({"mode": "paper", "followers": [{"name": "sizing-check", "sizing": raw}]})
    except ConfigError as exc:
        message = str(exc)
        for prefix in ("followers[0].", "followers.0."):
            message = message.replace(prefix, "")
        raise ConfigError(message) from None
    return config.followers[0].sizing


STRATEGY_KEYS = {"fixed_ratio": ("ratio",), "fixed_lots": ("lots",), "risk_based": ("risk_per_trade", "stop_loss_pct"),
                 "capital_proportional": ()}  # the sizing keys each strategy reads (trading/sizing.py)
COMMON_KEYS = ("strategy", "max_quantity", "round_up_to_one_lot")


def sizing_change(rule: SizingRule, changes: Mapping[str, Any]) -> SizingRule:
    """An operator's `follower set`: `sizing_with`, and each key changed must be one the resulting
    strategy reads (`keys_used`)."""
    changed = sizing_with(rule, changes)
    keys_used(changed, changes)
    return changed


def keys_used(rule: SizingRule, keys: Iterable[str]) -> None:
    """A ConfigError naming the first of `keys` that `rule`'s strategy does not read. The config
    tolerates `ratio` beside `strategy: fixed_lots`, but an operator who sets it expects the copies'
    size to change: telling them it does not is the honest answer."""
    used = STRATEGY_KEYS.get(rule.strategy, ())
    for key in keys:
        if key not in used and key not in COMMON_KEYS:
            raise ConfigError(f"sizing.{key}: not used by strategy {rule.strategy} (it uses "
                              f"{', '.join(used + COMMON_KEYS[1:])}); to change the strategy too, give "
                              "strategy=... with it")


@dataclass
class Removal:
    by: str
    since: float  # monotonic
    live: int  # its open copies when the removal began
    asked_at: float  # monotonic: when its cancels were last asked for


@dataclass
class Roster:
    """What the tree built for each follower, and how to build it for one more (`children`)."""

    config: Config
    store: Store
    names: SnapshotList  # the followers copied to now: the order actors', reconciler's and forever actor's list
    gateways: SnapshotDict
    limiters: SnapshotDict
    configured_tokens: dict[str, str]  # the token actor's: what a renewal supersedes
    suspended: dict[str, str]  # followers whose token the broker refuses
    sizing: Address
    router: Address
    alert: Callable[[str, str, str], None]
    rules: dict[str, SizingRule] = field(default_factory=dict)  # each follower's sizing now (stored changes applied)
    # (follower, leader account) -> the config's sizing of that follower for that leader's orders;
    # the sizing actor reads this very dict, so a follower added later has its own too
    leader_rules: dict[tuple[str, str], SizingRule] = field(default_factory=dict)
    configs: dict[str, FollowerConfig] = field(default_factory=dict)
    # (follower, gateway) -> its limiter's and its feed's child specs (the limiter made and registered)
    children: Callable[[FollowerConfig, Any], tuple[ChildSpec, ChildSpec]] | None = None
    supervisor: Callable[[], Any] | None = None  # the copier's supervisor proxy, once it runs
    prepare: Callable[[FollowerConfig], FollowerConfig] = lambda follower: follower  # paper mode: its account
    config_path: str | None = None
    read: Callable[[str], Config] = load  # a follower shard reads its own followers only (copier/shards.py)
    metric_series: Callable[[str], None] = lambda follower: None
    removing: dict[str, Removal] = field(default_factory=dict)
    finished: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        stored = self.store.followers.states()
        for follower in self.config.followers:
            self.configs[follower.name] = follower
            self.rules[follower.name] = self.stored_rule(follower, stored.get(follower.name))
            self._use_leader_rules(follower)

    def stored_rule(self, follower: FollowerConfig, state: Any) -> SizingRule:
        """The config's sizing with an operator's stored changes over it (they win); the config's
        alone, with an alert, when the stored changes no longer fit it."""
        if state is None or not state.sizing:
            return follower.sizing
        try:
            return sizing_with(follower.sizing, state.sizing)
        except ConfigError as exc:
            self.alert("error", f"sizing:{follower.name}", f"follower {follower.name}: the sizing set by "
                       f"{state.sizing_by} ({state.sizing}) no longer fits the config ({exc}); the config's is used")
            return follower.sizing

    def paused(self) -> dict[str, str]:
        """Followers paused by an operator, as storage holds them now: the skip detail of each."""
        return {name: pause_detail(state) for name, state in self.store.followers.states().items() if state.paused}

    # -- several leaders: who copies whom, and how ---------------------------------------------------
    def follows(self, follower: str, leader: str) -> bool:
        """Whether `follower` copies the orders of the leader account `leader` (config `leaders:`)."""
        config = self.configs.get(follower)
        return config is None or config.follows(leader)

    def followers_of(self, leader: str) -> "Subscribers":
        """The followers copying `leader` now, as a live view (followers added later included)."""
        return Subscribers(self, leader)

    def rule_for(self, follower: str, leader: str) -> SizingRule | None:
        """`follower`'s sizing for `leader`'s orders, as the sizing actor chooses it: the config's for
        that leader, else its own now."""
        return self.leader_rules.get((follower, leader)) or self.rules.get(follower)

    def leg_order(self, follower: str) -> str:
        """`follower`'s `legs` (parallel for one no longer copied to)."""
        config = self.configs.get(follower)
        return config.legs if config else PARALLEL

    def _use_leader_rules(self, follower: FollowerConfig) -> None:
        for key in [key for key in self.leader_rules if key[0] == follower.name]:
            del self.leader_rules[key]
        self.leader_rules.update({(follower.name, s.name): s.sizing for s in follower.leaders if s.sizing})

    # -- what the follower control actor asks (actors/follower_control.py FollowerWiring) -------------
    def followers(self) -> list[str]:
        return list(self.names)

    def sizing_rule(self, follower: str, changes: dict[str, Any], new: Iterable[str] = ()) -> SizingRule:
        rule = sizing_with(self.configs[follower].sizing, changes)
        keys_used(rule, new)
        return rule

    def use_rule(self, follower: str, rule: SizingRule) -> None:
        self.rules[follower] = rule

    def reload(self, by: str, action: str, follower: str | None) -> tuple[bool, str, list[str]]:
        if not self.config_path:
            return False, "the copier was not started from a config file: nothing to reload", []
        try:
            fresh = self.read(self.config_path)
        except ConfigError as exc:
            return False, f"config not reloaded: {exc}", []
        wanted = {f.name: f for f in fresh.followers}
        running = set(self.names)
        if action == "add":
            if follower not in wanted:
                return False, f"{follower} is not in {self.config_path}: add it there first", []
            if follower in running:
                return True, f"{follower} is already a follower", []
            adding, dropping = [wanted[follower]], []  # type: ignore[index]
        elif action == "remove":
            if follower in wanted:
                return False, (f"{follower} is still in {self.config_path}: remove it there first (else the next "
                               "start brings it back)"), []
            if follower not in running:
                return False, f"{follower} is not a follower of the running copier", []
            adding, dropping = [], [follower]  # type: ignore[list-item]
        else:
            adding = [f for name, f in wanted.items() if name not in running and name not in self.removing]
            dropping = [name for name in self.names if name not in wanted]
        ok, lines = True, []
        for added in adding:
            try:
                lines.append(self._add(added, by))
            except (StartRefused, StorageMismatch) as exc:
                ok = False
                lines.append(f"{added.name} not added: {exc}")
        for name in dropping:
            lines.append(self._remove(name, by))
        if action == "reload":
            for name, f in wanted.items():
                if name in running and name not in dropping and _differs(self.configs[name], f):
                    lines.append(f"{name}: its settings in the file changed; they apply at the next start "
                                 "(sizing now: run.py follower set)")
        return ok, "; ".join(lines) or "nothing to change: the copier follows the config file's followers", dropping

    def finished_removals(self) -> dict[str, str]:
        now = time.monotonic()
        for name, removal in list(self.removing.items()):
            live = self.store.followers.live_copies(name)
            if live == 0:
                self._stop(name, removal)
            elif now - removal.asked_at >= CANCEL_AGAIN_SECONDS:
                removal.asked_at = now  # (a copy made while it was being removed was not asked yet)
                self.router.tell(CancelCopies(f"follower {name} removed", follower=name))
        finished, self.finished = self.finished, {}
        return finished

    # -- adding ---------------------------------------------------------------------------------------
    def _add(self, follower: FollowerConfig, by: str) -> str:
        assert self.children is not None and self.supervisor is not None, "the copier is still starting"
        follower = self.prepare(follower)
        name = follower.name
        gateway, token, funds = check_follower(self.config, follower)
        add_follower(self.store, name, Account(follower.client_id, follower.api_base_url), self.config.storage.path)
        supervisor = self.supervisor()
        self.gateways[name] = gateway
        self.configured_tokens[name] = token.configured
        limiter_spec, feed_spec = self.children(follower, gateway)
        supervisor.start_child(limiter_spec).get(timeout=15)
        state = self.store.followers.state(name)
        rule = self.rules[name] = self.stored_rule(follower, state)
        self.configs[name] = follower  # (before sizing and the feed: whom it follows is known from their start)
        self._use_leader_rules(follower)
        capital = read_capital(name, gateway, funds.data)
        self.sizing.ask(FollowerAdded(name, rule, follower.risk, follower.filters, follower.copy_window, capital,
                                      read_positions(name, gateway)), timeout=10)
        if state.paused:
            self.sizing.ask(PauseCopying(name, pause_detail(state)), timeout=10)
        self.metric_series(name)
        metrics.FOLLOWER_PAUSED.labels(name).set(1 if state.paused else 0)
        supervisor.start_child(feed_spec).get(timeout=15)
        self.names.append(name)  # last: from here on new leader orders are copied to it
        record_accounts(self.store, self.config, self.configs.values())
        paused = f" (paused, as {pause_detail(state)})" if state.paused else ""
        self.store.followers.record(name, "add", f"client {follower.client_id}, sizing {describe_rule(rule)}{paused}", by)
        log.warning("follower %s added by %s: new leader orders are copied to it%s", name, by, paused)
        return f"{name} added: the leader's new orders are copied to it from now on{paused}"

    # -- removing -------------------------------------------------------------------------------------
    def _remove(self, name: str, by: str) -> str:
        try:  # an order being sized at this instant must not give it a copy
            self.sizing.ask(PauseCopying(name, f"follower {name} is being removed"), timeout=10)
        except (pykka.ActorDeadError, pykka.Timeout) as exc:
            log.warning("sizing did not take the removal of %s now (%s)", name, exc)
        self.names.remove(name)
        live = self.store.followers.live_copies(name)
        now = time.monotonic()
        self.removing[name] = Removal(by, now, live, now)
        self.router.tell(CancelCopies(f"follower {name} removed", follower=name))
        log.warning("follower %s being removed by %s: no new copies; cancelling its %d open copies", name, by, live)
        return f"{name}: no new copies; its {live} open copies are being cancelled"

    def _stop(self, name: str, removal: Removal) -> None:
        del self.removing[name]
        supervisor = self.supervisor() if self.supervisor is not None else None
        for child in (f"feed:{name}", f"limiter:{name}"):
            if supervisor is not None:
                supervisor.terminate_child(child).get(timeout=15)
        try:
            self.sizing.ask(FollowerRemoved(name), timeout=10)
        except (pykka.ActorDeadError, pykka.Timeout) as exc:
            log.warning("sizing did not take the removal of %s now (%s)", name, exc)
        for table in (self.gateways, self.limiters, self.configured_tokens, self.suspended, self.rules, self.configs):
            table.pop(name, None)
        for key in [key for key in self.leader_rules if key[0] == name]:
            del self.leader_rules[key]
        try:  # no longer a follower: neither paused nor copying, so not counted as paused on the dashboards
            metrics.FOLLOWER_PAUSED.remove(name)
        except KeyError:
            pass
        record_accounts(self.store, self.config, self.configs.values())
        text = (f"{name} removed: {removal.live} open copies cancelled, its feed and rate limiter stopped; "
                "its positions are left as they are")
        self.store.followers.record(name, "remove", text, removal.by)
        log.warning("follower %s removed (asked by %s)", name, removal.by)
        self.finished[name] = text


@dataclass(frozen=True)
class Subscribers:
    """The followers of one leader, read from the roster at each iteration."""

    roster: Roster
    leader: str

    def __iter__(self) -> Iterator[str]:
        return iter([name for name in self.roster.names if self.roster.follows(name, self.leader)])

    def __contains__(self, follower: object) -> bool:
        return follower in self.roster.names and self.roster.follows(str(follower), self.leader)


def _differs(running: FollowerConfig, fresh: FollowerConfig) -> bool:
    """Whether the file changed a running follower's settings (its URLs and token aside: paper
    mode and renewals change those)."""
    keys = ("sizing", "risk", "filters", "copy_window", "leaders") + (("client_id",) if fresh.client_id else ())
    return any(getattr(running, key) != getattr(fresh, key) for key in keys)


def config_file(config: Config) -> str | None:
    """The config file a copier was loaded from, if it was."""
    return config.source if config.source and Path(config.source).is_file() else None
