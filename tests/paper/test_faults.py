"""REST fault knobs and limits: what the copier's retry and exactly-once logic must survive."""
from __future__ import annotations

import threading
import time

from tests.paper.paper_support import FOLLOWER, LEADER, buy, client, make_exchange

from paper import PaperExchange


def test_fail_fraction_fails_before_any_effect(ex: PaperExchange, dhan) -> None:
    for mode, code in (("DH-908", "DH-908"), ("DH-909", "DH-909")):
        ex.faults.fail_fraction(1.0, mode=mode, client_id=LEADER, paths=("POST /orders",))
        r = buy(dhan, 1, tag=f"f-{mode}")
        assert r["remarks"]["error_code"] == code
        ex.faults.clear()
    ex.faults.fail_fraction(1.0, mode="close", paths=("POST /orders",))
    r = buy(dhan, 1, tag="f-close")
    assert r["status"] == "failure" and "Connection aborted" in str(r["remarks"])
    ex.faults.clear()
    assert ex.orders(LEADER) == []
    assert dhan.get_order_by_correlationID("f-close")["status"] == "failure"
    assert [e["status"] for e in ex.request_log(LEADER)][:3] == [500, 503, 0]


def test_fail_fraction_is_a_fraction_and_scoped_to_paths(ex: PaperExchange, dhan) -> None:
    ex.faults.fail_fraction(0.5, mode="DH-908", paths=("POST /orders",), seed=11)
    results = [buy(dhan, 1)["status"] for _ in range(40)]
    assert 5 < results.count("failure") < 35
    assert dhan.get_order_list()["status"] == "success"


def test_lost_answer_order_exists_and_is_found_by_correlation_id(ex: PaperExchange, dhan) -> None:
    ex.faults.fail_after_effect(1.0, client_id=LEADER)
    r = buy(dhan, 1, tag="lost-1")
    assert r["status"] == "failure"
    ex.faults.clear()
    found = dhan.get_order_by_correlationID("lost-1")
    assert found["status"] == "success" and found["data"]["orderStatus"] == "TRADED"
    again = buy(dhan, 1, tag="lost-1")
    assert again["remarks"]["error_code"] == "DH-905"


def test_delayed_answer_takes_effect_first(ex: PaperExchange, dhan) -> None:
    ex.faults.delay_answers(0.4, client_id=LEADER, count=1)
    t0 = time.monotonic()
    r = buy(dhan, 1, tag="slow-1")
    assert r["status"] == "success" and time.monotonic() - t0 >= 0.4
    t0 = time.monotonic()
    assert buy(dhan, 1)["status"] == "success" and time.monotonic() - t0 < 0.3   # count=1: once only


def test_delayed_effect_answers_what_holds_once_it_takes_effect(ex: PaperExchange, dhan) -> None:
    ex.faults.delay_effects(0.5, client_id=LEADER, paths="GET /positions", count=1)
    read: list[dict] = []
    reader = threading.Thread(target=lambda: read.append(dhan.get_positions()))
    reader.start()
    assert ex.wait_for(lambda e: e.faults.counts().get("delayed_effect") == 1, 2)  # the reading has arrived
    assert buy(dhan, 3)["status"] == "success"  # placed while it waits to take effect
    reader.join(5)
    assert sum(p["netQty"] for p in read[0]["data"]) == 3


def test_timeout_while_answer_delayed_still_places(ex: PaperExchange) -> None:
    ex.faults.delay_answers(1.0, paths="POST /orders")
    impatient = client(ex)
    impatient.dhan_http.timeout = 0.2
    r = buy(impatient, 1, tag="late-1")
    assert r["status"] == "failure"
    assert ex.wait_for(lambda e: any(o["correlationId"] == "late-1" for o in e.orders(LEADER)), 2)


def test_reject_next(ex: PaperExchange, dhan) -> None:
    ex.reject_next(LEADER, "DH-906", "RMS: scrip blocked for trading", count=2)
    assert [buy(dhan, 1)["remarks"]["error_message"] for _ in range(2)] == ["RMS: scrip blocked for trading"] * 2
    assert buy(dhan, 1)["status"] == "success"
    assert buy(client(ex, FOLLOWER, "tok-follower"), 1)["status"] == "success"


def test_order_rate_limit_is_429_dh904_per_account() -> None:
    ex = make_exchange(rate_limits={"per_second": 5})
    try:
        d = client(ex)
        codes = [buy(d, 1)["remarks"] for _ in range(8)]
        limited = [c for c in codes if c]
        assert len(limited) >= 3 and all(c["error_code"] == "DH-904" for c in limited)
        assert any(e["status"] == 429 for e in ex.request_log(LEADER))
        assert d.get_order_list()["status"] == "success"                     # reads are not order calls
        assert buy(client(ex, FOLLOWER, "tok-follower"), 1)["status"] == "success"  # other account unaffected
        assert ex.wait_for(lambda e: buy(d, 1)["status"] == "success", 3)    # the window slides
    finally:
        ex.stop()
