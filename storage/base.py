"""What a repository needs of the store: its connection and its transactions.

A protocol, so that the store, which holds every repository, and the repositories, which run in
its transactions, do not import each other."""
from __future__ import annotations

from typing import Any, Callable, Protocol, TypeVar

import peewee as pw

T = TypeVar("T")


class Transactions(Protocol):
    db: pw.SqliteDatabase
    settings: Any  # the settings repository: a run of the reconciler records its summary there

    def read(self, fn: Callable[[], T]) -> T: ...

    def write(self, fn: Callable[[], T]) -> T: ...

    def in_write(self) -> bool: ...

    def create(self, model: type[pw.Model], **fields: Any) -> pw.Model: ...
