"""The reconciler actor: periodically, and on demand, compares the leader's and followers'
order books with what the copier stored, and each copy with its leader's order as the broker
holds it now (`trading/reconcile.py`), stores and exports every divergence, and makes the safe
repairs when configured:

- a leader change the copier missed or applied out of order (an order never copied while it is
  still open, a cancel whose copy is still open, a copy sized or priced for terms the leader's
  order no longer has): the leader's current book entry goes through the inbox like any update,
  and the order's actor re-targets its copies as it would have done;
- an open copy that drifted from what the copier wants: its actor looks it up at the broker and
  converges.

Reported only, because nothing safe can be done blindly: a copy missing from a follower's book; a
copy still open well after its leader's order filled (it may yet fill; the lag alert covers it);
and a copy cancelled while its leader's order is open. That last one cannot be un-cancelled, and
placing it again under a new correlation id, as a dead-letter retry does, would not double it
(the cancelled order cannot fill any more), but it is not done: whoever cancelled it outside the
copier (the follower, by hand; its broker's risk system) may have meant it, a part of it may have
filled, and the price it would be placed at is no longer the one the leader chose it at.

`run.py reconcile` in another process asks this actor for a report through storage (the running
copier holds the accounts, tokens and URLs, which in paper mode exist only in this process): it
writes a request id to REQUEST_SETTING, this actor answers in REPORT_SETTING with that id. A
requested report is read-only: nothing is repaired, stored or counted.
"""
from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import asdict
from typing import Any, Callable, Mapping

from actors.account_reader import read_positions
from actors.feed import store_and_route
from actors.messages import AnswerReconcileRequests, Reconcile, SyncCopies, is_leader
from observability import metrics
from broker.gateway import DhanGateway
from storage import Store
from supervisors import Address, Supervised, Timers
from trading import reconcile as r
from trading.account import PositionKey
from trading.instruments import InstrumentMaster
from trading.orders import OrderTerms, OrderUpdate, made_by_copier
from trading.risk import position_key
from trading.sizing import SizingRule

log = logging.getLogger(__name__)
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
    answer = gateway.order_book(source)
    if not answer.ok:
        raise RuntimeError(f"{gateway.account}: order book unavailable: {answer.error}")
    return list(answer.data.entries)  # (the gateway logs each entry it could not read)


def _positions(account: str, gateway: DhanGateway) -> dict[PositionKey, int]:
    snapshot = read_positions(account, gateway)  # (it logs why, when the broker did not give them)
    if snapshot is None:
        raise RuntimeError(f"{account}: positions unavailable")
    return snapshot.positions


DEFAULT_FILL_GRACE_SECONDS = 30.0


def fill_grace(lag_alert_seconds: float) -> float:
    """How long a copy may stay open after its leader's order filled before it is a divergence:
    the lag alert's threshold (copy.lag_alert_seconds), or 30 s when lag alerts are off."""
    return lag_alert_seconds if lag_alert_seconds > 0 else DEFAULT_FILL_GRACE_SECONDS


RuleFor = Callable[[str, str], "SizingRule | None"]  # (follower, leader account) -> its sizing rule
Resize = Callable[[str, str, OrderTerms], "int | None"]  # (follower, leader account, leader's terms)


def resize_by_rule(rules: RuleFor, instruments: InstrumentMaster) -> Resize:
    """Each follower's sizing rule for a leader applied to that leader's order, for the comparison
    of its copy."""
    def resize(follower: str, leader: str, terms: OrderTerms) -> int | None:
        rule = rules(follower, leader)
        instrument = instruments.get(terms.exchange_segment, terms.security_id)
        if rule is None or instrument is None:
            return None
        return r.rule_quantity(rule, terms, instrument.lot_size)

    return resize


def leader_books(gateways: Mapping[str, DhanGateway]) -> dict[str, tuple[str, OrderUpdate]]:
    """Every leader's orders, by order id, with the leader account each belongs to (`gateways`
    holds the followers' too). The copier's own copies in an account that also leads are no
    leader's orders."""
    books: dict[str, tuple[str, OrderUpdate]] = {}
    for account, gateway in gateways.items():
        if is_leader(account):
            books.update((u.order_id, (account, u)) for u in _book(gateway, "reconcile") if not made_by_copier(u))
    return books


def reconcile_once(store: Store, gateways: dict[str, DhanGateway], followers: list[str],
                   resize: Resize | None = None, fill_grace_seconds: float = DEFAULT_FILL_GRACE_SECONDS,
                   ) -> tuple[list[r.Divergence], dict[str, tuple[str, OrderUpdate]], dict[str, list[OrderUpdate]]]:
    """Fetch the books, read storage, compare. Returns the divergences, the leaders' orders by id
    (each with its leader account) and the followers' books."""
    leaders = leader_books(gateways)
    follower_books = {name: _book(gateways[name], "reconcile") for name in followers}
    copies, known = store.copies.for_reconcile()
    by_order = None if resize is None else (
        lambda follower, leader: resize(follower, leaders[leader.order_id][0], leader.terms))
    divergences = r.find_divergences([u for _account, u in leaders.values()], follower_books, copies, known,
                                     followers, resize=by_order, now=time.time(), fill_grace_seconds=fill_grace_seconds)
    return divergences, leaders, follower_books


Follows = Callable[[str, str], bool]  # (follower, leader account) -> whether it copies that leader
Seen = set[tuple[str, PositionKey]]


def position_check(gateways: Mapping[str, DhanGateway], followers: list[str], follows: Follows,
                   leaders: Mapping[str, tuple[str, OrderUpdate]], follower_books: Mapping[str, list[OrderUpdate]],
                   seen_before: Seen | None) -> tuple[list[r.Divergence], Seen]:
    """Each follower's positions against its leaders' (`r.positions_against_leaders`), read after
    the books (`reconcile_once`'s) that say which instruments are still settling and which were
    copied today: a fill between the two reads shows as an order still open."""
    books = [*(update for _account, update in leaders.values()), *(u for book in follower_books.values() for u in book)]
    settling = {position_key(u.terms) for u in books if u.status.is_open}
    copied = {f: {position_key(u.terms) for u in follower_books[f] if made_by_copier(u) and u.filled_qty > 0}
              for f in followers}
    accounts = [account for account in gateways if is_leader(account) or account in followers]
    positions = {account: _positions(account, gateways[account]) for account in accounts}
    return r.positions_against_leaders({a: held for a, held in positions.items() if is_leader(a)},
                                       {f: positions[f] for f in followers}, follows, copied, settling, seen_before)


class ReconcilerActor(Supervised):
    def __init__(self, address: Address, supervisor: Address | None, store: Store,
                 gateways: dict[str, DhanGateway], followers: list[str], router: Address,
                 alert: Callable[[str, str, str], None], timers: Timers, interval_seconds: float = 60.0,
                 repair: bool = True, resize: Resize | None = None,
                 fill_grace_seconds: float = DEFAULT_FILL_GRACE_SECONDS, request_poll_seconds: float = 0.5,
                 follows: Follows | None = None) -> None:
        """`follows`: which leaders each follower copies, for the position check (None: not made)."""
        super().__init__(address, supervisor)
        self.request_poll_seconds = request_poll_seconds
        self.answered: str | None = None
        self.store, self.gateways, self.followers, self.router = store, gateways, followers, router
        self.alert, self.timers = alert, timers
        self.interval = interval_seconds
        self.repair = repair
        self.resize = resize
        self.fill_grace_seconds = fill_grace_seconds
        self.follows = follows
        self._against: Seen = set()  # followers found holding against their leaders last round

    def started(self) -> None:
        for kind in r.KINDS:
            metrics.DIVERGENCES.labels(kind)  # exported from the start, so increase() sees the first
        if self.interval > 0:
            self.timers.every(self.interval, self.address, Reconcile(), owner=self.actor_ref)
        report = json.loads(self.store.settings.get(REPORT_SETTING) or "{}")
        self.answered = report.get("request")
        self.timers.every(self.request_poll_seconds, self.address, AnswerReconcileRequests(), owner=self.actor_ref)

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, (Reconcile, AnswerReconcileRequests)) and self.store.down:
            return None  # storage is down: nothing found could be recorded or repaired; a later round will
        if isinstance(message, AnswerReconcileRequests):
            self.answer_request()
            return None
        if isinstance(message, Reconcile):
            try:
                return self.run()
            except RuntimeError as exc:  # a book could not be fetched: try again next round
                log.warning("reconcile skipped: %s", exc)
                return None
        return None

    def run(self) -> list[r.Divergence]:
        divergences, leader_book, follower_books = reconcile_once(self.store, self.gateways, self.followers,
                                                                  self.resize, self.fill_grace_seconds)
        against, self._against = self._positions_against(leader_book, follower_books, self._against)
        divergences = [*divergences, *against]
        metrics.RECONCILE_RUNS.inc()
        done: set[tuple[str, str]] = set()  # (what, leader order): each repair once per run
        repaired = [self._repair(d, leader_book, done) if self.repair else False for d in divergences]
        self.store.divergences.record_run(list(zip(divergences, repaired)))
        for divergence in divergences:
            metrics.DIVERGENCES.labels(divergence.kind).inc()
            log.warning("reconcile: %s %s %s: %s", divergence.kind, divergence.leader_order_id,
                        divergence.follower or "", divergence.detail)
        if divergences:
            self.alert("warning", "divergence", f"reconciler found {len(divergences)} divergences "
                       f"({sum(repaired)} repaired); see run.py reconcile")
        for divergence in divergences:
            if divergence.kind == r.POSITION_AGAINST_LEADER:
                self.alert("error", f"position_against_leader:{divergence.follower}",
                           f"follower {divergence.follower}: {divergence.detail}; reported only: close it by "
                           "hand if it should not be held")
            if divergence.kind == r.COPY_CANCELLED_LEADER_OPEN:
                self.alert("error", f"cancelled_copy:{divergence.follower}",
                           f"follower {divergence.follower}: the copy of leader order {divergence.leader_order_id} "
                           "is cancelled while the leader's order is open; it is not placed again (place it by "
                           "hand if it should be)")
        return divergences

    def answer_request(self) -> None:
        """Answer an operator's reconcile request (report only), once per request id. A follower
        holding against its leaders is in it when the last periodic round found it so too."""
        request = self.store.settings.get(REQUEST_SETTING)
        if not request or request == self.answered:
            return
        self.answered = request
        try:
            divergences, leaders, books = reconcile_once(self.store, self.gateways, self.followers, self.resize,
                                                         self.fill_grace_seconds)
            divergences += self._positions_against(leaders, books, self._against)[0]
            answer = report_json(request, divergences)
        except RuntimeError as exc:
            answer = report_json(request, error=str(exc))
        self.store.settings.set(REPORT_SETTING, answer)

    def _positions_against(self, leaders: dict[str, tuple[str, OrderUpdate]], books: dict[str, list[OrderUpdate]],
                           seen_before: Seen) -> tuple[list[r.Divergence], Seen]:
        """`position_check`; positions that cannot be read leave the books' divergences as they are,
        and the check to a later round (which then needs two rounds again)."""
        if self.follows is None:
            return [], set()
        try:
            return position_check(self.gateways, self.followers, self.follows, leaders, books, seen_before)
        except RuntimeError as exc:
            log.warning("reconcile: followers' positions not checked: %s", exc)
            return [], set()

    def _repair(self, divergence: r.Divergence, leader_book: dict[str, tuple[str, OrderUpdate]],
                done: set[tuple[str, str]]) -> bool:
        leader_order_id = divergence.leader_order_id
        if not leader_order_id:
            return False
        if divergence.kind in (r.MISSING_REPLICATION, r.STATUS_MISMATCH) and leader_order_id in leader_book:
            self._route_current(*leader_book[leader_order_id], done)
            return True
        if divergence.kind in (r.QUANTITY_MISMATCH, r.COPY_TERMS_MISMATCH):
            # re-target from the leader's order as it is now, then look the copies up and converge
            if leader_order_id in leader_book:
                self._route_current(*leader_book[leader_order_id], done)
            if ("sync", leader_order_id) not in done:
                done.add(("sync", leader_order_id))
                self.router.tell(SyncCopies(leader_order_id))
            return True
        return False

    def _route_current(self, account: str, leader: OrderUpdate, done: set[tuple[str, str]]) -> None:
        """The leader's order as the broker holds it now, into the inbox like any update: under a
        key of its own, as it may repeat a snapshot stored before (one applied out of order)."""
        if ("route", leader.order_id) in done:
            return
        done.add(("route", leader.order_id))
        store_and_route(self.store, self.router, account, leader, key=f"reconcile:{uuid.uuid4().hex}")
