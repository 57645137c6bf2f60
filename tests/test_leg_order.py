"""Leg order for option strategies (trading/leg_order.py), rule by rule: which copies are held,
and when a held SELL leg is released or refused. Pure: no exchange, no actors, no clock."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from trading.leg_order import (BUY_FIRST, PARALLEL, BuyLeg, Hold, HoldView, Refuse, Release, hold_deadline,
                               held_at_sight, verdict, window_closes)
from trading.orders import OrderStatus as S
from trading.orders import Side

NOW = 1_000.0


@pytest.mark.parametrize("mode,side,group_id,held", [
    (BUY_FIRST, Side.SELL, "L1", True),
    (BUY_FIRST, Side.BUY, "L1", False),
    (BUY_FIRST, Side.SELL, None, False),   # not a leg of a strategy (grouping off, or not a derivative)
    (PARALLEL, Side.SELL, "L1", False),
])
def test_only_a_sell_leg_of_a_strategy_for_a_buy_first_follower_is_held(mode, side, group_id, held):
    assert held_at_sight(mode, side, group_id) is held


@dataclass(frozen=True)
class Row:
    legs: tuple[BuyLeg, ...]
    now: float
    expected: type
    why: str


WINDOW = NOW + 2.0  # the leg window closes then
DEADLINE = NOW + 30.0


def leg(*statuses: S, reason: str = "") -> BuyLeg:
    return BuyLeg("L2", tuple(statuses), reason)


ROWS = [
    Row((), NOW, Hold, "no BUY leg yet, the window open: a BUY leg may still come"),
    Row((), WINDOW, Release, "no BUY leg by the window's close: the leader's naked sell is copied"),
    Row((leg(S.PENDING),), NOW, Hold, "a BUY leg working: held"),
    Row((leg(S.PART_TRADED),), NOW + 5, Hold, "a partial fill is not enough"),
    Row((leg(S.PENDING_PLACEMENT),), NOW, Hold, "a BUY leg not sent yet: held"),
    Row((leg(S.UNKNOWN),), NOW, Hold, "a BUY leg whose placement is being looked up: held"),
    Row((leg(S.TRADED),), NOW, Release, "every BUY leg filled: released (before the window closes)"),
    Row((leg(S.TRADED, S.TRADED),), NOW, Release, "every slice of the BUY leg filled"),
    Row((leg(S.TRADED, S.PENDING),), NOW, Hold, "one slice of the BUY leg still working"),
    Row((leg(S.TRADED), BuyLeg("L3", (S.PENDING,))), NOW, Hold, "one of two BUY legs filled"),
    Row((leg(S.REJECTED, reason="RMS: insufficient margin"),), NOW, Refuse, "the BUY leg was rejected"),
    Row((leg(S.CANCELLED),), NOW, Refuse, "the BUY leg was cancelled"),
    Row((leg(S.EXPIRED),), NOW, Refuse, "the BUY leg expired"),
    Row((leg(S.SKIPPED, reason="insufficient_capital"),), NOW, Refuse, "the BUY leg was skipped for this follower"),
    Row((leg(),), NOW, Refuse, "the BUY leg was not copied to this follower"),
    Row((leg(S.TRADED, S.REJECTED),), NOW, Refuse, "a slice of the BUY leg was rejected: partly naked otherwise"),
    Row((leg(S.PENDING),), DEADLINE, Refuse, "the BUY leg did not fill within the bound"),
    Row((leg(S.TRADED), BuyLeg("L3", (S.CANCELLED,))), NOW, Refuse, "one filled, one cancelled: refused"),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.why for r in ROWS])
def test_a_held_sell_leg_is_released_or_refused_as_its_buy_legs_go(row: Row):
    result = verdict(HoldView(row.legs, WINDOW, DEADLINE, 30.0), row.now)
    assert isinstance(result, row.expected), result


def test_a_held_leg_asks_again_when_the_window_closes_or_at_its_deadline():
    assert verdict(HoldView((), WINDOW, DEADLINE, 30.0), NOW) == Hold(WINDOW)
    assert verdict(HoldView((leg(S.PENDING),), WINDOW, DEADLINE, 30.0), NOW) == Hold(DEADLINE)


def test_a_refusal_names_the_buy_leg_and_why():
    rejected = verdict(HoldView((leg(S.REJECTED, reason="RMS: insufficient margin"),), WINDOW, DEADLINE, 30.0), NOW)
    assert isinstance(rejected, Refuse) and "L2" in rejected.detail and "rejected" in rejected.detail
    assert "insufficient margin" in rejected.detail
    late = verdict(HoldView((leg(S.PENDING),), WINDOW, DEADLINE, 30.0), DEADLINE)
    assert isinstance(late, Refuse) and "L2" in late.detail and "30s" in late.detail and "PENDING" in late.detail


def test_the_wait_is_bounded_by_the_setting_and_by_a_market_legs_own_deadline():
    assert hold_deadline(NOW, 30.0, None) == NOW + 30.0            # a priced leg: the setting
    assert hold_deadline(NOW, 30.0, NOW + 5.0) == NOW + 5.0        # a MARKET leg: not sent late
    assert hold_deadline(NOW, 3.0, NOW + 5.0) == NOW + 3.0


def test_the_window_closes_a_little_after_the_last_leg_plus_the_window():
    assert NOW + 2.0 < window_closes(NOW, 2.0) <= NOW + 3.0
