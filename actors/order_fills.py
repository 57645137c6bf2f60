"""Fills and slippage of one leader order and its copies, and the checks that watch them: which
filled first, and copies still open long after the leader's order filled.

The leader's and a follower's fills come on different sockets, in either order. A follower fill
applied before any leader fill waits FILLED_FIRST_GRACE_SECONDS for the leader's before it is
judged: the copy filled first only if the exchange stamped the leader's fill later (or not at all
by then). Fills stamped in the same second are not first.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from actors.messages import FillSeen, FillUncounted
from actors.order_timers import FilledFirstDue, LagCheck
from actors.order_part import OrderPart
from observability import metrics
from trading import copy as c
from trading.account import counted_as
from trading.fills import Fill, slippage
from trading.orders import OrderStatus, OrderUpdate, Side

if TYPE_CHECKING:
    from actors.order import OrderActor
    from actors.order_plan import Plan

log = logging.getLogger("actors.order")
FILLED_FIRST_GRACE_SECONDS = 2.0


class Fills(OrderPart):
    def __init__(self, actor: "OrderActor") -> None:
        super().__init__(actor)
        self.leader_filled_at: str | None = None  # exchange time of the leader's first fill seen here
        self.suspects: dict[str, str] = {}  # part key -> exchange time of a fill the leader's may follow
        self._lag_scheduled = False

    # -- fills -------------------------------------------------------------------------------------------
    def leader_fill(self, plan: "Plan", update: OrderUpdate, fill: Fill) -> None:
        actor = self.actor
        records = actor.records
        plan.write(lambda: records.fill(actor.leader_account, actor.leader_order_id, fill.quantity, fill.price,
                                        update.filled_qty, update.updated_at))

        def counted() -> None:
            metrics.FILLS.labels("leader").inc()
            self._tell_sizing(actor.leader_account, update, fill.quantity)
            self.leader_filled_at = self.leader_filled_at or update.updated_at

        plan.then(counted)

    def follower_fill(self, plan: "Plan", key: str, order_id: str, fill: Fill, cumulative: int,
                      update: OrderUpdate | None) -> None:
        """A fill of the copy (or of one slice of it) named `key`: stored under the slice's order."""
        records = self.actor.records
        follower = plan.states[key].follower
        filled_at = update.updated_at if update is not None else ""
        plan.write(lambda: records.fill(follower, order_id, fill.quantity, fill.price, cumulative, filled_at))

        def counted() -> None:
            metrics.FILLS.labels("follower").inc()
            if update is not None:
                self._tell_sizing(follower, update, fill.quantity)
            if self.actor.leader is not None:
                self.check_filled_first(key, filled_at)

        plan.then(counted)

    def slippage(self, plan: "Plan", key: str, copy: c.CopyState) -> None:
        leader = self.actor.leader
        value = slippage(copy.target.side.value, copy.avg_price, leader.state.avg_price if leader else 0.0)
        if value is None:
            return
        plan.measured.setdefault(key, {})["slippage"] = value
        plan.then(lambda: metrics.SLIPPAGE.labels(copy.follower).observe(value))

    def _tell_sizing(self, account: str, update: OrderUpdate, quantity: int) -> None:
        """Keep the sizing actor's positions current between polls. Only fills the socket brings:
        one recovered from the order book may already be in the positions it read at start (it is
        told uncounted)."""
        if update.source != "socket":
            self.actor.ctx.sizing.tell(FillUncounted(account, self.actor.leader_order_id))
            return
        terms = update.terms
        signed = quantity if terms.side == Side.BUY else -quantity
        self.actor.ctx.sizing.tell(FillSeen(account, terms.exchange_segment, terms.security_id, signed,
                                            update.received_ns, counted_as(update.order_id, update.leg),
                                            update.filled_qty, self.actor.leader_order_id))

    # -- which filled first (by part key: each slice is judged on its own) -------------------------------
    def check_filled_first(self, key: str, filled_at: str) -> None:
        leader = self.actor.leader
        if leader is not None and leader.state.filled_qty > 0:
            if self.leader_filled_at and filled_at and filled_at < self.leader_filled_at:
                self._flag_filled_first(key)
            return
        if key in self.suspects:
            return
        if not self.suspects:
            self.actor.after(FILLED_FIRST_GRACE_SECONDS, FilledFirstDue(), name="filled_first")
        self.suspects[key] = filled_at

    def judge(self) -> None:
        suspects, self.suspects = self.suspects, {}
        leader = self.actor.leader
        for key, filled_at in suspects.items():
            if leader is None or leader.state.filled_qty == 0:
                self._flag_filled_first(key)
            else:
                self.check_filled_first(key, filled_at)

    def _flag_filled_first(self, key: str) -> None:
        actor = self.actor
        copy = actor.copies[key]
        if copy.anomaly is None:  # recorded, no action taken
            actor.operate(lambda plan: plan.apply(key, c.Flagged("follower_filled_first")))
        metrics.ANOMALIES.labels("follower_filled_first").inc()
        log.warning("follower %s filled its copy of %s before the leader filled", key, actor.leader_order_id,
                    extra=actor.fields(copy.follower))

    # -- copies lagging the leader's fill ------------------------------------------------------------------
    def schedule_lag_check(self) -> None:
        seconds = self.actor.ctx.policy.lag_alert_seconds
        if not self._lag_scheduled and seconds > 0:
            self._lag_scheduled = True
            self.actor.after(seconds, LagCheck(), name="lag")

    def check_lag(self) -> None:
        actor = self.actor
        lagging = [f for f, copy in actor.copies.items()
                   if copy.status.is_open or copy.status in (OrderStatus.PENDING_PLACEMENT, OrderStatus.UNKNOWN)]
        if not lagging:
            return
        actor.operate(lambda plan: [plan.apply(f, c.Flagged("lagging")) for f in lagging])
        seconds = actor.ctx.policy.lag_alert_seconds
        for key in lagging:
            copy = actor.copies[key]
            follower = copy.follower
            metrics.LAG_ALERTS.labels(follower).inc()
            slice_of = f" (slice {copy.part + 1})" if copy.part else ""
            actor.ctx.alert("warning", f"lag:{key}",
                            f"follower {follower}: copy{slice_of} of leader order {actor.leader_order_id} still "
                            f"{copy.status.value} {seconds:.0f}s after the leader filled")
