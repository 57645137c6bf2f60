"""Wall-clock-independent monotonic time that freezegun cannot freeze.

Tests freeze the *business* clock (sessions, timestamps) in the same process; rate
windows, fault timers and the event loop must keep running on real time or they stall.
freezegun swaps module attributes that are the real time functions, so the function is
kept inside a tuple where its scan does not reach."""
from __future__ import annotations

import asyncio
import time

_REAL = (time.monotonic,)


def monotonic() -> float:
    return _REAL[0]()


class RealTimeLoop(asyncio.SelectorEventLoop):
    """Event loop whose timers run on real time even while freezegun is active."""

    def time(self) -> float:
        return _REAL[0]()
