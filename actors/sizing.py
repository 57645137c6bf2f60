"""The sizing actor: follower quantities, the capital lock, and the pre-trade risk checks.

Every copy is sized and its capital reserved here, one request at a time (an actor's inbox is
its lock), so two leader orders arriving at the same instant can never together commit more than
a follower has (8.4), and once capital runs out later copies are skipped with a reason (8.5).

Capital comes from `/fundlimit` and positions from `/positions`, read at start and every
`refresh_seconds` by a poller thread that tells this actor snapshots (the broker calls never block
the lock). A capital snapshot supersedes the reservations made before it was fetched, because the
broker's own balance already counts those orders.

An order that only reduces the leader's position is an exit (B.2): the follower reduces its *own*
position by the same fraction, never more than it holds, and never past zero. Positions are
re-read for that decision (exits are rare; a stale position would size them wrong).
Each follower's `risk` limits (5.7) are checked here too; a daily-loss breach calls `on_daily_loss`
(the kill switch).
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from actors.messages import (LEADER, CapitalSnapshot, FillSeen, PositionsSnapshot, ReleaseCapital, ResumeAccount,
                             SizeCopies, SizeCopy, SizeDecision, SizedCopies, SuspendAccount)
from app import metrics
from supervisors import Address, Supervised
from trading import risk
from trading.account import net_quantities
from trading.filters import Filters
from trading.prices import price_note
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


def read_positions(account: str, positions: Callable[[], Any]) -> PositionsSnapshot | None:
    """One positions reading: net quantity by (segment, security), and today's P&L. Entries the
    broker adapter could not read are left out and counted."""
    fetched_ns = time.monotonic_ns()
    answer = positions()
    if not answer.ok:
        log.warning("positions of %s unavailable: %s", account, answer.error)
        return None
    listing = answer.data
    for reason in listing.unreadable:
        metrics.MALFORMED_MESSAGES.labels("leader" if account == LEADER else "follower", reason).inc()
    held = listing.entries
    return PositionsSnapshot(account, net_quantities(held), sum(p.realised for p in held),
                             sum(p.unrealised for p in held), fetched_ns)


def read_capital(account: str, fund_limit: Callable[[], Any]) -> CapitalSnapshot | None:
    """One funds reading; a day's limit the broker leaves out is taken to be what is available."""
    fetched_at = time.time()
    answer = fund_limit()
    if not answer.ok:
        log.warning("fund limit of %s unavailable: %s", account, answer.error)
        return None
    funds = answer.data
    return CapitalSnapshot(account, funds.available, funds.start_of_day or funds.available, fetched_at)


class SizingActor(Supervised):
    def __init__(self, address: Address, supervisor: Address | None, rules: dict[str, SizingRule],
                 accounts: dict[str, Any], refresh_seconds: float = 30.0,
                 margin_fractions: dict[str, float] | None = None, check_capital: bool = True,
                 leg_window_seconds: float = 0.0, limits: dict[str, risk.RiskLimits] | None = None,
                 on_daily_loss: Callable[[str, str], None] = lambda follower, detail: None,
                 filters: dict[str, Filters] | None = None, suspended: dict[str, str] | None = None,
                 first_funds: dict[str, Any] | None = None) -> None:
        super().__init__(address, supervisor)
        self.rules = rules
        self.accounts = accounts  # account -> its gateway (fund_limit, positions), the leader's included
        self.limits = limits or {}
        self.filters = filters or {}
        self.on_daily_loss = on_daily_loss
        self.positions: dict[str, PositionsSnapshot] = {}
        self.recent_orders: dict[str, deque[float]] = {name: deque(maxlen=1000) for name in rules}
        # follower -> why its copies are skipped; given by the tree, so it outlives a restart of this actor
        self.suspended: dict[str, str] = suspended if suspended is not None else {}
        # the start-up account check's /fundlimit answers: the first reading, not asked for twice
        self.first_funds = first_funds if first_funds is not None else {}
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
        for account, gateway in self.accounts.items():
            first = self.first_funds.pop(account, None)  # used by the first incarnation only
            snapshot = read_capital(account, (lambda first=first: first) if first is not None else gateway.fund_limit)
            if snapshot:
                self._apply_snapshot(snapshot)
            positions = read_positions(account, gateway.positions)
            if positions:
                self._apply_positions(positions)
        threading.Thread(target=self._poll, name="funds-poller", daemon=True).start()

    def on_stop(self) -> None:
        super().on_stop()
        self._halt.set()

    def on_failure(self, *exc_info: Any) -> None:
        self._halt.set()
        super().on_failure(*exc_info)

    def _poll(self) -> None:
        while not self._halt.wait(self.refresh_seconds):
            for account, gateway in self.accounts.items():
                for snapshot in (read_capital(account, gateway.fund_limit), read_positions(account, gateway.positions)):
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
        elif isinstance(message, PositionsSnapshot):
            self._apply_positions(message)
        elif isinstance(message, FillSeen):
            snapshot = self.positions.get(message.account)
            if snapshot is not None and message.received_ns <= snapshot.fetched_ns:
                return None  # the broker had it before that reading began: already counted
            positions = dict(snapshot.positions) if snapshot else {}
            key = (message.exchange_segment, message.security_id)
            positions[key] = positions.get(key, 0) + message.signed_qty
            self.positions[message.account] = PositionsSnapshot(
                message.account, positions, snapshot.realised if snapshot else 0.0,
                snapshot.unrealised if snapshot else 0.0, snapshot.fetched_ns if snapshot else 0)
        elif isinstance(message, SuspendAccount):
            self.suspended[message.follower] = message.reason
        elif isinstance(message, ResumeAccount):
            self.suspended.pop(message.follower, None)
        elif message == "capital":
            return {name: self._free(name) for name in self.rules}
        return None

    def _apply_snapshot(self, snapshot: CapitalSnapshot) -> None:
        self.capital[snapshot.account] = snapshot
        self.start_of_day.setdefault(snapshot.account, snapshot.start_of_day)
        for cid, reservation in list(self.reservations.get(snapshot.account, {}).items()):
            if reservation.made_at < snapshot.fetched_at - 1.0:
                del self.reservations[snapshot.account][cid]

    def _apply_positions(self, snapshot: PositionsSnapshot) -> None:
        self.positions[snapshot.account] = snapshot
        limits = self.limits.get(snapshot.account)
        if limits is not None and risk.daily_loss_breached(limits, self._risk_state(snapshot.account)):
            self.on_daily_loss(snapshot.account, f"P&L today {snapshot.realised + snapshot.unrealised:,.0f} "
                                                 f"beyond the limit of -{limits.max_daily_loss:,.0f}")

    def _position(self, account: str, key: tuple[str, str]) -> int:
        snapshot = self.positions.get(account)
        return snapshot.positions.get(key, 0) if snapshot else 0

    def _risk_state(self, follower: str) -> risk.RiskState:
        positions = self.positions.get(follower)
        capital = self.capital.get(follower)
        return risk.RiskState(positions=positions.positions if positions else {},
                              recent_orders=tuple(self.recent_orders.get(follower, ())),
                              capital=capital.start_of_day if capital else 0.0,
                              realised_pnl=positions.realised if positions else 0.0,
                              unrealised_pnl=positions.unrealised if positions else 0.0)

    def _exit(self, request: SizeCopy) -> SizeDecision | None:
        """B.2: the follower's quantity for a leader order that only reduces the leader's position,
        or None when it is not such an order."""
        terms = request.terms
        key = risk.position_key(terms)
        sign = 1 if terms.side.value == "BUY" else -1

        def leader_before() -> int:  # the leader's position before this order (some may have filled)
            return self._position(LEADER, key) - sign * request.leader_filled

        if not risk.is_exit(leader_before(), sign * terms.quantity):
            return None
        # Confirm with the broker: the leader's position and this order's fills, read around it so
        # that a fill landing in between is not counted twice; the follower's own position (it may
        # trade by hand, which the copier does not see).
        before = self._leader_position_before(request, key, sign)
        follower = read_positions(request.follower, self.accounts[request.follower].positions)
        if follower:
            self.positions[request.follower] = follower
        if before is None or not risk.is_exit(before, sign * terms.quantity):
            return None
        quantity = risk.exit_quantity(before, terms.quantity, self._position(request.follower, key),
                                      request.instrument.lot_size)
        if quantity <= 0:
            return SizeDecision(0, 0, 0.0, "no_position_to_exit",
                                f"the leader reduces its position; {request.follower} holds nothing to reduce")
        return SizeDecision(quantity, 0, 0.0)

    def _leader_position_before(self, request: SizeCopy, key: tuple[str, str], sign: int) -> int | None:
        gateway = self.accounts.get(LEADER)
        if gateway is None or not request.leader_order_id:
            return self._position(LEADER, key) - sign * request.leader_filled
        for _ in range(3):
            first = gateway.order(request.leader_order_id)
            positions = read_positions(LEADER, gateway.positions)
            again = gateway.order(request.leader_order_id)
            if not (first.ok and again.ok and positions) or first.data is None or again.data is None:
                return None
            if first.data.filled_qty == again.data.filled_qty:
                self.positions[LEADER] = positions
                return positions.positions.get(key, 0) - sign * again.data.filled_qty
        return None

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
        if request.follower in self.suspended:
            return SizeDecision(0, 0, 0.0, "account_suspended", self.suspended[request.follower])
        refused_by = self.filters[request.follower].refusal(request.instrument) if request.follower in self.filters else None
        if refused_by:
            return SizeDecision(0, 0, 0.0, "filtered", f"{request.instrument.symbol} refused by filters.{refused_by}")
        decision = self._exit(request) or self._entry(request)
        if decision.skip_reason is None:
            limits = self.limits.get(request.follower)
            if limits is not None and limits.enabled:
                price = request.terms.price or request.terms.trigger_price or request.reference_price \
                    or self.last_price.get(request.terms.security_id, 0.0)
                verdict = risk.check(limits, self._risk_state(request.follower),
                                     request.terms.with_changes(quantity=decision.quantity), price, time.time())
                if not verdict.allowed:
                    self.reservations[request.follower].pop(request.correlation_id, None)
                    note = price_note(request.terms, request.reference_price, request.price_source, price)
                    return SizeDecision(0, 0, 0.0, verdict.rule or "risk_limit",
                                        f"{verdict.detail}; {note}" if note else verdict.detail)
            self.recent_orders[request.follower].append(time.time())
        return decision

    def _entry(self, request: SizeCopy) -> SizeDecision:
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
