"""Actors on a shared, fixed pool of threads.

Pykka gives every actor a thread of its own: hundreds of open orders, or hundreds of followers
(a feed and a rate limiter each), were hundreds of threads, most of them asleep, and every message
a thread switch (docs/design.md). Here each actor keeps only a mailbox; a small pool of threads
takes whichever mailbox has messages and runs them, one at a time and in order, so what Pykka
promised still holds:

- one message at a time per actor, in the order told (a mailbox is run by one thread at a time);
- a crash handling one actor's message stops that actor alone: its mailbox is dropped (as Pykka
  drops it) and its supervisor is told which message it crashed on (`ChildFailed`);
- an exception in an *asked* message goes back to the asker and the actor lives on.

A pool thread runs `BATCH` messages (or batches) of one actor, then gives the others a turn.
Told messages an actor `takes_in_batch` (an order actor: broker answers and follower updates, one
per copy) are handed to it together, as many as its mailbox holds in a row (`on_receive_batch`):
a fan-out's hundred answers cost one turn, and the actor one transaction for all of them. An
actor that waits (a sizing ask, a storage write, a broker call) holds its pool thread meanwhile,
hence several (`THREADS`).

A message told with `inline=True` from inside a pooled handler, to an actor with no turn under way,
is a hand-off: the telling thread runs that actor's turn itself as soon as its own handler returns,
instead of waking a pool thread for it (about 100 µs on a virtual machine, docs/design.md). A
leader's update goes so from its feed to the router, and a new leader order on to its new order
actor, on one thread. Messages told meanwhile (by anyone) wait in the mailbox behind it, so the
order told still holds. Only a turn that never waits on another actor or the broker is handed
off: the telling thread's own actor keeps its turn meanwhile.

`PooledActor` is for actors their owner supervises itself (the router, its order actors);
`PooledSupervised` for children of a `Supervisor` (`ChildSpec(start=lambda a: pool.spawn(...))`):
it also reports a normal stop (`ChildExited`), as `Supervised` does.

    pool = ActorPool().start()
    ref = pool.spawn(MyActor(address, supervisor))   # `started()` runs first, on a pool thread
    address.bind(ref); address.tell(message); ref.stop()
"""
from __future__ import annotations

import itertools
import logging
import threading
import uuid
from collections import deque
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Callable

import pykka

from supervisors.address import Address
from supervisors.supervisor import ChildExited, ChildFailed

log = logging.getLogger(__name__)

THREADS = 8  # enough that a few actors waiting on the sizing actor do not hold up the others
BATCH = 8  # messages (or batches) one actor runs before the thread gives another actor a turn
MAX_BATCH = 512  # told messages handed to one `on_receive_batch`
_START, _STOP = object(), object()
# The turns this thread took on by hand-off (`tell(..., inline=True)`), run once the handler it is
# in returns; None outside a pooled handler (there a hand-off is an ordinary tell).
_HANDED = threading.local()


class CrashedOn(Exception):
    """Raised by `on_receive_batch`: handling `message` raised `error`. The actor's crash is
    reported as a crash on that message, as if it had been told alone."""

    def __init__(self, message: Any, error: Exception) -> None:
        super().__init__(repr(error))
        self.message = message
        self.error = error


class PooledActor:
    """Base of an actor run by an `ActorPool`. Its hooks are Pykka's, and run on a pool thread,
    never two at once for one actor: `started` before the first message, `on_receive` for each
    message, `on_stop` when stopped, `on_failure` when a told message raised (then it is stopped)."""

    def __init__(self, address: Address, supervisor: Address | None) -> None:
        self.address = address
        self.supervisor = supervisor
        self.actor_urn = f"urn:uuid:{uuid.uuid4()}"
        self.actor_ref: PooledRef | None = None

    def started(self) -> None:
        """Rebuild state here (a failure is reported to the supervisor, like a crash)."""

    def on_receive(self, message: Any) -> Any:
        return None

    def takes_in_batch(self, message: Any) -> bool:
        """Whether told `message` may be handled together with the told messages next to it."""
        return False

    def on_receive_batch(self, messages: list[Any]) -> None:
        """Told messages that `takes_in_batch`, in the order told (one or more). A failure is
        raised as `CrashedOn(message, error)`."""
        for message in messages:
            try:
                self.on_receive(message)
            except Exception as exc:
                raise CrashedOn(message, exc) from exc

    def on_stop(self) -> None:
        """The actor was asked to stop; no message follows."""

    def on_failure(self, message: Any, exception: BaseException) -> None:
        """A told `message` raised `exception`: the actor stops; its supervisor is told."""
        self._report_crash(exception, message)

    def _report_crash(self, exc: BaseException | None, message: Any = None) -> None:
        if self.supervisor is not None:
            self.supervisor.tell(ChildFailed(self.address.name, repr(exc), self.actor_urn, message, exc))


class PooledSupervised(PooledActor):
    """A `Supervisor`'s child run on a pool: a crash is reported as `PooledActor` reports it, and
    a normal stop as `ChildExited` (a permanent child is then started again). Overrides of
    `on_stop` must call it."""

    def on_stop(self) -> None:
        if self.supervisor is not None:
            self.supervisor.tell(ChildExited(self.address.name, self.actor_urn))


class _Ask:
    __slots__ = ("message", "future")

    def __init__(self, message: Any, future: Future) -> None:
        self.message = message
        self.future = future


class PooledRef:
    """The handle of a pooled actor, as an `Address` binds it: `tell`, `ask`, `stop`."""

    hands_off = True  # `tell(..., inline=True)` (Address.tell)

    def __init__(self, pool: "ActorPool", actor: PooledActor) -> None:
        self._pool = pool
        self._actor: PooledActor | None = actor  # let go once it is dead: no cycle outlives it
        self._name = actor.address.name
        self.actor_urn = actor.actor_urn
        self._mailbox: deque[Any] = deque()
        self._lock = threading.Lock()
        self._scheduled = False
        self._alive = True
        self.stopped = threading.Event()

    @property
    def actor_inbox(self) -> "PooledRef":  # Address.mailbox_depth() reads actor_inbox.qsize()
        return self

    def qsize(self) -> int:
        return len(self._mailbox)

    def is_alive(self) -> bool:
        return self._alive

    def tell(self, message: Any, inline: bool = False) -> None:
        """Queue `message`; with `inline`, a hand-off (the module's docstring)."""
        self._post(message, inline)

    def ask(self, message: Any, block: bool = True, timeout: float | None = 5.0) -> Any:
        """The answer to `message` (with `block=False`, a `Future` of it, the message already in
        the mailbox). An idle actor (no turn under way, nothing in its mailbox) is asked on the
        asker's own thread, which would only wait meanwhile: waking a pool thread that has slept
        costs about 100 µs on a virtual machine (docs/design.md), and its answer wakes the asker.
        The turn is taken as a pool thread takes it, so still one message at a time, in order.
        Such an ask runs to its end (`timeout` bounds only a wait for a busy actor), as long as
        the handler takes; the sizing actor's never wait on a broker."""
        future: Future = Future()
        ask = _Ask(message, future)
        with self._lock:
            idle = block and self._alive and not self._scheduled and not self._mailbox
            if idle:
                self._scheduled = True  # this thread's turn: a message told meanwhile waits behind it
        if idle:
            try:
                _handing_off(self._handle, ask)
            finally:  # a KeyboardInterrupt in the asker's thread must not leave the turn taken
                self._end_turn()
            return future.result(0)
        self._post(ask)
        if not block:
            return future
        try:
            return future.result(timeout)
        except FutureTimeout:
            raise pykka.Timeout(f"{self._name} did not answer in {timeout}s") from None

    def stop(self, block: bool = True, timeout: float | None = None) -> Future | bool:
        """Stop after the messages told before; with `block`, wait for it (False: already dead)."""
        future: Future = Future()
        try:
            self._post(_Ask(_STOP, future))
        except pykka.ActorDeadError:
            return False
        if not block:
            return future
        try:
            return future.result(timeout)
        except FutureTimeout:
            return False

    def _post(self, item: Any, inline: bool = False) -> None:
        with self._lock:
            if not self._alive:
                raise pykka.ActorDeadError(f"{self._name} ({self.actor_urn}) is dead")
            self._mailbox.append(item)
            if self._scheduled:
                return
            self._scheduled = True
        handed = getattr(_HANDED, "turns", None) if inline else None
        if handed is not None:
            handed.append(self)  # this thread's to run, once its handler returns
        else:
            self._pool._ready(self)

    # -- on a pool thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        actor = self._actor
        for _ in range(BATCH):
            with self._lock:
                if not self._mailbox or not self._alive:
                    self._scheduled = False
                    return
                item = self._mailbox.popleft()
                batch = None
                if item is not _START and not isinstance(item, _Ask) and actor.takes_in_batch(item):
                    batch = [item]
                    mailbox = self._mailbox
                    while (mailbox and len(batch) < MAX_BATCH and not isinstance(mailbox[0], _Ask)
                           and mailbox[0] is not _START and actor.takes_in_batch(mailbox[0])):
                        batch.append(mailbox.popleft())
            if not (_handing_off(self._handle, item) if batch is None
                    else _handing_off(self._handle_batch, batch)):
                return
        self._end_turn()

    def _take_turn(self) -> None:
        """`_run`, on a pool thread or a thread it was handed to: a bug in the pool itself is
        logged, never lets the thread end silently."""
        try:
            self._run()
        except BaseException:
            log.exception("%s pool: running %s failed", self._pool.name, self._name)

    def _end_turn(self) -> None:
        """A turn is over: the pool runs what came meanwhile."""
        with self._lock:
            more = bool(self._mailbox) and self._alive
            self._scheduled = more
        if more:
            self._pool._ready(self)

    def _handle(self, item: Any) -> bool:
        """Run one item; False when the actor is dead after it.

        A handler's BaseException (a library's sys.exit()) is its actor's crash, as an Exception
        is: on a thread of its own it would have ended that thread and the actor with it, and let
        through to the pool's loop it would keep the actor's turn taken, its mailbox never run."""
        actor = self._actor
        if item is _START:
            try:
                actor.started()
            except BaseException as exc:  # noqa: BLE001 - a start that fails is a crash, reported
                actor._report_crash(exc)
                self._die()
                return False
            return True
        if isinstance(item, _Ask):
            if item.message is _STOP:
                try:
                    actor.on_stop()
                finally:
                    self._die()
                    item.future.set_result(True)
                return False
            try:
                item.future.set_result(actor.on_receive(item.message))
            except BaseException as exc:  # noqa: BLE001 - an asked message's failure goes back to the asker
                item.future.set_exception(exc)
            return True
        try:
            actor.on_receive(item)
        except BaseException as exc:  # noqa: BLE001 - this actor crashed; the others go on
            log.exception("%s crashed on %s", actor.address.name, type(item).__name__)
            self._die()
            actor.on_failure(item, exc)
            return False
        return True

    def _handle_batch(self, messages: list[Any]) -> bool:
        actor = self._actor
        try:
            actor.on_receive_batch(messages)
        except BaseException as exc:  # noqa: BLE001 - this actor crashed; the others go on (see _handle)
            message, error = (exc.message, exc.error) if isinstance(exc, CrashedOn) else (messages[-1], exc)
            log.error("%s crashed on %s", actor.address.name, type(message).__name__,
                      exc_info=(type(error), error, error.__traceback__))
            self._die()
            actor.on_failure(message, error)
            return False
        return True

    def _die(self) -> None:
        with self._lock:
            self._alive = False
            dropped, self._mailbox = list(self._mailbox), deque()
        for item in dropped:
            if isinstance(item, _Ask) and not item.future.done():
                if item.message is _STOP:
                    item.future.set_result(True)
                else:
                    item.future.set_exception(pykka.ActorDeadError(f"{self._name} stopped"))
        self._pool._forget(self)
        self._actor = None
        self.stopped.set()


def run_handing_off(fn: Callable[[], Any]) -> Any:
    """`fn()` on a thread of no pool (a socket reader's), with what it tells `inline` handed to
    this thread as a pooled handler's would be: those turns run here once `fn` returns."""
    return _handing_off(lambda _item: fn(), None)


def _handing_off(handle: Any, item: Any) -> bool:
    """`handle(item)`, then the turns it handed to this thread, each run here as a pool thread
    would run it (and any turns those hand off in turn)."""
    outer = getattr(_HANDED, "turns", None)
    _HANDED.turns = handed = []
    try:
        return handle(item)
    finally:
        _HANDED.turns = outer
        for ref in handed:
            ref._take_turn()


class ActorPool:
    """A fixed number of threads running every pooled actor's mailbox. Thread-safe."""

    def __init__(self, threads: int = THREADS, name: str = "orders") -> None:
        self.name = name
        self._size = threads
        self._queue: deque[PooledRef] = deque()
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._refs: set[PooledRef] = set()
        self._stopped = False
        self._ids = itertools.count()

    def start(self) -> "ActorPool":
        for i in range(self._size):
            thread = threading.Thread(target=self._work, name=f"{self.name}-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def spawn(self, actor: PooledActor, inline: bool = False) -> PooledRef:
        """Run `actor`: its `started` first, then what it is told (`inline`: its first turn a
        hand-off, see `PooledRef.tell`)."""
        ref = PooledRef(self, actor)
        actor.actor_ref = ref
        with self._cond:
            if self._stopped:
                raise pykka.ActorDeadError(f"the {self.name} pool is stopped")
            self._refs.add(ref)
        ref._post(_START, inline)
        return ref

    def running(self) -> int:
        with self._cond:
            return len(self._refs)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop every actor (each after what it was told before), then the threads."""
        with self._cond:
            refs = list(self._refs)
        stops = [ref.stop(block=False) for ref in refs]
        for future in stops:
            if isinstance(future, Future):
                try:
                    future.result(timeout)
                except FutureTimeout:
                    log.warning("%s pool: an actor did not stop within %.0fs", self.name, timeout)
                    break
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout)

    def _ready(self, ref: PooledRef) -> None:
        with self._cond:
            self._queue.append(ref)
            self._cond.notify()

    def _forget(self, ref: PooledRef) -> None:
        with self._cond:
            self._refs.discard(ref)

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopped:
                    self._cond.wait()
                if not self._queue:
                    return  # stopped, and nothing left to run
                ref = self._queue.popleft()
            ref._take_turn()
