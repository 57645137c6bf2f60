"""The order router: routes each stored order update to its order's actor, spawning it on the
first event, and supervises those actors (OTP's simple-one-for-one).

Leader updates are keyed by the leader order id. Follower updates are mapped back to their leader
order through the correlation id (or the broker order id) stored with the copy; updates of
orders the copier did not place (the follower's own manual orders) are acknowledged as foreign.

Order actors stop when their order is finished, so threads stay bounded; a later event for the
order simply spawns a fresh actor that rebuilds from storage. A crashed order actor is restarted
at once (its lost inbox is rebuilt from the inbox table); one that keeps crashing is given up on
with an alert, and its events stay stored for the next sweep or an operator.
"""
from __future__ import annotations

import json
import logging
import time
from collections import deque
from typing import Any

import pykka

from actors.context import CopierContext
from actors.messages import (LEADER, CancelCopies, OrderActorIdle, OrderUpdateReceived, RetryCopy,
                             RouteStored, SyncCopies, Tick, UnwindLeg, UnwindStrategy)
from actors.order import OrderActor, copy_key
from app import metrics
from storage import models as m
from storage.expiry import close_expired, open_orders_entered_before
from supervisors import Address, Supervised
from supervisors.supervisor import ChildFailed
from trading.calendar import IST, MarketCalendar
from trading.expiry import SESSION_VALIDITIES, ended_session
from trading.orders import update_from_dict

log = logging.getLogger(__name__)


class OrderRouter(Supervised):
    def __init__(self, address: Address, supervisor: Address | None, ctx: CopierContext, *,
                 sweep_seconds: float = 5.0, max_restarts: int = 3, period: float = 60.0) -> None:
        super().__init__(address, supervisor)
        self.ctx = ctx
        self.children: dict[str, Address] = {}
        self.sweep_seconds = sweep_seconds
        self.max_restarts = max_restarts
        self.period = period
        self._restarts: dict[str, deque[float]] = {}
        self._given_up: set[str] = set()
        self._owners: dict[tuple[str, str], str] = {}  # (follower, order or correlation id) -> leader order

    def started(self) -> None:
        self._close_earlier_sessions()
        # Resume: every order with work left gets its actor back, and every stored update not yet
        # done is routed again (a crash may have dropped it from an inbox).
        for order_id in self.ctx.store.open_leader_order_ids():
            self._child(order_id)
        self._route_stored(min_age=0.0)
        self.every(self.sweep_seconds, Tick("sweep"), "router-sweep")

    def _close_earlier_sessions(self) -> None:
        """Open DAY orders of an earlier trading day were expired by the exchange at that session's
        close. The broker's book and lookups hold today's orders only, so asking about them would
        never end: they are closed in storage, each with an EXPIRED event giving the reason."""
        now = self.ctx.clock()
        candidates = open_orders_entered_before(self.ctx.store, now.astimezone(IST).date())
        if not candidates:
            return
        calendar = self.ctx.calendar or MarketCalendar()
        for order in candidates:
            day = ended_session(calendar, order.segment, order.created_at, now)
            if day is None:
                continue
            close_leader = order.leader_open and order.validity in SESSION_VALIDITIES
            copies = {follower: copy_key(order.leader_order_id, follower)
                      for follower, validity in order.copies.items() if validity in SESSION_VALIDITIES}
            if not close_leader and not copies:
                continue
            reason = (f"an order of the {day.isoformat()} session, valid for that session only: the exchange "
                      "expired it at that session's close")
            close_expired(self.ctx.store, order.leader_order_id, close_leader, copies, reason)
            closed = ([LEADER] if close_leader else []) + list(copies)
            for account in closed:
                metrics.ORDERS_EXPIRED_AT_START.labels(account).inc()
            log.info("leader order %s: open in storage from the %s session, closed as EXPIRED (%s)",
                     order.leader_order_id, day.isoformat(), ", ".join(closed))

    def on_stop(self) -> None:
        super().on_stop()
        self._stop_children()

    def on_failure(self, *exc_info: Any) -> None:
        self._stop_children()  # a dead supervisor's children die with it (no orphans, no doubles)
        super().on_failure(*exc_info)

    def _stop_children(self) -> None:
        for address in list(self.children.values()):
            ref = address.ref
            if ref is not None:
                try:
                    ref.stop(timeout=5)
                except (pykka.ActorDeadError, pykka.Timeout):
                    pass
        self.children.clear()

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, OrderUpdateReceived):
            self._route(message)
        elif isinstance(message, OrderActorIdle):
            self._retire(message.leader_order_id)
        elif isinstance(message, ChildFailed):
            self._restart(message)
        elif isinstance(message, RouteStored):
            self._route_stored(min_age=0.0)
        elif isinstance(message, UnwindStrategy):
            legs = self.ctx.store.read(lambda: [r.order_id for r in m.LeaderOrder.select(m.LeaderOrder.order_id)
                                                .where(m.LeaderOrder.group_id == message.group_id)])
            for leg in legs:
                if leg != message.failed_leg:
                    self._child(leg).tell(UnwindLeg(message.follower, message.reason))
        elif isinstance(message, SyncCopies):
            self._child(message.leader_order_id).tell(message)
        elif isinstance(message, CancelCopies):
            for order_id in self.ctx.store.open_leader_order_ids():
                self._child(order_id).tell(message)
        elif isinstance(message, Tick) and message.what == "sweep":
            self._route_stored(min_age=self.sweep_seconds)
            self._retry_dead_letters()
            self._report_gauges()
        elif message == "children":
            return sorted(self.children)
        return None

    # -- routing ---------------------------------------------------------------------------------
    def _route(self, message: OrderUpdateReceived) -> None:
        if message.account == LEADER:
            leader_order_id = message.update.order_id
        else:
            leader_order_id = self._leader_of(message)
            if leader_order_id is None:
                self.ctx.store.write(lambda: self.ctx.store.mark_done([message.event_id], "foreign"))
                return
        if leader_order_id in self._given_up:
            return
        self._child(leader_order_id).tell(message)

    def _leader_of(self, message: OrderUpdateReceived) -> str | None:
        """The leader order a follower's update belongs to. A copy's correlation id and broker
        order id never change owner, so answers are remembered: every copy sends several
        updates, and each lookup took the store's lock on the router's thread."""
        update = message.update
        keys = [(message.account, update.order_id)]
        if update.correlation_id:
            keys.append((message.account, update.correlation_id))
        for key in keys:
            known = self._owners.get(key)
            if known is not None:
                return known
        leader = self.ctx.store.leader_order_of_copy(message.account, update.correlation_id, update.order_id)
        if leader is not None:
            if len(self._owners) > 100_000:  # bounded: a long run forgets, and asks the store again
                self._owners.clear()
            for key in keys:
                self._owners[key] = leader
        return leader

    def _child(self, leader_order_id: str) -> Address:
        address = self.children.get(leader_order_id)
        if address is None:
            address = Address(f"order:{leader_order_id}")
            self.children[leader_order_id] = address
            self._start(leader_order_id, address)
        return address

    def _start(self, leader_order_id: str, address: Address) -> None:
        ref = OrderActor.start(address, self.address, leader_order_id, self.ctx)
        address.bind(ref)

    def _retire(self, leader_order_id: str) -> None:
        address = self.children.get(leader_order_id)
        if address is None or address.ref is None:
            return
        if address.mailbox_depth() > 0:
            return  # more arrived meanwhile; it will report idle again
        del self.children[leader_order_id]
        address.ref.stop(block=False)

    def _restart(self, failure: ChildFailed) -> None:
        leader_order_id = failure.child_id.removeprefix("order:")
        address = self.children.get(leader_order_id)
        if address is None or (address.ref is not None and address.ref.actor_urn != failure.actor_urn):
            return
        address.bind(None)
        metrics.ACTOR_RESTARTS.labels("order").inc()
        window = self._restarts.setdefault(leader_order_id, deque())
        now = time.monotonic()
        while window and now - window[0] > self.period:
            window.popleft()
        if len(window) >= self.max_restarts:
            self._given_up.add(leader_order_id)
            del self.children[leader_order_id]
            self.ctx.alert("critical", "order_actor_given_up",
                           f"order actor for leader order {leader_order_id} crashed {self.max_restarts} times "
                           f"in {self.period:.0f}s (last: {failure.error}); its events stay stored, unprocessed")
            return
        window.append(now)
        log.warning("order actor %s crashed (%s); restarting from storage", leader_order_id, failure.error)
        self._start(leader_order_id, address)
        self._route_pending_of(leader_order_id)  # what the crashed inbox held, from the inbox table

    def _route_stored(self, min_age: float) -> None:
        cutoff = time.time() - min_age
        self._route_events(self.ctx.store.read(lambda: list(
            m.InboundEvent.select().where((m.InboundEvent.done == False) & (m.InboundEvent.received_at <= cutoff))  # noqa: E712
            .order_by(m.InboundEvent.id).limit(5000))))

    def _route_pending_of(self, leader_order_id: str) -> None:
        """The stored updates not yet done of one leader order and of its copies."""
        broker_ids = [r.broker_order_id for r in self.ctx.store.follower_orders(leader_order_id) if r.broker_order_id]
        self._route_events(self.ctx.store.pending_inbound([leader_order_id, *broker_ids]))

    def _route_events(self, events: list[m.InboundEvent]) -> None:
        for event in events:
            update = update_from_dict(json.loads(event.payload))
            self._route(OrderUpdateReceived(event.account, event.id, update))

    def _retry_dead_letters(self) -> None:
        """Dead letters an operator asked to retry (`run.py dlq retry ID` sets next_retry_at)."""
        now = time.time()
        due = self.ctx.store.read(lambda: list(m.DeadLetter.select().where(
            (m.DeadLetter.resolved == False) & (m.DeadLetter.next_retry_at <= now))))  # noqa: E712
        for letter in due:
            self.ctx.store.write(lambda l=letter: m.DeadLetter.update(next_retry_at=None)
                                 .where(m.DeadLetter.id == l.id).execute())
            self._child(letter.leader_order_id).tell(RetryCopy(letter.follower, letter.id))

    def _report_gauges(self) -> None:
        # Aggregates in SQL: this runs under the store's lock every sweep, beside the hot path.
        db = self.ctx.store.db
        states = ("PENDING_PLACEMENT", "TRANSIT", "PENDING", "PART_TRADED")
        marks = ", ".join("?" for _ in states)

        def counts() -> tuple[int, dict[str, int], dict[str, int]]:
            leader = db.execute_sql(f'SELECT COUNT(*) FROM "leader_order" WHERE "status" IN ({marks})',
                                    states).fetchone()[0]
            followers = {name: 0 for name in self.ctx.followers}
            lagging = {name: 0 for name in self.ctx.followers}
            for follower, count, lag in db.execute_sql(
                    f'SELECT "follower", COUNT(*), SUM("anomaly" = \'lagging\') FROM "follower_order" '
                    f'WHERE "status" IN ({marks}) GROUP BY "follower"', states):
                followers[follower], lagging[follower] = count, lag or 0
            return leader, followers, lagging

        leader, followers, lagging = self.ctx.store.read(counts)
        metrics.OPEN_ORDERS.labels(LEADER).set(leader)
        for name, count in followers.items():
            metrics.OPEN_ORDERS.labels(name).set(count)
            metrics.FOLLOWER_LAG.labels(name).set(lagging.get(name, 0))
        metrics.MAILBOX_DEPTH.labels("router").set(self.actor_inbox.qsize())
        deepest = max((a.mailbox_depth() for a in self.children.values()), default=0)
        metrics.MAILBOX_DEPTH.labels("order_max").set(deepest)
