"""Copies found at a first start. When the copier's database is lost, the brokers still hold the
copies it made. Correlation ids are derived (`trading.orders.correlation_id`), so for each of the
leader's orders the copier can compute every follower's id, generation by generation, and look it
up in that follower's order book: a copy found is adopted, not orphaned, and its leader order is
followed as usual instead of being recorded as pre-existing.
"""
from __future__ import annotations

from typing import Iterable

from trading.copy import correlation_id, part_key
from trading.orders import OrderUpdate

# Generations looked for: an operator's dead-letter retry and a replacement past the modification
# cap each make the next one; a copy with more than this many is not found.
GENERATIONS = 16
# Slices looked for, of a copy above the exchange's freeze quantity (trading/freeze.py): each has a
# correlation id of its own, derived from the copy's.
SLICES = 16


def find_copies(leader_order_ids: Iterable[str], books: dict[str, list[OrderUpdate]],
                generations: int = GENERATIONS) -> dict[str, dict[str, tuple[int, OrderUpdate]]]:
    """leader order id -> part key -> (generation, the follower's order), for every copy found in
    the followers' order books (`books`, by follower). The part key is the follower's name, or
    `follower#N` for a further slice of its copy (`trading.copy.part_key`). The newest generation
    of a copy (of a slice) wins: the older ones are the orders it replaced."""
    leader_order_ids = list(leader_order_ids)
    found: dict[str, dict[str, tuple[int, OrderUpdate]]] = {}
    for follower, book in books.items():
        by_id = {order.correlation_id: order for order in book
                 if order.correlation_id and not order.exit_leg}  # (a super order's legs share its id)
        if not by_id:
            continue
        for leader_order_id in leader_order_ids:
            for part in range(SLICES):
                for generation in range(generations - 1, -1, -1):
                    order = by_id.get(correlation_id(leader_order_id, follower, generation, part))
                    if order is not None:
                        found.setdefault(leader_order_id, {})[part_key(follower, part)] = (generation, order)
                        break
    return found
