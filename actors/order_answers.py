"""Broker answers to a copy's commands, as events of its state machine (trading/copy.py), with the
log lines, metrics and alerts they call for. Answers about the leader's order (re-reads) and
about flattening orders go to their own modules."""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from actors import messages as msg
from actors.order_part import OrderPart
from observability import metrics
from broker.errors import BrokerError, ErrorKind
from trading import copy as c
from trading.orders import Leg, OrderStatus, OrderUpdate

if TYPE_CHECKING:
    from actors.order import OrderActor
    from actors.order_plan import Plan

log = logging.getLogger("actors.order")
S = OrderStatus


def _exit_leg(command: Any) -> Leg | None:
    """The super order's exit leg a modify or cancel was for (None: the order, or its entry)."""
    leg = getattr(command, "leg", None)
    return leg if leg in (Leg.TARGET, Leg.STOP_LOSS) else None
_OPERATIONS = {msg.PlaceCopy: "place", msg.ModifyCopy: "modify", msg.CancelCopy: "cancel", msg.LookupCopy: "lookup",
               msg.GetOrder: "get"}
_CALLS = {msg.ModifyCopy: c.Call.MODIFY, msg.CancelCopy: c.Call.CANCEL, msg.LookupCopy: c.Call.LOOKUP,
          msg.GetOrder: c.Call.READ}


class Answers(OrderPart):
    def on_answer(self, answer: Any) -> None:
        actor = self.actor
        command = answer.command
        if isinstance(command, msg.ReadSuperOrder):
            actor.supers.on_answer(answer)
            return
        if msg.is_leader(command.account):
            actor.updates.on_answer(answer)
            return
        if actor.legs.is_flatten(command.account, command.correlation_id):
            actor.legs.on_flatten_answer(answer)
            return
        key = next((k for k, copy in actor.copies.items()
                    if copy.follower == command.account and copy.correlation_id == command.correlation_id), None)
        if key is None:
            return  # for a generation this copy replaced
        follower, operation = command.account, _OPERATIONS[type(command)]
        now = time.time()
        if isinstance(answer, msg.CopyPlaced):
            measured: dict[str, Any] = {"placed_at": now}
            if answer.sent_ns and command.received_ns:
                measured["latency_ms"] = (answer.sent_ns - command.received_ns) / 1e6
            self._answered(key, c.Placed(answer.broker_order_id, answer.status, command.terms), measured=measured)
        elif isinstance(answer, msg.CopyModified):
            self._super_leg(command, "done")
            self._answered(key, c.ModifyAccepted(command.terms))
        elif isinstance(answer, msg.CopyCancelled):
            self._super_leg(command, "done")
            self._answered(key, c.CancelAccepted(answer.status, _exit_leg(command)))
        elif isinstance(answer, msg.OrderFound):
            self._answered(key, c.OrderFound(answer.order.order_id, c.OrderSeen.of(answer.order)), answer.order)
            return
        elif isinstance(answer, msg.CopyNotFound):
            self._answered(key, c.NotFound(answer.sent_at))
            return
        elif isinstance(answer, msg.PlacementExpired):
            self._expired(key, answer)
            return
        elif isinstance(answer, msg.PlacementUnknown):
            metrics.UNKNOWN_OUTCOMES.labels(follower).inc()
            # Without an answer from the broker itself (a timeout, a dropped connection, a gateway's
            # 5xx), the request may still be at work there: a lookup finding nothing is believed only
            # once the broker has had the REST timeout again to act on it.
            settle = 0.0 if answer.error.from_broker else actor.ctx.policy.unknown_settle_seconds
            self._answered(key, c.OutcomeUnknown(str(answer.error), now, now + settle))
            return
        else:  # CopyRejected, CallFailed
            self._failed(key, operation, command, answer.error, now)
            return
        if operation != "cancel":  # a cancel is counted once, when the copy is seen CANCELLED
            metrics.series(metrics.FOLLOWER_ORDERS, follower, operation,
                           "placed" if operation == "place" else "modified").inc()
        log.info("follower %s: %s of leader order %s -> broker order %s", key, operation, actor.leader_order_id,
                 actor.copies[key].broker_order_id, extra=actor.fields(follower))

    @staticmethod
    def _super_leg(command: Any, outcome: str) -> None:
        leg = getattr(command, "leg", None)
        if leg is not None:
            operation = "modify" if isinstance(command, msg.ModifyCopy) else "cancel"
            metrics.SUPER_LEG_CALLS.labels(command.account, leg.value, operation, outcome).inc()

    def _expired(self, key: str, answer: msg.PlacementExpired) -> None:
        """The rate limiter held the placement past its age limit and did not send it: a skip."""
        actor = self.actor
        seen_at = actor.leader.seen_at if actor.leader else answer.at
        command = answer.command
        late = c.SkippedLate(answer.at - seen_at, (command.expires_at or answer.at) - seen_at,
                             command.terms.order_type.value)

        follower = answer.command.account

        def build(plan: "Plan") -> None:
            if plan.apply(key, late):
                plan.skip(follower, c.TOO_LATE, late.detail)
                plan.then(lambda: actor.late(follower, late))

        actor.operate(build)

    def _failed(self, key: str, operation: str, command: Any, error: BrokerError, now: float) -> None:
        actor = self.actor
        follower = command.account
        auth = error.kind == ErrorKind.AUTH
        if isinstance(command, (msg.LookupCopy, msg.GetOrder)):
            self._answered(key, c.CallFailed(_CALLS[type(command)], str(error), now, auth, error.transient))
            return
        metrics.FOLLOWER_ORDERS.labels(follower, operation, "failed").inc()
        self._super_leg(command, "failed")
        if operation != "place":  # placements are counted with their classification
            metrics.FOLLOWER_FAILURES.labels(follower, operation, error.reason).inc()
        log.warning("follower %s: %s of leader order %s failed: %s", follower, operation, actor.leader_order_id, error,
                    extra=actor.fields(follower))
        if auth:  # the token actor pauses this account, not the copier
            actor.ctx.on_auth_failure(follower, f"{error.code} on {operation}")
        if isinstance(command, msg.PlaceCopy):
            self._answered(key, c.PlacementRefused(str(error), error.code, error.reason))
        else:
            self._answered(key, c.CallFailed(_CALLS[type(command)], str(error), now, auth, error.transient,
                                             _exit_leg(command)))

    def _answered(self, key: str, event: Any, update: OrderUpdate | None = None,
                  measured: dict[str, Any] | None = None) -> None:
        actor = self.actor
        before = actor.copies[key]
        applied: list[c.CopyState] = []

        def build(plan: "Plan") -> None:
            if plan.apply(key, event, update):
                applied.append(plan.states[key])
                if measured:
                    plan.measured.setdefault(key, {}).update(measured)

        actor.operate(build)
        if applied:
            self._tell(key, before, applied[0], event)

    def _tell(self, key: str, before: c.CopyState, after: c.CopyState, event: Any) -> None:
        """The log lines and alerts of a lookup's or an unknown placement's answer."""
        actor = self.actor
        follower = after.follower
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
