"""Per-account sliding-window limits on order APIs, as Dhan enforces them (HTTP 429, DH-904)."""
from __future__ import annotations

import threading
from collections import deque

from . import realtime

WINDOWS = {"per_second": 1.0, "per_minute": 60.0, "per_hour": 3600.0, "per_day": 86400.0}
DEFAULT_LIMITS = {"per_second": 10, "per_minute": 250, "per_hour": 1000, "per_day": 7000}


class RateLimiter:
    """`allow(client_id)` counts an order call if every window has room; a limit of None is unlimited."""

    def __init__(self, limits: dict[str, int | None] | None = None) -> None:
        merged = dict(DEFAULT_LIMITS)
        for k, v in (limits or {}).items():
            if k not in WINDOWS:
                raise ValueError(f"unknown rate window {k!r}; use {sorted(WINDOWS)}")
            merged[k] = v
        self.limits = {k: v for k, v in merged.items() if v is not None}
        self._hits: dict[str, dict[str, deque[float]]] = {}
        self._exempt: set[str] = set()
        self._lock = threading.Lock()

    def exempt(self, client_id: str) -> None:
        """No limits for this account (a benchmark's leader pacing itself on its own clock)."""
        with self._lock:
            self._exempt.add(str(client_id))

    def allow(self, client_id: str) -> bool:
        now = realtime.monotonic()
        with self._lock:
            if client_id in self._exempt:
                return True
            hits = self._hits.setdefault(client_id, {k: deque() for k in self.limits})
            for name, limit in self.limits.items():
                q, horizon = hits[name], now - WINDOWS[name]
                while q and q[0] <= horizon:
                    q.popleft()
                if len(q) >= limit:
                    return False
            for q in hits.values():
                q.append(now)
            return True
