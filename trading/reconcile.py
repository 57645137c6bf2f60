"""Reconciliation (B.5): compare what the broker's books hold with what the copier stored.

Pure: the reconciler actor (and `run.py reconcile`) fetch the books and the stored copies and
call `find_divergences`; storing, alerting and repairing are theirs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

from trading.orders import OrderStatus, OrderUpdate

MISSING_REPLICATION = "missing_replication"  # a copyable leader order with no copy recorded
MISSING_FOLLOWER_ORDER = "missing_follower_order"  # a copy the copier placed, absent from the follower's book
STATUS_MISMATCH = "status_mismatch"  # the leader's order is finished, its copy is still open
QUANTITY_MISMATCH = "quantity_mismatch"  # an open copy whose quantity is not what sizing asked for
OUTCOME_UNKNOWN = "outcome_unknown"  # a copy whose placement's outcome the copier does not know yet
KINDS = (MISSING_REPLICATION, MISSING_FOLLOWER_ORDER, STATUS_MISMATCH, QUANTITY_MISMATCH, OUTCOME_UNKNOWN)

_FINISHED = (OrderStatus.CANCELLED, OrderStatus.REJECTED, OrderStatus.EXPIRED)


@dataclass(frozen=True)
class StoredCopy:
    leader_order_id: str
    follower: str
    correlation_id: str
    status: str
    target_quantity: int
    placed: bool  # the broker acknowledged it (it has a broker order id)


@dataclass(frozen=True)
class Divergence:
    kind: str
    leader_order_id: str | None
    follower: str | None
    detail: str


def find_divergences(leader_book: Iterable[OrderUpdate], follower_books: Mapping[str, Iterable[OrderUpdate]],
                     copies: Iterable[StoredCopy], known_leader_orders: set[str], followers: list[str],
                     ) -> list[Divergence]:
    """Every divergence between the books and storage, in a stable order."""
    by_leader: dict[str, dict[str, StoredCopy]] = {}
    for copy in copies:
        by_leader.setdefault(copy.leader_order_id, {})[copy.follower] = copy
    books = {name: {u.correlation_id: u for u in book if u.correlation_id} for name, book in follower_books.items()}
    out: list[Divergence] = []
    for leader in leader_book:
        known = by_leader.get(leader.order_id, {})
        if leader.status == OrderStatus.REJECTED:
            continue
        if leader.order_id not in known_leader_orders:
            if leader.status not in _FINISHED:
                out.append(Divergence(MISSING_REPLICATION, leader.order_id, None,
                                      f"leader order {leader.status.value} never seen by the copier"))
            continue
        for follower in followers:
            copy = known.get(follower)
            if copy is None:
                continue  # an order-level skip (instrument, market hours...) was recorded instead
            if copy.status in ("SKIPPED",) or not copy.placed:
                continue
            at_broker = books.get(follower, {}).get(copy.correlation_id)
            if at_broker is None:
                out.append(Divergence(MISSING_FOLLOWER_ORDER, leader.order_id, follower,
                                      f"copy {copy.correlation_id} is not in {follower}'s order book"))
                continue
            if leader.status in _FINISHED and at_broker.status.is_open:
                out.append(Divergence(STATUS_MISMATCH, leader.order_id, follower,
                                      f"leader {leader.status.value}, copy still {at_broker.status.value}"))
            elif at_broker.status.is_open and at_broker.terms.quantity != copy.target_quantity:
                out.append(Divergence(QUANTITY_MISMATCH, leader.order_id, follower,
                                      f"copy holds {at_broker.terms.quantity}, sizing asked for {copy.target_quantity}"))
    out.extend(_unknown_outcomes([c for known in by_leader.values() for c in known.values()], books))
    return out


def _unknown_outcomes(copies: Iterable[StoredCopy], books: Mapping[str, Mapping[str, OrderUpdate]]) -> list[Divergence]:
    """Copies whose placement's outcome is unknown, with what the follower's book says of them
    (the copier keeps looking them up; it adopts the order, or places it once it is known absent)."""
    out = []
    for copy in copies:
        if copy.status != OrderStatus.UNKNOWN.value:
            continue
        at_broker = books.get(copy.follower, {}).get(copy.correlation_id)
        seen = (f"in {copy.follower}'s order book as {at_broker.status.value} (order {at_broker.order_id})"
                if at_broker is not None else f"not in {copy.follower}'s order book")
        out.append(Divergence(OUTCOME_UNKNOWN, copy.leader_order_id, copy.follower,
                              f"placement of copy {copy.correlation_id} has an unknown outcome (being looked up); {seen}"))
    return out
