"""Open orders of an earlier trading session, read and closed at start-up (the rule that decides
which ones the exchange expired is trading/expiry.py)."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import date
from typing import Mapping

from storage import models as m
from storage.store import Store

OPEN_STATES = ("PENDING_PLACEMENT", "TRANSIT", "PENDING", "PART_TRADED")


@dataclass(frozen=True)
class OpenOrder:
    """A leader order entered before some day, with what of it is still open in storage."""

    leader_order_id: str
    segment: str
    created_at: str  # the broker's order entry time, IST text
    validity: str
    leader_open: bool
    copies: Mapping[tuple[str, int], str]  # (follower, slice) -> validity of its copy, open copies only


def open_orders_entered_before(store: Store, day: date) -> list[OpenOrder]:
    """Leader orders entered before `day` (by their IST entry time) that are open, or have an open copy."""
    def query() -> list[OpenOrder]:
        marks = ", ".join("?" for _ in OPEN_STATES)
        leaders = store.db.execute_sql(
            f'SELECT "order_id", "exchange_segment", "created_at", "terms", "status" FROM "leader_order" '
            f'WHERE "created_at" != \'\' AND "created_at" < ? AND ("status" IN ({marks}) OR "order_id" IN '
            f'(SELECT "leader_order_id" FROM "follower_order" WHERE "status" IN ({marks})))',
            (day.isoformat(), *OPEN_STATES, *OPEN_STATES)).fetchall()
        out = []
        for order_id, segment, created_at, terms, status in leaders:
            copies = {(follower, part): json.loads(target).get("validity", "")
                      for follower, part, target in store.db.execute_sql(
                          f'SELECT "follower", "part", "target" FROM "follower_order" WHERE "leader_order_id" = ? '
                          f'AND "status" IN ({marks})', (order_id, *OPEN_STATES))}
            out.append(OpenOrder(order_id, segment, created_at, json.loads(terms).get("validity", ""),
                                 status in OPEN_STATES, copies))
        return out

    return store.read(query)


def close_expired(store: Store, leader_order_id: str, close_leader: bool, copies: Mapping[tuple[str, int], str],
                  reason: str) -> None:
    """In one transaction: the leader order (when `close_leader`) and the copies of `copies`
    ((follower, slice) -> its event-store key) become EXPIRED, each with an EXPIRED event carrying `reason`;
    their updates still waiting in the inbox are acknowledged, having nothing left to act on."""
    def effect() -> None:
        now = time.time()
        if close_leader:
            leader = m.LeaderOrder.get_by_id(leader_order_id)
            m.LeaderOrder.update(status="EXPIRED", last_event_at=now) \
                .where(m.LeaderOrder.order_id == leader_order_id).execute()
            store.events.append(f"L:{leader_order_id}", "EXPIRED", {
                "status": "EXPIRED", "filled_qty": leader.filled_qty, "avg_price": leader.avg_price,
                "terms": json.loads(leader.terms), "reason": reason})
        waiting = m.InboundEvent.done == False  # noqa: E712
        orders = (m.InboundEvent.account == "leader") & (m.InboundEvent.order_id == leader_order_id)
        for (follower, part), key in copies.items():
            row = m.FollowerOrder.get((m.FollowerOrder.leader_order_id == leader_order_id)
                                      & (m.FollowerOrder.follower == follower) & (m.FollowerOrder.part == part))
            if row.broker_order_id:
                orders |= (m.InboundEvent.account == follower) & (m.InboundEvent.order_id == row.broker_order_id)
            m.FollowerOrder.update(status="EXPIRED", updated_at=now).where(m.FollowerOrder.id == row.id).execute()
            store.events.append(key, "EXPIRED", {"status": "EXPIRED", "reason": reason})
        m.InboundEvent.update(done=True, outcome="session_expired").where(waiting & orders).execute()

    store.write(effect)
