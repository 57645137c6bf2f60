"""What the sizing actor knows of each account's positions: the latest reading, plus the fills
the copier has seen since that reading was fetched (the broker counts fills seen before it).

A fill the broker made before a reading began may reach the copier's socket after it: counted
twice, the sum is wrong by that fill until the next reading. So the reading itself is kept too
(`as_read`): whether an order may be an exit is asked of both (actors/sizing.py)."""
from __future__ import annotations

from collections import deque
from dataclasses import replace

from actors.messages import FillSeen, PositionsSnapshot
from trading.account import PositionKey

MAX_FILLS_KEPT = 10_000  # per account, between two readings


class KnownPositions:
    def __init__(self) -> None:
        self.current: dict[str, PositionsSnapshot] = {}
        self._read: dict[str, PositionsSnapshot] = {}  # the latest reading, no fill counted on it
        self._fills: dict[str, deque[FillSeen]] = {}  # since each account's reading was fetched

    def get(self, account: str) -> PositionsSnapshot | None:
        return self.current.get(account)

    def quantity(self, account: str, key: PositionKey) -> int:
        snapshot = self.current.get(account)
        return snapshot.positions.get(key, 0) if snapshot else 0

    def as_read(self, account: str, key: PositionKey) -> int:
        """The quantity the latest reading gave, without the fills seen since."""
        reading = self._read.get(account)
        return reading.positions.get(key, 0) if reading else 0

    def apply(self, reading: PositionsSnapshot) -> bool:
        """Take a reading, with the fills seen since it was fetched; False for one fetched before
        the reading in hand (answered late), which is left out."""
        current = self.current.get(reading.account)
        if current is not None and reading.fetched_ns < current.fetched_ns:
            return False
        self.current[reading.account] = self._read[reading.account] = reading
        later = [fill for fill in self._fills.get(reading.account, ()) if fill.received_ns > reading.fetched_ns]
        self._fills[reading.account] = deque(later, maxlen=MAX_FILLS_KEPT)
        for fill in later:
            self._count(fill)
        return True

    def fill(self, fill: FillSeen) -> None:
        self._fills.setdefault(fill.account, deque(maxlen=MAX_FILLS_KEPT)).append(fill)
        self._count(fill)

    def _count(self, fill: FillSeen) -> None:
        snapshot = self.current.get(fill.account)
        if snapshot is not None and fill.received_ns <= snapshot.fetched_ns:
            return  # the broker had it before that reading began: already counted
        if snapshot is None:
            snapshot = PositionsSnapshot(fill.account, {}, 0.0, 0.0, 0)
        positions = dict(snapshot.positions)
        key = (fill.exchange_segment, fill.security_id)
        positions[key] = positions.get(key, 0) + fill.signed_qty
        self.current[fill.account] = replace(snapshot, positions=positions)
