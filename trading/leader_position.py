"""A leader's position on one trading day as its order updates tell it, in the order they came,
and the position each order found when it was first seen (actors/leader_ledger.py says why and
who feeds it)."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Iterable, Mapping

from trading.account import BookFill, PositionKey, counted_as, counted_order
from trading.orders import OrderStatus, OrderUpdate, Side


@dataclass
class LeaderDay:
    day: date
    carried: dict[PositionKey, int] | None = None  # None until a positions reading says
    booked: bool = False  # the order book was read: fills made before the copier saw their orders are in
    filled: dict[str, tuple[PositionKey, int]] = field(default_factory=dict)  # by counted name: signed
    today: dict[PositionKey, int] = field(default_factory=dict)  # the sum of `filled` by instrument
    of_order: dict[str, int] = field(default_factory=dict)  # the sum of `filled` by order id (legs in it)
    # order id -> `today` in its instrument at first sight (None: not known, see `see`)
    first_seen: dict[str, int | None] = field(default_factory=dict)
    traded: set[str] = field(default_factory=set)  # order ids wholly filled (a super order's entry)

    def see(self, update: OrderUpdate, live: bool = True) -> None:
        """One update of a leader order. An order first seen before the book was read (whose fills
        that position may not count), first seen in the book (which lists orders in no order of
        their fills), or first seen in an update routed again from storage (`live` False: stored
        by a copier that ended before acting on it, seen after later orders' fills), found a
        position not known here."""
        key = (update.terms.exchange_segment, str(update.terms.security_id))
        if update.order_id not in self.first_seen:  # (its own fills are in `today` when a book told them first)
            in_order = live and self.booked and update.source == "socket"
            self.first_seen[update.order_id] = (self.today.get(key, 0) - self.of_order.get(update.order_id, 0)
                                                if in_order else None)
        if update.status is OrderStatus.TRADED and not update.exit_leg:
            self.traded.add(update.order_id)
        sign = 1 if update.terms.side == Side.BUY else -1
        self._count(counted_as(update.order_id, update.leg), key, sign * update.filled_qty)

    def book(self, fills: Iterable[BookFill]) -> None:
        """The day's order book: fills made before their orders' updates were seen."""
        for fill in fills:
            self._count(fill.order_id, fill.key, fill.filled)
        self.booked = True

    def carry(self, carried: Mapping[PositionKey, int]) -> None:
        """What was carried into the day (a positions reading's net less today's fills)."""
        self.carried = dict(carried)

    def found(self, order_id: str, key: PositionKey) -> int | None:
        """The position in `key` when order `order_id` was first seen; None when not known (the
        order not seen yet or not in order, or what was carried in not read yet)."""
        found = self.first_seen.get(order_id)
        if self.carried is None or found is None:
            return None
        return self.carried.get(key, 0) + found

    def _count(self, name: str, key: PositionKey, signed: int) -> None:
        """An order's whole filled quantity so far: only what goes beyond what was counted adds."""
        known = self.filled.get(name)
        counted = known[1] if known is not None else 0
        if abs(signed) <= abs(counted):
            return
        self.filled[name] = (key, signed)
        self.today[key] = self.today.get(key, 0) + signed - counted
        order_id = counted_order(name)
        self.of_order[order_id] = self.of_order.get(order_id, 0) + signed - counted


def before_placed(now: int, book: Iterable[BookFill], order_id: str, key: PositionKey) -> int | None:
    """The position in `key` before order `order_id` was placed, from the position `now` and the
    day's order book read with it: `now` less the fills of that order and of every order placed
    after it, which are in `now` whenever the copier sees an order late (from the book, after a
    restart or a dropped socket). Dhan numbers an account's orders in the order they are placed,
    so a larger order id is a later order. None when the order is not in the book or an order
    id of `key` is not a number (no order to go by)."""
    try:
        placed = int(order_id)
        ids = [(int(counted_order(fill.order_id)), fill.filled) for fill in book if fill.key == key]
    except ValueError:
        return None
    if not any(other == placed for other, _filled in ids):
        return None
    return now - sum(filled for other, filled in ids if other >= placed)
