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
            error_code: str | None) -> None:
        entry = {"t": time.time(), "client_id": client_id, "method": method, "path": path,
                 "route": route, "status": status, "error_code": error_code}
        with self._lock:
            self._items.append(entry)

    def entries(self, client_id: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(e) for e in self._items if client_id is None or e["client_id"] == client_id]
