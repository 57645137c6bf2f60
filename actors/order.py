"""The order actor: one per leader order, the only place that order's events are applied.

Being one actor per order serialises everything that happens to the order (place, modify, cancel,
fills, broker answers) without locks, and lets other orders proceed in parallel.

It is a shell around trading/copy.py: it turns each message into events, applies them to the
copies (`Plan`), stores the events and the resulting states in one transaction, asks each copy's
`decide` what it needs next, and carries that out (at most one broker call in flight per copy).
The rest has modules of their own (actors/order_*.py, one per concern). A restarted actor
reloads its copies from storage, looks them up at the broker, and carries on.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Container

import pykka

from actors.context import CopierContext
from actors.messages import (LEADER, BrokerAnswer, BrokerCommand, CancelCopies, CatchUpCopy, CopiesWanted, is_leader,
                             OrderActorIdle, OrderUpdateReceived, ProtectCopy, QuotePrice, ReduceCopy, RetryCopy,
                             SizeCopies, SizeCopy, SizingHeld, SizingReady, SyncCopies, UnwindLeg)
from actors.order_answers import Answers
from actors.order_batch import handle_batch, takes_in_batch
from actors.order_catch_up import catch_up, protect, reduce_resting, tell_exit_waiting
from actors.order_fills import Fills
from actors.order_leader import LeaderUpdates
from actors.order_legs import HeldLegs
from actors.order_plan import Plan
from supervisors.pool import PooledActor
from actors.order_sighting import FirstSighting
from actors.order_slices import Slices
from actors.order_super import SuperOrders, exit_leg_event
from actors.order_strategy import Legs, flatten_correlation_id
from actors.order_timers import (FilledFirstDue, LagCheck, LookupDue, PriceWaitOver, RereadDue, SizingOverdue,
                                 SuperReadDue, HoldCheck, UnknownCheck)
from actors.rate_limiter import send_all
from actors.sizing import SIZING_TIMEOUT, ask_sizing
from observability import metrics
from storage import StorageDown
from storage.orders import OrderRecords, StoredLeader, copy_key
from supervisors import Address
from supervisors.timers import TimerHandle
from trading import copy as c
from trading.orders import OrderStatus, OrderUpdate

log = logging.getLogger("actors.order")
S = OrderStatus
NEWS = (OrderUpdateReceived, CancelCopies, SyncCopies, UnwindLeg)  # worth asking the broker again

__all__ = ["OrderActor", "copy_key", "flatten_correlation_id"]


class OrderActor(PooledActor):
    """Runs on the router's pool of order threads (supervisors/pool.py), not a thread of its own."""

    def __init__(self, address: Address, supervisor: Address | None, leader_order_id: str,
                 ctx: CopierContext, parked: Container[int] = (), acted_on: Container[str] = (),
                 run_started: float = 0.0) -> None:
        """`acted_on`: orders whose stored updates may have been acted on with the effect unstored
        (placements sent first: Plan.commit) before `run_started`, when this run began."""
        super().__init__(address, supervisor)
        self.parked = parked  # inbox events the router parked as dead letters: never applied
        self.acted_on = acted_on
        self.run_started = run_started
        self.leader_order_id = leader_order_id
        self.ctx = ctx
        self.records = OrderRecords(ctx.store, leader_order_id)
        self.leader: StoredLeader | None = None
        self.leader_account = LEADER  # which leader's order: from its first update, or as stored
        # by part key (c.part_key): the follower's name, or `follower#N` for a further slice of its copy
        self.copies: dict[str, c.CopyState] = {}
        self.sliced: frozenset[str] = frozenset()  # followers whose copy has more than one slice
        self.given_up: frozenset[str] = frozenset()  # copies (part keys) whose lookups gave up: any news wakes them
        self.received_ns: dict[str, int] = {}  # by part key: when the leader update that created it arrived
        self.applied: set[int] = set()  # inbox event ids applied by this incarnation
        policy = ctx.policy
        self.rules = c.Rules(policy.max_modifications, policy.replace_after_modification_cap, policy.placement_attempts)
        self.sighting = FirstSighting(self)
        # What it is told while its first sighting waits for sizing (FirstSighting.sizing): handled
        # once decided, in the order told, as if it had waited in the mailbox
        self.stashed: list[Any] = []
        self.updates = LeaderUpdates(self)
        self.fills = Fills(self)
        self.legs = Legs(self)
        self.held_legs = HeldLegs(self)  # SELL legs held for their BUY legs (legs: buy_first)
        self.slices = Slices(self)
        self.supers = SuperOrders(self)
        self.answers = Answers(self)
        self._timers: dict[str, TimerHandle] = {}
        self._unknown_checks: list[TimerHandle] = []
        self.storage_down = False  # a write was refused: this incarnation is done
        self.batch: Plan | None = None  # while replies are handled together: the one plan they build

    # -- life ------------------------------------------------------------------------------------------
    def started(self) -> None:
        metrics.ACTORS_RUNNING.inc()
        self.leader = self.records.load_leader()
        if self.leader is None:
            return  # a new order: nothing stored yet (its copies are stored with it)
        self.leader_account, self.copies = self.leader.account, {copy.key: copy for copy in self.records.load_copies()}
        self.sliced = c.sliced_followers(self.copies.values())
        self.given_up = frozenset(key for key, copy in self.copies.items() if copy.lookups_given_up)
        # Updates not yet done are routed to this incarnation by the router (on restart, and by its
        # sweep). A copy still unknown: a "not found" counts only after a settle time.
        # A placement the last incarnation sent was sent less than a broker timeout before it ended,
        # and may reach the broker up to about a timeout after its client gave up: twice the
        # settle time from now covers both.
        now = time.time()
        resumed = c.Resumed(now, now + 2 * self.ctx.policy.unknown_settle_seconds, sync=self.ctx.policy.sync_on_start)
        self.operate(lambda plan: [plan.apply(f, resumed) for f in list(plan.states)])
        tell_exit_waiting(self)
        if any(copy.status is S.UNKNOWN for copy in self.copies.values()):
            self.schedule_unknown_check()
        if self.supers.followed and not self._finished():  # its exits may have changed meanwhile
            self.supers.ask()
        self.maybe_idle()

    def on_stop(self) -> None:
        self._ended()

    def on_failure(self, message: Any, exception: BaseException) -> None:
        self._ended()
        super().on_failure(message, exception)

    def _ended(self) -> None:
        metrics.ACTORS_RUNNING.dec()
        for handle in [*self._timers.values(), *self._unknown_checks]:
            handle.cancel()

    # -- messages --------------------------------------------------------------------------------------
    def on_receive(self, message: Any) -> Any:
        if self.storage_down:
            return None
        try:
            return self._receive(message)
        except StorageDown as exc:
            self.storage_refused(exc)
            return None

    def storage_refused(self, exc: StorageDown) -> None:
        # This incarnation's memory may be ahead of storage (the transaction rolled back), so it
        # does nothing more; the router starts a fresh one from storage once storage is back.
        self.storage_down = True
        self._report_crash(exc)
        if self.actor_ref is not None:
            self.actor_ref.stop(block=False)

    # -- replies handled together (actors/order_batch.py) ---------------------------------------------
    def takes_in_batch(self, message: Any) -> bool:
        return self.sighting.sizing is None and takes_in_batch(self, message)

    def on_receive_batch(self, messages: list[Any]) -> None:
        handle_batch(self, messages)

    def _receive(self, message: Any) -> Any:
        if isinstance(message, CopiesWanted):
            return self.snapshot()
        if isinstance(message, SizingHeld):
            self.sighting.on_held(message.seconds)
            return None
        if isinstance(message, (SizingReady, SizingOverdue)):
            if self.sighting.on_sizing(overdue=isinstance(message, SizingOverdue)):
                stashed, self.stashed = self.stashed, []
                for earlier in stashed:
                    self._receive(earlier)
                self.operate()  # as after any leader update (the decision may have left it finished)
                self.maybe_idle()
            return None
        if self.sighting.sizing is not None:
            self.stashed.append(message)
            return None
        if isinstance(message, NEWS) and self.given_up:
            self.operate(lambda plan: plan.news_arrived())
        if isinstance(message, OrderUpdateReceived):
            self.on_update(message)
        elif isinstance(message, BrokerAnswer):
            self.answers.on_answer(message)
        elif isinstance(message, QuotePrice):
            self.sighting.on_quote(message)
        elif isinstance(message, PriceWaitOver):
            self.sighting.on_wait_over()
        elif isinstance(message, LagCheck):
            self.fills.check_lag()
        elif isinstance(message, UnknownCheck):
            self._check_unknown()
        elif isinstance(message, HoldCheck):
            self.held_legs.check()
        elif isinstance(message, RereadDue):
            self.updates.send_reread()
        elif isinstance(message, FilledFirstDue):
            self.fills.judge()
        elif isinstance(message, LookupDue):
            self._timers.pop("lookup", None)
        elif isinstance(message, SuperReadDue):
            self._timers.pop("super_read", None)
            self.supers.on_due(message)
        elif isinstance(message, CancelCopies):
            self.operate(lambda plan: [plan.apply(f, c.CancelRequested(message.reason)) for f, s in plan.states.items()
                                       if not s.status.is_terminal and not s.cancel_requested
                                       and message.covers(f, s.target.exchange_segment)])
        elif isinstance(message, CatchUpCopy):
            catch_up(self, message)
        elif isinstance(message, ProtectCopy):
            protect(self, message)
        elif isinstance(message, ReduceCopy):
            reduce_resting(self, message)
        elif isinstance(message, RetryCopy):
            self._retry(message)
        elif isinstance(message, UnwindLeg):
            self.legs.unwind_leg(message)
        elif isinstance(message, SyncCopies):
            self.operate(lambda plan: [plan.apply(f, c.SyncRequested()) for f, s in plan.states.items()
                                       if not s.status.is_terminal])
        self.operate()  # whatever else the copies need now
        self.maybe_idle()
        return None

    def on_update(self, message: OrderUpdateReceived) -> None:
        if message.event_id in self.applied or message.event_id in self.parked:
            return
        self.applied.add(message.event_id)
        if not is_leader(message.account):
            self._on_follower_update(message.event_id, message.account, message.update)
        elif message.update.exit_leg:  # a super order's target or stop-loss leg: no order of its own
            self.supers.on_exit_leg(message.event_id, message.update)
        elif self.leader is None:
            self.leader_account = message.account
            self.first_sighting(message.event_id, message.update)
        else:
            self.updates.on_update(message.event_id, message.update)
            if self.supers.followed:  # an entry's modification restates its exits
                self.supers.ask()

    def first_sighting(self, event_id: int, update: OrderUpdate) -> None:
        self.sighting.on_update(event_id, update)

    def _on_follower_update(self, event_id: int, follower: str, update: OrderUpdate) -> None:
        key = self.key_of(follower, update.correlation_id, update.order_id)
        if key is None:
            # unknown, or an update of an order this copy replaced (cap, DLQ retry) queued before it
            self.operate(lambda plan: plan.done([event_id], "not_this_copy"))
            return
        copy = self.copies[key]
        if update.exit_leg:  # one exit leg of the copy's super order: only that leg's status moves
            event = exit_leg_event(update)

            def leg(plan: Plan) -> None:
                plan.apply(key, event, update)
                plan.done([event_id], f"super_order_leg_{update.status.value.lower()}")

            self.operate(leg)
            return
        seen = c.OrderSeen.of(update)
        transition, allowed = c.broker_transition(copy, seen)
        outcome = transition.value.lower() if transition is not None and allowed else "no_change"

        def build(plan: Plan) -> None:
            plan.apply(key, seen, update)
            plan.done([event_id], outcome)

        self.operate(build)

    def parts_of(self, follower: str) -> list[c.CopyState]:
        """Every slice of `follower`'s copy, the first first (one for a copy within the freeze quantity)."""
        return c.parts_of(self.copies, follower, self.batch.sliced if self.batch is not None else self.sliced)

    def key_of(self, follower: str, correlation: str | None, order_id: str = "") -> str | None:
        """The part key of `follower`'s copy (or slice) a broker order belongs to: by its correlation id, else
        its broker order id; None for an order none of them placed (or a replaced or retried one left behind)."""
        parts = self.parts_of(follower)
        if correlation:
            match = next((p for p in parts if p.correlation_id == correlation), None)
        elif order_id:
            match = next((p for p in parts if p.broker_order_id == order_id), None)
            if match is None and len(parts) == 1:
                match = parts[0]
        else:
            match = None
        return match.key if match is not None and c.belongs(match, order_id, correlation) else None

    def announce_rejection(self, follower: str, reason: str, message: str) -> None:
        if self.leader is not None and self.leader.group_id:
            self.legs.unwind_strategy(follower, reason)
        metrics.FOLLOWER_FAILURES.labels(follower, "place", reason).inc()
        if reason in c.SKIP_REASONS:
            metrics.SKIPS.labels(follower, reason).inc()
            log.info("leader order %s: follower %s skipped: %s (%s)", self.leader_order_id, follower, reason, message,
                     extra=self.fields(follower))
            return
        self.ctx.on_broker_failure(follower, reason)
        metrics.DEAD_LETTERS.set(self.records.unresolved_dead_letters())
        self.ctx.alert("error", f"dlq:{follower}", f"follower {follower}: placement of leader order "
                       f"{self.leader_order_id} failed and was dead-lettered: {message}")

    def late(self, follower: str, event: c.SkippedLate) -> None:
        metrics.SKIPS.labels(follower, c.TOO_LATE).inc()
        log.warning("leader order %s: follower %s: %s", self.leader_order_id, follower, event.detail,
                    extra=self.fields(follower))
        self.ctx.alert("warning", f"late:{follower}", f"follower {follower}: copy of leader order "
                       f"{self.leader_order_id} not sent: {event.detail}")

    def _retry(self, request: RetryCopy) -> None:
        """An operator's DLQ retry: the copy (the slice the dead letter names) was refused for good, so it is
        placed afresh under the next generation's correlation id (the old one may be at the broker, rejected)."""
        rejected = [p for p in self.parts_of(request.follower) if p.status is S.REJECTED]
        copy = next((p for p in rejected if p.correlation_id == request.correlation_id),
                    rejected[0] if rejected else None)

        def build(plan: Plan) -> None:
            records = self.records
            plan.write(lambda: records.resolve_dead_letter(request.dead_letter_id))
            if copy is not None:
                plan.apply(copy.key, c.Retried())

        self.operate(build)
        if copy is not None:
            log.info("follower %s: retrying the copy of %s as %s", copy.key, self.leader_order_id,
                     self.copies[copy.key].correlation_id, extra=self.fields(request.follower))

    # -- what the modules use ---------------------------------------------------------------------------
    def operate(self, build: Callable[[Plan], Any] | None = None, leader: StoredLeader | None = None,
                placements_first: bool = False) -> None:
        """One operation: `build` applies events to a plan, every copy decides, one transaction
        stores it all, then the calls go out. While replies are handled together, `build` adds to
        their one plan (`on_receive_batch` decides after each reply and commits once). `leader`:
        the leader's order as the operation leaves it; kept only if the operation is.
        `placements_first`: new copies' first placements may leave before the transaction (Plan.commit)."""
        previous = self.leader
        if leader is not None:
            self.leader = leader
        try:
            if self.batch is not None:
                if build is not None:
                    build(self.batch)
                return
            plan = Plan(self, placements_first=placements_first)
            if build is not None:
                build(plan)
            plan.converge()
            plan.commit()
        except BaseException:
            self.leader = previous
            raise

    def leader_view(self) -> c.Leader:
        leader = self.leader
        if leader is None:
            return c.Leader(open=False)
        return c.Leader(open=leader.state.status.is_open, seen_at=leader.seen_at,
                        place_by=None if leader.reduces_position else c.placement_deadline(
                            leader.state.terms.order_type, leader.seen_at, self.ctx.policy.max_delay_seconds))

    def addressing(self, copy: c.CopyState) -> dict[str, Any]:
        """What every command for `copy` names: its account, order, correlation id, and this actor."""
        return {"account": copy.follower, "leader_order_id": self.leader_order_id,
                "correlation_id": copy.correlation_id, "reply_to": self.address}

    def send(self, commands: list[BrokerCommand]) -> None:
        """A leader order's fan-out, every follower's call in one loop (see send_all)."""
        send_all(self.ctx.limiters, commands)

    def ask_sizing(self, message: SizeCopy | SizeCopies, wait: bool = True) -> Any:
        """The answer (`wait=False`: or a future, when it waits for a reading: see ask_sizing)."""
        try:
            return ask_sizing(self.ctx.sizing, message, timeout=SIZING_TIMEOUT, wait=wait)
        except (pykka.ActorDeadError, pykka.Timeout) as exc:
            raise RuntimeError(f"sizing unavailable: {exc}") from exc  # crash: retried after restart

    def unstored_placement(self, correlation_id: str) -> float | None:
        """For a copy about to be made: None when no placement of it can have been sent; else the
        time from which a lookup that finds nothing is believed (the copy is looked up first). Such
        a placement was sent just before its sender ended (an incarnation of this run, or an
        earlier run, which ended before this one started); the broker may act on it up to about a
        timeout later."""
        settle = self.ctx.policy.unknown_settle_seconds
        if correlation_id in self.ctx.sent_unstored:
            return time.time() + settle
        return self.run_started + settle if self.leader_order_id in self.acted_on else None

    def fields(self, follower: str | None = None) -> dict[str, str]:
        """The log fields of a line about this order (and one follower's copy of it)."""
        return {"leader_order_id": self.leader_order_id, **({"follower": follower} if follower else {})}

    # -- timers ---------------------------------------------------------------------------------------------
    def after(self, seconds: float, message: Any, name: str | None = None) -> None:
        """Tell this actor `message` in `seconds` (replacing the pending timer of the same `name`)."""
        if name is not None and name in self._timers:
            self._timers.pop(name).cancel()
        assert self.ctx.timers is not None, "order actors need the copier's timer service"
        handle = self.ctx.timers.after(seconds, self.address, message)
        self._timers[name or f"{type(message).__name__}:{id(handle)}"] = handle

    def cancel_timer(self, name: str) -> None:
        handle = self._timers.pop(name, None)
        if handle is not None:
            handle.cancel()

    def wake_at(self, when: float) -> None:
        """One wake-up for the earliest copy backing off (wall clock `when`)."""
        pending = self._timers.get("lookup")
        if pending is not None and not pending.cancelled and pending.due <= time.monotonic() + (when - time.time()):
            return
        self.after(max(when - time.time(), 0.0), LookupDue(), name="lookup")

    def schedule_unknown_check(self) -> None:
        if self.ctx.policy.unknown_alert_seconds > 0 and self.ctx.timers is not None:
            now = time.monotonic()
            self._unknown_checks = [handle for handle in self._unknown_checks if handle.due > now]
            self._unknown_checks.append(self.ctx.timers.after(self.ctx.policy.unknown_alert_seconds, self.address,
                                                              UnknownCheck()))

    def _check_unknown(self) -> None:
        """Alert for every copy whose placement is still unknown after the bound (again after another
        bound while it stays so; the alerts' cooldown keeps that quiet)."""
        bound = self.ctx.policy.unknown_alert_seconds
        now = time.time()
        overdue = [copy for copy in self.copies.values() if copy.status is S.UNKNOWN and now - copy.unknown_since >= bound]
        for copy in overdue:
            follower = copy.follower
            self.ctx.alert("critical", f"unknown:{follower}",
                           f"follower {follower}: the outcome of the placement copying leader order "
                           f"{self.leader_order_id} (correlation id {copy.correlation_id}) is still unknown "
                           f"after {bound:.0f}s: it is looked up, and not placed again until a lookup answers; "
                           f"check {follower}'s order book")
        if overdue:
            self.schedule_unknown_check()

    # -- finishing -----------------------------------------------------------------------------------------
    def _finished(self) -> bool:
        if self.leader is None:
            return False
        leader_done = self.leader.state.status.is_terminal and not self.updates.busy and not self.fills.suspects
        return leader_done and all(c.phase(copy) is c.Phase.CLOSED for copy in self.copies.values())

    def maybe_idle(self) -> None:
        if self._finished() and self.supervisor is not None:
            self.supervisor.tell(OrderActorIdle(self.leader_order_id))

    def snapshot(self) -> dict[str, Any]:
        return {"leader": self.leader.state.status.value if self.leader else None,
                "copies": {f: (copy.status.value, copy.in_flight) for f, copy in self.copies.items()}}

