"""The broker gateway: one per account. Order calls (place, modify, cancel, read) go out through
our own client (broker/order_client.py); every other call through the official `dhanhq` client.
Both send over the account's kept-alive connections (broker/transport.py), which its threads
share, so the rate limiter's worker threads can call in parallel. Timeouts are a few seconds, not
dhanhq's 60.
Every answer is an `Answer`: data, or a classified `BrokerError`. Nothing here raises on a broker
failure, and nothing here logs a token.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from dhanhq import DhanContext, dhanhq

from observability import metrics
from broker import codes
from broker.answers import AnswerReader
from broker.errors import BrokerError, ErrorKind, classify
from broker.order_client import OrderClient
from broker.parsing import (MalformedMessage, book_fills_from_dhan, forever_body, from_forever, from_order_book,
                            funds_from_dhan, margin_from_dhan, orders_from_book, positions_from_dhan, profile_from_dhan,
                            quotes_from_ltp, super_orders_from_dhan, trades_from_dhan)
from broker.transport import HTTP_STATUS, DhanHTTPOver, Pending, connections_for, transport_for
from trading.orders import ForeverOrder, Leg, OrderStatus, OrderTerms

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
class PlaceAck:
    """The broker took a placement: its order id, and the status its answer gave (None: none readable)."""

    order_id: str
    status: OrderStatus | None


@dataclass(frozen=True)
class OrderAck:
    """The broker took a modification or a cancel: the status its answer gave (None: none readable)."""

    status: OrderStatus | None


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


@dataclass(frozen=True)
class SentPlacement:
    """A placement request already sent (DhanGateway.send_place); its answer not read yet."""

    gateway: "DhanGateway"
    pending: Pending
    started: float

    def read_by(self, reader: AnswerReader, then: Callable[[Answer], None]) -> None:
        """Have `reader` read the answer as it arrives and give it to `then`, on its thread."""
        reader.watch(self.pending, lambda result: then(self.gateway._answer("place", result, self.started)))


class DhanGateway:
    """One account at the broker. Thread-safe: the rate limiter's workers share it. Every call
    returns an `Answer` whose data is in the copier's own types, or whose error is classified.

        gateway = DhanGateway("f1", client_id, access_token)
        answer = gateway.fund_limit()
        answer.data.available if answer.ok else answer.error.kind    # Funds, or ErrorKind.AUTH ...
    """

    def __init__(self, account: str, client_id: str, access_token: str,
                 base_url: str = DEFAULT_BASE_URL, timeout: float = 5.0) -> None:
        self.account = account
        self.client_id = client_id
        self._access_token = access_token
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._connections = connections_for(self.base_url, timeout)  # None when a proxy applies
        self._bind(access_token)

    def __repr__(self) -> str:  # never show the token
        return f"DhanGateway({self.account}, {self.client_id}, {self.base_url})"

    def current_token(self) -> str:
        """For the order-update socket's login; the gateway is the one holder of the current token."""
        return self._access_token

    def set_token(self, access_token: str) -> None:
        """A renewed token: new clients, over the same connections."""
        self._access_token = access_token
        self._bind(access_token)

    def _bind(self, access_token: str) -> None:
        """Clients for one token. Neither keeps state between calls, so every thread shares them;
        a call already under way finishes with the token it started with."""
        transport = transport_for(self.client_id, access_token, self.base_url, self.timeout, self._connections)
        context = DhanContext(self.client_id, access_token)
        context.dhan_http = DhanHTTPOver(transport)
        self._dhan, self._orders = dhanhq(context), OrderClient(transport)

    def _client(self) -> dhanhq:
        return self._dhan

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
            metrics.series(metrics.BROKER_LATENCY, self.account, endpoint).observe(time.perf_counter() - started)
            return Answer(data=result.get("data"))
        return self._failed(endpoint, classify(result.get("remarks"), result.get(HTTP_STATUS)), started)

    def _failed(self, endpoint: str, error: BrokerError, started: float) -> Answer:
        metrics.BROKER_LATENCY.labels(self.account, endpoint).observe(time.perf_counter() - started)
        metrics.BROKER_ERRORS.labels(self.account, endpoint, error.code).inc()
        return Answer(error=error)

    # -- orders ----------------------------------------------------------------------------------
    def place(self, terms: OrderTerms, correlation_id: str) -> Answer:
        return self._call("place", self._orders.place, terms, correlation_id)

    def send_place(self, terms: OrderTerms, correlation_id: str, connect: bool = False) -> SentPlacement | None:
        """Send a placement on an open kept-alive connection and return without its answer;
        `read_by` on the result has the answer reader read it. None when no connection is open
        (unless `connect`: then one is opened, within the timeout, a failure to open it answered
        as the placement's failure) or a proxy applies: then place() it in full on a broker
        thread. Why this never holds up the caller, even on a slow broker, without `connect`:
        docs/design.md.

            sent = gateway.send_place(terms, correlation_id)   # on the fan-out's thread
            if sent is not None:
                sent.read_by(reader, report)                      # report(answer) on the reader's thread
        """
        if self._connections is None:
            return None
        conn = self._connections.take(open_only=not connect)
        if conn is None:
            return None
        started = time.perf_counter()
        try:
            pending = self._orders.send_place(terms, correlation_id, conn)
        except Exception:  # refused before sending (its arguments): place() answers that in full
            self._connections.give_back(conn)
            return None
        return SentPlacement(self, pending, started)

    def modify(self, order_id: str, terms: OrderTerms) -> Answer:
        return self._call("modify", self._orders.modify, order_id, terms)

    def cancel(self, order_id: str) -> Answer:
        return self._call("cancel", self._orders.cancel, order_id)

    # -- super orders --------------------------------------------------------------------------------
    def modify_super(self, order_id: str, leg: Leg, terms: OrderTerms) -> Answer:
        """One leg of a super order: the entry restates the whole order; an exit leg its price (and jump)."""
        return self._call("modify_super", self._orders.modify_super, order_id, leg, terms)

    def cancel_super(self, order_id: str, leg: Leg) -> Answer:
        """The entry cancels every leg still open; an exit leg, that leg for good."""
        return self._call("cancel_super", self._orders.cancel_super, order_id, leg)

    def super_orders(self) -> Answer:
        """`GET /super/orders`. Answer.data: Listing[SuperOrderView]."""
        answer = self._call("super_orders", self._orders.super_orders)
        if not answer.ok:
            return answer
        try:
            return Answer(data=super_orders_from_dhan(answer.data if isinstance(answer.data, list) else []))
        except MalformedMessage as exc:
            return Answer(error=BrokerError("DH-907", ErrorKind.DATA, f"unreadable super orders: {exc}"))

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
        return self._one_order(self._call("get_order", self._orders.order, order_id), "poll")

    def order_by_correlation(self, correlation_id: str) -> Answer:
        """Answer.data: OrderUpdate, or None when the broker answered that it has no such order.
        Anything short of such an answer (no answer, a 5xx, an unreadable one) is an error: a
        placement must never be taken for absent on it."""
        answer = self._call("get_order_by_correlation", self._orders.order_by_correlation, correlation_id)
        if answer.error is not None and _answers_absent(answer.error):
            return Answer(data=None)  # Dhan answers an unknown correlation id with an error body
        return self._one_order(answer, "poll")

    def order_in_book(self, correlation_id: str) -> Answer:
        """The same question as order_by_correlation, asked of the order book (`GET /orders`, the
        day's every order): Answer.data is the OrderUpdate with that correlation id, or None
        when the book, as answered, has none."""
        answer = self._book_entries()
        if not answer.ok:
            return answer
        # a super order's exit legs carry its correlation id too: the entry (or a plain order) answers
        entry = next((e for e in answer.data if isinstance(e, dict) and e.get("correlationId") == correlation_id
                      and e.get("legName") in (None, "", "ENTRY_LEG")), None)
        if entry is None:
            return Answer(data=None)
        return self._one_order(Answer(data=entry), "poll")

    def _book_entries(self) -> Answer:
        answer = self._call("order_book", self._orders.order_book)
        if answer.ok and not isinstance(answer.data, list):
            return Answer(data=[])
        return answer

    def order_book(self, source: str = "book") -> Answer:
        """`GET /orders`, the day's every order. Answer.data: Listing[OrderUpdate], marked `source`
        and received now; the caller counts its `unreadable` entries."""
        answer = self._book_entries()
        if not answer.ok:
            return answer
        return Answer(data=orders_from_book(answer.data, source, time.monotonic_ns(),
                                            self._skipped("order-book entry")))

    def book_fills(self) -> Answer:
        """`GET /orders`, read only for how much of each order has filled. Answer.data:
        Listing[BookFill]; the caller counts its `unreadable` entries."""
        answer = self._book_entries()
        if not answer.ok:
            return answer
        skipped = self._skipped("order-book entry")
        return self._read("order_book", answer, lambda data: book_fills_from_dhan(data, skipped))

    # -- account -------------------------------------------------------------------------------
    def _read(self, endpoint: str, answer: Answer, parse: Callable[[Any], Any]) -> Answer:
        """A successful answer read into the copier's types; one that cannot be read is a data
        error (DH-907), never an exception."""
        if not answer.ok:
            return answer
        try:
            return Answer(data=parse(answer.data))
        except MalformedMessage as exc:
            metrics.BROKER_ERRORS.labels(self.account, endpoint, "DH-907").inc()
            return Answer(error=BrokerError("DH-907", ErrorKind.DATA, f"unreadable {endpoint} answer: {exc}"))

    def _skipped(self, what: str) -> Callable[[MalformedMessage], None]:
        return lambda exc: log.warning("%s: an unreadable %s left out (%s)", self.account, what, exc)

    def fund_limit(self) -> Answer:
        """Answer.data: Funds."""
        return self._read("fund_limit", self._call("fund_limit", self._client().get_fund_limits), funds_from_dhan)

    def positions(self) -> Answer:
        """Answer.data: Listing[Position]; the caller counts its `unreadable` entries."""
        return self._read("positions", self._call("positions", self._client().get_positions),
                          lambda data: positions_from_dhan(data, self._skipped("position")))

    def trades(self, order_id: str | None = None) -> Answer:
        """Answer.data: Listing[Trade] (of one order, or the day's); the caller counts its
        `unreadable` entries."""
        return self._read("trades", self._call("trades", self._client().get_trade_book, order_id),
                          lambda data: trades_from_dhan(data, self._skipped("trade")))

    def margin(self, terms: OrderTerms, price: float) -> Answer:
        """Answer.data: Margin, the broker's margin calculator on `terms` at `price`."""
        return self._read("margin", self._call("margin", self._client().margin_calculator, terms.security_id,
                                                terms.exchange_segment, terms.side.value, terms.quantity,
                                                terms.product.value, price, terms.trigger_price), margin_from_dhan)

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
        """The broker's own kill switch on (or off). Answer.data: None; only the outcome matters."""
        answer = self._call("kill_switch", self._client().kill_switch, "ACTIVATE" if activate else "DEACTIVATE")
        return Answer(error=answer.error)

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
