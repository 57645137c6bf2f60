"""Reconcile runs: the divergences each run found between the brokers' books and storage, and
whether it repaired them."""
from __future__ import annotations

import time
from typing import Sequence

from storage import models as m
from storage.base import Transactions
from trading.reconcile import Divergence


RUNS = "reconcile_runs"  # settings: the number of the last run, and a line saying when and what it found
LAST_RUN = "last_reconcile"


class Divergences:
    def __init__(self, store: Transactions) -> None:
        self._store = store

    def record_run(self, found: Sequence[tuple[Divergence, bool]]) -> int:
        """A finished run's divergences, each with whether it was repaired, in one transaction with
        the run's number and summary. Returns the run's number."""
        settings = self._store.settings

        def effect() -> int:
            run_id = int(settings.get(RUNS, "0") or 0) + 1
            for divergence, repaired in found:
                m.Divergence.create(kind=divergence.kind, leader_order_id=divergence.leader_order_id,
                                    follower=divergence.follower, detail=divergence.detail, repaired=repaired,
                                    run_id=run_id)
            settings.set(RUNS, str(run_id))
            settings.set(LAST_RUN, f"{time.strftime('%Y-%m-%d %H:%M:%S')}, {len(found)} divergences")
            return run_id

        return self._store.write(effect)

    def last_run(self) -> str | None:
        """When the last run finished and how many divergences it found; None before the first."""
        return self._store.settings.get(LAST_RUN)
