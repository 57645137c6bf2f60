"""The broker gateway: one per account, over the official `dhanhq` client.

Each calling thread gets its own `dhanhq` client over the account's kept-alive connections (see
broker/transport.py), so the rate limiter's worker threads can call in parallel. Timeouts are a
few seconds, not dhanhq's 60.
Every answer is an `Answer`: data, or a classified `BrokerError`. Nothing here raises on a broker
failure, and nothing here logs a token.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from dhanhq import DhanContext, dhanhq

from app import metrics
from broker import codes
from broker.errors import BrokerError, ErrorKind, classify
from broker.parsing import MalformedMessage, forever_body, from_forever, from_order_book, place_body
from broker.transport import HTTP_STATUS, KeptAliveHTTP, Pending, connections_for, dhan_http
from trading.orders import ForeverOrder, OrderStatus, OrderTerms, OrderUpdate

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


@dataclass(frozen=True)
class Quote:
    """The last traded price of one instrument, as Dhan's market quote API reported it."""

    exchange_segment: str
    security_id: str
    last_price: float


@dataclass(frozen=True)
class Profile:
    """An account's setup from Dhan's user profile: what matters here is whether its Data API plan
    is active (without it the market quote API refuses the account)."""

    client_id: str
    data_plan: bool
    data_valid_until: str = ""
    token_valid_until: str = ""


def quotes_from_ltp(body: Any) -> dict[tuple[str, str], Quote]:
    """Dhan's `/marketfeed/ltp` answer, `{"data": {"NSE_EQ": {"11536": {"last_price": 4520}}}, ...}`,
    by (segment, security id); instruments without a positive price are left out."""
    quotes: dict[tuple[str, str], Quote] = {}
    by_segment = body.get("data") if isinstance(body, Mapping) else None
    for segment, by_id in (by_segment.items() if isinstance(by_segment, Mapping) else ()):
        for security_id, entry in (by_id.items() if isinstance(by_id, Mapping) else ()):
            try:
                price = float(entry.get("last_price"))
            except (AttributeError, TypeError, ValueError):
                continue
            if price > 0 and math.isfinite(price):
                quotes[(str(segment), str(security_id))] = Quote(str(segment), str(security_id), price)
    return quotes


def profile_from_dhan(body: Any, client_id: str) -> Profile | None:
    """Dhan's `/profile` answer (`dataPlan`: "Active" or "Deactive"), or None when it is not one."""
    if not isinstance(body, Mapping):
        return None
    return Profile(client_id=str(body.get("dhanClientId") or client_id),
                   data_plan=str(body.get("dataPlan") or "").strip().lower() == "active",
                   data_valid_until=str(body.get("dataValidity") or ""),
                   token_valid_until=str(body.get("tokenValidity") or ""))


@dataclass(frozen=True)
class PlaceAck:
    """The broker took a placement: its order id, and the status its answer gave (None: none readable)."""

    order_id: str
    status: OrderStatus | None


@dataclass(frozen=True)
class OrderAck:
    """The broker took a modification or a cancel: the status its answer gave (None: none readable)."""

    status: OrderStatus | None


@dataclass(frozen=True)
class MarginRequired:
    """The margin calculator's answer for one order."""

    total: float
    shortfall: float  # 0 when the account has enough


def _status(text: Any) -> OrderStatus | None:
    try:
        return codes.status(text) if text else None
    except ValueError:
        return None


def placement_ack(answer: Answer) -> Answer:
    """A placement's (or a forever placement's) answer as Answer.data: PlaceAck. A success without
    an order id is as good as no answer: its outcome is unknown (an error the caller looks up)."""
    if not answer.ok:
        return answer
    data = answer.data if isinstance(answer.data, Mapping) else {}
    order_id = str(data.get("orderId") or "")
    if not order_id:
        return Answer(error=BrokerError("UNREADABLE", ErrorKind.NETWORK,
                                        f"placement answered without an order id: {str(answer.data)[:200]}"))
    return Answer(data=PlaceAck(order_id, _status(data.get("orderStatus")) or OrderStatus.PENDING))


def order_ack(answer: Answer) -> Answer:
    """A modification's or a cancel's answer as Answer.data: OrderAck."""
    if not answer.ok:
        return answer
    data = answer.data if isinstance(answer.data, Mapping) else {}
    return Answer(data=OrderAck(_status(data.get("orderStatus"))))


def margin_required(answer: Answer) -> Answer:
    """The margin calculator's answer as Answer.data: MarginRequired (an error when unreadable)."""
    if not answer.ok:
        return answer
    data = answer.data if isinstance(answer.data, Mapping) else None
    try:
        assert data is not None
        return Answer(data=MarginRequired(float(data.get("totalMargin") or 0), float(data.get("insufficientBalance") or 0)))
    except (AssertionError, TypeError, ValueError):
        return Answer(error=BrokerError("DH-907", ErrorKind.DATA, "margin calculator answered without margins"))


@dataclass(frozen=True)
class SentPlacement:
    """A placement request already sent (DhanGateway.send_place); its answer not read yet."""

    gateway: "DhanGateway"
    pending: Pending
    started: float

    def answer(self) -> Answer:
        return self.gateway._answer("place", self.pending.finish(), self.started)


class DhanGateway:
    def __init__(self, account: str, client_id: str, access_token: str,
                 base_url: str = DEFAULT_BASE_URL, timeout: float = 5.0) -> None:
        self.account = account
        self.client_id = client_id
        self._access_token = access_token
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._connections = connections_for(self.base_url, timeout)  # None when a proxy applies
        self._local = threading.local()
        self._senders: list[dhanhq] = []  # clients for send_place, which runs on short-lived threads
        self._senders_lock = threading.Lock()

    def __repr__(self) -> str:  # never show the token
        return f"DhanGateway({self.account}, {self.client_id}, {self.base_url})"

    def current_token(self) -> str:
        """For the order-update socket's login; the gateway is the one holder of the current token."""
        return self._access_token

    def set_token(self, access_token: str) -> None:
        """A renewed token: new clients are made lazily in every thread."""
        self._access_token = access_token
        self._local = threading.local()
        with self._senders_lock:
            self._senders = []

    def _new_client(self) -> dhanhq:
        context = DhanContext(self.client_id, self._access_token)
        context.dhan_http = dhan_http(self.client_id, self._access_token, self.base_url, self.timeout,
                                      self._connections)
        return dhanhq(context)

    def _client(self) -> dhanhq:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._new_client()
        return client

    def _call(self, endpoint: str, fn: Any, *args: Any, **kwargs: Any) -> Answer:
        started = time.perf_counter()
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:  # dhanhq raises for a few argument errors; never let them escape
            # nothing was sent: a refusal, not a network failure (a placement is not looked up)
            return self._failed(endpoint, BrokerError("CLIENT", ErrorKind.INPUT, f"client error: {exc}"), started)
        return self._answer(endpoint, result, started)

    def _answer(self, endpoint: str, result: dict[str, Any], started: float) -> Answer:
        if result.get("status") == "success":
            metrics.BROKER_LATENCY.labels(self.account, endpoint).observe(time.perf_counter() - started)
            return Answer(data=result.get("data"))
        return self._failed(endpoint, classify(result.get("remarks"), result.get(HTTP_STATUS)), started)

    def _failed(self, endpoint: str, error: BrokerError, started: float) -> Answer:
        metrics.BROKER_LATENCY.labels(self.account, endpoint).observe(time.perf_counter() - started)
        metrics.BROKER_ERRORS.labels(self.account, endpoint, error.code).inc()
        return Answer(error=error)

    # -- orders ----------------------------------------------------------------------------------
    def place(self, terms: OrderTerms, correlation_id: str) -> Answer:
        return self._call("place", self._client().place_order, **place_body(terms, correlation_id))

    def send_place(self, terms: OrderTerms, correlation_id: str) -> SentPlacement | None:
        """Send a placement on an open kept-alive connection and return without its answer;
        `answer()` on the result waits for it (on any thread). None when no connection is open
        (a connect, or a TLS handshake, must not hold up the caller) or a proxy applies: then
        place() it in full on a worker. It cannot block the caller on a slow broker either: an
        idle connection's previous answer was read whole, so its send buffer is empty and the
        request (under 1 kB) is copied into it at once."""
        if self._connections is None:
            return None
        conn = self._connections.take(open_only=True)
        if conn is None:
            return None
        with self._senders_lock:
            client = self._senders.pop() if self._senders else None
        client = client or self._new_client()
        http = client.dhan_http
        assert isinstance(http, KeptAliveHTTP)
        started = time.perf_counter()
        try:
            with http.sending_on(conn):
                pending = client.place_order(**place_body(terms, correlation_id))
        except Exception:  # dhanhq refused the arguments before sending: place() answers that in full
            self._connections.give_back(conn)
            return None
        finally:
            with self._senders_lock:
                if http.access_token == self._access_token:  # a renewed token retires old clients
                    self._senders.append(client)
        return SentPlacement(self, pending, started)

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
        """Answer.data: OrderUpdate, or None when the broker answered that it has no such order.
        Anything short of such an answer (no answer, a 5xx, an unreadable one) is an error: a
        placement must never be taken for absent on it."""
        answer = self._call("get_order_by_correlation", self._client().get_order_by_correlationID, correlation_id)
        if answer.error is not None and _answers_absent(answer.error):
            return Answer(data=None)  # Dhan answers an unknown correlation id with an error body
        return self._one_order(answer, "poll")

    def order_in_book(self, correlation_id: str) -> Answer:
        """The same question as order_by_correlation, asked of the order book (`GET /orders`, the
        day's every order): Answer.data is the OrderUpdate with that correlation id, or None
        when the book, as answered, has none."""
        answer = self.order_book()
        if not answer.ok:
            return answer
        entry = next((e for e in answer.data if isinstance(e, dict) and e.get("correlationId") == correlation_id),
                     None)
        if entry is None:
            return Answer(data=None)
        return self._one_order(Answer(data=entry), "poll")

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

    def profile(self) -> Answer:
        """GET /profile (dhanhq 2.3 has no call for it on this base URL). Answer.data: Profile."""
        answer = self._call("profile", self._client().dhan_http.get, "/profile")
        if not answer.ok:
            return answer
        profile = profile_from_dhan(answer.data, self.client_id)
        if profile is None:
            return Answer(error=BrokerError("DH-907", ErrorKind.DATA, "profile answered without a profile"))
        return Answer(data=profile)

    # -- market data -----------------------------------------------------------------------------
    def quotes(self, instruments: Iterable[tuple[str, str]]) -> Answer:
        """POST /marketfeed/ltp for (segment, security id) pairs in one request. Dhan allows 1000
        instruments a request and 1 request a second per account, and only with a data plan: the
        caller batches and paces. Answer.data: {(segment, security id): Quote}, without the
        instruments Dhan had no price for."""
        securities: dict[str, list[int | str]] = {}
        for segment, security_id in instruments:
            securities.setdefault(segment, []).append(int(security_id) if security_id.isdigit() else security_id)
        answer = self._call("quotes", self._client().ticker_data, securities)
        return Answer(data=quotes_from_ltp(answer.data)) if answer.ok else answer

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


def _answers_absent(error: BrokerError) -> bool:
    """A refusal the broker answered (a status below 500 and no auth, rate or server problem):
    for a lookup by correlation id, that is how Dhan says "no such order"."""
    return (error.http_status is not None and error.http_status < 500
            and error.kind in (ErrorKind.INPUT, ErrorKind.ORDER, ErrorKind.DATA, ErrorKind.OTHER))
