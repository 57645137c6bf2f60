"""Logging: readable lines in a terminal, one JSON object per line otherwise, tokens redacted.

Redaction is a filter on every handler, so no code path can log a token by accident:
every configured access token is registered at start, and anything shaped like a JWT is masked
even if it was never registered.
"""
from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time

_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")
_TOKEN_FIELD = re.compile(r"""(?i)((?:access[-_]?token|"token"|'token'|token=)\s*[:=]?\s*["']?)([^"'\s,}]+)""")
_secrets: set[str] = set()
_lock = threading.Lock()
MASK = "***"


def register_secret(secret: str | None) -> None:
    if secret and len(secret) >= 4:
        with _lock:
            _secrets.add(secret)


def redact(text: str) -> str:
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    text = _JWT.sub(MASK, text)
    return _TOKEN_FIELD.sub(lambda m: m.group(1) + MASK, text)


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if record.exc_info:
            formatted = logging.Formatter().formatException(record.exc_info)
            record.exc_text = redact(formatted)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
                 "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage()}
        for key in ("leader_order_id", "follower"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exception"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(entry)


def setup(level: str = "INFO", json_lines: bool | None = None, stream=None) -> logging.Handler:
    """Install one redacting handler on the root logger; returns it (tests attach their own too)."""
    stream = stream or sys.stderr
    if json_lines is None:
        json_lines = not stream.isatty()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if json_lines else
                         logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers = [h for h in root.handlers if not getattr(h, "_copytrader", False)]
    handler._copytrader = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("urllib3", "websocket", "aiohttp.access", "pykka"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return handler
