"""Each leader's position as its order updates told it, in the order they came.

Whether a leader order is an exit, and of what fraction, depends on the leader's position just
before the order was placed. A positions reading made once the order is seen cannot say it: by
then a later order of the leader may have filled too (the socket lags, the reading is slow), and a
resting order placed earlier may fill after it. The order-update socket tells every order's
updates in the order they happened, so the position the updates seen before an order's first
sighting add up to is the one it found.

An order first seen in the order book (after the socket dropped, or at start) has no such place:
its position is not known here, and the sizing actor reads it from the broker as before.

The router feeds every leader update here, on its thread, before the order actor sees it; the
sizing actor reads the position each order found, and tells what was carried into the day (from a
positions reading) and the order book read at start (orders filled before the copier saw them).
Fills count by order, as the broker's cumulative filled quantity, so an update seen twice, or a
book that repeats what updates told, counts once.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import date
from typing import Iterable, Mapping

from trading.account import BookFill, PositionKey, counted_as
from trading.orders import OrderUpdate, Side


@dataclass
class _Account:
    day: date
    carried: dict[PositionKey, int] | None = None  # None until a positions reading says
    booked: bool = False  # the order book was read: fills made before the copier saw their orders are in
    filled: dict[str, tuple[PositionKey, int]] = field(default_factory=dict)  # by counted name: signed
    today: dict[PositionKey, int] = field(default_factory=dict)  # the sum of `filled` by instrument
    of_order: dict[str, int] = field(default_factory=dict)  # the sum of `filled` by order id (legs in it)
    # order id -> `today` in its instrument at first sight (None: seen before the book was read,
    # whose fills it may not count)
    found: dict[str, int | None] = field(default_factory=dict)


class LeaderLedger:
    """Written by the router and the sizing actor, read by the sizing actor: one lock, held for a
    few dictionary operations."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._accounts: dict[str, _Account] = {}

    def see(self, account: str, update: OrderUpdate, day: date) -> None:
        """One update of a leader order, in the order the leader's updates came."""
        key = (update.terms.exchange_segment, str(update.terms.security_id))
        sign = 1 if update.terms.side == Side.BUY else -1
        with self._lock:
            ledger = self._on(account, day)
            if update.order_id not in ledger.found:  # (its own fills are in `today` when a book told them first)
                in_order = ledger.booked and update.source == "socket"  # (a book lists orders in no such order)
                ledger.found[update.order_id] = (ledger.today.get(key, 0) - ledger.of_order.get(update.order_id, 0)
                                                 if in_order else None)
            self._count(ledger, counted_as(update.order_id, update.leg), key, sign * update.filled_qty)

    def carry(self, account: str, carried: Mapping[PositionKey, int], day: date) -> None:
        """What the account carried into `day` (a positions reading's net less today's fills)."""
        with self._lock:
            self._on(account, day).carried = dict(carried)

    def book(self, account: str, fills: Iterable[BookFill], day: date) -> None:
        """The day's order book: fills made before their orders' updates were seen."""
        with self._lock:
            ledger = self._on(account, day)
            for fill in fills:
                self._count(ledger, fill.order_id, fill.key, fill.filled)
            ledger.booked = True

    def wants_book(self, account: str, day: date) -> bool:
        """Whether the account's order book for `day` is still to be read (a reading failed, or
        a new day began)."""
        with self._lock:
            ledger = self._accounts.get(account)
            return ledger is None or ledger.day != day or not ledger.booked

    def found(self, account: str, order_id: str, key: PositionKey) -> int | None:
        """The account's position in `key` when order `order_id` was first seen; None when not
        known (the order not seen yet, or what was carried into the day or the order book not
        read yet)."""
        with self._lock:
            ledger = self._accounts.get(account)
            found = ledger.found.get(order_id) if ledger is not None else None
            if ledger is None or ledger.carried is None or found is None:
                return None
            return ledger.carried.get(key, 0) + found

    def _on(self, account: str, day: date) -> _Account:
        """The account's ledger for `day`: a new day starts empty (yesterday's orders are gone
        from the book, and what was carried in is read again)."""
        ledger = self._accounts.get(account)
        if ledger is None or ledger.day != day:
            ledger = self._accounts[account] = _Account(day)
        return ledger

    @staticmethod
    def _count(ledger: _Account, name: str, key: PositionKey, signed: int) -> None:
        """An order's whole filled quantity so far: only what goes beyond what was counted adds."""
        known = ledger.filled.get(name)
        counted = known[1] if known is not None else 0
        if abs(signed) <= abs(counted):
            return
        ledger.filled[name] = (key, signed)
        ledger.today[key] = ledger.today.get(key, 0) + signed - counted
        order_id = name.split(":")[0]
        ledger.of_order[order_id] = ledger.of_order.get(order_id, 0) + signed - counted
