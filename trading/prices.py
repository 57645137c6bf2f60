"""What a leader order is valued at, for sizing, the capital check and the risk rules.

An order names its own price: its limit price, or the trigger of a stop-market order (it executes
near it). A MARKET order names none: it is valued at a market quote, or at the price the leader's
order traded at (it fills within moments), whichever is known first; with neither, at nothing, and
a value rule then refuses it as `price_unknown`. These are the pure rules; actors/quotes.py finds
quotes and the order actor waits for them.
"""
from __future__ import annotations

from dataclasses import dataclass

from trading.orders import OrderTerms, OrderUpdate

QUOTE, LEADER_FILL, NONE = "quote", "leader_fill", "none"  # what valued an order that names no price


@dataclass(frozen=True)
class Quote:
    """The last traded price of one instrument, as the broker's market quote reported it."""

    exchange_segment: str
    security_id: str
    last_price: float


_NOTES = {QUOTE: "valued at the market quote", LEADER_FILL: "valued at the leader's fill",
          NONE: "no market quote and no fill of the leader's order to value it"}


def own_price(terms: OrderTerms) -> float:
    """The price the order names; 0 for a MARKET order."""
    return terms.price or terms.trigger_price


def traded_price(update: OrderUpdate) -> float:
    """The price the order traded at so far; 0 before its first fill."""
    return update.avg_price or update.last_fill_price


def awaits_price(update: OrderUpdate) -> bool:
    """True while nothing values the order: it names no price, has not traded, and is still open
    (a closed one is not copied, so there is nothing to wait for)."""
    return own_price(update.terms) <= 0 and traded_price(update) <= 0 and update.status.is_open


def price_note(terms: OrderTerms, reference: float, source: str, price: float) -> str:
    """For a refusal's detail: how an order that names no price was valued at `price` (empty when
    it names one). `reference` and `source` are what the order actor found."""
    if own_price(terms) > 0:
        return ""
    if reference > 0 and price == reference:
        return _NOTES.get(source, "")
    return "valued at an earlier order's price" if price > 0 else _NOTES[NONE]
