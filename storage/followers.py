"""Follower control: what operators set for each follower while the copier runs (paused or not,
sizing keys changed over the config's), and the audit of every change, who made it and when.

Each change and its audit line are one transaction. The state outlives restarts, and a copier
starting reads it over its config: the stored pause and sizing win (README, "Live control")."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

from storage import models as m
from storage.base import Transactions

OPEN_LEADER_STATES = ("TRANSIT", "PENDING", "PART_TRADED")  # a leader order a copy placed now could still follow
LIVE_COPY_STATES = ("PENDING_PLACEMENT", "UNKNOWN", "TRANSIT", "PENDING", "PART_TRADED")  # not finished for us


@dataclass(frozen=True)
class FollowerState:
    follower: str
    paused: bool = False
    reason: str = ""
    paused_by: str = ""
    paused_at: float = 0.0
    sizing: dict[str, Any] = field(default_factory=dict)  # sizing key -> value set over the config's
    sizing_by: str = ""
    sizing_at: float = 0.0


@dataclass(frozen=True)
class AuditEntry:
    id: int
    follower: str
    action: str
    detail: str
    by: str
    at: float


def _state(row: m.FollowerControl) -> FollowerState:
    return FollowerState(row.follower, bool(row.paused), row.pause_reason, row.paused_by, row.paused_at,
                         json.loads(row.sizing or "{}"), row.sizing_by, row.sizing_at)


class Followers:
    def __init__(self, store: Transactions) -> None:
        self._store = store

    # -- reading -------------------------------------------------------------------------------
    def states(self) -> dict[str, FollowerState]:
        """Every follower an operator ever changed, by name."""
        return self._store.read(lambda: {row.follower: _state(row) for row in m.FollowerControl.select()})

    def state(self, follower: str) -> FollowerState:
        row = self._store.read(lambda: m.FollowerControl.get_or_none(m.FollowerControl.follower == follower))
        return _state(row) if row is not None else FollowerState(follower)

    def audit(self, follower: str | None = None, limit: int = 50) -> list[AuditEntry]:
        """The last `limit` changes (of `follower` only, when given), oldest first."""
        def query() -> list[AuditEntry]:
            rows = m.FollowerAudit.select().order_by(m.FollowerAudit.id.desc()).limit(limit)
            if follower is not None:
                rows = rows.where(m.FollowerAudit.follower == follower)
            return [AuditEntry(r.id, r.follower, r.action, r.detail, r.by, r.at) for r in reversed(list(rows))]

        return self._store.read(query)

    def open_orders_skipped_while_paused(self, follower: str, reason: str) -> list[str]:
        """Leader orders still open whose copy for `follower` was skipped for `reason`: what a
        resume with catch-up copies."""
        def query() -> list[str]:
            skipped = (m.FollowerOrder.select(m.FollowerOrder.leader_order_id)
                       .where((m.FollowerOrder.follower == follower) & (m.FollowerOrder.status == "SKIPPED")
                              & (m.FollowerOrder.skip_reason == reason)))
            return [row.order_id for row in m.LeaderOrder.select(m.LeaderOrder.order_id)
                    .where(m.LeaderOrder.order_id.in_(skipped) & m.LeaderOrder.status.in_(OPEN_LEADER_STATES))
                    .order_by(m.LeaderOrder.first_seen_at)]

        return self._store.read(query)

    def live_copies(self, follower: str, segments: Iterable[str] = ()) -> int:
        """`follower`'s copies not finished yet (in the exchange `segments` only, when given)."""
        wanted = [s.upper() for s in segments]

        def query() -> int:
            rows = m.FollowerOrder.select(m.FollowerOrder.target).where(
                (m.FollowerOrder.follower == follower) & m.FollowerOrder.status.in_(LIVE_COPY_STATES))
            if not wanted:
                return rows.count()
            return sum(1 for row in rows if json.loads(row.target).get("exchange_segment") in wanted)

        return self._store.read(query)

    # -- changing ------------------------------------------------------------------------------
    def pause(self, follower: str, reason: str, by: str) -> FollowerState:
        return self._change(follower, by, "pause", reason, paused=True, pause_reason=reason, paused_by=by,
                            paused_at=time.time())

    def resume(self, follower: str, by: str, detail: str = "") -> FollowerState:
        return self._change(follower, by, "resume", detail, paused=False, pause_reason="")

    def set_sizing(self, follower: str, sizing: dict[str, Any], by: str, detail: str) -> FollowerState:
        """Replace the sizing keys set over the config's with `sizing` (all of them, merged by the caller)."""
        return self._change(follower, by, "set" if sizing else "reset", detail, sizing=json.dumps(sizing, sort_keys=True),
                            sizing_by=by, sizing_at=time.time())

    def record(self, follower: str, action: str, detail: str, by: str) -> None:
        """An audit line for a change the state above does not hold (add, remove, square-off, ...)."""
        self._store.write(lambda: self._store.create(m.FollowerAudit, follower=follower, action=action,
                                                     detail=detail, by=by))

    def _change(self, follower: str, by: str, action: str, detail: str, **columns: Any) -> FollowerState:
        store = self._store

        def effect() -> FollowerState:
            row = m.FollowerControl.get_or_none(m.FollowerControl.follower == follower)
            if row is None:
                row = m.FollowerControl(follower=follower)
                created = True
            else:
                created = False
            for name, value in columns.items():
                setattr(row, name, value)
            row.save(force_insert=created)
            store.create(m.FollowerAudit, follower=follower, action=action, detail=detail, by=by)
            return _state(row)

        return store.write(effect)
