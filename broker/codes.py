"""Dhan's letter codes and spellings, mapped to the copier's enums (both directions)."""
from __future__ import annotations

from trading.orders import OrderStatus, OrderType, Product, Side, Validity

SIDE = {"B": Side.BUY, "S": Side.SELL, "BUY": Side.BUY, "SELL": Side.SELL}
PRODUCT = {"C": Product.CNC, "I": Product.INTRADAY, "M": Product.MARGIN, "F": Product.MTF,
           "V": Product.CO, "B": Product.BO, **{p.value: p for p in Product}}
ORDER_TYPE = {"LMT": OrderType.LIMIT, "MKT": OrderType.MARKET, "SL": OrderType.STOP_LOSS,
              "SLM": OrderType.STOP_LOSS_MARKET, **{t.value: t for t in OrderType}}
VALIDITY = {v.value: v for v in Validity}
# (Exchange, Segment letter) on the socket -> exchange segment on the REST API
SEGMENT = {("NSE", "E"): "NSE_EQ", ("BSE", "E"): "BSE_EQ", ("NSE", "D"): "NSE_FNO",
           ("BSE", "D"): "BSE_FNO", ("MCX", "M"): "MCX_COMM", ("NSE", "C"): "NSE_CURRENCY"}
_STATUS = {s.value: s for s in OrderStatus
           if s not in (OrderStatus.PENDING_PLACEMENT, OrderStatus.UNKNOWN, OrderStatus.SKIPPED)}
_STATUS.update({"PARTTRADED": OrderStatus.PART_TRADED, "PARTIALLY_TRADED": OrderStatus.PART_TRADED,
                "CANCELED": OrderStatus.CANCELLED, "TRIGGERED": OrderStatus.PENDING,
                "CONFIRM": OrderStatus.PENDING, "OPEN": OrderStatus.PENDING})


def status(text: str) -> OrderStatus:
    """Map any casing Dhan uses ("Pending", "PART_TRADED", "Part_Traded", "Cancelled") to the enum."""
    key = str(text).strip().upper().replace(" ", "_").replace("-", "_")
    try:
        return _STATUS[key]
    except KeyError:
        raise ValueError(f"unknown order status {text!r}") from None


def lookup(table: dict, value: object, field: str):
    key = str(value).strip().upper()
    try:
        return table[key]
    except KeyError:
        raise ValueError(f"unknown {field} {value!r}") from None
