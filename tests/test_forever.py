"""The leader's forever (GTT) orders are copied, sized, and follow its modify and
cancel; when one triggers, each follower's own copy triggers and nothing is copied twice."""
from __future__ import annotations

from storage import models as m
from tests.conftest import LEADER_ID, RELIANCE, wait_until


def _place_forever(rig, quantity=10, trigger=1560.0, price=1565.0):
    answer = rig.leader.place_forever(security_id=RELIANCE, exchange_segment="NSE_EQ", transaction_type="BUY",
                                      product_type="CNC", order_type="LIMIT", quantity=quantity, price=price,
                                      trigger_Price=trigger)
    assert answer["status"] == "success", answer
    return answer["data"]["orderId"]


def _follower_forever(rig, follower="f1"):
    return [f for f in rig.exchange.forever_orders(rig.follower_ids[follower]) if f["orderStatus"] != "CANCELLED"]


def test_1_3_3_forever_order_copied_sized_and_follows_modify_and_cancel(make_rig):
    rig = make_rig(config={"copy": {"forever_poll_seconds": 0.2}})
    leader_forever = _place_forever(rig)
    copy = wait_until(lambda: _follower_forever(rig), message="forever copy")[0]
    assert (copy["quantity"], copy["triggerPrice"], copy["price"], copy["transactionType"]) == (5, 1560.0, 1565.0, "BUY")

    assert rig.leader.modify_forever(leader_forever, "SINGLE", "LIMIT", "ENTRY_LEG", 20, 1570.0, 1566.0, 0,
                                     "DAY")["status"] == "success"
    wait_until(lambda: [(f["quantity"], f["price"], f["triggerPrice"]) for f in _follower_forever(rig)]
               == [(10, 1570.0, 1566.0)], message="forever copy modified")

    assert rig.leader.cancel_forever(leader_forever)["status"] == "success"
    wait_until(lambda: _follower_forever(rig) == [], message="forever copy cancelled")
    assert len(rig.exchange.forever_orders(rig.follower_ids["f1"])) == 1  # one copy, never placed twice


def test_1_3_3_triggered_forever_order_is_not_copied_twice(make_rig):
    rig = make_rig(config={"copy": {"forever_poll_seconds": 0.2}})
    _place_forever(rig, trigger=1560.0, price=1565.0)
    wait_until(lambda: _follower_forever(rig), message="forever copy")
    rig.exchange.set_price(RELIANCE, 1562.0)  # both forever orders trigger, each in its own account
    leader_order = wait_until(lambda: [o for o in rig.exchange.orders(LEADER_ID)], message="leader's triggered order")[0]
    skip = rig.wait_skip(leader_order["orderId"])
    assert skip.reason == "forever_triggered"
    follower_orders = wait_until(lambda: rig.follower_book("f1"), message="follower's triggered order")
    assert len(follower_orders) == 1 and follower_orders[0]["quantity"] == 5
    assert rig.store.read(lambda: m.FollowerOrder.select().count()) == 0  # the order path placed nothing
