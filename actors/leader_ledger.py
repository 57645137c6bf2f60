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
from datetime import date
from typing import Iterable, Mapping

from trading.account import BookFill, PositionKey
from trading.leader_position import LeaderDay
from trading.orders import OrderUpdate


class LeaderLedger:
    """Each leader account's `LeaderDay`, written by the router and the sizing actor, read by the
    sizing actor: one lock, held for a few dictionary operations."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._accounts: dict[str, LeaderDay] = {}

    def see(self, account: str, update: OrderUpdate, day: date, live: bool = True) -> None:
        """One update of a leader order, in the order the leader's updates came (`live` False: one
        routed again from storage, which came in no such order)."""
        with self._lock:
            self._on(account, day).see(update, live)

    def carry(self, account: str, carried: Mapping[PositionKey, int], day: date) -> None:
        """What the account carried into `day` (a positions reading's net less today's fills)."""
        with self._lock:
            self._on(account, day).carry(carried)

    def book(self, account: str, fills: Iterable[BookFill], day: date) -> None:
        """The day's order book: fills made before their orders' updates were seen."""
        with self._lock:
            self._on(account, day).book(fills)

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
            return ledger.found(order_id, key) if ledger is not None else None

    def filled(self, account: str, order_id: str) -> int | None:
        """How much of the account's order `order_id` has filled, signed; None when the order's
        updates and the book told nothing of it."""
        with self._lock:
            ledger = self._accounts.get(account)
            return ledger.of_order.get(order_id) if ledger is not None else None

    def traded(self, account: str, order_id: str) -> bool:
        """Whether the account's order `order_id` has wholly filled, as its updates told."""
        with self._lock:
            ledger = self._accounts.get(account)
            return ledger is not None and order_id in ledger.traded

    def _on(self, account: str, day: date) -> LeaderDay:
        """The account's ledger for `day`: a new day starts empty (yesterday's orders are gone
        from the book, and what was carried in is read again)."""
        ledger = self._accounts.get(account)
        if ledger is None or ledger.day != day:
            ledger = self._accounts[account] = LeaderDay(day)
        return ledger
