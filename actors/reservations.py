"""The capital the sizing actor has set aside for copies the broker's funds do not show yet."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Reservation:
    amount: float
    made_at: float


class Reservations(dict[str, Reservation]):
    """One follower's reservations by correlation id, and their running `total`: sizing reads it
    for every copy, and a follower's filled copies keep theirs until the next funds reading (one
    sum over hundreds of them per copy was a share of the copier's CPU at scale)."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0.0

    def __setitem__(self, key: str, value: Reservation) -> None:
        old = self.get(key)
        super().__setitem__(key, value)
        self.total += value.amount - (old.amount if old is not None else 0.0)

    def __delitem__(self, key: str) -> None:
        self.total -= self[key].amount
        super().__delitem__(key)
        if not self:
            self.total = 0.0  # no rounding left behind

    def pop(self, key: str, *default: Any) -> Any:  # type: ignore[override]
        if key in self:
            value = self[key]
            del self[key]
            return value
        return super().pop(key, *default)  # the default, or KeyError as a dict raises
