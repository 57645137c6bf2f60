"""Reading copies beside the process that writes them, through a read-only connection of its own:
WAL lets it read while the copier writes, and it never takes the copier's store lock, so what it
reads does not disturb what it measures (bench/)."""
from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path


def _connect(path: str | Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)


def copy_latencies(path: str | Path, leader_order_ids: list[str]) -> list[tuple[str, str, float]]:
    """(leader order id, follower, latency in ms) of each copy of these leader orders that was sent."""
    if not leader_order_ids:
        return []
    with closing(_connect(path)) as conn:
        return [(leader_order_id, follower, float(latency)) for leader_order_id, follower, latency in conn.execute(
            'SELECT "leader_order_id", "follower", "latency_ms" FROM "follower_order" WHERE "latency_ms" IS NOT NULL '
            'AND "leader_order_id" IN (SELECT value FROM json_each(?))', (json.dumps(leader_order_ids),))]


def unsent_copies(path: str | Path, leader_order_ids: list[str], limit: int = 5) -> list[tuple[str, str, str]]:
    """(follower, status, skip reason or last error) of up to `limit` copies of these leader orders
    that were not sent."""
    with closing(_connect(path)) as conn:
        return conn.execute(
            'SELECT "follower", "status", COALESCE("skip_reason", "last_error", \'\') FROM "follower_order" '
            'WHERE "latency_ms" IS NULL AND "leader_order_id" IN (SELECT value FROM json_each(?)) LIMIT ?',
            (json.dumps(leader_order_ids), limit)).fetchall()


def skips(path: str | Path, limit: int = 3) -> list[tuple[str, str]]:
    """(reason, detail) of up to `limit` recorded skips."""
    with closing(_connect(path)) as conn:
        return conn.execute('SELECT "reason", "detail" FROM "skip" LIMIT ?', (limit,)).fetchall()


def setting(path: str | Path, key: str) -> str | None:
    """A stored setting (None when unset, or when the file has no settings yet)."""
    try:
        with closing(_connect(path)) as conn:
            row = conn.execute('SELECT "value" FROM "setting" WHERE "key" = ?', (key,)).fetchone()
    except sqlite3.OperationalError:  # not made yet by the process that owns it
        return None
    return row[0] if row else None


def sent_copies(path: str | Path) -> int:
    """Copies whose first placement was sent and answered (they have a latency)."""
    with closing(_connect(path)) as conn:
        return int(conn.execute('SELECT COUNT(*) FROM "follower_order" WHERE "latency_ms" IS NOT NULL').fetchone()[0])


def copy_orders(path: str | Path) -> list[tuple[str, str, str, float | None]]:
    """(leader order id, follower, broker order id, latency in ms or None) of every copy placed."""
    with closing(_connect(path)) as conn:
        return [(str(leader), str(follower), str(broker), None if latency is None else float(latency))
                for leader, follower, broker, latency in conn.execute(
                    'SELECT "leader_order_id", "follower", "broker_order_id", "latency_ms" FROM "follower_order" '
                    'WHERE "broker_order_id" IS NOT NULL')]


def traded_copies(path: str | Path) -> int:
    """How many copies the copier has seen traded (their TRADED update applied and stored)."""
    with closing(_connect(path)) as conn:
        return int(conn.execute('SELECT COUNT(*) FROM "follower_order" WHERE "status" = \'TRADED\'').fetchone()[0])


def skipped_orders(path: str | Path, follower: str, reason: str) -> list[str]:
    """The leader orders whose copy for `follower` was recorded as skipped for `reason` (each
    skip recorded, so a leader order twice in the list was skipped twice)."""
    with closing(_connect(path)) as conn:
        return [row[0] for row in conn.execute('SELECT "leader_order_id" FROM "skip" WHERE "follower" = ? AND '
                                               '"reason" = ?', (follower, reason))]
