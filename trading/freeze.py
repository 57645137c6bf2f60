"""Freeze quantities and slices: the most units of a derivative the exchange takes in one order,
and how a larger copy is cut into orders within it.

The exchanges set a freeze quantity per underlying and revise it by circular; Dhan's instrument
master does not carry it. So the copier keeps a table (DEFAULT_FREEZE_QUANTITIES: NSE's and BSE's
limits for index derivatives as revised on 1 Feb 2026), which config key `freeze_limits` extends
or overrides. An underlying neither names is not limited (stock derivatives, whose limits NSE
sets contract by contract, and equities, which have none): their copies are sent whole, and a
refusal is the broker's as before.

A copy above its freeze quantity becomes slices, each the largest whole number of lots within
the limit, the remainder last (3000 NIFTY units, limit 1800: 1800 + 1200). When the leader
changes the quantity, `reslice` keeps the slices that exist and resizes them from the first on.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from trading.instruments import Instrument

# (exchange segment, underlying) -> units per order. Sources: NSE circular of 29 Aug 2025 and the
# revisions since (see paper/README.md, which keeps the same table for the paper exchange).
DEFAULT_FREEZE_QUANTITIES: dict[tuple[str, str], int] = {
    ("NSE_FNO", "NIFTY"): 1800,
    ("NSE_FNO", "BANKNIFTY"): 600,
    ("NSE_FNO", "FINNIFTY"): 1800,
    ("NSE_FNO", "MIDCPNIFTY"): 2800,
    ("NSE_FNO", "NIFTYNXT50"): 600,
    ("BSE_FNO", "SENSEX"): 1000,
    ("BSE_FNO", "BANKEX"): 900,
}
FNO_SEGMENTS = ("NSE_FNO", "BSE_FNO")


@dataclass(frozen=True)
class FreezeLimits:
    """The freeze quantity table: the shipped defaults with `overrides` on top ((segment,
    underlying) -> units, or None for no limit)."""

    overrides: Mapping[tuple[str, str], int | None] = field(default_factory=dict)

    def limit(self, instrument: Instrument) -> int | None:
        """Units one order of `instrument` may carry at most (None: no limit)."""
        key = (instrument.exchange_segment, (instrument.underlying or instrument.symbol).upper())
        if key in self.overrides:
            return self.overrides[key]
        return DEFAULT_FREEZE_QUANTITIES.get(key)

    def largest_slice(self, instrument: Instrument) -> int | None:
        """The most one slice may carry: whole lots within the freeze quantity (None: no limit)."""
        limit = self.limit(instrument)
        if limit is None:
            return None
        lot = max(1, instrument.lot_size)
        return max(lot, limit // lot * lot)

    def slices(self, instrument: Instrument, quantity: int) -> list[int]:
        return slice_sizes(quantity, self.largest_slice(instrument))


def slice_sizes(quantity: int, largest: int | None) -> list[int]:
    """`quantity` cut into orders of `largest`, the remainder last; one order when it fits."""
    if largest is None or quantity <= largest:
        return [quantity]
    full, rest = divmod(quantity, largest)
    return [largest] * full + ([rest] if rest else [])


@dataclass(frozen=True)
class Slice:
    """A slice of a copy as it stands: its quantity, what of it filled, and whether it is still
    live (placed or to be placed; a closed slice keeps what it filled and no more)."""

    quantity: int
    filled: int = 0
    live: bool = True


def reslice(quantity: int, slices: list[Slice], largest: int | None) -> list[int]:
    """The quantity of each slice after the copy's quantity became `quantity`: one entry per slice
    in `slices` (the same order), then one per slice to add. Closed slices keep what they filled;
    live slices, from the first, take up to `largest` each (never less than they filled) until
    `quantity` is covered; a live slice left with nothing gets 0 (it is cancelled, or its
    quantity is cut to what it filled), and what the live slices cannot take becomes new slices."""
    remaining = quantity - sum(s.filled for s in slices if not s.live)
    sizes: list[int] = []
    for s in slices:
        if not s.live:
            sizes.append(s.quantity)
            continue
        size = max(s.filled, min(remaining, largest if largest is not None else remaining))
        sizes.append(max(size, 0))
        remaining -= size
    if remaining > 0:
        sizes += slice_sizes(remaining, largest)
    return sizes
