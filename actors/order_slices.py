"""Copies above the exchange's freeze quantity (trading/freeze.py): cut into slices, each a copy
of its own in the state machine under the follower's copy.

Why slices are copies of their own, not a list inside one copy: each slice is a broker order with
its own life (placed, found unknown and looked up, modified, filled, cancelled), and the copy
state machine already gives exactly that exactly once per correlation id. So each slice gets
one, derived from the copy's (`trading.copy.correlation_id(..., part)`), and everything a copy
does, a slice does, while the order actor keeps them together: the leader's modification and
cancel reach every slice, a quantity change re-slices (`trading.freeze.reslice`), the capital
reserved for the copy is released when its last slice closes, and fills add up per follower.

The copier slices itself rather than through Dhan's `POST /orders/slicing`: that endpoint gives
every slice the request's one correlation id, so a placement whose answer was lost could only be
looked up as a whole, a slice added by a later quantity change could not reuse the id, and
nothing documents what a lookup answers for several orders under one id.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from actors.messages import ReleaseCapital
from actors.order_part import OrderPart
from observability import metrics
from trading import copy as c
from trading.freeze import Slice, reslice, slice_sizes
from trading.instruments import Instrument
from trading.orders import OrderTerms
from trading.sizing import scale_disclosed

if TYPE_CHECKING:
    from actors.order import OrderActor
    from actors.order_plan import Plan

RESLICED = "resliced"  # why a slice the copy no longer needs is cancelled
ABOVE_FREEZE = "above_freeze_quantity"  # skip reason when slicing is switched off


class Slices(OrderPart):
    def largest(self, instrument: Instrument | None) -> int | None:
        """The most units one slice may carry (None: no limit known for the instrument)."""
        if instrument is None:
            return None
        return self.actor.ctx.freeze.largest_slice(instrument)

    def refusal(self, instrument: Instrument | None, quantity: int) -> tuple[str, str] | None:
        """With slicing switched off, a copy above the freeze quantity is a recorded skip (the
        exchange would refuse it whole)."""
        largest = self.largest(instrument)
        if self.actor.ctx.policy.slice_above_freeze_limit or largest is None or quantity <= largest:
            return None
        assert instrument is not None
        limit = self.actor.ctx.freeze.limit(instrument)
        return ABOVE_FREEZE, (f"{quantity} units of {instrument.underlying or instrument.symbol} exceed the freeze "
                              f"quantity {limit} per order, and copy.slice_above_freeze_limit is off")

    def targets(self, instrument: Instrument | None, target: OrderTerms) -> list[OrderTerms]:
        """`target` (a whole copy) as the terms of its slices, the first first."""
        sizes = slice_sizes(target.quantity, self.largest(instrument))
        return [_part(target, size, instrument) for size in sizes]

    def retarget(self, plan: "Plan", follower: str, target: OrderTerms, instrument: Instrument | None) -> None:
        """The leader changed its order: every live slice of `follower`'s copy takes the new terms,
        re-sliced for `target.quantity` (slices added, or cancelled when no longer needed)."""
        parts = plan.parts(follower)
        live = [not p.status.is_terminal and not p.cancel_requested for p in parts]
        sizes = reslice(target.quantity, [Slice(p.target.quantity, p.filled_qty, alive)
                                          for p, alive in zip(parts, live)], self.largest(instrument))
        for part, alive, size in zip(parts, live, sizes):
            if not alive:
                continue
            if size <= 0:
                plan.apply(part.key, c.CancelRequested(RESLICED))
            else:
                plan.apply(part.key, c.TargetChanged(_part(target, size, instrument)))
        first = parts[0]
        added = sizes[len(parts):]
        for n, size in enumerate(added, start=max(p.part for p in parts) + 1):
            plan.create(c.Submitted(first.leader_order_id, follower, _part(target, size, instrument), part=n))
        if added:  # a copy that was one order is sliced now
            plan.then(lambda: self.counted(follower, len(added) + (len(parts) == 1), new_copy=len(parts) == 1))

    def catch_up(self, plan: "Plan", follower: str, instrument: Instrument | None, target: OrderTerms) -> None:
        """A copy skipped while its follower was paused, placed now for `target` (trading/copy.py
        `CaughtUp`): in slices when above the freeze quantity, or a recorded skip when slicing is
        off (the capital reserved for it released)."""
        refused = self.refusal(instrument, target.quantity)
        if refused is not None:
            copy = plan.states[follower]
            cid = c.correlation_id(copy.leader_order_id, follower, copy.generation + 1)
            plan.skip(follower, *refused)
            plan.then(lambda: self.actor.ctx.sizing.tell(ReleaseCapital(follower, cid)))
            return
        parts = self.targets(instrument, target)
        plan.apply(follower, c.CaughtUp(parts[0]))
        first = plan.states[follower]
        for n, terms in enumerate(parts[1:], start=1):  # a skipped copy had one part: these are new
            plan.create(c.Submitted(first.leader_order_id, follower, terms, part=n))
        if len(parts) > 1:
            plan.then(lambda: self.counted(follower, len(parts), new_copy=True))

    @staticmethod
    def counted(follower: str, slices: int, new_copy: bool = False) -> None:
        """Counted once stored: a copy newly sliced, and the slices it gained."""
        if new_copy:
            metrics.SLICED_COPIES.labels(follower).inc()
        metrics.COPY_SLICES.labels(follower).inc(slices)

    @staticmethod
    def total(parts: list[c.CopyState]) -> int:
        """The quantity a copy stands for now: its live slices' targets and what its closed ones filled."""
        return sum(p.filled_qty if p.status.is_terminal or p.cancel_requested else p.target.quantity
                   for p in parts)


def _part(target: OrderTerms, size: int, instrument: Instrument | None) -> OrderTerms:
    """One slice of `target`: `size` units, disclosing in the copy's proportion."""
    if size == target.quantity:
        return target
    lot = instrument.lot_size if instrument is not None else 1
    return target.with_changes(quantity=size, disclosed_qty=scale_disclosed(target.quantity, target.disclosed_qty,
                                                                          size, lot))
