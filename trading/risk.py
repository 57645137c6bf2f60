"""Pre-trade risk rules per follower, as pure functions over a limits object and a state snapshot.

Pure so they are trivially testable and so the sizing actor owns all state: it builds a
`RiskState` from positions, fills and its own record of placements, and asks `check()` before
each follower order. A breach names the rule by its config key, which is also the skip reason.

Rules and their config keys (every limit is optional; None/absent means "no limit"):

==================================  =========================================================
config key                          rule
==================================  =========================================================
max_orders_per_minute               orders in the 60 s before `now` (every order, exits too:
                                    it is the runaway-loop guard)
max_daily_loss                      rupees; realised + unrealised P&L today <= -limit blocks
                                    risk-increasing orders (and `daily_loss_breached` -> the
                                    kill switch)
max_order_value                     quantity * price of one order, rupees
max_quantity_per_instrument         |net position after the order|, units
max_open_positions                  distinct instruments with a non-zero position; only an order
                                    that opens a new one is refused
max_capital_share_per_instrument    |net position after| * price / capital, a fraction (0, 1]
==================================  =========================================================

Orders that only reduce an existing position (a sell against a long, a buy against a short,
never crossing zero) are exits: blocking them would raise risk, so they are checked against
`max_orders_per_minute` only. Rules are evaluated in the order of the table; the first breach
is reported. One more refusal is not a limit: "price_unknown" when a value rule is configured
but the order has no positive reference price to value it with.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, fields
from typing import Any, Mapping, Sequence

from trading.orders import OrderTerms, Side

PositionKey = tuple[str, str]  # (exchange_segment, security_id)


def position_key(terms: OrderTerms) -> PositionKey:
    """Security ids are unique per segment, not across segments."""
    return (terms.exchange_segment, str(terms.security_id))


_INTEGER_LIMITS = ("max_open_positions", "max_quantity_per_instrument", "max_orders_per_minute")


@dataclass(frozen=True)
class RiskLimits:
    max_order_value: float | None = None
    max_open_positions: int | None = None
    max_quantity_per_instrument: int | None = None
    max_orders_per_minute: int | None = None
    max_capital_share_per_instrument: float | None = None  # fraction of capital, 0 < x <= 1
    max_daily_loss: float | None = None  # rupees, positive

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0):
                raise ValueError(f"risk.{f.name}: must be a positive number, got {value!r}")
        for name in _INTEGER_LIMITS:
            value = getattr(self, name)
            if value is not None and value != int(value):
                raise ValueError(f"risk.{name}: must be a whole number, got {value!r}")
        share = self.max_capital_share_per_instrument
        if share is not None and share > 1:
            raise ValueError(f"risk.max_capital_share_per_instrument: a fraction <= 1, got {share!r}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> "RiskLimits":
        """Build from a config section; unknown keys are an error so a typo never disables a rule."""
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"risk: unknown keys {unknown}; known: {sorted(known)}")
        return cls(**{k: v for k, v in data.items() if v is not None})

    @functools.cached_property
    def enabled(self) -> bool:
        # asked for every copy sized; the limits never change (frozen), so answered once
        return any(getattr(self, f.name) is not None for f in fields(self))


@dataclass(frozen=True)
class RiskState:
    """A snapshot of one follower, taken just before the order is checked.

    `positions`: signed net quantity per (segment, security id), long > 0, short < 0. Folding
    working (unfilled) orders in is the caller's choice; counting them is the safer one.
    `recent_orders`: placement times in seconds on the same clock as `check(..., now)`.
    `capital`: the follower's capital for the share rule (funds plus holdings, or configured).
    """

    positions: Mapping[PositionKey, int] = field(default_factory=dict)
    recent_orders: Sequence[float] = ()
    capital: float = 0.0
    realised_pnl: float = 0.0  # today
    unrealised_pnl: float = 0.0  # today, marked to market

    @property
    def pnl_today(self) -> float:
        return self.realised_pnl + self.unrealised_pnl

    @property
    def open_positions(self) -> int:
        return sum(1 for qty in self.positions.values() if qty)


@dataclass(frozen=True)
class RiskVerdict:
    allowed: bool
    rule: str | None  # the config key breached, or "price_unknown"
    detail: str


_OK = RiskVerdict(True, None, "within risk limits")


def daily_loss_breached(limits: RiskLimits, state: RiskState) -> bool:
    """True once today's loss reaches the limit; the caller turns the kill switch on."""
    return limits.max_daily_loss is not None and -state.pnl_today >= limits.max_daily_loss


def orders_in_last_minute(state: RiskState, now: float) -> int:
    return sum(1 for t in state.recent_orders if now - 60.0 < t <= now)


def is_exit(before: int, signed_qty: int) -> bool:
    """True when the order only reduces the position, never crossing zero."""
    after = before + signed_qty
    return (before > 0 and signed_qty < 0 and after >= 0) or (before < 0 and signed_qty > 0 and after <= 0)


def side_sign(terms: OrderTerms) -> int:
    """How an order of `terms` moves its position: 1 for a BUY, -1 for a SELL."""
    return 1 if terms.side == Side.BUY else -1


def reduces(terms: OrderTerms, before: int | None) -> bool:
    """Whether an order of `terms` only reduces the position `before` it (None: not known)."""
    return before is not None and is_exit(before, side_sign(terms) * terms.quantity)


def surely_held(one: int, other: int) -> int:
    """Of two readings of one position, what both say is held: the one nearer zero, or nothing
    when they are on opposite sides."""
    if one * other <= 0:
        return 0
    return one if abs(one) < abs(other) else other


def check(limits: RiskLimits, state: RiskState, order: OrderTerms, price: float, now: float) -> RiskVerdict:
    """Check one follower order against every rule.

    `price` is the reference price per unit: the limit price, or the last traded price for a
    market order. When a value rule is configured and `price` is not positive the order is
    refused with rule "price_unknown" rather than valued at zero.
    """
    signed = order.quantity if order.side == Side.BUY else -order.quantity
    key = position_key(order)
    before = int(state.positions.get(key, 0))
    after = before + signed

    per_minute = limits.max_orders_per_minute
    if per_minute is not None:
        count = orders_in_last_minute(state, now)
        if count >= per_minute:
            return RiskVerdict(False, "max_orders_per_minute",
                               f"{count} orders in the last 60 s; limit {per_minute}")
    if is_exit(before, signed):
        return RiskVerdict(True, None, f"exit: position {before} -> {after}")

    if daily_loss_breached(limits, state):
        return RiskVerdict(False, "max_daily_loss",
                           f"P&L today {state.pnl_today:.2f}; limit -{limits.max_daily_loss:.2f}")
    value_rules = limits.max_order_value is not None or limits.max_capital_share_per_instrument is not None
    if value_rules and not (price > 0 and math.isfinite(price)):
        return RiskVerdict(False, "price_unknown", f"no positive reference price ({price!r}) to value the order")

    if limits.max_order_value is not None:
        value = order.quantity * price
        if value > limits.max_order_value:
            return RiskVerdict(False, "max_order_value",
                               f"order value {value:.2f} ({order.quantity} x {price:.2f}) > {limits.max_order_value:.2f}")
    if limits.max_quantity_per_instrument is not None and abs(after) > limits.max_quantity_per_instrument:
        return RiskVerdict(False, "max_quantity_per_instrument",
                           f"position {before} -> {after} in {key[1]}; limit {limits.max_quantity_per_instrument}")
    if limits.max_open_positions is not None and before == 0 and after != 0:
        count = state.open_positions
        if count >= limits.max_open_positions:
            return RiskVerdict(False, "max_open_positions",
                               f"{count} open positions; a new one in {key[1]} would exceed {limits.max_open_positions}")
    share_limit = limits.max_capital_share_per_instrument
    if share_limit is not None:
        exposure = abs(after) * price
        if state.capital <= 0:
            return RiskVerdict(False, "max_capital_share_per_instrument", "capital is not known")
        share = exposure / state.capital
        if share > share_limit:
            return RiskVerdict(False, "max_capital_share_per_instrument",
                               f"{key[1]} exposure {exposure:.2f} is {share:.1%} of capital {state.capital:.2f}; "
                               f"limit {share_limit:.1%}")
    return _OK


def exit_quantity(leader_position_before: int, leader_exit_qty: int, follower_position: int, lot_size: int) -> int:
    """Units the follower should exit when the leader reduces a position.

    The follower reduces its own position by the fraction the leader reduced its:
    `leader_exit_qty / |leader_position_before|`, capped at 1 (a leader order that goes through
    zero is an exit of everything plus a new entry; the caller copies the excess as an entry).
    The result is rounded to the nearest whole lot (half a lot rounds up: an exit lowers risk),
    never exceeds what the follower holds, and is 0 when the follower holds nothing on the
    leader's side (it never opens a reverse position). A full close exits the whole holding even
    if that is not a whole number of lots. Signs: positions are signed (short < 0), the exit
    quantity is positive; its side is the opposite of the follower's position.
    """
    lot = max(1, int(lot_size))
    if leader_position_before == 0 or leader_exit_qty <= 0 or follower_position == 0:
        return 0
    if (leader_position_before > 0) != (follower_position > 0):
        return 0  # the follower is on the other side: reducing the leader's side would reverse it
    held = abs(follower_position)
    if leader_exit_qty >= abs(leader_position_before):
        return held
    units = held * leader_exit_qty / abs(leader_position_before)
    lots = math.floor(units / lot + 0.5 + 1e-9)
    return min(lots * lot, held)
