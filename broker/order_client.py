"""The order calls the copier sends itself: place, modify, cancel, and read an order (by id, by
correlation id, or the whole book); and the same for super orders (`/super/orders`: place, modify
a leg, cancel a leg, the list).

These are the calls on a copy's path, so they skip `dhanhq` and go straight to the transport
(broker/transport.py). Each request is the one dhanhq 2.3 sends for the same call (its `Order`
and `SuperOrder` methods: the same method, path, headers and JSON body, byte for byte), and each answer is shaped
as dhanhq shapes it; tests/test_dhan_contract.py holds the two side by side against one server.
Every other call still goes through dhanhq.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import quote

from broker.transport import AnyTransport, Connection, Pending, Transport
from trading.orders import AMO_TIMES, Leg, OrderTerms, OrderType


def _segment(value: object) -> str:
    """An id in a path, percent-encoded where it would change the path (Dhan's ids never are)."""
    return quote(str(value), safe="")


def place_payload(terms: OrderTerms, correlation_id: str) -> dict[str, Any]:
    """POST /orders, as dhanhq's `place_order` builds it: every field copied (never defaulted to
    DAY); a price only for the order types that take one. Raises ValueError for an after-market
    time Dhan does not take (nothing is sent)."""
    amo_time = terms.amo_time or "OPEN"
    if terms.amo and amo_time not in AMO_TIMES:
        raise ValueError(f"amo_time value must be one of {list(AMO_TIMES)}, not {amo_time!r}")
    price = terms.price if terms.order_type in (OrderType.LIMIT, OrderType.STOP_LOSS) else 0.0
    payload: dict[str, Any] = {
        "transactionType": terms.side.value.upper(),
        "exchangeSegment": terms.exchange_segment.upper(),
        "productType": terms.product.value.upper(),
        "orderType": terms.order_type.value.upper(),
        "validity": terms.validity.value.upper(),
        "securityId": terms.security_id,
        "quantity": int(terms.quantity),
        "disclosedQuantity": int(terms.disclosed_qty),
        "price": float(price),
        "afterMarketOrder": terms.amo,
    }
    if terms.amo:
        payload["amoTime"] = amo_time
    payload.update(boProfitValue=None, boStopLossValue=None, triggerPrice=float(terms.trigger_price))
    if correlation_id:
        payload["correlationId"] = correlation_id
    return payload


def super_payload(terms: OrderTerms, correlation_id: str) -> dict[str, Any]:
    """POST /super/orders, as dhanhq's `place_super_order` builds it. dhanhq refuses a price of 0
    (even for MARKET) before sending; Dhan's table marks the price required, and the copier sends
    a MARKET entry with the price the leader's super order was asked at (or its reference price),
    so 0 is sent only when none is known (the paper exchange then judges from the last price)."""
    payload: dict[str, Any] = {
        "transactionType": terms.side.value.upper(),
        "exchangeSegment": terms.exchange_segment.upper(),
        "productType": terms.product.value.upper(),
        "orderType": terms.order_type.value.upper(),
        "securityId": terms.security_id,
        "quantity": int(terms.quantity),
        "price": float(terms.price),
        "targetPrice": float(terms.target_price),
        "stopLossPrice": float(terms.stop_loss_price),
        "trailingJump": float(terms.trailing_jump),
    }
    if correlation_id:
        payload["correlationId"] = correlation_id
    return payload


def super_modify_payload(order_id: str, leg: Leg, terms: OrderTerms) -> dict[str, Any]:
    """PUT /super/orders/{id}, as dhanhq's `modify_super_order` builds it for `leg`: the entry
    restates the whole order; the target leg its price; the stop-loss leg its price and jump."""
    if leg is Leg.TARGET:
        return {"orderId": str(order_id), "legName": leg.value, "targetPrice": float(terms.target_price)}
    if leg is Leg.STOP_LOSS:
        return {"orderId": str(order_id), "legName": leg.value, "stopLossPrice": float(terms.stop_loss_price),
                "trailingJump": float(terms.trailing_jump)}
    return {"orderId": str(order_id), "orderType": terms.order_type.value, "legName": leg.value,
            "quantity": int(terms.quantity), "price": float(terms.price), "targetPrice": float(terms.target_price),
            "stopLossPrice": float(terms.stop_loss_price), "trailingJump": float(terms.trailing_jump)}


def _placement(terms: OrderTerms, correlation_id: str) -> tuple[str, dict[str, Any]]:
    """The path and body of a placement: a super order's, or any other order's."""
    if terms.super_order:
        return "/super/orders", super_payload(terms, correlation_id)
    return "/orders", place_payload(terms, correlation_id)


def modify_payload(order_id: str, terms: OrderTerms) -> dict[str, Any]:
    """PUT /orders/{id}, as dhanhq's `modify_order` builds it (no leg: not a bracket or cover order)."""
    return {"orderId": str(order_id), "orderType": terms.order_type.value, "legName": "",
            "quantity": terms.quantity, "price": terms.price, "disclosedQuantity": terms.disclosed_qty,
            "triggerPrice": terms.trigger_price, "validity": terms.validity.value}


class OrderClient:
    """One account's order calls, as one client id and token. Each returns dhanhq's answer shape
    (`{"status", "remarks", "data"}` and the HTTP status); each raises ValueError, having sent
    nothing, for a request it cannot make."""

    def __init__(self, transport: AnyTransport) -> None:
        self.transport = transport

    def place(self, terms: OrderTerms, correlation_id: str) -> dict[str, Any]:
        """A placement: `POST /orders`, or `POST /super/orders` for a super order."""
        return self.transport.call("POST", *_placement(terms, correlation_id))

    def send_place(self, terms: OrderTerms, correlation_id: str, conn: Connection) -> Pending:
        """Send a placement on `conn` (a connection taken from the account's, opened first if it
        is not open) without waiting for its answer: `finish()` on the result reads the answer,
        on any thread (or the answer reader reads it: broker/answers.py)."""
        assert isinstance(self.transport, Transport), "sending ahead needs the kept-alive transport"
        return self.transport.send("POST", *_placement(terms, correlation_id), conn)

    def modify(self, order_id: str, terms: OrderTerms) -> dict[str, Any]:
        return self.transport.call("PUT", f"/orders/{_segment(order_id)}", modify_payload(order_id, terms))

    def cancel(self, order_id: str) -> dict[str, Any]:
        return self.transport.call("DELETE", f"/orders/{_segment(order_id)}")

    def order(self, order_id: str) -> dict[str, Any]:
        return self.transport.call("GET", f"/orders/{_segment(order_id)}")

    def order_by_correlation(self, correlation_id: str) -> dict[str, Any]:
        return self.transport.call("GET", f"/orders/external/{_segment(correlation_id)}")

    def order_book(self) -> dict[str, Any]:
        return self.transport.call("GET", "/orders")

    def modify_super(self, order_id: str, leg: Leg, terms: OrderTerms) -> dict[str, Any]:
        return self.transport.call("PUT", f"/super/orders/{_segment(order_id)}",
                                   super_modify_payload(order_id, leg, terms))

    def cancel_super(self, order_id: str, leg: Leg) -> dict[str, Any]:
        """`leg` ENTRY_LEG cancels every leg still open; an exit leg, that leg for good."""
        return self.transport.call("DELETE", f"/super/orders/{_segment(order_id)}/{leg.value}")

    def super_orders(self) -> dict[str, Any]:
        return self.transport.call("GET", "/super/orders")
