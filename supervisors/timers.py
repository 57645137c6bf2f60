"""One timer thread for the whole copier: delayed and periodic messages to actor addresses.

Every actor used to start a `threading.Timer` (a thread each) for a retry, a lag check or a poll;
with thousands of open orders that was thousands of threads sleeping. A `Timers` service keeps one
heap of due times and one thread that tells each message to its address when it falls due. An
actor never sleeps with messages in its inbox, and a timer that fires after its actor stopped
only parks a message on a stale address, which nobody reads.

    timers = Timers().start()
    handle = timers.after(1.5, address, Retry())                 # once, in 1.5 s
    timers.every(5.0, address, Sweep(), owner=self.actor_ref)    # every 5 s, until the actor stops
    handle.cancel()

An `owner` (anything with `is_alive()`, such as an actor's `ActorRef`) ties a timer to one actor
incarnation: once it has stopped or crashed, its timers are dropped instead of telling the next
incarnation at the same address what only the dead one asked for.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from typing import Any, Callable, Protocol

log = logging.getLogger(__name__)


class Recipient(Protocol):
    def tell(self, message: Any) -> None: ...


class Owner(Protocol):
    def is_alive(self) -> bool: ...


class TimerHandle:
    """Cancels the timer it was returned for; cancelling twice, or after it fired, is harmless."""

    __slots__ = ("cancelled", "due")

    def __init__(self, due: float) -> None:
        self.cancelled = False
        self.due = due

    def cancel(self) -> None:
        self.cancelled = True


class Timers:
    """A monotonic-clock timer service on one daemon thread. Thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, name: str = "timers") -> None:
        self._clock = clock
        self._name = name
        self._heap: list[tuple[float, int, TimerHandle, Recipient, Any, float, Owner | None]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        self._thread: threading.Thread | None = None

    def start(self) -> "Timers":
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._heap.clear()
            self._cond.notify()

    def after(self, delay: float, recipient: Recipient, message: Any, owner: Owner | None = None) -> TimerHandle:
        """Tell `message` to `recipient` once, `delay` seconds from now (unless `owner` stopped)."""
        return self._push(max(delay, 0.0), recipient, message, 0.0, owner)

    def every(self, period: float, recipient: Recipient, message: Any, owner: Owner | None = None) -> TimerHandle:
        """Tell `message` to `recipient` every `period` seconds, the first time one period from now,
        until cancelled or until `owner` has stopped."""
        if period <= 0:
            raise ValueError(f"a periodic timer needs a period > 0, got {period}")
        return self._push(period, recipient, message, period, owner)

    def pending(self) -> int:
        with self._cond:
            return sum(1 for entry in self._heap if not entry[2].cancelled)

    def _push(self, delay: float, recipient: Recipient, message: Any, period: float,
              owner: Owner | None) -> TimerHandle:
        due = self._clock() + delay
        handle = TimerHandle(due)
        with self._cond:
            if self._stopped:
                handle.cancelled = True
                return handle
            heapq.heappush(self._heap, (due, next(self._seq), handle, recipient, message, period, owner))
            if self._heap[0][2] is handle:
                self._cond.notify()  # sooner than what the thread waits for
        return handle

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (not self._heap or self._heap[0][0] > self._clock()):
                    wait = self._heap[0][0] - self._clock() if self._heap else None
                    self._cond.wait(wait)
                if self._stopped:
                    return
                due, _, handle, recipient, message, period, owner = heapq.heappop(self._heap)
                if handle.cancelled:
                    continue
                if owner is not None and not owner.is_alive():
                    handle.cancelled = True
                    continue
                if period > 0:  # the next tick counts from this one's due time: no drift
                    handle.due = max(due + period, self._clock())
                    heapq.heappush(self._heap, (handle.due, next(self._seq), handle, recipient, message, period,
                                                owner))
            try:
                recipient.tell(message)
            except Exception:  # a recipient's failure must not stop every other timer
                log.exception("timer message %r could not be delivered", message)
