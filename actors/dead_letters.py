"""Parking: a message that crashed the actor handling it becomes a dead letter (stored with the
message and the error, alerted, counted) instead of being lost with the crashed actor's inbox or
tried again forever.

Two places park:
- the copier's supervisor (`park_input` is its `on_dead_letter`): a static child crashed on a
  message from outside (a socket frame, an inbox event being routed). Parked at once: a frame
  never comes back, and a parked event is done, so it is not routed again.
- the router, for its order actors (`park_event`): after every restart the inbox replays the
  event that crashed the actor, so the router parks an event once it has crashed its order
  actor a few times, and the actor goes on with the order's next events.

A crash because something the actor needed was unavailable (storage failing, another actor
restarting) is never the message's fault: it is not parked, the event stays pending and the crash
counts as a crash. `run.py dlq list` shows parked messages; `dlq retry` routes a parked event
again.
"""
from __future__ import annotations

import json
from typing import Any, Callable

import pykka

from actors.feed import SocketFrame
from actors.messages import LEADER, OrderUpdateReceived
from observability import metrics
from observability.logs import redact
from storage import UNAVAILABLE_ERRORS, Store
from storage.inbox import InboxEvent
from trading.orders import update_to_dict

MAX_PAYLOAD = 2000  # characters of the parked message kept with its dead letter
Alert = Callable[[str, str, str], Any]


_UNAVAILABLE = (*UNAVAILABLE_ERRORS, pykka.ActorDeadError, pykka.Timeout)


def is_unavailability(exc: BaseException | None) -> bool:
    """The crash came from storage or another actor being unavailable (directly, or as the cause
    it was raised from, as in "sizing unavailable"), not from the message."""
    for _ in range(10):
        if exc is None:
            return False
        if isinstance(exc, _UNAVAILABLE):
            return True
        exc = exc.__cause__
    return False


def _error(exc: BaseException | None) -> tuple[str, str]:
    """(the exception's type, its message) with secrets masked and bounded."""
    if exc is None:
        return "Unknown", "no exception recorded"
    return type(exc).__name__, redact(str(exc))[:300]


def park_event(store: Store, alert: Alert, kind: str, received: OrderUpdateReceived, leader_order_id: str,
               exc: BaseException | None, crashes: int, note: str = "") -> int:
    """Park inbox event `received`, which crashed its `kind` actor `crashes` times; returns the
    dead letter's id. The event is marked done in the same transaction, with an outcome that
    says why. `note`: what else the operator should know, appended to the alert."""
    code, text = _error(exc)
    times = "once" if crashes == 1 else f"{crashes} times"
    reason = f"crashed the {kind} actor {times}: {code}: {text}"
    update = received.update
    letter_id = store.dead_letters.park_event(
        received.event_id, f"dead_letter: {code}: {text}"[:250], leader_order_id=leader_order_id,
        follower=received.account, correlation_id=update.correlation_id or "", error_code=code, reason=reason,
        payload=redact(json.dumps(update_to_dict(update), default=str))[:MAX_PAYLOAD])
    whose = (f"leader order {update.order_id}" if received.account == LEADER
             else f"{received.account} order {update.order_id}" + (f" of leader order {leader_order_id}"
                                                                    if leader_order_id else ""))
    _announce(store, alert, kind, letter_id, f"inbox event {received.event_id} ({whose}) {reason}{note}")
    return letter_id


def park_unreadable(store: Store, alert: Alert, event: InboxEvent, exc: BaseException) -> int:
    """Park a stored inbox event that cannot be decoded (stored in a format this version does not
    read): routing it would crash the router on every sweep."""
    code, text = _error(exc)
    reason = f"cannot be read back from storage: {code}: {text}"
    letter_id = store.dead_letters.park_event(
        event.id, f"dead_letter: {code}: {text}"[:250], leader_order_id=event.order_id if event.account == LEADER else "",
        follower=event.account, correlation_id="", error_code=code, reason=reason,
        payload=redact(event.payload[:MAX_PAYLOAD]))
    _announce(store, alert, "router", letter_id, f"inbox event {event.id} ({event.account} order {event.order_id}) {reason}")
    return letter_id


def park_frame(store: Store, alert: Alert, account: str, frame: SocketFrame, exc: BaseException | None) -> int:
    """Park a socket frame that crashed `account`'s feed; returns the dead letter's id."""
    code, text = _error(exc)
    raw = frame.raw.decode("utf-8", "replace") if isinstance(frame.raw, bytes) else frame.raw
    reason = f"crashed the feed: {code}: {text}"
    letter_id = store.dead_letters.park_frame(account, code, reason, redact(raw[:MAX_PAYLOAD]))
    _announce(store, alert, "feed", letter_id, f"a socket frame of {account} {reason}")
    return letter_id


def park_input(store: Store, alert: Alert, child_id: str, message: Any, exc: BaseException | None) -> bool:
    """The copier supervisor's `on_dead_letter`: park what a static child crashed on when it is
    input from outside; False (an ordinary crash) for anything else, or when what failed was
    storage or another actor."""
    if is_unavailability(exc):
        return False
    if isinstance(message, SocketFrame) and child_id.startswith("feed:"):
        park_frame(store, alert, child_id.removeprefix("feed:"), message, exc)
        return True
    if isinstance(message, OrderUpdateReceived) and child_id == "router":
        leader_order_id = message.update.order_id if message.account == LEADER else ""
        park_event(store, alert, "router", message, leader_order_id, exc, 1)
        return True
    return False


def _announce(store: Store, alert: Alert, kind: str, letter_id: int, what: str) -> None:
    metrics.POISON_MESSAGES.labels(kind).inc()
    metrics.DEAD_LETTERS.set(store.dead_letters.unresolved_count())
    alert("error", f"poison:{kind}", f"{what}; parked as dead letter {letter_id} (see: run.py dlq list)")
