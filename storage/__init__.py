"""Durable state in SQLite (peewee, WAL): the inbound event log, leader and follower orders,
the per-order event store, fills, skips, dead letters, divergences and settings."""
from storage.store import Store, StorageDown, StorageLost, StorageUnavailable

__all__ = ["Store", "StorageDown", "StorageLost", "StorageUnavailable"]
