"""Session gating: closed/holiday refusals, AMO waiting for the open, pre-open, expiry, the calendar."""
from __future__ import annotations

from datetime import datetime, timezone

from tests.paper.paper_support import LEADER, NIFTY_CE, RELIANCE, buy, client, make_exchange, order_id

from paper import PaperExchange


def test_closed_and_holiday_refuse_regular_orders(ex: PaperExchange, dhan) -> None:
    ex.set_session("closed")
    r = buy(dhan, 1)
    assert r["remarks"]["error_code"] == "DH-906" and "market closed" in r["remarks"]["error_message"]
    ex.set_session("holiday")
    r = buy(dhan, 1)
    assert "holiday" in r["remarks"]["error_message"]


def test_amo_waits_and_goes_live_at_open(ex: PaperExchange, dhan) -> None:
    ex.set_session("closed")
    oid = order_id(buy(dhan, 5, after_market_order=True, amo_time="OPEN"))
    o = ex.order(LEADER, oid)
    assert o["orderStatus"] == "PENDING" and o["afterMarketOrder"] is True and o["amoTime"] == "OPEN"
    ex.set_price(RELIANCE, 1450)
    assert ex.order(LEADER, oid)["filledQty"] == 0
    ex.set_session("open")
    assert ex.wait_for(lambda e: e.order(LEADER, oid)["orderStatus"] == "TRADED", 5)


def test_pre_open_accepts_only_equity_limits_matched_at_open(ex: PaperExchange, dhan) -> None:
    ex.set_session("pre_open")
    assert buy(dhan, 1)["remarks"]["error_code"] == "DH-906"
    assert buy(dhan, 75, sid=NIFTY_CE, order_type="LIMIT", price=100.0)["remarks"]["error_code"] == "DH-906"
    oid = order_id(buy(dhan, 2, order_type="LIMIT", price=ex.price(RELIANCE) + 5))
    assert ex.order(LEADER, oid)["orderStatus"] == "PENDING"
    ex.set_session("open")
    assert ex.order(LEADER, oid)["orderStatus"] == "TRADED"


def test_open_orders_expire_at_close(ex: PaperExchange, dhan) -> None:
    oid = order_id(buy(dhan, 1, order_type="LIMIT", price=1400.0))
    ex.set_session("closed")
    assert ex.order(LEADER, oid)["orderStatus"] == "EXPIRED"


def test_auto_session_follows_the_clock_and_calendar() -> None:
    now = [datetime(2026, 11, 23, 5, 0, tzinfo=timezone.utc)]        # Monday 10:30 IST
    ex = make_exchange(session="auto", clock=lambda: now[0])
    try:
        d = client(ex)
        assert buy(d, 1)["status"] == "success"
        now[0] = datetime(2026, 11, 23, 10, 30, tzinfo=timezone.utc)   # 16:00 IST
        assert "market closed" in buy(d, 1)["remarks"]["error_message"]
        now[0] = datetime(2026, 11, 23, 3, 35, tzinfo=timezone.utc)    # 09:05 IST: pre-open
        assert buy(d, 1)["remarks"]["error_code"] == "DH-906"
        now[0] = datetime(2026, 11, 24, 5, 0, tzinfo=timezone.utc)     # Guru Nanak Jayanti: NSE holiday
        assert "holiday" in buy(d, 1)["remarks"]["error_message"]
        assert ex.order(LEADER, ex.orders(LEADER)[0]["orderId"])["createTime"] == "2026-11-23 10:30:00"
    finally:
        ex.stop()


def test_freezegun_does_not_stall_the_exchange() -> None:
    from freezegun import freeze_time
    with freeze_time("2026-11-23 05:00:00"):
        ex = make_exchange(session="auto", tick_seconds=0.01)
        try:
            d = client(ex)
            oid = order_id(buy(d, 2, order_type="LIMIT", price=1400.0))
            ex.set_price(RELIANCE, 1399)
            assert ex.wait_for(lambda e: e.order(LEADER, oid)["orderStatus"] == "TRADED", 5)
            assert ex.order(LEADER, oid)["createTime"] == "2026-11-23 10:30:00"
        finally:
            ex.stop()
