"""The inbox: every order update received (leader or follower), stored before it is routed and
marked done in the same transaction as its effect, so a crash between the two replays it (updates
are snapshots: replay is idempotent)."""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any, Iterable

import orjson

from storage import models as m
from storage.base import Transactions



@dataclass(frozen=True)
class InboxEvent:
    """A stored update not yet done. `payload` is the update as stored (JSON text): the router
    decodes it, and parks one this version cannot read."""

    id: int
    account: str  # "leader" or a follower name
    order_id: str
    source: str
    payload: str
    received_at: float

    @classmethod
    def from_row(cls, row: m.InboundEvent) -> "InboxEvent":
        return cls(row.id, row.account, row.order_id, row.source, row.payload, row.received_at)


def encoded(payload: dict[str, Any]) -> str:
    """An update's JSON with orjson, about ten times the json module's speed (two follower echoes a
    copy are stored), unless a number in it is not finite: orjson writes that as null, and a stored
    update must replay as it was routed. (The parsers admit no such number; this is the net.)"""
    return orjson.dumps(payload).decode() if _finite(payload) else json.dumps(payload)


def _finite(values: dict[str, Any]) -> bool:
    for value in values.values():
        kind = type(value)
        if (kind is float and not math.isfinite(value)) or (kind is dict and not _finite(value)):
            return False
    return True


class Inbox:
    def __init__(self, store: Transactions) -> None:
        self._store = store

    def record(self, account: str, order_id: str, dedupe_key: str, source: str, payload: dict[str, Any],
               received_ns: int) -> int | None:
        """Append an update, in a transaction of its own; its id, or None when this exact update
        (its dedupe key) is already there."""
        return self.record_many(account, [(order_id, dedupe_key, source, payload, received_ns)])[0]

    def record_many(self, account: str, updates: list[tuple[str, str, str, dict[str, Any], int]]) -> list[int | None]:
        """Append updates of `account` ((order id, dedupe key, source, payload, received_ns) each),
        in one transaction: a frame's commit is most of what storing it costs. Their ids, None for
        an update already there."""
        store = self._store

        def insert() -> list[int | None]:
            now = time.time()
            # The cursor's rowcount, not its lastrowid, tells an ignored duplicate apart: on a
            # shared connection an ignored insert reports the previous insert's rowid.
            return [store.insert(m.InboundEvent, dict(
                account=account, order_id=order_id, dedupe_key=dedupe_key, source=source,
                payload=encoded(payload), received_at=now, received_ns=received_ns,
                done=False), or_ignore=True) for order_id, dedupe_key, source, payload, received_ns in updates]

        return store.write(insert)

    def knows_order(self, account: str, order_id: str) -> bool:
        """Whether any update of this order of `account` was ever stored."""
        return self._store.read(lambda: self._store.db.execute_sql(
            'SELECT 1 FROM "inbound_event" WHERE "order_id" = ? AND "account" = ? LIMIT 1',
            (order_id, account)).fetchone() is not None)

    def pending(self, order_ids: Iterable[str] | None = None, received_before: float | None = None,
                limit: int = 5000) -> list[InboxEvent]:
        """Updates not yet done, oldest first: of these orders (by the account's order id) only,
        and received before `received_before` (epoch seconds) only, when given."""
        def query() -> list[InboxEvent]:
            q = m.InboundEvent.select().where(m.InboundEvent.done == False)  # noqa: E712
            if order_ids is not None:
                q = q.where(m.InboundEvent.order_id.in_(list(order_ids)))
            if received_before is not None:
                q = q.where(m.InboundEvent.received_at <= received_before)
            return [InboxEvent.from_row(row) for row in q.order_by(m.InboundEvent.id).limit(limit)]

        return self._store.read(query)

    def acknowledge(self, event_ids: Iterable[int], outcome: str) -> None:
        """Acknowledge events that have no effect of their own (an update of an order the copier
        does not know), in a transaction of their own."""
        ids = list(event_ids)
        self._store.write(lambda: self.mark_done(ids, outcome))

    def mark_done(self, event_ids: Iterable[int], outcome: str) -> None:
        """Inside the write transaction of the events' effect: acknowledge them with it."""
        execute = self._store.db.execute_sql
        for event_id in event_ids:
            execute('UPDATE "inbound_event" SET "done" = 1, "outcome" = ? WHERE "id" = ?', (outcome, event_id))
