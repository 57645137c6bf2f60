"""Opening what the config names (the storage file, the metrics port), for the copier and the
operator commands alike. A failure is a `ConfigError` naming the key and the path or port, so the
command line prints one line and exits 2 instead of a traceback."""
from __future__ import annotations

import errno
import json
from typing import Any

from app import metrics
from app.config import Config, ConfigError
from storage import DATABASE_ERRORS, Store, StorageUnavailable


def key_error(config: Config, key: str, problem: str) -> ConfigError:
    """A ConfigError for `key`, prefixed with the config file like the errors of `load`."""
    return ConfigError(f"{config.source}: {key}: {problem}" if config.source else f"{key}: {problem}")


def open_store(config: Config, **kwargs: Any) -> Store:
    """The store at `storage.path`; keyword arguments go to `Store`."""
    try:
        return Store(config.storage_path, **kwargs)
    except (OSError, *DATABASE_ERRORS, StorageUnavailable) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise key_error(config, "storage.path", f"cannot open {config.storage_path!r}: {reason}") from None


def serve_metrics(config: Config) -> int:
    """Start the /metrics endpoint on `metrics.host`:`metrics.port`; returns the bound port."""
    try:
        return metrics.serve(config.metrics_port, config.metrics_host)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        key = "metrics.port" if exc.errno in (errno.EADDRINUSE, errno.EACCES) else "metrics.host"
        raise key_error(config, key, f"cannot listen on {config.metrics_host}:{config.metrics_port}: {reason}") from None


ACCOUNTS_SETTING = "accounts"


def record_accounts(store: Store, config: Config) -> None:
    """Record the accounts and URLs the copier uses (never tokens), for operator commands in other
    processes: in paper mode they exist only in the running process."""
    accounts = [config.leader, *config.followers]
    store.settings.set(ACCOUNTS_SETTING, json.dumps([
        {"name": a.name, "client_id": a.client_id, "api_base_url": a.api_base_url,
         "order_update_url": a.order_update_url} for a in accounts]))


def recorded_accounts(store: Store) -> dict[str, dict[str, str]]:
    """What `record_accounts` stored, by account name ({} when no copier has started)."""
    return {a["name"]: a for a in json.loads(store.settings.get(ACCOUNTS_SETTING) or "[]")}
