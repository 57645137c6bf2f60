"""The sizing actor: follower quantities, and the capital lock.

Every copy is sized and its capital reserved here, one request at a time (an actor's inbox is
its lock), so two leader orders arriving at the same instant can never together commit more than
a follower has (8.4), and once capital runs out later copies are skipped with a reason (8.5).

Capital comes from `/fundlimit`, read at start and every `refresh_seconds` by a poller thread
that tells this actor `CapitalSnapshot`s (the broker call never blocks the lock). A snapshot
supersedes the reservations made before it was fetched, because the broker's own balance
already counts those orders.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from actors.messages import LEADER, CapitalSnapshot, ReleaseCapital, SizeCopies, SizeCopy, SizeDecision
from supervisors import Address, Supervised
from trading.sizing import SizingRule, estimate_margin, size_order

log = logging.getLogger(__name__)


@dataclass
class _Reservation:
    amount: float
    made_at: float


def read_capital(account: str, fund_limit: Callable[[], Any]) -> CapitalSnapshot | None:
    """One `/fundlimit` reading (Dhan spells the field `availabelBalance`)."""
    fetched_at = time.time()
    answer = fund_limit()
    if not answer.ok or not isinstance(answer.data, dict):
        log.warning("fund limit of %s unavailable: %s", account, answer.error)
        return None
    data = answer.data
    available = float(data.get("availabelBalance", data.get("availableBalance", 0)) or 0)
    sod = float(data.get("sodLimit") or 0) or available
    return CapitalSnapshot(account, available, sod, fetched_at)


class SizingActor(Supervised):
    def __init__(self, address: Address, supervisor: Address | None, rules: dict[str, SizingRule],
                 fund_readers: dict[str, Callable[[], Any]], refresh_seconds: float = 30.0,
                 margin_fractions: dict[str, float] | None = None, check_capital: bool = True) -> None:
        super().__init__(address, supervisor)
        self.rules = rules
        self.fund_readers = fund_readers  # account -> gateway.fund_limit (leader included)
        self.refresh_seconds = refresh_seconds
        self.margin_fractions = margin_fractions
        self.check_capital = check_capital
        self.capital: dict[str, CapitalSnapshot] = {}
        self.start_of_day: dict[str, float] = {}
        self.reservations: dict[str, dict[str, _Reservation]] = {name: {} for name in rules}
        self.last_price: dict[str, float] = {}
        self._halt = threading.Event()

    def started(self) -> None:
        for account, reader in self.fund_readers.items():
            snapshot = read_capital(account, reader)
            if snapshot:
                self._apply_snapshot(snapshot)
        threading.Thread(target=self._poll, name="funds-poller", daemon=True).start()

    def on_stop(self) -> None:
        self._halt.set()

    def on_failure(self, *exc_info: Any) -> None:
        self._halt.set()
        super().on_failure(*exc_info)

    def _poll(self) -> None:
        while not self._halt.wait(self.refresh_seconds):
            for account, reader in self.fund_readers.items():
                snapshot = read_capital(account, reader)
                if snapshot:
                    self.address.tell(snapshot)

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, SizeCopies):
            return tuple(self._size(request) for request in message.requests)
        if isinstance(message, SizeCopy):
            return self._size(message)
        if isinstance(message, ReleaseCapital):
            self.reservations.get(message.follower, {}).pop(message.correlation_id, None)
        elif isinstance(message, CapitalSnapshot):
            self._apply_snapshot(message)
        elif message == "capital":
            return {name: self._free(name) for name in self.rules}
        return None

    def _apply_snapshot(self, snapshot: CapitalSnapshot) -> None:
        self.capital[snapshot.account] = snapshot
        self.start_of_day.setdefault(snapshot.account, snapshot.start_of_day)
        for cid, reservation in list(self.reservations.get(snapshot.account, {}).items()):
            if reservation.made_at < snapshot.fetched_at - 1.0:
                del self.reservations[snapshot.account][cid]

    def _free(self, follower: str) -> float | None:
        snapshot = self.capital.get(follower)
        if snapshot is None:
            return None
        return snapshot.available - sum(r.amount for r in self.reservations.get(follower, {}).values())

    def _capital_ratio(self, follower: str) -> float | None:
        leader, mine = self.start_of_day.get(LEADER), self.start_of_day.get(follower)
        return (mine / leader) if leader and mine else None

    def _size(self, request: SizeCopy) -> SizeDecision:
        rule = self.rules[request.follower]
        terms, inst = request.terms, request.instrument
        price = terms.price or terms.trigger_price or request.reference_price or self.last_price.get(terms.security_id, 0.0)
        if price > 0:
            self.last_price[terms.security_id] = price
        sized = size_order(rule, terms.quantity, terms.disclosed_qty, inst.lot_size, price,
                           terms.trigger_price, self._capital_ratio(request.follower))
        if sized.skip_reason:
            return SizeDecision(0, 0, 0.0, sized.skip_reason, sized.detail)
        cost = estimate_margin(terms.product.value, terms.side.value, sized.quantity, price,
                               inst.is_option, inst.is_derivative, self.margin_fractions)
        existing = self.reservations[request.follower].get(request.correlation_id)
        free = self._free(request.follower)
        if existing is not None and free is not None:
            free += existing.amount  # a re-size replaces its own reservation
        if self.check_capital and free is not None and cost > free:
            return SizeDecision(0, 0, 0.0, "insufficient_capital",
                                f"needs about {cost:,.0f}, {max(free, 0):,.0f} free")
        self.reservations[request.follower][request.correlation_id] = _Reservation(cost, time.time())
        return SizeDecision(sized.quantity, sized.disclosed_qty, cost)
