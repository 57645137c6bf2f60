"""Out-of-process drivers: the JSON control endpoint, `python -m paper`, and the LeaderBot."""
from __future__ import annotations

import requests
from tests.paper.paper_support import LEADER, LEADER_TOKEN, RELIANCE, buy, order_id

from paper import LeaderBot, PaperExchange, load_instruments


def test_control_endpoint_drives_the_same_knobs(ex: PaperExchange, dhan) -> None:
    r = requests.post(ex.control_url + "/set_price", json={"security_id": RELIANCE, "price": 1450}, timeout=5)
    assert r.status_code == 200 and ex.price(RELIANCE) == 1450
    requests.post(ex.control_url + "/faults.fail_fraction", json={"fraction": 1.0, "mode": "DH-909"}, timeout=5)
    assert buy(dhan, 1)["remarks"]["error_code"] == "DH-909"
    requests.post(ex.control_url + "/faults.clear", timeout=5)
    oid = order_id(buy(dhan, 1))
    orders = requests.post(ex.control_url + "/orders", json={"client_id": LEADER}, timeout=5).json()["result"]
    assert [o["orderId"] for o in orders] == [oid]
    assert requests.post(ex.control_url + "/nope", timeout=5).status_code == 404
    assert requests.get(ex.control_url, timeout=5).json()["accounts"] == ["1000000001", "1000000002"]


def test_leader_bot_trades_through_the_api(ex: PaperExchange) -> None:
    bot = LeaderBot(ex.rest_url, LEADER, LEADER_TOKEN, seed=5, pace_seconds=0.01).start()
    try:
        assert ex.wait_for(lambda e: len(e.orders(LEADER)) >= 8, 10)
    finally:
        bot.stop()
    orders = ex.orders(LEADER)
    ins = load_instruments()
    assert all(o["quantity"] % ins[o["securityId"]].lot_size == 0 for o in orders)
    assert all(e["status"] != 500 for e in ex.request_log(LEADER))


def test_instrument_master_is_in_dhan_columns() -> None:
    ins = load_instruments()
    assert ins["2885"].trading_symbol == "RELIANCE" and ins["2885"].exchange_segment == "NSE_EQ"
    nifty = [i for i in ins.values() if i.trading_symbol.startswith("NIFTY-") and i.is_option]
    assert len(nifty) == 20 and {i.lot_size for i in nifty} == {75}
    assert all(i.expiry_date > "2026-11-23" for i in ins.values() if i.segment == "D")
