"""Sizing rules: the follower quantity as a pure function of the leader order.

Purity matters: a modification re-sizes from the new leader quantity with the same rule, so
50 -> 100 -> 50 on the leader gives the same follower quantity as it started with.
The capital check and reservation live in the sizing actor, not here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

STRATEGIES = ("fixed_ratio", "capital_proportional", "fixed_lots", "risk_based")


@dataclass(frozen=True)
class SizingRule:
    strategy: str = "fixed_ratio"
    ratio: float = 1.0  # fixed_ratio
    lots: int = 1  # fixed_lots: lots for derivatives, shares for equities
    risk_per_trade: float = 0.0  # risk_based: rupees at risk per order
    stop_loss_pct: float = 1.0  # risk_based: assumed stop distance when the order has no trigger
    max_quantity: int | None = None  # cap in units
    round_up_to_one_lot: bool = False  # a size that rounds to zero becomes one lot only if set


@dataclass(frozen=True)
class Sized:
    quantity: int  # units
    disclosed_qty: int
    skip_reason: str | None = None
    detail: str = ""


def _whole(units: float, lot: int) -> int:
    """Round down to whole lots (a follower never gets more than its rule allows)."""
    return int(math.floor(units / lot + 1e-9)) * lot


def size_quantity(rule: SizingRule, leader_qty: int, lot_size: int, price: float,
                  trigger_price: float, capital_ratio: float | None) -> int:
    """The follower quantity in units, in whole lots, before risk caps; may be 0."""
    lot = max(1, lot_size)
    if rule.strategy == "fixed_ratio":
        units = leader_qty * rule.ratio
    elif rule.strategy == "capital_proportional":
        units = leader_qty * (capital_ratio or 0.0)
    elif rule.strategy == "fixed_lots":
        units = rule.lots * lot
    elif rule.strategy == "risk_based":
        per_unit = abs(price - trigger_price) if trigger_price > 0 and price > 0 else price * rule.stop_loss_pct / 100
        units = rule.risk_per_trade / per_unit if per_unit > 0 else 0
        units = min(units, leader_qty * 10)  # never wildly more than the leader
    else:
        raise ValueError(f"unknown sizing strategy {rule.strategy!r}")
    qty = _whole(units, lot)
    if rule.max_quantity is not None:
        qty = min(qty, _whole(rule.max_quantity, lot))
    if qty == 0 and rule.round_up_to_one_lot and units > 0:
        qty = lot
    return qty


def scale_disclosed(leader_qty: int, leader_disclosed: int, sized_qty: int, lot_size: int) -> int:
    """Keep the leader's disclosed ratio (an iceberg stays an iceberg), in whole lots, never below
    the exchange's minimum of 10% of the order, never above the order."""
    if leader_disclosed <= 0 or leader_qty <= 0 or sized_qty <= 0:
        return 0
    lot = max(1, lot_size)
    wanted = sized_qty * leader_disclosed / leader_qty
    minimum = sized_qty * 0.10
    units = max(wanted, minimum)
    disclosed = int(math.ceil(units / lot - 1e-9)) * lot
    return min(disclosed, sized_qty)


def size_order(rule: SizingRule, leader_qty: int, leader_disclosed: int, lot_size: int,
               price: float, trigger_price: float, capital_ratio: float | None) -> Sized:
    """Quantity and disclosed quantity, or a skip with its reason."""
    if leader_qty <= 0:
        return Sized(0, 0, "invalid_quantity", f"leader quantity {leader_qty}")
    if rule.strategy == "capital_proportional" and not capital_ratio:
        return Sized(0, 0, "capital_unknown", "leader or follower capital not known yet")
    qty = size_quantity(rule, leader_qty, lot_size, price, trigger_price, capital_ratio)
    if qty <= 0:
        return Sized(0, 0, "size_rounds_to_zero",
                     f"{rule.strategy} on leader qty {leader_qty} (lot {lot_size}) rounds to 0 lots")
    return Sized(qty, scale_disclosed(leader_qty, leader_disclosed, qty, lot_size))


# Margin an order blocks, as a fraction of its notional, for the capital check. The broker's
# own margin check is the final word; this estimate only keeps concurrent copies from
# over-committing before the broker has seen them.
DEFAULT_MARGIN_FRACTIONS = {"CNC": 1.0, "MTF": 0.5, "INTRADAY": 0.2, "MARGIN": 0.4, "CO": 0.2, "BO": 0.2}
DERIVATIVE_SHORT_FRACTION = 0.15


def estimate_margin(product: str, side: str, quantity: int, price: float, is_option: bool,
                    is_derivative: bool, fractions: dict[str, float] | None = None) -> float:
    """Rupees an order is expected to block: option buys pay the premium; futures and option sales
    block a fraction of notional; equities block by product."""
    notional = quantity * max(price, 0.0)
    if is_option and side == "BUY":
        return notional
    if is_derivative:
        return notional * DERIVATIVE_SHORT_FRACTION
    return notional * (fractions or DEFAULT_MARGIN_FRACTIONS).get(product, 1.0)
