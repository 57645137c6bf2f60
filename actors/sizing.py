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

from actors.messages import (LEADER, CapitalSnapshot, ReleaseCapital, SizeCopies, SizeCopy, SizeDecision,
                             SizedCopies)
from supervisors import Address, Supervised
from trading.sizing import SizingRule, estimate_margin, scale_disclosed, size_order
from trading.strategy import leg_quantity

log = logging.getLogger(__name__)


@dataclass
class _Strategy:
    """The latest multi-leg strategy on one underlying: its first leg, as the leader placed it and
    as each follower's copy was sized."""

    group_id: str
    first_leader_qty: int
    first_copy_qty: dict[str, int]
    last_leg_at: float


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
                 margin_fractions: dict[str, float] | None = None, check_capital: bool = True,
                 leg_window_seconds: float = 2.0) -> None:
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
        self.leg_window = leg_window_seconds
        self.strategies: dict[str, _Strategy] = {}  # by underlying
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
            return self._size_order(message)
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

    def _size_order(self, message: SizeCopies) -> SizedCopies:
        """Every follower's copy of one leader order. Derivative orders on one underlying within the
        leg window are one strategy: later legs keep the first leg's lot ratio per follower, or are
        not placed and unwind the legs that were (1.4.5). Deciding it here, one order at a time,
        means two legs arriving together cannot both believe they are the first."""
        decisions = [self._size(request) for request in message.requests]
        if not message.requests:
            return SizedCopies(())
        instrument = message.requests[0].instrument
        if not instrument.is_derivative or self.leg_window <= 0:
            return SizedCopies(tuple(decisions))
        now = time.monotonic()
        strategy = self.strategies.get(instrument.underlying)
        leader_qty = message.requests[0].terms.quantity
        if strategy is None or now - strategy.last_leg_at > self.leg_window:
            self.strategies[instrument.underlying] = _Strategy(
                message.leader_order_id, leader_qty,
                {r.follower: d.quantity for r, d in zip(message.requests, decisions)}, now)
            return SizedCopies(tuple(decisions), message.leader_order_id)
        strategy.last_leg_at = now
        out = []
        for request, decision in zip(message.requests, decisions):
            first = strategy.first_copy_qty.get(request.follower, 0)
            if first <= 0:  # the first leg was not copied here: nothing is naked, copy no leg
                out.append(self._drop(request, "strategy_leg_not_copied", "the strategy's first leg was not copied"))
            else:
                # the ratio, not the leg's own rule, sets a later leg's quantity; its own decision
                # still counts when it says the capital is not there
                quantity = leg_quantity(strategy.first_leader_qty, first, leader_qty, instrument.lot_size)
                if quantity is None:
                    out.append(self._drop(request, "strategy_ratio", (
                        f"leader legs {strategy.first_leader_qty} and {leader_qty}: the first leg's copy of {first} "
                        "leaves no whole number of lots for this one"), unwind=True))
                elif decision.skip_reason and decision.skip_reason != "size_rounds_to_zero":
                    out.append(SizeDecision(0, 0, 0.0, decision.skip_reason, decision.detail, unwind=True))
                else:
                    disclosed = scale_disclosed(leader_qty, request.terms.disclosed_qty, quantity, instrument.lot_size)
                    out.append(SizeDecision(quantity, disclosed, decision.reserved))
        return SizedCopies(tuple(out), strategy.group_id)

    def _drop(self, request: SizeCopy, reason: str, detail: str, unwind: bool = False) -> SizeDecision:
        self.reservations[request.follower].pop(request.correlation_id, None)
        return SizeDecision(0, 0, 0.0, reason, detail, unwind=unwind)

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
