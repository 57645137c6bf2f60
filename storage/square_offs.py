"""Square-offs: each follower's run (its phase and final report) and the market orders closing its
positions, each stored before it is sent (see actors/square_off.py)."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

from storage import models as m
from storage.base import Transactions
from trading.orders import OrderTerms, terms_from_dict, terms_to_dict

FINISHED = ("done", "incomplete", "failed")


@dataclass(frozen=True)
class SquareOffRun:
    id: int
    request_id: int
    follower: str
    segments: tuple[str, ...]
    by: str
    phase: str
    report: str
    started_at: float


@dataclass(frozen=True)
class ClosingOrder:
    id: int
    run_id: int
    follower: str
    correlation_id: str
    terms: OrderTerms
    status: str  # new, unknown, open, filled, failed
    broker_order_id: str | None
    placements: int
    detail: str


def _run(row: m.SquareOffRun) -> SquareOffRun:
    return SquareOffRun(row.id, row.request_id, row.follower, tuple(json.loads(row.segments)), row.by, row.phase,
                        row.report, row.started_at)


def _closing(row: m.ClosingOrder) -> ClosingOrder:
    return ClosingOrder(row.id, row.run_id, row.follower, row.correlation_id, terms_from_dict(json.loads(row.terms)),
                        row.status, row.broker_order_id, row.placements, row.detail)


class SquareOffs:
    def __init__(self, store: Transactions) -> None:
        self._store = store

    def start(self, request_id: int, follower: str, segments: tuple[str, ...], by: str) -> SquareOffRun:
        row = self._store.write(lambda: self._store.create(m.SquareOffRun, request_id=request_id, follower=follower,
                                                           segments=json.dumps(list(segments)), by=by,
                                                           phase="cancelling"))
        return _run(row)

    def run(self, run_id: int) -> SquareOffRun | None:
        row = self._store.read(lambda: m.SquareOffRun.get_or_none(m.SquareOffRun.id == run_id))
        return _run(row) if row is not None else None

    def unfinished(self) -> list[SquareOffRun]:
        return self._store.read(lambda: [_run(r) for r in m.SquareOffRun.select()
                                         .where(m.SquareOffRun.phase.not_in(FINISHED)).order_by(m.SquareOffRun.id)])

    def of_request(self, request_id: int) -> list[SquareOffRun]:
        return self._store.read(lambda: [_run(r) for r in m.SquareOffRun.select()
                                         .where(m.SquareOffRun.request_id == request_id).order_by(m.SquareOffRun.id)])

    def set_phase(self, run_id: int, phase: str) -> None:
        self._store.write(lambda: m.SquareOffRun.update(phase=phase).where(m.SquareOffRun.id == run_id).execute())

    def close_positions(self, run_id: int, follower: str, orders: list[tuple[str, OrderTerms]]) -> list[ClosingOrder]:
        """The run's closing orders (correlation id, terms), stored before any is sent, with the run
        moved to its closing phase, in one transaction."""
        store = self._store

        def effect() -> list[ClosingOrder]:
            rows = [store.create(m.ClosingOrder, run_id=run_id, follower=follower, correlation_id=cid,
                                 terms=json.dumps(terms_to_dict(terms)), status="new") for cid, terms in orders]
            m.SquareOffRun.update(phase="closing").where(m.SquareOffRun.id == run_id).execute()
            return [_closing(row) for row in rows]

        return store.write(effect)

    def closing_orders(self, run_id: int) -> list[ClosingOrder]:
        return self._store.read(lambda: [_closing(r) for r in m.ClosingOrder.select()
                                         .where(m.ClosingOrder.run_id == run_id).order_by(m.ClosingOrder.id)])

    def update_closing(self, correlation_id: str, *, status: str, broker_order_id: str | None = None,
                       placements: int | None = None, detail: str | None = None) -> None:
        changes: dict = {"status": status, "updated_at": time.time()}
        if broker_order_id is not None:
            changes["broker_order_id"] = broker_order_id
        if placements is not None:
            changes["placements"] = placements
        if detail is not None:
            changes["detail"] = detail
        self._store.write(lambda: m.ClosingOrder.update(**changes)
                          .where(m.ClosingOrder.correlation_id == correlation_id).execute())

    def finish(self, run_id: int, phase: str, report: str, follower: str, by: str) -> None:
        """The run's outcome, and its audit line, in one transaction."""
        store = self._store

        def effect() -> None:
            m.SquareOffRun.update(phase=phase, report=report, finished_at=time.time()).where(
                m.SquareOffRun.id == run_id).execute()
            store.create(m.FollowerAudit, follower=follower, action="square-off", detail=report, by=by)

        store.write(effect)
