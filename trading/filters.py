"""Per-follower filters (config `followers[].filters`): which leader orders a follower copies at all,
and its copy window (`followers[].copy_window`): the hours in which it takes new positions.
A filtered order is a recorded skip naming the filter, never a silent drop."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, time

from trading.calendar import IST
from trading.instruments import Instrument

OUTSIDE_COPY_WINDOW = "outside_copy_window"  # the skip reason


@dataclass(frozen=True)
class Filters:
    options_only: bool = False
    allow_segments: frozenset[str] = field(default_factory=frozenset)  # e.g. NSE_FNO; empty: all
    deny_segments: frozenset[str] = field(default_factory=frozenset)
    allow_instruments: frozenset[str] = field(default_factory=frozenset)  # EQUITY, OPTIDX, FUTIDX, ...
    deny_instruments: frozenset[str] = field(default_factory=frozenset)
    allow_symbols: frozenset[str] = field(default_factory=frozenset)  # trading symbol or underlying
    deny_symbols: frozenset[str] = field(default_factory=frozenset)

    KEYS = ("options_only", "allow_segments", "deny_segments", "allow_instruments", "deny_instruments",
            "allow_symbols", "deny_symbols")

    def refusal(self, instrument: Instrument) -> str | None:
        """The filter that refuses this instrument, or None when it may be copied."""
        names = {instrument.symbol.upper(), instrument.underlying.upper()}
        if self.options_only and not instrument.is_option:
            return "options_only"
        if self.allow_segments and instrument.exchange_segment not in self.allow_segments:
            return "allow_segments"
        if instrument.exchange_segment in self.deny_segments:
            return "deny_segments"
        if self.allow_instruments and instrument.instrument not in self.allow_instruments:
            return "allow_instruments"
        if instrument.instrument in self.deny_instruments:
            return "deny_instruments"
        if self.allow_symbols and not names & self.allow_symbols:
            return "allow_symbols"
        if names & self.deny_symbols:
            return "deny_symbols"
        return None


@dataclass(frozen=True)
class CopyWindow:
    """The hours, in exchange time (IST), in which a follower's copies of new leader orders are
    placed: from `start` up to, not including, `end`, on one day (no window across midnight).

    Only new positions wait for the window: an exit (an order that only reduces a position) is
    copied at any hour, since refusing it would leave the follower holding what the leader
    closed. Copies placed earlier follow the leader's modifications and cancels at any hour too;
    that is the caller's part (it asks only about new placements)."""

    start: time
    end: time

    def __post_init__(self) -> None:
        if not self.start < self.end:
            raise ValueError(f"start must be before end ({self.start:%H:%M} >= {self.end:%H:%M})")

    def refusal(self, at: datetime, exit: bool) -> str | None:
        """Why a copy decided at instant `at` (timezone-aware) is not placed, or None when it is."""
        if at.tzinfo is None or at.utcoffset() is None:
            raise ValueError("`at` must be timezone-aware (use trading.calendar.now())")
        local = at.astimezone(IST)
        if exit or self.start <= local.time() < self.end:
            return None
        return (f"new orders are copied {self.start:%H:%M}-{self.end:%H:%M} IST; "
                f"it is {local:%a %Y-%m-%d %H:%M:%S} IST")
