"""Pre-trade risk rules and position-aware exit sizing, as pure functions."""
from __future__ import annotations

import pytest

from trading.orders import OrderTerms, OrderType, Product, Side, Validity
from trading.risk import (RiskLimits, RiskState, check, daily_loss_breached, exit_quantity, is_exit,
                          position_key, surely_held)

NOW = 1_000_000.0
RELIANCE = ("NSE_EQ", "2885")
TCS = ("NSE_EQ", "11536")
NIFTY_CE = ("NSE_FNO", "43210")


def order(side: Side = Side.BUY, quantity: int = 10, security: tuple[str, str] = RELIANCE) -> OrderTerms:
    return OrderTerms(security_id=security[1], exchange_segment=security[0], side=side, product=Product.INTRADAY,
                      order_type=OrderType.LIMIT, validity=Validity.DAY, quantity=quantity, price=100.0)


# -- limits --------------------------------------------------------------------------------------

def test_no_limits_allow_everything() -> None:
    verdict = check(RiskLimits(), RiskState(), order(quantity=10**6), 1e6, NOW)
    assert verdict.allowed and verdict.rule is None
    assert not RiskLimits().enabled


@pytest.mark.parametrize("data,message", [
    ({"max_order_value": 0}, "positive"),
    ({"max_daily_loss": -5}, "positive"),
    ({"max_capital_share_per_instrument": 1.5}, "fraction"),
    ({"max_open_positions": 2.5}, "whole number"),
    ({"max_order_value": True}, "positive"),
    ({"max_orders_per_minit": 5}, "unknown keys"),
])
def test_limits_are_validated(data: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RiskLimits.from_mapping(data)


def test_limits_from_config_mapping() -> None:
    limits = RiskLimits.from_mapping({"max_order_value": 50_000, "max_open_positions": 3, "max_daily_loss": None})
    assert limits == RiskLimits(max_order_value=50_000, max_open_positions=3)
    assert limits.enabled
    assert RiskLimits.from_mapping(None) == RiskLimits()


# -- each rule ------------------------------------------------------------------------------------

def test_max_order_value() -> None:
    limits = RiskLimits(max_order_value=10_000)
    assert check(limits, RiskState(), order(quantity=100), 100.0, NOW).allowed  # exactly at the limit
    verdict = check(limits, RiskState(), order(quantity=101), 100.0, NOW)
    assert (verdict.allowed, verdict.rule) == (False, "max_order_value")
    assert "10100.00" in verdict.detail


def test_value_rules_refuse_an_order_without_a_price() -> None:
    verdict = check(RiskLimits(max_order_value=10_000), RiskState(), order(), 0.0, NOW)
    assert (verdict.allowed, verdict.rule) == (False, "price_unknown")
    assert check(RiskLimits(max_open_positions=5), RiskState(), order(), 0.0, NOW).allowed  # no value rule


def test_max_open_positions_only_blocks_a_new_position() -> None:
    limits = RiskLimits(max_open_positions=2)
    state = RiskState(positions={RELIANCE: 10, TCS: -5, NIFTY_CE: 0})
    assert state.open_positions == 2
    verdict = check(limits, state, order(security=NIFTY_CE, quantity=50), 100.0, NOW)
    assert (verdict.allowed, verdict.rule) == (False, "max_open_positions")
    assert check(limits, state, order(quantity=5), 100.0, NOW).allowed  # adds to an open one
    assert check(limits, RiskState(positions={RELIANCE: 10}), order(security=TCS), 100.0, NOW).allowed


def test_max_quantity_per_instrument_counts_the_position_after_the_order() -> None:
    limits = RiskLimits(max_quantity_per_instrument=100)
    state = RiskState(positions={RELIANCE: 80})
    assert check(limits, state, order(quantity=20), 100.0, NOW).allowed
    verdict = check(limits, state, order(quantity=21), 100.0, NOW)
    assert (verdict.allowed, verdict.rule) == (False, "max_quantity_per_instrument")
    assert "80 -> 101" in verdict.detail
    short = RiskState(positions={RELIANCE: -90})
    assert check(limits, short, order(Side.SELL, 11), 100.0, NOW).rule == "max_quantity_per_instrument"


def test_reversal_is_checked_on_the_new_side() -> None:
    limits = RiskLimits(max_quantity_per_instrument=50)
    state = RiskState(positions={RELIANCE: 40})
    assert check(limits, state, order(Side.SELL, 90), 100.0, NOW).allowed  # 40 -> -50
    assert check(limits, state, order(Side.SELL, 91), 100.0, NOW).rule == "max_quantity_per_instrument"


def test_max_orders_per_minute_uses_a_sliding_window() -> None:
    limits = RiskLimits(max_orders_per_minute=3)
    state = RiskState(recent_orders=[NOW - 61, NOW - 59, NOW - 30, NOW - 1])
    verdict = check(limits, state, order(), 100.0, NOW)
    assert (verdict.allowed, verdict.rule) == (False, "max_orders_per_minute")
    assert check(limits, state, order(), 100.0, NOW + 2).allowed  # NOW-59 has left the window


def test_rate_limit_applies_to_exits_too() -> None:
    limits = RiskLimits(max_orders_per_minute=1, max_order_value=1)
    state = RiskState(positions={RELIANCE: 10}, recent_orders=[NOW - 5])
    assert check(limits, state, order(Side.SELL, 10), 100.0, NOW).rule == "max_orders_per_minute"


def test_max_capital_share_per_instrument() -> None:
    limits = RiskLimits(max_capital_share_per_instrument=0.25)
    state = RiskState(positions={RELIANCE: 100}, capital=100_000)
    assert check(limits, state, order(quantity=150), 100.0, NOW).allowed  # 250 x 100 = 25%
    verdict = check(limits, state, order(quantity=151), 100.0, NOW)
    assert (verdict.allowed, verdict.rule) == (False, "max_capital_share_per_instrument")
    assert "25.1%" in verdict.detail
    unknown = check(limits, RiskState(capital=0), order(), 100.0, NOW)
    assert (unknown.rule, unknown.detail) == ("max_capital_share_per_instrument", "capital is not known")


def test_max_daily_loss_blocks_new_risk_and_triggers_the_kill_switch() -> None:
    limits = RiskLimits(max_daily_loss=5_000)
    fine = RiskState(realised_pnl=-3_000, unrealised_pnl=-1_999)
    assert not daily_loss_breached(limits, fine)
    assert check(limits, fine, order(), 100.0, NOW).allowed
    hit = RiskState(positions={RELIANCE: 10}, realised_pnl=-3_000, unrealised_pnl=-2_000)
    assert hit.pnl_today == -5_000 and daily_loss_breached(limits, hit)
    verdict = check(limits, hit, order(security=TCS), 100.0, NOW)
    assert (verdict.allowed, verdict.rule) == (False, "max_daily_loss")
    # closing out what is held is still allowed: it can only lower the loss's growth
    assert check(limits, hit, order(Side.SELL, 10), 100.0, NOW).allowed
    assert not daily_loss_breached(RiskLimits(), hit)
    assert not daily_loss_breached(limits, RiskState(realised_pnl=50_000))


def test_exits_bypass_exposure_rules() -> None:
    limits = RiskLimits(max_order_value=100, max_open_positions=1, max_quantity_per_instrument=1,
                        max_capital_share_per_instrument=0.01)
    state = RiskState(positions={RELIANCE: 500, TCS: -300}, capital=1_000)
    assert check(limits, state, order(Side.SELL, 200), 100.0, NOW).allowed
    assert check(limits, state, order(Side.BUY, 300, TCS), 100.0, NOW).allowed  # covers the short fully
    assert not check(limits, state, order(Side.BUY, 301, TCS), 100.0, NOW).allowed  # would go long


def test_first_breach_in_documented_order_is_reported() -> None:
    limits = RiskLimits(max_order_value=1, max_quantity_per_instrument=1, max_open_positions=1,
                        max_capital_share_per_instrument=0.01, max_daily_loss=1, max_orders_per_minute=1)
    state = RiskState(positions={TCS: 5}, recent_orders=[NOW], capital=1, realised_pnl=-10)
    expected = ["max_orders_per_minute", "max_daily_loss", "max_order_value", "max_quantity_per_instrument",
                "max_open_positions", "max_capital_share_per_instrument"]
    for rule in expected:
        verdict = check(limits, state, order(), 100.0, NOW)
        assert verdict.rule == rule
        limits = RiskLimits.from_mapping({k: v for k, v in vars(limits).items() if k != rule})
    assert check(limits, state, order(), 100.0, NOW).allowed


def test_position_keys_separate_segments() -> None:
    limits = RiskLimits(max_quantity_per_instrument=10)
    state = RiskState(positions={("BSE_EQ", "2885"): 10})
    assert position_key(order()) == RELIANCE
    assert check(limits, state, order(quantity=10), 100.0, NOW).allowed


@pytest.mark.parametrize("before,signed,expected", [
    (10, -10, True), (10, -4, True), (10, -11, False), (10, 5, False), (0, -5, False),
    (-10, 10, True), (-10, 3, True), (-10, 11, False), (-10, -1, False),
])
def test_is_exit(before: int, signed: int, expected: bool) -> None:
    assert is_exit(before, signed) is expected


@pytest.mark.parametrize("one,other,expected", [
    (20, 10, 10), (10, 20, 10), (-20, -10, -10), (-5, -8, -5), (10, 10, 10), (10, -3, 0), (0, 7, 0), (-4, 0, 0),
])
def test_surely_held_is_what_both_readings_say_is_held(one: int, other: int, expected: int) -> None:
    assert surely_held(one, other) == expected


# -- exit_quantity -------------------------------------------------------------------------------

@pytest.mark.parametrize("leader_before,leader_exit,follower,lot,expected", [
    (100, 50, 40, 1, 20),  # leader closes 50%
    (100, 100, 40, 1, 40),  # leader closes 100%
    (100, 150, 40, 1, 40),  # leader reverses: the follower only exits; the excess is an entry
    (100, 50, 0, 1, 0),  # follower holds nothing
    (100, 50, 1, 1, 1),  # half a unit rounds up: an exit lowers risk
    (100, 30, 1, 1, 0),  # 0.3 of a unit: too small to follow
    (100, 25, 150, 50, 50),  # 37.5 units = 0.75 lot -> 1 lot
    (100, 20, 150, 50, 50),  # 30 units = 0.6 lot -> 1 lot
    (100, 10, 150, 50, 0),  # 15 units = 0.3 lot -> 0
    (100, 50, 150, 50, 100),  # 75 units = 1.5 lots -> 2 lots, within the 3 held
    (100, 100, 75, 50, 75),  # a full close takes the whole holding, even an odd one
    (100, 99, 50, 50, 50),  # never more than held
    (-100, 50, -40, 1, 20),  # short positions: buying back half
    (-100, 100, -150, 50, 150),
    (100, 50, -40, 1, 0),  # follower is short while the leader was long: never reverse
    (-100, 50, 40, 1, 0),
    (0, 50, 40, 1, 0),  # the leader had no position: not an exit
    (100, 0, 40, 1, 0),
])
def test_exit_quantity(leader_before: int, leader_exit: int, follower: int, lot: int, expected: int) -> None:
    qty = exit_quantity(leader_before, leader_exit, follower, lot)
    assert qty == expected
    assert 0 <= qty <= abs(follower)
    if qty and qty != abs(follower):
        assert qty % lot == 0


def test_repeated_partial_exits_end_flat() -> None:
    leader, follower, lot = 300, 6 * 25, 25
    for step in (100, 100, 100):
        qty = exit_quantity(leader, step, follower, lot)
        leader -= step
        follower -= qty
        assert follower >= 0
    assert (leader, follower) == (0, 0)
