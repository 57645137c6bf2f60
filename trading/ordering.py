"""Which of two snapshots of one order is the later, from what the snapshots themselves carry.

Dhan's order-update frames have no sequence number and stamp `LastUpdatedTime` in whole seconds,
and frames of one second may arrive in either order. Some pairs can still be ordered: fills only
grow, nothing follows a terminal state, and a cancel carries the terms the order had when it was
cancelled. What is left (two different terms, or a cancel with other terms than the last applied,
stamped with the same second) is AMBIGUOUS: arrival order says nothing, and the caller must ask
the broker for the order's current state instead of guessing.
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
    if update.terms.modifiable_view() == applied.terms.modifiable_view():
        # same terms, same fills: only the status moved, and it only moves forward
        # (TRANSIT -> PENDING -> PART_TRADED -> a terminal state, which keeps the terms it had)
        rank = _PROGRESS.get(update.status, 3)
        return Ordering.NEWER if rank > _PROGRESS.get(applied.status, 3) else Ordering.STALE
    return Ordering.AMBIGUOUS
