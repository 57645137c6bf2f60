"""The fault-injecting proxy (tests/faultproxy.py) does what its API says, counted on the paper
exchange's books: each fault before or after the exchange acted, per pattern, for N calls."""
from __future__ import annotations

import time

import pytest

from paper import AccountSpec, PaperExchange
from tests.conftest import RELIANCE, client, wait_until
from tests.faultproxy import FIRST, LATE, NEVER, FaultProxy

FOLLOWER, TOKEN = "1200000001", "follower-secret-token-0001"


@pytest.fixture
def exchange():
    ex = PaperExchange(seed=3, price_walk=False, session="open").start()
    ex.add_account(AccountSpec(FOLLOWER, TOKEN, 5_000_000))
    yield ex
    ex.stop()


def _place(via, correlation_id: str) -> dict:
    return via.place_order(security_id=RELIANCE, exchange_segment="NSE_EQ", transaction_type="BUY", quantity=1,
                           order_type="LIMIT", product_type="INTRADAY", price=1300.0, tag=correlation_id)


def _held(exchange, correlation_id: str) -> int:
    return sum(1 for o in exchange.orders(FOLLOWER) if o["correlationId"] == correlation_id)


def test_without_rules_every_call_is_forwarded_untouched(exchange, fault_proxy):
    proxy = fault_proxy(exchange.rest_url)
    via = client(proxy.url, FOLLOWER, TOKEN)
    assert _place(via, "CTPLAIN1")["status"] == "success"
    assert via.get_order_by_correlationID("CTPLAIN1")["data"]["correlationId"] == "CTPLAIN1"
    assert [c["action"] for c in proxy.calls] == ["forward", "forward"]


def test_a_5xx_without_error_code_after_or_before_the_exchange_acted(exchange, fault_proxy):
    proxy = fault_proxy(exchange.rest_url)
    via = client(proxy.url, FOLLOWER, TOKEN)
    rule = proxy.respond("POST /orders", 502, '{"status":"error"}', forward=FIRST, count=1)
    answer = _place(via, "CTAFTER1")
    assert answer["status"] == "failure" and answer["remarks"]["error_code"] is None
    assert _held(exchange, "CTAFTER1") == 1 and rule.hits == 1

    proxy.respond("POST /orders", 503, "<html>Service Unavailable</html>", forward=NEVER, count=1,
                  content_type="text/html")
    assert _place(via, "CTBEFORE1")["status"] == "failure"
    assert _held(exchange, "CTBEFORE1") == 0
    assert _place(via, "CTBEFORE2")["status"] == "success"  # the count is spent: forwarded again
    assert [c["status"] for c in proxy.calls_to("POST /orders")] == [502, 503, 200]


def test_a_dropped_connection_after_or_before_the_exchange_acted(exchange, fault_proxy):
    proxy = fault_proxy(exchange.rest_url)
    via = client(proxy.url, FOLLOWER, TOKEN)
    proxy.drop("POST /orders", forward=FIRST, count=1)
    assert _place(via, "CTDROP1")["status"] == "failure"
    assert _held(exchange, "CTDROP1") == 1
    proxy.drop("POST /orders", forward=NEVER, count=1)
    assert _place(via, "CTDROP2")["status"] == "failure"
    assert _held(exchange, "CTDROP2") == 0
    assert [c["status"] for c in proxy.calls_to("POST /orders")] == [None, None]


def test_a_hang_past_the_client_timeout_after_before_or_with_late_effect(exchange, fault_proxy):
    proxy = fault_proxy(exchange.rest_url)
    via = client(proxy.url, FOLLOWER, TOKEN, timeout=0.3)
    proxy.hang("POST /orders", 1.0, forward=FIRST, count=1)
    assert _place(via, "CTHANG1")["status"] == "failure"  # timed out
    assert _held(exchange, "CTHANG1") == 1  # but placed

    proxy.hang("POST /orders", 1.0, forward=NEVER, count=1)
    assert _place(via, "CTHANG2")["status"] == "failure"
    time.sleep(1.2)  # past the hang: nothing arrives late either
    assert _held(exchange, "CTHANG2") == 0

    proxy.hang("POST /orders", 0.8, forward=LATE, count=1)
    started = time.monotonic()
    assert _place(via, "CTLATE1")["status"] == "failure"
    assert _held(exchange, "CTLATE1") == 0  # not yet: the exchange acts after the client gave up
    wait_until(lambda: _held(exchange, "CTLATE1") == 1, 5, message="the late placement")
    assert time.monotonic() - started >= 0.8


def test_patterns_counts_and_fractions_select_the_calls_a_fault_takes(exchange, fault_proxy):
    proxy = fault_proxy(exchange.rest_url, seed=1)
    via = client(proxy.url, FOLLOWER, TOKEN)
    _place(via, "CTSEL1")
    lookups = proxy.respond("GET /orders/external/*", 500, "{}", forward=NEVER, count=2)
    assert [via.get_order_by_correlationID("CTSEL1")["status"] for _ in range(3)] == ["failure", "failure", "success"]
    assert lookups.hits == 2 and via.get_order_list()["status"] == "success"  # GET /orders is not matched

    some = proxy.respond("GET /orders", 500, "{}", forward=NEVER, fraction=0.5)
    results = [via.get_order_list()["status"] for _ in range(40)]
    assert 5 < results.count("failure") < 35 and some.hits == results.count("failure")
    some.remove()
    assert via.get_order_list()["status"] == "success"
    with pytest.raises(ValueError):
        proxy.drop("POST /orders", forward=LATE)  # a late effect needs a hang
