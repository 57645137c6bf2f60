"""The alert log: every alert raised, as it was sent to the alert channels."""
from __future__ import annotations


from storage import models as m
from storage.base import Transactions



class AlertLog:
    def __init__(self, store: Transactions) -> None:
        self._store = store

    def record(self, level: str, key: str, message: str) -> None:
        self._store.write(lambda: self._store.create(m.Alert, level=level, key=key, message=message))
