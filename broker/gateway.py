"""The broker gateway: one per account, over the official `dhanhq` client.

Each calling thread gets its own `dhanhq` client (its own HTTP keep-alive session), so the rate
limiter's worker threads can call in parallel. Timeouts are a few seconds, not dhanhq's 60.
Every answer is an `Answer`: data, or a classified `BrokerError`. Nothing here raises on a broker
failure, and nothing here logs a token.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import requests
from dhanhq import DhanContext, dhanhq

from app import metrics
from broker.errors import BrokerError, ErrorKind, classify
from broker.parsing import MalformedMessage, forever_body, from_forever, from_order_book, place_body
from trading.orders import ForeverOrder, OrderTerms, OrderUpdate

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.dhan.co/v2"
DEFAULT_ORDER_UPDATE_URL = "wss://api-order-update.dhan.co"


@dataclass(frozen=True)
class Answer:
    data: Any = None
    error: BrokerError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class DhanGateway:
    def __init__(self, account: str, client_id: str, access_token: str,
                 base_url: str = DEFAULT_BASE_URL, timeout: float = 5.0) -> None:
        self.account = account
        self.client_id = client_id
        self._access_token = access_token
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._local = threading.local()

    def __repr__(self) -> str:  # never show the token
        return f"DhanGateway({self.account}, {self.client_id}, {self.base_url})"

    def current_token(self) -> str:
        """For the order-update socket's login; the gateway is the one holder of the current token."""
        return self._access_token

    def set_token(self, access_token: str) -> None:
        """A renewed token: new clients are made lazily in every thread."""
        self._access_token = access_token
        self._local = threading.local()

    def _client(self) -> dhanhq:
        client = getattr(self._local, "client", None)
        if client is None:
            context = DhanContext(self.client_id, self._access_token)
            http = context.get_dhan_http()
            http.base_url = self.base_url
            http.timeout = self.timeout
            self._settle_environment(http.session)
            client = dhanhq(context)
            self._local.client = client
        return client

    def _settle_environment(self, session: requests.Session) -> None:
        """Read the proxy and CA-bundle settings of the environment once, for this client.

        `requests` otherwise re-reads them, and ~/.netrc, on every call: a fifth of a placement's
        CPU in bench/replication_bench.py. HTTPS_PROXY, NO_PROXY and REQUESTS_CA_BUNDLE still work."""
        session.proxies.update(requests.utils.get_environ_proxies(self.base_url))
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if bundle:
            session.verify = bundle
        session.trust_env = False

    def _call(self, endpoint: str, fn: Any, *args: Any, **kwargs: Any) -> Answer:
        started = time.perf_counter()
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:  # dhanhq raises for a few argument errors; never let them escape
            result = {"status": "failure", "remarks": f"client error: {exc}", "data": ""}
        metrics.BROKER_LATENCY.labels(self.account, endpoint).observe(time.perf_counter() - started)
        if result.get("status") == "success":
            return Answer(data=result.get("data"))
        error = classify(result.get("remarks"))
        metrics.BROKER_ERRORS.labels(self.account, endpoint, error.code).inc()
        return Answer(error=error)

    # -- orders ----------------------------------------------------------------------------------
    def place(self, terms: OrderTerms, correlation_id: str) -> Answer:
        return self._call("place", self._client().place_order, **place_body(terms, correlation_id))

    def modify(self, order_id: str, terms: OrderTerms) -> Answer:
        return self._call("modify", self._client().modify_order, order_id, terms.order_type.value, "",
                          terms.quantity, terms.price, terms.trigger_price, terms.disclosed_qty,
                          terms.validity.value)

    def cancel(self, order_id: str) -> Answer:
        return self._call("cancel", self._client().cancel_order, order_id)

    def _one_order(self, answer: Answer, source: str) -> Answer:
        if not answer.ok:
            return answer
        data = answer.data[0] if isinstance(answer.data, list) and answer.data else answer.data
        if not data:
            return Answer(data=None)
        try:
            return Answer(data=from_order_book(data, source=source))
        except MalformedMessage as exc:
            return Answer(error=BrokerError("DH-907", ErrorKind.DATA, f"unreadable order: {exc}"))

    def order(self, order_id: str) -> Answer:
        """Answer.data: OrderUpdate."""
        return self._one_order(self._call("get_order", self._client().get_order_by_id, order_id), "poll")

    def order_by_correlation(self, correlation_id: str) -> Answer:
        """Answer.data: OrderUpdate, or None when the broker has no such order."""
        answer = self._call("get_order_by_correlation", self._client().get_order_by_correlationID, correlation_id)
        if answer.error is not None and not answer.error.transient and answer.error.kind != ErrorKind.AUTH:
            return Answer(data=None)  # Dhan answers an unknown correlation id with an error body
        return self._one_order(answer, "poll")

    def order_book(self) -> Answer:
        """Answer.data: list of raw order-book entries (parsed by the caller, which counts bad ones)."""
        answer = self._call("order_book", self._client().get_order_list)
        if answer.ok and not isinstance(answer.data, list):
            return Answer(data=[])
        return answer

    # -- account -------------------------------------------------------------------------------
    def fund_limit(self) -> Answer:
        return self._call("fund_limit", self._client().get_fund_limits)

    def positions(self) -> Answer:
        return self._call("positions", self._client().get_positions)

    def trades(self, order_id: str | None = None) -> Answer:
        return self._call("trades", self._client().get_trade_book, order_id)

    def margin(self, terms: OrderTerms, price: float) -> Answer:
        return self._call("margin", self._client().margin_calculator, terms.security_id,
                          terms.exchange_segment, terms.side.value, terms.quantity, terms.product.value,
                          price, terms.trigger_price)

    def renew_token(self) -> Answer:
        """GET /RenewToken on this account's base URL (`dhanhq.renew_token` hard-codes Dhan's
        production URL). Answer.data: the new token; the old one expires."""
        answer = self._call("renew_token", self._client().dhan_http.get, "/RenewToken")
        if not answer.ok:
            return answer
        token = (answer.data or {}).get("accessToken") or (answer.data or {}).get("token")
        if not token:
            return Answer(error=BrokerError("DH-907", ErrorKind.DATA, "RenewToken answered without a token"))
        return Answer(data=str(token))

    def kill_switch(self, activate: bool) -> Answer:
        return self._call("kill_switch", self._client().kill_switch, "ACTIVATE" if activate else "DEACTIVATE")

    def forever_orders(self) -> Answer:
        """Answer.data: list of ForeverOrder (unreadable entries are logged and left out)."""
        answer = self._call("forever_orders", self._client().get_forever)
        if not answer.ok:
            return answer
        orders = []
        for entry in answer.data if isinstance(answer.data, list) else []:
            try:
                orders.append(from_forever(entry))
            except MalformedMessage as exc:
                log.warning("%s: unreadable forever order skipped (%s)", self.account, exc)
        return Answer(data=orders)

    def place_forever(self, order: ForeverOrder, correlation_id: str) -> Answer:
        return self._call("place_forever", self._client().place_forever, **forever_body(order, correlation_id))

    def modify_forever(self, order_id: str, order: ForeverOrder) -> Answer:
        t = order.terms
        return self._call("modify_forever", self._client().modify_forever, order_id, order.order_flag,
                          t.order_type.value, "ENTRY_LEG", t.quantity, t.price, t.trigger_price, t.disclosed_qty,
                          t.validity.value)

    def cancel_forever(self, order_id: str) -> Answer:
        return self._call("cancel_forever", self._client().cancel_forever, order_id)
