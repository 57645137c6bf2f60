"""The kill-switch actor: while the switch is on, no new follower orders are made and every
open copy is cancelled; optionally each follower's broker kill switch is activated too.

The state lives in storage (`store.settings.kill_switch()`), so it survives restarts and an operator
command in another process turns it on by writing it; this actor notices within `poll_seconds`.
Risk rules turn it on through `engage`, and so do repeated broker failures (`after_failures`
placements dead-lettered within `failure_window` seconds, when configured). Turning it off is
always a deliberate command.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any, Callable

from actors.messages import BrokerFailure, CancelCopies, EngageKillSwitch, KillSwitchStatus, PollKillSwitch
from observability import metrics
from storage import Store
from supervisors import Address, Supervised, Timers
from trading.kill_switch import KillSwitchState

log = logging.getLogger(__name__)


class KillSwitchActor(Supervised):
    def __init__(self, address: Address, supervisor: Address | None, store: Store, router: Address,
                 alert: Callable[[str, str, str], None], timers: Timers,
                 broker_switches: list[Callable[[bool], Any]] | None = None,
                 on_change: Callable[[bool], None] = lambda on: None, poll_seconds: float = 0.5,
                 after_failures: int = 0, failure_window: float = 60.0,
                 on_engaged: Callable[[KillSwitchState], None] = lambda state: None) -> None:
        """`on_engaged`: this copier turned the switch on itself (not an operator through storage);
        a follower shard tells the others through it."""
        super().__init__(address, supervisor)
        self.on_engaged = on_engaged
        self.after_failures, self.failure_window = after_failures, failure_window
        self.failures: deque[float] = deque()
        self.store, self.router, self.alert, self.timers = store, router, alert, timers
        self.on_change = on_change
        self.broker_switches = broker_switches or []
        self.poll_seconds = poll_seconds
        self.state = KillSwitchState()

    def started(self) -> None:
        self._apply(self.store.settings.kill_switch(), initial=True)
        self.timers.every(self.poll_seconds, self.address, PollKillSwitch(), owner=self.actor_ref)

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, PollKillSwitch):
            self._apply(self.store.settings.kill_switch())
        elif isinstance(message, EngageKillSwitch):
            if not self.state.on:
                self._engage(message.reason, message.by)
        elif isinstance(message, BrokerFailure):
            self._broker_failure(message.follower, message.reason)
        elif isinstance(message, KillSwitchStatus):
            return self.state
        return None

    def _broker_failure(self, follower: str, reason: str) -> None:
        if self.after_failures <= 0 or self.state.on:
            return
        now = time.monotonic()
        self.failures.append(now)
        while self.failures and now - self.failures[0] > self.failure_window:
            self.failures.popleft()
        if len(self.failures) >= self.after_failures:
            self._engage(f"{len(self.failures)} broker failures within {self.failure_window:.0f}s (last: {follower}, "
                         f"{reason})", "broker_failures")

    def _engage(self, reason: str, by: str) -> None:
        state = self.store.settings.set_kill_switch(True, reason, by)
        self._apply(state)
        self.on_engaged(state)

    def _apply(self, state: KillSwitchState, initial: bool = False) -> None:
        changed = state.on != self.state.on
        self.state = state
        self.on_change(state.on)  # order actors read it before every new copy
        metrics.KILL_SWITCH.set(1 if state.on else 0)
        if state.on and (changed or initial):
            self.alert("critical", "kill_switch", f"kill switch ON ({state.by}): {state.reason}; "
                       "no new copies, open copies are being cancelled")
            self.router.tell(CancelCopies("kill_switch"))
            for activate in self.broker_switches:
                threading.Thread(target=self._broker_switch, args=(activate,), daemon=True).start()
        elif changed and not initial:
            log.warning("kill switch turned off (%s); copying resumes", state.reason or "operator")

    @staticmethod
    def _broker_switch(activate: Callable[[bool], Any]) -> None:
        answer = activate(True)
        if not getattr(answer, "ok", False):
            log.error("broker kill switch not activated: %s", getattr(answer, "error", answer))


def report_broker_failure(address: Address, follower: str, reason: str) -> None:
    address.tell(BrokerFailure(follower, reason))


def engage(address: Address, reason: str, by: str) -> None:
    """Turn the switch on from inside the copier (risk triggers)."""
    address.tell(EngageKillSwitch(reason, by))
