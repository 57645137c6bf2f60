"""Request-body validation: turns JSON bodies into typed requests or a DH-905 naming the
field. Everything a client can send wrong is caught here, so handlers never see bad data."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from .errors import input_error
from .instruments import Instrument
from .matching import on_tick

SEGMENTS = ("NSE_EQ", "BSE_EQ", "NSE_FNO", "BSE_FNO", "MCX_COMM", "NSE_CURRENCY")
PRODUCTS = ("CNC", "INTRADAY", "MARGIN", "MTF", "CO", "BO")
ORDER_TYPES = ("LIMIT", "MARKET", "STOP_LOSS", "STOP_LOSS_MARKET")
VALIDITIES = ("DAY", "IOC")
AMO_TIMES = ("OPEN", "OPEN_30", "OPEN_60")
CORRELATION_RE = re.compile(r"^[A-Za-z0-9_-]{1,25}$")


def parse_json(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise input_error("body", "malformed JSON") from None
    if not isinstance(body, dict):
        raise input_error("body", "must be a JSON object")
    return body


def _required(body: dict[str, Any], name: str) -> Any:
    v = body.get(name)
    if v is None or v == "":
        raise input_error(name, "is required")
    return v


def _enum(body: dict[str, Any], name: str, allowed: tuple[str, ...], default: str | None = None) -> str:
    v = body.get(name)
    if (v is None or v == "") and default is not None:
        return default
    v = _required(body, name)
    if not isinstance(v, str) or v.upper() not in allowed:
        raise input_error(name, f"must be one of {', '.join(allowed)}")
    return v.upper()


def _int(body: dict[str, Any], name: str, default: int | None = None, minimum: int = 0) -> int:
    v = body.get(name)
    if v is None or v == "":
        if default is None:
            raise input_error(name, "is required")
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise input_error(name, "must be an integer")
    try:
        f = float(v)
    except ValueError:
        raise input_error(name, "must be an integer") from None
    if f != int(f):
        raise input_error(name, "must be an integer")
    if int(f) < minimum:
        raise input_error(name, f"must be at least {minimum}")
    return int(f)


def _num(body: dict[str, Any], name: str, default: float = 0.0) -> float:
    v = body.get(name)
    if v is None or v == "":
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise input_error(name, "must be a number")
    try:
        f = float(v)
    except ValueError:
        raise input_error(name, "must be a number") from None
    if f != f or f in (float("inf"), float("-inf")) or f < 0:
        raise input_error(name, "must be a non-negative number")
    return round(f, 2)


def _bool(body: dict[str, Any], name: str) -> bool:
    v = body.get(name, False)
    if v in (None, ""):
        return False
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "false"):
        return v.lower() == "true"
    raise input_error(name, "must be true or false")


def _instrument(body: dict[str, Any], instruments: dict[str, Instrument], segment: str) -> Instrument:
    sid = _required(body, "securityId")
    if isinstance(sid, bool) or not isinstance(sid, (str, int)):
        raise input_error("securityId", "must be a string")
    ins = instruments.get(str(sid).strip())
    if ins is None:
        raise input_error("securityId", f"unknown security {str(sid)[:20]!r}")
    if ins.exchange_segment != segment:
        raise input_error("exchangeSegment", f"security {ins.security_id} trades on {ins.exchange_segment}")
    return ins


def check_client(body: dict[str, Any], client_id: str) -> None:
    v = body.get("dhanClientId")
    if v not in (None, "") and str(v) != client_id:
        raise input_error("dhanClientId", "does not match the client-id header")


def check_prices(ins: Instrument, order_type: str, quantity: int, price: float, trigger: float) -> None:
    """Lot multiple, tick multiple, and the price/trigger each order type needs."""
    if quantity % ins.lot_size:
        raise input_error("quantity", f"must be a multiple of the lot size {ins.lot_size}")
    if order_type in ("LIMIT", "STOP_LOSS") and price <= 0:
        raise input_error("price", f"must be greater than 0 for {order_type}")
    if order_type in ("STOP_LOSS", "STOP_LOSS_MARKET") and trigger <= 0:
        raise input_error("triggerPrice", f"must be greater than 0 for {order_type}")
    if price and order_type in ("LIMIT", "STOP_LOSS") and not on_tick(price, ins.tick_size):
        raise input_error("price", f"must be a multiple of the tick size {ins.tick_size}")
    if trigger and order_type in ("STOP_LOSS", "STOP_LOSS_MARKET") and not on_tick(trigger, ins.tick_size):
        raise input_error("triggerPrice", f"must be a multiple of the tick size {ins.tick_size}")


@dataclass
class PlaceRequest:
    instrument: Instrument
    transaction_type: str
    product_type: str
    order_type: str
    validity: str
    quantity: int
    price: float
    trigger_price: float
    disclosed_quantity: int
    after_market_order: bool
    amo_time: str
    correlation_id: str


def parse_place(body: dict[str, Any], instruments: dict[str, Instrument]) -> PlaceRequest:
    txn = _enum(body, "transactionType", ("BUY", "SELL"))
    seg = _enum(body, "exchangeSegment", SEGMENTS)
    product = _enum(body, "productType", PRODUCTS)
    otype = _enum(body, "orderType", ORDER_TYPES)
    validity = _enum(body, "validity", VALIDITIES, default="DAY")
    ins = _instrument(body, instruments, seg)
    qty = _int(body, "quantity", minimum=1)
    disc = _int(body, "disclosedQuantity", default=0)
    if disc > qty:
        raise input_error("disclosedQuantity", "cannot exceed quantity")
    price, trigger = _num(body, "price"), _num(body, "triggerPrice")
    if otype in ("MARKET", "STOP_LOSS_MARKET"):
        price = 0.0
    if otype in ("LIMIT", "MARKET"):
        trigger = 0.0
    check_prices(ins, otype, qty, price, trigger)
    amo = _bool(body, "afterMarketOrder")
    amo_time = _enum(body, "amoTime", AMO_TIMES, default="OPEN") if amo else ""
    corr = body.get("correlationId")
    if corr in (None, ""):
        corr = ""
    elif not isinstance(corr, str) or not CORRELATION_RE.match(corr):
        raise input_error("correlationId", "must be at most 25 characters of letters, digits, '-' and '_'")
    for name in ("boProfitValue", "boStopLossValue"):
        _num(body, name)
    return PlaceRequest(ins, txn, product, otype, validity, qty, price, trigger, disc, amo, amo_time, corr)


@dataclass
class ModifyRequest:
    order_type: str
    quantity: int
    price: float
    trigger_price: float
    disclosed_quantity: int
    validity: str
    leg_name: str


def parse_modify(body: dict[str, Any], current_type: str, current_validity: str) -> ModifyRequest:
    otype = _enum(body, "orderType", ORDER_TYPES, default=current_type)
    qty = _int(body, "quantity", minimum=1)
    validity = _enum(body, "validity", VALIDITIES, default=current_validity)
    leg = body.get("legName") or ""
    if not isinstance(leg, str):
        raise input_error("legName", "must be a string")
    price, trigger = _num(body, "price"), _num(body, "triggerPrice")
    if otype in ("MARKET", "STOP_LOSS_MARKET"):
        price = 0.0
    if otype in ("LIMIT", "MARKET"):
        trigger = 0.0
    disc = _int(body, "disclosedQuantity", default=0)
    if disc > qty:
        raise input_error("disclosedQuantity", "cannot exceed quantity")
    return ModifyRequest(otype, qty, price, trigger, disc, validity, leg)


def parse_forever(body: dict[str, Any], instruments: dict[str, Instrument]) -> dict[str, Any]:
    """A forever (GTT) order: SINGLE has one trigger leg, OCO adds a second (price1/triggerPrice1/quantity1)."""
    flag = _enum(body, "orderFlag", ("SINGLE", "OCO"), default="SINGLE")
    txn = _enum(body, "transactionType", ("BUY", "SELL"))
    seg = _enum(body, "exchangeSegment", SEGMENTS)
    product = _enum(body, "productType", ("CNC", "MTF", "INTRADAY", "MARGIN"))
    otype = _enum(body, "orderType", ("LIMIT", "MARKET"))
    validity = _enum(body, "validity", VALIDITIES, default="DAY")
    ins = _instrument(body, instruments, seg)
    qty = _int(body, "quantity", minimum=1)
    price, trigger = _num(body, "price"), _num(body, "triggerPrice")
    if trigger <= 0:
        raise input_error("triggerPrice", "must be greater than 0")
    check_prices(ins, otype, qty, price, 0.0)
    leg2: dict[str, Any] = {"price1": 0.0, "triggerPrice1": 0.0, "quantity1": 0}
    if flag == "OCO":
        q1, p1, t1 = _int(body, "quantity1", minimum=1), _num(body, "price1"), _num(body, "triggerPrice1")
        if t1 <= 0:
            raise input_error("triggerPrice1", "must be greater than 0 for OCO")
        if otype == "LIMIT" and p1 <= 0:
            raise input_error("price1", "must be greater than 0 for a LIMIT OCO")
        if q1 % ins.lot_size:
            raise input_error("quantity1", f"must be a multiple of the lot size {ins.lot_size}")
        leg2 = {"price1": p1, "triggerPrice1": t1, "quantity1": q1}
    corr = body.get("correlationId") or ""
    if corr and (not isinstance(corr, str) or not CORRELATION_RE.match(corr)):
        raise input_error("correlationId", "must be at most 25 characters of letters, digits, '-' and '_'")
    return {"orderFlag": flag, "transactionType": txn, "exchangeSegment": seg, "productType": product,
            "orderType": otype, "validity": validity, "securityId": ins.security_id,
            "tradingSymbol": ins.trading_symbol, "quantity": qty, "price": price, "triggerPrice": trigger,
            "disclosedQuantity": _int(body, "disclosedQuantity", default=0), "correlationId": corr, **leg2}


def parse_forever_modify(body: dict[str, Any]) -> dict[str, Any]:
    leg = _enum(body, "legName", ("ENTRY_LEG", "TARGET_LEG", "STOP_LOSS_LEG"), default="TARGET_LEG")
    return {"legName": leg, "orderType": _enum(body, "orderType", ("LIMIT", "MARKET"), default="LIMIT"),
            "quantity": _int(body, "quantity", minimum=1), "price": _num(body, "price"),
            "triggerPrice": _num(body, "triggerPrice"), "validity": _enum(body, "validity", VALIDITIES, default="DAY")}


def parse_margin(body: dict[str, Any], instruments: dict[str, Instrument]) -> tuple[Instrument, str, str, int, float]:
    txn = _enum(body, "transactionType", ("BUY", "SELL"))
    seg = _enum(body, "exchangeSegment", SEGMENTS)
    product = _enum(body, "productType", PRODUCTS)
    ins = _instrument(body, instruments, seg)
    qty = _int(body, "quantity", minimum=1)
    if qty % ins.lot_size:
        raise input_error("quantity", f"must be a multiple of the lot size {ins.lot_size}")
    return ins, txn, product, qty, _num(body, "price")


QUOTE_SEGMENTS = ("IDX_I", *SEGMENTS, "BSE_CURRENCY")
MAX_QUOTE_INSTRUMENTS = 1000   # Dhan's market quote APIs: at most 1000 instruments per request


def parse_quote_request(body: dict[str, Any]) -> list[tuple[str, str]]:
    """`{"NSE_EQ": [11536], "NSE_FNO": [49081, 49082]}` (dhanhq adds `dhanClientId`) -> (segment, id) pairs."""
    wanted: list[tuple[str, str]] = []
    for segment, ids in body.items():
        if segment == "dhanClientId":
            continue
        if segment not in QUOTE_SEGMENTS:
            raise input_error(str(segment)[:20], f"unknown exchange segment; use {', '.join(QUOTE_SEGMENTS)}")
        if not isinstance(ids, list) or not all(isinstance(i, (int, str)) and not isinstance(i, bool)
                                                and str(i).isdigit() for i in ids):
            raise input_error(segment, "must be a list of security ids")
        wanted.extend((segment, str(i)) for i in ids)
    if not wanted:
        raise input_error("body", "name at least one exchange segment with its security ids")
    if len(wanted) > MAX_QUOTE_INSTRUMENTS:
        raise input_error("body", f"at most {MAX_QUOTE_INSTRUMENTS} instruments per request, got {len(wanted)}")
    return wanted


SUPER_PRODUCTS = ("CNC", "INTRADAY", "MARGIN", "MTF")
SUPER_ORDER_TYPES = ("LIMIT", "MARKET")
LEGS = ("ENTRY_LEG", "TARGET_LEG", "STOP_LOSS_LEG")


@dataclass
class SuperRequest:
    entry: PlaceRequest
    price: float            # as asked (a MARKET entry trades at the market whatever it says)
    target_price: float
    stop_loss_price: float
    trailing_jump: float


@dataclass
class SuperModifyRequest:
    leg_name: str
    order_type: str = ""
    quantity: int = 0
    price: float = 0.0
    target_price: float = 0.0
    stop_loss_price: float = 0.0
    trailing_jump: float = 0.0


def parse_leg_name(value: Any, field: str = "legName") -> str:
    if not isinstance(value, str) or value.upper() not in LEGS:
        raise input_error(field, f"must be one of {', '.join(LEGS)}")
    return value.upper()


def _leg_price(body: dict[str, Any], name: str, ins: Instrument) -> float:
    price = _num(body, name)
    if price <= 0:
        raise input_error(name, "must be greater than 0")
    if not on_tick(price, ins.tick_size):
        raise input_error(name, f"must be a multiple of the tick size {ins.tick_size}")
    return price


def _trailing_jump(body: dict[str, Any], ins: Instrument) -> float:
    jump = _num(body, "trailingJump")
    if jump and not on_tick(jump, ins.tick_size):
        raise input_error("trailingJump", f"must be a multiple of the tick size {ins.tick_size} (0: no trailing)")
    return jump


def check_super_prices(side: str, reference: float, target: float, stop: float) -> None:
    """A BUY's target lies above its entry and its stop-loss below; a SELL's the other way round."""
    for name, value, above in (("targetPrice", target, side == "BUY"), ("stopLossPrice", stop, side != "BUY")):
        if above and value <= reference:
            raise input_error(name, f"must be above the entry price {reference} for a {side} super order")
        if not above and value >= reference:
            raise input_error(name, f"must be below the entry price {reference} for a {side} super order")


def parse_super(body: dict[str, Any], instruments: dict[str, Instrument]) -> SuperRequest:
    """A super order: an entry (LIMIT or MARKET) with a target and a stop-loss price, and the jump
    by which the stop-loss trails."""
    txn = _enum(body, "transactionType", ("BUY", "SELL"))
    seg = _enum(body, "exchangeSegment", SEGMENTS)
    product = _enum(body, "productType", SUPER_PRODUCTS)
    otype = _enum(body, "orderType", SUPER_ORDER_TYPES)
    ins = _instrument(body, instruments, seg)
    qty = _int(body, "quantity", minimum=1)
    price = _num(body, "price")
    check_prices(ins, otype, qty, price, 0.0)
    target, stop = _leg_price(body, "targetPrice", ins), _leg_price(body, "stopLossPrice", ins)
    jump = _trailing_jump(body, ins)
    corr = body.get("correlationId")
    if corr in (None, ""):
        corr = ""
    elif not isinstance(corr, str) or not CORRELATION_RE.match(corr):
        raise input_error("correlationId", "must be at most 25 characters of letters, digits, '-' and '_'")
    if price:
        check_super_prices(txn, price, target, stop)
    entry = PlaceRequest(ins, txn, product, otype, "DAY", qty, price if otype == "LIMIT" else 0.0, 0.0, 0, False,
                         "", corr)
    return SuperRequest(entry, price, target, stop, jump)


def parse_super_modify(body: dict[str, Any], ins: Instrument, current_type: str) -> SuperModifyRequest:
    """ENTRY_LEG restates the whole super order (type, quantity, price, target, stop-loss, jump);
    TARGET_LEG its target price; STOP_LOSS_LEG its stop-loss price and trailing jump (0: none)."""
    leg = parse_leg_name(body.get("legName"))
    if leg == "TARGET_LEG":
        return SuperModifyRequest(leg, target_price=_leg_price(body, "targetPrice", ins))
    if leg == "STOP_LOSS_LEG":
        return SuperModifyRequest(leg, stop_loss_price=_leg_price(body, "stopLossPrice", ins),
                                  trailing_jump=_trailing_jump(body, ins))
    otype = _enum(body, "orderType", SUPER_ORDER_TYPES, default=current_type)
    qty = _int(body, "quantity", minimum=1)
    price = _num(body, "price")
    check_prices(ins, otype, qty, price, 0.0)
    return SuperModifyRequest(leg, otype, qty, price if otype == "LIMIT" else 0.0,
                              _leg_price(body, "targetPrice", ins), _leg_price(body, "stopLossPrice", ins),
                              _trailing_jump(body, ins))
