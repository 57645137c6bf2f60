"""Dhan's answers and frames -> the copier's own types: orders (socket `order_alert`, order-book
entry) -> `OrderUpdate`; funds, positions, trades, margin, profile and quotes -> trading/account.py
and trading/prices.py.

This is the edge: every field the copier reads is checked here (type, finite, in range, bounded
length, ids of Dhan's charset), so nothing downstream can meet a value the exchange could not
send. Anything wrong raises `MalformedMessage` with a short reason, which the callers count and
skip; the public functions raise nothing else, whatever the input (a frame nested 200,000 deep,
a 5,000-digit number, a list where a price should be). Fields the copier does not read are not
looked at, except that the non-standard JSON constants NaN and Infinity are refused anywhere.
"""
from __future__ import annotations

import functools
import json
import math
import re
from typing import Any, Callable, Mapping, TypeVar

from broker import codes, jsonread
from broker.errors import ErrorKind, classify
from trading.account import BookFill, Funds, Listing, Margin, Position, Profile, Trade, counted_as
from trading.orders import AMO_TIMES, EXCHANGE_SEGMENTS, ForeverOrder, Leg, OrderTerms, OrderType, OrderUpdate
from trading.prices import Quote
from trading.super_orders import SuperOrderView

# Bounds, exclusive. Dhan's quantities fit easily in 10^8, so 10^9 leaves a tenfold margin; a
# price below 10^7 rupees is far above any Indian listing (the dearest share trades near 1.5 lakh,
# index levels and commodity prices stay under 1 lakh). Their product in paise stays below 10^18,
# inside SQLite's signed 64-bit integers, so no value or sum of them overflows storage.
MAX_QUANTITY = 1_000_000_000
MAX_PRICE = 10_000_000.0
MAX_SEQUENCE = 2 ** 53  # an exact float and a SQLite integer
MAX_AMOUNT = 1e15  # rupees: funds, margins, profits (a position's value stays below 10^16)
MAX_ID = 32  # Dhan's order and security ids are numeric strings well under 20 characters
MAX_CORRELATION_ID = 30  # Dhan caps correlation ids at 25 characters; a little slack
MAX_TEXT = 1024  # symbols, timestamps, reasons
MAX_NUMBER_TEXT = 40  # a number written as a string ("1400.55")
DEFAULT_MAX_FRAME_BYTES = 1024 * 1024

_ID = re.compile(r"[A-Za-z0-9_-]+")  # Dhan's id charset: order, security and correlation ids
T = TypeVar("T")


class MalformedMessage(ValueError):
    """A socket message or book entry the copier cannot use; `reason` is a short metric label:
    too_large, too_deep, bad_json, bad_shape, missing_field, bad_type, not_finite, out_of_range,
    bad_field (an unknown code or a bad id), unreadable (anything else a parser raised)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _at_the_edge(parse: Callable[..., T]) -> Callable[..., T]:
    """Whatever a parser raises on bad input leaves as MalformedMessage (a RecursionError from a
    deep frame, an OverflowError, a TypeError from a shape nobody foresaw)."""
    @functools.wraps(parse)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return parse(*args, **kwargs)
        except MalformedMessage:
            raise
        except RecursionError:
            raise MalformedMessage("too_deep", "nested deeper than the parser's recursion limit") from None
        except Exception as exc:  # noqa: BLE001 - bad input must never escape as anything else
            raise MalformedMessage("unreadable", f"{type(exc).__name__}: {str(exc)[:120]}") from None

    return wrapper


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _refuse_constant(name: str) -> Any:
    raise MalformedMessage("not_finite", f"{name} is not a JSON number")


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)  # built once: json.loads(raw, **kw) builds one a call


def _decode(raw: str | bytes) -> Any:
    return _DECODER.decode(raw.decode("utf-8") if isinstance(raw, (bytes, bytearray)) else raw)


# -- field readers ----------------------------------------------------------------------------------
# Each reader starts with the common case of a well-formed value (checked by exact type, so a bool
# never passes for an int): the feed parses every update on the copier's hot path.
def _number(value: Any, field: str) -> float | int:
    """A finite number given as a JSON number or as text; ints stay ints (a float could overflow)."""
    kind = type(value)
    if kind is int or (kind is float and math.isfinite(value)):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise MalformedMessage("bad_type", f"{field}={_show(value)} is not a number")
    if isinstance(value, str):
        text = value.strip()
        if len(text) > MAX_NUMBER_TEXT:
            raise MalformedMessage("out_of_range", f"{field} is a number {len(text)} characters long")
        try:
            value = float(text)
        except ValueError:
            raise MalformedMessage("bad_type", f"{field}={_show(value)} is not a number") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise MalformedMessage("not_finite", f"{field}={value!r}")
    return value


def _price(value: Any, field: str) -> float:
    """A price: absent is 0; otherwise finite, >= 0 and below MAX_PRICE."""
    if type(value) is float and 0.0 <= value < MAX_PRICE:
        return value
    if value is None or value == "":
        return 0.0
    number = _number(value, field)
    if not 0 <= number < MAX_PRICE:
        raise MalformedMessage("out_of_range", f"{field}={_show(number)} is not in [0, {MAX_PRICE:.0f})")
    return float(number)


def _count(value: Any, field: str, minimum: int = 0, maximum: int = MAX_QUANTITY) -> int:
    """A whole number in [minimum, maximum): quantities, fills, lot sizes, sequence numbers."""
    if type(value) is int and minimum <= value < maximum:
        return value
    number = _number(value, field)
    if not minimum <= number < maximum:
        raise MalformedMessage("out_of_range", f"{field}={_show(number)} is not in [{minimum}, {maximum})")
    if number != int(number):
        raise MalformedMessage("out_of_range", f"{field}={number!r} is not a whole number")
    return int(number)


def _optional_count(value: Any, field: str, minimum: int = 0, maximum: int = MAX_QUANTITY) -> int:
    return 0 if value is None or value == "" else _count(value, field, minimum, maximum)


def _count_or_none(value: Any, field: str) -> int | None:
    return None if value is None or value == "" else _count(value, field)


def _amount(value: Any, field: str) -> float:
    """Rupees (funds, margin, profit): absent is 0; otherwise finite, of either sign, and smaller
    than MAX_AMOUNT."""
    if value is None or value == "":
        return 0.0
    number = _number(value, field)
    if not -MAX_AMOUNT < number < MAX_AMOUNT:
        raise MalformedMessage("out_of_range", f"{field}={_show(number)} is not within +/-{MAX_AMOUNT:.0e}")
    return float(number)


def _text(value: Any, field: str, limit: int = MAX_TEXT) -> str:
    """Free text (symbol, reason, times): a string, or a number Dhan sent unquoted; bounded."""
    if type(value) is str and len(value) <= limit:
        return value
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise MalformedMessage("bad_type", f"{field}={_show(value)} is not text")
    if isinstance(value, float) and not math.isfinite(value):
        raise MalformedMessage("not_finite", f"{field}={value!r}")
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:
        raise MalformedMessage("out_of_range", f"{field} is {len(text)} characters long (at most {limit})")
    return text


def _id(value: Any, field: str, limit: int = MAX_ID) -> str:
    """An id Dhan gives (order, security, correlation): letters, digits, '-' and '_'."""
    if type(value) is str and len(value) <= limit and _ID.fullmatch(value):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        value = str(value)
    if not isinstance(value, str):
        raise MalformedMessage("bad_type", f"{field}={_show(value)} is not an id")
    text = value.strip()
    if len(text) > limit:
        raise MalformedMessage("out_of_range", f"{field} is {len(text)} characters long (at most {limit})")
    if not _ID.fullmatch(text):
        raise MalformedMessage("bad_field", f"{field}={_show(value)} is not an id (letters, digits, '-', '_')")
    return text


def _code(value: Any, field: str) -> str:
    """A code word (status, side, segment...): a short string."""
    if type(value) is str and len(value) <= 40:
        return value
    if not isinstance(value, str):
        raise MalformedMessage("bad_type", f"{field}={_show(value)} is not a code")
    return _text(value, field, 40)


def _required(data: Mapping[str, Any], field: str) -> Any:
    value = data.get(field)
    if value is None or value == "":
        raise MalformedMessage("missing_field", f"{field} is missing")
    return value


def _enum(table: dict, value: Any, field: str) -> Any:
    text = _code(value, field)
    try:
        return codes.lookup(table, text, field)
    except ValueError as exc:
        raise MalformedMessage("bad_field", str(exc)) from None


def _flag(value: Any, field: str) -> bool:
    """A yes/no Dhan writes as a bool, 0/1 or text ("1", "true", "Y")."""
    if value is None or value == "":
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float, str)):
        return _text(value, field, 10).strip().lower() in ("1", "1.0", "true", "y", "yes")
    raise MalformedMessage("bad_type", f"{field}={_show(value)} is not a flag")


def _amo_time(value: Any, amo: bool) -> str | None:
    if not amo:
        return None
    text = _text(value, "AmoTime", 20).upper() or "OPEN"
    return text if text in AMO_TIMES else "OPEN"


def _status(value: Any, field: str) -> Any:
    text = _code(value, field)
    try:
        return codes.status(text)
    except ValueError as exc:
        raise MalformedMessage("bad_field", str(exc)) from None


def _sequence(value: Any, field: str) -> int | None:
    return None if value is None or value == "" else _count(value, field, 0, MAX_SEQUENCE)


def _correlation_id(value: Any, field: str) -> str | None:
    return _id(value, field, MAX_CORRELATION_ID) if value not in (None, "") else None


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if type(value) is dict:
        return value
    if not isinstance(value, Mapping):
        raise MalformedMessage("bad_shape", f"{what} is {type(value).__name__}, not an object")
    return value


def _segment(data: Mapping[str, Any], field: str) -> str:
    segment = _code(_required(data, field), field).upper()
    if segment not in EXCHANGE_SEGMENTS:
        raise MalformedMessage("bad_field", f"unknown {field} {segment!r}")
    return segment


def _listing(answer: Any, what: str, parse: Callable[[Any], T],
             skipped: Callable[[MalformedMessage], None] | None) -> Listing[T]:
    """A list the broker answered, each entry parsed: one that cannot be is left out, its reason
    kept (and handed to `skipped`, for a log line with the detail). Raises MalformedMessage only
    when the answer is not a list at all."""
    if not isinstance(answer, list):
        raise MalformedMessage("bad_shape", f"{what} is {type(answer).__name__}, not a list")
    entries, unreadable = [], []
    for entry in answer:
        try:
            entries.append(parse(entry))
        except MalformedMessage as exc:
            unreadable.append(exc.reason)
            if skipped is not None:
                skipped(exc)
    return Listing(tuple(entries), tuple(unreadable))


# -- the frames and entries -------------------------------------------------------------------------
@_at_the_edge
def decode_socket_message(raw: str | bytes, max_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> dict[str, Any] | None:
    """JSON-decode a socket frame; None for frames that are not order alerts (login answers, pings).
    A frame over `max_bytes` (UTF-8) is refused before it is parsed."""
    size = len(raw)
    if size <= max_bytes and isinstance(raw, str) and size * 4 > max_bytes:
        size = len(raw.encode("utf-8", "surrogatepass"))  # characters are 1 to 4 bytes
    if size > max_bytes:
        raise MalformedMessage("too_large", f"a frame of {size} bytes (the limit is {max_bytes})")
    try:
        message = jsonread.loads(raw, _decode)
    except (TypeError, ValueError) as exc:  # (a RecursionError is too_deep, see _at_the_edge)
        if isinstance(exc, MalformedMessage):
            raise
        reason = "out_of_range" if "integer string conversion" in str(exc) else "bad_json"
        raise MalformedMessage(reason, str(exc)[:120]) from None
    if not isinstance(message, dict):
        raise MalformedMessage("bad_shape", f"expected an object, got {type(message).__name__}")
    if message.get("Type") != "order_alert":
        return None
    data = message.get("Data")
    if not isinstance(data, dict):
        raise MalformedMessage("bad_shape", "order_alert without a Data object")
    return data


# A super order's legs on the order-update socket: `LegNo` with `Remarks: "Super Order"` (Dhan's
# order-update page); on the order book: `legName`, which bracket and cover orders (products BO and
# CO) use too.
_SOCKET_LEGS = {1: Leg.ENTRY.value, 2: Leg.STOP_LOSS.value, 3: Leg.TARGET.value}
_BOOK_LEGS = frozenset(leg.value for leg in Leg)
SUPER_ORDER_REMARK = "super order"


def _socket_leg(data: Mapping[str, Any]) -> str:
    remarks = data.get("Remarks")
    if not isinstance(remarks, str) or remarks.strip().lower() != SUPER_ORDER_REMARK:
        return ""
    number = _optional_count(data.get("LegNo"), "LegNo") or 1
    if number not in _SOCKET_LEGS:
        raise MalformedMessage("bad_field", f"LegNo={number} is not a leg of a super order (1, 2 or 3)")
    return _SOCKET_LEGS[number]


def _book_leg(entry: Mapping[str, Any], product: Any) -> str:
    name = entry.get("legName")
    if name in (None, "") or product in (codes.PRODUCT.get("BO"), codes.PRODUCT.get("CO")):
        return ""
    text = _code(name, "legName").upper()
    if text not in _BOOK_LEGS:
        raise MalformedMessage("bad_field", f"legName={_show(name)} is not a leg of a super order")
    return text


@_at_the_edge
def from_socket(data: Mapping[str, Any], received_ns: int = 0) -> OrderUpdate:
    """An `order_alert` Data object -> OrderUpdate."""
    data = _mapping(data, "the order_alert Data")
    leg = _socket_leg(data)
    exchange = _code(_required(data, "Exchange"), "Exchange").upper()
    segment_letter = _code(_required(data, "Segment"), "Segment").upper()
    segment = codes.SEGMENT.get((exchange, segment_letter))
    if segment is None:
        raise MalformedMessage("bad_field", f"unknown Exchange/Segment {exchange}/{segment_letter}")
    amo = _flag(data.get("OffMktFlag", "0"), "OffMktFlag")
    order_type = _enum(codes.ORDER_TYPE, _required(data, "OrderType"), "OrderType")
    terms = OrderTerms(
        security_id=_id(_required(data, "SecurityId"), "SecurityId"),
        exchange_segment=segment,
        side=_enum(codes.SIDE, _required(data, "TxnType"), "TxnType"),
        product=_enum(codes.PRODUCT, _required(data, "Product"), "Product"),
        order_type=order_type,
        validity=_enum(codes.VALIDITY, data.get("Validity") or "DAY", "Validity"),
        quantity=_count(_required(data, "Quantity"), "Quantity", 1),
        price=_price(data.get("Price"), "Price"),
        trigger_price=_price(data.get("TriggerPrice"), "TriggerPrice"),
        disclosed_qty=_optional_count(data.get("DiscQuantity"), "DiscQuantity"),
        amo=amo,
        amo_time=_amo_time(data.get("AmoTime") or data.get("AMOTime"), amo),
        super_order=bool(leg),
    )
    return OrderUpdate(
        leg=leg,
        order_id=_id(_required(data, "OrderNo"), "OrderNo"),
        status=_status(_required(data, "Status"), "Status"),
        terms=terms,
        filled_qty=_optional_count(data.get("TradedQty"), "TradedQty"),
        avg_price=_price(data.get("AvgTradedPrice"), "AvgTradedPrice"),
        last_fill_price=_price(data.get("TradedPrice"), "TradedPrice"),
        correlation_id=_correlation_id(data.get("CorrelationId"), "CorrelationId"),
        symbol=_text(data.get("Symbol") or data.get("DisplayName"), "Symbol"),
        reason=_text(data.get("ReasonDescription"), "ReasonDescription"),
        created_at=_text(data.get("OrderDateTime"), "OrderDateTime", 64),
        updated_at=_text(data.get("LastUpdatedTime"), "LastUpdatedTime", 64),
        sequence=_sequence(data.get("Sequence"), "Sequence"),
        lot_size=_optional_count(data.get("LotSize"), "LotSize") or None,
        source="socket",
        received_ns=received_ns,
    )


@_at_the_edge
def from_order_book(entry: Mapping[str, Any], source: str = "book", received_ns: int = 0) -> OrderUpdate:
    """A `GET /orders` (or `/orders/{id}`) entry -> OrderUpdate, checked like a socket frame."""
    entry = _mapping(entry, "the order-book entry")
    segment = _code(_required(entry, "exchangeSegment"), "exchangeSegment").upper()
    if segment not in EXCHANGE_SEGMENTS:
        raise MalformedMessage("bad_field", f"unknown exchangeSegment {segment!r}")
    amo = _flag(entry.get("afterMarketOrder"), "afterMarketOrder")
    order_type = _enum(codes.ORDER_TYPE, _required(entry, "orderType"), "orderType")
    product = _enum(codes.PRODUCT, _required(entry, "productType"), "productType")
    leg = _book_leg(entry, product)
    terms = OrderTerms(
        security_id=_id(_required(entry, "securityId"), "securityId"),
        exchange_segment=segment,
        side=_enum(codes.SIDE, _required(entry, "transactionType"), "transactionType"),
        product=product,
        order_type=order_type,
        validity=_enum(codes.VALIDITY, entry.get("validity") or "DAY", "validity"),
        quantity=_count(_required(entry, "quantity"), "quantity", 1),
        price=_price(entry.get("price"), "price"),
        trigger_price=_price(entry.get("triggerPrice"), "triggerPrice"),
        disclosed_qty=_optional_count(entry.get("disclosedQuantity"), "disclosedQuantity"),
        amo=amo,
        amo_time=_amo_time(entry.get("amoTime"), amo),
        super_order=bool(leg),
    )
    return OrderUpdate(
        leg=leg,
        order_id=_id(_required(entry, "orderId"), "orderId"),
        status=_status(_required(entry, "orderStatus"), "orderStatus"),
        terms=terms,
        filled_qty=_optional_count(entry.get("filledQty"), "filledQty"),
        avg_price=_price(entry.get("averageTradedPrice"), "averageTradedPrice"),
        correlation_id=_correlation_id(entry.get("correlationId"), "correlationId"),
        symbol=_text(entry.get("tradingSymbol"), "tradingSymbol"),
        reason=_text(entry.get("omsErrorDescription"), "omsErrorDescription"),
        created_at=_text(entry.get("createTime"), "createTime", 64),
        updated_at=_text(entry.get("updateTime"), "updateTime", 64),
        sequence=_sequence(entry.get("sequence"), "sequence"),
        source=source,
        received_ns=received_ns,
    )


def orders_from_book(answer: Any, source: str = "book", received_ns: int = 0,
                     skipped: Callable[[MalformedMessage], None] | None = None) -> Listing[OrderUpdate]:
    """A `GET /orders` answer -> the orders that could be read, and why the others could not."""
    return _listing(answer, "the order book", lambda entry: from_order_book(entry, source, received_ns), skipped)


@_at_the_edge
def book_fill_from_dhan(entry: Any) -> BookFill:
    """One `GET /orders` entry -> how much of it has filled (only the fields that say so: an exit
    reads a follower's whole book, and the day's book can be long)."""
    entry = _mapping(entry, "the order")
    filled = _optional_count(entry.get("filledQty"), "filledQty")
    side = _enum(codes.SIDE, _required(entry, "transactionType"), "transactionType")
    leg = _book_leg(entry, _enum(codes.PRODUCT, _required(entry, "productType"), "productType"))
    return BookFill(order_id=counted_as(_id(_required(entry, "orderId"), "orderId"), leg),
                    key=(_segment(entry, "exchangeSegment"), _id(_required(entry, "securityId"), "securityId")),
                    filled=filled if side.value == "BUY" else -filled)


def book_fills_from_dhan(answer: Any, skipped: Callable[[MalformedMessage], None] | None = None) -> Listing[BookFill]:
    """A `GET /orders` answer -> each order's fills, and why the entries left out could not be read."""
    return _listing(answer, "the order book", book_fill_from_dhan, skipped)


@_at_the_edge
def super_order_from_dhan(entry: Any) -> SuperOrderView:
    """One `GET /super/orders` entry -> SuperOrderView (its exit legs from `legDetails`)."""
    entry = _mapping(entry, "the super order")
    legs: dict[str, Mapping[str, Any]] = {}
    details = entry.get("legDetails") or []
    if not isinstance(details, list):
        raise MalformedMessage("bad_shape", "legDetails is not a list")
    for detail in details:
        detail = _mapping(detail, "a leg of the super order")
        legs[_code(_required(detail, "legName"), "legName").upper()] = detail
    target, stop = legs.get(Leg.TARGET.value, {}), legs.get(Leg.STOP_LOSS.value, {})
    return SuperOrderView(
        order_id=_id(_required(entry, "orderId"), "orderId"),
        status=_code(_required(entry, "orderStatus"), "orderStatus").upper(),
        price=_price(entry.get("price"), "price"),
        target_price=_price(target.get("price", entry.get("targetPrice")), "targetPrice"),
        stop_loss_price=_price(stop.get("price", entry.get("stopLossPrice")), "stopLossPrice"),
        trailing_jump=_price(stop.get("trailingJump", entry.get("trailingJump")), "trailingJump"),
        target_leg=_code(target.get("orderStatus") or "", "orderStatus").upper(),
        stop_loss_leg=_code(stop.get("orderStatus") or "", "orderStatus").upper(),
        correlation_id=_correlation_id(entry.get("correlationId"), "correlationId"))


def super_orders_from_dhan(answer: Any, skipped: Callable[[MalformedMessage], None] | None = None,
                           ) -> Listing[SuperOrderView]:
    """A `GET /super/orders` answer -> the super orders that could be read, and why the others could not."""
    return _listing(answer, "the super orders", super_order_from_dhan, skipped)


# -- account answers --------------------------------------------------------------------------------
@_at_the_edge
def funds_from_dhan(body: Any) -> Funds:
    """A `GET /fundlimit` answer -> Funds. Dhan spells the balance `availabelBalance`; the
    corrected spelling is read when that one is absent."""
    body = _mapping(body, "the fund limit")
    field = "availableBalance" if "availabelBalance" not in body and "availableBalance" in body else "availabelBalance"
    return Funds(available=_amount(_required(body, field), field),
                 start_of_day=_amount(body.get("sodLimit"), "sodLimit"),
                 utilised=_amount(body.get("utilizedAmount"), "utilizedAmount"),
                 withdrawable=_amount(body.get("withdrawableBalance"), "withdrawableBalance"))


@_at_the_edge
def position_from_dhan(entry: Any) -> Position:
    """One `GET /positions` entry -> Position (Dhan may leave the profits out: they are then 0)."""
    entry = _mapping(entry, "the position")
    product = entry.get("productType")
    return Position(
        exchange_segment=_segment(entry, "exchangeSegment"),
        security_id=_id(_required(entry, "securityId"), "securityId"),
        product=None if product in (None, "") else _enum(codes.PRODUCT, product, "productType"),
        net_qty=_count(_required(entry, "netQty"), "netQty", 1 - MAX_QUANTITY),
        buy_avg=_price(entry.get("buyAvg"), "buyAvg"),
        sell_avg=_price(entry.get("sellAvg"), "sellAvg"),
        realised=_amount(entry.get("realizedProfit"), "realizedProfit"),
        unrealised=_amount(entry.get("unrealizedProfit"), "unrealizedProfit"),
        day_bought=_count_or_none(entry.get("dayBuyQty"), "dayBuyQty"),
        day_sold=_count_or_none(entry.get("daySellQty"), "daySellQty"),
    )


def positions_from_dhan(answer: Any, skipped: Callable[[MalformedMessage], None] | None = None) -> Listing[Position]:
    """A `GET /positions` answer -> the positions that could be read, and why the others could not."""
    return _listing(answer, "the positions", position_from_dhan, skipped)


@_at_the_edge
def trade_from_dhan(entry: Any) -> Trade:
    """One `GET /trades` entry -> Trade."""
    entry = _mapping(entry, "the trade")
    return Trade(order_id=_id(_required(entry, "orderId"), "orderId"),
                 exchange_segment=_segment(entry, "exchangeSegment"),
                 security_id=_id(_required(entry, "securityId"), "securityId"),
                 side=_enum(codes.SIDE, _required(entry, "transactionType"), "transactionType"),
                 quantity=_count(_required(entry, "tradedQuantity"), "tradedQuantity", 1),
                 price=_price(_required(entry, "tradedPrice"), "tradedPrice"),
                 traded_at=_text(entry.get("exchangeTime") or entry.get("createTime"), "exchangeTime", 64))


def trades_from_dhan(answer: Any, skipped: Callable[[MalformedMessage], None] | None = None) -> Listing[Trade]:
    """A `GET /trades` answer -> the trades that could be read, and why the others could not."""
    return _listing(answer, "the trades", trade_from_dhan, skipped)


@_at_the_edge
def margin_from_dhan(body: Any) -> Margin:
    """A `POST /margincalculator` answer -> Margin."""
    body = _mapping(body, "the margin calculation")
    return Margin(required=_amount(_required(body, "totalMargin"), "totalMargin"),
                  available=_amount(body.get("availableBalance"), "availableBalance"),
                  shortfall=_amount(body.get("insufficientBalance"), "insufficientBalance"))


@_at_the_edge
def _profile(body: Any, client_id: str) -> Profile:
    body = _mapping(body, "the profile")
    return Profile(client_id=_text(body.get("dhanClientId"), "dhanClientId", MAX_ID) or client_id,
                   data_plan=_text(body.get("dataPlan"), "dataPlan", 40).strip().lower() == "active",
                   data_valid_until=_text(body.get("dataValidity"), "dataValidity", 64),
                   token_valid_until=_text(body.get("tokenValidity"), "tokenValidity", 64))


def profile_from_dhan(body: Any, client_id: str) -> Profile | None:
    """A `GET /profile` answer (`dataPlan`: "Active" or "Deactive"; absent: no plan), or None when
    it is not one."""
    try:
        return _profile(body, client_id)
    except MalformedMessage:
        return None


def quotes_from_ltp(body: Any) -> dict[tuple[str, str], Quote]:
    """A `/marketfeed/ltp` answer, `{"data": {"NSE_EQ": {"11536": {"last_price": 4520}}}, ...}`,
    by (segment, security id). An instrument without a positive price is left out: Dhan has none
    for it (a missing price is not an error, the order is then valued otherwise)."""
    quotes: dict[tuple[str, str], Quote] = {}
    by_segment = body.get("data") if isinstance(body, Mapping) else None
    for segment, by_id in (by_segment.items() if isinstance(by_segment, Mapping) else ()):
        for security_id, entry in (by_id.items() if isinstance(by_id, Mapping) else ()):
            try:
                key = (_code(segment, "segment").upper(), _id(security_id, "security id"))
                price = _price(_mapping(entry, "the quote").get("last_price"), "last_price")
            except MalformedMessage:
                continue
            if price > 0:
                quotes[key] = Quote(*key, price)
    return quotes


# -- requests ---------------------------------------------------------------------------------------
def login_frame(client_id: str, token: str) -> str:
    """The order-update socket's login, sent first on every connection."""
    return json.dumps({"LoginReq": {"MsgCode": 42, "ClientId": str(client_id), "Token": token}, "UserType": "SELF"})


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


@_at_the_edge
def from_forever(entry: Mapping[str, Any]) -> ForeverOrder:
    """A `GET /forever/orders` entry -> ForeverOrder."""
    entry = _mapping(entry, "the forever order")
    update = from_order_book({**entry, "orderStatus": "PENDING"}, source="forever")
    return ForeverOrder(
        order_id=update.order_id, status=_code(_required(entry, "orderStatus"), "orderStatus").upper(),
        order_flag=_code(entry.get("orderFlag") or "SINGLE", "orderFlag").upper(), terms=update.terms,
        price1=_price(entry.get("price1"), "price1"), trigger_price1=_price(entry.get("triggerPrice1"), "triggerPrice1"),
        quantity1=_optional_count(entry.get("quantity1"), "quantity1"),
        correlation_id=update.correlation_id,
        triggered_order_id=(_id(entry["triggeredOrderId"], "triggeredOrderId")
                            if entry.get("triggeredOrderId") else None))


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
