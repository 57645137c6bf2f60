"""Broker answers to a copy's calls, as events of its state machine (trading/copy.py), with the log
lines and alerts they call for. Answers for the leader's order (re-reads) and for flattening
orders go to their own modules."""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from actors.messages import LEADER, BrokerReply
from app import metrics
from broker import codes
from broker.errors import ErrorKind
from trading import copy as c
from trading.orders import OrderStatus, OrderUpdate

if TYPE_CHECKING:
    from actors.order import OrderActor
    from actors.order_plan import Plan

log = logging.getLogger("actors.order")
S = OrderStatus


class Answers:
    def __init__(self, actor: "OrderActor") -> None:
        self.actor = actor

    def on_answer(self, reply: BrokerReply) -> None:
        actor = self.actor
        call = reply.call
        if call.follower == LEADER:
            actor.updates.on_reply(reply)
            return
        if actor.legs.is_flatten(call.follower, call.correlation_id):
            actor.legs.on_flatten_answer(reply)
            return
        copy = actor.copies.get(call.follower)
        if copy is None or copy.correlation_id != call.correlation_id:
            return  # for a generation this copy replaced
        follower, op, error = call.follower, call.op, reply.error
        now = time.time()
        if op in ("lookup", "get"):
            if error is not None:
                event: Any = c.CallFailed(c.Call.LOOKUP if op == "lookup" else c.Call.READ, str(error), now,
                                          error.kind == ErrorKind.AUTH, error.transient)
            elif reply.not_found:
                event = c.NotFound(now - max(0, time.monotonic_ns() - reply.sent_ns) / 1e9 if reply.sent_ns else now)
            else:
                event = c.OrderFound(reply.order.order_id if reply.order else "",
                                     c.OrderSeen.of(reply.order) if reply.order else None)
            self._answered(follower, event, reply.order)
            return
        if error is not None and op == "place" and error.outcome_unknown:
            metrics.UNKNOWN_OUTCOMES.labels(follower).inc()
            # Without an answer from the broker itself (a timeout, a dropped connection, a gateway's
            # 5xx), the request may still be at work there: a lookup finding nothing is believed only
            # once the broker has had the REST timeout again to act on it.
            settle = 0.0 if error.from_broker else actor.ctx.policy.unknown_settle_seconds
            self._answered(follower, c.OutcomeUnknown(str(error), now, now + settle))
            return
        if error is not None:
            metrics.FOLLOWER_ORDERS.labels(follower, op, "failed").inc()
            if op != "place":  # placements are counted with their classification
                metrics.FOLLOWER_FAILURES.labels(follower, op, error.reason).inc()
            log.warning("follower %s: %s of leader order %s failed: %s", follower, op, actor.leader_order_id, error,
                        extra=actor.fields(follower))
            if error.kind == ErrorKind.AUTH:  # the token actor pauses this account, not the copier
                actor.ctx.on_auth_failure(follower, f"{error.code} on {op}")
            if op == "place":
                event = c.PlacementRefused(str(error), error.code, error.reason)
            else:
                event = c.CallFailed(c.Call(op), str(error), now, error.kind == ErrorKind.AUTH, error.transient)
            self._answered(follower, event)
            return
        status = _status_or_none(reply.status)
        if op == "place":
            measured = {"placed_at": now}
            if reply.sent_ns and call.received_ns:
                measured["latency_ms"] = (reply.sent_ns - call.received_ns) / 1e6
            self._answered(follower, c.Placed(reply.broker_order_id or "", status, call.terms), measured=measured)
        elif op == "modify":
            self._answered(follower, c.ModifyAccepted(call.terms))
        else:
            self._answered(follower, c.CancelAccepted(status))
        if op != "cancel":  # a cancel is counted once, when the copy is seen CANCELLED
            metrics.FOLLOWER_ORDERS.labels(follower, op, "placed" if op == "place" else "modified").inc()
        log.info("follower %s: %s of leader order %s -> broker order %s", follower, op, actor.leader_order_id,
                 actor.copies[follower].broker_order_id, extra=actor.fields(follower))

    def _answered(self, follower: str, event: Any, update: OrderUpdate | None = None,
                  measured: dict[str, Any] | None = None) -> None:
        actor = self.actor
        before = actor.copies[follower]
        applied: list[c.CopyState] = []

        def build(plan: Plan) -> None:
            if plan.apply(follower, event, update):
                applied.append(plan.states[follower])
                if measured:
                    plan.measured.setdefault(follower, {}).update(measured)

        actor.operate(build)
        if applied:
            self._tell_answer(follower, before, applied[0], event)

    def _tell_answer(self, follower: str, before: c.CopyState, after: c.CopyState, event: Any) -> None:
        """The log lines and alerts of a lookup's or a placement's answer."""
        actor = self.actor
        order, fields = actor.leader_order_id, actor.fields(follower)
        if isinstance(event, c.OutcomeUnknown):
            if after.status is S.UNKNOWN:
                log.warning("follower %s: outcome of the placement of %s unknown (%s); looking it up", follower, order,
                            event.error, extra=fields)
            else:
                log.info("follower %s: answer to the placement of %s lost (%s); the order is known already",
                         follower, order, event.error, extra=fields)
        elif isinstance(event, c.CallFailed) and event.call in (c.Call.LOOKUP, c.Call.READ):
            if before.status is S.UNKNOWN:
                log.warning("follower %s: lookup of the unknown placement of %s got no answer (%s); again in %.1fs",
                            follower, order, event.error, max(after.next_lookup - event.at, 0.0), extra=fields)
            elif after.lookups_given_up and not before.lookups_given_up:
                metrics.ANOMALIES.labels("lookup_failed").inc()
                actor.ctx.alert("warning", f"lookup:{follower}",
                               f"follower {follower}: copy {after.correlation_id} of leader order {order} could not "
                               f"be looked up {after.lookup_failures} times in a row ({event.error}); left "
                               f"{after.status.value} until news of it arrives (see run.py reconcile)")
            elif after.lookup_after > before.lookup_after:
                log.warning("follower %s: could not look up copy of %s (%d of %d): %s; again in %.1fs", follower,
                            order, after.lookup_failures, c.LOOKUP_ATTEMPTS, event.error,
                            after.lookup_after - event.at, extra=fields)
            else:
                log.warning("follower %s: could not look up copy of %s: %s", follower, order, event.error,
                            extra=fields)
        elif isinstance(event, c.OrderFound) and before.status is S.UNKNOWN:
            log.info("follower %s: the unknown placement of %s was found at the broker as %s", follower, order,
                     event.broker_order_id, extra=fields)
        elif isinstance(event, c.NotFound) and before.status is S.UNKNOWN and after.status is S.PENDING_PLACEMENT:
            log.warning("follower %s: the placement of %s never took effect at the broker (%d of %d)", follower,
                        order, after.found_absent, actor.rules.placement_attempts, extra=fields)
        elif isinstance(event, c.NotFound) and before.status.is_open:
            log.warning("follower %s: broker has no order for copy %s", follower, after.correlation_id, extra=fields)


def _status_or_none(text: str | None) -> OrderStatus | None:
    try:
        return codes.status(text) if text else None
    except ValueError:
        return None
