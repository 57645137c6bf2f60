"""The order lifecycle under one lock: placement checks (kill switch, halt, session, margin,
circuit), modify/cancel rules, fills, AMO release, expiry, forever-order triggers.

Every change of an order is published as an order_alert through `publish`, in the order
the changes happened (publish is called with the lock held)."""
from __future__ import annotations

import secrets

import itertools
import math
import threading
from dataclasses import replace
from typing import Any, Callable

from .alerts import order_alert
from .book import Account, Order, Trade, margin_required
from .errors import DhanError, input_error, order_error
from .freeze import FreezeLimits, underlying
from .instruments import Instrument
from .matching import PriceBoard, fill_now, round_tick
from .sessions import AMO_DELAY, SessionClock
from .superorders import SuperOrders
from .validation import ModifyRequest, PlaceRequest, check_prices

MAX_MODIFICATIONS = 25
WAITING = math.inf   # live_after of an order that waits for the next open (AMO, pre-open)

Publish = Callable[[str, dict[str, Any]], None]


class Engine:
    def __init__(self, instruments: dict[str, Instrument], board: PriceBoard, sessions: SessionClock,
                 publish: Publish, tranche_qty: int | None = None, sequence: bool = True,
                 freeze: FreezeLimits | None = None) -> None:
        self.lock = threading.RLock()
        self.sequence = sequence  # announce each order's update counter (Dhan does not)
        self.instruments = instruments
        self.board = board
        self.sessions = sessions
        self.publish = publish
        self.tranche_qty = tranche_qty
        self.accounts: dict[str, Account] = {}
        self.open_orders: dict[str, Order] = {}
        self.forever_pending: dict[str, tuple[Account, dict[str, Any], list[tuple[float, int, str]]]] = {}
        self._order_ids = itertools.count(1)
        self._trade_ids = itertools.count(1)
        self._state = sessions.state()
        self.freeze = freeze if freeze is not None else FreezeLimits()
        self.supers = SuperOrders(self)

    # --- accounts ---
    def add_account(self, client_id: str, token: str, funds: float) -> Account:
        with self.lock:
            acct = Account(client_id, token, float(funds), ltp=self.ltp)
            self.accounts[client_id] = acct
            return acct

    def authenticate(self, client_id: str | None, token: str | None) -> Account | None:
        acct = self.accounts.get(client_id or "")
        return acct if acct is not None and token == acct.access_token else None

    def rotate_token(self, client_id: str) -> str:
        """A new access token for the account; the old one stops working at once (what Dhan's
        RenewToken does, and what an expired token looks like to a client still using it)."""
        with self.lock:
            acct = self.account(client_id)
            acct.access_token = f"paper-{secrets.token_hex(16)}"
            return acct.access_token

    def account(self, client_id: str) -> Account:
        acct = self.accounts.get(client_id)
        if acct is None:
            raise KeyError(f"no account {client_id}")
        return acct

    def ltp(self, security_id: str) -> float:
        return self.board.quotes[security_id].ltp

    def busy(self) -> bool:
        return bool(self.open_orders or self.forever_pending)

    # --- helpers ---
    def _tranche(self, ins: Instrument) -> int:
        if self.tranche_qty is None:
            return 500 if ins.is_equity else 5 * ins.lot_size
        return max(ins.lot_size, self.tranche_qty // ins.lot_size * ins.lot_size)

    def _emit(self, order: Order) -> None:
        order.sequence += 1
        order.update_time = self.sessions.stamp()
        if not order.is_open:
            self.open_orders.pop(order.key, None)
            self.accounts[order.client_id].open_orders.pop(order.key, None)
        self.publish(order.client_id, order_alert(order, self.sequence))

    def _live(self, order: Order) -> bool:
        quote = self.board.quotes[order.instrument.security_id]
        if self._state != "open" or quote.halted or quote.held:
            return False
        return order.live_after is None or order.live_after <= self.sessions.now().timestamp()

    def _find(self, acct: Account, order_id: str) -> Order:
        order = acct.orders.get(order_id)
        if order is None:
            raise input_error("orderId", f"no order {order_id[:30]!r} for this client")
        return order

    # --- placement ---
    def place(self, client_id: str, req: PlaceRequest, from_api: bool = True) -> tuple[Order, str]:
        """Create an order; returns it and the status to answer with. Raises DhanError for refusals."""
        with self.lock:
            acct = self.account(client_id)
            live_after = self._admit(acct, req, from_api)
            order = self._create(acct, req, live_after)
            return order, self._accept(acct, order)

    def place_sliced(self, client_id: str, req: PlaceRequest) -> list[tuple[Order, str]]:
        """Dhan's order slicing: one order per slice of at most the freeze quantity (whole lots), each
        with its own order id and the request's correlation id; all are refused or none."""
        with self.lock:
            acct = self.account(client_id)
            sizes = self.freeze.slices(req.instrument, req.quantity)
            live_after = self._admit(acct, replace(req, quantity=sizes[0]), True)   # the largest slice
            placed = []
            for size in sizes:
                order = self._create(acct, replace(req, quantity=size,
                                                   disclosed_quantity=min(req.disclosed_quantity, size)), live_after)
                placed.append((order, self._accept(acct, order)))
            if req.correlation_id and len(placed) > 1:
                acct.sliced[req.correlation_id] = [order for order, _ in placed]
            return placed

    def _admit(self, acct: Account, req: PlaceRequest, from_api: bool) -> float | None:
        """Refuse a placement the account or the market cannot take (DhanError); else the time the
        order may match from (None: at once)."""
        if from_api and acct.reject_next:
            code, message = acct.reject_next.pop(0)
            raise DhanError(code, message)
        if acct.kill_switch:
            raise order_error("kill switch is active for this account: trading disabled for the day")
        ins = req.instrument
        if self.board.quotes[ins.security_id].halted:
            raise order_error(f"security {ins.security_id} ({ins.trading_symbol}) is halted")
        self._check_freeze(ins, req.quantity)
        state = self._state = self.sessions.state()
        live_after: float | None = None
        if state in ("closed", "holiday") and not req.after_market_order:
            raise order_error("exchange holiday: market closed" if state == "holiday"
                              else "market closed: place an after-market order (afterMarketOrder=true)")
        if state == "pre_open" and not req.after_market_order:
            if not (ins.is_equity and req.order_type == "LIMIT"):
                raise order_error("pre-open session accepts only LIMIT orders in equities")
            live_after = WAITING
        if req.after_market_order and state != "open":
            live_after = WAITING
        if req.correlation_id and req.correlation_id in acct.by_correlation:
            raise input_error("correlationId", "correlationId already used today")
        return live_after

    def _check_freeze(self, ins: Instrument, quantity: int) -> None:
        limit = self.freeze.limit(ins)
        if limit is not None and quantity > limit:
            raise order_error(f"quantity {quantity} exceeds the freeze quantity {limit} of {underlying(ins)} "
                              f"per order: place at most {limit}, or slice it (POST /orders/slicing)")

    def _create(self, acct: Account, req: PlaceRequest, live_after: float | None) -> Order:
        """A new order on the account's book, not yet announced nor open."""
        now = self.sessions.stamp()
        n = next(self._order_ids)
        order = Order(
            order_id=str(5126112300000 + n), client_id=acct.client_id, instrument=req.instrument,
            transaction_type=req.transaction_type, product_type=req.product_type, order_type=req.order_type,
            validity=req.validity, quantity=req.quantity, price=req.price, trigger_price=req.trigger_price,
            disclosed_quantity=req.disclosed_quantity, correlation_id=req.correlation_id,
            after_market_order=req.after_market_order and live_after is not None,
            amo_time=req.amo_time if live_after is not None else "", create_time=now, update_time=now,
            exchange_time=now, exchange_order_id=str(1100000000000000 + n), live_after=live_after)
        acct.orders[order.order_id] = order
        if order.correlation_id:
            acct.by_correlation.setdefault(order.correlation_id, order)   # slices share it: the first answers
        return order

    def _accept(self, acct: Account, order: Order) -> str:
        """Announce a new order: rejected by the risk checks, or open and matched on arrival. Returns
        the status the placement answers with."""
        reason = self._placement_reject_reason(acct, order)
        if reason:
            order.status, order.oms_error_code, order.oms_error_description = "REJECTED", reason[0], reason[1]
            self._emit(order)
            return "REJECTED"
        self._open(acct, order)
        answer = order.status
        self._match_on_arrival(order)
        return answer

    def _open(self, acct: Account, order: Order) -> None:
        acct.open_orders[order.key] = order
        self.open_orders[order.key] = order
        self._emit(order)

    def next_exchange_order_id(self) -> str:
        return str(1100000000000000 + next(self._order_ids))

    def _placement_reject_reason(self, acct: Account, order: Order) -> tuple[str, str] | None:
        ins = order.instrument
        for name, price in (("price", order.price), ("triggerPrice", order.trigger_price)):
            if price and not self.board.in_band(ins.security_id, price):
                q = self.board.quotes[ins.security_id]
                return "RMS-CIRCUIT", f"{name} {price} outside the circuit band {q.lower}-{q.upper} (circuit limit)"
        basis = order.price or order.trigger_price or self.ltp(ins.security_id)
        opening = acct.opening_qty(ins, order.product_type, order.transaction_type, order.quantity)
        need = margin_required(ins, order.transaction_type, order.product_type, opening, basis)
        avail = acct.available()
        if need > avail + 1e-6:
            return "RMS-MARGIN", f"RMS: insufficient margin: required {need:.2f}, available {avail:.2f}"
        return None

    def _match_on_arrival(self, order: Order) -> None:
        """Marketable orders trade one tranche at once; IOC cancels whatever did not trade."""
        if self._live(order):
            self._try_fill(order)
        if order.validity == "IOC" and order.is_open and self._state == "open" and order.live_after is None:
            order.status = "CANCELLED"
            order.oms_error_description = "IOC order: unfilled quantity cancelled"
            self._emit(order)

    def _try_fill(self, order: Order) -> None:
        sid = order.instrument.security_id
        was_triggered = order.triggered
        decision = fill_now(order, self.ltp(sid), self._tranche(order.instrument))
        if decision:
            self._fill(order, *decision)
        elif order.triggered and not was_triggered:
            self._emit(order)   # Dhan announces the trigger of a stop order

    def _fill(self, order: Order, qty: int, price: float) -> None:
        acct = self.accounts[order.client_id]
        price = round_tick(price, order.instrument.tick_size)
        now = self.sessions.stamp()
        acct.trades.append(Trade(order.order_id, str(2100000000 + next(self._trade_ids)), qty, price, now, order))
        acct.position(order.instrument, order.product_type).add_fill(order.transaction_type, qty, price)
        order.filled_qty += qty
        order.filled_value += qty * price
        order.last_fill_price = price
        order.exchange_time = now
        order.status = "TRADED" if order.remaining == 0 else "PART_TRADED"
        self._emit(order)
        if order.super_order:
            self.supers.on_fill(order)

    # --- modify / cancel / fill ---
    def modify(self, client_id: str, order_id: str, parse: Callable[[Order], ModifyRequest]) -> Order:
        with self.lock:
            acct = self.account(client_id)
            order = self._find(acct, order_id)
            if not order.is_open:
                raise order_error(f"order is {order.status}: only PENDING or PART_TRADED orders can be modified")
            if order.modifications >= MAX_MODIFICATIONS:
                raise order_error(f"modification limit reached: at most {MAX_MODIFICATIONS} modifications per order")
            req = parse(order)
            ins = order.instrument
            self._check_freeze(ins, req.quantity)
            if req.quantity <= order.filled_qty:
                raise input_error("quantity", f"new total quantity must exceed the filled {order.filled_qty}")
            check_prices(ins, req.order_type, req.quantity, req.price, req.trigger_price)
            for name, price in (("price", req.price), ("triggerPrice", req.trigger_price)):
                if price and not self.board.in_band(ins.security_id, price):
                    raise order_error(f"{name} {price} outside the circuit band (circuit limit)")
            basis_old = order.price or order.trigger_price or self.ltp(ins.security_id)
            basis_new = req.price or req.trigger_price or self.ltp(ins.security_id)
            old = margin_required(ins, order.transaction_type, order.product_type, order.remaining, basis_old)
            new = margin_required(ins, order.transaction_type, order.product_type, req.quantity - order.filled_qty, basis_new)
            if new > old and new - old > acct.available() + 1e-6:
                raise order_error("RMS: insufficient margin for the modification")
            if req.trigger_price != order.trigger_price or req.order_type != order.order_type:
                order.triggered = False
            order.order_type, order.quantity, order.price = req.order_type, req.quantity, req.price
            order.trigger_price, order.disclosed_quantity, order.validity = req.trigger_price, req.disclosed_quantity, req.validity
            if not order.super_order:   # a super order's legs keep their names (they key its book)
                order.leg_name = req.leg_name or order.leg_name
            order.modifications += 1
            self._emit(order)
            if self._live(order):
                self._try_fill(order)
            return order

    def cancel(self, client_id: str, order_id: str) -> Order:
        with self.lock:
            order = self._find(self.account(client_id), order_id)
            if not order.is_open:
                raise order_error(f"order is already {order.status}")
            order.status = "CANCELLED"
            self._emit(order)
            return order

    def force_fill(self, client_id: str, order_id: str, qty: int | None, price: float | None,
                   leg: str | None = None) -> Order:
        """Trade the order (a super order's `leg`, when named) now, whatever the market."""
        with self.lock:
            acct = self.account(client_id)
            order = self.supers.leg(acct, order_id, leg) if leg else self._find(acct, order_id)
            if not order.is_open:
                raise order_error(f"order is {order.status}: nothing left to fill")
            qty = order.remaining if qty is None else min(int(qty), order.remaining)
            if qty <= 0:
                raise input_error("qty", "must be positive")
            if price is None:
                price = order.price if order.order_type in ("LIMIT", "STOP_LOSS") else self.ltp(order.instrument.security_id)
            self._fill(order, qty, float(price))
            return order

    # --- market control ---
    def set_price(self, security_id: str, price: float) -> None:
        with self.lock:
            q = self.board.quotes[security_id]
            q.ltp = round_tick(float(price), self.instruments[security_id].tick_size)
            self._sync_session()
            self._match_all(security_id)

    def set_session(self, state: str) -> None:
        with self.lock:
            self.sessions.set(state)
            self._sync_session()
            self._match_all()

    def _sync_session(self) -> None:
        new = self.sessions.state()
        prev, self._state = self._state, new
        if new == prev:
            return
        if new == "open":
            release = self.sessions.open_epoch()
            for o in self.open_orders.values():
                if o.live_after == WAITING:
                    o.live_after = release + AMO_DELAY.get(o.amo_time, 0)
        elif new in ("closed", "holiday") and prev in ("open", "pre_open"):
            for o in list(self.open_orders.values()):
                if not (o.after_market_order and o.live_after == WAITING):
                    o.status = "EXPIRED"
                    o.oms_error_description = "order expired at market close"
                    self._emit(o)

    def _match_all(self, security_id: str | None = None) -> None:
        if self._state != "open":
            return
        self.supers.trail(security_id)
        for order in list(self.open_orders.values()):
            if order.is_open and (security_id is None or order.instrument.security_id == security_id) and self._live(order):
                self._try_fill(order)
        for fid in list(self.forever_pending):
            self._check_forever(fid, security_id)

    def tick(self, walk: bool) -> None:
        """One period of the market: session changes, price walk, matching, GTT triggers."""
        with self.lock:
            self._sync_session()
            if walk and self._state == "open":
                self.board.walk()
            self._match_all()

    # --- forever (GTT) orders ---
    def place_forever(self, client_id: str, spec: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            acct = self.account(client_id)
            if acct.kill_switch:
                raise order_error("kill switch is active for this account: trading disabled for the day")
            n = next(self._order_ids)
            now = self.sessions.stamp()
            rec = {"dhanClientId": client_id, "orderId": str(5126112300000 + n), "orderStatus": "PENDING",
                   **spec, "legName": "TARGET_LEG" if spec["orderFlag"] == "OCO" else "ENTRY_LEG",
                   "createTime": now, "updateTime": now, "triggeredOrderId": ""}
            acct.forever[rec["orderId"]] = rec
            self._arm_forever(acct, rec)
            return rec

    def _arm_forever(self, acct: Account, rec: dict[str, Any]) -> None:
        ltp = self.ltp(rec["securityId"])
        legs = [(rec["triggerPrice"], 1 if rec["triggerPrice"] >= ltp else -1, "")]
        if rec["orderFlag"] == "OCO":
            legs.append((rec["triggerPrice1"], 1 if rec["triggerPrice1"] >= ltp else -1, "1"))
        self.forever_pending[rec["orderId"]] = (acct, rec, legs)

    def _check_forever(self, fid: str, security_id: str | None) -> None:
        acct, rec, legs = self.forever_pending[fid]
        if security_id is not None and rec["securityId"] != security_id:
            return
        ins = self.instruments[rec["securityId"]]
        ltp = self.ltp(ins.security_id)
        for trigger, direction, suffix in legs:
            if (ltp - trigger) * direction < 0:
                continue
            del self.forever_pending[fid]
            rec["orderStatus"], rec["updateTime"] = "TRIGGERED", self.sessions.stamp()
            req = PlaceRequest(ins, rec["transactionType"], rec["productType"], rec["orderType"], rec["validity"],
                               rec[f"quantity{suffix}"], rec[f"price{suffix}"] if rec["orderType"] == "LIMIT" else 0.0,
                               0.0, 0, False, "", "")
            try:
                order, _ = self.place(acct.client_id, req, from_api=False)
                rec["triggeredOrderId"] = order.order_id
            except DhanError as e:
                rec["orderStatus"], rec["omsErrorDescription"] = "REJECTED", e.message
            return

    def modify_forever(self, client_id: str, fid: str, change: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            acct = self.account(client_id)
            rec = acct.forever.get(fid)
            if rec is None:
                raise input_error("orderId", f"no forever order {fid[:30]!r}")
            if rec["orderStatus"] != "PENDING":
                raise order_error(f"forever order is {rec['orderStatus']}")
            ins = self.instruments[rec["securityId"]]
            check_prices(ins, change["orderType"], change["quantity"], change["price"], 0.0)
            suffix = "1" if change["legName"] == "STOP_LOSS_LEG" and rec["orderFlag"] == "OCO" else ""
            rec["orderType"], rec["validity"] = change["orderType"], change["validity"]
            rec[f"quantity{suffix}"], rec[f"price{suffix}"] = change["quantity"], change["price"]
            if change["triggerPrice"]:
                rec[f"triggerPrice{suffix}"] = change["triggerPrice"]
            rec["updateTime"] = self.sessions.stamp()
            self._arm_forever(acct, rec)
            return rec

    def cancel_forever(self, client_id: str, fid: str) -> dict[str, Any]:
        with self.lock:
            rec = self.account(client_id).forever.get(fid)
            if rec is None:
                raise input_error("orderId", f"no forever order {fid[:30]!r}")
            if rec["orderStatus"] != "PENDING":
                raise order_error(f"forever order is already {rec['orderStatus']}")
            self.forever_pending.pop(fid, None)
            rec["orderStatus"], rec["updateTime"] = "CANCELLED", self.sessions.stamp()
            return rec
