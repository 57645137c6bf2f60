"""Operator commands for the running copier, from another process, as a queue in storage.

Why a queue and not one setting, as `reconcile` asks: a setting holds one request at a time, so
two commands given together (a script pausing two followers) would overwrite each other and one
would be lost. Here each request is a row: the copier takes the oldest waiting one (once: taking is
a conditional update), carries it out and answers it; a command that stops waiting withdraws its
request the same way, so a request is either carried out and answered, or withdrawn and never
carried out, whichever comes first, never both. Requests left waiting longer than the copier's
`ttl` (no copier was running) are expired, not carried out late."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from storage import models as m
from storage.base import Transactions

WAITING, TAKEN, ANSWERED, WITHDRAWN, EXPIRED = "waiting", "taken", "answered", "withdrawn", "expired"


@dataclass(frozen=True)
class ControlRequest:
    id: int
    command: dict[str, Any]
    by: str
    requested_at: float


@dataclass(frozen=True)
class ControlAnswer:
    ok: bool
    text: str


class ControlRequests:
    def __init__(self, store: Transactions) -> None:
        self._store = store

    def submit(self, command: dict[str, Any], by: str) -> int:
        """Queue `command` for the running copier; its request id."""
        return self._store.write(lambda: self._store.create(m.ControlRequest, command=json.dumps(command), by=by).id)

    def take(self, ttl: float) -> ControlRequest | None:
        """The oldest waiting request, now taken (no one else will take it); requests older than
        `ttl` seconds are expired first."""
        def effect() -> ControlRequest | None:
            now = time.time()
            m.ControlRequest.update(state=EXPIRED, answered_at=now).where(
                (m.ControlRequest.state == WAITING) & (m.ControlRequest.requested_at < now - ttl)).execute()
            row = (m.ControlRequest.select().where(m.ControlRequest.state == WAITING)
                   .order_by(m.ControlRequest.id).first())
            if row is None:
                return None
            m.ControlRequest.update(state=TAKEN).where(m.ControlRequest.id == row.id).execute()
            return ControlRequest(row.id, json.loads(row.command), row.by, row.requested_at)

        if not self._store.read(lambda: m.ControlRequest.select().where(m.ControlRequest.state == WAITING).exists()):
            return None  # (the copier polls this often: no write when there is nothing to take)
        return self._store.write(effect)

    def answer(self, request_id: int, ok: bool, text: str) -> None:
        self._store.write(lambda: m.ControlRequest.update(state=ANSWERED, ok=ok, answer=text, answered_at=time.time())
                          .where(m.ControlRequest.id == request_id).execute())

    def answer_of(self, request_id: int) -> ControlAnswer | None:
        """The answer, once the copier gave it."""
        row = self._store.read(lambda: m.ControlRequest.get_or_none(m.ControlRequest.id == request_id))
        if row is None or row.state != ANSWERED:
            return None
        return ControlAnswer(bool(row.ok), row.answer or "")

    def withdraw(self, request_id: int) -> bool:
        """Give up waiting: True when the copier had not taken it (it never will), False when it
        has (it is being carried out)."""
        return bool(self._store.write(lambda: m.ControlRequest.update(state=WITHDRAWN, answered_at=time.time())
                                      .where((m.ControlRequest.id == request_id)
                                             & (m.ControlRequest.state == WAITING)).execute()))
