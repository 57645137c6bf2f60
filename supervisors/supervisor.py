"""The supervisor actor and the base class of supervised actors."""
from __future__ import annotations

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
class Escalated:
    """Told to the parent (or to `on_escalate`) when a supervisor gives up on a child."""

    supervisor: str
    child_id: str
    error: str


@dataclass
class ChildSpec:
    """How to start one child, as in OTP: `start(address)` returns a started `ActorRef`."""

    child_id: str
    start: Callable[[Address], pykka.ActorRef]
    kind: str = "actor"  # for metrics: feed, order, sizing, rate_limiter, ...
    restart: str = "permanent"  # permanent: always restarted; temporary: never
    address: Address | None = None  # give one when siblings must know it before the start


class Supervised(pykka.ThreadingActor):
    """Base of every supervised actor.

    Runs in its own thread. An exception in a *told* message stops the actor (Pykka's rule); this
    class then tells its supervisor which message it crashed on, and the supervisor starts a fresh
    incarnation that rebuilds its state from storage. An exception in an *asked* message goes back
    to the asker and the actor lives on. `on_start` failures are reported the same way (Pykka does
    not call `on_failure` for them). Threads are daemons: shutdown is explicit
    (`Supervisor.on_stop`), and a bug must never keep the process from exiting.

    Pykka's `on_failure` does not say which message failed, so every subclass's `on_receive` is
    wrapped (once, when the class is made) to remember the message whose handling raised.
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
        self._timers_halt = threading.Event()
        self._failed_on: tuple[Any, BaseException] | None = None  # (message, what its handling raised)

    def every(self, seconds: float, message: Any, name: str) -> None:
        """Tell this actor `message` every `seconds` until it stops or crashes. A timer thread does
        the waiting, so the actor never sleeps with messages in its inbox."""
        def run() -> None:
            while not self._timers_halt.wait(seconds):
                self.address.tell(message)

        threading.Thread(target=run, name=name, daemon=True).start()

    def on_stop(self) -> None:
        """Runs in the actor's thread when it stops. Overrides must call it (it ends the timers)."""
        self._timers_halt.set()

    def on_start(self) -> None:
        try:
            self.started()
        except Exception as exc:
            self._report_crash(exc)
            raise

    def started(self) -> None:
        """Override: runs in the actor's thread before its first message (rebuild state here)."""

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        self._timers_halt.set()
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
    """One-for-one supervisor with restart intensity (`max_restarts` within `period` seconds).

    Past that intensity it stops the child and escalates: to its own supervisor if it has one,
    else to `on_escalate` (the application's clean-stop hook).

    Input never ends the process: when a child crashes on a told message, `on_dead_letter(child_id,
    message, exception)` may park that message (store it, alert) and answer True; the child is
    restarted and the crash is not charged to its restart intensity, since the message that
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
        self.specs = {spec.child_id: spec for spec in children}
        self.order = [spec.child_id for spec in children]
        self.addresses: dict[str, Address] = {spec.child_id: spec.address or Address(spec.child_id)
                                              for spec in children}
        self.max_restarts = max_restarts
        self.period = period
        self.on_restart = on_restart
        self.on_escalate = on_escalate
        self.on_dead_letter = on_dead_letter
        self._restarts: dict[str, deque[float]] = {}
        self._gave_up = threading.Event()

    # Children are started by `start_children`, called by the creator after `start()`, so the
    # supervisor's own address exists before any child can report to it.
    def start_children(self) -> dict[str, Address]:
        for child_id in self.order:
            self._start(child_id)
        return self.addresses

    def _start(self, child_id: str) -> None:
        spec = self.specs[child_id]
        address = self.addresses[child_id]
        ref = spec.start(address)
        address.bind(ref)

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, ChildFailed):
            self._child_failed(message)
        elif isinstance(message, Escalated):
            self._escalate(message.child_id, message.error)
        return None

    def _child_failed(self, failure: ChildFailed) -> None:
        spec = self.specs.get(failure.child_id)
        address = self.addresses.get(failure.child_id)
        if spec is None or address is None:
            return
        if address.ref is not None and failure.actor_urn and address.ref.actor_urn != failure.actor_urn:
            return  # a report from an incarnation that was already replaced
        address.bind(None)  # park messages until the new incarnation is up
        log.error("%s: child %s crashed: %s", self.name, failure.child_id, failure.error)
        if spec.restart == "temporary":
            return
        if not self._parked(failure):
            window = self._restarts.setdefault(failure.child_id, deque())
            now = time.monotonic()
            while window and now - window[0] > self.period:
                window.popleft()
            if len(window) >= self.max_restarts:
                self._escalate(failure.child_id, failure.error)
                return
            window.append(now)
        if self.on_restart:
            self.on_restart(spec.kind, failure.error)
        try:
            self._start(failure.child_id)
            log.warning("%s: restarted %s", self.name, failure.child_id)
        except Exception as exc:  # a child that cannot even start counts as another crash
            self._child_failed(ChildFailed(failure.child_id, repr(exc)))

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
        log.critical("%s: %s crashed more than %d times in %.0fs (last: %s); giving up",
                     self.name, child_id, self.max_restarts, self.period, error)
        self._gave_up.set()
        escalation = Escalated(self.name, child_id, error)
        if self.supervisor is not None:
            self.supervisor.tell(escalation)
        elif self.on_escalate is not None:
            self.on_escalate(escalation)

    def on_stop(self) -> None:
        """Stop children in reverse start order (producers were started last, stop first)."""
        super().on_stop()
        for child_id in reversed(self.order):
            ref = self.addresses[child_id].ref
            if ref is not None:
                try:
                    ref.stop(timeout=5)
                except pykka.ActorDeadError:
                    pass
                except pykka.Timeout:
                    log.warning("%s: %s did not stop within 5s", self.name, child_id)
