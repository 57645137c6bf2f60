"""What the sizing actor knows of each account's positions: the latest reading, plus the fills
the copier has seen since that reading was fetched.

A fill counts once, by its order: each order's filled quantity the position counts is kept, and
a fill seen counts only beyond it (a fill seen twice, or one the reading already held, adds
nothing). A reading holds, by order, the fills received before it was fetched; a fill the broker
made before it but whose message came after would be counted twice. So an exit, sized from a
reading made for it, asks for the order book of a follower a fill was seen for while its positions
were read (`raced`): taken with the book (`apply_book`), the reading says how much of each order it
holds. The reading itself is kept too (`as_read`) for the sizing actor to ask whether an order may
be an exit (actors/sizing.py)."""
from __future__ import annotations

from collections import deque
from dataclasses import replace
from typing import Callable, Iterable

from actors.messages import FillSeen, PositionsSnapshot
from trading.account import BookFill, PositionKey, held_at_book

MAX_FILLS_KEPT = 10_000  # per account, between two readings


class KnownPositions:
    def __init__(self) -> None:
        self.current: dict[str, PositionsSnapshot] = {}
        self._read: dict[str, PositionsSnapshot] = {}  # the latest reading, no fill counted on it
        self._fills: dict[str, deque[FillSeen]] = {}  # since each account's reading was fetched
        self._counted: dict[str, dict[str, int]] = {}  # account -> order id -> filled quantity counted

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
        self._counted[reading.account] = dict(reading.orders or {})
        later = [fill for fill in self._fills.get(reading.account, ()) if fill.received_ns > reading.fetched_ns]
        self._fills[reading.account] = deque(later, maxlen=MAX_FILLS_KEPT)
        for fill in later:
            self._count(fill)
        return True

    def raced(self, account: str, key: PositionKey, made_ns: Callable[[FillSeen], int] = lambda fill: 0) -> bool:
        """Whether a fill in `key` was received after the account's latest reading began (and
        that reading does not say, order by order, what it holds): the reading may hold it or not.
        `made_ns(fill)`: when the fill's order could first exist (0: not known); one made after
        the reading was answered is not in it."""
        reading = self._read.get(account)
        if reading is None or reading.orders is not None:
            return False
        return any(fill.received_ns > reading.fetched_ns and (fill.exchange_segment, fill.security_id) == key
                   and not (reading.answered_ns and made_ns(fill) > reading.answered_ns)
                   for fill in self._fills.get(account, ()))

    def apply_book(self, account: str, book: Iterable[BookFill]) -> bool:
        """Take the account's latest reading again, as of its order book: what was carried into
        the day plus what the book says each order filled, so that a fill seen counts only beyond
        that. False when the reading does not say what was carried in."""
        reading = self._read.get(account)
        if reading is None or reading.carried is None:
            return False
        fills = tuple(book)
        return self.apply(replace(reading, positions=held_at_book(reading.carried, fills),
                                  orders={fill.order_id: abs(fill.filled) for fill in fills}))

    def fill(self, fill: FillSeen) -> None:
        self._fills.setdefault(fill.account, deque(maxlen=MAX_FILLS_KEPT)).append(fill)
        self._count(fill)

    def _count(self, fill: FillSeen) -> None:
        counted = self._counted.setdefault(fill.account, {})
        snapshot = self.current.get(fill.account)
        if snapshot is not None and snapshot.orders is None and fill.received_ns <= snapshot.fetched_ns:
            counted[fill.order_id] = max(counted.get(fill.order_id, 0), fill.filled)  # in the reading
            return
        # an order the book did not list had filled nothing when it was read; without the book,
        # what this order filled before this fill is in the reading
        before = counted.get(fill.order_id, 0 if snapshot is not None and snapshot.orders is not None
                             else fill.filled - abs(fill.signed_qty))
        if fill.filled <= before:
            return
        counted[fill.order_id] = fill.filled
        if snapshot is None:
            snapshot = PositionsSnapshot(fill.account, {}, 0.0, 0.0, 0)
        positions = dict(snapshot.positions)
        key = (fill.exchange_segment, fill.security_id)
        positions[key] = positions.get(key, 0) + (fill.filled - before) * (1 if fill.signed_qty > 0 else -1)
        self.current[fill.account] = replace(snapshot, positions=positions)
