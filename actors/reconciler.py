"""The reconciler actor (B.5): periodically, and on demand, compares the leader's and followers'
order books with what the copier stored (`trading/reconcile.py`), stores and exports every
divergence, and makes the safe repairs when configured:

- a leader change the copier missed (an order never copied while it is still open, or a
  cancel whose copy is still open): the leader's current book entry goes through the inbox
  like any update, and the order's actor does what it would have done;
- an open copy whose quantity drifted: its actor looks it up at the broker and converges.

A copy missing from a follower's book is reported only: nothing safe can be done blindly.

`run.py reconcile` in another process asks this actor for a report through storage (the running
copier holds the accounts, tokens and URLs, which in paper mode exist only in this process): it
writes a request id to REQUEST_SETTING, this actor answers in REPORT_SETTING with that id. A
requested report is read-only: nothing is repaired, stored or counted.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from typing import Any, Callable

from actors.feed import store_and_route
from actors.messages import LEADER, SyncCopies, Tick
from app import metrics
from broker.gateway import DhanGateway
from broker.parsing import MalformedMessage, from_order_book
from storage import Store
from storage import models as m
from supervisors import Address, Supervised
from trading import reconcile as r
from trading.orders import OrderUpdate

log = logging.getLogger(__name__)
LAST_RUN_SETTING = "last_reconcile"
REQUEST_SETTING = "reconcile_request"
REPORT_SETTING = "reconcile_report"


def report_json(request: str, divergences: list[r.Divergence] | None = None, error: str = "") -> str:
    return json.dumps({"request": request, "error": error,
                       "divergences": [asdict(d) for d in divergences or []]})


def read_report(text: str | None, request: str) -> tuple[list[r.Divergence], str] | None:
    """(divergences, error) of the report answering `request`; None while it is not there."""
    report = json.loads(text) if text else {}
    if report.get("request") != request:
        return None
    return [r.Divergence(**d) for d in report["divergences"]], report["error"]


def _book(gateway: DhanGateway, source: str) -> list[OrderUpdate]:
    answer = gateway.order_book()
    if not answer.ok:
        raise RuntimeError(f"{gateway.account}: order book unavailable: {answer.error}")
    out = []
    for entry in answer.data:
        try:
            out.append(from_order_book(entry, source=source, received_ns=time.monotonic_ns()))
        except MalformedMessage as exc:
            log.warning("%s: unreadable order-book entry skipped (%s)", gateway.account, exc)
    return out


def reconcile_once(store: Store, gateways: dict[str, DhanGateway],
                   followers: list[str]) -> tuple[list[r.Divergence], dict[str, OrderUpdate]]:
    """Fetch the books, read storage, compare. Returns the divergences and the leader's book by id."""
    leader_book = _book(gateways[LEADER], "reconcile")
    follower_books = {name: _book(gateways[name], "reconcile") for name in followers}

    def stored() -> tuple[list[r.StoredCopy], set[str]]:
        # plain rows, not model instances: this holds the store's lock beside the hot path
        db = store.db
        copies = [r.StoredCopy(leader, follower, cid, status, quantity, broker is not None)
                  for leader, follower, cid, status, quantity, broker in db.execute_sql(
                      'SELECT "leader_order_id", "follower", "correlation_id", "status", "quantity", '
                      '"broker_order_id" FROM "follower_order"')]
        known = {row[0] for row in db.execute_sql('SELECT "order_id" FROM "leader_order"')}
        return copies, known

    copies, known = store.read(stored)
    divergences = r.find_divergences(leader_book, follower_books, copies, known, followers)
    return divergences, {u.order_id: u for u in leader_book}


class ReconcilerActor(Supervised):
    def __init__(self, address: Address, supervisor: Address | None, store: Store,
                 gateways: dict[str, DhanGateway], followers: list[str], router: Address,
                 alert: Callable[[str, str, str], None], interval_seconds: float = 60.0,
                 repair: bool = True, request_poll_seconds: float = 0.5) -> None:
        super().__init__(address, supervisor)
        self.request_poll_seconds = request_poll_seconds
        self.answered: str | None = None
        self.store, self.gateways, self.followers, self.router = store, gateways, followers, router
        self.alert = alert
        self.interval = interval_seconds
        self.repair = repair

    def started(self) -> None:
        for kind in r.KINDS:
            metrics.DIVERGENCES.labels(kind)  # exported from the start, so increase() sees the first
        if self.interval > 0:
            self.every(self.interval, Tick("reconcile"), "reconciler")
        report = json.loads(self.store.get_setting(REPORT_SETTING) or "{}")
        self.answered = report.get("request")
        self.every(self.request_poll_seconds, Tick("operator_request"), "reconcile-requests")

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Tick) and message.what == "operator_request":
            self.answer_request()
            return None
        if isinstance(message, Tick) or message == "run":
            try:
                return self.run()
            except RuntimeError as exc:  # a book could not be fetched: try again next round
                log.warning("reconcile skipped: %s", exc)
                return None
        return None

    def run(self) -> list[r.Divergence]:
        divergences, leader_book = reconcile_once(self.store, self.gateways, self.followers)
        metrics.RECONCILE_RUNS.inc()
        run_id = int(self.store.get_setting("reconcile_runs", "0") or 0) + 1
        repaired = [self._repair(d, leader_book) if self.repair else False for d in divergences]

        def record() -> None:
            for divergence, done in zip(divergences, repaired):
                m.Divergence.create(kind=divergence.kind, leader_order_id=divergence.leader_order_id,
                                    follower=divergence.follower, detail=divergence.detail, repaired=done,
                                    run_id=run_id)

        self.store.write(record)
        self.store.set_setting("reconcile_runs", str(run_id))
        self.store.set_setting(LAST_RUN_SETTING, f"{time.strftime('%Y-%m-%d %H:%M:%S')}, "
                                                 f"{len(divergences)} divergences")
        for divergence in divergences:
            metrics.DIVERGENCES.labels(divergence.kind).inc()
            log.warning("reconcile: %s %s %s: %s", divergence.kind, divergence.leader_order_id,
                        divergence.follower or "", divergence.detail)
        if divergences:
            self.alert("warning", "divergence", f"reconciler found {len(divergences)} divergences "
                       f"({sum(repaired)} repaired); see run.py reconcile")
        return divergences

    def answer_request(self) -> None:
        """Answer an operator's reconcile request (report only), once per request id."""
        request = self.store.get_setting(REQUEST_SETTING)
        if not request or request == self.answered:
            return
        self.answered = request
        try:
            divergences, _book = reconcile_once(self.store, self.gateways, self.followers)
            answer = report_json(request, divergences)
        except RuntimeError as exc:
            answer = report_json(request, error=str(exc))
        self.store.set_setting(REPORT_SETTING, answer)

    def _repair(self, divergence: r.Divergence, leader_book: dict[str, OrderUpdate]) -> bool:
        leader_order_id = divergence.leader_order_id
        if divergence.kind in (r.MISSING_REPLICATION, r.STATUS_MISMATCH) and leader_order_id in leader_book:
            store_and_route(self.store, self.router, LEADER, leader_book[leader_order_id])
            return True
        if divergence.kind == r.QUANTITY_MISMATCH and leader_order_id:
            self.router.tell(SyncCopies(leader_order_id))
            return True
        return False
