"""Dhan's super orders: an entry leg with a target leg and a stop-loss leg (see paper/README.md).

The three legs share the super order's order id and are told apart by `legName` on the REST book
(ENTRY_LEG, TARGET_LEG, STOP_LOSS_LEG) and by `LegNo` (1, 3, 2) with `Remarks: "Super Order"` on
the order-update socket. The exit legs are placed when the entry trades, for the quantity that
traded: the target as a LIMIT order, the stop-loss as a STOP_LOSS_MARKET order, both on the
other side. Whatever one of them trades, the other gives up (the one that closes the position
cancels the other); the stop-loss follows the price by the trailing jump, never back.

Every method runs under the engine's lock; each change of a leg is announced like any order's."""
from __future__ import annotations

import math
from typing import Any, Callable, Protocol

from .book import Account, Order, SuperOrder
from .errors import DhanError, input_error, order_error
from .matching import round_tick
from .validation import ModifyRequest, SuperModifyRequest, SuperRequest, check_super_prices


class Engine(Protocol):
    """What the desk uses of the engine that owns it (the engine imports this module)."""

    accounts: dict[str, Account]

    def ltp(self, security_id: str) -> float: ...

    def _live(self, order: Order) -> bool: ...

    def _try_fill(self, order: Order) -> None: ...

EXIT_LEGS = ("TARGET_LEG", "STOP_LOSS_LEG")


class SuperOrders:
    """The engine's super-order desk: placement, leg modification and cancellation, and what the
    legs do when an order of theirs trades or the price moves."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._stops: dict[str, Order] = {}   # stop-loss legs placed (closed ones leave on the next trail)

    def _find(self, acct: Account, order_id: str) -> SuperOrder:
        so = acct.supers.get(order_id)
        if so is None:
            raise input_error("orderId", f"no super order {order_id[:30]!r} for this client")
        return so

    def leg(self, acct: Account, order_id: str, name: str) -> Order:
        """A leg of a super order as it stands on the book (exit legs once placed)."""
        so = self._find(acct, order_id)
        leg = so.entry if name == "ENTRY_LEG" else so.exit_leg(name)
        if leg is None:
            raise order_error(f"{name} of super order {order_id} is not placed: its entry has not traded")
        return leg

    # --- REST ---
    def place(self, client_id: str, req: SuperRequest) -> tuple[SuperOrder, str]:
        eng = self.engine
        with eng.lock:
            acct = eng.account(client_id)
            if not req.price:   # a MARKET entry without a price: its legs are judged from the market
                check_super_prices(req.entry.transaction_type, eng.ltp(req.entry.instrument.security_id),
                                   req.target_price, req.stop_loss_price)
            live_after = eng._admit(acct, req.entry, True)
            entry = eng._create(acct, req.entry, live_after)
            entry.super_order, entry.leg_name = True, "ENTRY_LEG"
            so = acct.supers[entry.order_id] = SuperOrder(entry, req.price, req.target_price, req.stop_loss_price,
                                                          req.trailing_jump)
            answer = eng._accept(acct, entry)
            return so, answer

    def modify(self, client_id: str, order_id: str, parse: Callable[[Order], SuperModifyRequest]) -> SuperOrder:
        """`parse(entry) -> SuperModifyRequest`, called once the super order is found."""
        eng = self.engine
        with eng.lock:
            so = self._find(eng.account(client_id), order_id)
            req = parse(so.entry)
            if req.leg_name == "ENTRY_LEG":
                self._modify_entry(so, req)
                return so
            leg = so.exit_leg(req.leg_name)
            state = so.leg_status(req.leg_name)
            if state not in ("PENDING", "PART_TRADED", "TRANSIT"):
                raise order_error(f"{req.leg_name} is {state}: only a pending leg can be modified")
            if req.leg_name == "TARGET_LEG":
                so.target_price = req.target_price
                if leg is not None:
                    leg.price = req.target_price
            else:
                so.stop_loss_price, so.trailing_jump = req.stop_loss_price, req.trailing_jump
                if leg is not None:
                    leg.trigger_price, leg.triggered = req.stop_loss_price, False
                    so.trail_anchor = eng.ltp(leg.instrument.security_id)
            if leg is not None:
                leg.modifications += 1
                eng._emit(leg)
                self._try(leg)
            return so

    def _modify_entry(self, so: SuperOrder, req: SuperModifyRequest) -> None:
        eng, entry = self.engine, so.entry
        if not entry.is_open:
            raise order_error(f"ENTRY_LEG is {entry.status}: the entry can be modified only while PENDING or "
                              "PART_TRADED; modify TARGET_LEG or STOP_LOSS_LEG instead")
        reference = req.price or eng.ltp(entry.instrument.security_id)
        check_super_prices(entry.transaction_type, reference, req.target_price, req.stop_loss_price)
        before = (so.price, so.target_price, so.stop_loss_price, so.trailing_jump)
        # the new terms first: the modified entry may trade at once and place its exit legs
        so.price, so.target_price, so.stop_loss_price, so.trailing_jump = (
            req.price, req.target_price, req.stop_loss_price, req.trailing_jump)
        try:
            eng.modify(entry.client_id, entry.order_id, lambda o: ModifyRequest(
                req.order_type, req.quantity, req.price, 0.0, 0, o.validity, "ENTRY_LEG"))
        except DhanError:
            so.price, so.target_price, so.stop_loss_price, so.trailing_jump = before
            raise
        for leg in so.placed_exit_legs():
            if not leg.is_open or (leg.price, leg.trigger_price) == self._terms(so, leg):
                continue
            leg.price, leg.trigger_price = self._terms(so, leg)
            leg.triggered = False
            eng._emit(leg)
            self._try(leg)

    @staticmethod
    def _terms(so: SuperOrder, leg: Order) -> tuple[float, float]:
        """(price, triggerPrice) an exit leg carries under the super order's terms."""
        return (so.target_price, 0.0) if leg.leg_name == "TARGET_LEG" else (0.0, so.stop_loss_price)

    def cancel(self, client_id: str, order_id: str, name: str) -> SuperOrder:
        """ENTRY_LEG cancels every leg still open; an exit leg cancels that leg for good."""
        eng = self.engine
        with eng.lock:
            so = self._find(eng.account(client_id), order_id)
            names = ("ENTRY_LEG", *EXIT_LEGS) if name == "ENTRY_LEG" else (name,)
            cancelled = False
            for leg_name in names:
                leg = so.entry if leg_name == "ENTRY_LEG" else so.exit_leg(leg_name)
                if leg is not None and leg.is_open:
                    leg.status = "CANCELLED"
                    eng._emit(leg)
                    cancelled = True
                elif leg is None and leg_name in EXIT_LEGS and so.leg_status(leg_name) == "PENDING":
                    so.cancelled_legs.add(leg_name)
                    cancelled = True
            if not cancelled:
                state = so.status() if name == "ENTRY_LEG" else so.leg_status(name)
                raise order_error(f"{name} of super order {order_id} is already {state}: nothing to cancel")
            return so

    def listing(self, acct: Account) -> list[dict[str, Any]]:
        return [so.as_rest(self.engine.ltp(so.entry.instrument.security_id)) for so in acct.supers.values()]

    # --- what the legs do ---
    def on_fill(self, order: Order) -> None:
        """An order of a super order traded: the entry places or grows the exit legs; an exit leg
        shrinks its sibling, or cancels it once the position is closed."""
        so = self.engine.accounts[order.client_id].supers.get(order.order_id)
        if so is None:
            return
        if order is so.entry:
            self._place_exit_legs(so)
        self._resize(so)

    def _place_exit_legs(self, so: SuperOrder) -> None:
        eng, entry = self.engine, so.entry
        acct = eng.accounts[entry.client_id]
        placed = []
        for name in EXIT_LEGS:
            if so.exit_leg(name) is not None or name in so.cancelled_legs:
                continue
            now = eng.sessions.stamp()
            leg = Order(order_id=entry.order_id, client_id=entry.client_id, instrument=entry.instrument,
                        transaction_type=so.exit_side, product_type=entry.product_type,
                        order_type="LIMIT" if name == "TARGET_LEG" else "STOP_LOSS_MARKET", validity="DAY",
                        quantity=entry.filled_qty - so.exited(), price=0.0, trigger_price=0.0,
                        correlation_id=entry.correlation_id, leg_name=name, create_time=now, update_time=now,
                        exchange_time=now, exchange_order_id=eng.next_exchange_order_id(), super_order=True)
            leg.price, leg.trigger_price = self._terms(so, leg)
            if name == "TARGET_LEG":
                so.target = leg
            else:
                so.stop = leg
                so.trail_anchor = entry.average_price
                self._stops[leg.key] = leg
            eng._open(acct, leg)
            placed.append(leg)
        for leg in placed:
            self._try(leg)

    def _resize(self, so: SuperOrder) -> None:
        """Each open exit leg covers what the entry traded less what the exit legs have traded."""
        eng = self.engine
        open_qty = so.entry.filled_qty - so.exited()
        for leg in so.placed_exit_legs():
            if not leg.is_open:
                continue
            if open_qty <= 0:
                leg.status = "CANCELLED"
                leg.oms_error_description = "the other leg of the super order closed the position"
                eng._emit(leg)
            elif leg.filled_qty + open_qty != leg.quantity:
                leg.quantity = leg.filled_qty + open_qty
                eng._emit(leg)

    def _try(self, leg: Order) -> None:
        if leg.is_open and self.engine._live(leg):
            self.engine._try_fill(leg)

    def trail(self, security_id: str | None) -> None:
        """Move every live trailing stop-loss one jump for each jump the price went its way."""
        eng = self.engine
        for key, stop in list(self._stops.items()):
            if not stop.is_open:
                del self._stops[key]
                continue
            if security_id is not None and stop.instrument.security_id != security_id:
                continue
            so = eng.accounts[stop.client_id].supers[stop.order_id]
            if so.trailing_jump <= 0 or not eng._live(stop):
                continue
            direction = 1 if so.entry.transaction_type == "BUY" else -1
            gain = (eng.ltp(stop.instrument.security_id) - so.trail_anchor) * direction
            jumps = math.floor(gain / so.trailing_jump + 1e-9)
            if jumps <= 0:
                continue
            move = jumps * so.trailing_jump * direction
            so.trail_anchor = round(so.trail_anchor + move, 2)
            so.stop_loss_price = stop.trigger_price = round_tick(stop.trigger_price + move, stop.instrument.tick_size)
            eng._emit(stop)
