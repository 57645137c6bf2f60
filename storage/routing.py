"""What the order router reads and writes besides the orders themselves: inbox events left undone,
the legs of a strategy, dead letters an operator asked to retry, and the open-order counts it
exports."""
from __future__ import annotations

import time
from dataclasses import dataclass

from storage import models as m
from storage.store import Store

StoredEvent = m.InboundEvent  # an inbox row: `account`, `id`, `order_id`, `payload` (the update's JSON)


@dataclass(frozen=True)
class RetryDue:
    """A dead letter an operator asked to retry (`run.py dlq retry ID`)."""

    letter_id: int
    event_id: int | None  # a parked inbox event, routed again; else a refused copy, placed afresh
    leader_order_id: str
    follower: str
    operation: str
    correlation_id: str = ""


def undone_events(store: Store, received_before: float, limit: int = 5000) -> list[StoredEvent]:
    """Inbox events not yet done that arrived before `received_before` (wall clock), oldest first."""
    return store.read(lambda: list(
        m.InboundEvent.select().where((m.InboundEvent.done == False)  # noqa: E712
                                      & (m.InboundEvent.received_at <= received_before))
        .order_by(m.InboundEvent.id).limit(limit)))


def unfinished_order_ids(store: Store) -> set[str]:
    """The orders with an update stored and never finished: an inbox event not yet done (its
    order id, a leader's or a follower's), or one parked as a dead letter not yet resolved."""
    def query() -> set[str]:
        undone = {row.order_id for row in m.InboundEvent.select(m.InboundEvent.order_id).distinct()
                  .where(m.InboundEvent.done == False)}  # noqa: E712
        parked = {row.leader_order_id for row in m.DeadLetter.select(m.DeadLetter.leader_order_id).distinct()
                  .where((m.DeadLetter.resolved == False) & m.DeadLetter.event_id.is_null(False))}  # noqa: E712
        return undone | {order_id for order_id in parked if order_id}

    return store.read(query)


def strategy_legs(store: Store, group_id: str) -> list[str]:
    """The leader order ids of every leg of a multi-leg strategy."""
    return store.read(lambda: [row.order_id for row in m.LeaderOrder.select(m.LeaderOrder.order_id)
                               .where(m.LeaderOrder.group_id == group_id)])


def retries_due(store: Store, now: float | None = None) -> list[RetryDue]:
    at = time.time() if now is None else now
    rows = store.read(lambda: list(m.DeadLetter.select().where(
        (m.DeadLetter.resolved == False) & (m.DeadLetter.next_retry_at <= at))))  # noqa: E712
    return [RetryDue(row.id, row.event_id, row.leader_order_id, row.follower, row.operation, row.correlation_id)
            for row in rows]


def retry_taken(store: Store, letter_id: int) -> None:
    """The retry of a dead letter is under way: not due again."""
    store.write(lambda: m.DeadLetter.update(next_retry_at=None).where(m.DeadLetter.id == letter_id).execute())

