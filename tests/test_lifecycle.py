"""Modifications, cancels, fills, follower rejections and their races: the copy follows the
leader's order through its whole life, one order actor at a time."""
from __future__ import annotations

import time

import pytest

from observability import metrics
from broker import codes
from storage import models as m
from tests.conftest import LEADER_ID, RELIANCE, TCS, wait_until
from trading.lifecycle import InvalidTransition, OrderEvent, event_for_status, next_state
from trading.orders import OrderStatus


def _resting(rig, **kw):
    """A leader LIMIT far enough from the market to rest; returns (leader id, follower copy)."""
    leader_id = rig.place(**kw)
    copy = rig.follower_copy(leader_id)
    rig.wait_row(leader_id, lambda r: r.broker_order_id is not None, message="placement answer stored")
    return leader_id, copy


# -- 2. modification ---------------------------------------------------------------------------
def test_2_1_modify_quantity_resizes_from_new_leader_qty(rig):
    leader_id, copy = _resting(rig, quantity=50)
    assert copy["quantity"] == 25
    rig.modify(leader_id, quantity=100)
    rig.wait_copy(leader_id, lambda c: c["quantity"] == 50, message="qty 50")
    rig.modify(leader_id, quantity=50)
    rig.wait_copy(leader_id, lambda c: c["quantity"] == 25, message="qty back to 25")


def test_2_2_modify_limit_price(rig):
    leader_id, _ = _resting(rig, price=1440.0)
    rig.modify(leader_id, price=1445.5)
    rig.wait_copy(leader_id, lambda c: c["price"] == 1445.5, message="new price")


def test_2_3_modify_trigger_price(rig):
    leader_id, _ = _resting(rig, order_type="STOP_LOSS", price=1560.0, trigger_price=1555.0)
    rig.modify(leader_id, trigger_price=1552.0)
    rig.wait_copy(leader_id, lambda c: c["triggerPrice"] == 1552.0 and c["price"] == 1560.0, message="trigger")


def test_2_4_modify_order_type_limit_to_market_and_back(rig):
    leader_id, _ = _resting(rig, security_id=TCS, price=round(rig.exchange.price(TCS) * 0.97, 1))
    price = rig.exchange.order(LEADER_ID, leader_id)["price"]
    rig.modify(leader_id, order_type="STOP_LOSS", trigger_price=round(price - 1, 1))
    rig.wait_copy(leader_id, lambda c: c["orderType"] == "STOP_LOSS", message="type STOP_LOSS")
    rig.modify(leader_id, order_type="LIMIT", trigger_price=0)
    rig.wait_copy(leader_id, lambda c: c["orderType"] == "LIMIT", message="type back to LIMIT")
    rig.modify(leader_id, order_type="MARKET", price=0)
    rig.wait_copy(leader_id, lambda c: c["orderType"] == "MARKET" or c["orderStatus"] == "TRADED",
                  message="type MARKET")
    entry = rig.follower_order_now(leader_id)
    assert entry["orderType"] == "MARKET"


def test_2_5_modify_validity_day_to_ioc(rig):
    leader_id, _ = _resting(rig)
    rig.modify(leader_id, validity="IOC")
    rig.wait_copy(leader_id, lambda c: c["validity"] == "IOC", message="validity IOC")


def test_2_6_rapid_modifications_coalesce_and_end_with_leader_values(make_rig):
    rig = make_rig(exchange={"rate_limits": {"per_second": 50}})  # the leader may modify 20 times a second
    leader_id, _ = _resting(rig, price=1400.0, quantity=20)
    for step in range(1, 21):  # 20 modifications in about a second
        rig.modify(leader_id, price=1400.0 + step, quantity=20 + 2 * step)
    final = rig.exchange.order(LEADER_ID, leader_id)
    rig.wait_copy(leader_id, lambda c: c["price"] == final["price"] and c["quantity"] == final["quantity"] // 2,
                  message="leader's final values")
    row = rig.copy_row(leader_id)
    count = rig.exchange.modification_count(rig.follower_ids["f1"], row.broker_order_id)
    assert 1 <= count <= 20 and count <= 25
    # every modification the broker took was sent and acknowledged by the copier's one actor
    rig.wait_row(leader_id, lambda r: r.modifications == count, message=f"{count} modifications stored")


# -- 3. cancellation ---------------------------------------------------------------------------
def test_3_1_cancel_pending_order(rig):
    leader_id, _ = _resting(rig)
    rig.cancel(leader_id)
    rig.wait_copy(leader_id, lambda c: c["orderStatus"] == "CANCELLED", message="cancelled")


def test_3_2_cancel_partially_filled_keeps_filled_part(rig):
    leader_id, copy = _resting(rig, quantity=40)
    rig.exchange.fill(LEADER_ID, leader_id, qty=10)
    row = rig.copy_row(leader_id)
    rig.exchange.fill(rig.follower_ids["f1"], row.broker_order_id, qty=5)
    rig.wait_row(leader_id, lambda r: r.filled_qty == 5, message="follower part fill stored")
    rig.cancel(leader_id)
    entry = rig.wait_copy(leader_id, lambda c: c["orderStatus"] == "CANCELLED", message="rest cancelled")
    assert entry["filledQty"] == 5
    fills = rig.store.read(lambda: list(m.Fill.select().where(m.Fill.leader_order_id == leader_id)))
    assert {(f.account, f.quantity) for f in fills} == {("leader", 10), ("f1", 5)}


def test_3_3_cancel_all_pending_orders_within_rate_limit(make_rig):
    rig = make_rig(config={"rate_limits": {"orders_per_second": 5}}, exchange={"rate_limits": {"per_second": 50}})
    ids = [rig.place(quantity=10, price=1400.0 + i) for i in range(12)]
    for leader_id in ids:
        rig.follower_copy(leader_id, timeout=15)
    for leader_id in ids:
        rig.cancel(leader_id)
    for leader_id in ids:
        rig.wait_copy(leader_id, lambda c: c["orderStatus"] == "CANCELLED", timeout=15, message="cancelled")
    calls = sorted(r["t"] for r in rig.exchange.request_log(rig.follower_ids["f1"])
                   if r["method"] in ("POST", "PUT", "DELETE"))
    worst = max(sum(1 for t in calls if start <= t < start + 1.0) for start in calls)
    assert worst <= 5, f"{worst} order calls within one second"


def test_3_4_cancel_one_specific_order_only(rig):
    keep, _ = _resting(rig)
    drop, _ = _resting(rig, price=1420.0)
    rig.cancel(drop)
    rig.wait_copy(drop, lambda c: c["orderStatus"] == "CANCELLED", message="cancelled")
    assert rig.follower_order_now(keep)["orderStatus"] == "PENDING"


# -- 4. execution ------------------------------------------------------------------------------
def test_4_1_full_fill_recorded_for_both_sides(rig):
    leader_id = rig.place(order_type="MARKET", quantity=10)
    rig.wait_row(leader_id, lambda r: r.status == "TRADED", message="copy traded")
    leader = rig.store.leader_order(leader_id)
    assert leader.status == "TRADED" and leader.filled_qty == 10
    positions = {p["securityId"]: p for p in rig.exchange.positions(rig.follower_ids["f1"])}
    assert positions[RELIANCE]["netQty"] == 5


def test_4_2_partial_fill_recorded_and_copy_keeps_working(rig):
    leader_id, _ = _resting(rig, quantity=40)
    rig.exchange.fill(LEADER_ID, leader_id, qty=15)
    wait_until(lambda: rig.store.leader_order(leader_id).filled_qty == 15, message="leader partial fill")
    assert rig.store.leader_order(leader_id).status == "PART_TRADED"
    assert rig.follower_order_now(leader_id)["orderStatus"] == "PENDING"


def test_4_3_fills_in_several_tranches_each_recorded(rig):
    leader_id, _ = _resting(rig, quantity=30)
    for qty, price in ((10, 1440.0), (10, 1441.0), (10, 1442.0)):
        rig.exchange.fill(LEADER_ID, leader_id, qty=qty, price=price)
        wait_until(lambda q=qty: rig.store.read(lambda: m.Fill.select().where(
            (m.Fill.leader_order_id == leader_id) & (m.Fill.account == "leader")).count()) >= 1, message="fill")
    wait_until(lambda: rig.store.leader_order(leader_id).status == "TRADED", message="leader traded")
    fills = rig.store.read(lambda: list(m.Fill.select().where(
        (m.Fill.leader_order_id == leader_id) & (m.Fill.account == "leader")).order_by(m.Fill.id)))
    assert [(f.quantity, f.price) for f in fills] == [(10, 1440.0), (10, 1441.0), (10, 1442.0)]
    assert all(f.at > 0 for f in fills)


def test_4_4_slippage_recorded_and_exported(rig):
    leader_id, _ = _resting(rig, quantity=10)
    rig.exchange.fill(LEADER_ID, leader_id, price=1450.0)
    row = rig.copy_row(leader_id)
    wait_until(lambda: rig.store.leader_order(leader_id).status == "TRADED", message="leader traded")
    rig.exchange.fill(rig.follower_ids["f1"], row.broker_order_id, price=1452.9)
    row = rig.wait_row(leader_id, lambda r: r.slippage is not None, message="slippage stored")
    assert abs(row.slippage - (1452.9 - 1450.0) / 1450.0) < 1e-6
    assert metrics.SLIPPAGE.labels("f1")._sum.get() > 0


def test_4_5_lag_alert_when_follower_still_open_after_leader_fills(make_rig):
    rig = make_rig(config={"copy": {"lag_alert_seconds": 0.5}})
    leader_id, _ = _resting(rig, quantity=10)
    rig.exchange.fill(LEADER_ID, leader_id)  # the leader fills; the copy stays open
    row = rig.wait_row(leader_id, lambda r: r.anomaly == "lagging", message="lag flagged")
    assert row.status == "PENDING"
    alerts = wait_until(lambda: rig.store.read(lambda: list(m.Alert.select().where(m.Alert.key == "lag:f1"))),
                        message="lag alert stored")
    assert leader_id in alerts[0].message
    assert metrics.LAG_ALERTS.labels("f1")._value.get() >= 1


# -- follower rejections -----------------------------------------------------------------------
def test_5_2_follower_rejection_recorded_and_dead_lettered(rig):
    rig.exchange.reject_next(rig.follower_ids["f1"], error_code="DH-905", message="Invalid disclosed quantity")
    leader_id = rig.place(quantity=10)
    row = rig.wait_row(leader_id, lambda r: r.status == "REJECTED", message="rejected")
    assert "Invalid disclosed quantity" in row.last_error
    letters = rig.store.read(lambda: list(m.DeadLetter.select().where(m.DeadLetter.leader_order_id == leader_id)))
    assert len(letters) == 1 and letters[0].error_code == "DH-905"
    wait_until(lambda: rig.store.read(lambda: m.Alert.select().where(m.Alert.key == "dlq:f1").count()) == 1,
               message="one dead-letter alert")
    assert rig.follower_placements("f1") == 0  # not retried


def test_5_2_transient_follower_failure_is_retried(rig):
    rig.exchange.reject_next(rig.follower_ids["f1"], error_code="DH-908", message="internal error", count=2)
    leader_id = rig.place(quantity=10)
    copy = rig.follower_copy(leader_id)
    assert copy["quantity"] == 5
    assert rig.store.read(lambda: m.DeadLetter.select().count()) == 0


# -- 8. races ----------------------------------------------------------------------------------
def test_8_1_modify_before_follower_placement_is_applied_after(rig):
    rig.exchange.faults.delay_answers(0.8, client_id=rig.follower_ids["f1"], paths=("POST /orders",), count=1)
    leader_id = rig.place(quantity=10, price=1430.0)
    rig.modify(leader_id, price=1433.0, quantity=20)  # while the copy's placement is unanswered
    rig.wait_copy(leader_id, lambda c: c["price"] == 1433.0 and c["quantity"] == 10, message="modified")


def test_8_2_cancel_before_follower_placement(rig):
    rig.exchange.faults.delay_answers(0.8, client_id=rig.follower_ids["f1"], paths=("POST /orders",), count=1)
    leader_id = rig.place(quantity=10, price=1430.0)
    rig.cancel(leader_id)
    rig.wait_row(leader_id, lambda r: r.status == "CANCELLED", message="copy cancelled")
    entry = rig.follower_order_now(leader_id)
    if entry is None:  # aborted before it was sent: recorded like any copy not made
        assert rig.wait_skip(leader_id, "f1").reason == "leader_cancelled_before_placement"
    else:
        assert entry["orderStatus"] == "CANCELLED"


def test_8_3_follower_fills_before_leader_is_an_anomaly(rig):
    leader_id, _ = _resting(rig, quantity=10)
    row = rig.copy_row(leader_id)
    rig.exchange.fill(rig.follower_ids["f1"], row.broker_order_id)
    row = rig.wait_row(leader_id, lambda r: r.anomaly == "follower_filled_first", message="anomaly")
    assert row.status == "TRADED"
    assert rig.exchange.order(LEADER_ID, leader_id)["orderStatus"] == "PENDING"  # no action on the leader


def test_2_6_past_the_modification_cap_the_copy_is_cancelled_and_replaced_when_configured(make_rig):
    from app.commands import replay_order

    rig = make_rig(config={"copy": {"max_modifications": 2, "replace_after_modification_cap": True}})
    leader_id, _ = _resting(rig, price=1400.0)
    first = rig.copy_row(leader_id)
    for step in range(1, 5):  # each waits for the copy to follow, so none coalesce: 4 modifications
        rig.modify(leader_id, price=1400.0 + step)
        rig.wait_row(leader_id, lambda r, p=1400.0 + step: r.status == "PENDING" and r.confirmed
                     and f'"price": {p}' in r.confirmed, timeout=15, message=f"copy at {1400.0 + step}")
    row = rig.copy_row(leader_id)
    assert row.generation >= 1 and row.correlation_id != first.correlation_id
    old = next(o for o in rig.follower_book() if o["correlationId"] == first.correlation_id)
    assert old["orderStatus"] == "CANCELLED"
    assert rig.follower_order_now(leader_id)["price"] == 1404.0
    assert all(rig.exchange.modification_count(rig.follower_ids["f1"], o["orderId"]) <= 2 for o in rig.follower_book())
    ok, lines = replay_order(rig.store, leader_id)
    assert ok, "\n".join(lines)


# -- a placement whose outcome is unknown ------------------------------------------------------------
def test_a_placement_with_an_unknown_outcome_leaves_unknown_only_on_what_the_broker_says():
    S, E = OrderStatus, OrderEvent
    assert next_state(S.PENDING_PLACEMENT, E.OUTCOME_UNKNOWN) == S.UNKNOWN
    assert next_state(S.UNKNOWN, E.NOT_PLACED) == S.PENDING_PLACEMENT  # a lookup answered: never placed
    for event, state in ((E.ACCEPTED, S.PENDING), (E.TRIGGERED, S.PENDING), (E.PARTIALLY_FILLED, S.PART_TRADED),
                         (E.FILLED, S.TRADED), (E.CANCELLED, S.CANCELLED), (E.REJECTED, S.REJECTED),
                         (E.EXPIRED, S.EXPIRED)):
        assert next_state(S.UNKNOWN, event) == state  # found at the broker in that state
    for event in (E.SUBMITTED, E.SKIPPED, E.MODIFIED, E.OUTCOME_UNKNOWN):
        with pytest.raises(InvalidTransition):
            next_state(S.UNKNOWN, event)
    for state in (S.TRANSIT, S.PENDING, S.PART_TRADED, S.TRADED, S.CANCELLED, S.REJECTED, S.SKIPPED):
        with pytest.raises(InvalidTransition):  # only a placement not yet acknowledged can be unknown
            next_state(state, E.OUTCOME_UNKNOWN)
    with pytest.raises(InvalidTransition):
        next_state(S.PENDING_PLACEMENT, E.NOT_PLACED)
    assert not S.UNKNOWN.is_terminal and not S.UNKNOWN.is_open


def test_a_broker_snapshot_of_an_unknown_placement_names_the_event_that_adopts_it():
    S, E = OrderStatus, OrderEvent
    assert event_for_status(S.UNKNOWN, S.PENDING, 0, 0, False) == E.ACCEPTED
    assert event_for_status(S.UNKNOWN, S.TRANSIT, 0, 0, False) == E.ACCEPTED
    assert event_for_status(S.UNKNOWN, S.PART_TRADED, 0, 2, False) == E.PARTIALLY_FILLED
    assert event_for_status(S.UNKNOWN, S.TRADED, 0, 5, False) == E.FILLED
    assert event_for_status(S.UNKNOWN, S.CANCELLED, 0, 0, False) == E.CANCELLED
    with pytest.raises(ValueError):
        codes.status("UNKNOWN")  # the copier's own state: never read from a broker's answer
