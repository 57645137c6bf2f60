"""The base of an order actor's parts (its first sighting, leader updates, fills, legs, slices,
super orders, answers)."""
from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from actors.order import OrderActor


class OrderPart:
    """One concern of an order actor, kept by it. It refers back to its actor weakly, so an actor
    and its parts make no reference cycle: a retired order (its copies, their terms and rows) is
    freed at once, not by the garbage collector's next full collection, which walks every object
    alive with every thread stopped (docs/design.md)."""

    def __init__(self, actor: "OrderActor") -> None:
        self.actor: OrderActor = weakref.proxy(actor)  # type: ignore[assignment]
