"""Which of two snapshots of one order is the later, from what the snapshots themselves carry.

Dhan's order-update frames have no sequence number and stamp `LastUpdatedTime` in whole seconds,
and frames of one second may arrive in either order. Some pairs can still be ordered: fills only
grow, nothing follows a terminal state, and with the same terms the status only moves forward.
What is left is AMBIGUOUS: two different terms in one second, or a cancel (expiry, rejection)
stamped with the second of the open state applied, which may be the order's last frame or a late
one. Arrival order says nothing about those, and acting on the wrong one is costly (copies at an
old quantity, or cancelled while the leader's order is open), so the caller asks the broker for
the order's current state instead of guessing.
"""
from __future__ import annotations

import enum

from trading.orders import OrderStatus, OrderUpdate


class Ordering(str, enum.Enum):
    NEWER = "newer"  # apply it
    STALE = "stale"  # older than what was applied: ignore it
    SAME = "same"  # the state already applied
    AMBIGUOUS = "ambiguous"  # may be older or newer: ask the broker


_PROGRESS = {OrderStatus.TRANSIT: 0, OrderStatus.PENDING: 1, OrderStatus.PART_TRADED: 2}


def _same_state(a: OrderUpdate, b: OrderUpdate) -> bool:
    return (a.status, a.terms.modifiable_view(), a.filled_qty) == (b.status, b.terms.modifiable_view(), b.filled_qty)


def order_of(applied: OrderUpdate, update: OrderUpdate) -> Ordering:
    """Where `update` stands against `applied`, the snapshot of the same order applied last."""
    if update.sequence is not None and applied.sequence is not None:
        return Ordering.NEWER if update.sequence > applied.sequence else Ordering.STALE
    if update.updated_at and applied.updated_at and update.updated_at != applied.updated_at:
        return Ordering.NEWER if update.updated_at > applied.updated_at else Ordering.STALE
    if update.filled_qty != applied.filled_qty:  # cumulative: the one with more fills is later
        return Ordering.NEWER if update.filled_qty > applied.filled_qty else Ordering.STALE
    if _same_state(applied, update):
        return Ordering.SAME
    if applied.status.is_terminal:
        return Ordering.STALE  # nothing follows a terminal state
    if not (update.updated_at and applied.updated_at):
        return Ordering.NEWER  # no time to go by at all: arrival order is all there is
    if update.status.is_terminal:
        return Ordering.AMBIGUOUS  # the order's last frame, or a late one: only the broker knows
    if update.terms.modifiable_view() == applied.terms.modifiable_view():
        # same terms, same fills, both open: only the status moved, and it only moves forward
        return Ordering.NEWER if _PROGRESS.get(update.status, 0) > _PROGRESS.get(applied.status, 0) else Ordering.STALE
    return Ordering.AMBIGUOUS
