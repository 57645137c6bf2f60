"""Dhan's order representations (socket `order_alert`, order-book entry) -> `OrderUpdate`.

Validation is strict on what replication needs (id, status, side, security, quantity, segment)
and tolerant of everything else: a bad message raises `MalformedMessage` with the reason, which the
feed counts and skips.
"""
from __future__ import annotations

import json
from typing import Any, Mapping

from broker import codes
from broker.errors import ErrorKind, classify
from trading.orders import AMO_TIMES, EXCHANGE_SEGMENTS, ForeverOrder, OrderTerms, OrderType, OrderUpdate


class MalformedMessage(ValueError):
    """A socket message or book entry the copier cannot use; `reason` is a short metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _num(value: Any, field: str, kind: type = float) -> Any:
    if value in (None, ""):
        return kind(0)
    try:
        return kind(float(value)) if kind is int else kind(value)
    except (TypeError, ValueError):
        raise MalformedMessage("bad_field", f"{field}={value!r} is not a number") from None


def _required(data: Mapping[str, Any], field: str) -> Any:
    value = data.get(field)
    if value in (None, ""):
        raise MalformedMessage("missing_field", f"{field} is missing")
    return value


def _enum(table: dict, value: Any, field: str) -> Any:
    try:
        return codes.lookup(table, value, field)
    except ValueError as exc:
        raise MalformedMessage("bad_field", str(exc)) from None


def _amo_time(value: Any, amo: bool) -> str | None:
    if not amo:
        return None
    text = str(value or "OPEN").upper()
    return text if text in AMO_TIMES else "OPEN"


def _status(value: Any) -> Any:
    try:
        return codes.status(value)
    except ValueError as exc:
        raise MalformedMessage("bad_field", str(exc)) from None


def decode_socket_message(raw: str | bytes) -> dict[str, Any] | None:
    """JSON-decode a socket frame; None for frames that are not order alerts (login answers, pings)."""
    try:
        message = json.loads(raw)
    except (TypeError, ValueError) as exc:
        raise MalformedMessage("bad_json", str(exc)[:120]) from None
    if not isinstance(message, dict):
        raise MalformedMessage("bad_shape", f"expected an object, got {type(message).__name__}")
    if message.get("Type") != "order_alert":
        return None
    data = message.get("Data")
    if not isinstance(data, dict):
        raise MalformedMessage("bad_shape", "order_alert without a Data object")
    return data


def from_socket(data: Mapping[str, Any], received_ns: int = 0) -> OrderUpdate:
    """An `order_alert` Data object -> OrderUpdate."""
    exchange = str(_required(data, "Exchange")).upper()
    segment_letter = str(_required(data, "Segment")).upper()
    segment = codes.SEGMENT.get((exchange, segment_letter))
    if segment is None:
        raise MalformedMessage("bad_field", f"unknown Exchange/Segment {exchange}/{segment_letter}")
    amo = str(data.get("OffMktFlag", "0")).strip() in ("1", "true", "True", "Y")
    order_type = _enum(codes.ORDER_TYPE, _required(data, "OrderType"), "OrderType")
    quantity = _num(_required(data, "Quantity"), "Quantity", int)
    if quantity <= 0:
        raise MalformedMessage("bad_field", f"Quantity={quantity} must be positive")
    terms = OrderTerms(
        security_id=str(_required(data, "SecurityId")),
        exchange_segment=segment,
        side=_enum(codes.SIDE, _required(data, "TxnType"), "TxnType"),
        product=_enum(codes.PRODUCT, _required(data, "Product"), "Product"),
        order_type=order_type,
        validity=_enum(codes.VALIDITY, data.get("Validity") or "DAY", "Validity"),
        quantity=quantity,
        price=_num(data.get("Price"), "Price"),
        trigger_price=_num(data.get("TriggerPrice"), "TriggerPrice"),
        disclosed_qty=_num(data.get("DiscQuantity"), "DiscQuantity", int),
        amo=amo,
        amo_time=_amo_time(data.get("AmoTime") or data.get("AMOTime"), amo),
    )
    sequence = data.get("Sequence")
    return OrderUpdate(
        order_id=str(_required(data, "OrderNo")),
        status=_status(_required(data, "Status")),
        terms=terms,
        filled_qty=_num(data.get("TradedQty"), "TradedQty", int),
        avg_price=_num(data.get("AvgTradedPrice"), "AvgTradedPrice"),
        last_fill_price=_num(data.get("TradedPrice"), "TradedPrice"),
        correlation_id=(str(data["CorrelationId"]) if data.get("CorrelationId") else None),
        symbol=str(data.get("Symbol") or data.get("DisplayName") or ""),
        reason=str(data.get("ReasonDescription") or ""),
        created_at=str(data.get("OrderDateTime") or ""),
        updated_at=str(data.get("LastUpdatedTime") or ""),
        sequence=_num(sequence, "Sequence", int) if sequence not in (None, "") else None,
        lot_size=_num(data.get("LotSize"), "LotSize", int) or None,
        source="socket",
        received_ns=received_ns,
    )


def from_order_book(entry: Mapping[str, Any], source: str = "book", received_ns: int = 0) -> OrderUpdate:
    """A `GET /orders` (or `/orders/{id}`) entry -> OrderUpdate."""
    segment = str(_required(entry, "exchangeSegment")).upper()
    if segment not in EXCHANGE_SEGMENTS:
        raise MalformedMessage("bad_field", f"unknown exchangeSegment {segment!r}")
    amo = bool(entry.get("afterMarketOrder")) and str(entry.get("afterMarketOrder")).lower() not in ("false", "0", "no")
    order_type = _enum(codes.ORDER_TYPE, _required(entry, "orderType"), "orderType")
    terms = OrderTerms(
        security_id=str(_required(entry, "securityId")),
        exchange_segment=segment,
        side=_enum(codes.SIDE, _required(entry, "transactionType"), "transactionType"),
        product=_enum(codes.PRODUCT, _required(entry, "productType"), "productType"),
        order_type=order_type,
        validity=_enum(codes.VALIDITY, entry.get("validity") or "DAY", "validity"),
        quantity=_num(_required(entry, "quantity"), "quantity", int),
        price=_num(entry.get("price"), "price"),
        trigger_price=_num(entry.get("triggerPrice"), "triggerPrice"),
        disclosed_qty=_num(entry.get("disclosedQuantity"), "disclosedQuantity", int),
        amo=amo,
        amo_time=_amo_time(entry.get("amoTime"), amo),
    )
    sequence = entry.get("sequence")
    return OrderUpdate(
        order_id=str(_required(entry, "orderId")),
        status=_status(_required(entry, "orderStatus")),
        terms=terms,
        filled_qty=_num(entry.get("filledQty"), "filledQty", int),
        avg_price=_num(entry.get("averageTradedPrice"), "averageTradedPrice"),
        correlation_id=(str(entry["correlationId"]) if entry.get("correlationId") else None),
        symbol=str(entry.get("tradingSymbol") or ""),
        reason=str(entry.get("omsErrorDescription") or ""),
        created_at=str(entry.get("createTime") or ""),
        updated_at=str(entry.get("updateTime") or ""),
        sequence=_num(sequence, "sequence", int) if sequence not in (None, "") else None,
        source=source,
        received_ns=received_ns,
    )


def place_body(terms: OrderTerms, correlation_id: str) -> dict[str, Any]:
    """Keyword arguments for `dhanhq.place_order`, every field copied (never defaulted to DAY)."""
    needs_price = terms.order_type in (OrderType.LIMIT, OrderType.STOP_LOSS)
    return dict(
        security_id=terms.security_id, exchange_segment=terms.exchange_segment,
        transaction_type=terms.side.value, quantity=terms.quantity, order_type=terms.order_type.value,
        product_type=terms.product.value, price=terms.price if needs_price else 0.0,
        trigger_price=terms.trigger_price, disclosed_quantity=terms.disclosed_qty,
        after_market_order=terms.amo, validity=terms.validity.value,
        amo_time=terms.amo_time or "OPEN", tag=correlation_id,
    )


def from_forever(entry: Mapping[str, Any]) -> ForeverOrder:
    """A `GET /forever/orders` entry -> ForeverOrder."""
    update = from_order_book({**entry, "orderStatus": "PENDING"}, source="forever")
    return ForeverOrder(
        order_id=update.order_id, status=str(_required(entry, "orderStatus")).upper(),
        order_flag=str(entry.get("orderFlag") or "SINGLE").upper(), terms=update.terms,
        price1=_num(entry.get("price1"), "price1"), trigger_price1=_num(entry.get("triggerPrice1"), "triggerPrice1"),
        quantity1=_num(entry.get("quantity1"), "quantity1", int),
        correlation_id=(str(entry["correlationId"]) if entry.get("correlationId") else None),
        triggered_order_id=(str(entry["triggeredOrderId"]) if entry.get("triggeredOrderId") else None))


def forever_body(order: ForeverOrder, correlation_id: str) -> dict[str, Any]:
    """Keyword arguments for `dhanhq.place_forever`."""
    t = order.terms
    return dict(security_id=t.security_id, exchange_segment=t.exchange_segment, transaction_type=t.side.value,
                product_type=t.product.value, order_type=t.order_type.value, quantity=t.quantity,
                price=t.price, trigger_Price=t.trigger_price, order_flag=order.order_flag,
                disclosed_quantity=t.disclosed_qty, validity=t.validity.value, price1=order.price1,
                trigger_Price1=order.trigger_price1, quantity1=order.quantity1, tag=correlation_id)


def refused_login(raw: object) -> str | None:
    """The DH code of a frame refusing the login's token (`{"Type": "error", "errorCode": "DH-901"}`)."""
    if isinstance(raw, (bytes, bytearray)):  # frames arrive as bytes (UTF-8 is checked when parsed)
        if b'"errorCode"' not in raw:  # cheap, and order alerts never carry it
            return None
        raw = raw.decode("utf-8", "replace")
    if not isinstance(raw, str) or '"errorCode"' not in raw:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    error = classify({"error_code": data.get("errorCode"), "error_message": data.get("errorMessage")})
    return error.code if error.kind == ErrorKind.AUTH else None
