"""Super orders (`/v2/super/orders`): an entry leg with a target and a stop-loss leg that come
alive when the entry trades, one cancelling the other, the stop-loss trailing the price; their
legs on the order book and on the order-update socket."""
from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from tests.paper.paper_support import LEADER, LEADER_TOKEN, RELIANCE, Feed, client

from paper import PaperExchange
from paper.errors import DhanError

HEADERS = {"access-token": LEADER_TOKEN, "client-id": LEADER, "Content-Type": "application/json"}
LEG_NO = {"ENTRY_LEG": 1, "STOP_LOSS_LEG": 2, "TARGET_LEG": 3}


def place(dhan: Any, qty: int = 10, price: float = 1500.0, target: float = 1600.0, stop: float = 1450.0,
          jump: float = 0.0, side: str = "BUY", order_type: str = "LIMIT", tag: str | None = None) -> str:
    answer = dhan.place_super_order(RELIANCE, "NSE_EQ", side, qty, order_type, "INTRADAY", price,
                                    targetPrice=target, stopLossPrice=stop, trailingJump=jump, tag=tag)
    assert answer["status"] == "success", answer
    return answer["data"]["orderId"]


def super_order(ex: PaperExchange, oid: str) -> dict[str, Any]:
    return next(s for s in ex.super_orders(LEADER) if s["orderId"] == oid)


def legs(ex: PaperExchange, oid: str) -> dict[str, dict[str, Any]]:
    return {leg["legName"]: leg for leg in super_order(ex, oid)["legDetails"]}


def book_legs(ex: PaperExchange, oid: str) -> dict[str, dict[str, Any]]:
    return {o["legName"]: o for o in ex.orders(LEADER) if o["orderId"] == oid}


def send(ex: PaperExchange, method: str, path: str, body: Any = None) -> requests.Response:
    data = body if body is None or isinstance(body, str) else json.dumps(body)
    return requests.request(method, ex.rest_url + path, data=data, headers=HEADERS, timeout=5)


@pytest.fixture
def resting(ex: PaperExchange) -> PaperExchange:
    """RELIANCE at 1510: a BUY entry at 1500 rests until the price comes down to it."""
    ex.set_price(RELIANCE, 1510.0)
    return ex


def test_the_legs_come_alive_when_the_entry_trades(resting: PaperExchange, dhan, feed: Feed) -> None:
    ex = resting
    oid = place(dhan, tag="so-1")
    so = super_order(ex, oid)
    assert (so["orderStatus"], so["legName"], so["quantity"], so["price"], so["correlationId"]) == (
        "PENDING", "ENTRY_LEG", 10, 1500.0, "so-1")
    waiting = legs(ex, oid)
    assert set(waiting) == {"TARGET_LEG", "STOP_LOSS_LEG"}
    assert (waiting["TARGET_LEG"]["price"], waiting["STOP_LOSS_LEG"]["price"]) == (1600.0, 1450.0)
    assert all(leg["orderStatus"] == "PENDING" and leg["transactionType"] == "SELL" and leg["remainingQuantity"] == 0
               for leg in waiting.values())
    assert list(book_legs(ex, oid)) == ["ENTRY_LEG"]

    ex.set_price(RELIANCE, 1500.0)
    assert super_order(ex, oid)["orderStatus"] == "TRADED"
    on_book = book_legs(ex, oid)
    assert set(on_book) == {"ENTRY_LEG", "TARGET_LEG", "STOP_LOSS_LEG"}
    target, stop = on_book["TARGET_LEG"], on_book["STOP_LOSS_LEG"]
    assert (target["transactionType"], target["orderType"], target["price"], target["quantity"]) == (
        "SELL", "LIMIT", 1600.0, 10)
    assert (stop["transactionType"], stop["orderType"], stop["triggerPrice"], stop["quantity"]) == (
        "SELL", "STOP_LOSS_MARKET", 1450.0, 10)
    assert all(o["orderStatus"] == "PENDING" for o in (target, stop))
    assert legs(ex, oid)["TARGET_LEG"]["remainingQuantity"] == 10

    assert feed.wait(lambda f: {a["LegNo"] for a in f.alerts(oid)} == {1, 2, 3})
    alerts = feed.alerts(oid)
    assert all(a["Remarks"] == "Super Order" and a["CorrelationId"] == "so-1" for a in alerts)
    assert alerts[0]["LegNo"] == 1 and alerts[0]["Status"].upper() == "PENDING"
    assert any(a["LegNo"] == 1 and a["Status"].upper() == "TRADED" for a in alerts)
    exits = {(a["LegNo"], a["TxnType"], a["OrderType"]) for a in alerts if a["LegNo"] != 1}
    assert exits == {(2, "S", "SLM"), (3, "S", "LMT")}


def test_the_target_trading_cancels_the_stop_loss(resting: PaperExchange, dhan, feed: Feed) -> None:
    ex = resting
    oid = place(dhan)
    ex.set_price(RELIANCE, 1500.0)
    ex.set_price(RELIANCE, 1600.0)
    so = super_order(ex, oid)
    assert so["orderStatus"] == "CLOSED"
    assert (legs(ex, oid)["TARGET_LEG"]["orderStatus"], legs(ex, oid)["STOP_LOSS_LEG"]["orderStatus"]) == (
        "TRIGGERED", "CANCELLED")
    assert legs(ex, oid)["TARGET_LEG"]["triggeredQuantity"] == 10
    on_book = book_legs(ex, oid)
    assert (on_book["TARGET_LEG"]["orderStatus"], on_book["STOP_LOSS_LEG"]["orderStatus"]) == ("TRADED", "CANCELLED")
    assert [p["netQty"] for p in ex.positions(LEADER)] == [0]
    assert feed.wait(lambda f: any(a["LegNo"] == 2 and a["Status"].upper() == "CANCELLED" for a in f.alerts(oid)))


def test_the_stop_loss_trading_cancels_the_target(resting: PaperExchange, dhan) -> None:
    ex = resting
    oid = place(dhan)
    ex.set_price(RELIANCE, 1500.0)
    ex.set_price(RELIANCE, 1449.0)
    assert super_order(ex, oid)["orderStatus"] == "CLOSED"
    assert (legs(ex, oid)["STOP_LOSS_LEG"]["orderStatus"], legs(ex, oid)["TARGET_LEG"]["orderStatus"]) == (
        "TRIGGERED", "CANCELLED")
    assert [p["netQty"] for p in ex.positions(LEADER)] == [0]


def test_the_stop_loss_trails_the_price_by_the_trailing_jump(resting: PaperExchange, dhan, feed: Feed) -> None:
    ex = resting
    oid = place(dhan, jump=10.0)
    ex.set_price(RELIANCE, 1500.0)
    ex.set_price(RELIANCE, 1509.0)
    assert legs(ex, oid)["STOP_LOSS_LEG"]["price"] == 1450.0   # less than one jump: no move
    ex.set_price(RELIANCE, 1525.0)
    assert legs(ex, oid)["STOP_LOSS_LEG"]["price"] == 1470.0   # two jumps
    assert book_legs(ex, oid)["STOP_LOSS_LEG"]["triggerPrice"] == 1470.0
    ex.set_price(RELIANCE, 1512.0)
    assert legs(ex, oid)["STOP_LOSS_LEG"]["price"] == 1470.0   # never back
    assert feed.wait(lambda f: any(a["LegNo"] == 2 and a["TriggerPrice"] == 1470.0 for a in f.alerts(oid)))
    ex.set_price(RELIANCE, 1469.0)
    assert legs(ex, oid)["STOP_LOSS_LEG"]["orderStatus"] == "TRIGGERED"
    assert super_order(ex, oid)["orderStatus"] == "CLOSED"


def test_a_sell_super_order_mirrors_the_legs(ex: PaperExchange, dhan) -> None:
    ex.set_price(RELIANCE, 1500.0)
    oid = place(dhan, side="SELL", order_type="MARKET", price=1500.0, target=1400.0, stop=1550.0, jump=5.0)
    on_book = book_legs(ex, oid)
    assert on_book["ENTRY_LEG"]["orderStatus"] == "TRADED"   # a market entry trades at once
    assert {o["transactionType"] for n, o in on_book.items() if n != "ENTRY_LEG"} == {"BUY"}
    ex.set_price(RELIANCE, 1489.0)
    assert legs(ex, oid)["STOP_LOSS_LEG"]["price"] == 1540.0
    ex.set_price(RELIANCE, 1540.0)
    assert super_order(ex, oid)["orderStatus"] == "CLOSED"
    assert [p["netQty"] for p in ex.positions(LEADER)] == [0]


def test_each_leg_can_be_modified(resting: PaperExchange, dhan) -> None:
    ex = resting
    oid = place(dhan)
    changed = dhan.modify_super_order(oid, "LIMIT", "ENTRY_LEG", quantity=20, price=1495.0, targetPrice=1620.0,
                                      stopLossPrice=1440.0, trailingJump=5.0)
    assert changed["status"] == "success", changed
    so = super_order(ex, oid)
    assert (so["quantity"], so["price"]) == (20, 1495.0)
    assert (legs(ex, oid)["TARGET_LEG"]["price"], legs(ex, oid)["STOP_LOSS_LEG"]["price"]) == (1620.0, 1440.0)
    assert legs(ex, oid)["STOP_LOSS_LEG"]["trailingJump"] == 5.0
    assert dhan.modify_super_order(oid, "LIMIT", "TARGET_LEG", targetPrice=1630.0)["status"] == "success"
    assert legs(ex, oid)["TARGET_LEG"]["price"] == 1630.0

    ex.set_price(RELIANCE, 1495.0)
    late = dhan.modify_super_order(oid, "LIMIT", "ENTRY_LEG", quantity=30, price=1495.0, targetPrice=1620.0,
                                   stopLossPrice=1440.0)
    assert late["remarks"]["error_code"] == "DH-906" and "ENTRY_LEG" in late["remarks"]["error_message"]
    assert dhan.modify_super_order(oid, "LIMIT", "TARGET_LEG", targetPrice=1640.0)["status"] == "success"
    stop = dhan.modify_super_order(oid, "LIMIT", "STOP_LOSS_LEG", stopLossPrice=1460.0, trailingJump=0)
    assert stop["status"] == "success"
    on_book = book_legs(ex, oid)
    assert (on_book["TARGET_LEG"]["price"], on_book["STOP_LOSS_LEG"]["triggerPrice"]) == (1640.0, 1460.0)
    assert legs(ex, oid)["STOP_LOSS_LEG"]["trailingJump"] == 0.0
    assert on_book["ENTRY_LEG"]["quantity"] == 20


def test_cancelling_the_entry_cancels_every_leg(resting: PaperExchange, dhan) -> None:
    ex = resting
    oid = place(dhan)
    cancelled = dhan.cancel_super_order(oid, "ENTRY_LEG")
    assert cancelled["data"] == {"orderId": oid, "orderStatus": "CANCELLED"}
    assert super_order(ex, oid)["orderStatus"] == "CANCELLED"
    assert {leg["orderStatus"] for leg in legs(ex, oid).values()} == {"CANCELLED"}
    ex.set_price(RELIANCE, 1400.0)
    assert [p["netQty"] for p in ex.positions(LEADER)] == []
    again = dhan.cancel_super_order(oid, "ENTRY_LEG")
    assert again["remarks"]["error_code"] == "DH-906"


def test_a_cancelled_leg_stays_cancelled(resting: PaperExchange, dhan) -> None:
    ex = resting
    oid = place(dhan)
    ex.set_price(RELIANCE, 1500.0)
    assert dhan.cancel_super_order(oid, "TARGET_LEG")["data"]["orderStatus"] == "CANCELLED"
    assert book_legs(ex, oid)["TARGET_LEG"]["orderStatus"] == "CANCELLED"
    refused = dhan.modify_super_order(oid, "LIMIT", "TARGET_LEG", targetPrice=1650.0)
    assert refused["remarks"]["error_code"] == "DH-906"
    ex.set_price(RELIANCE, 1700.0)
    assert book_legs(ex, oid)["STOP_LOSS_LEG"]["orderStatus"] == "PENDING"
    assert [p["netQty"] for p in ex.positions(LEADER)] == [10]
    assert dhan.cancel_super_order(oid, "STOP_LOSS_LEG")["status"] == "success"
    assert {leg["orderStatus"] for leg in legs(ex, oid).values()} == {"CANCELLED"}


def test_a_partly_traded_entry_protects_what_traded(resting: PaperExchange, dhan) -> None:
    ex = resting
    oid = place(dhan)
    ex.fill(LEADER, oid, qty=4)
    assert super_order(ex, oid)["orderStatus"] == "PART_TRADED"
    assert (book_legs(ex, oid)["TARGET_LEG"]["quantity"], book_legs(ex, oid)["STOP_LOSS_LEG"]["quantity"]) == (4, 4)
    ex.fill(LEADER, oid)
    assert (book_legs(ex, oid)["TARGET_LEG"]["quantity"], book_legs(ex, oid)["STOP_LOSS_LEG"]["quantity"]) == (10, 10)


def test_an_entry_the_margin_cannot_carry_rejects_the_super_order(ex: PaperExchange, dhan) -> None:
    ex.set_funds(LEADER, 100.0)
    oid = place(dhan)
    assert super_order(ex, oid)["orderStatus"] == "REJECTED"
    assert list(book_legs(ex, oid)) == ["ENTRY_LEG"]
    ex.set_price(RELIANCE, 1400.0)
    assert list(book_legs(ex, oid)) == ["ENTRY_LEG"]


def test_the_super_order_list_through_the_client(resting: PaperExchange, dhan) -> None:
    oid = place(dhan)
    listed = dhan.get_super_order_list()
    assert listed["status"] == "success" and [s["orderId"] for s in listed["data"]] == [oid]
    for key in ("dhanClientId", "orderStatus", "transactionType", "exchangeSegment", "productType", "orderType",
                "validity", "tradingSymbol", "securityId", "quantity", "remainingQuantity", "ltp", "price",
                "afterMarketOrder", "legName", "exchangeOrderId", "createTime", "updateTime", "exchangeTime",
                "omsErrorDescription", "averageTradedPrice", "filledQty", "legDetails"):
        assert key in listed["data"][0]
    assert client(resting).get_order_by_id(oid)["data"]["legName"] == "ENTRY_LEG"


GOOD = {"dhanClientId": LEADER, "transactionType": "BUY", "exchangeSegment": "NSE_EQ", "productType": "INTRADAY",
        "orderType": "LIMIT", "securityId": RELIANCE, "quantity": 10, "price": 1500.0, "targetPrice": 1600.0,
        "stopLossPrice": 1450.0, "trailingJump": 0}


@pytest.mark.parametrize("change, field", [
    ({"transactionType": "HOLD"}, "transactionType"),
    ({"productType": "CO"}, "productType"),
    ({"orderType": "STOP_LOSS"}, "orderType"),
    ({"securityId": "999999"}, "securityId"),
    ({"quantity": 0}, "quantity"),
    ({"price": 0}, "price"),
    ({"targetPrice": None}, "targetPrice"),
    ({"stopLossPrice": 0}, "stopLossPrice"),
    ({"targetPrice": 1490.0}, "targetPrice"),
    ({"stopLossPrice": 1510.0}, "stopLossPrice"),
    ({"trailingJump": -1}, "trailingJump"),
    ({"trailingJump": 0.03}, "trailingJump"),
    ({"targetPrice": 1600.03}, "targetPrice"),
    ({"correlationId": "x" * 26}, "correlationId"),
])
def test_a_bad_super_order_is_refused_naming_the_field(ex: PaperExchange, change: dict[str, Any], field: str) -> None:
    r = send(ex, "POST", "/super/orders", {**GOOD, **change})
    assert r.status_code == 400
    body = r.json()
    assert body["errorCode"] == "DH-905" and body["errorMessage"].startswith(field), body
    assert ex.super_orders(LEADER) == [] and ex.orders(LEADER) == []


def test_a_sell_super_order_needs_its_target_below_and_stop_above(ex: PaperExchange) -> None:
    r = send(ex, "POST", "/super/orders", {**GOOD, "transactionType": "SELL"})
    assert r.status_code == 400 and r.json()["errorMessage"].startswith("targetPrice")


def test_bad_modifications_and_cancels_are_refused(resting: PaperExchange, dhan) -> None:
    ex = resting
    oid = place(dhan)
    r = send(ex, "PUT", f"/super/orders/{oid}", {"orderId": oid, "legName": "MIDDLE_LEG", "targetPrice": 1650.0})
    assert r.status_code == 400 and r.json()["errorMessage"].startswith("legName")
    r = send(ex, "PUT", f"/super/orders/{oid}", {"orderId": oid, "legName": "TARGET_LEG", "targetPrice": 0})
    assert r.status_code == 400 and r.json()["errorMessage"].startswith("targetPrice")
    r = send(ex, "PUT", f"/super/orders/{oid}", {"orderId": "123", "legName": "TARGET_LEG", "targetPrice": 1650.0})
    assert r.status_code == 400 and r.json()["errorMessage"].startswith("orderId")
    r = send(ex, "PUT", "/super/orders/999", {"legName": "TARGET_LEG", "targetPrice": 1650.0})
    assert r.status_code == 400 and r.json()["errorMessage"].startswith("orderId")
    r = send(ex, "DELETE", f"/super/orders/{oid}/MIDDLE_LEG")
    assert r.status_code == 400 and r.json()["errorMessage"].startswith("order-leg")
    r = send(ex, "DELETE", "/super/orders/999/ENTRY_LEG")
    assert r.status_code == 400 and r.json()["errorMessage"].startswith("orderId")
    r = send(ex, "PUT", f"/super/orders/{oid}", "{not json")
    assert r.status_code == 400 and r.json()["errorCode"] == "DH-905"
    plain = client(ex).place_order(RELIANCE, "NSE_EQ", "BUY", 1, "LIMIT", "INTRADAY", 1400.0)["data"]["orderId"]
    r = send(ex, "DELETE", f"/super/orders/{plain}/ENTRY_LEG")
    assert r.status_code == 400 and r.json()["errorMessage"].startswith("orderId")
    assert super_order(ex, oid)["orderStatus"] == "PENDING"


def test_a_leg_can_be_traded_at_will_through_the_exchange_api(resting: PaperExchange, dhan) -> None:
    ex = resting
    oid = place(dhan)
    with pytest.raises(DhanError):
        ex.fill(LEADER, oid, leg="TARGET_LEG")   # not placed before the entry trades
    ex.fill(LEADER, oid)
    ex.fill(LEADER, oid, leg="STOP_LOSS_LEG", qty=3)
    book = {o["legName"]: o for o in dhan.get_order_list()["data"] if o["orderId"] == oid}
    assert (book["STOP_LOSS_LEG"]["filledQty"], book["TARGET_LEG"]["quantity"]) == (3, 7)
    ex.fill(LEADER, oid, leg="TARGET_LEG")
    assert super_order(ex, oid)["orderStatus"] == "CLOSED"
    assert [p["netQty"] for p in ex.positions(LEADER)] == [0]
