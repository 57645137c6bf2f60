"""Forever (GTT) copies: a follower's copy of a leader forever order, stored before it is sent and
converged onto the broker by the forever actor. `leader`, `target` and `confirmed` are the forever
actor's JSON of the leader's order as last applied, of the sized copy, and of what the broker
acknowledged."""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

from storage import models as m
from storage.base import Transactions


OPEN = ("PENDING_PLACEMENT", "PENDING")


@dataclass(frozen=True)
class ForeverCopy:
    leader_forever_id: str
    follower: str
    correlation_id: str
    status: str  # PENDING_PLACEMENT, PENDING, TRIGGERED, CANCELLED, REJECTED, SKIPPED
    security_id: str
    side: str
    leader_quantity: int
    leader: str
    target: str | None = None
    confirmed: str | None = None
    follower_forever_id: str | None = None
    cancel_requested: bool = False
    last_error: str | None = None
    updated_at: float = 0.0


_FIELDS = tuple(f.name for f in dataclasses.fields(ForeverCopy))


def _record(row: m.ForeverCopy) -> ForeverCopy:
    return ForeverCopy(**{name: getattr(row, name) for name in _FIELDS})


class ForeverCopies:
    def __init__(self, store: Transactions) -> None:
        self._store = store

    def open(self) -> list[ForeverCopy]:
        """Copies still to be placed, or resting at the broker."""
        return self._store.read(lambda: [_record(row) for row in m.ForeverCopy.select()
                                         .where(m.ForeverCopy.status.in_(OPEN)).order_by(m.ForeverCopy.id)])

    def known(self, correlation_id: str) -> bool:
        """Whether a copy under this correlation id was ever made (or skipped)."""
        return self._store.read(lambda: m.ForeverCopy.select().where(m.ForeverCopy.correlation_id == correlation_id)
                                .exists())

    def leader_ids_of(self, security_id: str, side: str) -> set[str]:
        """The leader forever orders copied (or skipped) for an instrument and side."""
        # a plain statement: this runs for every leader order the copier sees first
        return self._store.read(lambda: {row[0] for row in self._store.db.execute_sql(
            'SELECT "leader_forever_id" FROM "forever_copy" WHERE "security_id" = ? AND "side" = ?',
            (security_id, side))})

    def add(self, copy: ForeverCopy) -> ForeverCopy:
        """Store a new copy, before anything is sent for it."""
        return self._store.write(lambda: self._create(copy))

    def add_skipped(self, copy: ForeverCopy, reason: str, detail: str) -> ForeverCopy:
        """Store a copy that is not made (SKIPPED) with the skip and its reason, in one transaction."""
        def effect() -> ForeverCopy:
            self._store.create(m.Skip, leader_order_id=copy.leader_forever_id, follower=copy.follower, reason=reason,
                               detail=detail)
            return self._create(dataclasses.replace(copy, status="SKIPPED"))

        return self._store.write(effect)

    def update(self, copy: ForeverCopy, **changes: Any) -> ForeverCopy:
        """Store `changes` to a copy; the copy as stored now."""
        changed = dataclasses.replace(copy, **changes, updated_at=time.time())
        values = {name: getattr(changed, name) for name in (*changes, "updated_at")}
        self._store.write(lambda: m.ForeverCopy.update(**values)
                          .where(m.ForeverCopy.correlation_id == copy.correlation_id).execute())
        return changed

    def _create(self, copy: ForeverCopy) -> ForeverCopy:
        fields = dataclasses.asdict(copy)
        fields["updated_at"] = time.time()
        self._store.create(m.ForeverCopy, **fields)
        return dataclasses.replace(copy, updated_at=fields["updated_at"])
