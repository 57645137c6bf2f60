"""Per-follower filters (config `followers[].filters`): which leader orders a follower copies at all.
A filtered order is a recorded skip naming the filter, never a silent drop."""
from __future__ import annotations

from dataclasses import dataclass, field

from trading.instruments import Instrument


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
