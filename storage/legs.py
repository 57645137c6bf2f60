"""What a held SELL leg of a strategy reads of its strategy: every leg of it, and how each was
copied to each follower (trading/leg_order.py decides from that)."""
from __future__ import annotations

from dataclasses import dataclass

from storage import models as m
from storage.store import Store


@dataclass(frozen=True)
class LegCopy:
    """One slice of a follower's copy of a leg: its status, and why it was skipped or refused."""

    status: str
    reason: str


@dataclass(frozen=True)
class StrategyLeg:
    """One leg of a strategy: the leader's order, and its copies by follower (slices, first first)."""

    leader_order_id: str
    side: str
    seen_at: float  # wall clock: when the copier first saw it
    copies: dict[str, list[LegCopy]]


def strategy_leg_copies(store: Store, group_id: str) -> list[StrategyLeg]:
    """Every leg of the strategy `group_id`, in the order they were seen."""
    def query() -> list[StrategyLeg]:
        leaders = list(m.LeaderOrder.select(m.LeaderOrder.order_id, m.LeaderOrder.side, m.LeaderOrder.first_seen_at)
                       .where(m.LeaderOrder.group_id == group_id).order_by(m.LeaderOrder.first_seen_at))
        copies: dict[str, dict[str, list[LegCopy]]] = {lo.order_id: {} for lo in leaders}
        for row in (m.FollowerOrder.select(m.FollowerOrder.leader_order_id, m.FollowerOrder.follower,
                                           m.FollowerOrder.status, m.FollowerOrder.skip_reason,
                                           m.FollowerOrder.last_error)
                    .where(m.FollowerOrder.leader_order_id.in_(list(copies))).order_by(m.FollowerOrder.part)):
            copies[row.leader_order_id].setdefault(row.follower, []).append(
                LegCopy(row.status, row.skip_reason or row.last_error or ""))
        return [StrategyLeg(lo.order_id, lo.side, lo.first_seen_at, copies[lo.order_id]) for lo in leaders]

    return store.read(query)


def held_legs(store: Store, follower: str) -> int:
    """How many of `follower`'s copies are held now (each counted once, however many slices)."""
    return store.read(lambda: m.FollowerOrder.select().where(
        (m.FollowerOrder.follower == follower) & (m.FollowerOrder.held == True)  # noqa: E712
        & (m.FollowerOrder.part == 0)).count())
