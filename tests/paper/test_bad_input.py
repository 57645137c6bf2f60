"""Bad input gets Dhan's DH-905 body naming the field: never a 500, a traceback or a hang."""
from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from tests.paper.paper_support import LEADER, LEADER_TOKEN, RELIANCE

from paper import PaperExchange

GOOD = {"dhanClientId": LEADER, "transactionType": "BUY", "exchangeSegment": "NSE_EQ", "productType": "INTRADAY",
        "orderType": "LIMIT", "validity": "DAY", "securityId": RELIANCE, "quantity": 1, "price": 1400.0,
        "triggerPrice": 0, "disclosedQuantity": 0, "afterMarketOrder": False}
HEADERS = {"access-token": LEADER_TOKEN, "client-id": LEADER, "Content-Type": "application/json"}


def post(ex: PaperExchange, path: str, body: Any, method: str = "POST") -> requests.Response:
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return requests.request(method, ex.rest_url + path, data=data, headers=HEADERS, timeout=5)


@pytest.mark.parametrize("change, field", [
    ({"transactionType": "HOLD"}, "transactionType"),
    ({"exchangeSegment": "NYSE"}, "exchangeSegment"),
    ({"exchangeSegment": "NSE_FNO"}, "exchangeSegment"),
    ({"productType": None}, "productType"),
    ({"orderType": 7}, "orderType"),
    ({"validity": "GTC"}, "validity"),
    ({"securityId": "999999"}, "securityId"),
    ({"securityId": None}, "securityId"),
    ({"quantity": 0}, "quantity"),
    ({"quantity": "ten"}, "quantity"),
    ({"quantity": 1.5}, "quantity"),
    ({"price": 0}, "price"),
    ({"price": -5}, "price"),
    ({"price": 1400.03}, "price"),
    ({"orderType": "STOP_LOSS", "triggerPrice": 0}, "triggerPrice"),
    ({"orderType": "STOP_LOSS_MARKET"}, "triggerPrice"),
    ({"disclosedQuantity": 5}, "disclosedQuantity"),
    ({"afterMarketOrder": "yes"}, "afterMarketOrder"),
    ({"afterMarketOrder": True, "amoTime": "NOON"}, "amoTime"),
    ({"correlationId": "has space"}, "correlationId"),
    ({"dhanClientId": "someone-else"}, "dhanClientId"),
])
def test_bad_place_fields_name_the_field(ex: PaperExchange, change: dict[str, Any], field: str) -> None:
    r = post(ex, "/orders", {**GOOD, **change})
    assert r.status_code == 400
    body = r.json()
    assert body["errorCode"] == "DH-905" and body["errorType"] == "Input_Exception"
    assert body["errorMessage"].startswith(field), body


@pytest.mark.parametrize("raw", ["{not json", "[1, 2]", "null", '"text"', b"\xff\xfe"])
def test_malformed_bodies(ex: PaperExchange, raw: Any) -> None:
    r = post(ex, "/orders", raw)
    assert r.status_code == 400 and r.json()["errorCode"] == "DH-905"


def test_missing_body_and_bad_modify(ex: PaperExchange) -> None:
    r = post(ex, "/orders", "")
    assert r.status_code == 400 and "transactionType" in r.json()["errorMessage"]
    oid = post(ex, "/orders", GOOD).json()["orderId"]
    r = post(ex, f"/orders/{oid}", {"orderType": "LIMIT", "quantity": "x", "price": 1400}, method="PUT")
    assert r.status_code == 400 and r.json()["errorMessage"].startswith("quantity")
    r = post(ex, "/orders/000", {"orderType": "LIMIT", "quantity": 1, "price": 1400}, method="PUT")
    assert r.status_code == 400 and r.json()["errorMessage"].startswith("orderId")


def test_unknown_paths_auth_and_kill_switch_param(ex: PaperExchange) -> None:
    r = requests.get(ex.rest_url + "/nothing/here", headers=HEADERS, timeout=5)
    assert r.status_code == 400 and r.json()["errorCode"] == "DH-905"
    r = requests.patch(ex.rest_url + "/orders", headers=HEADERS, timeout=5)
    assert r.json()["errorCode"] == "DH-905"
    r = requests.get(ex.rest_url + "/orders", headers={"client-id": LEADER}, timeout=5)
    assert r.status_code == 401 and r.json()["errorCode"] == "DH-901"
    r = requests.post(ex.rest_url + "/killswitch?killSwitchStatus=MAYBE", headers=HEADERS, timeout=5)
    assert r.status_code == 400 and r.json()["errorMessage"].startswith("killSwitchStatus")
    r = post(ex, "/margincalculator", {"securityId": RELIANCE, "exchangeSegment": "NSE_EQ", "transactionType": "BUY",
                                       "productType": "CNC", "quantity": -1, "price": 1})
    assert r.status_code == 400 and r.json()["errorMessage"].startswith("quantity")
    assert all(e["status"] != 500 for e in ex.request_log())
