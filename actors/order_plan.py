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

One exception to "store, then send": the first placements of a leader order's new copies leave
before their transaction (`placements_first`), which would otherwise stand between the leader's
update and every copy's request. Each carries a correlation id of its own, so a crash between
the two is recovered by a lookup, never a second send: the update stays stored and not done, and
whoever copies it next looks the copies up first (OrderActor.unstored_placement; docs/design.md).
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Callable

from actors.messages import (BrokerCommand, CancelCopy, CopiesInDoubt, CopiesMade, CopiesResting, CopyInDoubt,
                             CopyResting, GetOrder, LookupCopy, ModifyCopy, PlaceCopy, ReleaseCapital)
from observability import metrics
from broker.errors import BrokerError, ErrorKind
from storage.orders import copy_key
from trading import copy as c
from trading.risk import position_key
from trading.copy_records import persisted, record
from trading.fills import fill_delta
from trading.orders import Leg, OrderStatus, OrderUpdate

if TYPE_CHECKING:
    from actors.order import OrderActor

log = logging.getLogger("actors.order")
S = OrderStatus
MAX_STEPS = 16  # local decisions in a row for one copy before it must have settled (a bug otherwise)


class Plan:
    def __init__(self, actor: "OrderActor", scoped: bool = False, placements_first: bool = False) -> None:
        """`scoped`: decide only for the copies events are applied to (replies, each about one
        copy); else for every copy (the leader's updates, timers and commands concern them all).
        `placements_first`: when every call is a new copy's first placement, send before storing."""
        self.actor = actor
        self.scoped = scoped
        self.placements_first = placements_first
        self.now = time.time()
        self.before = actor.copies
        self.states: dict[str, c.CopyState] = dict(actor.copies)  # by part key (c.part_key)
        self.sliced = actor.sliced
        self.given_up = actor.given_up
        self.created: dict[str, float] = {}  # new copies (and slices): part key -> capital reserved
        self.touched: dict[str, None] = {}  # copies events were applied to, in the order they were
        self.unsettled: dict[str, None] = {}  # those moved since the last `converge`
        self.measured: dict[str, dict[str, Any]] = {}  # by part key: placed_at, latency_ms, slippage
        self.records: list[tuple[str, str, dict[str, Any]]] = []
        self.writes: list[Callable[[], None]] = []
        self.commands: list[BrokerCommand] = []
        self.after: list[Callable[[], None]] = []
        self.wake: float | None = None
        self.in_doubt: dict[str, None] = {}  # copies whose placement is looked up first (the sizing actor's)
        self.resting: dict[str, None] = {}  # copies loaded open at their brokers (the sizing actor's)

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
        self.states[state.key] = state
        if state.part > 0 and state.follower not in self.sliced:
            self.sliced = self.sliced | {state.follower}
        self.created[state.key] = reserved
        kind, payload = record(None, event, state)  # type: ignore[misc]
        self.record(copy_key(state.leader_order_id, state.follower, state.part), kind, payload)
        return state

    def parts(self, follower: str) -> list[c.CopyState]:
        """Every slice of `follower`'s copy as this plan holds it, the first first."""
        return c.parts_of(self.states, follower, self.sliced)

    def apply(self, key: str, event: Any, update: OrderUpdate | None = None) -> bool:
        """Apply an event from outside (an answer, an update, a command) to the copy (or slice)
        named `key`; one its state machine refuses is counted, logged and ignored (False)."""
        before = self.states[key]
        try:
            after = c.apply(before, event)
        except c.InvalidCopyEvent as exc:
            metrics.INVALID_TRANSITIONS.labels("follower", type(event).__name__).inc()
            log.warning("follower %s copy of %s: %s; ignored", key, self.actor.leader_order_id, exc,
                        extra=self.actor.fields(before.follower))
            return False
        seen = event if isinstance(event, c.OrderSeen) else getattr(event, "order", None)
        if isinstance(seen, c.OrderSeen):
            transition, allowed = c.broker_transition(before, seen)
            if not allowed and transition is not None:
                metrics.INVALID_TRANSITIONS.labels("follower", transition.value).inc()
                log.warning("follower %s copy of %s: %s is not allowed in state %s; ignored", key,
                            self.actor.leader_order_id, transition.value, before.status.value,
                            extra=self.actor.fields(before.follower))
        self._moved(key, before, event, after, seen, update)
        return True

    def news_arrived(self) -> None:
        """Any news of the order wakes its copies whose lookups gave up (in the copies' order)."""
        if not self.given_up:  # (nearly always: no walk over every copy for each update)
            return
        for key in [key for key in self.states if key in self.given_up]:
            self.apply(key, c.NewsArrived())

    def _apply_own(self, key: str, event: Any) -> None:
        """Apply the event of a decision this copy took: its state machine must allow it."""
        before = self.states[key]
        self._moved(key, before, event, c.apply(before, event), None, None)

    def _moved(self, key: str, before: c.CopyState, event: Any, after: c.CopyState,
               seen: c.OrderSeen | None, update: OrderUpdate | None) -> None:
        self.states[key] = after
        self.touched[key] = None
        self.unsettled[key] = None
        if after.lookups_given_up != before.lookups_given_up:
            self.given_up = self.given_up | {key} if after.lookups_given_up else self.given_up - {key}
        stored = record(before, event, after, update)
        if stored is not None:
            self.record(copy_key(after.leader_order_id, after.follower, after.part), *stored)
        if seen is not None and after.filled_qty > before.filled_qty:
            fill = fill_delta(before.filled_qty, before.avg_price, seen.filled_qty, seen.avg_price,
                              seen.last_fill_price)
            if fill is not None:
                self.actor.fills.follower_fill(self, key, seen.order_id or after.broker_order_id or "", fill,
                                               seen.filled_qty, update)
        if after.status is not before.status:
            self._status_changed(key, before, after)
        if (after.part == 0 and not after.broker_order_id and not after.held
              and (isinstance(event, c.Resumed) or after.absent_believed_from > before.absent_believed_from)):
            self.in_doubt[key] = None  # (loaded by a new incarnation, or its placement's outcome unknown)
        elif (isinstance(event, c.Resumed) and after.part == 0 and after.broker_order_id
              and not after.status.is_terminal):
            self.resting[key] = None

    def _status_changed(self, key: str, before: c.CopyState, after: c.CopyState) -> None:
        actor = self.actor
        follower = after.follower
        if (after.status.is_terminal and not before.status.is_terminal
                and all(s.status.is_terminal for s in self.parts(follower))):
            # the capital was reserved for the whole copy, under its first slice's correlation id
            cid = c.correlation_id(after.leader_order_id, follower, self.parts(follower)[0].generation)
            self.then(lambda: actor.ctx.sizing.tell(ReleaseCapital(follower, cid)))
        if after.status is S.CANCELLED:
            self.then(lambda: metrics.FOLLOWER_ORDERS.labels(follower, "cancel", "cancelled").inc())
        elif after.status is S.TRADED:
            actor.fills.slippage(self, key, after)
        elif after.status is S.UNKNOWN:
            self.then(actor.schedule_unknown_check)

    # -- deciding --------------------------------------------------------------------------------------
    def converge(self) -> None:
        """Every copy's next decisions (a scoped plan's: those of the copies moved since its last
        `converge`): local steps applied at once, at most one call each.

        A copy's decisions depend on its own state, the leader's and the time only (trading/copy.py
        `decide`), so a copy no event moved still stands where the last operation left it: a reply
        about one copy need not look at the other copies of the order."""
        leader = self.actor.leader_view()
        rules = self.actor.rules
        deciding = ([*self.unsettled, *(k for k in self.created if k not in self.unsettled)] if self.scoped
                    else list(self.states))
        for key in deciding:
            for _ in range(MAX_STEPS):
                decision = c.decide(self.states[key], leader, self.now, rules)
                if decision is None:
                    break
                if isinstance(decision, c.Wait):
                    self.wake = decision.until if self.wake is None else min(self.wake, decision.until)
                    break
                self._carry_out(key, decision)
                if isinstance(decision, c.CALLS):
                    break
            else:
                raise RuntimeError(f"the copy for {key} did not settle after {MAX_STEPS} decisions")
        self.unsettled.clear()

    def _first_placements(self) -> dict[str, tuple[str, str]]:
        """The calls' correlation ids (-> leader order, follower), when they may leave before the
        transaction: every one a first placement of a copy this plan made, and storage up (else
        none: stored first)."""
        if not self.placements_first or not self.commands or self.actor.ctx.store.down:
            return {}
        new = {self.states[key].correlation_id for key in self.created}
        ids = {command.correlation_id: (command.leader_order_id, command.account) for command in self.commands
               if isinstance(command, PlaceCopy) and command.correlation_id in new}
        return ids if len(ids) == len(self.commands) else {}

    def _made(self, created: list[tuple[c.CopyState, float]]) -> None:
        actor = self.actor
        if created and actor.supervisor is not None:  # told before the placements leave: see CopiesMade
            actor.supervisor.tell(CopiesMade(actor.leader_order_id,
                                             tuple((state.follower, state.correlation_id) for state, _ in created)))

    def _carry_out(self, key: str, d: c.Decision) -> None:
        actor = self.actor
        state = self.states[key]
        follower = state.follower
        to = actor.addressing(state)
        if isinstance(d, c.Place):
            received_ns = actor.received_ns.get(key, 0)
            self.commands.append(PlaceCopy(**to, terms=d.terms, received_ns=received_ns, expires_at=d.expires_at))
            self.then(lambda: actor.received_ns.pop(key, None))  # only a first placement measures latency
            self._apply_own(key, c.PlaceSent())
        elif isinstance(d, c.Modify):
            assert state.broker_order_id
            self.commands.append(ModifyCopy(**to, broker_order_id=state.broker_order_id, terms=d.terms, leg=d.leg))
            self._apply_own(key, c.ModifySent())
        elif isinstance(d, c.Cancel):
            assert state.broker_order_id
            # a super order is cancelled through its legs: the entry's cancel cancels every leg still open
            leg = d.leg or (Leg.ENTRY if state.target.super_order else None)
            self.commands.append(CancelCopy(**to, broker_order_id=state.broker_order_id, leg=leg))
            self._apply_own(key, c.CancelSent())
        elif isinstance(d, c.Lookup):
            wait = d.not_before - self.now
            self.commands.append(LookupCopy(**to, not_before=time.monotonic() + wait if wait > 0 else 0.0))
            self._apply_own(key, c.LookupSent())
        elif isinstance(d, c.Read):
            assert state.broker_order_id
            self.commands.append(GetOrder(**to, broker_order_id=state.broker_order_id))
            self._apply_own(key, c.ReadSent())
        elif isinstance(d, c.Abort):
            if state.part == 0:  # a copy's skip is recorded once, with its first slice
                self.skip(follower, "leader_cancelled_before_placement",
                          "the leader cancelled before the copy was sent; nothing was placed")
            self._apply_own(key, c.Aborted())
        elif isinstance(d, c.SkipLate):
            self._skip_late(key, d)
        elif isinstance(d, c.GiveUp):
            error = BrokerError("NOT_PLACED", ErrorKind.OTHER, f"{d.placements} placements never took effect at the broker")
            self._apply_own(key, c.PlacementRefused(str(error), error.code, error.reason))
        elif isinstance(d, c.RequestCancel):
            self._apply_own(key, c.CancelRequested(d.because))
        elif isinstance(d, c.StartReplace):
            self._apply_own(key, c.ReplaceStarted())
        elif isinstance(d, c.Replace):
            self._apply_own(key, c.Replaced())
            cid = self.states[key].correlation_id
            self.then(lambda: log.info("follower %s: copy replaced after the modification cap as %s", key, cid,
                                       extra=actor.fields(follower)))
        elif isinstance(d, c.FlagCap):
            self._flag_cap(key, d)
        elif isinstance(d, c.RecordRejection):
            self._record_rejection(key, d)
        else:  # pragma: no cover - every decision is handled above
            raise TypeError(f"no way to carry out {d!r}")

    def _skip_late(self, key: str, d: c.SkipLate) -> None:
        actor = self.actor
        state = self.states[key]
        follower = state.follower
        event = c.SkippedLate(d.age, d.limit, state.target.order_type.value)
        self.skip(follower, c.TOO_LATE, event.detail)
        self._apply_own(key, event)
        self.then(lambda: actor.late(follower, event))

    def _flag_cap(self, key: str, d: c.FlagCap) -> None:
        actor = self.actor
        follower = self.states[key].follower
        self._apply_own(key, c.Flagged("modification_cap"))
        self.skip(follower, "modification_cap", f"{d.modifications} modifications reached the broker's cap")

        def announce() -> None:
            metrics.SKIPS.labels(follower, "modification_cap").inc()
            log.info("leader order %s: follower %s: modification_cap", actor.leader_order_id, key,
                     extra=actor.fields(follower))
            actor.ctx.alert("warning", f"modcap:{follower}",
                            f"follower {follower}: copy of {actor.leader_order_id} hit the modification cap")

        self.then(announce)

    def _record_rejection(self, key: str, d: c.RecordRejection) -> None:
        """A market or account reason is a skip; anything else is dead-lettered."""
        actor = self.actor
        reason = d.reason or BrokerError("", ErrorKind.ORDER, d.message).reason
        state = self.states[key]
        follower = state.follower
        records = actor.records
        if reason in c.SKIP_REASONS:
            self.skip(follower, reason, d.message)
        else:
            cid = state.correlation_id
            self.write(lambda: records.dead_letter(follower, cid, d.code, d.message))
        self._apply_own(key, c.RejectionRecorded())
        self.then(lambda: actor.announce_rejection(follower, reason, d.message))

    def _tell_in_doubt(self) -> None:
        """The sizing actor holds its followers' exits for these copies until they are placed."""
        actor, now = self.actor, time.time()
        filled = actor.leader.state.filled_qty if actor.leader is not None else 0
        copies = tuple(CopyInDoubt(s.follower, s.correlation_id, position_key(s.target), actor.leader_account,
                                   s.leader_order_id, filled, max(now, s.absent_believed_from))
                       for s in map(self.states.__getitem__, self.in_doubt)
                       if not s.broker_order_id and not s.status.is_terminal)
        if copies:
            actor.ctx.sizing.tell(CopiesInDoubt(copies))

    def _tell_resting(self) -> None:
        """The sizing actor's exits that close their leader's position cancel these if they rest."""
        actor = self.actor
        traded = actor.leader is not None and actor.leader.state.status is S.TRADED
        copies = tuple(CopyResting(s.follower, s.correlation_id, position_key(s.target), actor.leader_account,
                                   s.leader_order_id, traded) for s in map(self.states.__getitem__, self.resting))
        actor.ctx.sizing.tell(CopiesResting(copies))

    # -- storing and carrying out ----------------------------------------------------------------------
    def commit(self) -> None:
        actor = self.actor
        records = actor.records
        saves = [(self.before[f], self.states[f]) for f in self.touched
                 if f not in self.created and (f in self.measured or persisted(self.states[f]) != persisted(self.before[f]))]
        created = [(self.states[f], reserved) for f, reserved in self.created.items()]
        first = self._first_placements()
        if first:
            actor.ctx.sent_unstored.update(first)  # until stored: see the module's docstring
            self._made(created)
            actor.send(self.commands)
        if self.writes or self.records or saves or created:
            def effect() -> None:
                for write in self.writes:
                    write()
                for state, reserved in created:
                    records.create_copy(state, reserved)
                for before, after in saves:
                    records.save_copy(before, after, **self.measured.get(after.key, {}))
                for key, kind, payload in self.records:
                    records.append(key, kind, payload)

            records.commit(effect)
        if first:
            for cid in first:
                actor.ctx.sent_unstored.pop(cid, None)
        else:
            self._made(created)
        actor.copies, actor.sliced, actor.given_up = self.states, self.sliced, self.given_up
        actor.held_legs.watch()
        if self.commands and not first:
            actor.send(self.commands)
        if self.in_doubt:
            self._tell_in_doubt()
        if self.resting:
            self._tell_resting()
        for fn in self.after:
            fn()
        if self.wake is not None:
            actor.wake_at(self.wake)
