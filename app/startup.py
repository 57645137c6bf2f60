"""Opening what the config names (the storage file, the metrics port), for the copier and the
operator commands alike. A failure is a `ConfigError` naming the key and the path or port, so the
command line prints one line and exits 2 instead of a traceback."""
from __future__ import annotations

import errno
from typing import Any

from copier.config import Config, key_error
from observability import metrics
from storage import DATABASE_ERRORS, Store, StorageUnavailable


def open_store(config: Config, **kwargs: Any) -> Store:
    """The store at `storage.path`; keyword arguments go to `Store`."""
    try:
        return Store(config.storage.path, **kwargs)
    except (OSError, *DATABASE_ERRORS, StorageUnavailable) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise key_error(config, "storage.path", f"cannot open {config.storage.path!r}: {reason}") from None


def serve_metrics(config: Config) -> int:
    """Start the /metrics endpoint on `metrics.host`:`metrics.port`; returns the bound port."""
    try:
        return metrics.serve(config.metrics.port, config.metrics.host)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        key = "metrics.port" if exc.errno in (errno.EADDRINUSE, errno.EACCES) else "metrics.host"
        raise key_error(config, key, f"cannot listen on {config.metrics.host}:{config.metrics.port}: {reason}") from None
