"""Forever (GTT) orders: stored and polled, silent on the socket until triggered."""
from __future__ import annotations

from tests.paper.paper_support import LEADER, RELIANCE, Feed, order_id

from paper import PaperExchange


def place_single(dhan, trigger: float, price: float, side: str = "SELL") -> str:
    r = dhan.place_forever(RELIANCE, "NSE_EQ", side, "CNC", "LIMIT", 5, price, trigger)
    return order_id(r)


def test_forever_order_listed_then_triggers_a_normal_order(ex: PaperExchange, dhan, feed: Feed) -> None:
    ex.set_price(RELIANCE, 1500)
    fid = place_single(dhan, trigger=1550.0, price=1549.0, side="BUY")
    listed = dhan.get_forever()["data"]
    assert [(f["orderId"], f["orderStatus"], f["triggerPrice"]) for f in listed] == [(fid, "PENDING", 1550.0)]
    assert not feed.alerts()                                  # not announced while pending
    ex.set_price(RELIANCE, 1551)
    assert ex.wait_for(lambda e: e.forever_orders(LEADER)[0]["orderStatus"] == "TRIGGERED", 5)
    child = ex.forever_orders(LEADER)[0]["triggeredOrderId"]
    assert ex.order(LEADER, child)["transactionType"] == "BUY" and ex.order(LEADER, child)["quantity"] == 5
    assert feed.wait(lambda f: len(f.alerts(child)) >= 1)


def test_forever_modify_and_cancel(ex: PaperExchange, dhan) -> None:
    ex.set_price(RELIANCE, 1500)
    fid = place_single(dhan, trigger=1450.0, price=1449.0)
    assert dhan.modify_forever(fid, "SINGLE", "LIMIT", "ENTRY_LEG", 10, 1439.0, 1440.0, 0, "DAY")["status"] == "success"
    rec = ex.forever_orders(LEADER)[0]
    assert (rec["quantity"], rec["price"], rec["triggerPrice"]) == (10, 1439.0, 1440.0)
    ex.set_price(RELIANCE, 1445)
    assert ex.forever_orders(LEADER)[0]["orderStatus"] == "PENDING"
    assert dhan.cancel_forever(fid)["data"]["orderStatus"] == "CANCELLED"
    ex.set_price(RELIANCE, 1400)
    assert ex.orders(LEADER) == []


def test_oco_fires_the_leg_that_is_crossed(ex: PaperExchange, dhan) -> None:
    ex.set_price(RELIANCE, 1500)
    r = dhan.place_forever(RELIANCE, "NSE_EQ", "SELL", "CNC", "LIMIT", 5, 1599.0, 1600.0, order_flag="OCO",
                           price1=1399.0, trigger_Price1=1400.0, quantity1=5)
    fid = order_id(r)
    ex.set_price(RELIANCE, 1399.5)
    assert ex.wait_for(lambda e: e.forever_orders(LEADER)[0]["orderStatus"] == "TRIGGERED", 5)
    child = ex.order(LEADER, ex.forever_orders(LEADER)[0]["triggeredOrderId"])
    assert child["price"] == 1399.0 and child["orderStatus"] == "TRADED"
    assert dhan.cancel_forever(fid)["remarks"]["error_code"] == "DH-906"
