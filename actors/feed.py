"""The feed actor: one per account socket (the leader's, and each follower's for its copies' fills).

The copier's one socket hub (broker/sockets.py) connects the socket off this actor's thread, reads
it and pings it, with every other account's; this actor logs in once it is connected, is told
every frame, and connects again with exponential backoff and jitter (a timer, not a sleeping
thread) when the socket drops or stops answering its pings. A refused login
(the broker's DH-901 frame, or the order book refusing the token after connecting) is reported to
the token actor, which pauses the account, and is retried with a slower backoff capped at
AUTH_RETRY_MAX: a dead token cannot start working by itself, a new one wakes the socket at once
(`Reconnect`).

This actor parses each frame, stores it in the inbox *before* routing it (so a crash after this
point cannot lose it), and routes it. A malformed frame (anything broker/parsing.py refuses, a frame over
`max_frame_bytes` included) is counted with its reason, logged and dropped, never fatal.

The socket says nothing of what it missed while down, so after every (re)connect the actor
fetches the account's order book and feeds every order through the same path; the inbox's
dedupe and the order actors' state make orders already seen a no-op. On the copier's very first
start the leader's existing orders are recorded as a baseline and not copied, except those with
copies already at the followers (the database was lost): those copies are adopted.

While storage is down nothing is routed, since nothing could be recorded. The leader's orders
first seen then are recorded as skips once storage is back (a late copy is a different trade);
everything else missed meanwhile is caught up from the order book.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import random
import threading
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable

import orjson
from tenacity import wait_exponential_jitter

from actors.account_reader import count_unreadable
from actors.messages import LEADER, Backfill, IsConnected, OrderUpdateReceived, Reconnect, StorageRecovered, is_leader
from observability import metrics
from observability.logs import redact
from broker.errors import ErrorKind
from broker.gateway import Answer, DhanGateway
from broker.parsing import (DEFAULT_MAX_FRAME_BYTES, MalformedMessage, decode_socket_message, from_socket,
                            login_frame, refused_login)
from broker.sockets import Connection, SocketHub
from storage import Store, StorageDown
from supervisors import Address, Timers
from supervisors.pool import CrashedOn, PooledSupervised, run_handing_off
from supervisors.timers import TimerHandle
from trading.adoption import find_copies
from trading.orders import OrderUpdate, update_to_dict

log = logging.getLogger(__name__)

BASELINE_SETTING = "leader_baseline_done"
AUTH_RETRY_INITIAL = 1.0  # seconds before a refused login is tried again; doubles each time
AUTH_RETRY_MAX = 60.0


def baseline_setting(account: str) -> str:
    """Where a leader's first start is recorded: a leader added to the config later has its own
    first start (its orders placed before it are not copied)."""
    return BASELINE_SETTING if account == LEADER else f"{BASELINE_SETTING}:{account}"


def auth_retry_delay(attempt: int) -> float:
    """Wait before the `attempt`-th retry of a refused login (1-based), with up to 20% jitter."""
    return min(AUTH_RETRY_INITIAL * 2 ** min(attempt - 1, 16), AUTH_RETRY_MAX) * random.uniform(1.0, 1.2)


@dataclass(frozen=True)
class SocketFrame:
    raw: str | bytes  # bytes: the socket skips UTF-8 validation, the parser decodes
    received_ns: int


@dataclass(frozen=True)
class SocketOpened:
    conn: int = 0  # which connection of the hub (a late message about an old one is ignored)


@dataclass(frozen=True)
class SocketClosed:
    reason: str
    conn: int = 0


@dataclass(frozen=True)
class ConnectSocket:
    """The reconnect wait after connection `conn` closed is over."""

    conn: int


def dedupe_key(account: str, update: OrderUpdate) -> str:
    return hashlib.sha1(orjson.dumps([account, *update.state_key()], default=str)).hexdigest()


def store_and_route(store: Store, router: Address, account: str, update: OrderUpdate, key: str | None = None) -> bool:
    """The one way an order update enters the copier: stored in the inbox, then routed. False
    when it was an exact duplicate. Used by the feeds, the reconciler's repairs and the
    order actors' re-reads. `key`, unique, replaces the snapshot's dedupe key for an update read
    from the broker on purpose: it answers a question, even when it repeats a snapshot seen before."""
    return store_and_route_all(store, router, account, [update], key) == 1


def store_and_route_all(store: Store, router: Address, account: str, updates: list[OrderUpdate],
                        key: str | None = None) -> int:
    """`store_and_route` for several updates of one account, stored in one transaction, then
    routed in order; how many were new."""
    role = "leader" if is_leader(account) else "follower"
    for update in updates:
        metrics.series(metrics.INBOUND_UPDATES, role, update.source).inc()
    event_ids = store.inbox.record_many(account, [
        (update.order_id, key or dedupe_key(account, update), update.source, update_to_dict(update),
         update.received_ns) for update in updates])
    new = 0
    for update, event_id in zip(updates, event_ids):
        if event_id is None:
            metrics.DUPLICATE_UPDATES.labels(role).inc()
            continue
        # a leader's update is routed on this thread next (supervisors/pool.py: a hand-off)
        router.tell(OrderUpdateReceived(account, event_id, update), inline=role == "leader")
        new += 1
    return new


class FeedActor(PooledSupervised):
    """One account's order-update socket (the module's docstring says what it does with it). The
    socket hub's reader thread tells it every frame, the token actor tells it `Reconnect()` once
    the account's token works again, and it answers two questions:

        feed.ask(IsConnected())     # True once the login is accepted
        feed.ask(Backfill())        # how many updates the order book brought that were new
    """

    def __init__(self, address: Address, supervisor: Address | None, *, account: str, url: str,
                 gateway: DhanGateway, store: Store, router: Address, sockets: SocketHub, timers: Timers,
                 backoff_initial: float = 0.5, backoff_max: float = 30.0,
                 copy_existing_on_first_start: bool = False,
                 max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
                 alert: Callable[[str, str, str], None] = lambda level, key, message: None,
                 on_auth_failure: Callable[[str, str], None] = lambda account, detail: None,
                 follower_gateways: dict[str, DhanGateway] | None = None, runs_on_reader: bool = False) -> None:
        """`sockets`: the copier's socket hub; `timers`: its timer service (the reconnect waits).
        `follower_gateways`: the leader's feed only, to find copies at a first start.
        `runs_on_reader`: the hub's reader thread, a leaders' own, runs this feed's turn for each
        frame (a hand-off, supervisors/pool.py) instead of waking the feed's thread."""
        super().__init__(address, supervisor)
        self.account = account
        self.role = "leader" if is_leader(account) else "follower"
        self.url = url
        self.gateway = gateway
        self.store = store
        self.router = router
        self.backoff = wait_exponential_jitter(multiplier=backoff_initial, max=backoff_max, jitter=backoff_initial)
        self.copy_existing_on_first_start = copy_existing_on_first_start
        self.max_frame_bytes = max_frame_bytes
        self.alert = alert
        self.on_auth_failure = on_auth_failure
        self.sockets = sockets
        self.runs_on_reader = runs_on_reader
        self.timers = timers
        self._halt = threading.Event()
        self._conn = 0  # the current connection's id at the hub
        self._socket: Connection | None = None  # the current connection, until it is closed
        self._refused = threading.Event()  # the current connection's login was refused
        self._opened = 0  # the last connection whose login was sent
        self._attempt = self._auth_attempt = 0  # connects in a row that never logged in; logins refused
        self._retry: TimerHandle | None = None  # the reconnect wait under way
        self._no_wait = False  # a new token came while connected: the next reconnect waits for nothing
        self.connected = False
        self.follower_gateways = follower_gateways or {}
        self._missed = False  # updates were dropped while storage was down
        self._unstored: dict[str, OrderUpdate] = {}  # the leader's updates of that time, latest per order
        self._unwatch: Callable[[], None] | None = None

    def __repr__(self) -> str:
        return f"FeedActor({self.account})"

    # -- the socket -------------------------------------------------------------------------------
    def started(self) -> None:
        self._unwatch = self.store.watch_health(self._on_storage_health)
        self._connect()

    def _connect(self) -> None:
        """A new connection; the hub connects it off this thread, then calls `_on_open` there."""
        self._retry, self._no_wait = None, False
        refused = self._refused = threading.Event()

        def on_frame(conn: Connection, raw: bytes, received_ns: int) -> None:  # on the hub's reader thread
            if refused_login(raw):  # noted here, so the close that follows is known as a refusal
                refused.set()
                conn.close("login refused")
            frame = SocketFrame(raw, received_ns)
            if self.runs_on_reader:
                run_handing_off(lambda: self.address.tell(frame, inline=True))
            else:
                self.address.tell(frame)

        self._socket = self.sockets.connect(
            self.url, on_open=self._on_open, on_frame=on_frame,
            on_close=lambda conn, reason: self.address.tell(SocketClosed(reason, conn.id)))
        self._conn = self._socket.id

    def _on_open(self, conn: Connection) -> None:
        """On a connector thread of the hub, once connected."""
        conn.send(login_frame(self.gateway.client_id, self.gateway.current_token()))  # renewed tokens included
        self.address.tell(SocketOpened(conn.id))

    def _on_closed(self, closed: SocketClosed) -> None:
        """This connection is over: connect again after a backoff (slower when the login was refused)."""
        if closed.conn != self._conn:
            return  # an old connection's
        self._socket = None
        self.connected = False
        metrics.FEED_CONNECTED.labels(self.account).set(0)
        if self._halt.is_set():
            return
        metrics.FEED_RECONNECTS.labels(self.account).inc()
        if self._refused.is_set():
            self._auth_attempt += 1
            delay = auth_retry_delay(self._auth_attempt)
            log.warning("%s order-update socket: access token refused; trying again in %.0fs", self.account, delay)
        else:
            self._auth_attempt = 0
            self._attempt = 1 if self._opened == closed.conn else self._attempt + 1
            delay = self.backoff(SimpleNamespace(attempt_number=self._attempt))
            log.warning("%s order-update socket down (%s); reconnecting in %.1fs", self.account,
                        _safe(closed.reason), delay)
        if self._no_wait:  # a working token came meanwhile
            delay = 0.0
        self._retry = self.timers.after(delay, self.address, ConnectSocket(closed.conn), owner=self.actor_ref)

    def _reconnect_now(self) -> None:
        """A token that works: a reconnect wait under way ends now; a connection still up that
        drops later is reconnected without one."""
        if self._halt.is_set():
            return
        if self._socket is None and self._retry is not None:
            self._retry.cancel()
            self._connect()
        else:
            self._no_wait = True

    def on_stop(self) -> None:
        super().on_stop()
        self._shutdown()

    def on_failure(self, *exc_info: Any) -> None:
        self._shutdown()
        super().on_failure(*exc_info)

    def _on_storage_health(self, healthy: bool) -> None:
        if healthy:  # in the thread that saw it: hand over only
            self.address.tell(StorageRecovered())

    def _shutdown(self) -> None:
        self._halt.set()
        if self._retry is not None:
            self._retry.cancel()
        if self._unwatch is not None:
            self._unwatch()
        metrics.FEED_CONNECTED.labels(self.account).set(0)
        if self._socket is not None:
            self._socket.close("stopped")

    # -- messages ----------------------------------------------------------------------------------
    def on_receive(self, message: Any) -> Any:
        if isinstance(message, SocketFrame):  # told frames come in batches (takes_in_batch); an asked one alone
            self.on_receive_batch([message])
        elif isinstance(message, SocketOpened):
            self._on_opened(message)
        elif isinstance(message, SocketClosed):
            self._on_closed(message)
        elif isinstance(message, ConnectSocket):
            if message.conn == self._conn and self._socket is None and not self._halt.is_set():
                self._connect()
        elif isinstance(message, StorageRecovered):
            self._catch_up_after_outage()
        elif isinstance(message, IsConnected):
            return self.connected
        elif isinstance(message, Backfill):
            return self.backfill()
        elif isinstance(message, Reconnect):  # the token actor has a token that works: stop waiting
            self._reconnect_now()
        return None

    def _on_opened(self, opened: SocketOpened) -> None:
        """The login was sent. Dhan does not confirm it, so the order book, fetched for the backfill
        anyway, says whether the token works before the socket is called connected."""
        refused, socket = self._refused, self._socket
        if opened.conn != self._conn:
            return  # an old connection's
        self._opened = opened.conn  # its login was sent: a drop after it starts the backoff over
        if refused.is_set() or socket is None:
            return  # already refused, or closed
        answer = self.gateway.order_book()
        if answer.error is not None and answer.error.kind == ErrorKind.AUTH:
            refused.set()
            socket.close("token refused by the order book")
            self.on_auth_failure(self.account, f"{answer.error.code} on the order book after connecting")
            return
        self.connected = True
        metrics.FEED_CONNECTED.labels(self.account).set(1)
        log.info("%s order-update socket connected", self.account)
        self.backfill(answer)

    def takes_in_batch(self, message: Any) -> bool:
        return isinstance(message, SocketFrame)

    def on_receive_batch(self, messages: list[Any]) -> None:
        """Frames that arrived together (a copy's PENDING and TRADED, a fan-out's echoes): each
        parsed, then stored in one transaction. Should storing them together fail on something
        other than storage, they are taken one at a time, so a crash names the frame that caused
        it (and parks that one alone)."""
        parsed: list[tuple[SocketFrame, OrderUpdate]] = []
        for frame in messages:
            try:
                update = self._parse(frame)
            except Exception as exc:
                raise CrashedOn(frame, exc) from exc
            if update is not None:
                parsed.append((frame, update))
        if len(parsed) > 1:
            try:
                self.ingest_all([update for _frame, update in parsed])
                return
            except Exception:  # noqa: BLE001 - rolled back: found again below, frame by frame
                log.debug("%s: %d frames stored one at a time", self.account, len(parsed), exc_info=True)
        for frame, update in parsed:
            try:
                self.ingest(update)
            except Exception as exc:
                raise CrashedOn(frame, exc) from exc

    def _parse(self, frame: SocketFrame) -> OrderUpdate | None:
        """The order update a frame carries; None for any other frame (a refused login is
        reported) or a malformed one (counted and logged, never fatal)."""
        try:
            data = decode_socket_message(frame.raw, self.max_frame_bytes)
            if data is None:
                self._on_other_frame(frame.raw)
                return None  # not an order alert (login answers, heartbeats)
            return from_socket(data, frame.received_ns)
        except MalformedMessage as exc:  # the parsers raise nothing else, whatever the frame
            metrics.MALFORMED_MESSAGES.labels(self.role, exc.reason).inc()
            log.warning("%s: dropped a malformed socket message (%s): %r", self.account, exc, frame.raw[:200])
            return None

    def _on_other_frame(self, raw: str | bytes) -> None:
        """A refused login: the token actor pauses the account; the socket retries with backoff."""
        code = refused_login(raw)
        if code:
            self.on_auth_failure(self.account, f"{code} on the order-update socket's login")

    def ingest(self, update: OrderUpdate) -> bool:
        return self.ingest_all([update]) == 1

    def ingest_all(self, updates: list[OrderUpdate]) -> int:
        """Store and route updates of this account (one transaction); how many were new."""
        try:
            return store_and_route_all(self.store, self.router, self.account, updates)
        except StorageDown:  # not stored, so not routed: kept for when storage is back
            self._missed = True
            if is_leader(self.account):
                for update in updates:
                    self._unstored[update.order_id] = update
            return 0

    def _catch_up_after_outage(self) -> None:
        """Storage is back: the leader's orders first seen while it was down are stored as such
        (their order actors record the skip); then the order book brings everything else."""
        if not self._missed:
            return
        self._missed = False
        unstored, self._unstored = self._unstored, {}
        skipped = 0
        for update in unstored.values():
            if not self.store.inbox.knows_order(self.account, update.order_id):
                skipped += self.ingest(dataclasses.replace(update, source="outage"))
        if skipped:
            log.warning("%s: %d orders placed while storage was down are recorded as not copied",
                        self.account, skipped)
        if self.connected:
            self.backfill()

    def _order_book(self, gateway: DhanGateway, account: str, source: str,
                    answer: Answer | None = None) -> list[OrderUpdate] | None:
        """The account's order book (`answer`, or fetched now), parsed; None when unavailable."""
        if answer is None:
            answer = gateway.order_book(source)
        if not answer.ok:
            log.warning("%s: order book unavailable: %s", account, answer.error)
            return None
        count_unreadable(account, answer.data.unreadable)
        return [u if u.source == source else dataclasses.replace(u, source=source) for u in answer.data.entries]

    def _adopt_copies(self, leader_order_ids: list[str]) -> set[str]:
        """At a first start: the leader orders with copies at the followers (their copies recorded
        for adoption). A follower whose book cannot be read is not searched; the order actors look
        every copy of an adopted order up by its correlation id before placing it anyway."""
        if not leader_order_ids:
            return set()
        books = {}
        for follower, gateway in self.follower_gateways.items():
            book = self._order_book(gateway, follower, "book")
            if book is not None:
                books[follower] = book
        found = find_copies(leader_order_ids, books)
        self.store.adoption.record((leader_order_id, follower, generation, update_to_dict(order))
                                   for leader_order_id, copies in found.items()
                                   for follower, (generation, order) in copies.items())
        if found:
            log.warning("first start: %d of the leader's orders already have copies at the followers "
                        "(an earlier database?); those copies are adopted", len(found))
        return set(found)

    def backfill(self, answer: Answer | None = None) -> int:
        """Feed the whole order book (`answer`, or fetched now) through the inbox; returns how many
        updates were new."""
        first_start = is_leader(self.account) and self.store.settings.get(baseline_setting(self.account)) is None
        baseline = first_start and not self.copy_existing_on_first_start
        updates = self._order_book(self.gateway, self.account, "baseline" if baseline else "book", answer)
        if updates is None:
            return 0
        if first_start:
            adopted = self._adopt_copies([u.order_id for u in updates])
            updates = [dataclasses.replace(u, source="adopt") if u.order_id in adopted else u for u in updates]
        new = 0
        for update in updates:
            if self.ingest(update):
                new += 1
        if first_start:
            self.store.settings.set(baseline_setting(self.account), str(time.time()))
        if new:
            metrics.BACKFILLED.labels(self.account).inc(new)
            log.info("%s: %d order updates recovered from the order book", self.account, new)
        return new


def _safe(exc: object) -> str:
    """Exception text without anything that looks like a token (the login frame carries one)."""
    return redact(str(exc))
