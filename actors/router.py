"""The order router: routes each stored order update to its order's actor, spawning it on the
first event, and supervises those actors (OTP's simple-one-for-one).

Leader updates are keyed by the leader order id. Follower updates are mapped back to their leader
order through the correlation id (or the broker order id) stored with the copy; updates of
orders the copier did not place (the follower's own manual orders) are acknowledged as foreign.

Order actors run on the router's shared pool (supervisors/pool.py) and stop when their order
is finished; a later event for the order simply spawns a fresh actor that rebuilds from storage. A crashed order actor is restarted
(its lost inbox is rebuilt from the inbox table), never given up on: an inbox event that crashes
it `poison_after` times is parked as a dead letter (actors/dead_letters.py) and the actor goes
on with the order's next events. Restarts of an order that keeps crashing wait longer and
longer (`restart_delays`), so a crash that is not an event's fault (storage down, the sizing
actor restarting) is retried at a calm pace, not in a loop.
An order actor that stopped because storage is down is not counted against it: it starts again,
at the same address (so the broker answers that arrived meanwhile reach it), once storage is back.
"""
from __future__ import annotations

import json
import logging
import time
from collections import deque
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, Iterable

from actors.context import CopierContext
from actors.dead_letters import is_unavailability, park_event, park_unreadable
from actors.messages import (LEADER, CancelCopies, CatchUpCopy, CopiesMade, CopiesWanted, OrderActorIdle,
                             OrderActorWanted, OrderUpdateReceived, ProtectCopy, ReduceCopy, RetryCopy, RouteStored,
                             StorageRecovered, SyncCopies, UnwindLeg, UnwindStrategy, is_leader)
from actors.order import OrderActor
from supervisors.pool import THREADS, ActorPool, PooledSupervised
from observability import metrics
from storage import StorageDown
from storage import routing
from storage.orders import copy_key
from storage.expiry import close_expired, open_orders_entered_before
from supervisors import Address
from supervisors.supervisor import ChildFailed
from supervisors.timers import TimerHandle, Timers
from trading.calendar import MarketCalendar, ist_date
from trading.expiry import SESSION_VALIDITIES, ended_session
from trading.orders import made_by_copier, update_from_dict

log = logging.getLogger(__name__)

RESUME_WAIT = 10.0  # seconds a start waits for the resumed order actors to have loaded their copies


@dataclass(frozen=True)
class Sweep:
    """The router's timer: route stored updates left undone, retry dead letters an operator asked
    for, report the open-order gauges."""


@dataclass(frozen=True)
class RestartOrder:
    """The router's timer: start the next incarnation of a crashed order actor."""

    leader_order_id: str


class OrderRouter(PooledSupervised):
    """Routes stored order updates to order actors, which it starts on its pool and supervises
    (the module's docstring says how). Every update reaches it through `store_and_route`:

        router.tell(OrderUpdateReceived(account, event_id, update))   # event_id: its inbox row
    """

    def __init__(self, address: Address, supervisor: Address | None, ctx: CopierContext, *,
                 sweep_seconds: float = 5.0, poison_after: int = 3,
                 restart_delays: tuple[float, ...] = (0.0, 0.5, 2.0, 5.0, 15.0, 30.0),
                 period: float = 60.0, order_threads: int = THREADS) -> None:
        super().__init__(address, supervisor)
        self.ctx = ctx
        self.children: dict[str, Address] = {}
        self.sweep_seconds = sweep_seconds
        self.poison_after = poison_after
        self.restart_delays = restart_delays  # by the order's crashes within `period`: 1st, 2nd, ...
        self.period = period
        self._restarts: dict[str, deque[float]] = {}
        self._crashes: dict[int, int] = {}  # inbox event id -> crashes of its order actor on it
        # Events parked as dead letters. Copies of one may still be on their order's address (routed
        # while its actor was down) and reach the next incarnation: it skips them.
        self._parked: set[int] = set()
        self._owners: dict[tuple[str, str], str] = {}  # (follower, order or correlation id) -> leader order
        self._own_copies: set[str] = set()  # copies seen in a leader's own book (counted once each)
        self._waiting_for_storage: set[str] = set()  # order actors that crashed while storage was down
        self._unwatch = None
        self._sweeps: TimerHandle | None = None
        self._order_threads = order_threads
        self._pool: ActorPool | None = None  # runs the order actors (supervisors/pool.py), made on first use
        self._started_at = time.time()  # this run's start: an earlier run had ended by then
        # Orders whose stored updates may have been acted on with the effect unstored: an earlier
        # run's updates not done or parked, and parked ones retried (OrderActor.unstored_placement).
        self._acted_on: set[str] = set()

    def started(self) -> None:
        self._unwatch = self.ctx.store.watch_health(
            lambda healthy: self.address.tell(StorageRecovered()) if healthy else None)
        try:
            self._close_earlier_sessions()
            self._acted_on = routing.unfinished_order_ids(self.ctx.store)
            # Resume: every order with work left gets its actor back, and every stored update not
            # yet done is routed again (a crash may have dropped it from an inbox).
            self._loaded([self._child(order_id) for order_id in self.ctx.store.open_leader_order_ids()])
            self._route_stored(min_age=0.0)
        except BaseException:
            self._stop_children()  # a start that fails leaves no order actors (nor their threads) behind
            raise
        self._sweeps = self.timers.every(self.sweep_seconds, self.address, Sweep())

    def _loaded(self, resumed: list[Address]) -> None:
        """Wait until the resumed order actors have loaded their copies: each tells the sizing actor
        of those whose placement is looked up first, and that must reach it before any exit is
        sized (an exit routed next, or heard live), or the exit reads positions without them."""
        deadline = time.monotonic() + RESUME_WAIT
        futures = [address.ref.ask(CopiesWanted(), block=False) for address in resumed if address.ref is not None]
        for future in futures:
            try:
                future.result(max(0.0, deadline - time.monotonic()))
            except FutureTimeout:
                log.warning("resumed order actors not all loaded after %.0fs; routing on", RESUME_WAIT)
                return
            except Exception:  # noqa: BLE001 - a start that failed is its supervisor's (reported, restarted)
                continue

    def _close_earlier_sessions(self) -> None:
        """Open DAY orders of an earlier trading day were expired by the exchange at that session's
        close. The broker's book and lookups hold today's orders only, so asking about them would
        never end: they are closed in storage, each with an EXPIRED event giving the reason."""
        now = self.ctx.clock()
        candidates = open_orders_entered_before(self.ctx.store, ist_date(now))
        if not candidates:
            return
        calendar = self.ctx.calendar or MarketCalendar()
        for order in candidates:
            day = ended_session(calendar, order.segment, order.created_at, now)
            if day is None:
                continue
            close_leader = order.leader_open and order.validity in SESSION_VALIDITIES
            copies = {(follower, part): copy_key(order.leader_order_id, follower, part)
                      for (follower, part), validity in order.copies.items() if validity in SESSION_VALIDITIES}
            if not close_leader and not copies:
                continue
            reason = (f"an order of the {day.isoformat()} session, valid for that session only: the exchange "
                      "expired it at that session's close")
            close_expired(self.ctx.store, order.leader_order_id, close_leader, copies, reason)
            closed = ([LEADER] if close_leader else []) + list(dict.fromkeys(follower for follower, _part in copies))
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

    @property
    def timers(self) -> Timers:
        assert self.ctx.timers is not None, "the router needs the copier's timer service"
        return self.ctx.timers

    def _stop_children(self) -> None:
        if self._sweeps is not None:
            self._sweeps.cancel()
        if self._unwatch is not None:
            self._unwatch()
        if self._pool is not None:  # every order actor stops after what it was told, then the threads
            self._pool.stop(timeout=5)
            self._pool = None
        self.children.clear()

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, OrderUpdateReceived):
            self._route(message)
        elif isinstance(message, CopiesMade):
            self._remember_owner(message.leader_order_id, message.copies)
        elif isinstance(message, OrderActorIdle):
            self._retire(message.leader_order_id)
        elif isinstance(message, ChildFailed):
            self._restart(message)
        elif isinstance(message, RestartOrder):
            self._resume(message.leader_order_id)
        elif isinstance(message, RouteStored):
            self._route_stored(min_age=0.0)
        elif isinstance(message, StorageRecovered):
            self._resume_after_outage()
        elif isinstance(message, UnwindStrategy):
            for leg in routing.strategy_legs(self.ctx.store, message.group_id):
                if leg != message.failed_leg:
                    self._child(leg).tell(UnwindLeg(message.follower, message.reason))
        elif isinstance(message, (SyncCopies, CatchUpCopy, ProtectCopy, ReduceCopy)):
            self._child(message.leader_order_id).tell(message)
        elif isinstance(message, CancelCopies):
            for order_id in ([message.leader_order_id] if message.leader_order_id
                             else self.ctx.store.open_leader_order_ids()):
                self._child(order_id).tell(message)
        elif isinstance(message, Sweep):
            if not self.ctx.store.down:  # nothing can take effect meanwhile; resumed when it is back
                self._route_stored(min_age=self.sweep_seconds)
                self._retry_dead_letters()
            self._report_gauges()
        elif isinstance(message, OrderActorWanted):
            address = self.children.get(message.leader_order_id)
            return address if address is not None and address.ref is not None else None
        return None

    # -- routing ---------------------------------------------------------------------------------
    def _route(self, message: OrderUpdateReceived) -> None:
        if is_leader(message.account):
            # every update counts in the leader's position, a copy's in an account that also follows too
            self.ctx.ledger.see(message.account, message.update, ist_date(self.ctx.clock()), live=not message.stored)
            if made_by_copier(message.update):  # never copied back
                self._own_copy(message)
                self._acknowledge(message, "own_copy")
                return
            leader_order_id = message.update.order_id
        else:
            leader_order_id = self._leader_of(message)
            if leader_order_id is None:
                self._acknowledge(message, "foreign")
                return
        # A new leader order's first sighting is handed to this thread (supervisors/pool.py): it
        # waits on no broker call (an exit's sizing reading is told, not waited for). Any other
        # turn of an order actor may (a re-size), so it runs on the order pool.
        first = is_leader(message.account) and leader_order_id not in self.children
        self._child(leader_order_id, inline=first).tell(message, inline=first)

    def _own_copy(self, message: OrderUpdateReceived) -> None:
        """Count and log a copy seen in a leader's book, once per order (it sends several updates)."""
        if message.update.order_id in self._own_copies:
            return
        if len(self._own_copies) > 100_000:  # bounded, like _owners
            self._own_copies.clear()
        self._own_copies.add(message.update.order_id)
        metrics.OWN_COPIES_IGNORED.labels(message.account).inc()
        log.info("%s: order %s is one of the copier's copies (correlation id %s): not copied back",
                 message.account, message.update.order_id, message.update.correlation_id)

    def _acknowledge(self, message: OrderUpdateReceived, outcome: str) -> None:
        """An update that concerns no leader order: done, with why."""
        try:
            self.ctx.store.inbox.acknowledge([message.event_id], outcome)
        except StorageDown:
            pass  # still stored as not done: routed again once storage is back

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
            self._remember_owner(leader, keys)
        return leader

    def _remember_owner(self, leader_order_id: str, keys: Iterable[tuple[str, str]]) -> None:
        if len(self._owners) > 100_000:  # bounded: a long run forgets, and asks the store again
            self._owners.clear()
        for key in keys:
            self._owners[key] = leader_order_id

    def _child(self, leader_order_id: str, inline: bool = False) -> Address:
        address = self.children.get(leader_order_id)
        if address is None:
            address = Address(f"order:{leader_order_id}")
            self.children[leader_order_id] = address
            self._start(leader_order_id, address, inline)
        return address

    def _start(self, leader_order_id: str, address: Address, inline: bool = False) -> None:
        if self._pool is None:
            self._pool = ActorPool(self._order_threads, name="order").start()
        address.bind(self._pool.spawn(OrderActor(address, self.address, leader_order_id, self.ctx, parked=self._parked,
                                                 acted_on=self._acted_on, run_started=self._started_at),
                                      inline=inline))

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
        address.bind(None)  # messages for the order wait on its address until the restart
        if self.ctx.store.down:  # not the actor's fault, and restarting it now would only fail again
            self._waiting_for_storage.add(leader_order_id)
            log.info("order actor %s stopped while storage is down; it resumes when storage is back",
                     leader_order_id)
            return
        metrics.ACTOR_RESTARTS.labels("order").inc()
        window = self._restarts.setdefault(leader_order_id, deque())
        now = time.monotonic()
        while window and now - window[0] > self.period:
            window.popleft()
        window.append(now)
        received = failure.message if isinstance(failure.message, OrderUpdateReceived) else None
        if received is not None and not is_unavailability(failure.exception):
            crashes = self._crashes.get(received.event_id, 0) + 1
            if crashes >= self.poison_after:
                self._crashes.pop(received.event_id, None)
                if len(self._parked) > 10_000:  # bounded; a parked event is done, so a sweep never routes it again
                    self._parked.clear()
                self._parked.add(received.event_id)
                sent = sorted({follower for order, follower in list(self.ctx.sent_unstored.values())
                               if order == leader_order_id})
                park_event(self.ctx.store, self.ctx.alert, "order", received, leader_order_id, failure.exception,
                           crashes, note=(f"; its copies' placements to {', '.join(sent)} were sent and not stored: "
                                          "they may be at the broker (a retry looks them up and adopts them)"
                                          if sent else ""))
                window.clear()  # its cause is parked: the next incarnation starts afresh
            else:
                if len(self._crashes) > 10_000:  # bounded: events that crashed once and then went through
                    self._crashes.clear()
                self._crashes[received.event_id] = crashes
        delay = self.restart_delays[min(len(window), len(self.restart_delays)) - 1] if window else 0.0
        if delay <= 0:
            log.warning("order actor %s crashed (%s); restarting from storage", leader_order_id, failure.error)
            self._resume(leader_order_id)
            return
        log.warning("order actor %s crashed again (%s); restarting in %.1fs", leader_order_id, failure.error, delay)
        if len(window) >= len(self.restart_delays):
            self.ctx.alert("critical", f"order_actor_crashing:{leader_order_id}",
                           f"order actor for leader order {leader_order_id} crashed {len(window)} times in "
                           f"{self.period:.0f}s (last: {failure.error}); restarting it every {delay:.0f}s")
        self.timers.after(delay, self.address, RestartOrder(leader_order_id))

    def _resume(self, leader_order_id: str) -> None:
        """Start the order's next incarnation and give it what the crashed one's inbox held."""
        address = self.children.get(leader_order_id)
        if address is None or address.ref is not None:
            return  # retired or already running
        self._start(leader_order_id, address)
        self._route_pending_of(leader_order_id)  # from the inbox table

    def _resume_after_outage(self) -> None:
        waiting, self._waiting_for_storage = self._waiting_for_storage, set()
        for leader_order_id in sorted(waiting):
            address = self.children.get(leader_order_id)
            if address is not None and address.ref is None:
                self._start(leader_order_id, address)
        self._route_stored(min_age=0.0)

    def _route_stored(self, min_age: float) -> None:
        self._route_events(routing.undone_events(self.ctx.store, received_before=time.time() - min_age))

    def _route_pending_of(self, leader_order_id: str) -> None:
        """The stored updates not yet done of one leader order and of its copies."""
        broker_ids = [r.broker_order_id for r in self.ctx.store.follower_orders(leader_order_id) if r.broker_order_id]
        self._route_events(self.ctx.store.pending_inbound([leader_order_id, *broker_ids]))

    def _route_events(self, events: list[routing.StoredEvent]) -> None:
        for event in events:
            try:
                update = update_from_dict(json.loads(event.payload))
            except Exception as exc:  # noqa: BLE001 - stored in a format this version cannot read
                park_unreadable(self.ctx.store, self.ctx.alert, event, exc)
                continue
            self._route(OrderUpdateReceived(event.account, event.id, update, stored=True))

    def _retry_dead_letters(self) -> None:
        """Dead letters an operator asked to retry (`run.py dlq retry ID` sets next_retry_at)."""
        for letter in routing.retries_due(self.ctx.store):
            if letter.event_id is not None:  # a parked inbox event: pending again, routed again
                if letter.leader_order_id:  # its copies may have been placed before it was parked
                    self._acted_on.add(letter.leader_order_id)
                self._crashes.pop(letter.event_id, None)
                self._parked.discard(letter.event_id)
                event = self.ctx.store.reopen_parked(letter.letter_id, letter.event_id)
                metrics.DEAD_LETTERS.set(self.ctx.store.unresolved_dead_letters())
                self._route_events([event] if event is not None else [])
                continue
            routing.retry_taken(self.ctx.store, letter.letter_id)
            if letter.operation == "place":  # (a parked socket frame has nothing to be retried by)
                self._child(letter.leader_order_id).tell(RetryCopy(letter.follower, letter.letter_id,
                                                                   letter.correlation_id))

    def _report_gauges(self) -> None:
        counts = self.ctx.store.copies.open_orders(self.ctx.followers)
        for account in self.ctx.leader_limiters:  # one per leader: its open orders (0 for none)
            metrics.OPEN_ORDERS.labels(account).set(counts.leaders.get(account, 0))
        for name, count in counts.followers.items():
            metrics.OPEN_ORDERS.labels(name).set(count)
            metrics.FOLLOWER_LAG.labels(name).set(counts.lagging.get(name, 0))
        metrics.MAILBOX_DEPTH.labels("router").set(self.address.mailbox_depth())
        deepest = max((a.mailbox_depth() for a in self.children.values()), default=0)
        metrics.MAILBOX_DEPTH.labels("order_max").set(deepest)
