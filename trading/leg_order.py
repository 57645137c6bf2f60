"""Leg order for option strategies, per follower (`legs`): `parallel` places every leg as it comes;
`buy_first` holds a strategy's SELL legs until its BUY legs are filled at the follower's broker, so
the follower gets the hedge's margin benefit and is never left naked short.

Pure rules: the order actor (actors/order_legs.py) gathers what they need (the strategy's BUY legs
as copied to the follower, the times) and carries out the verdict.

    held_at_sight(BUY_FIRST, Side.SELL, group_id="L1")                    # True: stored as held
    verdict(HoldView(buy_legs=(BuyLeg("L2", (TRADED,)),), ...), now)     # Release()
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from trading.orders import OrderStatus, Side

S = OrderStatus
PARALLEL = "parallel"
BUY_FIRST = "buy_first"
LEG_ORDERS = (PARALLEL, BUY_FIRST)
HEDGE_NOT_FILLED = "hedge_not_filled"  # the skip reason of a SELL leg whose BUY legs did not fill
# A leg's strategy is decided by the sizing actor a moment after the leg is seen: a SELL leg
# waiting for BUY legs waits this much past the window, so one seen just inside it still counts.
WINDOW_GRACE_SECONDS = 0.5
_FAILED = {S.REJECTED: "rejected", S.CANCELLED: "cancelled", S.EXPIRED: "expired", S.SKIPPED: "skipped"}


def held_at_sight(mode: str, side: Side, group_id: str | None) -> bool:
    """Whether a follower's copy of a leader order is stored held (not sent) when first decided:
    a SELL leg of a strategy, for a `buy_first` follower."""
    return mode == BUY_FIRST and group_id is not None and side == Side.SELL


@dataclass(frozen=True)
class BuyLeg:
    """One BUY leg of the strategy as copied to the follower: its copy's status, one per slice
    (none: not copied there); `reason`: why it was skipped or refused, when it was."""

    leader_order_id: str
    statuses: tuple[OrderStatus, ...]
    reason: str = ""

    @property
    def filled(self) -> bool:
        return bool(self.statuses) and all(status is S.TRADED for status in self.statuses)

    @property
    def failure(self) -> str | None:
        """Why this leg will never be filled whole at the follower (None: it still may be)."""
        if not self.statuses:
            return "not copied to this follower"
        failed = next((status for status in self.statuses if status in _FAILED), None)
        if failed is None:
            return None
        return _FAILED[failed] + (f" ({self.reason})" if self.reason else "")


@dataclass(frozen=True)
class HoldView:
    """What a held SELL leg's verdict needs: the strategy's BUY legs copied to the follower, when
    its leg window closes (its latest leg seen + the window), and the bound on waiting for them."""

    buy_legs: tuple[BuyLeg, ...]
    window_closes: float  # wall clock
    deadline: float  # wall clock: BUY legs not filled by then refuse the SELL leg
    wait_seconds: float  # the bound, as configured (for the detail)


@dataclass(frozen=True)
class Hold:
    """Still held; ask again at `until` (wall clock) or on news of a BUY leg."""

    until: float


@dataclass(frozen=True)
class Release:
    """Place it now (with the terms it has now)."""


@dataclass(frozen=True)
class Refuse:
    """Never placed: a recorded skip (`HEDGE_NOT_FILLED`) with `detail`."""

    detail: str


Verdict = Union[Hold, Release, Refuse]


def window_closes(last_leg_seen_at: float, leg_window: float) -> float:
    return last_leg_seen_at + leg_window + WINDOW_GRACE_SECONDS


def hold_deadline(seen_at: float, wait_seconds: float, place_by: float | None) -> float:
    """How long a SELL leg seen at `seen_at` may wait for its BUY legs: `wait_seconds`, and no longer
    than its own placement deadline (a MARKET leg past `copy.max_delay_seconds` is not sent late)."""
    deadline = seen_at + wait_seconds
    return deadline if place_by is None else min(deadline, place_by)


def verdict(view: HoldView, now: float) -> Verdict:
    """Release a held SELL leg when every BUY leg of its strategy copied to the follower filled (a
    partial fill is not enough); with no BUY leg yet, when the leg window closed (the leader's
    strategy is a naked sell: that is what is copied). Refuse it when a BUY leg failed, or did not
    fill by the deadline."""
    for leg in view.buy_legs:
        failure = leg.failure
        if failure is not None:
            return Refuse(f"BUY leg {leg.leader_order_id} {failure}: the SELL leg is not placed without its hedge")
    if view.buy_legs:
        if all(leg.filled for leg in view.buy_legs):
            return Release()
        if now >= view.deadline:
            waiting = ", ".join(f"{leg.leader_order_id} ({'/'.join(s.value for s in leg.statuses)})"
                                for leg in view.buy_legs if not leg.filled)
            return Refuse(f"BUY leg {waiting} not filled within {view.wait_seconds:g}s "
                          "(copy.buy_first_wait_seconds): the SELL leg is not placed without its hedge")
        return Hold(view.deadline)
    if now >= view.window_closes:
        return Release()
    return Hold(view.window_closes)
