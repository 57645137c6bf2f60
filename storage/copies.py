"""Leader orders and their follower copies, as the rest of the copier reads them: the operator
commands, the live view, the reconciler and the gauges. (The order actor, which writes them, keeps
its own storage.)"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Iterable

from storage import models as m
from storage.base import Transactions
from trading.reconcile import StoredCopy


# An order in one of these is not finished for the copier: open at the broker, or still being worked.
OPEN_STATES = ("PENDING_PLACEMENT", "UNKNOWN", "TRANSIT", "PENDING", "PART_TRADED")


@dataclass(frozen=True)
class LeaderOrderRecord:
    order_id: str
    status: str
    security_id: str
    symbol: str
    side: str
    quantity: int
    order_type: str  # LIMIT, MARKET, STOP_LOSS, STOP_LOSS_MARKET ("" when not recorded)
    account: str = "leader"  # whose order: "leader", or "leader:NAME" of several leaders


@dataclass(frozen=True)
class CopyRecord:
    leader_order_id: str
    follower: str
    correlation_id: str
    broker_order_id: str | None
    status: str
    quantity: int
    skip_reason: str | None
    latency_ms: float | None  # leader update received -> placement request sent
    part: int = 0  # which slice of a copy above the freeze quantity (0: the first, or the only one)
    filled_qty: int = 0
    super_order: bool = False  # a super order: an entry with a target and a stop-loss leg
    target_leg: str | None = None  # a super order's exit legs at the broker (None: not placed or not seen yet)
    stop_loss_leg: str | None = None
    held: bool = False  # a SELL leg held until its strategy's BUY legs fill (legs: buy_first)


@dataclass(frozen=True)
class OpenOrders:
    """How many orders are open, per account, and how many open copies lag their leader order."""

    leaders: dict[str, int] = field(default_factory=dict)  # by leader account (those with open orders)
    followers: dict[str, int] = field(default_factory=dict)
    lagging: dict[str, int] = field(default_factory=dict)

    @property
    def leader(self) -> int:
        """Open orders of every leader."""
        return sum(self.leaders.values())


def _order_type(terms: str) -> str:
    try:
        return str(json.loads(terms).get("order_type", ""))
    except (ValueError, AttributeError):
        return ""


def _leader(row: m.LeaderOrder) -> LeaderOrderRecord:
    return LeaderOrderRecord(row.order_id, row.status, row.security_id, row.symbol, row.side, row.quantity,
                             _order_type(row.terms), row.account)


def _copy(row: m.FollowerOrder) -> CopyRecord:
    return CopyRecord(row.leader_order_id, row.follower, row.correlation_id, row.broker_order_id, row.status,
                      row.quantity, row.skip_reason, row.latency_ms, row.part, row.filled_qty,
                      bool(json.loads(row.target or "{}").get("super_order")), row.target_leg, row.stop_loss_leg,
                      bool(row.held))


_CLOSED_UNFILLED = ("CANCELLED", "REJECTED", "EXPIRED")


def by_follower(copies: list[CopyRecord]) -> dict[str, list[CopyRecord]]:
    """A leader order's copies per follower, each a list of its slices in order (one for a copy
    within the freeze quantity)."""
    out: dict[str, list[CopyRecord]] = {}
    for copy in sorted(copies, key=lambda record: record.part):
        out.setdefault(copy.follower, []).append(copy)
    return out


def copy_quantity(slices: list[CopyRecord]) -> int:
    """The quantity a (sliced) copy stands for: its slices still working or filled, what the
    closed ones filled; all of them when none is left."""
    live = [s for s in slices if s.status not in _CLOSED_UNFILLED]
    if not live:
        return sum(s.quantity for s in slices)
    return sum(s.quantity for s in live) + sum(s.filled_qty for s in slices if s.status in _CLOSED_UNFILLED)


def copy_status(slices: list[CopyRecord]) -> str:
    """One status for a copy's slices: theirs when they agree, else each status once (`CANCELLED/PENDING`)."""
    return "/".join(sorted({s.status for s in slices}))


class Copies:
    def __init__(self, store: Transactions) -> None:
        self._store = store

    def recent(self, limit: int, follower: str | None = None) -> list[tuple[LeaderOrderRecord, list[CopyRecord]]]:
        """The `limit` leader orders first seen last, newest first, each with its copies (of
        `follower` only, when given) in the order they were made."""
        def query() -> list[tuple[LeaderOrderRecord, list[CopyRecord]]]:
            leaders = [_leader(row) for row in m.LeaderOrder.select()
                       .order_by(m.LeaderOrder.first_seen_at.desc()).limit(limit)]
            copies = m.FollowerOrder.select().where(m.FollowerOrder.leader_order_id.in_([lo.order_id for lo in leaders]))
            if follower is not None:
                copies = copies.where(m.FollowerOrder.follower == follower)
            by_leader: dict[str, list[CopyRecord]] = {}
            for row in copies.order_by(m.FollowerOrder.id):
                by_leader.setdefault(row.leader_order_id, []).append(_copy(row))
            return [(leader, by_leader.get(leader.order_id, [])) for leader in leaders]

        return self._store.read(query)

    def followers(self) -> set[str]:
        """The followers that hold any copy."""
        return self._store.read(lambda: {row.follower for row in m.FollowerOrder.select(m.FollowerOrder.follower)
                                         .distinct()})

    def copy_of(self, leader_order_id: str, follower: str) -> CopyRecord | None:
        """`follower`'s copy of a leader order, if one was made."""
        row = self._store.read(lambda: m.FollowerOrder.select().where(
            (m.FollowerOrder.leader_order_id == leader_order_id) & (m.FollowerOrder.follower == follower))
            .order_by(m.FollowerOrder.id.desc()).first())
        return _copy(row) if row is not None else None

    def open_orders(self, followers: Iterable[str]) -> OpenOrders:
        """Open leader orders, and open and lagging copies of each of `followers` (0 for none)."""
        # Aggregates in SQL: the router's gauges run this under the store's lock, beside the hot path.
        marks = ", ".join("?" for _ in OPEN_STATES)
        db = self._store.db

        def counts() -> OpenOrders:
            leaders = dict(db.execute_sql(f'SELECT "account", COUNT(*) FROM "leader_order" WHERE "status" IN ({marks}) '
                                          'GROUP BY "account"', OPEN_STATES).fetchall())
            names = list(followers)
            result = OpenOrders(leaders, {name: 0 for name in names}, {name: 0 for name in names})
            for name, count, lag in db.execute_sql(
                    f'SELECT "follower", COUNT(*), SUM("anomaly" = \'lagging\') FROM "follower_order" '
                    f'WHERE "status" IN ({marks}) GROUP BY "follower"', OPEN_STATES):
                result.followers[name], result.lagging[name] = count, lag or 0
            return result

        return self._store.read(counts)

    def for_reconcile(self) -> tuple[list[StoredCopy], set[str]]:
        """Every copy with what the copier stored of its leader order, and every leader order id:
        read in one statement each, as the reconciler runs beside the hot path, under the store's lock."""
        def query() -> tuple[list[StoredCopy], set[str]]:
            copies = [StoredCopy(leader_order_id, follower, correlation_id, status, quantity, broker_order_id is not None,
                                 sized_for=leader_quantity, cancel_requested=bool(cancel_requested),
                                 leader_status=leader_status or "", leader_filled_at=leader_filled_at, part=part)
                      for (leader_order_id, follower, correlation_id, status, quantity, broker_order_id, cancel_requested,
                           leader_quantity, leader_status, leader_filled_at, part) in self._store.db.execute_sql(
                          'SELECT f."leader_order_id", f."follower", f."correlation_id", f."status", f."quantity", '
                          'f."broker_order_id", f."cancel_requested", l."quantity", l."status", l."filled_at", '
                          'f."part" FROM "follower_order" AS f '
                          'LEFT JOIN "leader_order" AS l ON l."order_id" = f."leader_order_id"')]
            known = {row[0] for row in self._store.db.execute_sql('SELECT "order_id" FROM "leader_order"')}
            return copies, known

        return self._store.read(query)
