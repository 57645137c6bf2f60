"""The kill switch's state: on or off, why, since when. Stored as a setting, so it survives a
restart and an operator command in another process can turn it on or off (B.4)."""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

SETTING = "kill_switch"


@dataclass(frozen=True)
class KillSwitchState:
    on: bool = False
    reason: str = ""
    by: str = ""  # operator | risk | broker_failures
    at: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | None) -> "KillSwitchState":
        return cls(**json.loads(text)) if text else cls()


def read(store) -> KillSwitchState:
    return KillSwitchState.from_json(store.get_setting(SETTING))


def write(store, on: bool, reason: str, by: str) -> KillSwitchState:
    state = KillSwitchState(on=on, reason=reason, by=by, at=time.time())
    store.set_setting(SETTING, state.to_json())
    return state
