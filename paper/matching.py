"""Prices and matching: a seeded random walk inside each circuit band, and the rule that
decides whether (and how much of) an open order trades at the last price.

Matching is against the last traded price only (no depth): enough for a copier to see
fills, partial fills, stop triggers and IOC remainders the way Dhan reports them."""
from __future__ import annotations

import random
from dataclasses import dataclass

from .book import Order
from .instruments import Instrument


def round_tick(price: float, tick: float) -> float:
    return round(round(price / tick) * tick, 2)


def on_tick(price: float, tick: float) -> bool:
    return abs(price / tick - round(price / tick)) < 1e-6


@dataclass
class Quote:
    ltp: float
    lower: float
    upper: float
    halted: bool = False
    held: bool = False      # no counterparty: orders rest unfilled (tests of a leader order that never fills)
    hidden: bool = False    # no data: the market quote API leaves the instrument out


class PriceBoard:
    """Last prices, circuit bands and halts of every instrument."""

    def __init__(self, instruments: dict[str, Instrument], seed: int) -> None:
        self.instruments = instruments
        self.quotes: dict[str, Quote] = {}
        self._rng = random.Random(seed)
        for sid, ins in instruments.items():
            band = 0.2 if ins.is_equity or ins.is_future else 10.0   # options: effectively no band
            p = ins.start_price
            self.quotes[sid] = Quote(p, round_tick(max(ins.tick_size, p * (1 - min(band, 0.95))), ins.tick_size),
                                     round_tick(p * (1 + band), ins.tick_size))

    def walk(self) -> list[str]:
        """Move every price one small step (about 0.05%); returns the ids that changed."""
        moved = []
        for sid, q in self.quotes.items():
            if q.halted:
                continue
            ins = self.instruments[sid]
            step = q.ltp * self._rng.gauss(0.0, 0.0005)
            new = min(q.upper, max(q.lower, round_tick(q.ltp + step, ins.tick_size)))
            if new != q.ltp:
                q.ltp = new
                moved.append(sid)
        return moved

    def in_band(self, sid: str, price: float) -> bool:
        q = self.quotes[sid]
        return q.lower <= price <= q.upper


def fill_now(order: Order, ltp: float, tranche: int) -> tuple[int, float] | None:
    """(qty, price) the order trades now at `ltp`, or None. Arms SL/SLM triggers as a side effect."""
    if order.order_type in ("STOP_LOSS", "STOP_LOSS_MARKET") and not order.triggered:
        crossed = ltp >= order.trigger_price if order.transaction_type == "BUY" else ltp <= order.trigger_price
        if not crossed:
            return None
        order.triggered = True
    if order.order_type in ("LIMIT", "STOP_LOSS"):
        ok = ltp <= order.price if order.transaction_type == "BUY" else ltp >= order.price
        if not ok:
            return None
    qty = min(order.remaining, max(1, tranche))
    return (qty, ltp) if qty > 0 else None
