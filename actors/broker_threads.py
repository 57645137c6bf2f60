"""The threads every account's broker calls run on: a fixed number, however many accounts.

`BrokerThreads` is one pool of `size` threads shared by the rate limiters of every account
(actors/rate_limiter.py), plus one `AnswerReader` (broker/answers.py) that reads every placement's
answer. Each account has a `Lane`: its calls start in the order they were submitted, at most
`cap` of them at once, so an account whose broker hangs holds at most `cap` threads while the
other accounts' calls go on; what is past its cap waits in its own lane. The lanes with calls
to start take turns, one call each.

    threads = BrokerThreads(size=16, per_account=4)
    lane = threads.lane("f1")
    threads.submit(lane, lambda: ...)      # False once the lane or the pool is closed
    threads.stop()
"""
from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Callable

from broker.answers import AnswerReader

log = logging.getLogger(__name__)

__all__ = ["BrokerThreads", "Lane"]

DEFAULT_THREADS = 16
DEFAULT_PER_ACCOUNT = 4  # a hung account holds a quarter of the default pool at most


class Lane:
    """One account's calls in the pool: waiting in arrival order, at most `cap` running."""

    __slots__ = ("account", "cap", "calls", "running", "queued", "closed")

    def __init__(self, account: str, cap: int) -> None:
        self.account = account
        self.cap = cap
        self.calls: deque[Callable[[], None]] = deque()
        self.running = 0
        self.queued = False  # in the pool's turn order
        self.closed = False


class BrokerThreads:
    """A fixed pool of broker threads, started as the load asks for them, and the answer reader."""

    def __init__(self, size: int = DEFAULT_THREADS, per_account: int = DEFAULT_PER_ACCOUNT,
                 name: str = "broker") -> None:
        if size < 1 or per_account < 1:
            raise ValueError("a broker pool needs at least one thread, and one per account")
        self.size = size
        self.per_account = per_account
        self.name = name
        self.reader = AnswerReader(name=f"{name}-answers")
        self._cond = threading.Condition()
        self._turns: deque[Lane] = deque()  # lanes with a call to start, under their cap
        self._threads: list[threading.Thread] = []
        self._idle = 0  # threads waiting for a turn, not yet woken
        self._stopped = False

    def lane(self, account: str, cap: int | None = None) -> Lane:
        """A lane for `account`'s calls, `cap` at once (default `per_account`)."""
        return Lane(account, max(1, cap or self.per_account))

    def submit(self, lane: Lane, call: Callable[[], None]) -> bool:
        """Run `call` on a pool thread after the lane's earlier calls started, within the lane's
        cap. False, not run, once the lane or the pool is closed."""
        start = False
        with self._cond:
            if self._stopped or lane.closed:
                return False
            lane.calls.append(call)
            if lane.queued or lane.running >= lane.cap:
                return True  # started by a thread when the lane's turn (or a slot) comes
            lane.queued = True
            self._turns.append(lane)
            if self._idle:
                self._idle -= 1
                self._cond.notify()
            elif len(self._threads) < self.size:
                start = True
                thread = threading.Thread(target=self._work, name=f"{self.name}-{len(self._threads) + 1}",
                                          daemon=True)  # never holds up an exit: what it was doing is stored
                self._threads.append(thread)
        if start:
            thread.start()
        return True

    def close_lane(self, lane: Lane) -> None:
        """No more calls on `lane`: those not started are dropped (still pending in storage)."""
        with self._cond:
            lane.closed = True
            lane.calls.clear()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the threads (after their calls in progress) and the answer reader."""
        with self._cond:
            self._stopped = True
            self._turns.clear()
            threads = list(self._threads)
            self._cond.notify_all()
        self.reader.stop()
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(timeout / max(1, len(threads)))

    def thread_count(self) -> int:
        with self._cond:
            return len(self._threads)

    def _work(self) -> None:
        lane: Lane | None = None
        while True:
            with self._cond:
                if lane is not None:  # the call just run: its slot is free
                    lane.running -= 1
                    if lane.calls and not lane.queued and not lane.closed:
                        lane.queued = True
                        self._turns.append(lane)
                while True:
                    if self._stopped:
                        return
                    if not self._turns:
                        self._idle += 1  # taken back by whoever notifies
                        self._cond.wait()
                        continue
                    lane = self._turns.popleft()
                    if lane.calls:
                        break
                    lane.queued = False  # closed while waiting for its turn
                call = lane.calls.popleft()
                lane.running += 1
                if lane.calls and lane.running < lane.cap:
                    self._turns.append(lane)  # its next call after the other lanes' turn
                else:
                    lane.queued = False
            try:
                call()
            except Exception:  # the callers answer their own failures; this is a bug
                log.exception("a broker call of %s crashed", lane.account)
