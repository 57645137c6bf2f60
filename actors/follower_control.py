"""The follower control actor: operators' commands for the running copier, carried out in it.

`run.py follower pause|resume|set|reset|add|remove`, `run.py reload` and `run.py square-off`, run in
another process, queue a request in storage (storage/control_requests.py); SIGHUP queues a
reload the same way. This actor takes the requests one at a time, oldest first, carries each out
and answers it there. Every change is stored first, with who asked and when (store.followers),
then put in force (the sizing actor, the wiring), and only then answered: an operator told "f1
paused" can rely on no new copy for f1 from then on.

Adding and removing followers is the wiring's (copier/roster.py, behind `FollowerWiring`): a
removal cancels the follower's open copies and waits for them to close before it stops the
follower's feed and rate limiter, so its answer, like a square-off's (actors/square_off.py),
comes later: this actor keeps the request and answers it once the work is done.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol

import pykka

from actors.messages import (CatchUpCopy, ChangeSizing, PauseCopying, PollControl, ResumeCopying, StartSquareOff)
from actors.sizing_control import FOLLOWER_PAUSED
from observability import metrics
from storage import UNAVAILABLE_ERRORS, Store
from storage.control_requests import ControlRequest
from storage.followers import FollowerState
from storage.square_offs import FINISHED
from supervisors import Address, Supervised, Timers

log = logging.getLogger(__name__)

REQUEST_TTL_SECONDS = 30.0  # a request no copier took within this long is expired, never carried out late
REMOVAL_WAIT_SECONDS = 60.0  # a removal's answer waits this long for the follower's copies to close
SQUARE_OFF_WAIT_SECONDS = 300.0


class FollowerWiring(Protocol):
    """What the copier's wiring does for this actor (copier/roster.py)."""

    def followers(self) -> list[str]:
        """The followers copied to now."""

    def sizing_rule(self, follower: str, changes: dict[str, Any], new: Iterable[str] = ()) -> Any:
        """The follower's config sizing with `changes` over it, validated as the config is, each of
        the `new` keys one its strategy reads (a ValueError names the key)."""

    def use_rule(self, follower: str, rule: Any) -> None:
        """From now on `rule` is the follower's sizing (the reconciler's and a restarted sizing actor's too)."""

    def reload(self, by: str, action: str, follower: str | None) -> tuple[bool, str, list[str]]:
        """Add and remove followers as the config file says now (`action` reload), or only
        `follower` (add, remove): (ok, what was done, followers whose removal is under way)."""

    def finished_removals(self) -> dict[str, str]:
        """Removals finished since the last call: follower -> what was done."""


class Refused(Exception):
    """A request that cannot be carried out; the message says why, for the operator."""


def pause_detail(state: FollowerState) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(state.paused_at))
    return f"paused by {state.paused_by} at {when}" + (f": {state.reason}" if state.reason else "")


@dataclass
class _Later:
    """A request answered once its work is done (a removal, a square-off)."""

    request: ControlRequest
    deadline: float  # monotonic
    removals: set[str] = field(default_factory=set)
    done: list[str] = field(default_factory=list)
    square_off: bool = False


class FollowerControlActor(Supervised):
    def __init__(self, address: Address, supervisor: Address | None, store: Store, wiring: FollowerWiring,
                 sizing: Address, router: Address, square_off: Address, timers: Timers, *,
                 alert: Callable[[str, str, str], None] = lambda level, key, message: None,
                 poll_seconds: float = 0.2) -> None:
        super().__init__(address, supervisor)
        self.store, self.wiring, self.sizing, self.router, self.square_off = store, wiring, sizing, router, square_off
        self.timers, self.alert, self.poll_seconds = timers, alert, poll_seconds
        self.later: dict[int, _Later] = {}

    def started(self) -> None:
        states = self.store.followers.states()
        for follower in self.wiring.followers():
            metrics.FOLLOWER_PAUSED.labels(follower).set(1 if states.get(follower, FollowerState(follower)).paused else 0)
        self.timers.every(self.poll_seconds, self.address, PollControl(), owner=self.actor_ref)

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, PollControl) and not self.store.down:
            try:
                self._finish_later()
                request = self.store.requests.take(REQUEST_TTL_SECONDS)
                while request is not None:
                    self._carry_out(request)
                    request = self.store.requests.take(REQUEST_TTL_SECONDS)
            except UNAVAILABLE_ERRORS as exc:  # storage busy or failing: the next poll tries again
                log.warning("operator requests not taken now: %s", exc)
        return None

    def _carry_out(self, request: ControlRequest) -> None:
        command = request.command
        action = command.get("action", "")
        handler = {"pause": self._pause, "resume": self._resume, "set": self._set, "reset": self._set,
                   "reload": self._reload, "add": self._reload, "remove": self._reload,
                   "square-off": self._square_off}.get(action)
        log.info("operator request %d from %s: %s", request.id, request.by, command)
        try:
            if handler is None:
                raise Refused(f"unknown request {action!r}")
            answer = handler(request, command)
        except Refused as exc:
            answer = (False, str(exc))
        if answer is not None:
            self._answer(request, *answer)

    def _answer(self, request: ControlRequest, ok: bool, text: str) -> None:
        self.store.requests.answer(request.id, ok, text)
        (log.info if ok else log.warning)("operator request %d (%s): %s", request.id, request.by, text)

    def _follower(self, command: dict[str, Any]) -> str:
        follower = str(command.get("follower") or "")
        running = self.wiring.followers()
        if follower not in running:
            raise Refused(f"{follower!r} is not a follower of the running copier (followers: {', '.join(running)})")
        return follower

    def _ask_sizing(self, message: Any) -> None:
        """Put a stored change in force. Should sizing be restarting, its next incarnation reads
        the change from storage and the wiring, so the change holds either way."""
        try:
            self.sizing.ask(message, timeout=5.0)
        except (pykka.ActorDeadError, pykka.Timeout) as exc:
            log.warning("sizing did not take %s now (%s); it starts from storage", type(message).__name__, exc)

    # -- pause, resume, sizing -------------------------------------------------------------------------
    def _pause(self, request: ControlRequest, command: dict[str, Any]) -> tuple[bool, str]:
        follower = self._follower(command)
        return True, self.pause(follower, str(command.get("reason") or ""), request.by)

    def pause(self, follower: str, reason: str, by: str) -> str:
        before = self.store.followers.state(follower)
        if before.paused:
            return f"{follower} is already {pause_detail(before)}"
        state = self.store.followers.pause(follower, reason, by)
        self._ask_sizing(PauseCopying(follower, pause_detail(state)))
        metrics.FOLLOWER_PAUSED.labels(follower).set(1)
        return (f"{follower} paused: each new leader order is recorded as a skip ({FOLLOWER_PAUSED}); "
                "copies already placed go on following the leader")

    def _resume(self, request: ControlRequest, command: dict[str, Any]) -> tuple[bool, str]:
        follower = self._follower(command)
        catch_up = bool(command.get("catch_up"))
        was = self.store.followers.state(follower)
        if was.paused:  # (a resume of a follower not paused changes nothing: no audit line)
            self.store.followers.resume(follower, request.by, "with catch-up" if catch_up else "")
            self._ask_sizing(ResumeCopying(follower))
            metrics.FOLLOWER_PAUSED.labels(follower).set(0)
        text = f"{follower} resumed: new leader orders are copied to it" if was.paused else f"{follower} was not paused"
        if not catch_up:
            return True, text + ("; the orders placed while it was paused are not (use --catch-up for those still "
                                 "open)" if was.paused else "")
        orders = self.store.followers.open_orders_skipped_while_paused(follower, FOLLOWER_PAUSED)
        for leader_order_id in orders:
            self.router.tell(CatchUpCopy(leader_order_id, follower))
        self.store.followers.record(follower, "catch-up", f"{len(orders)} still-open leader orders: "
                                    f"{', '.join(orders) or 'none'}", request.by)
        return True, (f"{text}; catching up {len(orders)} still-open leader order(s) skipped while it was paused"
                      + (f": {', '.join(orders)}" if orders else ""))

    def _set(self, request: ControlRequest, command: dict[str, Any]) -> tuple[bool, str]:
        follower = self._follower(command)
        changes = dict(command.get("changes") or {}) if command["action"] == "set" else {}
        merged = {**self.store.followers.state(follower).sizing, **changes} if changes else {}
        try:
            rule = self.wiring.sizing_rule(follower, merged, changes)
        except ValueError as exc:
            raise Refused(str(exc)) from None
        what = ", ".join(f"{key}={value}" for key, value in changes.items()) or "the config's sizing"
        self.store.followers.set_sizing(follower, merged, request.by, what)
        self.wiring.use_rule(follower, rule)
        self._ask_sizing(ChangeSizing(follower, rule))
        return True, (f"{follower}: sizing now {describe_rule(rule)}, for the leader orders seen from now on "
                      "(copies already placed keep their size until the leader changes them)")

    # -- followers added and removed -------------------------------------------------------------------
    def _reload(self, request: ControlRequest, command: dict[str, Any]) -> tuple[bool, str] | None:
        action = command["action"]
        follower = command.get("follower")
        ok, text, removing = self.wiring.reload(request.by, action, follower)
        if not removing:
            return ok, text
        self.later[request.id] = _Later(request, time.monotonic() + REMOVAL_WAIT_SECONDS, set(removing), [text])
        return None

    # -- square-off ------------------------------------------------------------------------------------
    def _square_off(self, request: ControlRequest, command: dict[str, Any]) -> None:
        followers = self.wiring.followers() if command.get("all") else [self._follower({"follower": f})
                                                                      for f in command.get("followers") or []]
        if not followers:
            raise Refused("name the followers to square off, or --all")
        segments = tuple(str(s).upper() for s in command.get("segments") or ())
        for follower in followers:
            self.pause(follower, "square-off", request.by)
            run = self.store.square_offs.start(request.id, follower, segments, request.by)
            self.square_off.tell(StartSquareOff(run.id))
        self.later[request.id] = _Later(request, time.monotonic() + SQUARE_OFF_WAIT_SECONDS, square_off=True)
        return None

    # -- answers given later ---------------------------------------------------------------------------
    def _finish_later(self) -> None:
        removed = self.wiring.finished_removals()  # (it also drives removals nobody waits for any more)
        now = time.monotonic()
        for request_id, waiting in list(self.later.items()):
            if waiting.square_off:
                runs = self.store.square_offs.of_request(request_id)
                if runs and all(run.phase in FINISHED for run in runs):
                    del self.later[request_id]
                    self._answer(waiting.request, all(run.phase == "done" for run in runs),
                                 "\n".join(run.report for run in runs))
                elif now > waiting.deadline:
                    del self.later[request_id]
                    self._answer(waiting.request, False, "square-off still under way; see `run.py follower history`")
                continue
            for follower in list(waiting.removals):
                if follower in removed:
                    waiting.removals.discard(follower)
                    waiting.done.append(removed[follower])
            if not waiting.removals:
                del self.later[request_id]
                self._answer(waiting.request, True, "; ".join(waiting.done))
            elif now > waiting.deadline:
                del self.later[request_id]
                self._answer(waiting.request, False, "; ".join(waiting.done) + f"; {', '.join(sorted(waiting.removals))}: "
                             "copies still open: it receives no new copies, and its feed and rate limiter stop "
                             "once they close")


def describe_rule(rule: Any) -> str:
    """A sizing rule in the config's words: `fixed_ratio ratio 0.5`."""
    strategy = getattr(rule, "strategy", "")
    keys = {"fixed_ratio": ("ratio",), "fixed_lots": ("lots",), "risk_based": ("risk_per_trade", "stop_loss_pct"),
            "capital_proportional": ()}.get(strategy, ())
    parts = [strategy, *(f"{key} {getattr(rule, key)}" for key in keys)]
    if getattr(rule, "max_quantity", None) is not None:
        parts.append(f"max_quantity {rule.max_quantity}")
    if getattr(rule, "round_up_to_one_lot", False):
        parts.append("round_up_to_one_lot")
    return " ".join(parts)
