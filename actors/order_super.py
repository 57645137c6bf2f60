"""The leader's super order, as an order actor follows it (trading/super_orders.py says what is
copied of it, and why the list of super orders is read).

Its legs share the super order's id, so they reach the same order actor: the entry's updates are
the order's own (completed with the exits known, which no update carries); a target or stop-loss
leg's update is no order to copy, but news that the exits may have changed. The exits are read
from the leader's list of super orders (`ReadSuperOrder`, through the leader's rate limiter, on its
data window): before the first copy is decided, on every update of a leg, and every
`copy.super_order_poll_seconds` while the super order is live (a leg changed before the entry
trades is announced by nothing). A read that changes the exits is stored with the leader order
(an EXITS_CHANGED event) and re-targets every follower's copy, in one transaction.

A follower's copy is placed as a super order (`POST /super/orders`); its exit legs' updates move
only their own status in the copy (`LegSeen`), and the copy state machine follows the exits one leg
at a time (trading/copy.py).
"""
from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any

from actors.messages import CallFailed, ReadSuperOrder, SuperOrderRead
from actors.order_timers import SuperReadDue
from actors.order_part import OrderPart
from observability import metrics
from storage.orders import leader_key
from trading import copy as c
from trading.orders import Leg, OrderUpdate, update_to_dict
from trading.super_orders import SuperOrderView, leader_exits

if TYPE_CHECKING:
    from actors.order import OrderActor
    from actors.order_plan import Plan

log = logging.getLogger("actors.order")
READ_ATTEMPTS = 5  # reads in a row that may fail before the first sighting gives up (a recorded skip)
EXIT_FIELDS = ("target_price", "stop_loss_price", "trailing_jump")


class SuperOrders(OrderPart):
    def __init__(self, actor: "OrderActor") -> None:
        super().__init__(actor)
        self.asked = False  # a read is in flight
        self.failures = 0  # reads in a row that failed
        self.view: SuperOrderView | None = None  # the last read

    @property
    def followed(self) -> bool:
        leader = self.actor.leader
        return leader is not None and leader.state.terms.super_order

    # -- the leader's updates -----------------------------------------------------------------------
    def entry(self, update: OrderUpdate) -> OrderUpdate:
        """An update of the entry leg, completed with the exits this actor knows (none before the
        first read)."""
        leader = self.actor.leader
        if leader is None or not leader.state.terms.super_order:
            return update
        return dataclasses.replace(update, terms=update.terms.with_exits_of(leader.state.terms))

    def on_exit_leg(self, event_id: int, update: OrderUpdate) -> None:
        """A target or stop-loss leg of the leader's super order moved: not an order to copy, but
        its exits may have changed (acknowledged once the read is asked: the read is the news)."""
        self.actor.operate(lambda plan: plan.done([event_id], "super_order_leg"))
        if self.actor.leader is not None:
            self.ask()

    # -- reading ------------------------------------------------------------------------------------
    def ask(self) -> None:
        """Read the leader's super order now (unless a read is in flight already)."""
        if self.asked:
            return
        actor = self.actor
        self.asked = True
        actor.cancel_timer("super_read")
        actor.ctx.leader_limiters[actor.leader_account].tell(ReadSuperOrder(
            account=actor.leader_account, leader_order_id=actor.leader_order_id, reply_to=actor.address,
            broker_order_id=actor.leader_order_id))

    def on_due(self, _due: SuperReadDue) -> None:
        if self.followed or self.actor.sighting.waiting is not None:
            self.ask()

    def on_answer(self, answer: SuperOrderRead | CallFailed) -> None:
        actor = self.actor
        self.asked = False
        view = answer.order if isinstance(answer, SuperOrderRead) else None
        if view is None:
            self.failures += 1
            metrics.SUPER_ORDER_READS.labels("failed").inc()
            problem = answer.error if isinstance(answer, CallFailed) else "not in the list of super orders"
            log.warning("leader super order %s: could not read it (%s)", actor.leader_order_id, problem,
                        extra=actor.fields())
            if actor.sighting.waiting is not None and self.failures >= READ_ATTEMPTS:
                actor.sighting.on_super_unreadable(str(problem))
                return
            actor.after(min(float(self.failures), 5.0), SuperReadDue(), name="super_read")
            return
        self.failures = 0
        self.view = view
        if actor.sighting.waiting is not None:
            actor.sighting.on_super(view)
        else:
            self._apply(view)
        self._poll(view)

    def _poll(self, view: SuperOrderView) -> None:
        seconds = self.actor.ctx.policy.super_order_poll_seconds
        if view.live and seconds > 0:
            self.actor.after(seconds, SuperReadDue(), name="super_read")

    def _apply(self, view: SuperOrderView) -> None:
        """The leader's exits as read: stored with the leader order, and every live copy re-targeted."""
        actor = self.actor
        leader = actor.leader
        if leader is None or not leader.state.terms.super_order:
            return
        terms = leader_exits(view, leader.state.terms)
        if terms == leader.state.terms:
            metrics.SUPER_ORDER_READS.labels("unchanged").inc()
            return
        metrics.SUPER_ORDER_READS.labels("changed").inc()
        new_state = dataclasses.replace(leader.state, terms=terms)
        exits = {name: getattr(terms, name) for name in EXIT_FIELDS}

        def build(plan: "Plan") -> None:
            records = actor.records
            plan.write(lambda: records.save_leader(new_state))
            plan.record(leader_key(actor.leader_order_id), "EXITS_CHANGED", update_to_dict(new_state.as_update()))
            for key, copy in plan.states.items():
                if c.phase(copy) is not c.Phase.CLOSED and copy.target.super_order:
                    plan.apply(key, c.TargetChanged(copy.target.with_changes(**exits)))

        actor.operate(build, leader=dataclasses.replace(leader, state=new_state))
        log.info("leader super order %s: exits now target %g, stop-loss %g, trailing jump %g", actor.leader_order_id,
                 terms.target_price, terms.stop_loss_price, terms.trailing_jump, extra=actor.fields())


def exit_leg_event(update: OrderUpdate) -> Any:
    """A follower's update of one exit leg of its copy, as the copy's event."""
    return c.LegSeen(Leg(update.leg), update.status)
