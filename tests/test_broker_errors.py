"""Broker answers classified by Dhan's code *and* the HTTP status dhanhq drops: a 5xx or an
unreadable answer to a placement leaves its outcome unknown; a refusal Dhan names does not; a
lookup says "no such order" only when the broker answered so. Through both transports."""
from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from broker.errors import ErrorKind, classify
from broker.gateway import DhanGateway
from paper import AccountSpec, PaperExchange
from tests.conftest import RELIANCE
from tests.faultproxy import FIRST, NEVER
from trading.orders import OrderTerms, OrderType, Product, Side, Validity

FOLLOWER, TOKEN = "1200000001", "follower-secret-token-0001"
NO_CODE = {"error_code": None, "error_type": None, "error_message": None}  # dhanhq's remarks for {"status":"error"}


def _body(code: str, message: str = "refused") -> dict:
    return {"error_code": code, "error_type": "Order_Error", "error_message": message}


@pytest.mark.parametrize("remarks, status, code, kind, unknown", [
    (NO_CODE, 502, "HTTP-502", ErrorKind.SERVER, True),  # a gateway's 502: the order may exist
    (NO_CODE, 504, "HTTP-504", ErrorKind.SERVER, True),
    (_body("DH-908"), 500, "DH-908", ErrorKind.SERVER, True),
    (_body("DH-910"), 503, "DH-910", ErrorKind.SERVER, True),  # "other", at a 5xx: not a refusal
    (_body("DH-906"), 500, "DH-906", ErrorKind.ORDER, False),  # a refusal Dhan named, whatever the status
    (_body("DH-906"), 400, "DH-906", ErrorKind.ORDER, False),
    (_body("DH-910"), 400, "DH-910", ErrorKind.OTHER, False),
    (NO_CODE, 400, "HTTP-400", ErrorKind.OTHER, False),
    (NO_CODE, 429, "HTTP-429", ErrorKind.RATE_LIMITED, False),
    ("Expecting value: line 1 column 1 (char 0)", 502, "HTTP-502", ErrorKind.SERVER, True),  # an HTML page
    ("Expecting value: line 1 column 1 (char 0)", 200, "HTTP-200", ErrorKind.NETWORK, True),
    ("Read timed out. (read timeout=5)", None, "TRANSPORT", ErrorKind.NETWORK, True),
    (NO_CODE, None, "DH-910", ErrorKind.OTHER, False),  # no status known: as before
])
def test_an_answer_is_classified_by_its_code_and_its_http_status(remarks, status, code, kind, unknown):
    error = classify(remarks, status)
    assert (error.code, error.kind, error.outcome_unknown, error.http_status) == (code, kind, unknown, status)
    assert error.message  # never an empty reason


def test_only_an_answer_from_the_broker_itself_is_from_the_broker():
    assert classify(_body("DH-908"), 500).from_broker
    assert not classify(NO_CODE, 502).from_broker  # a gateway, or a broker that said nothing
    assert not classify("timed out", None).from_broker


@pytest.fixture
def exchange():
    ex = PaperExchange(seed=3, price_walk=False, session="open").start()
    ex.add_account(AccountSpec(FOLLOWER, TOKEN, 5_000_000))
    yield ex
    ex.stop()


@pytest.mark.parametrize("transport", ["kept-alive", "requests"])
def test_the_gateway_keeps_the_http_status_dhanhq_drops(transport, exchange, fault_proxy, monkeypatch):
    proxy = fault_proxy(exchange.rest_url)
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    if transport == "requests":  # a base URL the environment proxies keeps dhanhq's requests transport
        parts = urlsplit(proxy.url)
        monkeypatch.setenv("HTTP_PROXY", f"{parts.scheme}://{parts.netloc}")
        gateway = DhanGateway("f1", FOLLOWER, TOKEN, exchange.rest_url, timeout=2.0)
        assert gateway._connections is None
    else:
        gateway = DhanGateway("f1", FOLLOWER, TOKEN, proxy.url, timeout=2.0)
    terms = OrderTerms(RELIANCE, "NSE_EQ", Side.BUY, Product.INTRADAY, OrderType.LIMIT, Validity.DAY, 1, 1300.0)

    proxy.respond("POST /orders", 502, '{"status":"error"}', forward=FIRST, count=1)
    placed = gateway.place(terms, "CTGATEWAY01")
    assert placed.error is not None and (placed.error.code, placed.error.http_status) == ("HTTP-502", 502)
    assert placed.error.outcome_unknown and len(exchange.orders(FOLLOWER)) == 1

    proxy.respond("GET /orders/external/*", 503, "", forward=NEVER, count=1)
    assert not gateway.order_by_correlation("CTGATEWAY01").ok  # no answer is not "no such order"
    assert gateway.order_by_correlation("CTGATEWAY01").data.correlation_id == "CTGATEWAY01"
    absent = gateway.order_by_correlation("CTNOSUCHORDER")
    assert absent.ok and absent.data is None  # the broker answered that it has none

    proxy.respond("GET /orders", 502, '{"status":"error"}', forward=NEVER, count=1)
    assert not gateway.order_in_book("CTGATEWAY01").ok
    assert gateway.order_in_book("CTGATEWAY01").data.order_id == exchange.orders(FOLLOWER)[0]["orderId"]
    assert gateway.order_in_book("CTNOSUCHORDER").data is None
