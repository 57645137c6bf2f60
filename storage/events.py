"""The per-order event store: an order's state is the fold of its events, in `seq` order. Keys are
"L:<leader order id>" for a leader order and "F:<leader order id>:<follower>" for a copy."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import orjson

from storage import models as m
from storage.base import Transactions



@dataclass(frozen=True)
class OrderEvent:
    order_key: str
    seq: int
    kind: str
    payload: dict[str, Any]
    at: float


class OrderEvents:
    def __init__(self, store: Transactions) -> None:
        self._store = store
        self._buffered: list[tuple] = []  # appended in the open transaction, written at its commit

    def append(self, order_key: str, kind: str, payload: dict[str, Any], seq: int | None = None) -> int:
        """Inside a write transaction: append with the next per-order sequence number. An owner that
        counts its own sequence (the order actor) passes it and saves the MAX query."""
        seq = seq if seq is not None else self.last_seq(order_key) + 1
        # Written together at the end of the transaction (one executemany): a leader order's first
        # sighting appends one event per follower, and one statement each was most of its cost.
        self._buffered.append((order_key, seq, kind, orjson.dumps(payload).decode(), time.time()))
        if not self._store.in_write:  # the caller's own transaction, not write(): flush now
            self.flush()
        return seq

    def last_seq(self, order_key: str) -> int:
        """The highest sequence number stored for an order (0 for none)."""
        self.flush()
        row = self._store.db.execute_sql('SELECT MAX("seq") FROM "order_event_record" WHERE "order_key" = ?',
                                         (order_key,)).fetchone()
        return row[0] or 0

    def of(self, order_key: str) -> list[OrderEvent]:
        """An order's events in sequence."""
        def query() -> list[OrderEvent]:
            self.flush()
            return [OrderEvent(row.order_key, row.seq, row.kind, json.loads(row.payload), row.at)
                    for row in m.OrderEventRecord.select().where(m.OrderEventRecord.order_key == order_key)
                    .order_by(m.OrderEventRecord.seq)]

        return self._store.read(query)

    # -- for Store.write: the buffer lives and dies with its transaction ------------------------
    def flush(self) -> None:
        if self._buffered:
            rows, self._buffered = self._buffered, []
            self._store.db.cursor().executemany(
                'INSERT INTO "order_event_record" ("order_key", "seq", "kind", "payload", "at") '
                "VALUES (?, ?, ?, ?, ?)", rows)

    def discard(self) -> None:
        """The transaction ended (committed after `flush`, or rolled back): nothing stays buffered."""
        self._buffered.clear()
