"""Record of every REST call received, so tests can count what a client actually sent."""
from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any


class RequestLog:
    def __init__(self, maxlen: int = 200_000) -> None:
        self._items: deque[dict[str, Any]] = deque(maxlen=maxlen)
        self._lock = threading.Lock()

    def add(self, client_id: str | None, method: str, path: str, route: str, status: int,
            error_code: str | None, arrived: float | None = None, order_id: str | None = None,
            error: str | None = None) -> None:
        """`arrived`: when the request reached its handler (`t` is when it was answered);
        `order_id`: the order a placement created (benchmarks time copies by it); `error`: the
        refusal's message (tests tell a reused correlation id from other input errors by it)."""
        entry = {"t": time.time(), "client_id": client_id, "method": method, "path": path,
                 "route": route, "status": status, "error_code": error_code, "arrived": arrived,
                 "order_id": order_id, "error": error}
        with self._lock:
            self._items.append(entry)

    def entries(self, client_id: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(e) for e in self._items if client_id is None or e["client_id"] == client_id]
