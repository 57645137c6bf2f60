"""The rate limiter: one per follower account, the only way broker calls are made for it.

`RateLimiter` admits calls in arrival order inside every configured window (per second, minute,
hour, day; order APIs and data APIs counted apart) and runs them on the broker threads every
account shares (actors/broker_threads.py: a fixed pool, at most a few calls of one account at
once), so one slow answer does not hold up the account's next call, nor another account's. A
placement is only sent, on the caller's thread (or a pool thread, to open a connection first);
its answer is read by the one answer reader (broker/answers.py), no thread waiting for it.
`RateLimiterActor` is its clock (a wait is a message from the copier's `Timers`) and retry
policy: it sends what had to wait once a slot frees, and retries transient failures (DH-904,
DH-908, DH-909, transport) with exponential backoff and jitter, re-queued through the same
windows, so a retry can never exceed the limits. A DH-904 also pauses the whole account briefly.

A placement whose outcome is unknown (no answer, a 5xx, an unreadable answer) is never retried
here: the broker may hold it. Its order actor marks it UNKNOWN and looks it up (`lookup`: by
correlation id, else in the order book) until a lookup answers.
"""
from __future__ import annotations

import functools
import logging
import threading
import time
from collections import deque
from dataclasses import replace
from types import SimpleNamespace
from typing import Any, Callable

from tenacity import wait_exponential_jitter

from actors.broker_calls import perform, placed
from actors.broker_threads import BrokerThreads
from actors.messages import (BrokerCommand, CallFailed, Drain, PlaceCopy, PlacementExpired, PlacementRetried,
                             PlacementsPaused, PlacementUnknown, RetryCall)
from actors.windows import SlidingWindows
from observability import metrics
from broker.errors import BrokerError, ErrorKind
from broker.gateway import Answer, DhanGateway, SentPlacement
from supervisors import Address, Timers
from supervisors.pool import PooledSupervised
from supervisors.timers import TimerHandle

log = logging.getLogger(__name__)
RATE_LIMITED_ATTEMPTS = 12  # sends of a call the broker keeps refusing with DH-904 (RateLimiter._attempts)

__all__ = ["RateLimiter", "RateLimiterActor", "SlidingWindows", "send_all"]


class RateLimiter:
    """One follower account's only path to its broker: admission inside the windows, then
    sending. Thread-safe; shared by every sender and the account's actor.

    A call that fits the windows now, with nothing waiting ahead of it, is admitted on the
    sender's own thread, under this lock, and a first placement is sent there too (`_dispatch`;
    why not through an actor's mailbox: docs/design.md). What must wait (full windows, a DH-904
    pause, a retry's backoff) waits in `queue`, and the RateLimiterActor drains it when a slot
    frees. The queue lives here, not in the actor, so a restarted actor finds it intact.

        limiter = RateLimiter(gateway, order_limits=[(10, 1.0)], data_limits=[(20, 1.0)])
        limiter.tell(LookupCopy(account="f1", leader_order_id="L1", correlation_id=cid, reply_to=me))
        # then, from a broker thread: me.tell(OrderFound(...)), CopyNotFound(...) or CallFailed(...)

    `threads`: the copier's shared BrokerThreads; without them the limiter makes its own (a
    limiter on its own, as in a test), stopped with it. `workers`: the account's cap on calls
    running at once on them (default: the pool's `per_account`).
    """

    def __init__(self, gateway: DhanGateway, *, order_limits: list[tuple[int, float]],
                 data_limits: list[tuple[int, float]], workers: int | None = None, max_attempts: int = 6,
                 margin_check: bool = False, threads: BrokerThreads | None = None) -> None:
        self.gateway = gateway
        self.account = gateway.account
        self.windows = {"order": SlidingWindows(order_limits), "data": SlidingWindows(data_limits)}
        self.queue: deque[BrokerCommand] = deque()
        self.paused_until = 0.0
        self.max_attempts = max_attempts
        self.margin_check = margin_check
        # No thread waits for a placement's answer (the reader reads it), so a broker answering
        # late does not throttle its follower's placements; the cap bounds what a hung broker holds.
        self._own_threads = threads is None
        self._threads = threads or BrokerThreads(size=workers or 4, name=f"broker-{self.account}")
        self.workers = workers or self._threads.per_account
        self._lane = self._threads.lane(self.account, self.workers)
        self._lock = threading.Lock()
        self._closed = False
        self._queue_gauge = metrics.RATE_LIMIT_QUEUE.labels(self.account)
        self._tokens_gauge = metrics.RATE_LIMIT_TOKENS.labels(self.account)
        self._latency = metrics.REPLICATION_LATENCY.labels(self.account)  # per copy: its series looked up once
        self.actor: Address | None = None  # the RateLimiterActor: wake-ups and retry decisions go there

    def tell(self, command: BrokerCommand, later: list[Callable[[], None]] | None = None) -> None:
        """Send `command` as soon as the limits allow, in arrival order. With `later`, the work left
        for broker threads and the answer reader is appended there for the caller to start after
        its whole fan-out (see `send_all`)."""
        self._enqueue(command, later, first=False)

    def retry(self, command: BrokerCommand) -> None:
        """A retry goes ahead of the queue (it arrived first); its backoff is `command.not_before`."""
        self._enqueue(command, None, first=True)

    def _enqueue(self, command: BrokerCommand, later: list[Callable[[], None]] | None, first: bool) -> None:
        with self._lock:
            if first:
                self.queue.appendleft(command)
            else:
                self.queue.append(command)
            admitted, wait, expired = self._admit()
        self._expire(expired)
        self._dispatch(admitted, later)
        if wait is not None:
            self._wake()

    def pause(self, until: float) -> None:
        """DH-904: nothing more for this account until `until` (monotonic)."""
        with self._lock:
            self.paused_until = max(self.paused_until, until)

    def refund(self, command: BrokerCommand) -> None:
        """`command` was refused as rate limited: the broker did not count it (see SlidingWindows.release)."""
        with self._lock:
            self.windows["order" if command.ORDER_API else "data"].release(command.admitted_at)

    def drain(self) -> float | None:
        """Send what fits now; seconds until the next waiting call may fit, None when none waits."""
        with self._lock:
            admitted, wait, expired = self._admit()
        self._expire(expired)
        self._dispatch(admitted)
        return wait

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self.queue.clear()
        self._threads.close_lane(self._lane)
        if self._own_threads:
            self._threads.stop()

    def _admit(self) -> tuple[list[BrokerCommand], float | None, list[PlaceCopy]]:
        """Under the lock: take a slot for every call that fits now, in order; returns them, the
        seconds until the first waiting one may fit (None when none waits), and the placements
        too old to send (their turn came after their `expires_at`)."""
        if self._closed:  # stopping: what was not sent is still pending in storage
            self.queue.clear()
            return [], None, []
        now = time.monotonic()
        wall = time.time()
        admitted: list[BrokerCommand] = []
        expired: list[PlaceCopy] = []
        earliest: float | None = None
        kept: deque[BrokerCommand] = deque()
        while self.queue:
            command = self.queue.popleft()
            if isinstance(command, PlaceCopy) and command.expires_at is not None and wall > command.expires_at:
                expired.append(command)
                continue
            windows = self.windows["order" if command.ORDER_API else "data"]
            wait = max(command.not_before - now, self.paused_until - now, windows.wait_time(now))
            if wait > 0:
                kept.append(command)
                earliest = wait if earliest is None else min(earliest, wait)
                # keep order calls in arrival order: nothing overtakes a waiting order call
                if command.ORDER_API and command.not_before <= now:
                    kept.extend(self.queue)
                    self.queue.clear()
                continue
            windows.take(now)
            admitted.append(replace(command, admitted_at=now))
        self.queue = kept
        self._queue_gauge.set(len(kept))
        self._tokens_gauge.set(self.windows["order"].headroom(now))
        return admitted, earliest, expired

    def _expire(self, expired: list[PlaceCopy]) -> None:
        """Outside the lock: placements that waited past their age limit go back unsent."""
        now = time.time()
        for command in expired:
            log.info("%s: placement for %s not sent: %.1fs past its time", self.account, command.leader_order_id,
                     now - (command.expires_at or now))
            self._answer(PlacementExpired(command, now))

    def _dispatch(self, admitted: list[BrokerCommand], later: list[Callable[[], None]] | None = None) -> None:
        """Outside the lock. A first placement attempt is sent right here, on the caller's thread,
        when the account has an open connection, and its answer is read by the answer reader (so
        a fan-out leaves back to back: docs/design.md). Anything else, or with no open
        connection, runs on a broker thread."""
        for command in admitted:
            if self._sends_ahead(command) and command.attempt == 1:
                sent_ns = time.monotonic_ns()
                sent = self.gateway.send_place(command.terms, command.correlation_id)
                if sent is not None:
                    self._observe_sent(command, sent_ns)
                    self._start(later, self._read_answer, command, sent, sent_ns)
                    continue
            self._start(later, self._submit, command)

    @staticmethod
    def _start(later: list[Callable[[], None]] | None, fn: Any, *args: Any) -> None:
        """Now, or with `later`, once the caller's whole fan-out is sent (see send_all)."""
        if later is not None:
            later.append(functools.partial(fn, *args))
        else:
            fn(*args)

    def _submit(self, command: BrokerCommand) -> None:
        if not self._threads.submit(self._lane, functools.partial(self._execute, command)):
            # closed meanwhile (stopping): the call stays pending in storage
            log.debug("%s: broker threads stopped; call not sent", self.account)

    def _sends_ahead(self, command: BrokerCommand) -> bool:
        """A placement that is sent, its answer read by the answer reader (with a margin check
        first, the whole call runs on a broker thread)."""
        return isinstance(command, PlaceCopy) and not self.margin_check

    def _read_answer(self, command: PlaceCopy, sent: SentPlacement, sent_ns: int) -> None:
        sent.read_by(self._threads.reader, functools.partial(self._finish_placement, command, sent_ns))

    def _wake(self) -> None:
        """Calls are waiting: the actor drains and times the next slot itself."""
        if self.actor is not None:  # None only before the actor first starts; it drains then
            self.actor.tell(Drain())

    # -- runs on a broker thread -------------------------------------------------------------------
    def _execute(self, command: BrokerCommand) -> None:
        try:
            if isinstance(command, PlaceCopy):
                sent_ns = time.monotonic_ns()
                # no open connection to send it on from the caller's thread: opened here, and the
                # answer left to the reader, so a slow broker's placements hold no thread
                sent = self.gateway.send_place(command.terms, command.correlation_id, connect=True) \
                    if self._sends_ahead(command) else None
                self._observe_sent(command, sent_ns)
                if sent is not None:
                    self._read_answer(command, sent, sent_ns)
                    return
            answer = self._perform(command)
        except Exception as exc:  # a bug must not lose the call: answer it as a failure
            log.exception("%s %s crashed in the worker", self.account, type(command).__name__)
            answer = self._crashed(command, exc)
        self._report(answer)

    def _finish_placement(self, command: PlaceCopy, sent_ns: int, answer: Answer) -> None:
        """On the answer reader's thread: a placement's answer, reported."""
        try:
            message = placed(command, answer, sent_ns)
        except Exception as exc:  # a bug must not lose the call: answer it as a failure
            log.exception("%s place crashed reading its answer", self.account)
            message = self._crashed(command, exc)
        self._report(message)

    @staticmethod
    def _crashed(command: BrokerCommand, exc: Exception) -> Any:
        error = BrokerError("INTERNAL", ErrorKind.OTHER, repr(exc))
        # a placement that crashed here may have been sent: looked up, never sent again
        return PlacementUnknown(command, error) if isinstance(command, PlaceCopy) else CallFailed(command, error)

    def _perform(self, command: BrokerCommand) -> Any:
        return perform(self.gateway, command, margin_check=self.margin_check, take_data_slot=self._take_data_slot)

    def _report(self, answer: Any) -> None:
        command: BrokerCommand = answer.command
        error: BrokerError | None = getattr(answer, "error", None)
        # a placement that may exist is never sent again blind: its order actor looks it up
        if (error is not None and error.transient and command.attempt < self._attempts(error) and self.actor is not None
                and not isinstance(answer, PlacementUnknown)):
            try:
                self.actor.tell(RetryCall(command, error))  # the actor decides the backoff
            except Exception:  # an address parks messages while its actor restarts; this is a bug
                log.exception("could not report a completed broker call")
            return
        self._answer(answer)

    def _attempts(self, error: BrokerError) -> int:
        """How many times a call failing so may be sent. A DH-904 had no effect at the broker and
        passes with its window: its retries (backing off from 0.02 s, doubling to 5 s) go on for
        about 20 s, where the other errors' `max_attempts` spend under a second on it; a copy too
        late by then is dropped by its `expires_at`."""
        if error.kind == ErrorKind.RATE_LIMITED:
            return max(self.max_attempts, RATE_LIMITED_ATTEMPTS)
        return self.max_attempts

    @staticmethod
    def _answer(answer: Any) -> None:
        try:
            answer.command.reply_to.tell(answer)
        except Exception:  # an address parks messages while its actor restarts; this is a bug
            log.exception("could not report a completed broker call")

    def _observe_sent(self, command: PlaceCopy, sent_ns: int) -> None:
        if command.attempt == 1 and command.received_ns:
            self._latency.observe((sent_ns - command.received_ns) / 1e9)

    def _take_data_slot(self) -> bool:
        """A data-window slot now, if one is free (for a second request inside one call)."""
        with self._lock:
            now = time.monotonic()
            windows = self.windows["data"]
            if self._closed or self.paused_until > now or windows.wait_time(now) > 0:
                return False
            windows.take(now)
            return True


def send_all(limiters: dict[str, RateLimiter], commands: list[BrokerCommand]) -> None:
    """A fan-out (one leader order's calls, one per follower): every request that can go now is
    sent before any answer is read or any broker thread is woken (a woken thread would take the
    GIL from the sender: docs/design.md).

        send_all(ctx.limiters, [PlaceCopy(account=f, ...) for f in followers])
    """
    later: list[Callable[[], None]] = []
    for command in commands:
        limiters[command.account].tell(command, later)
    for start in later:
        start()


class RateLimiterActor(PooledSupervised):
    """The account's clock and retry policy around its RateLimiter (the module's docstring says
    what each does). A restarted incarnation finds the limiter and its queue as they were."""

    def __init__(self, address: Address, supervisor: Address | None, limiter: RateLimiter, timers: Timers, *,
                 backoff_initial: float = 0.2, backoff_max: float = 5.0, sizing: Address | None = None) -> None:
        """`sizing`: told of every placement sent again, and of every pause of the account's
        placements (exits wait for the copies on their way)."""
        super().__init__(address, supervisor)
        self.limiter = limiter
        self.sizing = sizing
        self.account = limiter.account
        self.backoff = wait_exponential_jitter(multiplier=backoff_initial, max=backoff_max, jitter=backoff_initial)
        self.rate_limited_backoff = wait_exponential_jitter(multiplier=0.02, max=backoff_max, jitter=0.01)
        self.timers = timers  # the copier's one timer thread: a wait costs no thread of its own
        self._timer: TimerHandle | None = None
        self._timer_due = 0.0

    def started(self) -> None:
        self.limiter.actor = self.address
        self._drain()  # what queued while this incarnation was starting

    def on_stop(self) -> None:
        super().on_stop()
        self._cancel_timer()
        self.limiter.close()

    def on_failure(self, *exc_info: Any) -> None:
        self._cancel_timer()  # the limiter and its queue outlive this incarnation
        super().on_failure(*exc_info)

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, RetryCall):
            self._completed(message.command, message.error)
        self._drain()  # on Drain, and after anything else: a slot may be free now
        return None

    def _drain(self) -> None:
        wait = self.limiter.drain()
        if wait is not None:
            self._schedule(wait)

    def _schedule(self, delay: float) -> None:
        now = time.monotonic()
        due = now + delay
        if now < self._timer_due <= due:  # a timer still pending fires soon enough
            return
        self._cancel_timer()
        self._timer_due = due
        self._timer = self.timers.after(max(delay, 0.0005), self.address, Drain(), owner=self.actor_ref)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_due = 0.0

    def _completed(self, command: BrokerCommand, error: BrokerError) -> None:
        """A transient failure (the worker sends every other answer straight to its sender)."""
        if error.kind == ErrorKind.RATE_LIMITED:
            # Paced at the broker's own rate, a call is refused only when it reached the broker a
            # few milliseconds before the oldest call in the broker's window expired: a short
            # pause suffices. Longer ones (a broker that counts differently) back off as usual.
            delay = self.rate_limited_backoff(SimpleNamespace(attempt_number=command.attempt))
            metrics.RATE_LIMITED.labels(self.account).inc()
            self.limiter.refund(command)
            until = time.monotonic() + delay
            self.limiter.pause(until)
            if self.sizing is not None:
                self.sizing.tell(PlacementsPaused(self.account, until))
        else:
            delay = self.backoff(SimpleNamespace(attempt_number=command.attempt))
        operation = OPERATIONS.get(type(command).__name__, type(command).__name__)
        metrics.RETRIES.labels(self.account, operation).inc()
        log.info("%s %s for %s failed (%s); retry %d in %.2fs", self.account, operation, command.leader_order_id,
                 error, command.attempt + 1, delay)
        retry_at = time.monotonic() + delay
        if isinstance(command, PlaceCopy) and self.sizing is not None:
            self.sizing.tell(PlacementRetried(self.account, command.correlation_id, retry_at))
        self.limiter.retry(replace(command, attempt=command.attempt + 1, not_before=retry_at))


# metric labels of the commands (the operation names the dashboards know)
OPERATIONS = {"PlaceCopy": "place", "ModifyCopy": "modify", "CancelCopy": "cancel", "LookupCopy": "lookup",
              "GetOrder": "get", "PlaceForever": "forever_place", "ModifyForever": "forever_modify",
              "CancelForever": "forever_cancel", "LookupForever": "forever_lookup", "ReadSuperOrder": "super_orders"}
