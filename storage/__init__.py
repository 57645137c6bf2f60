"""Durable state in SQLite (peewee, WAL): the inbound event log, leader and follower orders,
the per-order event store, fills, skips, dead letters, divergences and settings.

`Store` is the connection, its transactions and their retries; what the copier stores and reads
goes through its repositories (`store.inbox`, `store.copies`, `store.settings`, ...), one
transaction per domain operation. No code outside this package writes SQL or touches the tables
(tests/test_storage_owns_sql.py)."""
from storage.store import (DATABASE_ERRORS, UNAVAILABLE_ERRORS, StorageDown, StorageLost, StorageUnavailable,
                           Store)

__all__ = ["DATABASE_ERRORS", "UNAVAILABLE_ERRORS", "Store", "StorageDown", "StorageLost", "StorageUnavailable"]
