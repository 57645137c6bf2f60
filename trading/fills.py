"""Fill arithmetic: what one snapshot adds to an order's fills, and a copy's slippage.

Order updates are snapshots (cumulative filled quantity and average price), so a fill is the
difference between two of them.
"""
from __future__ import annotations

from typing import NamedTuple


class Fill(NamedTuple):
    quantity: int
    price: float


def fill_delta(filled_before: int, avg_before: float, filled_now: int, avg_now: float,
               last_fill_price: float = 0.0) -> Fill | None:
    """The fill between a snapshot with `filled_before` at `avg_before` and one with `filled_now`
    at `avg_now` (None when nothing more filled). Its price comes from the two averages, or the
    last fill's price when the later snapshot has no average."""
    quantity = filled_now - filled_before
    if quantity <= 0:
        return None
    if avg_now and filled_now:
        price = (avg_now * filled_now - avg_before * filled_before) / quantity
    else:
        price = last_fill_price
    return Fill(quantity, round(price, 4))


def slippage(side: str, copy_avg: float, leader_avg: float) -> float | None:
    """(copy's average - leader's average) / leader's average, signed against the follower: positive
    when the copy bought dearer or sold cheaper. None without both averages."""
    if not leader_avg or not copy_avg:
        return None
    sign = 1.0 if side == "BUY" else -1.0
    return sign * (copy_avg - leader_avg) / leader_avg
