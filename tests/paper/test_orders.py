"""Place / modify / cancel / book through the real dhanhq client, as the copier uses them."""
from __future__ import annotations

from tests.paper.paper_support import FOLLOWER, FOLLOWER_TOKEN, LEADER, RELIANCE, buy, client, order_id

from paper import PaperExchange


def test_market_order_fills_and_shows_in_book_trades_positions(ex: PaperExchange, dhan) -> None:
    oid = order_id(buy(dhan, 10, tag="entry-1"))
    book = dhan.get_order_list()["data"]
    assert [o["orderId"] for o in book] == [oid]
    o = book[0]
    assert o["orderStatus"] == "TRADED" and o["filledQty"] == 10 and o["remainingQuantity"] == 0
    assert o["averageTradedPrice"] == ex.price(RELIANCE) and o["correlationId"] == "entry-1"
    for field in ("createTime", "updateTime", "exchangeTime", "tradingSymbol", "drvExpiryDate", "omsErrorDescription"):
        assert field in o
    assert len(o["createTime"]) == 19
    trades = dhan.get_trade_book()["data"]
    assert trades[0]["orderId"] == oid and trades[0]["tradedQuantity"] == 10
    assert dhan.get_trade_book(oid)["data"][0]["exchangeTradeId"] == trades[0]["exchangeTradeId"]
    pos = dhan.get_positions()["data"][0]
    assert (pos["securityId"], pos["netQty"], pos["positionType"], pos["productType"]) == (RELIANCE, 10, "LONG", "INTRADAY")


def test_limit_order_rests_then_modify_and_cancel(ex: PaperExchange, dhan) -> None:
    below = round(ex.price(RELIANCE) - 50, 2)
    oid = order_id(buy(dhan, 5, order_type="LIMIT", price=below))
    assert dhan.get_order_by_id(oid)["data"]["orderStatus"] == "PENDING"
    ans = dhan.modify_order(oid, "LIMIT", "", 8, below - 1, 0, 0, "DAY")
    assert ans["data"] == {"orderId": oid, "orderStatus": "PENDING"}
    o = dhan.get_order_by_id(oid)["data"]
    assert (o["quantity"], o["price"]) == (8, below - 1)
    assert ex.modification_count(LEADER, oid) == 1
    assert dhan.cancel_order(oid)["data"] == {"orderId": oid, "orderStatus": "CANCELLED"}
    again = dhan.cancel_order(oid)
    assert again["status"] == "failure" and again["remarks"]["error_code"] == "DH-906"
    mod = dhan.modify_order(oid, "LIMIT", "", 8, below, 0, 0, "DAY")
    assert mod["remarks"]["error_code"] == "DH-906"


def test_correlation_id_lookup_and_duplicate_rejected(dhan) -> None:
    oid = order_id(buy(dhan, 1, tag="copy-abc_1"))
    assert dhan.get_order_by_correlationID("copy-abc_1")["data"]["orderId"] == oid
    dup = buy(dhan, 1, tag="copy-abc_1")
    assert dup["remarks"]["error_code"] == "DH-905" and "correlationId" in dup["remarks"]["error_message"]
    missing = dhan.get_order_by_correlationID("never-used")
    assert missing["status"] == "failure" and missing["remarks"]["error_code"] == "DH-905"
    too_long = buy(dhan, 1, tag="x" * 26)
    assert "correlationId" in too_long["remarks"]["error_message"]


def test_modification_cap_of_25(ex: PaperExchange, dhan) -> None:
    price = round(ex.price(RELIANCE) - 100, 2)
    oid = order_id(buy(dhan, 1, order_type="LIMIT", price=price))
    for i in range(25):
        assert dhan.modify_order(oid, "LIMIT", "", 1, price - 0.05 * (i + 1), 0, 0, "DAY")["status"] == "success"
    cap = dhan.modify_order(oid, "LIMIT", "", 1, price, 0, 0, "DAY")
    assert cap["remarks"]["error_code"] == "DH-906" and "modification limit" in cap["remarks"]["error_message"]
    assert ex.modification_count(LEADER, oid) == 25


def test_order_ids_unique_across_accounts_and_books_separate(ex: PaperExchange, dhan) -> None:
    other = client(ex, FOLLOWER, FOLLOWER_TOKEN)
    a, b = order_id(buy(dhan, 1)), order_id(buy(other, 1))
    assert a != b and a.isdigit() and b.isdigit()
    assert [o["orderId"] for o in other.get_order_list()["data"]] == [b]
    assert other.get_order_by_id(a)["status"] == "failure"
    assert [o["orderId"] for o in ex.orders(LEADER)] == [a]


def test_funds_margin_and_kill_switch(ex: PaperExchange, dhan) -> None:
    funds = dhan.get_fund_limits()["data"]
    assert funds["availabelBalance"] == funds["sodLimit"] == 1_000_000.0
    buy(dhan, 100, product="CNC")
    after = dhan.get_fund_limits()["data"]
    assert after["utilizedAmount"] == round(100 * ex.price(RELIANCE), 2)
    assert after["availabelBalance"] == round(1_000_000 - after["utilizedAmount"], 2)
    m = dhan.margin_calculator(RELIANCE, "NSE_EQ", "BUY", 10, "INTRADAY", 1500.0)["data"]
    assert m["totalMargin"] == 3000.0 and m["insufficientBalance"] == 0.0
    assert dhan.kill_switch("activate")["status"] == "success"
    assert dhan.status_kill_switch()["data"]["killSwitchStatus"] == "ACTIVATE"
    refused = buy(dhan, 1)
    assert refused["remarks"]["error_code"] == "DH-906" and "kill switch" in refused["remarks"]["error_message"]
    dhan.kill_switch("deactivate")
    assert buy(dhan, 1)["status"] == "success"


def test_bad_auth_is_dh901(ex: PaperExchange) -> None:
    wrong = client(ex, LEADER, "stolen")
    r = wrong.get_order_list()
    assert r["status"] == "failure" and r["remarks"]["error_code"] == "DH-901"
    assert ex.request_log()[-1]["status"] == 401
