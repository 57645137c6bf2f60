"""Dead letters: work the copier gave up on until an operator decides (`run.py dlq`). A copy the
broker refused for good (operation "place"), or a message parked because it kept crashing the actor
handling it: an inbox event ("inbox_event", `event_id` set, its inbox row done with an outcome that
says why) or a socket frame ("socket_frame")."""
from __future__ import annotations

import time
from dataclasses import dataclass

from storage import models as m
from storage.base import Transactions
from storage.inbox import InboxEvent



@dataclass(frozen=True)
class DeadLetter:
    id: int
    leader_order_id: str
    follower: str  # the copy's follower; for a parked message, the account it came from
    correlation_id: str
    operation: str  # place | inbox_event | socket_frame
    error_code: str
    reason: str
    retry_count: int
    next_retry_at: float | None  # set when an operator asked for a retry the copier has not made yet
    at: float
    event_id: int | None
    payload: str | None  # a parked message, bounded and redacted


def _letter(row: m.DeadLetter) -> DeadLetter:
    return DeadLetter(row.id, row.leader_order_id, row.follower, row.correlation_id, row.operation, row.error_code,
                      row.reason, row.retry_count, row.next_retry_at, row.at, row.event_id, row.payload)


_UNRESOLVED = m.DeadLetter.resolved == False  # noqa: E712


class DeadLetters:
    def __init__(self, store: Transactions) -> None:
        self._store = store

    # -- parking ---------------------------------------------------------------------------------
    def park_event(self, event_id: int, outcome: str, *, leader_order_id: str, follower: str,
                   correlation_id: str, error_code: str, reason: str, payload: str) -> int:
        """Park an inbox event that keeps crashing the actor handling it: its dead letter stored and
        the event done with `outcome`, in one transaction. Returns the dead letter's id."""
        store = self._store

        def park() -> int:
            row = store.create(m.DeadLetter, event_id=event_id, leader_order_id=leader_order_id, follower=follower,
                               correlation_id=correlation_id, operation="inbox_event", error_code=error_code,
                               reason=reason, payload=payload)
            store.inbox.mark_done([event_id], outcome)
            return row.id

        return store.write(park)

    def park_frame(self, account: str, error_code: str, reason: str, payload: str) -> int:
        """Park a socket frame of `account` that crashed its feed (it has no inbox row). Returns the
        dead letter's id."""
        return self._store.write(lambda: self._store.create(
            m.DeadLetter, leader_order_id="", follower=account, correlation_id="", operation="socket_frame",
            error_code=error_code, reason=reason, payload=payload).id)

    # -- reading ---------------------------------------------------------------------------------
    def unresolved_count(self) -> int:
        return self._store.read(lambda: m.DeadLetter.select().where(_UNRESOLVED).count())

    def unresolved(self) -> list[DeadLetter]:
        """Every dead letter no operator has dropped or retried, oldest first."""
        return self._store.read(lambda: [_letter(row) for row in m.DeadLetter.select().where(_UNRESOLVED)
                                         .order_by(m.DeadLetter.id)])

    def unresolved_one(self, letter_id: int) -> DeadLetter | None:
        row = self._store.read(lambda: m.DeadLetter.get_or_none((m.DeadLetter.id == letter_id) & _UNRESOLVED))
        return _letter(row) if row is not None else None

    def due_for_retry(self, now: float) -> list[DeadLetter]:
        """Unresolved dead letters an operator asked to retry by `now`."""
        return self._store.read(lambda: [_letter(row) for row in m.DeadLetter.select().where(
            _UNRESOLVED & (m.DeadLetter.next_retry_at <= now)).order_by(m.DeadLetter.id)])

    # -- an operator's decisions, and the copier's answer to them ----------------------------------
    def request_retry(self, letter_id: int) -> None:
        """An operator's retry: a running copier routes the event (or places the copy) again."""
        self._store.write(lambda: m.DeadLetter.update(next_retry_at=time.time())
                          .where(m.DeadLetter.id == letter_id).execute())

    def drop(self, letter_id: int) -> None:
        """An operator's decision to give the work up: the letter is resolved, nothing is retried."""
        self._store.write(lambda: m.DeadLetter.update(resolved=True).where(m.DeadLetter.id == letter_id).execute())

    def retry_taken(self, letter_id: int) -> None:
        """The copier took up a requested retry (of a copy: its order actor places it again)."""
        self._store.write(lambda: m.DeadLetter.update(next_retry_at=None).where(m.DeadLetter.id == letter_id).execute())

    def reopen(self, letter_id: int, event_id: int) -> InboxEvent | None:
        """A retry of a parked inbox event, in one transaction: the letter resolved, the event
        pending again (returned, for routing)."""
        def reopen() -> InboxEvent | None:
            m.DeadLetter.update(resolved=True, retry_count=m.DeadLetter.retry_count + 1, next_retry_at=None) \
                .where(m.DeadLetter.id == letter_id).execute()
            m.InboundEvent.update(done=False, outcome=None).where(m.InboundEvent.id == event_id).execute()
            row = m.InboundEvent.get_or_none(m.InboundEvent.id == event_id)
            return InboxEvent.from_row(row) if row is not None else None

        return self._store.write(reopen)
