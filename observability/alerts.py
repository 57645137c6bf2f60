"""Alerts: levels and a cooldown per key (no floods), sent to the log, storage and a metric.

Channels beyond the log (webhook, Telegram) plug in as callables.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from observability import metrics

log = logging.getLogger("copytrader.alerts")
_LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR, "critical": logging.CRITICAL}


class Alerts:
    """Raise an alert by calling it: `alerts(level, key, message)`. `key` says what it is about
    (its part before ":" labels the metric); one alert per key per cooldown gets through.
    Thread-safe, and never raises.

        alerts = Alerts(record=store.alerts.record, channels=[WebhookChannel(url, background=True)])
        alerts("critical", "auth:f1", "follower f1: the broker refused its token")   # True: sent
        alerts("critical", "auth:f1", "follower f1: the broker refused its token")   # False: cooling down
    """

    def __init__(self, record: Callable[[str, str, str], None] | None = None, cooldown_seconds: float = 300.0,
                 channels: list[Callable[[str, str, str], None]] | None = None,
                 unrecorded: tuple[type[Exception], ...] = ()) -> None:
        """`unrecorded`: what `record` raises when the alert cannot be stored (storage down): logged
        as one warning line, since the alert itself may be about that."""
        self.record = record
        self.unrecorded = unrecorded
        self.cooldown = cooldown_seconds
        self.channels = channels or []
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def __call__(self, level: str, key: str, message: str) -> bool:
        """Raise an alert; False when the same key fired within the cooldown (suppressed)."""
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.cooldown:
                return False
            self._last[key] = now
        metrics.ALERTS.labels(level, key.split(":")[0]).inc()
        log.log(_LEVELS.get(level, logging.WARNING), "ALERT [%s] %s", level, message)
        if self.record:
            try:
                self.record(level, key, message)
            except self.unrecorded as exc:
                log.warning("alert not stored: %s", exc)
            except Exception:  # an alert must never take the caller down
                log.exception("could not store an alert")
        for channel in self.channels:
            try:
                channel(level, key, message)
            except Exception:
                log.exception("alert channel failed")
        return True
