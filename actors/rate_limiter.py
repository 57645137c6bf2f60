"""The rate limiter: one per follower account, the only way broker calls are made for it.

`RateLimiter` admits calls in arrival order inside every configured window (per second, minute,
hour, day; order APIs and data APIs counted apart) and runs them on a small worker pool, so one
slow answer does not hold up the account's next call (a first placement is sent on the caller's
thread, and only its answer waits on a worker). `RateLimiterActor` is its clock and retry
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from types import SimpleNamespace
from typing import Any, Callable

from tenacity import wait_exponential_jitter

from actors.messages import BrokerCall, BrokerReply, CallCompleted, Drain
from observability import metrics
from broker.errors import BrokerError, ErrorKind
from broker.gateway import Answer, DhanGateway, SentPlacement
from supervisors import Address, Supervised

log = logging.getLogger(__name__)

ORDER_OPS = frozenset({"place", "modify", "cancel", "forever_place", "forever_modify", "forever_cancel"})


class SlidingWindows:
    """Admission inside several windows at once: [(limit, seconds), ...]. Not thread-safe: its
    owner holds a lock.

    Calls are paced to the tightest window (per second): one every seconds/limit, with
    `tolerance` seconds of slack so that a call arriving a little early (socket jitter) is not
    held back. A burst leaves at the broker's pace instead of a window's worth at once (a whole
    interval of slack let two calls of a burst leave together, and the broker, which counts
    arrivals, then saw 11 in a second now and then). Every window is
    also counted, a little longer than the broker's, because the broker counts arrivals and a
    call leaves here a little before it arrives there: `paced_margin` on the tightest window
    (20 ms kept the paper exchange's count within its limit under load; 10 ms did not), `margin`
    on the longer ones. The margin on the tightest window is paid only by a caller at exactly the
    broker's rate, at most `paced_margin` of lag per window; the old 50 ms cost a leader at 10
    orders/s 50 ms of lag every second."""

    def __init__(self, limits: list[tuple[int, float]], margin: float = 0.05, paced_margin: float = 0.02,
                 tolerance: float = 0.02) -> None:
        active = sorted(((int(n), float(s)) for n, s in limits if n > 0), key=lambda w: w[1])
        self.spacing = active[0][1] / active[0][0] if active else 0.0
        self.tolerance = min(tolerance, self.spacing)
        self.limits = [(n, s + (margin if i else paced_margin)) for i, (n, s) in enumerate(active)]
        self._stamps: list[deque[float]] = [deque() for _ in self.limits]
        self._due = float("-inf")  # when the next call is due at the paced rate

    def _trim(self, now: float) -> None:
        for (_, span), stamps in zip(self.limits, self._stamps):
            while stamps and now - stamps[0] >= span:
                stamps.popleft()

    def wait_time(self, now: float) -> float:
        """Seconds until one more call fits (0 when it fits now)."""
        self._trim(now)
        wait = self._due - self.tolerance - now
        for (limit, span), stamps in zip(self.limits, self._stamps):
            if len(stamps) >= limit:
                wait = max(wait, stamps[len(stamps) - limit] + span - now)
        return max(wait, 0.0)

    def take(self, now: float) -> None:
        self._due = max(self._due, now) + self.spacing
        for stamps in self._stamps:
            stamps.append(now)

    def release(self, at: float) -> None:
        """Uncount the call taken at `at`: the broker refused it as rate limited, so it did not
        count it either, and the retry must not pay for it twice."""
        for stamps in self._stamps:
            for i in range(len(stamps) - 1, -1, -1):
                if stamps[i] == at:
                    del stamps[i]
                    break
        self._due -= self.spacing

    def headroom(self, now: float) -> int:
        """Calls still allowed in the tightest window."""
        self._trim(now)
        return min((limit - len(stamps) for (limit, _), stamps in zip(self.limits, self._stamps)), default=0)


class RateLimiter:
    """One follower account's only path to its broker: admission inside the windows, then
    sending. Thread-safe; shared by every sender and the account's actor.

    Why not only an actor: a placement that waited for the limiter's mailbox, and then for a
    worker thread to get the GIL, paid two more hand-offs, and at ten followers those hand-offs
    were the p99 of the replication benchmark. So a call that fits the windows now, with nothing
    waiting ahead of it, is admitted on the sender's own thread, under this lock; a first
    placement is even sent there (`_dispatch`), and only its answer is read on a worker. What
    must wait (full windows, a DH-904 pause, a retry's backoff) waits in `queue`, and the
    RateLimiterActor, which owns the clock and the retry policy, drains it when a slot frees.
    The queue lives here, not in the actor, so a restarted actor finds it intact."""

    def __init__(self, gateway: DhanGateway, *, order_limits: list[tuple[int, float]],
                 data_limits: list[tuple[int, float]], workers: int | None = None, max_attempts: int = 6,
                 margin_check: bool = False) -> None:
        self.gateway = gateway
        self.account = gateway.account
        self.windows = {"order": SlidingWindows(order_limits), "data": SlidingWindows(data_limits)}
        self.queue: deque[BrokerCall] = deque()
        self.paused_until = 0.0
        self.max_attempts = max_attempts
        self.margin_check = margin_check
        # Enough workers to keep the account's order rate even when every answer takes a second
        # (a slow broker must not throttle its own follower below the leader's pace); capped.
        self.workers = workers or min(16, max(4, min((n for n, span in order_limits if span <= 1.0), default=4)))
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix=f"broker-{self.account}")
        self._lock = threading.Lock()
        self._closed = False
        self._queue_gauge = metrics.RATE_LIMIT_QUEUE.labels(self.account)
        self._tokens_gauge = metrics.RATE_LIMIT_TOKENS.labels(self.account)
        self.actor: Address | None = None  # the RateLimiterActor: wake-ups and retry decisions go there

    def tell(self, call: BrokerCall, later: list[Callable[[], None]] | None = None) -> None:
        """Send `call` as soon as the limits allow, in arrival order. With `later`, the work left
        for broker workers is appended there for the caller to start after its whole fan-out
        (see `send_all`)."""
        self._enqueue(call, later, first=False)

    def retry(self, call: BrokerCall) -> None:
        """A retry goes ahead of the queue (it arrived first); its backoff is `call.not_before`."""
        self._enqueue(call, None, first=True)

    def _enqueue(self, call: BrokerCall, later: list[Callable[[], None]] | None, first: bool) -> None:
        with self._lock:
            if first:
                self.queue.appendleft(call)
            else:
                self.queue.append(call)
            admitted, wait = self._admit()
        self._dispatch(admitted, later)
        if wait is not None:
            self._wake()

    def pause(self, until: float) -> None:
        """DH-904: nothing more for this account until `until` (monotonic)."""
        with self._lock:
            self.paused_until = max(self.paused_until, until)

    def refund(self, call: BrokerCall) -> None:
        """`call` was refused as rate limited: the broker did not count it (see SlidingWindows.release)."""
        with self._lock:
            self.windows["order" if call.op in ORDER_OPS else "data"].release(call.admitted_at)

    def drain(self) -> float | None:
        """Send what fits now; seconds until the next waiting call may fit, None when none waits."""
        with self._lock:
            admitted, wait = self._admit()
        self._dispatch(admitted)
        return wait

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self.queue.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _admit(self) -> tuple[list[BrokerCall], float | None]:
        """Under the lock: take a slot for every call that fits now, in order; returns them and
        the seconds until the first waiting one may fit (None when none waits)."""
        if self._closed:  # stopping: what was not sent is still pending in storage
            self.queue.clear()
            return [], None
        now = time.monotonic()
        admitted: list[BrokerCall] = []
        earliest: float | None = None
        kept: deque[BrokerCall] = deque()
        while self.queue:
            call = self.queue.popleft()
            windows = self.windows["order" if call.op in ORDER_OPS else "data"]
            wait = max(call.not_before - now, self.paused_until - now, windows.wait_time(now))
            if wait > 0:
                kept.append(call)
                earliest = wait if earliest is None else min(earliest, wait)
                # keep order calls in arrival order: nothing overtakes a waiting order call
                if call.op in ORDER_OPS and call.not_before <= now:
                    kept.extend(self.queue)
                    self.queue.clear()
                continue
            windows.take(now)
            admitted.append(replace(call, admitted_at=now))
        self.queue = kept
        self._queue_gauge.set(len(kept))
        self._tokens_gauge.set(self.windows["order"].headroom(now))
        return admitted, earliest

    def _dispatch(self, admitted: list[BrokerCall], later: list[Callable[[], None]] | None = None) -> None:
        """Outside the lock. A first placement attempt is sent right here, on the caller's thread,
        when the account has an open connection: an order actor's fan-out then leaves back to
        back instead of waiting for ten worker threads to get the GIL one after another (that
        wait was the p99 of the ten-follower benchmark). Its answer is read on a worker. Anything
        else, or with no open connection, runs whole on a worker."""
        for call in admitted:
            if call.op == "place" and call.attempt == 1 and not self.margin_check and call.terms is not None:
                sent_ns = time.monotonic_ns()
                sent = self.gateway.send_place(call.terms, call.correlation_id)
                if sent is not None:
                    self._observe_sent(call, sent_ns)
                    self._submit(later, self._finish_placement, call, sent, sent_ns)
                    continue
            self._submit(later, self._execute, call)

    def _submit(self, later: list[Callable[[], None]] | None, fn: Any, *args: Any) -> None:
        if later is not None:
            later.append(functools.partial(self._submit, None, fn, *args))
            return
        try:
            self._pool.submit(fn, *args)
        except RuntimeError:  # closed meanwhile (stopping): the call stays pending in storage
            log.debug("%s: broker workers stopped; call not sent", self.account)

    def _wake(self) -> None:
        """Calls are waiting: the actor drains and times the next slot itself."""
        if self.actor is not None:  # None only before the actor first starts; it drains then
            self.actor.tell(Drain())

    # -- runs on a worker thread -------------------------------------------------------------------
    def _execute(self, call: BrokerCall) -> None:
        try:
            reply = self._perform(call)
        except Exception as exc:  # a bug must not lose the call: answer it as a failure
            log.exception("%s %s crashed in the worker", self.account, call.op)
            reply = BrokerReply(call, error=BrokerError("INTERNAL", ErrorKind.OTHER, repr(exc)))
        self._report(reply)

    def _finish_placement(self, call: BrokerCall, sent: SentPlacement, sent_ns: int) -> None:
        try:
            reply = self._placed(call, sent.answer(), sent_ns)
        except Exception as exc:  # a bug must not lose the call: answer it as a failure
            log.exception("%s place crashed in the worker", self.account)
            reply = BrokerReply(call, error=BrokerError("INTERNAL", ErrorKind.OTHER, repr(exc)), sent_ns=sent_ns)
        self._report(reply)

    def _report(self, reply: BrokerReply) -> None:
        call = reply.call
        error = reply.error
        retry = error is not None and error.transient and call.attempt < self.max_attempts and self.actor is not None
        if retry and call.op == "place" and error is not None and error.outcome_unknown:
            retry = False  # it may be placed: never sent again blind; its order actor looks it up
        try:
            if retry:
                self.actor.tell(CallCompleted(reply))  # the actor decides the backoff
            else:
                call.reply_to.tell(reply)
        except Exception:  # an address parks messages while its actor restarts; this is a bug
            log.exception("could not report a completed broker call")

    def _perform(self, call: BrokerCall) -> BrokerReply:
        gw = self.gateway
        if call.op == "place":  # retried only after a refusal (DH-904): no earlier attempt can exist
            assert call.terms is not None
            if self.margin_check and call.attempt == 1:
                shortfall = self._margin_shortfall(call)
                if shortfall is not None:
                    return BrokerReply(call, error=shortfall)
            sent_ns = time.monotonic_ns()
            self._observe_sent(call, sent_ns)
            return self._placed(call, gw.place(call.terms, call.correlation_id), sent_ns)
        if call.op == "modify":
            assert call.terms is not None and call.broker_order_id
            answer = gw.modify(call.broker_order_id, call.terms)
            return BrokerReply(call, error=answer.error, broker_order_id=call.broker_order_id)
        if call.op == "cancel":
            assert call.broker_order_id
            answer = gw.cancel(call.broker_order_id)
            status = (answer.data or {}).get("orderStatus") if answer.ok else None
            return BrokerReply(call, error=answer.error, broker_order_id=call.broker_order_id, status=status)
        if call.op == "lookup":
            sent_ns = time.monotonic_ns()  # a "not found" says nothing of requests that arrive later
            answer = gw.order_by_correlation(call.correlation_id)
            if not answer.ok and answer.error is not None and answer.error.transient and self._take_data_slot():
                answer = gw.order_in_book(call.correlation_id)  # the same question, another endpoint
            if answer.ok and answer.data is None:
                return BrokerReply(call, not_found=True, sent_ns=sent_ns)
            return BrokerReply(call, order=answer.data, error=answer.error,
                               broker_order_id=answer.data.order_id if answer.data else None, sent_ns=sent_ns)
        if call.op == "get":
            assert call.broker_order_id
            answer = gw.order(call.broker_order_id)
            return BrokerReply(call, order=answer.data, error=answer.error, broker_order_id=call.broker_order_id)
        if call.op.startswith("forever_"):
            return self._perform_forever(call)
        raise ValueError(f"unknown broker operation {call.op!r}")

    @staticmethod
    def _observe_sent(call: BrokerCall, sent_ns: int) -> None:
        if call.attempt == 1 and call.received_ns:
            metrics.REPLICATION_LATENCY.labels(call.follower).observe((sent_ns - call.received_ns) / 1e9)

    def _placed(self, call: BrokerCall, answer: Answer, sent_ns: int) -> BrokerReply:
        """The reply for a placement the broker answered with `answer`. A success without an order
        id is as good as no answer: the outcome is unknown, and looked up by the order actor."""
        if answer.ok:
            data = answer.data if isinstance(answer.data, dict) else {}
            order_id = str(data.get("orderId") or "")
            if order_id:
                return BrokerReply(call, broker_order_id=order_id, status=str(data.get("orderStatus") or "PENDING"),
                                   sent_ns=sent_ns)
            error = BrokerError("UNREADABLE", ErrorKind.NETWORK, f"placement answered without an order id: "
                                f"{str(answer.data)[:200]}")
            return BrokerReply(call, error=error, sent_ns=sent_ns)
        return BrokerReply(call, error=answer.error, sent_ns=sent_ns)

    def _take_data_slot(self) -> bool:
        """A data-window slot now, if one is free (for a second request inside one call)."""
        with self._lock:
            now = time.monotonic()
            windows = self.windows["data"]
            if self._closed or self.paused_until > now or windows.wait_time(now) > 0:
                return False
            windows.take(now)
            return True

    def _margin_shortfall(self, call: BrokerCall) -> BrokerError | None:
        """With copy.margin_check: ask the broker's margin calculator first; a shortfall is a
        refusal before any order exists (it is then a recorded skip, never a retry)."""
        terms = call.terms
        assert terms is not None
        answer = self.gateway.margin(terms, terms.price or terms.trigger_price)
        if not answer.ok:
            return None  # the calculator is advisory: without it, the broker's own check decides
        margin = answer.data
        if margin.shortfall > 0:
            return BrokerError("MARGIN", ErrorKind.ORDER, f"insufficient margin per the margin calculator: needs "
                               f"{margin.required:,.0f}, short by {margin.shortfall:,.0f}")
        return None

    def _perform_forever(self, call: BrokerCall) -> BrokerReply:
        gw = self.gateway
        if call.op in ("forever_place", "forever_lookup"):
            if call.op == "forever_lookup" or call.attempt > 1:  # placed already? (its answer may be lost)
                listing = gw.forever_orders()
                if not listing.ok:
                    return BrokerReply(call, error=listing.error)
                found = next((f for f in listing.data if f.correlation_id == call.correlation_id), None)
                if found is not None:
                    return BrokerReply(call, broker_order_id=found.order_id, status=found.status)
                if call.op == "forever_lookup":
                    return BrokerReply(call, not_found=True)
            assert call.forever is not None
            answer = gw.place_forever(call.forever, call.correlation_id)
            data = answer.data or {}
            return BrokerReply(call, error=answer.error, broker_order_id=str(data.get("orderId") or "") or None,
                               status=data.get("orderStatus"))
        assert call.broker_order_id
        if call.op == "forever_modify":
            assert call.forever is not None
            answer = gw.modify_forever(call.broker_order_id, call.forever)
        else:
            answer = gw.cancel_forever(call.broker_order_id)
        return BrokerReply(call, error=answer.error, broker_order_id=call.broker_order_id,
                           status=(answer.data or {}).get("orderStatus") if answer.ok else None)


def send_all(limiters: dict[str, RateLimiter], calls: list[BrokerCall]) -> None:
    """A fan-out (one leader order's calls, one per follower): every request that can go now is
    sent before any broker worker is woken to read an answer. A woken worker takes the GIL the
    moment the sending thread gives it up at its next socket write, so waking them one by one
    spread ten followers' sends over several milliseconds."""
    later: list[Callable[[], None]] = []
    for call in calls:
        limiters[call.follower].tell(call, later)
    for start in later:
        start()


class RateLimiterActor(Supervised):
    """The account's clock and retry policy around its RateLimiter: drains the queue when a
    window frees a slot, and re-queues transient failures (DH-904, DH-908, DH-909, transport)
    with exponential backoff and jitter, through the same windows, so a retry can never exceed
    the limits. A DH-904 also pauses the whole account briefly."""

    def __init__(self, address: Address, supervisor: Address | None, limiter: RateLimiter, *,
                 backoff_initial: float = 0.2, backoff_max: float = 5.0) -> None:
        super().__init__(address, supervisor)
        self.limiter = limiter
        self.account = limiter.account
        self.backoff = wait_exponential_jitter(multiplier=backoff_initial, max=backoff_max, jitter=backoff_initial)
        self.rate_limited_backoff = wait_exponential_jitter(multiplier=0.02, max=backoff_max, jitter=0.01)
        self._timer: threading.Timer | None = None
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
        if isinstance(message, CallCompleted):
            self._completed(message.reply)
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
        self._timer = threading.Timer(max(delay, 0.0005), self.address.tell, args=(Drain(),))
        self._timer.daemon = True
        self._timer.start()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_due = 0.0

    def _completed(self, reply: BrokerReply) -> None:
        """A transient failure (the worker sends every other answer straight to the order actor)."""
        call = reply.call
        error = reply.error
        assert error is not None
        if error.kind == ErrorKind.RATE_LIMITED:
            # Paced at the broker's own rate, a call is refused only when it reached the broker a
            # few milliseconds before the oldest call in the broker's window expired: a short
            # pause suffices. Longer ones (a broker that counts differently) back off as usual.
            delay = self.rate_limited_backoff(SimpleNamespace(attempt_number=call.attempt))
            metrics.RATE_LIMITED.labels(self.account).inc()
            self.limiter.refund(call)
            self.limiter.pause(time.monotonic() + delay)
        else:
            delay = self.backoff(SimpleNamespace(attempt_number=call.attempt))
        metrics.RETRIES.labels(self.account, call.op).inc()
        log.info("%s %s for %s failed (%s); retry %d in %.2fs", self.account, call.op,
                 call.leader_order_id, error, call.attempt + 1, delay)
        self.limiter.retry(replace(call, attempt=call.attempt + 1, not_before=time.monotonic() + delay))
