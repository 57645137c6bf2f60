"""The supervisor actor and the base class of supervised actors."""
from __future__ import annotations

import enum
import functools
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import pykka

from supervisors.address import Address

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChildFailed:
    """Told to a supervisor by a child that crashed (in a told message or in `on_start`).

    `message` is the told message the child was handling when it crashed (None for a crash in
    `on_start`); `exception` what it raised. With them a supervisor can tell a child that keeps
    failing from a message that keeps failing it."""

    child_id: str
    error: str
    actor_urn: str = ""
    message: Any = None
    exception: BaseException | None = field(default=None, compare=False)


@dataclass(frozen=True)
class ChildExited:
    """Told to a supervisor by a child that stopped normally (not crashed): a permanent child is
    restarted, the others are forgotten."""

    child_id: str
    actor_urn: str


@dataclass(frozen=True)
class Escalated:
    """Told to the parent (or to `on_escalate`) when a supervisor gives up on a child."""

    supervisor: str
    child_id: str
    error: str


class Restart(enum.Enum):
    """When a child is started again, as in OTP."""

    PERMANENT = "permanent"  # always: after a crash, and after it stopped normally
    TRANSIENT = "transient"  # after a crash only: a child that finished its work stays stopped
    TEMPORARY = "temporary"  # never: a crash is logged and the child forgotten


@dataclass(frozen=True)
class ChildSpec:
    """How to start one child, as in OTP: `start(address)` returns a started `ActorRef`.

        ChildSpec("sizing", lambda a: pool.spawn(SizingActor(a, top, ...)), kind="sizing", address=sizing)
        ChildSpec("report", lambda a: ReportActor.start(a, top), restart=Restart.TRANSIENT)
    """

    child_id: str
    start: Callable[[Address], pykka.ActorRef]
    kind: str = "actor"  # for metrics: feed, order, sizing, rate_limiter, ...
    restart: Restart = Restart.PERMANENT
    address: Address | None = None  # give one when siblings must know it before the start


@dataclass(frozen=True)
class Child:
    """One line of `Supervisor.which_children()`."""

    child_id: str
    kind: str
    restart: Restart
    running: bool


class Supervised(pykka.ThreadingActor):
    """Base of every supervised actor.

    Runs in its own thread. An exception in a *told* message stops the actor (Pykka's rule); this
    class then tells its supervisor which message it crashed on, and the supervisor starts a fresh
    incarnation that rebuilds its state from storage. An exception in an *asked* message goes back
    to the asker and the actor lives on. `on_start` failures are reported the same way (Pykka does
    not call `on_failure` for them), and so is a normal stop (`ChildExited`). Threads are daemons:
    shutdown is explicit (`Supervisor.on_stop`), and a bug must never keep the process from exiting.

    Periodic and delayed work goes through the copier's one `Timers` service, with the actor's
    `actor_ref` as the timer's owner, so a stopped incarnation's timers die with it.

    Pykka's `on_failure` does not say which message failed, so every subclass's `on_receive` is
    wrapped (once, when the class is made) to remember the message whose handling raised.

        class Poller(Supervised):
            def __init__(self, address: Address, supervisor: Address | None, timers: Timers) -> None:
                super().__init__(address, supervisor)    # runs in the creator's thread
                self.timers = timers

            def started(self) -> None:                   # in the actor's thread: rebuild state here
                self.timers.every(5.0, self.address, Poll(), owner=self.actor_ref)

            def on_receive(self, message: Any) -> Any:
                if isinstance(message, Poll):
                    ...

        ChildSpec("poller", lambda a: Poller.start(a, top, timers), kind="poller")
    """

    use_daemon_thread = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        handler = cls.__dict__.get("on_receive")
        if handler is not None and not getattr(handler, "remembers_failed_message", False):
            cls.on_receive = _remembering_failures(handler)  # type: ignore[method-assign]

    def __init__(self, address: Address, supervisor: Address | None) -> None:
        super().__init__()
        self.address = address
        self.supervisor = supervisor
        self._failed_on: tuple[Any, BaseException] | None = None  # (message, what its handling raised)

    def on_stop(self) -> None:
        """Runs in the actor's thread when it stops normally. Overrides must call it."""
        if self.supervisor is not None:
            self.supervisor.tell(ChildExited(self.address.name, self.actor_urn))

    def on_start(self) -> None:
        try:
            self.started()
        except Exception as exc:
            self._report_crash(exc)
            raise

    def started(self) -> None:
        """Override: runs in the actor's thread before its first message (rebuild state here)."""

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        failed = self._failed_on
        # the same exception object: the message in hand, not one an earlier ask failed on
        message = failed[0] if failed is not None and failed[1] is exception_value else None
        self._report_crash(exception_value, message)

    def _report_crash(self, exc: BaseException | None, message: Any = None) -> None:
        if self.supervisor is not None:
            self.supervisor.tell(ChildFailed(self.address.name, repr(exc), self.actor_urn, message, exc))


def _remembering_failures(handler: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    @functools.wraps(handler)
    def on_receive(self: Supervised, message: Any) -> Any:
        try:
            return handler(self, message)
        except Exception as exc:
            self._failed_on = (message, exc)
            raise

    on_receive.remembers_failed_message = True  # type: ignore[attr-defined]
    return on_receive


class Supervisor(Supervised):
    """A one-for-one supervisor, as OTP's: children start from `ChildSpec`s in order, each is
    restarted by its `Restart` type, and restart intensity is the supervisor's own: more than
    `max_restarts` restarts of any of its children within `period` seconds and it gives up.
    Giving up stops every child, the last started first, then escalates: to its own supervisor if
    it has one (which gives up in turn), else to `on_escalate` (the application's clean stop).

    Children can also be started and stopped while it runs (`start_child`, `terminate_child`).
    Call these on the supervisor's thread, through its proxy:

        ref = Supervisor.start("copier", specs, address=top, max_restarts=5, period=30.0)
        top.bind(ref)
        addresses = ref.proxy().start_children().get()     # in the order of `specs`
        ref.proxy().start_child(spec).get()                # one more, while it runs

    Input never ends the process: when a child crashes on a told message, `on_dead_letter(child_id,
    message, exception)` may park that message (store it, alert) and answer True; the child is
    restarted and the crash is not charged to the restart intensity, since the message that
    caused it is gone. It answers False for what is not input (timers, the child's own messages)
    or a failure that is not the message's fault (storage); those crashes count as before.
    """

    def __init__(self, name: str, children: list[ChildSpec], *, address: Address | None = None,
                 max_restarts: int = 5, period: float = 30.0, supervisor: Address | None = None,
                 on_restart: Callable[[str, str], None] | None = None,
                 on_escalate: Callable[[Escalated], None] | None = None,
                 on_dead_letter: Callable[[str, Any, BaseException | None], bool] | None = None) -> None:
        super().__init__(address or Address(name), supervisor)
        self.name = name
        self.specs: dict[str, ChildSpec] = {}
        self.order: list[str] = []  # start order; stops run in reverse
        self.addresses: dict[str, Address] = {}
        for spec in children:
            self._add(spec)
        self.max_restarts = max_restarts
        self.period = period
        self.on_restart = on_restart
        self.on_escalate = on_escalate
        self.on_dead_letter = on_dead_letter
        self._restarts: deque[float] = deque()  # of every child: the intensity is the supervisor's
        self._gave_up = threading.Event()

    def _add(self, spec: ChildSpec) -> Address:
        self.specs[spec.child_id] = spec
        self.order.append(spec.child_id)
        address = self.addresses[spec.child_id] = spec.address or Address(spec.child_id)
        return address

    def _forget(self, child_id: str) -> None:
        self.specs.pop(child_id, None)
        self.addresses.pop(child_id, None)
        if child_id in self.order:
            self.order.remove(child_id)

    # Children are started by `start_children`, called by the creator after `start()`, so the
    # supervisor's own address exists before any child can report to it.
    def start_children(self) -> dict[str, Address]:
        for child_id in list(self.order):
            self._start(child_id)
        return dict(self.addresses)

    def start_child(self, spec: ChildSpec) -> Address:
        """Start a child now, or find it: a child already running under `spec.child_id` is not
        started twice, its address is returned."""
        address = self.addresses.get(spec.child_id)
        if address is not None and address.ref is not None and address.ref.is_alive():
            return address
        if address is None:
            address = self._add(spec)
        self._start(spec.child_id)
        return address

    def terminate_child(self, child_id: str) -> bool:
        """Stop a child on purpose and forget it: nothing restarts it. False when there is none."""
        address = self.addresses.get(child_id)
        if address is None:
            return False
        self._forget(child_id)
        ref = address.ref
        address.bind(None)  # its later ChildExited names an incarnation no longer known: ignored
        if ref is not None:
            self._stop_ref(child_id, ref)
        return True

    def which_children(self) -> list[Child]:
        return [Child(child_id, self.specs[child_id].kind, self.specs[child_id].restart,
                      (ref := self.addresses[child_id].ref) is not None and ref.is_alive())
                for child_id in self.order]

    def _start(self, child_id: str) -> None:
        spec = self.specs[child_id]
        address = self.addresses[child_id]
        ref = spec.start(address)
        address.bind(ref)

    def on_receive(self, message: Any) -> Any:
        if self._gave_up.is_set():
            return None  # its children are stopped; what they report now changes nothing
        if isinstance(message, ChildFailed):
            self._child_failed(message)
        elif isinstance(message, ChildExited):
            self._child_exited(message)
        elif isinstance(message, Escalated):
            self._escalate(message.child_id, message.error)
        return None

    def _current(self, child_id: str, actor_urn: str) -> tuple[ChildSpec, Address] | None:
        """The child's spec and address, unless the report is about an incarnation already replaced."""
        spec = self.specs.get(child_id)
        address = self.addresses.get(child_id)
        if spec is None or address is None:
            return None
        if address.ref is not None and actor_urn and address.ref.actor_urn != actor_urn:
            return None
        return spec, address

    def _child_exited(self, exited: ChildExited) -> None:
        current = self._current(exited.child_id, exited.actor_urn)
        if current is None or current[1].ref is None:
            return
        spec, address = current
        if spec.restart is not Restart.PERMANENT:
            log.info("%s: child %s finished", self.name, exited.child_id)
            self._forget(exited.child_id)
            return
        address.bind(None)
        log.warning("%s: child %s stopped; restarting it (permanent)", self.name, exited.child_id)
        self._restart(spec, "stopped")

    def _child_failed(self, failure: ChildFailed) -> None:
        current = self._current(failure.child_id, failure.actor_urn)
        if current is None:
            return
        spec, address = current
        address.bind(None)  # park messages until the new incarnation is up
        log.error("%s: child %s crashed: %s", self.name, failure.child_id, failure.error)
        if spec.restart is Restart.TEMPORARY:
            self._forget(failure.child_id)
            return
        self._restart(spec, failure.error, charged=not self._parked(failure))

    def _restart(self, spec: ChildSpec, error: str, charged: bool = True) -> None:
        if charged:
            now = time.monotonic()
            while self._restarts and now - self._restarts[0] > self.period:
                self._restarts.popleft()
            if len(self._restarts) >= self.max_restarts:
                self._escalate(spec.child_id, error)
                return
            self._restarts.append(now)
        if self.on_restart:
            self.on_restart(spec.kind, error)
        try:
            self._start(spec.child_id)
            log.warning("%s: restarted %s", self.name, spec.child_id)
        except Exception as exc:  # a child that cannot even start counts as another crash
            self._child_failed(ChildFailed(spec.child_id, repr(exc)))

    def _parked(self, failure: ChildFailed) -> bool:
        """True when `on_dead_letter` parked the message the child crashed on."""
        if failure.message is None or self.on_dead_letter is None:
            return False
        try:
            parked = self.on_dead_letter(failure.child_id, failure.message, failure.exception)
        except Exception as exc:  # noqa: BLE001 - parking failed (storage?): an ordinary crash then
            log.error("%s: could not park the message %s crashed on: %r", self.name, failure.child_id, exc)
            return False
        if parked:
            log.warning("%s: the message %s crashed on is parked as a dead letter", self.name, failure.child_id)
        return bool(parked)

    def _escalate(self, child_id: str, error: str) -> None:
        log.critical("%s: more than %d restarts in %.0fs, the last of %s (%s); giving up",
                     self.name, self.max_restarts, self.period, child_id, error)
        self._gave_up.set()
        self._stop_children()  # before the report: nothing keeps running on the supervisor's behalf
        escalation = Escalated(self.name, child_id, error)
        if self.supervisor is not None:
            self.supervisor.tell(escalation)
        elif self.on_escalate is not None:
            self.on_escalate(escalation)

    def on_stop(self) -> None:
        super().on_stop()
        self._stop_children()

    def _stop_children(self) -> None:
        """Stop children in reverse start order (producers were started last, stop first)."""
        for child_id in reversed(self.order):
            ref = self.addresses[child_id].ref
            if ref is not None:
                self._stop_ref(child_id, ref)

    def _stop_ref(self, child_id: str, ref: pykka.ActorRef) -> None:
        try:
            ref.stop(timeout=5)
        except pykka.ActorDeadError:
            pass
        except pykka.Timeout:
            log.warning("%s: %s did not stop within 5s", self.name, child_id)
