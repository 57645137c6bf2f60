"""The rate-limiter actor: one per follower account, the only way broker calls are made for it.

It admits calls in arrival order inside every configured window (per second, minute, hour, day;
order APIs and data APIs counted apart), runs them on a small worker pool so one slow answer
does not hold up the account's next call, and retries transient failures (DH-904, DH-908,
DH-909, transport) with exponential backoff and jitter, re-queued through the same windows so a
retry can never exceed the limits. A DH-904 also pauses the whole account briefly.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

from tenacity import wait_exponential_jitter

from actors.messages import BrokerCall, BrokerReply, CallCompleted, Drain
from app import metrics
from broker.errors import BrokerError, ErrorKind
from broker.gateway import DhanGateway
from supervisors import Address, Supervised

log = logging.getLogger(__name__)

ORDER_OPS = frozenset({"place", "modify", "cancel", "forever_place", "forever_modify", "forever_cancel"})


class SlidingWindows:
    """Counts events in several sliding windows at once: [(limit, seconds), ...]. Not thread-safe:
    only its actor touches it.

    Each window is kept `margin` seconds longer than the broker's: requests leave here a few
    milliseconds apart from when they arrive there, and the broker counts arrivals."""

    def __init__(self, limits: list[tuple[int, float]], margin: float = 0.05) -> None:
        self.limits = [(int(n), float(s) + margin) for n, s in limits if n > 0]
        self._stamps: list[deque[float]] = [deque() for _ in self.limits]

    def _trim(self, now: float) -> None:
        for (_, span), stamps in zip(self.limits, self._stamps):
            while stamps and now - stamps[0] >= span:
                stamps.popleft()

    def wait_time(self, now: float) -> float:
        """Seconds until one more event fits in every window (0 when it fits now)."""
        self._trim(now)
        wait = 0.0
        for (limit, span), stamps in zip(self.limits, self._stamps):
            if len(stamps) >= limit:
                wait = max(wait, stamps[len(stamps) - limit] + span - now)
        return wait

    def take(self, now: float) -> None:
        for stamps in self._stamps:
            stamps.append(now)

    def headroom(self, now: float) -> int:
        self._trim(now)
        return min((limit - len(stamps) for (limit, _), stamps in zip(self.limits, self._stamps)), default=0)


class RateLimiterActor(Supervised):
    def __init__(self, address: Address, supervisor: Address | None, gateway: DhanGateway, *,
                 order_limits: list[tuple[int, float]], data_limits: list[tuple[int, float]],
                 workers: int | None = None, max_attempts: int = 6, backoff_initial: float = 0.2,
                 backoff_max: float = 5.0, margin_check: bool = False) -> None:
        super().__init__(address, supervisor)
        self.gateway = gateway
        self.account = gateway.account
        self.windows = {"order": SlidingWindows(order_limits), "data": SlidingWindows(data_limits)}
        self.queue: deque[BrokerCall] = deque()
        # Enough workers to keep the account's order rate even when every answer takes a second
        # (a slow broker must not throttle its own follower below the leader's pace); capped.
        self.workers = workers or min(16, max(4, min((n for n, span in order_limits if span <= 1.0), default=4)))
        self.max_attempts = max_attempts
        self.backoff = wait_exponential_jitter(multiplier=backoff_initial, max=backoff_max, jitter=backoff_initial)
        self.paused_until = 0.0
        self.margin_check = margin_check
        self._pool: ThreadPoolExecutor | None = None
        self._timer: threading.Timer | None = None
        self._timer_due = 0.0

    def started(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix=f"broker-{self.account}")

    def on_stop(self) -> None:
        super().on_stop()
        if self._timer:
            self._timer.cancel()
        if self._pool:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def on_failure(self, *exc_info: Any) -> None:
        self.on_stop()
        super().on_failure(*exc_info)

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, BrokerCall):
            self.queue.append(message)
            self._drain()
        elif isinstance(message, CallCompleted):
            self._completed(message.reply)
            self._drain()
        elif isinstance(message, Drain):
            self._timer_due = 0.0
            self._drain()
        elif message == "queue_length":
            return len(self.queue)
        return None

    # -- admission -------------------------------------------------------------------------------
    def _drain(self) -> None:
        now = time.monotonic()
        earliest = float("inf")
        kept: deque[BrokerCall] = deque()
        while self.queue:
            call = self.queue.popleft()
            windows = self.windows["order" if call.op in ORDER_OPS else "data"]
            wait = max(call.not_before - now, self.paused_until - now, windows.wait_time(now))
            if wait > 0:
                kept.append(call)
                earliest = min(earliest, wait)
                # keep order calls in arrival order: nothing overtakes a waiting order call
                if call.op in ORDER_OPS and call.not_before <= now:
                    kept.extend(self.queue)
                    self.queue.clear()
                continue
            windows.take(now)
            assert self._pool is not None
            self._pool.submit(self._execute, call)
        self.queue = kept
        metrics.RATE_LIMIT_QUEUE.labels(self.account).set(len(self.queue))
        metrics.RATE_LIMIT_TOKENS.labels(self.account).set(self.windows["order"].headroom(now))
        if self.queue and earliest < float("inf"):
            self._schedule(earliest)

    def _schedule(self, delay: float) -> None:
        due = time.monotonic() + delay
        if self._timer is not None and self._timer_due and self._timer_due <= due:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_due = due
        self._timer = threading.Timer(max(delay, 0.0005), self.address.tell, args=(Drain(),))
        self._timer.daemon = True
        self._timer.start()

    # -- completion --------------------------------------------------------------------------------
    def _completed(self, reply: BrokerReply) -> None:
        call = reply.call
        error = reply.error
        if error is not None and error.transient and call.attempt < self.max_attempts:
            delay = self.backoff(SimpleNamespace(attempt_number=call.attempt))
            if error.kind == ErrorKind.RATE_LIMITED:
                metrics.RATE_LIMITED.labels(self.account).inc()
                self.paused_until = max(self.paused_until, time.monotonic() + delay)
            metrics.RETRIES.labels(self.account, call.op).inc()
            log.info("%s %s for %s failed (%s); retry %d in %.2fs", self.account, call.op,
                     call.leader_order_id, error, call.attempt + 1, delay)
            retry = replace(call, attempt=call.attempt + 1, not_before=time.monotonic() + delay)
            self.queue.appendleft(retry)
            return
        call.reply_to.tell(reply)

    # -- runs on a worker thread -------------------------------------------------------------------
    def _execute(self, call: BrokerCall) -> None:
        try:
            reply = self._perform(call)
        except Exception as exc:  # a bug must not lose the call: answer it as a failure
            log.exception("%s %s crashed in the worker", self.account, call.op)
            reply = BrokerReply(call, error=BrokerError("INTERNAL", ErrorKind.OTHER, repr(exc)))
        try:
            self.address.tell(CallCompleted(reply))
        except Exception:  # the limiter is restarting: the address parks the message
            log.exception("could not report a completed broker call")

    def _perform(self, call: BrokerCall) -> BrokerReply:
        gw = self.gateway
        if call.op == "place":
            assert call.terms is not None
            if call.attempt > 1:  # an earlier attempt may have reached the broker: look before placing
                found = gw.order_by_correlation(call.correlation_id)
                if found.ok and found.data is not None:
                    return BrokerReply(call, order=found.data, broker_order_id=found.data.order_id,
                                       status=found.data.status.value)
            if self.margin_check and call.attempt == 1:
                shortfall = self._margin_shortfall(call)
                if shortfall is not None:
                    return BrokerReply(call, error=shortfall)
            sent_ns = time.monotonic_ns()
            if call.attempt == 1 and call.received_ns:
                metrics.REPLICATION_LATENCY.labels(call.follower).observe((sent_ns - call.received_ns) / 1e9)
            answer = gw.place(call.terms, call.correlation_id)
            if answer.ok:
                data = answer.data or {}
                return BrokerReply(call, broker_order_id=str(data.get("orderId") or ""),
                                   status=str(data.get("orderStatus") or "PENDING"), sent_ns=sent_ns)
            if answer.error is not None and answer.error.kind in (ErrorKind.NETWORK, ErrorKind.SERVER):
                found = gw.order_by_correlation(call.correlation_id)  # the answer may be all that was lost
                if found.ok and found.data is not None:
                    return BrokerReply(call, order=found.data, broker_order_id=found.data.order_id,
                                       status=found.data.status.value, sent_ns=sent_ns)
            return BrokerReply(call, error=answer.error, sent_ns=sent_ns)
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
            answer = gw.order_by_correlation(call.correlation_id)
            if answer.ok and answer.data is None:
                return BrokerReply(call, not_found=True)
            return BrokerReply(call, order=answer.data, error=answer.error,
                               broker_order_id=answer.data.order_id if answer.data else None)
        if call.op == "get":
            assert call.broker_order_id
            answer = gw.order(call.broker_order_id)
            return BrokerReply(call, order=answer.data, error=answer.error, broker_order_id=call.broker_order_id)
        if call.op.startswith("forever_"):
            return self._perform_forever(call)
        raise ValueError(f"unknown broker operation {call.op!r}")

    def _margin_shortfall(self, call: BrokerCall) -> BrokerError | None:
        """5.3 with copy.margin_check: ask the broker's margin calculator first; a shortfall is a
        refusal before any order exists (it is then a recorded skip, never a retry)."""
        terms = call.terms
        assert terms is not None
        answer = self.gateway.margin(terms, terms.price or terms.trigger_price)
        if not answer.ok or not isinstance(answer.data, dict):
            return None  # the calculator is advisory: without it, the broker's own check decides
        data = answer.data
        short = float(data.get("insufficientBalance") or 0)
        if short > 0:
            return BrokerError("MARGIN", ErrorKind.ORDER, f"insufficient margin per the margin calculator: needs "
                               f"{float(data.get('totalMargin') or 0):,.0f}, short by {short:,.0f}")
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
