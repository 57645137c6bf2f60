"""The order state machine: one transition table for leader and follower orders alike.

An order's state is the fold of its events over `TRANSITIONS`. An event that the table does not
allow from the current state raises `InvalidTransition`; callers log and count it and leave the
state as it was (a late modification can never reopen a cancelled order).
"""
from __future__ import annotations

import enum

from trading.orders import OrderStatus as S


class OrderEvent(str, enum.Enum):
    SUBMITTED = "SUBMITTED"  # stored, sent (or about to be sent) to the broker
    ACCEPTED = "ACCEPTED"  # broker holds it (TRANSIT / PENDING)
    TRIGGERED = "TRIGGERED"  # AMO / stop order went live: PENDING again
    MODIFIED = "MODIFIED"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"
    SKIPPED = "SKIPPED"
    OUTCOME_UNKNOWN = "OUTCOME_UNKNOWN"  # a placement's answer was lost, a 5xx or unreadable
    NOT_PLACED = "NOT_PLACED"  # a lookup answered that the broker holds no such order


class InvalidTransition(Exception):
    """An event that is not allowed from the order's current state."""

    def __init__(self, state: S, event: OrderEvent) -> None:
        super().__init__(f"{event.value} is not allowed in state {state.value}")
        self.state = state
        self.event = event


E = OrderEvent
_OPEN = (S.TRANSIT, S.PENDING, S.PART_TRADED)

TRANSITIONS: dict[tuple[S, OrderEvent], S] = {
    (S.PENDING_PLACEMENT, E.SUBMITTED): S.PENDING_PLACEMENT,
    (S.PENDING_PLACEMENT, E.SKIPPED): S.SKIPPED,
    (S.PENDING_PLACEMENT, E.REJECTED): S.REJECTED,
    (S.PENDING_PLACEMENT, E.CANCELLED): S.CANCELLED,  # aborted before it reached the broker
    # Unknown: left only on what the broker says of the order (a lookup that answers, its own
    # update); never by placing it again, never rejected for want of an answer.
    (S.PENDING_PLACEMENT, E.OUTCOME_UNKNOWN): S.UNKNOWN,
    (S.UNKNOWN, E.NOT_PLACED): S.PENDING_PLACEMENT,
    (S.UNKNOWN, E.CANCELLED): S.CANCELLED,  # found already cancelled (or expired, rejected, below)
    (S.UNKNOWN, E.REJECTED): S.REJECTED,
    **{(s, E.ACCEPTED): S.PENDING for s in (S.PENDING_PLACEMENT, S.UNKNOWN, S.TRANSIT, S.PENDING)},
    (S.PENDING_PLACEMENT, E.TRIGGERED): S.PENDING,
    (S.UNKNOWN, E.TRIGGERED): S.PENDING,
    (S.TRANSIT, E.TRIGGERED): S.PENDING,
    (S.PENDING, E.TRIGGERED): S.PENDING,
    **{(s, E.MODIFIED): s for s in _OPEN},
    **{(s, E.PARTIALLY_FILLED): S.PART_TRADED for s in (S.PENDING_PLACEMENT, S.UNKNOWN, *_OPEN)},
    **{(s, E.FILLED): S.TRADED for s in (S.PENDING_PLACEMENT, S.UNKNOWN, *_OPEN)},
    **{(s, E.CANCELLED): S.CANCELLED for s in _OPEN},
    **{(s, E.REJECTED): S.REJECTED for s in (S.TRANSIT, S.PENDING)},
    **{(s, E.EXPIRED): S.EXPIRED for s in (S.PENDING_PLACEMENT, S.UNKNOWN, *_OPEN)},
}


def next_state(state: S, event: OrderEvent) -> S:
    """The state after `event`, or `InvalidTransition`."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise InvalidTransition(state, event) from None


def event_for_status(previous: S, status: S, filled_before: int, filled_now: int,
                     terms_changed: bool) -> OrderEvent | None:
    """Name the event that turns a broker snapshot with `status` into a transition, or None if
    the snapshot carries nothing new for the state machine (a duplicate)."""
    if status == S.TRADED:
        return None if previous == S.TRADED else E.FILLED
    if status == S.PART_TRADED:
        if filled_now > filled_before or previous != S.PART_TRADED:
            return E.PARTIALLY_FILLED
        return E.MODIFIED if terms_changed else None
    if status in (S.CANCELLED, S.REJECTED, S.EXPIRED):
        return None if previous == status else OrderEvent(status.value)
    if status in (S.PENDING, S.TRANSIT):
        if previous in (S.PENDING_PLACEMENT, S.UNKNOWN):
            return E.ACCEPTED
        if previous == S.TRANSIT and status == S.PENDING:
            return E.TRIGGERED
        return E.MODIFIED if terms_changed else None
    return None
