"""Copies found at a first start: a follower order carrying the correlation id this copier derives
for one of the leader's orders is that order's copy, taken over (adopted), never placed again."""
from __future__ import annotations

import json
from typing import Any, Iterable

from storage import models as m
from storage.base import Transactions



class Adoption:
    def __init__(self, store: Transactions) -> None:
        self._store = store

    def record(self, copies: Iterable[tuple[str, str, int, dict[str, Any]]]) -> None:
        """(leader order id, follower, generation, the follower's order as its book showed it) of
        copies found (`follower#N` for a further slice of a copy, trading.copy.part_key); a later
        finding for the same copy replaces an earlier one."""
        rows = [dict(leader_order_id=leader_order_id, follower=follower, generation=generation,
                     order=json.dumps(order)) for leader_order_id, follower, generation, order in copies]
        if rows:
            self._store.write(lambda: m.AdoptedCopy.insert_many(rows).on_conflict_replace().execute())

    def of(self, leader_order_id: str) -> dict[str, tuple[int, dict[str, Any]]]:
        """follower (or `follower#N`, a slice) -> (generation, its order) of the copies of a leader
        order found at a first start."""
        rows = self._store.read(lambda: list(m.AdoptedCopy.select()
                                             .where(m.AdoptedCopy.leader_order_id == leader_order_id)))
        return {row.follower: (row.generation, json.loads(row.order)) for row in rows}
