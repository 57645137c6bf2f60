"""Super orders: what the copier follows of the leader's, and when a follower's is finished.

A super order is an entry with a target leg and a stop-loss leg that exit what the entry trades,
one cancelling the other, the stop-loss trailing the price by a jump. The order-update socket
announces each leg under the super order's one order id (trading.orders.Leg tells them apart), but
no update carries the target, the stop-loss or the jump, and a leg changed before the entry trades
is announced by nothing at all: they are read from the broker's list of super orders
(`SuperOrderView`), when the entry is first seen, on every update of a leg, and periodically while
the super order is live.

The leader's exits are copied as they are, with two exceptions, both because every follower's
broker does the same on its own: a leg the exchange cancelled because the other one traded (one
cancels the other) is not a cancel to copy; and while the stop-loss trails (a jump above 0, the
same as before), its moves are the trail, which each follower's stop-loss makes itself from its
own entry price. So an explicit change of the leader's stop-loss while it trails is not told from
a trailing move; a change of the jump is copied, with the stop-loss of that moment.
"""
from __future__ import annotations

from dataclasses import dataclass

from trading.orders import OrderStatus, OrderTerms, OrderType

OPEN_LEG = ("PENDING", "TRANSIT", "PART_TRADED")  # a leg still working (or waiting for the entry)
TRADED_LEG = ("TRIGGERED", "TRADED")  # Dhan says TRIGGERED for an exit leg that traded
FINISHED = ("CLOSED", "CANCELLED", "REJECTED", "EXPIRED")


@dataclass(frozen=True)
class SuperOrderView:
    """One entry of the broker's list of super orders (`GET /super/orders`)."""

    order_id: str
    status: str  # the entry's status until it trades, then TRADED, and CLOSED once exited
    price: float  # the entry price as asked (also for a MARKET entry)
    target_price: float
    stop_loss_price: float
    trailing_jump: float
    target_leg: str  # PENDING, TRIGGERED, CANCELLED...
    stop_loss_leg: str
    correlation_id: str | None = None

    @property
    def live(self) -> bool:
        """Anything of it can still change: the entry, or a leg, is working or waiting."""
        return self.status not in FINISHED and (
            self.status in OPEN_LEG or self.target_leg in OPEN_LEG or self.stop_loss_leg in OPEN_LEG)


def leader_exits(view: SuperOrderView, known: OrderTerms) -> OrderTerms:
    """The leader's super order `known` with the exits `view` says it has now, as the copies
    follow them (see the module's note): a leg the leader cancelled is priced 0."""
    target, stop, jump = view.target_price, view.stop_loss_price, view.trailing_jump
    if view.target_leg == "CANCELLED" and view.stop_loss_leg not in TRADED_LEG:
        target = 0.0
    if view.stop_loss_leg == "CANCELLED" and view.target_leg not in TRADED_LEG:
        stop, jump = 0.0, 0.0
    if stop and jump > 0 and jump == known.trailing_jump and known.stop_loss_price > 0:
        stop = known.stop_loss_price  # the trail: each follower's stop-loss trails by itself
    if view.status in ("CANCELLED", "REJECTED", "EXPIRED"):  # the entry's fate is its own update's to copy
        target, stop, jump = known.target_price, known.stop_loss_price, known.trailing_jump
    price = view.price if known.order_type is OrderType.MARKET and view.price > 0 else known.price
    return known.with_changes(super_order=True, price=price, target_price=target, stop_loss_price=stop,
                              trailing_jump=jump)


def leg_open(status: OrderStatus | None) -> bool:
    """A follower's exit leg can still be modified or cancelled: on the book and working, or not
    placed yet (None: the entry has not traded, or its update has not arrived)."""
    return status is None or status.is_open
