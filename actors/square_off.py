"""The square-off actor: takes a follower flat, as a person does when the leader disappears mid-day.

A run (stored by the follower control actor, with the follower already paused) goes:

  cancelling   the follower's open copies are cancelled through their order actors (in the run's
               segments only, when given), and the run waits until storage shows none left open
               (at most `cancel_wait_seconds`; a copy still open then is reported);
  reading      the follower's positions are read from the broker, and a market order closing each
               open one is stored, all in one transaction, before any is sent;
  closing      each closing order goes through the follower's rate limiter like every placement.
               Its correlation id is derived from the run and the position: a placement whose
               answer is lost (or that was in flight when the process stopped) is looked up by it,
               and placed again only once lookups sent `settle_seconds` after the failure find it
               absent, as for any copy. Placed orders are read until they are filled or refused;
  confirming   the positions are read again: the run is done when the broker shows nothing open
               in its scope, else incomplete (and alerted), with what is still open.

Every phase is stored, so a restarted actor resumes each unfinished run where it stood; its
closing orders are then looked up before anything is sent. The run's report goes to the follower's
audit and answers the operator's command.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from actors.messages import (CallFailed, CancelCopies, CopyNotFound, CopyPlaced, CopyRejected, GetOrder, LookupCopy,
                             OrderFound, PlaceCopy, PlacementUnknown, PositionsRead, SquareOffTick, StartSquareOff)
from broker.errors import BrokerError, ErrorKind
from broker.gateway import Answer
from storage import UNAVAILABLE_ERRORS, Store
from storage.square_offs import ClosingOrder, SquareOffRun
from supervisors import Address, Supervised, Timers
from trading.orders import OrderStatus
from trading.square_off import closing_correlation_id, closing_orders, still_open

log = logging.getLogger(__name__)
S = OrderStatus
FINAL = ("filled", "failed")
READ_ATTEMPTS = 5
LOOKUP_ATTEMPTS = 20


@dataclass
class _Closing:
    order: ClosingOrder
    status: str
    broker_order_id: str | None = None
    placements: int = 0
    in_flight: bool = False
    due: float = 0.0  # monotonic: nothing sent for it before
    absent_from: float = 0.0  # wall clock: a lookup sent before this that finds nothing is not believed
    failures: int = 0
    detail: str = ""


@dataclass
class _Run:
    run: SquareOffRun
    phase: str
    deadline: float  # monotonic: the current phase gives up waiting after this
    cancelled: int | None = None  # open copies when the run began (this incarnation only)
    reading: bool = False
    read_failures: int = 0
    read_after: float = 0.0  # monotonic: after a failed reading, the next waits
    closings: dict[str, _Closing] = field(default_factory=dict)  # by correlation id


class SquareOffActor(Supervised):
    def __init__(self, address: Address, supervisor: Address | None, store: Store, gateways: Mapping[str, Any],
                 limiters: Mapping[str, Any], router: Address, alert: Callable[[str, str, str], None],
                 timers: Timers, *, settle_seconds: float = 5.0, max_attempts: int = 6,
                 tick_seconds: float = 0.25, cancel_wait_seconds: float = 30.0,
                 close_wait_seconds: float = 60.0) -> None:
        super().__init__(address, supervisor)
        self.store, self.gateways, self.limiters, self.router = store, gateways, limiters, router
        self.alert, self.timers = alert, timers
        self.settle_seconds, self.max_attempts = settle_seconds, max_attempts
        self.tick_seconds = tick_seconds
        self.cancel_wait_seconds, self.close_wait_seconds = cancel_wait_seconds, close_wait_seconds
        self.runs: dict[int, _Run] = {}

    def started(self) -> None:
        for run in self.store.square_offs.unfinished():
            self._resume(run)
        self.timers.every(self.tick_seconds, self.address, SquareOffTick(), owner=self.actor_ref)

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, StartSquareOff):
            run = self.store.square_offs.run(message.run_id)
            if run is not None and message.run_id not in self.runs:
                self._begin(run)
        elif isinstance(message, SquareOffTick):
            if not self.store.down:
                try:
                    for run in list(self.runs.values()):
                        self._step(run)
                except UNAVAILABLE_ERRORS as exc:  # storage busy or failing: each run goes on from where it stands
                    log.warning("square-off waits for storage: %s", exc)
        elif isinstance(message, PositionsRead):
            run = self.runs.get(message.run_id)
            if run is not None:
                run.reading = False
                self._positions(run, message.answer)
        elif isinstance(message, (CopyPlaced, CopyRejected, PlacementUnknown, OrderFound, CopyNotFound, CallFailed)):
            self._answer(message)
        return None

    # -- runs ----------------------------------------------------------------------------------------
    def _begin(self, run: SquareOffRun) -> None:
        state = _Run(run, "cancelling", time.monotonic() + self.cancel_wait_seconds)
        state.cancelled = self.store.followers.live_copies(run.follower, run.segments)
        self.runs[run.id] = state
        self.router.tell(CancelCopies("square-off", follower=run.follower, segments=run.segments))
        log.warning("square-off of %s (by %s): cancelling its open copies%s", run.follower, run.by,
                    f" in {', '.join(run.segments)}" if run.segments else "")

    def _resume(self, run: SquareOffRun) -> None:
        """A run an earlier incarnation left unfinished: each phase picks up from storage."""
        if run.phase == "cancelling":
            self._begin(run)
            return
        state = _Run(run, run.phase, time.monotonic() + self.close_wait_seconds)
        now = time.time()
        for order in self.store.square_offs.closing_orders(run.id):
            closing = _Closing(order, order.status, order.broker_order_id, order.placements, detail=order.detail)
            if closing.status not in FINAL and closing.broker_order_id is None:
                # it may have been sent, and be on its way still: looked up first, and a "not found"
                # believed only from a lookup sent two settle times on (the broker may act on a
                # placement up to a timeout after its client gave up), as for a copy
                closing.status, closing.absent_from = "unknown", now + 2 * self.settle_seconds
            state.closings[order.correlation_id] = closing
        self.runs[run.id] = state
        log.warning("square-off of %s: resumed in its %s phase", run.follower, run.phase)

    def _step(self, run: _Run) -> None:
        now = time.monotonic()
        if run.phase == "cancelling":
            left = self.store.followers.live_copies(run.run.follower, run.run.segments)
            if left == 0 or now > run.deadline:
                run.phase = "reading"
                self.store.square_offs.set_phase(run.run.id, "reading")
        if run.phase in ("reading", "confirming") and not run.reading and now >= run.read_after:
            self._read_positions(run)
        elif run.phase == "closing":
            for closing in run.closings.values():
                if closing.status not in FINAL and not closing.in_flight and now >= closing.due:
                    self._send(run, closing)
            if all(c.status in FINAL for c in run.closings.values()) or now > run.deadline:
                run.phase = "confirming"
                self.store.square_offs.set_phase(run.run.id, "confirming")

    def _read_positions(self, run: _Run) -> None:
        gateway = self.gateways.get(run.run.follower)
        if gateway is None:
            self._finish(run, "failed", f"{run.run.follower}: not a running follower")
            return
        run.reading = True
        run_id, tell = run.run.id, self.address.tell

        def read() -> None:
            try:
                answer = gateway.positions()
            except Exception as exc:  # noqa: BLE001 - a bug must not leave the run waiting forever
                answer = Answer(error=BrokerError("INTERNAL", ErrorKind.OTHER, repr(exc)))
            tell(PositionsRead(run_id, answer))

        threading.Thread(target=read, name=f"square-off-{run_id}", daemon=True).start()

    def _positions(self, run: _Run, answer: Answer) -> None:
        follower, segments = run.run.follower, run.run.segments
        if not answer.ok:
            run.read_failures += 1
            if run.read_failures >= READ_ATTEMPTS:
                self._finish(run, "failed", f"{follower}: positions unavailable: {answer.error}")
            run.read_after = time.monotonic() + run.read_failures
            return
        positions = answer.data.entries
        # an entry the broker answered that could not be read may be an open position: never "flat" then
        unreadable = [f"{len(answer.data.unreadable)} position entries the broker answered could not be read "
                      f"({', '.join(sorted(set(answer.data.unreadable)))})"] if answer.data.unreadable else []
        if run.phase == "confirming":
            self._confirm(run, still_open(positions, segments) + unreadable)
            return
        if run.phase != "reading":
            return
        terms, left = closing_orders(positions, segments)
        orders = [(closing_correlation_id(run.run.id, follower, t), t) for t in terms]
        stored = self.store.square_offs.close_positions(run.run.id, follower, orders)
        run.phase, run.deadline = "closing", time.monotonic() + self.close_wait_seconds
        run.closings = {o.correlation_id: _Closing(o, "new") for o in stored}
        for line in left + unreadable:
            log.warning("square-off of %s: %s", follower, line)
        for closing in run.closings.values():
            self._send(run, closing)
        if not run.closings:
            run.phase = "confirming"
            self.store.square_offs.set_phase(run.run.id, "confirming")

    def _confirm(self, run: _Run, open_now: list[str]) -> None:
        follower = run.run.follower
        parts = []
        if run.cancelled is not None:
            parts.append(f"{run.cancelled} open copies cancelled")
        for closing in run.closings.values():
            terms = closing.order.terms
            order = f" (order {closing.broker_order_id})" if closing.broker_order_id else ""
            detail = f": {closing.detail}" if closing.detail else ""
            parts.append(f"{terms.side.value} {terms.quantity} {terms.exchange_segment} {terms.security_id} "
                         f"{terms.product.value} at market{order}: {closing.status}{detail}")
        if not run.closings:
            parts.append("no open position to close")
        if open_now:
            report = f"{follower}: NOT confirmed flat; the broker still shows: {'; '.join(open_now)}. " + "; ".join(parts)
            self._finish(run, "incomplete", report)
            self.alert("critical", f"square_off:{follower}", f"square-off of {follower} incomplete: "
                       f"{'; '.join(open_now)} still open (close it by hand)")
        else:
            self._finish(run, "done", f"{follower}: confirmed flat by the broker's positions; " + "; ".join(parts))

    def _finish(self, run: _Run, phase: str, report: str) -> None:
        self.runs.pop(run.run.id, None)
        self.store.square_offs.finish(run.run.id, phase, report, run.run.follower, run.run.by)
        log.warning("square-off %s: %s", phase, report)

    # -- closing orders ------------------------------------------------------------------------------
    def _send(self, run: _Run, closing: _Closing) -> None:
        order = closing.order
        limiter = self.limiters.get(order.follower)
        if limiter is None:
            self._settle(closing, "failed", detail=f"{order.follower} is not a running follower")
            return
        addressing = dict(account=order.follower, leader_order_id=f"square-off:{run.run.id}",
                          correlation_id=order.correlation_id, reply_to=self.address)
        closing.in_flight = True
        if closing.status == "new":
            closing.placements += 1
            limiter.tell(PlaceCopy(**addressing, terms=order.terms))
        elif closing.status == "unknown":
            limiter.tell(LookupCopy(**addressing))
        else:  # open: read until filled or refused
            assert closing.broker_order_id is not None
            limiter.tell(GetOrder(**addressing, broker_order_id=closing.broker_order_id))

    def _answer(self, answer: Any) -> None:
        cid = answer.command.correlation_id
        closing = next((run.closings[cid] for run in self.runs.values() if cid in run.closings), None)
        if closing is None:
            return  # asked by an earlier incarnation, or the run is over
        closing.in_flight = False
        if isinstance(answer, CopyPlaced):
            self._found(closing, answer.broker_order_id, answer.status)
        elif isinstance(answer, CopyRejected):
            self._settle(closing, "failed", detail=f"refused: {answer.error}")
        elif isinstance(answer, PlacementUnknown):
            closing.absent_from = time.time() + self.settle_seconds
            closing.due = time.monotonic() + self.settle_seconds
            self._settle(closing, "unknown", detail=f"outcome unknown ({answer.error}): looked up")
        elif isinstance(answer, OrderFound):
            self._found(closing, answer.order.order_id, answer.order.status, answer.order.reason)
        elif isinstance(answer, CopyNotFound):
            self._not_found(closing, answer.sent_at)
        elif isinstance(answer, CallFailed):
            closing.failures += 1
            closing.due = time.monotonic() + min(5.0, 0.5 * closing.failures)
            if closing.failures >= LOOKUP_ATTEMPTS:
                self._settle(closing, "failed", detail=f"could not be read at the broker: {answer.error}")

    def _found(self, closing: _Closing, broker_order_id: str, status: OrderStatus | None, reason: str = "") -> None:
        closing.failures = 0
        if status is S.TRADED:
            self._settle(closing, "filled", broker_order_id)
        elif status in (S.REJECTED, S.CANCELLED, S.EXPIRED):
            self._settle(closing, "failed", broker_order_id, detail=f"{status.value.lower()}{': ' + reason if reason else ''}")
        else:
            closing.due = time.monotonic() + 0.5
            self._settle(closing, "open", broker_order_id)

    def _not_found(self, closing: _Closing, sent_at: float) -> None:
        if closing.status != "unknown":
            return
        if sent_at < closing.absent_from:  # the broker may still act on the lost placement
            closing.due = time.monotonic() + 0.5
            return
        if closing.placements >= self.max_attempts:
            self._settle(closing, "failed", detail=f"{closing.placements} placements never took effect at the broker")
            return
        self._settle(closing, "new", detail=f"lookups found placement {closing.placements} absent: placed again")

    def _settle(self, closing: _Closing, status: str, broker_order_id: str | None = None, detail: str = "") -> None:
        changed = (status, broker_order_id or closing.broker_order_id) != (closing.status, closing.broker_order_id)
        closing.status = status
        closing.broker_order_id = broker_order_id or closing.broker_order_id
        closing.detail = detail or closing.detail
        if changed:
            self.store.square_offs.update_closing(closing.order.correlation_id, status=status,
                                                  broker_order_id=closing.broker_order_id,
                                                  placements=closing.placements, detail=closing.detail)
