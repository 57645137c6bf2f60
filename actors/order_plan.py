"""One operation of an order actor: events applied to its copies (trading/copy.py), the decisions
they lead to, all of it stored in one transaction, and only then carried out.

    plan = Plan(actor)
    plan.apply("f1", CancelRequested("leader cancelled"))
    plan.done([event_id], "cancelled")
    plan.converge()   # decide() for every copy: local steps applied, broker calls queued
    plan.commit()     # store, then send the calls, then metrics, logs and alerts

Computing first and writing after keeps the transaction short and lets `Store.write` run it again
after a lock: the writes are a list made from the states before and after, not effects done as
the events were applied. A plan that stores nothing (a lookup sent on a timer) opens no
transaction.
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Callable

from actors.messages import (BrokerCommand, CancelCopy, GetOrder, LookupCopy, ModifyCopy, PlaceCopy,
                             ReleaseCapital)
from observability import metrics
from broker.errors import BrokerError, ErrorKind
from storage.orders import copy_key
from trading import copy as c
from trading.copy_records import persisted, record
from trading.fills import fill_delta
from trading.orders import OrderStatus, OrderUpdate

if TYPE_CHECKING:
    from actors.order import OrderActor

log = logging.getLogger("actors.order")
S = OrderStatus
MAX_STEPS = 16  # local decisions in a row for one copy before it must have settled (a bug otherwise)


class Plan:
    def __init__(self, actor: "OrderActor", scoped: bool = False) -> None:
        """`scoped`: decide only for the copies events are applied to (replies, each about one
        copy); else for every copy (the leader's updates, timers and commands concern them all)."""
        self.actor = actor
        self.scoped = scoped
        self.now = time.time()
        self.before = actor.copies
        self.states: dict[str, c.CopyState] = dict(actor.copies)
        self.created: dict[str, float] = {}  # new copies: follower -> capital reserved
        self.touched: dict[str, None] = {}  # copies events were applied to, in the order they were
        self.unsettled: dict[str, None] = {}  # those moved since the last `converge`
        self.measured: dict[str, dict[str, Any]] = {}  # placed_at, latency_ms, slippage
        self.records: list[tuple[str, str, dict[str, Any]]] = []
        self.writes: list[Callable[[], None]] = []
        self.commands: list[BrokerCommand] = []
        self.after: list[Callable[[], None]] = []
        self.wake: float | None = None

    # -- building ----------------------------------------------------------------------------------------
    def write(self, fn: Callable[[], None]) -> None:
        """A storage write for the transaction (it may run more than once: see the module's note)."""
        self.writes.append(fn)

    def then(self, fn: Callable[[], None]) -> None:
        """Something to do once the transaction committed and the calls are sent."""
        self.after.append(fn)

    def record(self, key: str, kind: str, payload: dict[str, Any]) -> None:
        self.records.append((key, kind, payload))

    def done(self, event_ids: Any, outcome: str) -> None:
        ids = list(event_ids)
        if ids:
            records = self.actor.records
            self.write(lambda: records.done(ids, outcome))

    def skip(self, follower: str | None, reason: str, detail: str) -> None:
        records = self.actor.records
        self.write(lambda: records.skip(follower, reason, detail))

    def create(self, event: c.Submitted | c.Skipped, reserved: float = 0.0) -> c.CopyState:
        state = c.start(event)
        self.states[state.follower] = state
        self.created[state.follower] = reserved
        kind, payload = record(None, event, state)  # type: ignore[misc]
        self.record(copy_key(state.leader_order_id, state.follower), kind, payload)
        return state

    def apply(self, follower: str, event: Any, update: OrderUpdate | None = None) -> bool:
        """Apply an event from outside (an answer, an update, a command); one the copy's state
        machine refuses is counted, logged and ignored (False)."""
        before = self.states[follower]
        try:
            after = c.apply(before, event)
        except c.InvalidCopyEvent as exc:
            metrics.INVALID_TRANSITIONS.labels("follower", type(event).__name__).inc()
            log.warning("follower %s copy of %s: %s; ignored", follower, self.actor.leader_order_id, exc,
                        extra=self.actor.fields(follower))
            return False
        seen = event if isinstance(event, c.OrderSeen) else getattr(event, "order", None)
        if isinstance(seen, c.OrderSeen):
            transition, allowed = c.broker_transition(before, seen)
            if not allowed and transition is not None:
                metrics.INVALID_TRANSITIONS.labels("follower", transition.value).inc()
                log.warning("follower %s copy of %s: %s is not allowed in state %s; ignored", follower,
                            self.actor.leader_order_id, transition.value, before.status.value,
                            extra=self.actor.fields(follower))
        self._moved(follower, before, event, after, seen, update)
        return True

    def _apply_own(self, follower: str, event: Any) -> None:
        """Apply the event of a decision this copy took: its state machine must allow it."""
        before = self.states[follower]
        self._moved(follower, before, event, c.apply(before, event), None, None)

    def _moved(self, follower: str, before: c.CopyState, event: Any, after: c.CopyState,
               seen: c.OrderSeen | None, update: OrderUpdate | None) -> None:
        self.states[follower] = after
        self.touched[follower] = None
        self.unsettled[follower] = None
        stored = record(before, event, after, update)
        if stored is not None:
            self.record(copy_key(after.leader_order_id, follower), *stored)
        if seen is not None and after.filled_qty > before.filled_qty:
            fill = fill_delta(before.filled_qty, before.avg_price, seen.filled_qty, seen.avg_price,
                              seen.last_fill_price)
            if fill is not None:
                self.actor.fills.follower_fill(self, follower, seen.order_id or after.broker_order_id or "", fill,
                                               seen.filled_qty, update)
        if after.status is not before.status:
            self._status_changed(follower, before, after)

    def _status_changed(self, follower: str, before: c.CopyState, after: c.CopyState) -> None:
        actor = self.actor
        if after.status.is_terminal and not before.status.is_terminal:
            cid = before.correlation_id
            self.then(lambda: actor.ctx.sizing.tell(ReleaseCapital(follower, cid)))
        if after.status is S.CANCELLED:
            self.then(lambda: metrics.FOLLOWER_ORDERS.labels(follower, "cancel", "cancelled").inc())
        elif after.status is S.TRADED:
            actor.fills.slippage(self, follower, after)
        elif after.status is S.UNKNOWN:
            self.then(actor.schedule_unknown_check)

    # -- deciding --------------------------------------------------------------------------------------
    def converge(self) -> list[str]:
        """Every copy's next decisions (a scoped plan's: those of the copies moved since its last
        `converge`): local steps applied at once, at most one call each. Returns the copies decided.

        A copy's decisions depend on its own state, the leader's and the time only (trading/copy.py
        `decide`), so a copy no event moved still stands where the last operation left it: a reply
        about one copy need not look at the other copies of the order."""
        leader = self.actor.leader_view()
        rules = self.actor.rules
        deciding = ([*self.unsettled, *(f for f in self.created if f not in self.unsettled)] if self.scoped
                    else list(self.states))
        for follower in deciding:
            for _ in range(MAX_STEPS):
                decision = c.decide(self.states[follower], leader, self.now, rules)
                if decision is None:
                    break
                if isinstance(decision, c.Wait):
                    self.wake = decision.until if self.wake is None else min(self.wake, decision.until)
                    break
                self._carry_out(follower, decision)
                if isinstance(decision, c.CALLS):
                    break
            else:
                raise RuntimeError(f"the copy for {follower} did not settle after {MAX_STEPS} decisions")
        self.unsettled.clear()
        return deciding

    def _carry_out(self, follower: str, d: c.Decision) -> None:
        actor = self.actor
        state = self.states[follower]
        to = actor.addressing(state)
        if isinstance(d, c.Place):
            received_ns = actor.received_ns.get(follower, 0)
            self.commands.append(PlaceCopy(**to, terms=d.terms, received_ns=received_ns, expires_at=d.expires_at))
            self.then(lambda: actor.received_ns.pop(follower, None))  # only a first placement measures latency
            self._apply_own(follower, c.PlaceSent())
        elif isinstance(d, c.Modify):
            assert state.broker_order_id
            self.commands.append(ModifyCopy(**to, broker_order_id=state.broker_order_id, terms=d.terms))
            self._apply_own(follower, c.ModifySent())
        elif isinstance(d, c.Cancel):
            assert state.broker_order_id
            self.commands.append(CancelCopy(**to, broker_order_id=state.broker_order_id))
            self._apply_own(follower, c.CancelSent())
        elif isinstance(d, c.Lookup):
            wait = d.not_before - self.now
            self.commands.append(LookupCopy(**to, not_before=time.monotonic() + wait if wait > 0 else 0.0))
            self._apply_own(follower, c.LookupSent())
        elif isinstance(d, c.Read):
            assert state.broker_order_id
            self.commands.append(GetOrder(**to, broker_order_id=state.broker_order_id))
            self._apply_own(follower, c.ReadSent())
        elif isinstance(d, c.Abort):
            self.skip(follower, "leader_cancelled_before_placement",
                      "the leader cancelled before the copy was sent; nothing was placed")
            self._apply_own(follower, c.Aborted())
        elif isinstance(d, c.SkipLate):
            self._skip_late(follower, d)
        elif isinstance(d, c.GiveUp):
            error = BrokerError("NOT_PLACED", ErrorKind.OTHER, f"{d.placements} placements never took effect at the broker")
            self._apply_own(follower, c.PlacementRefused(str(error), error.code, error.reason))
        elif isinstance(d, c.RequestCancel):
            self._apply_own(follower, c.CancelRequested(d.because))
        elif isinstance(d, c.StartReplace):
            self._apply_own(follower, c.ReplaceStarted())
        elif isinstance(d, c.Replace):
            self._apply_own(follower, c.Replaced())
            cid = self.states[follower].correlation_id
            self.then(lambda: log.info("follower %s: copy replaced after the modification cap as %s", follower, cid,
                                       extra=actor.fields(follower)))
        elif isinstance(d, c.FlagCap):
            self._flag_cap(follower, d)
        elif isinstance(d, c.RecordRejection):
            self._record_rejection(follower, d)
        else:  # pragma: no cover - every decision is handled above
            raise TypeError(f"no way to carry out {d!r}")

    def _skip_late(self, follower: str, d: c.SkipLate) -> None:
        actor = self.actor
        event = c.SkippedLate(d.age, d.limit, self.states[follower].target.order_type.value)
        self.skip(follower, c.TOO_LATE, event.detail)
        self._apply_own(follower, event)
        self.then(lambda: actor.late(follower, event))

    def _flag_cap(self, follower: str, d: c.FlagCap) -> None:
        actor = self.actor
        self._apply_own(follower, c.Flagged("modification_cap"))
        self.skip(follower, "modification_cap", f"{d.modifications} modifications reached the broker's cap")

        def announce() -> None:
            metrics.SKIPS.labels(follower, "modification_cap").inc()
            log.info("leader order %s: follower %s: modification_cap", actor.leader_order_id, follower,
                     extra=actor.fields(follower))
            actor.ctx.alert("warning", f"modcap:{follower}",
                            f"follower {follower}: copy of {actor.leader_order_id} hit the modification cap")

        self.then(announce)

    def _record_rejection(self, follower: str, d: c.RecordRejection) -> None:
        """A market or account reason is a skip; anything else is dead-lettered."""
        actor = self.actor
        reason = d.reason or BrokerError("", ErrorKind.ORDER, d.message).reason
        state = self.states[follower]
        records = actor.records
        if reason in c.SKIP_REASONS:
            self.skip(follower, reason, d.message)
        else:
            cid = state.correlation_id
            self.write(lambda: records.dead_letter(follower, cid, d.code, d.message))
        self._apply_own(follower, c.RejectionRecorded())
        self.then(lambda: actor.announce_rejection(follower, reason, d.message))

    # -- storing and carrying out ----------------------------------------------------------------------
    def commit(self) -> None:
        actor = self.actor
        records = actor.records
        saves = [(self.before[f], self.states[f]) for f in self.touched
                 if f not in self.created and (f in self.measured or persisted(self.states[f]) != persisted(self.before[f]))]
        created = [(self.states[f], reserved) for f, reserved in self.created.items()]
        if self.writes or self.records or saves or created:
            def effect() -> None:
                for write in self.writes:
                    write()
                for state, reserved in created:
                    records.create_copy(state, reserved)
                for before, after in saves:
                    records.save_copy(before, after, **self.measured.get(after.follower, {}))
                for key, kind, payload in self.records:
                    records.append(key, kind, payload)

            records.commit(effect)
        actor.copies = self.states
        if self.commands:
            actor.send(self.commands)
        for fn in self.after:
            fn()
        if self.wake is not None:
            actor.wake_at(self.wake)
