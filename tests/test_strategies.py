"""A multi-leg strategy is copied with the leader's lot ratio between its legs, or
its legs are not left naked: cancelled if open, flattened if filled (by config), with an alert."""
from __future__ import annotations

from storage import models as m
from tests.conftest import wait_until
from trading.strategy import leg_quantity

CE, PE = "45105", "45106"  # NIFTY 24000 CE / PE, lot 75
STRATEGIES = {"copy": {"leg_window_seconds": 2.0}}  # strategy grouping is opt-in


def _leg(rig, security, side, lots, resting=True, **kw):
    price = rig.exchange.price(security)
    if resting:
        price = round(price * (0.9 if side == "BUY" else 1.1), 1)
        return rig.place(security_id=security, segment="NSE_FNO", side=side, quantity=75 * lots, price=price,
                         product="MARGIN", **kw)
    return rig.place(security_id=security, segment="NSE_FNO", side=side, quantity=75 * lots, order_type="MARKET",
                     product="MARGIN", **kw)


def test_1_4_5_legs_copied_with_the_same_lot_ratio(make_rig):
    rig = make_rig(config=STRATEGIES)
    call, put = _leg(rig, CE, "BUY", 4), _leg(rig, PE, "SELL", 2)
    assert rig.follower_copy(call)["quantity"] == 150 and rig.follower_copy(put)["quantity"] == 75  # 2:1 kept
    # one strategy: whichever leg reached the sizing actor first leads it
    assert rig.store.leader_order(put).group_id == rig.store.leader_order(call).group_id in (call, put)


def test_1_4_5_a_leg_that_cannot_keep_the_ratio_unwinds_the_placed_legs(make_rig):
    rig = make_rig(config=STRATEGIES)
    call = _leg(rig, CE, "BUY", 2)     # halved: 1 lot
    rig.follower_copy(call)
    put = _leg(rig, PE, "SELL", 1)     # would need half a lot
    assert rig.wait_skip(put, "f1").reason == "strategy_ratio"
    rig.wait_copy(call, lambda c: c["orderStatus"] == "CANCELLED", message="the naked leg cancelled")
    assert rig.store.read(lambda: m.Alert.select().where(m.Alert.key == "strategy:f1").count()) == 1


def test_1_4_5_a_rejected_leg_unwinds_the_placed_legs(make_rig):
    rig = make_rig(config=STRATEGIES)
    call = _leg(rig, CE, "BUY", 2)
    rig.follower_copy(call)
    rig.exchange.reject_next(rig.follower_ids["f1"], error_code="DH-906", message="RMS: order rejected")
    put = _leg(rig, PE, "SELL", 2)
    rig.wait_row(put, lambda r: r.status == "REJECTED", message="leg rejected")
    rig.wait_copy(call, lambda c: c["orderStatus"] == "CANCELLED", message="the naked leg cancelled")


def test_1_4_5_a_filled_naked_leg_is_flattened_when_configured(make_rig):
    rig = make_rig(config={"copy": {"flatten_naked_legs": True, "leg_window_seconds": 2.0}})
    call = _leg(rig, CE, "BUY", 2, resting=False)  # fills at once, at the leader and at the follower
    rig.wait_row(call, lambda r: r.status == "TRADED", message="first leg filled")
    rig.exchange.reject_next(rig.follower_ids["f1"], error_code="DH-906", message="RMS: order rejected")
    _leg(rig, PE, "SELL", 2)
    positions = lambda: {p["securityId"]: p["netQty"] for p in rig.exchange.positions(rig.follower_ids["f1"])}
    wait_until(lambda: positions().get(CE) == 0, message="the follower's naked call flattened")
    assert rig.copy_row(call).anomaly == "flattened"


def test_1_4_5_without_flattening_a_filled_naked_leg_raises_a_critical_alert(make_rig):
    rig = make_rig(config=STRATEGIES)
    call = _leg(rig, CE, "BUY", 2, resting=False)
    rig.wait_row(call, lambda r: r.status == "TRADED", message="first leg filled")
    rig.exchange.reject_next(rig.follower_ids["f1"], error_code="DH-906", message="RMS: order rejected")
    _leg(rig, PE, "SELL", 2)
    wait_until(lambda: rig.store.read(lambda: m.Alert.select().where(m.Alert.key == "naked:f1").count()) == 1,
               message="naked-leg alert")
    assert rig.copy_row(call).anomaly == "naked_leg"


def test_1_4_5_leg_quantity_rule():
    assert leg_quantity(300, 150, 150, 75) == 75
    assert leg_quantity(150, 75, 75, 75) is None      # half a lot
    assert leg_quantity(150, 0, 150, 75) is None      # first leg not copied
    assert leg_quantity(75, 150, 225, 75) == 450      # a follower sized up keeps the ratio too


def test_1_4_5_without_a_window_derivative_orders_are_copied_independently(rig):
    call, put = _leg(rig, CE, "BUY", 2), _leg(rig, PE, "SELL", 1)  # 1 lot halves to nothing on its own
    assert rig.follower_copy(call)["quantity"] == 75
    assert rig.wait_skip(put, "f1").reason == "size_rounds_to_zero"
    assert rig.follower_order_now(call)["orderStatus"] == "PENDING"  # nothing unwound
