"""Settings: small named values kept in storage (the kill switch, what the running copier tells
operator commands in other processes, the reconciler's request and report...). Each is one row;
writing one replaces it."""
from __future__ import annotations

import time

from storage import models as m
from storage.base import Transactions
from trading.kill_switch import KillSwitchState


KILL_SWITCH = "kill_switch"


class Settings:
    def __init__(self, store: Transactions) -> None:
        self._store = store

    def get(self, key: str, default: str | None = None) -> str | None:
        row = self._store.read(lambda: m.Setting.get_or_none(m.Setting.key == key))
        return row.value if row else default

    def set(self, key: str, value: str) -> None:
        self._store.write(lambda: m.Setting.insert(key=key, value=value).on_conflict_replace().execute())

    def kill_switch(self) -> KillSwitchState:
        """The kill switch as last turned on or off (off when it never was)."""
        return KillSwitchState.from_json(self.get(KILL_SWITCH))

    def set_kill_switch(self, on: bool, reason: str, by: str, at: float | None = None) -> KillSwitchState:
        """Turn the kill switch on or off, now (`at`: when it was turned, elsewhere: another shard, an
        operator command on another machine); a running copier notices within its poll."""
        state = KillSwitchState(on=on, reason=reason, by=by, at=time.time() if at is None else at)
        self.set(KILL_SWITCH, state.to_json())
        return state
