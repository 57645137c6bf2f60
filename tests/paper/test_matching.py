"""Fills the way a copier sees them: resting limits, partial tranches, IOC, stops, rejections."""
from __future__ import annotations

from tests.paper.paper_support import LEADER, NIFTY_CE, RELIANCE, TCS, buy, client, make_exchange, order_id

from paper import PaperExchange


def status(ex: PaperExchange, oid: str) -> str:
    return ex.order(LEADER, oid)["orderStatus"]


def test_resting_limit_fills_when_price_crosses(ex: PaperExchange, dhan) -> None:
    ex.set_price(RELIANCE, 1500)
    oid = order_id(buy(dhan, 5, order_type="LIMIT", price=1490.0))
    assert status(ex, oid) == "PENDING"
    ex.set_price(RELIANCE, 1495)
    assert status(ex, oid) == "PENDING"
    ex.set_price(RELIANCE, 1489.5)
    assert status(ex, oid) == "TRADED"
    assert ex.order(LEADER, oid)["averageTradedPrice"] == 1489.5


def test_large_order_fills_in_partial_tranches() -> None:
    ex = make_exchange(fill_tranche_qty=100)
    try:
        d = client(ex)
        oid = order_id(buy(d, 350))
        first = ex.order(LEADER, oid)
        assert first["orderStatus"] == "PART_TRADED" and first["filledQty"] == 100
        assert ex.wait_for(lambda e: status(e, oid) == "TRADED", 5)
        assert [t["tradedQuantity"] for t in ex.trades(LEADER)] == [100, 100, 100, 50]
    finally:
        ex.stop()


def test_ioc_unfilled_rest_is_cancelled(ex: PaperExchange, dhan) -> None:
    ex.set_price(RELIANCE, 1500)
    away = order_id(buy(dhan, 5, order_type="LIMIT", price=1400.0, validity="IOC"))
    o = ex.order(LEADER, away)
    assert o["orderStatus"] == "CANCELLED" and o["filledQty"] == 0
    big = order_id(buy(dhan, 600, validity="IOC"))      # default tranche 500 shares
    o = ex.order(LEADER, big)
    assert (o["orderStatus"], o["filledQty"], o["remainingQuantity"]) == ("CANCELLED", 500, 100)


def test_stop_loss_and_stop_market_trigger(ex: PaperExchange, dhan) -> None:
    ex.set_price(RELIANCE, 1500)
    buy(dhan, 10)
    sl = order_id(buy(dhan, 5, side="SELL", order_type="STOP_LOSS", price=1479.0, trigger_price=1480.0))
    slm = order_id(buy(dhan, 5, side="SELL", order_type="STOP_LOSS_MARKET", trigger_price=1470.0))
    ex.set_price(RELIANCE, 1485)
    assert status(ex, sl) == status(ex, slm) == "PENDING"
    ex.set_price(RELIANCE, 1479.5)
    assert status(ex, sl) == "TRADED" and status(ex, slm) == "PENDING"
    ex.set_price(RELIANCE, 1465)
    assert status(ex, slm) == "TRADED"
    pos = ex.positions(LEADER)[0]
    assert pos["netQty"] == 0 and pos["positionType"] == "CLOSED" and pos["realizedProfit"] < 0


def test_forced_partial_fill(ex: PaperExchange, dhan) -> None:
    oid = order_id(buy(dhan, 10, order_type="LIMIT", price=1400.0))
    ex.fill(LEADER, oid, qty=4)
    o = ex.order(LEADER, oid)
    assert (o["orderStatus"], o["filledQty"], o["remainingQuantity"], o["averageTradedPrice"]) == ("PART_TRADED", 4, 6, 1400.0)
    mod = dhan.modify_order(oid, "LIMIT", "", 3, 1400.0, 0, 0, "DAY")
    assert mod["remarks"]["error_code"] == "DH-905" and "quantity" in mod["remarks"]["error_message"]
    ex.fill(LEADER, oid)
    assert status(ex, oid) == "TRADED"


def test_margin_shortfall_creates_rejected_order(ex: PaperExchange, dhan) -> None:
    ex.set_funds(LEADER, 10_000)
    ans = buy(dhan, 100, product="CNC")
    assert ans["status"] == "success" and ans["data"]["orderStatus"] == "REJECTED"
    o = ex.order(LEADER, ans["data"]["orderId"])
    assert o["orderStatus"] == "REJECTED" and "insufficient margin" in o["omsErrorDescription"]
    lots = buy(dhan, 75, sid=NIFTY_CE, side="SELL", product="MARGIN")   # 15% of 24000*75 > 10k
    assert lots["data"]["orderStatus"] == "REJECTED"


def test_circuit_band_and_halt(ex: PaperExchange, dhan) -> None:
    ex.set_circuit(TCS, 3000, 3200)
    ans = buy(dhan, 1, sid=TCS, order_type="LIMIT", price=3300.0)
    o = ex.order(LEADER, ans["data"]["orderId"])
    assert o["orderStatus"] == "REJECTED" and "circuit" in o["omsErrorDescription"]
    ex.halt(TCS)
    halted = buy(dhan, 1, sid=TCS)
    assert halted["remarks"]["error_code"] == "DH-906" and "halted" in halted["remarks"]["error_message"]
    ex.halt(TCS, False)
    assert buy(dhan, 1, sid=TCS)["status"] == "success"


def test_option_lot_size_enforced(dhan) -> None:
    bad = buy(dhan, 50, sid=NIFTY_CE)
    assert bad["remarks"]["error_code"] == "DH-905" and "lot size 75" in bad["remarks"]["error_message"]
    assert buy(dhan, 150, sid=NIFTY_CE)["status"] == "success"


def test_price_walk_moves_prices_within_band() -> None:
    ex = make_exchange(price_walk=True, tick_seconds=0.01, seed=3)
    try:
        start = ex.price(RELIANCE)
        assert ex.wait_for(lambda e: e.price(RELIANCE) != start, 5)
        assert abs(ex.price(RELIANCE) - start) / start < 0.2
    finally:
        ex.stop()
