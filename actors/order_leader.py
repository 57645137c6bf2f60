"""The leader's updates after its first: applied when later than the state applied, and what they
mean for the copies (new targets, cancels).

Dhan's updates carry no sequence number and a time in whole seconds. An update that may be older
or newer than the state applied (trading/ordering.py) is held, not acknowledged, and the order is
read from the broker (`GET /orders/{id}`, through the leader's rate limiter); the answer is stored
and routed like any update, and applied as the order's current state, settling the held ones.
"""
from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Collection

from actors.feed import store_and_route
from actors.messages import CallFailed, GetOrder, OrderFound, SizeCopy
from actors.order_catch_up import tell_exit_waiting
from actors.order_timers import RereadDue
from actors.order_part import OrderPart
from observability import metrics
from storage.orders import leader_key
from trading import copy as c
from trading.fills import fill_delta
from trading.instruments import Instrument
from trading.leader import apply_update, leader_event
from trading.lifecycle import InvalidTransition, next_state
from trading.ordering import Ordering, order_of
from trading.orders import OrderStatus, OrderTerms, OrderUpdate, update_to_dict

if TYPE_CHECKING:
    from actors.order import OrderActor
    from actors.order_plan import Plan

log = logging.getLogger("actors.order")
S = OrderStatus
REREAD_ATTEMPTS = 5  # reads of an ambiguous leader order before the reconciler is left to check it
SETTLED_BY_BROKER = "settled_by_broker"  # outcome of held ambiguous updates once the broker's answer is applied


@dataclass
class Reread:
    """A read of the leader's order at the broker, asked because updates of it were ambiguous."""

    covers: frozenset[int]  # the held inbox events its answer settles
    changes: int  # leader updates applied when it was asked: its answer is current only if none since
    answer: OrderUpdate | None = None  # stored and routed, on its way back here
    failures: int = 0


class LeaderUpdates(OrderPart):
    def __init__(self, actor: "OrderActor") -> None:
        super().__init__(actor)
        self.ambiguous: dict[int, OrderUpdate] = {}  # held, not done, until the broker answers
        self.reread: Reread | None = None
        self.changes = 0  # leader updates applied by this incarnation

    @property
    def busy(self) -> bool:
        return self.reread is not None or bool(self.ambiguous)

    def on_update(self, event_id: int, update: OrderUpdate) -> None:
        entry = self.actor.supers.entry  # a super order's entry: completed with the exits known
        update = entry(update)
        reread = self.reread
        if reread is None or reread.answer is None or update != entry(reread.answer):
            self._apply(event_id, update, settles=())
            return
        # The broker's answer to this incarnation's re-read: the order's current state unless a
        # leader update was applied after the read was asked (that one may be older or newer).
        current = reread.changes == self.changes
        self._apply(event_id, update, settles=reread.covers if current else (), authoritative=current)
        for settled in reread.covers if current else ():
            self.ambiguous.pop(settled, None)
        self.reread = None
        if self.ambiguous:  # seen after the read was asked, or the answer itself was overtaken
            self._ask_broker()

    def _apply(self, event_id: int, update: OrderUpdate, settles: Collection[int], authoritative: bool = False) -> None:
        actor = self.actor
        leader = actor.leader
        assert leader is not None
        state = leader.state
        verdict = order_of(state.as_update(), update)
        if verdict == Ordering.AMBIGUOUS and authoritative:
            verdict = Ordering.NEWER
        if verdict == Ordering.AMBIGUOUS:
            self.ambiguous[event_id] = update  # not done: a restart asks again
            if self.reread is None:
                self._ask_broker()
            return
        if verdict == Ordering.STALE:
            metrics.STALE_UPDATES.labels("leader").inc()
            return self._ack(event_id, "stale", settles)
        event = leader_event(state, update)
        if event is None:
            metrics.DUPLICATE_UPDATES.labels("leader").inc()
            return self._ack(event_id, "no_change", settles)
        try:
            next_state(state.status, event)
        except InvalidTransition as exc:
            metrics.INVALID_TRANSITIONS.labels("leader", event.value).inc()
            log.warning("leader order %s: %s; ignored", actor.leader_order_id, exc, extra=actor.fields())
            return self._ack(event_id, "invalid_transition", settles)
        metrics.LEADER_EVENTS.labels(event.value.lower()).inc()
        new_state = apply_update(state, update)
        fill = fill_delta(state.filled_qty, state.avg_price, update.filled_qty, update.avg_price,
                          update.last_fill_price)
        changed = state.terms.modifiable_view() != update.terms.modifiable_view()
        instrument = actor.ctx.instruments.get(update.terms.exchange_segment, update.terms.security_id)
        resized = self._retarget(state.terms, update.terms, instrument) if changed else {}

        def build(plan: "Plan") -> None:
            records = actor.records
            plan.write(lambda: records.save_leader(new_state))
            plan.record(leader_key(actor.leader_order_id), event.value, update_to_dict(update))
            if fill:
                actor.fills.leader_fill(plan, update, fill)
            for follower, (target, skip) in resized.items():
                actor.slices.retarget(plan, follower, target, instrument)
                if skip is not None:
                    plan.skip(follower, *skip)
                    plan.then(lambda f=follower, s=skip: _log_skip(actor, f, s))
            if new_state.status in (S.CANCELLED, S.REJECTED, S.EXPIRED):
                for follower, copy in plan.states.items():
                    if not copy.status.is_terminal and not copy.cancel_requested:
                        plan.apply(follower, c.CancelRequested(new_state.status.value))
            plan.done([event_id], event.value.lower())
            plan.done(settles, SETTLED_BY_BROKER)

        actor.operate(build, leader=dataclasses.replace(leader, state=new_state))
        if changed and state.terms.quantity != update.terms.quantity:
            tell_exit_waiting(actor)  # (the fraction it sells changed)
        self.changes += 1
        if new_state.status is S.TRADED:
            actor.fills.schedule_lag_check()

    def _ack(self, event_id: int, outcome: str, settles: Collection[int]) -> None:
        def build(plan: "Plan") -> None:
            plan.done([event_id], outcome)
            plan.done(settles, SETTLED_BY_BROKER)

        self.actor.operate(build)

    def _retarget(self, old: OrderTerms, terms: OrderTerms,
                  instrument: Instrument | None) -> dict[str, tuple[OrderTerms, tuple[str, str] | None]]:
        """New targets after the leader changed its terms, per follower (the whole copy: its slices
        are cut from it): every field copied, the quantity re-sized from the new leader quantity by
        the same rule (a refusal keeps the old size, recorded)."""
        actor = self.actor
        out: dict[str, tuple[OrderTerms, tuple[str, str] | None]] = {}
        leader = actor.leader
        for follower in dict.fromkeys(copy.follower for copy in actor.copies.values()):
            parts = actor.parts_of(follower)
            if all(p.status.is_terminal or p.cancel_requested for p in parts):
                continue
            copy = parts[0]
            quantity, disclosed, skip = actor.slices.total(parts), copy.target.disclosed_qty, None
            if len(parts) > 1:  # the copy's disclosed quantity, as its slices disclose it together
                disclosed = sum(p.target.disclosed_qty for p in parts if not p.status.is_terminal)
            if instrument is not None and (terms.quantity != old.quantity or terms.disclosed_qty != old.disclosed_qty):
                decision = actor.ask_sizing(SizeCopy(follower, copy.correlation_id, terms, instrument, 0.0,
                                                     leader.state.filled_qty if leader else 0, actor.leader_order_id,
                                                     leader=actor.leader_account))
                if decision.skip_reason:
                    skip = (f"modify_{decision.skip_reason}", decision.detail)
                else:
                    quantity, disclosed = decision.quantity, decision.disclosed_qty
            out[follower] = (terms.with_changes(quantity=quantity, disclosed_qty=disclosed), skip)
        return out

    # -- reading the order from the broker ---------------------------------------------------------------
    def _ask_broker(self) -> None:
        actor = self.actor
        self.reread = Reread(frozenset(self.ambiguous), self.changes)
        metrics.LEADER_REREADS.labels("asked").inc()
        log.info("leader order %s: %d updates may be older or newer than the state applied (same second, "
                 "no sequence); asking the broker", actor.leader_order_id, len(self.ambiguous), extra=actor.fields())
        self.send_reread()

    def send_reread(self) -> None:
        """Through the leader's limiter: its data-API rate, retries of transient failures, a worker
        thread for the call; never this actor's thread."""
        if self.reread is None or self.reread.answer is not None:
            return
        actor = self.actor
        actor.ctx.leader_limiters[actor.leader_account].tell(GetOrder(
            account=actor.leader_account, leader_order_id=actor.leader_order_id, reply_to=actor.address,
            broker_order_id=actor.leader_order_id))

    def on_answer(self, answer: OrderFound | CallFailed) -> None:
        actor = self.actor
        reread = self.reread
        if reread is None or reread.answer is not None:
            return  # asked by an earlier incarnation: what it held is routed here again, and asked anew
        order = answer.order if isinstance(answer, OrderFound) else None
        if order is not None and order.order_id == actor.leader_order_id:
            reread.answer = dataclasses.replace(order, source="reread", received_ns=time.monotonic_ns())
            assert actor.supervisor is not None  # the router: the answer takes the way every update takes
            store_and_route(actor.ctx.store, actor.supervisor, actor.leader_account, reread.answer,
                            key=f"reread:{uuid.uuid4().hex}")
            return
        reread.failures += 1
        metrics.LEADER_REREADS.labels("failed").inc()
        problem = answer.error if isinstance(answer, CallFailed) else f"answered with order {order.order_id if order else 'none'}"
        if reread.failures < REREAD_ATTEMPTS:
            log.warning("leader order %s: could not read it from the broker (%s); trying again",
                        actor.leader_order_id, problem, extra=actor.fields())
            actor.after(float(reread.failures), RereadDue(), name="reread")
            return
        # Give up: the state applied stands; the reconciler compares every copy with the leader's
        # order at the broker and repairs what this leaves wrong.
        held = list(self.ambiguous)
        actor.operate(lambda plan: plan.done(held, "unresolved"))
        self.ambiguous.clear()
        self.reread = None
        metrics.LEADER_REREADS.labels("unresolved").inc()
        actor.ctx.alert("warning", "leader_reread",
                        f"leader order {actor.leader_order_id}: {len(held)} ambiguous updates could not be checked "
                        f"with the broker ({problem}); the reconciler will compare its copies")


def _log_skip(actor: "OrderActor", follower: str, skip: tuple[str, str]) -> None:
    reason, detail = skip
    metrics.SKIPS.labels(follower, reason).inc()
    log.info("leader order %s: follower %s: %s (%s)", actor.leader_order_id, follower, reason, detail,
             extra=actor.fields(follower))
