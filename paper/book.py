"""Per-account book state: orders, trades, positions, funds and the margin rule.

Pure data and arithmetic (no I/O, no locking): the engine owns the lock and the clock,
so everything here is deterministic and easy to reason about."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from .instruments import Instrument


OPEN_STATUSES = frozenset({"TRANSIT", "PENDING", "PART_TRADED"})
TERMINAL_STATUSES = frozenset({"REJECTED", "CANCELLED", "TRADED", "EXPIRED"})


@dataclass
class Order:
    order_id: str
    client_id: str
    instrument: Instrument
    transaction_type: str
    product_type: str
    order_type: str
    validity: str
    quantity: int
    price: float
    trigger_price: float
    disclosed_quantity: int = 0
    correlation_id: str = ""
    after_market_order: bool = False
    amo_time: str = ""
    leg_name: str = ""
    status: str = "PENDING"
    create_time: str = ""
    update_time: str = ""
    exchange_time: str = ""
    filled_qty: int = 0
    filled_value: float = 0.0
    last_fill_price: float = 0.0
    oms_error_code: str = ""
    oms_error_description: str = ""
    sequence: int = 0
    modifications: int = 0
    triggered: bool = False          # SL/SLM: trigger crossed, now behaves as LIMIT/MARKET
    live_after: float | None = None  # AMO / pre-open: epoch seconds (business clock) it may match from
    exchange_order_id: str = ""
    super_order: bool = False        # a leg of a super order: its legs share the order id, told apart by leg_name

    @property
    def key(self) -> str:
        """Unique among the day's orders: the order id, with the leg for a super order's exit legs."""
        if self.super_order and self.leg_name not in ("", "ENTRY_LEG"):
            return f"{self.order_id}/{self.leg_name}"
        return self.order_id

    @property
    def remaining(self) -> int:
        return self.quantity - self.filled_qty

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def average_price(self) -> float:
        return round(self.filled_value / self.filled_qty, 2) if self.filled_qty else 0.0

    def as_rest(self) -> dict[str, Any]:
        """The order-book entry exactly as GET /orders carries it."""
        ins = self.instrument
        return {
            "dhanClientId": self.client_id, "orderId": self.order_id, "exchangeOrderId": self.exchange_order_id,
            "correlationId": self.correlation_id, "orderStatus": self.status,
            "transactionType": self.transaction_type, "exchangeSegment": ins.exchange_segment,
            "productType": self.product_type, "orderType": self.order_type, "validity": self.validity,
            "tradingSymbol": ins.trading_symbol, "securityId": ins.security_id, "quantity": self.quantity,
            "disclosedQuantity": self.disclosed_quantity, "price": self.price, "triggerPrice": self.trigger_price,
            "afterMarketOrder": self.after_market_order, "amoTime": self.amo_time or None,
            "boProfitValue": 0.0, "boStopLossValue": 0.0, "legName": self.leg_name or None,
            "createTime": self.create_time, "updateTime": self.update_time, "exchangeTime": self.exchange_time,
            "drvExpiryDate": ins.expiry_date if ins.segment == "D" else None,
            "drvOptionType": ins.option_type if ins.is_option else None,
            "drvStrikePrice": ins.strike if ins.is_option else 0.0,
            "omsErrorCode": self.oms_error_code or None, "omsErrorDescription": self.oms_error_description or None,
            "algoId": "", "remainingQuantity": self.remaining, "averageTradedPrice": self.average_price,
            "filledQty": self.filled_qty,
        }


@dataclass
class Trade:
    order_id: str
    trade_id: str
    quantity: int
    price: float
    time: str
    order: Order

    def as_rest(self) -> dict[str, Any]:
        o, ins = self.order, self.order.instrument
        return {
            "dhanClientId": o.client_id, "orderId": self.order_id, "exchangeOrderId": o.exchange_order_id,
            "exchangeTradeId": self.trade_id, "transactionType": o.transaction_type,
            "exchangeSegment": ins.exchange_segment, "productType": o.product_type, "orderType": o.order_type,
            "tradingSymbol": ins.trading_symbol, "customSymbol": ins.custom_symbol, "securityId": ins.security_id,
            "tradedQuantity": self.quantity, "tradedPrice": self.price, "createTime": self.time,
            "updateTime": self.time, "exchangeTime": self.time,
            "drvExpiryDate": ins.expiry_date if ins.segment == "D" else None,
            "drvOptionType": ins.option_type if ins.is_option else None,
            "drvStrikePrice": ins.strike if ins.is_option else 0.0,
        }


@dataclass
class Position:
    instrument: Instrument
    product_type: str
    buy_qty: int = 0
    buy_value: float = 0.0
    sell_qty: int = 0
    sell_value: float = 0.0

    @property
    def net_qty(self) -> int:
        return self.buy_qty - self.sell_qty

    @property
    def buy_avg(self) -> float:
        return round(self.buy_value / self.buy_qty, 2) if self.buy_qty else 0.0

    @property
    def sell_avg(self) -> float:
        return round(self.sell_value / self.sell_qty, 2) if self.sell_qty else 0.0

    @property
    def cost_price(self) -> float:
        """Average price of the still-open side."""
        return self.buy_avg if self.net_qty > 0 else self.sell_avg if self.net_qty < 0 else 0.0

    @property
    def realized(self) -> float:
        closed = min(self.buy_qty, self.sell_qty)
        return round(closed * (self.sell_avg - self.buy_avg), 2) if closed else 0.0

    def add_fill(self, side: str, qty: int, price: float) -> None:
        if side == "BUY":
            self.buy_qty += qty
            self.buy_value += qty * price
        else:
            self.sell_qty += qty
            self.sell_value += qty * price

    def as_rest(self, client_id: str, ltp: float) -> dict[str, Any]:
        ins, net = self.instrument, self.net_qty
        return {
            "dhanClientId": client_id, "tradingSymbol": ins.trading_symbol, "securityId": ins.security_id,
            "positionType": "LONG" if net > 0 else "SHORT" if net < 0 else "CLOSED",
            "exchangeSegment": ins.exchange_segment, "productType": self.product_type,
            "buyAvg": self.buy_avg, "costPrice": self.cost_price, "buyQty": self.buy_qty,
            "sellAvg": self.sell_avg, "sellQty": self.sell_qty, "netQty": net,
            "realizedProfit": self.realized, "unrealizedProfit": round(net * (ltp - self.cost_price), 2),
            "rbiReferenceRate": 1.0, "multiplier": 1, "carryForwardBuyQty": 0, "carryForwardSellQty": 0,
            "carryForwardBuyValue": 0.0, "carryForwardSellValue": 0.0, "dayBuyQty": self.buy_qty,
            "daySellQty": self.sell_qty, "dayBuyValue": round(self.buy_value, 2),
            "daySellValue": round(self.sell_value, 2),
            "drvExpiryDate": ins.expiry_date if ins.segment == "D" else None,
            "drvOptionType": ins.option_type if ins.is_option else None,
            "drvStrikePrice": ins.strike if ins.is_option else 0.0, "crossCurrency": False,
        }


_PRODUCT_RATE = {"CNC": 1.0, "INTRADAY": 0.2, "MARGIN": 0.4, "MTF": 0.5, "CO": 0.2, "BO": 0.2}


def margin_required(ins: Instrument, side: str, product: str, qty: int, price: float) -> float:
    """Approximate margin for `qty` opening units: CNC full value, INTRADAY 20%, MARGIN 40%,
    futures 15% (MARGIN) / 20% (intraday), option buys the premium, option sells 15% of the
    underlying notional (the strike stands in for the underlying)."""
    if qty <= 0:
        return 0.0
    if ins.is_option:
        return qty * price if side == "BUY" else 0.15 * ins.strike * qty
    if ins.is_future:
        return (0.2 if product == "INTRADAY" else 0.15) * qty * price
    return _PRODUCT_RATE.get(product, 1.0) * qty * price


@dataclass
class Account:
    """One client's state. Read it under the exchange lock (PaperExchange helpers do)."""
    client_id: str
    access_token: str
    sod_limit: float
    kill_switch: bool = False
    data_plan: bool = True   # Dhan's Data API subscription: market quotes answer DH-902 without it
    orders: dict[str, Order] = field(default_factory=dict)
    open_orders: dict[str, Order] = field(default_factory=dict)
    by_correlation: dict[str, Order] = field(default_factory=dict)
    sliced: dict[str, list[Order]] = field(default_factory=dict)   # correlation id -> the slices that share it
    supers: dict[str, SuperOrder] = field(default_factory=dict)    # order id -> its super order
    trades: list[Trade] = field(default_factory=list)
    positions: dict[tuple[str, str], Position] = field(default_factory=dict)
    forever: dict[str, dict[str, Any]] = field(default_factory=dict)
    reject_next: list[tuple[str, str]] = field(default_factory=list)
    ltp: Callable[[str], float] | None = None   # price source for MARKET orders' margin

    def book(self) -> list[Order]:
        """The order book: every order of the day, and the exit legs of super orders once placed."""
        legs = [leg for so in self.supers.values() for leg in so.placed_exit_legs()]
        return [*self.orders.values(), *legs]

    def position(self, ins: Instrument, product: str) -> Position:
        key = (ins.security_id, product)
        pos = self.positions.get(key)
        if pos is None:
            pos = self.positions[key] = Position(ins, product)
        return pos

    def opening_qty(self, ins: Instrument, product: str, side: str, qty: int) -> int:
        """Part of `qty` that opens or grows a position (closing needs no margin)."""
        pos = self.positions.get((ins.security_id, product))
        net = pos.net_qty if pos else 0
        closable = max(0, -net) if side == "BUY" else max(0, net)
        return max(0, qty - closable)

    def utilized(self) -> float:
        used = 0.0
        for o in self.open_orders.values():
            opening = self.opening_qty(o.instrument, o.product_type, o.transaction_type, o.remaining)
            basis = o.price or o.trigger_price or (self.ltp(o.instrument.security_id) if self.ltp else 0.0)
            used += margin_required(o.instrument, o.transaction_type, o.product_type, opening, basis)
        for p in self.positions.values():
            net = p.net_qty
            if net:
                used += margin_required(p.instrument, "BUY" if net > 0 else "SELL", p.product_type, abs(net), p.cost_price)
        return round(used, 2)

    def realized(self) -> float:
        return round(sum(p.realized for p in self.positions.values()), 2)

    def available(self) -> float:
        return round(self.sod_limit + self.realized() - self.utilized(), 2)

    def funds_rest(self) -> dict[str, Any]:
        used, avail = self.utilized(), self.available()
        return {"dhanClientId": self.client_id, "availabelBalance": avail, "sodLimit": round(self.sod_limit, 2),
                "collateralAmount": 0.0, "receiveableAmount": 0.0, "utilizedAmount": used,
                "blockedPayoutAmount": 0.0, "withdrawableBalance": max(0.0, avail)}


@dataclass
class SuperOrder:
    entry: Order                     # on the book under the super order's id, legName ENTRY_LEG
    price: float                     # the entry price as asked
    target_price: float
    stop_loss_price: float           # where the stop-loss leg triggers (it trails)
    trailing_jump: float
    target: Order | None = None      # the exit legs, once placed
    stop: Order | None = None
    cancelled_legs: set[str] = field(default_factory=set)   # exit legs cancelled before they were placed
    trail_anchor: float = 0.0        # the price the stop-loss last trailed from

    @property
    def order_id(self) -> str:
        return self.entry.order_id

    @property
    def exit_side(self) -> str:
        return "SELL" if self.entry.transaction_type == "BUY" else "BUY"

    def exit_leg(self, name: str) -> Order | None:
        return {"TARGET_LEG": self.target, "STOP_LOSS_LEG": self.stop}.get(name)

    def placed_exit_legs(self) -> list[Order]:
        return [leg for leg in (self.target, self.stop) if leg is not None]

    def exited(self) -> int:
        return sum(leg.filled_qty for leg in self.placed_exit_legs())

    def status(self) -> str:
        """Dhan's super order status: the entry's until it trades, then TRADED, and CLOSED once the
        exit legs have traded all the entry did."""
        entry = self.entry
        if entry.filled_qty == 0:
            return entry.status
        if self.exited() >= entry.filled_qty:
            return "CLOSED"
        return "PART_TRADED" if entry.is_open else "TRADED"

    def leg_status(self, name: str) -> str:
        leg = self.exit_leg(name)
        if leg is not None:
            return "TRIGGERED" if leg.status == "TRADED" else leg.status
        if name in self.cancelled_legs:
            return "CANCELLED"
        return "PENDING" if self.entry.is_open else self.entry.status

    def as_rest(self, ltp: float) -> dict[str, Any]:
        """The entry of `GET /super/orders` with its exit legs nested in `legDetails`."""
        e, ins = self.entry, self.entry.instrument
        details = []
        for name in ("STOP_LOSS_LEG", "TARGET_LEG"):
            leg = self.exit_leg(name)
            details.append({
                "orderId": self.order_id, "legName": name, "transactionType": self.exit_side,
                "totalQuantity": leg.quantity if leg else 0, "remainingQuantity": leg.remaining if leg else 0,
                "triggeredQuantity": leg.filled_qty if leg else 0,
                "price": self.stop_loss_price if name == "STOP_LOSS_LEG" else self.target_price,
                "orderStatus": self.leg_status(name),
                "trailingJump": self.trailing_jump if name == "STOP_LOSS_LEG" else 0.0})
        return {
            "dhanClientId": e.client_id, "orderId": e.order_id, "correlationId": e.correlation_id,
            "orderStatus": self.status(), "transactionType": e.transaction_type,
            "exchangeSegment": ins.exchange_segment, "productType": e.product_type, "orderType": e.order_type,
            "validity": e.validity, "tradingSymbol": ins.trading_symbol, "securityId": ins.security_id,
            "quantity": e.quantity, "remainingQuantity": e.remaining, "ltp": ltp,
            "price": e.price if e.order_type == "LIMIT" else self.price, "afterMarketOrder": e.after_market_order,
            "legName": "ENTRY_LEG", "trailingJump": self.trailing_jump, "exchangeOrderId": e.exchange_order_id,
            "createTime": e.create_time, "updateTime": e.update_time, "exchangeTime": e.exchange_time,
            "omsErrorDescription": e.oms_error_description, "averageTradedPrice": e.average_price,
            "filledQty": e.filled_qty, "legDetails": details,
        }
