"""Freeze limits and `POST /orders/slicing`: one order above the instrument's per-order freeze
quantity is refused; the slicing endpoint places it as several orders within the limit."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests
from tests.paper.paper_support import (LEADER, LEADER_TOKEN, NIFTY_CE, RELIANCE, Feed, buy, client, make_exchange,
                                       order_id)

from paper import PaperExchange
from paper.__main__ import main as paper_main
from paper.freeze import FreezeLimits

BANKNIFTY_CE = "46201"   # BANKNIFTY 29 DEC 51000 CALL, lot 35
HEADERS = {"access-token": LEADER_TOKEN, "client-id": LEADER, "Content-Type": "application/json"}


def slice_order(dhan: Any, qty: int, sid: str = NIFTY_CE, tag: str | None = None, **kw: Any) -> dict[str, Any]:
    return dhan.place_slice_order(sid, "NSE_FNO", kw.pop("side", "BUY"), qty, kw.pop("order_type", "MARKET"),
                                  kw.pop("product", "MARGIN"), kw.pop("price", 0), tag=tag, **kw)


def test_an_order_above_the_freeze_quantity_is_refused_naming_the_limit(ex: PaperExchange, dhan) -> None:
    refused = buy(dhan, 3000, sid=NIFTY_CE, product="MARGIN")
    assert refused["status"] == "failure"
    assert refused["remarks"]["error_code"] == "DH-906"
    assert "freeze" in refused["remarks"]["error_message"] and "1800" in refused["remarks"]["error_message"]
    assert ex.orders(LEADER) == []


def test_an_order_at_the_freeze_quantity_is_accepted(ex: PaperExchange, dhan) -> None:
    assert buy(dhan, 1800, sid=NIFTY_CE, product="MARGIN")["status"] == "success"
    assert [o["quantity"] for o in ex.orders(LEADER)] == [1800]


def test_equities_have_no_freeze_quantity(ex: PaperExchange, dhan) -> None:
    assert buy(dhan, 5000, sid=RELIANCE, order_type="LIMIT", price=round(ex.price(RELIANCE) - 50, 1),
               product="INTRADAY")["status"] == "success"


def test_modifying_an_order_above_the_freeze_quantity_is_refused(ex: PaperExchange, dhan) -> None:
    price = round(ex.price(NIFTY_CE) * 0.5, 1)
    oid = order_id(buy(dhan, 750, sid=NIFTY_CE, order_type="LIMIT", price=price, product="MARGIN"))
    refused = dhan.modify_order(oid, "LIMIT", "", 2250, price, 0, 0, "DAY")
    assert refused["remarks"]["error_code"] == "DH-906" and "1800" in refused["remarks"]["error_message"]
    assert ex.order(LEADER, oid)["quantity"] == 750


def test_slicing_places_one_order_per_slice_within_the_freeze_quantity(ex: PaperExchange, dhan, feed: Feed) -> None:
    answer = slice_order(dhan, 3750, tag="big-1")   # 50 lots of 75: 1800 + 1800 + 150
    assert answer["status"] == "success", answer
    slices = answer["data"]
    assert isinstance(slices, list) and len(slices) == 3
    ids = [s["orderId"] for s in slices]
    assert len(set(ids)) == 3
    assert all(s["orderStatus"] in ("PENDING", "TRANSIT", "TRADED", "PART_TRADED") for s in slices)
    book = {o["orderId"]: o for o in ex.orders(LEADER)}
    assert sorted(book) == sorted(ids)
    assert [book[i]["quantity"] for i in ids] == [1800, 1800, 150]
    assert {book[i]["correlationId"] for i in ids} == {"big-1"}
    assert feed.wait(lambda f: all(f.alerts(i) for i in ids))
    assert all(f["Quantity"] == q for f, q in ((feed.alerts(i)[0], q) for i, q in zip(ids, (1800, 1800, 150))))
    assert ex.wait_for(lambda e: sum(p["netQty"] for p in e.positions(LEADER)) == 3750, 10)


def test_slices_are_whole_lots_within_the_freeze_quantity(ex: PaperExchange, dhan) -> None:
    ex.set_freeze_limit("BANKNIFTY", 600)
    price = round(ex.price(BANKNIFTY_CE) * 0.5, 1)
    answer = slice_order(dhan, 1400, sid=BANKNIFTY_CE, order_type="LIMIT", price=price)   # 40 lots of 35
    assert answer["status"] == "success", answer
    assert [ex.order(LEADER, s["orderId"])["quantity"] for s in answer["data"]] == [595, 595, 210]


def test_every_slice_shares_the_correlation_id_and_the_lookup_answers_them_all(ex: PaperExchange, dhan) -> None:
    ids = [s["orderId"] for s in slice_order(dhan, 2400, tag="big-2")["data"]]
    assert len(ids) == 2
    found = dhan.get_order_by_correlationID("big-2")
    assert found["status"] == "success"
    assert isinstance(found["data"], list) and [o["orderId"] for o in found["data"]] == ids
    assert [o["quantity"] for o in found["data"]] == [1800, 600]


def test_an_order_within_the_freeze_quantity_is_one_slice(ex: PaperExchange, dhan) -> None:
    answer = slice_order(dhan, 150, tag="small-1")
    assert answer["status"] == "success" and len(answer["data"]) == 1
    assert [o["quantity"] for o in ex.orders(LEADER)] == [150]
    assert dhan.get_order_by_correlationID("small-1")["data"]["orderId"] == answer["data"][0]["orderId"]


def test_slicing_with_a_used_correlation_id_places_nothing(ex: PaperExchange, dhan) -> None:
    order_id(buy(dhan, 75, sid=NIFTY_CE, product="MARGIN", tag="used-1"))
    again = slice_order(dhan, 3750, tag="used-1")
    assert again["remarks"]["error_code"] == "DH-905" and "correlationId" in again["remarks"]["error_message"]
    assert len(ex.orders(LEADER)) == 1


def test_a_refused_sliced_placement_places_no_slice(ex: PaperExchange, dhan) -> None:
    dhan.kill_switch("activate")
    refused = slice_order(dhan, 3750)
    assert refused["remarks"]["error_code"] == "DH-906"
    assert ex.orders(LEADER) == []


def test_slicing_validates_the_request_like_a_placement(ex: PaperExchange) -> None:
    body = {"dhanClientId": LEADER, "transactionType": "BUY", "exchangeSegment": "NSE_FNO", "productType": "MARGIN",
            "orderType": "MARKET", "validity": "DAY", "securityId": NIFTY_CE, "quantity": 3700, "price": 0}
    r = requests.post(ex.rest_url + "/orders/slicing", data=json.dumps(body), headers=HEADERS, timeout=5)
    assert r.status_code == 400 and r.json()["errorCode"] == "DH-905" and "lot size" in r.json()["errorMessage"]
    assert ex.orders(LEADER) == []


def test_a_slice_the_margin_cannot_carry_is_rejected_on_the_book(ex: PaperExchange, dhan) -> None:
    price = round(ex.price(NIFTY_CE) * 0.5, 1)
    ex.set_funds(LEADER, price * 2000)   # the first slice fits, the second does not
    answer = slice_order(dhan, 3600, order_type="LIMIT", price=price)
    assert [s["orderStatus"] for s in answer["data"]] == ["PENDING", "REJECTED"]
    assert [o["orderStatus"] for o in ex.orders(LEADER)] == ["PENDING", "REJECTED"]


def test_freeze_limits_can_be_set_per_exchange_and_from_a_file(tmp_path: Path) -> None:
    table = tmp_path / "freeze.csv"
    table.write_text("exchange_segment,underlying,freeze_qty\nNSE_FNO,NIFTY,900\nNSE_EQ,*,1000\n")
    ex = make_exchange(freeze_limits=table)
    try:
        dhan = client(ex)
        assert buy(dhan, 975, sid=NIFTY_CE, product="MARGIN")["remarks"]["error_code"] == "DH-906"
        assert buy(dhan, 1001, sid=RELIANCE, order_type="LIMIT", price=1000.0)["remarks"]["error_code"] == "DH-906"
        assert ex.freeze_limit(NIFTY_CE) == 900 and ex.freeze_limit(RELIANCE) == 1000
        ex.set_freeze_limit("NIFTY", None)   # no limit
        assert buy(dhan, 3000, sid=NIFTY_CE, product="MARGIN")["status"] == "success"
    finally:
        ex.stop()


def test_the_shipped_table_limits_nifty_options_to_1800() -> None:
    ex = make_exchange()
    try:
        assert ex.freeze_limit(NIFTY_CE) == 1800 and ex.freeze_limit(RELIANCE) is None
    finally:
        ex.stop()


def test_the_control_endpoint_sets_and_reads_freeze_limits(ex: PaperExchange, dhan) -> None:
    r = requests.post(ex.control_url + "/set_freeze_limit", json={"underlying": "NIFTY", "qty": 750}, timeout=5)
    assert r.status_code == 200
    read = requests.post(ex.control_url + "/freeze_limit", json={"security_id": NIFTY_CE}, timeout=5)
    assert read.json()["result"] == 750
    assert buy(dhan, 825, sid=NIFTY_CE, product="MARGIN")["remarks"]["error_code"] == "DH-906"


def test_a_bad_freeze_table_is_refused_naming_the_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = tmp_path / "freeze.csv"
    table.write_text("exchange_segment,underlying,freeze_qty\nNSE_FNO,NIFTY,lots\n")
    with pytest.raises(ValueError, match=r"freeze.csv:2: .*freeze_qty"):
        FreezeLimits(table)
    with pytest.raises(SystemExit) as stopped:
        paper_main(["--freeze-limits", str(tmp_path / "missing.csv")])
    assert stopped.value.code == 2
    assert "--freeze-limits" in capsys.readouterr().err
