"""Squaring a follower off: which market orders close its open positions, and whether the broker's
positions afterwards confirm it is flat. Pure: the square-off actor (actors/square_off.py) reads
the positions, stores and places the orders, and asks again.

    orders, left = closing_orders(positions, segments=("NSE_EQ",))
    cid = closing_correlation_id(run_id, "f1", orders[0])   # derived: looked up, never sent twice
    ...
    still_open(positions_now, segments)                     # [] once the broker shows it flat
"""
from __future__ import annotations

from typing import Collection, Iterable

from trading.account import Position
from trading.orders import OrderTerms, OrderType, Product, Side, Validity, correlation_id

# Products a plain market order closes. A cover or bracket order's position is closed through its
# own exit legs, which the copier does not manage: it is reported, not touched.
CLOSABLE = frozenset({Product.INTRADAY, Product.CNC, Product.MARGIN, Product.MTF})


def _in_scope(position: Position, segments: Collection[str]) -> bool:
    return position.net_qty != 0 and (not segments or position.exchange_segment in segments)


def describe(position: Position) -> str:
    product = position.product.value if position.product is not None else "unknown product"
    return f"{position.exchange_segment} {position.security_id} {product} net {position.net_qty:+d}"


def closing_orders(positions: Iterable[Position], segments: Collection[str] = ()) -> tuple[list[OrderTerms], list[str]]:
    """The market orders that close every open position (in `segments` only, when given), and a
    line for each open position they cannot close."""
    orders: list[OrderTerms] = []
    left: list[str] = []
    for position in sorted(positions, key=lambda p: (p.exchange_segment, p.security_id, str(p.product))):
        if not _in_scope(position, segments):
            continue
        if position.product not in CLOSABLE:
            left.append(f"{describe(position)}: not closed (close it by hand)")
            continue
        assert position.product is not None
        orders.append(OrderTerms(security_id=position.security_id, exchange_segment=position.exchange_segment,
                                 side=Side.SELL if position.net_qty > 0 else Side.BUY, product=position.product,
                                 order_type=OrderType.MARKET, validity=Validity.DAY, quantity=abs(position.net_qty)))
    return orders, left


def closing_correlation_id(run_id: int, follower: str, terms: OrderTerms) -> str:
    """The closing order's correlation id: one per run and position, so a restart or a lost answer
    finds the order at the broker instead of placing it again."""
    return correlation_id(f"square-off:{run_id}:{terms.exchange_segment}:{terms.security_id}:{terms.product.value}",
                          follower)


def still_open(positions: Iterable[Position], segments: Collection[str] = ()) -> list[str]:
    """The positions (in `segments`) the broker still shows open; [] confirms a follower flat."""
    return [describe(p) for p in sorted(positions, key=lambda p: (p.exchange_segment, p.security_id, str(p.product)))
            if _in_scope(p, segments)]
