"""The kill switch's state: on or off, why, since when. Kept as a setting
(`storage.settings.Settings.kill_switch`), so it survives a restart and an operator command in
another process can turn it on or off."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass


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
