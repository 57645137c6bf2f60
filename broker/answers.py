"""One thread that reads the answers of every placement sent ahead, of every account.

A placement is written on the sender's thread (DhanGateway.send_place); its answer used to be
read by a thread of the account's own, one per placement in flight. `AnswerReader` waits on all
of their connections at once with a `selectors` selector and reads each answer as it arrives
(broker/transport.py `Pending.read_available`), never waiting on one: an answer that arrives in
parts is read part by part, so one slow or hung broker holds up no other account's answers. An
answer that stops arriving for the transport's timeout is lost, as it was for a reading thread:
its connection is closed and its failure reported ("timed out": its outcome is unknown).

    reader = AnswerReader()
    reader.watch(pending, lambda answer: ...)   # on the reader's thread, once, whatever happens
    reader.stop()
"""
from __future__ import annotations

import heapq
import itertools
import logging
import math
import selectors
import socket
import threading
import time
from typing import Any, Callable

from broker.transport import Pending
from broker.wakeup import Wakeup

log = logging.getLogger(__name__)

__all__ = ["AnswerReader"]


class _Watched:
    """A placement whose answer the reader waits for."""

    __slots__ = ("pending", "on_answer", "sock", "deadline", "done")

    def __init__(self, pending: Pending, on_answer: Callable[[dict[str, Any]], None], sock: socket.socket,
                 deadline: float) -> None:
        self.pending, self.on_answer, self.sock, self.deadline = pending, on_answer, sock, deadline
        self.done = False


class AnswerReader:
    """Reads answers on one thread, started with the first `watch`. Thread-safe."""

    def __init__(self, name: str = "broker-answers") -> None:
        self.name = name
        self._selector: selectors.BaseSelector | None = None  # made with the thread, at the first watch
        self._lock = threading.Lock()
        self._deadlines: list[tuple[float, int, _Watched]] = []  # a heap; an entry moved on is left behind
        self._order = itertools.count()
        self._watched: set[_Watched] = set()
        # The reader sleeps at most `_tick` (the shortest timeout watched so far), so a new answer
        # with that timeout never needs to wake it: its deadline is after the reader's next look.
        self._tick = math.inf
        self._wakes_at = math.inf
        self._wakeup: Wakeup | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False

    def watch(self, pending: Pending, on_answer: Callable[[dict[str, Any]], None]) -> None:
        """Read `pending`'s answer when it arrives and call `on_answer` with it (dhanhq's shape,
        as Pending.finish returns it) on the reader's thread. One that already failed is answered
        here, at once. An answer already there when this is called is read at once too."""
        sock = pending.socket()
        if sock is None:
            _deliver(on_answer, pending.settle())
            return
        entry = _Watched(pending, on_answer, sock, time.monotonic() + pending.timeout)
        with self._lock:
            if self._stopped:  # stopping: what was sent stays pending in storage, looked up at start
                stopped = True
            else:
                stopped = False
                starting = self._thread is None
                if starting:
                    self._open()
                assert self._selector is not None
                # Registered from the sender's thread while the reader may be waiting: epoll (and
                # poll) take a registration made during a wait, and the selector's own map is a
                # dict, changed and read under the GIL.
                self._selector.register(sock, selectors.EVENT_READ, entry)
                self._watched.add(entry)
                heapq.heappush(self._deadlines, (entry.deadline, next(self._order), entry))
                self._tick = min(self._tick, pending.timeout)
                wake = entry.deadline < self._wakes_at and not starting
        if stopped:
            pending.expire(ConnectionAbortedError("the copier is stopping"))
            return
        if wake:
            self._wake()

    def _open(self) -> None:
        """Under the lock: the selector, the wake-up pair, and the thread."""
        self._selector = selectors.DefaultSelector()
        self._wakeup = Wakeup(self._selector)
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop reading; connections still awaiting an answer are closed, their answers not
        reported (the copier is stopping: those placements are looked up when it starts again)."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            thread = self._thread
        self._wake()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        with self._lock:
            watched, self._watched = self._watched, set()
            self._deadlines.clear()
        for entry in watched:
            entry.done = True
            try:
                self._selector.unregister(entry.sock)  # type: ignore[union-attr]
            except (KeyError, ValueError, OSError):
                pass
            entry.pending.expire(ConnectionAbortedError("the copier is stopping"))
        if thread is not None and not thread.is_alive():
            self._selector.close()  # type: ignore[union-attr]
            self._wakeup.close()  # type: ignore[union-attr]

    def in_flight(self) -> int:
        """Answers awaited now."""
        with self._lock:
            return len(self._watched)

    def _wake(self) -> None:
        if self._wakeup is not None:  # None: no thread yet
            self._wakeup.wake()

    def _run(self) -> None:
        selector = self._selector
        assert selector is not None
        try:
            while True:
                with self._lock:
                    if self._stopped:
                        return
                    now = time.monotonic()
                    wait = self._tick
                    while self._deadlines:
                        deadline, _, entry = self._deadlines[0]
                        if entry.done or deadline != entry.deadline:
                            heapq.heappop(self._deadlines)  # answered, or moved on after a partial arrival
                            continue
                        wait = min(wait, deadline - now)
                        break
                    wait = max(wait, 0.0)
                    self._wakes_at = now + wait
                events = selector.select(None if math.isinf(wait) else wait)
                now = time.monotonic()
                for key, _ in events:
                    if key.data is None:
                        self._wakeup.drain()  # type: ignore[union-attr]
                    else:
                        self._readable(key.data, now)
                self._expire(time.monotonic())
        except Exception:  # a bug: log it loudly; the answers awaited are lost as on a crash
            log.exception("the broker answer reader stopped")

    def _readable(self, entry: _Watched, now: float) -> None:
        if entry.done:
            return
        try:
            whole = entry.pending.read_available()
        except Exception:  # read_available answers failures itself; this would be a bug
            log.exception("reading a broker answer failed")
            whole = True
        if whole:
            self._finish(entry, None)
            return
        with self._lock:  # a part arrived: the timeout runs from the last byte, as a blocking read's
            entry.deadline = now + entry.pending.timeout
            heapq.heappush(self._deadlines, (entry.deadline, next(self._order), entry))

    def _expire(self, now: float) -> None:
        expired = []
        with self._lock:
            while self._deadlines and self._deadlines[0][0] <= now:
                deadline, _, entry = heapq.heappop(self._deadlines)
                if not entry.done and deadline == entry.deadline:
                    expired.append(entry)
        for entry in expired:
            self._finish(entry, TimeoutError("timed out"))  # a blocking read's words for it

    def _finish(self, entry: _Watched, error: Exception | None) -> None:
        """Stop watching `entry` (before its connection can be given back and used by another
        thread), then report its answer."""
        with self._lock:
            if entry.done:
                return
            entry.done = True
            self._watched.discard(entry)
            try:
                self._selector.unregister(entry.sock)  # type: ignore[union-attr]
            except (KeyError, ValueError):  # already closed
                pass
        answer = entry.pending.settle() if error is None else entry.pending.expire(error)
        _deliver(entry.on_answer, answer)


def _deliver(on_answer: Callable[[dict[str, Any]], None], answer: dict[str, Any]) -> None:
    try:
        on_answer(answer)
    except Exception:  # the receiver's bug must not stop the reader for every other account
        log.exception("reporting a broker answer failed")
