"""Order-update socket messages: an order snapshot in the field names, codes and casing
Dhan's order-update feed uses (which differ from the REST book on purpose)."""
from __future__ import annotations

from typing import Any

from .book import Order

_PRODUCT = {"CNC": "C", "INTRADAY": "I", "MARGIN": "M", "MTF": "F", "CO": "V", "BO": "B"}
_PRODUCT_NAME = {"CNC": "CNC", "INTRADAY": "INTRADAY", "MARGIN": "MARGIN", "MTF": "MTF", "CO": "CO", "BO": "BO"}
_ORDER_TYPE = {"LIMIT": "LMT", "MARKET": "MKT", "STOP_LOSS": "SL", "STOP_LOSS_MARKET": "SLM"}
_LEG_NO = {"ENTRY_LEG": 1, "STOP_LOSS_LEG": 2, "TARGET_LEG": 3}   # a super order's legs
# Dhan's feed is inconsistent in casing; reproduce that so clients compare case-insensitively.
_STATUS = {"TRANSIT": "Transit", "PENDING": "Pending", "REJECTED": "Rejected", "CANCELLED": "Cancelled",
           "PART_TRADED": "PART_TRADED", "TRADED": "TRADED", "EXPIRED": "Expired"}


def order_alert(order: Order, sequence: bool = True) -> dict[str, Any]:
    """`sequence`: add the exchange's per-order counter, which Dhan's feed does not carry (without
    it, two updates of an order within one second cannot be told apart by order)."""
    ins = order.instrument
    alert = {"Type": "order_alert", "Data": {
        "Exchange": ins.exchange, "Segment": ins.segment, "Source": "P", "SecurityId": ins.security_id,
        "ClientId": order.client_id, "ExchOrderNo": order.exchange_order_id, "OrderNo": order.order_id,
        "Product": _PRODUCT.get(order.product_type, "I"), "TxnType": "B" if order.transaction_type == "BUY" else "S",
        "OrderType": _ORDER_TYPE.get(order.order_type, order.order_type), "Validity": order.validity,
        "DiscQuantity": order.disclosed_quantity, "DiscQtyRem": order.disclosed_quantity,
        "RemainingQuantity": order.remaining, "Quantity": order.quantity, "TradedQty": order.filled_qty,
        "Price": order.price, "TriggerPrice": order.trigger_price, "TradedPrice": order.last_fill_price,
        "AvgTradedPrice": order.average_price, "AlgoOrdNo": order.order_id if order.super_order else "",
        "OffMktFlag": "1" if order.after_market_order else "0",
        "OrderDateTime": order.create_time, "ExchOrderTime": order.exchange_time,
        "LastUpdatedTime": order.update_time, "Remarks": "Super Order" if order.super_order else "",
        "MktType": "NL", "ReasonDescription":
            order.oms_error_description or ("CONFIRMED" if order.status not in ("REJECTED",) else "REJECTED"),
        "LegNo": _LEG_NO.get(order.leg_name, 1) if order.super_order else 1,
        "Instrument": ins.instrument_name, "Symbol": ins.trading_symbol,
        "ProductName": _PRODUCT_NAME.get(order.product_type, order.product_type), "Status": _STATUS[order.status],
        "LotSize": ins.lot_size, "StrikePrice": ins.strike if ins.is_option else 0.0,
        "ExpiryDate": ins.expiry_date, "OptType": ins.option_type, "DisplayName": ins.custom_symbol,
        "Isin": "", "Series": "EQ" if ins.is_equity else "XX", "GoodTillDaysDate": "", "RefLtp": 0.0,
        "TickSize": ins.tick_size, "AlgoId": "0", "Multiplier": 1, "CorrelationId": order.correlation_id,
        "AmoTime": order.amo_time,
    }}
    if sequence:
        alert["Data"]["Sequence"] = order.sequence
    return alert
