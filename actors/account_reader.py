"""Funds and positions for the sizing actor, read on threads of their own.

The sizing actor is the capital lock: every order actor's size request waits its turn there, so
it never calls the broker itself. It asks an `AccountReader`, whose few worker threads make the
calls and tell it what they read as one `AccountsRead`: every account at start and at each
refresh, or what the exits waiting for a reading need (the followers' own positions, read after
the orders arrived, and where the copier could not count it, the leader's position before each).
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Callable, Iterable, Mapping, Protocol, TypeVar

from actors.messages import LEADER, AccountsRead, BookFills, CapitalSnapshot, PositionsSnapshot, is_leader
from observability import metrics
from broker.gateway import Answer
from trading.account import BookFill, Funds, PositionKey, carried_in, net_quantities
from trading.leader_position import before_placed
from trading.orders import OrderUpdate

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_THREADS = 16
LOOKUP_ROUNDS = 3  # tries at reading the leader's position with its order's fills still
_OUT = object()  # a reading not in yet


class AccountGateway(Protocol):
    """What the reader asks of an account's gateway (broker/gateway.py `DhanGateway`)."""

    def fund_limit(self) -> Answer: ...

    def positions(self) -> Answer: ...

    def order(self, order_id: str) -> Answer: ...

    def book_fills(self) -> Answer: ...


def read_capital(account: str, gateway: AccountGateway, funds: Funds | None = None) -> CapitalSnapshot | None:
    """The account's funds (`funds`, when the start-up check read them already); None when the
    broker did not give them. A day's limit the broker leaves out is taken to be what is available."""
    fetched_at = time.time()
    if funds is None:
        answer = gateway.fund_limit()
        if not answer.ok:
            log.warning("fund limit of %s unavailable: %s", account, answer.error)
            return None
        funds = answer.data
    return CapitalSnapshot(account, funds.available, funds.start_of_day or funds.available, fetched_at)


def read_positions(account: str, gateway: AccountGateway) -> PositionsSnapshot | None:
    """The account's net quantity by instrument and today's profit; None when the broker did not
    give them. Entries it could not read are left out and counted."""
    fetched_ns = time.monotonic_ns()
    answer = gateway.positions()
    answered_ns = time.monotonic_ns()
    if not answer.ok:
        log.warning("positions of %s unavailable: %s", account, answer.error)
        return None
    held = answer.data.entries
    count_unreadable(account, answer.data.unreadable)
    return PositionsSnapshot(account, net_quantities(held), sum(p.realised for p in held),
                             sum(p.unrealised for p in held), fetched_ns, carried_in(held), answered_ns=answered_ns)


def read_book(account: str, gateway: AccountGateway) -> tuple[BookFill, ...] | None:
    """How much of each of the day's orders has filled; None when the book could not be read
    whole (an order left out would have its fills counted again when they are seen)."""
    book = gateway.book_fills()
    if not book.ok:
        log.warning("order book of %s unavailable: %s", account, book.error)
        return None
    count_unreadable(account, book.data.unreadable)
    return None if book.data.unreadable else book.data.entries


def _book_of(account: str, gateway: AccountGateway) -> BookFills | None:
    fills = read_book(account, gateway)
    return BookFills(account, fills) if fills is not None else None


def count_unreadable(account: str, reasons: Iterable[str]) -> None:
    """Count the reasons the broker's entries for `account` could not be read (metric labels)."""
    for reason in reasons:
        metrics.MALFORMED_MESSAGES.labels("leader" if is_leader(account) else "follower", reason).inc()


def leader_before(gateway: AccountGateway, order_id: str, key: PositionKey, sign: int,
                  account: str = LEADER) -> tuple[int | None, PositionsSnapshot | None]:
    """The leader's position in `key` before its order `order_id` (of side `sign`), and the
    positions read for it: the broker's position less the fills of that order and of the orders
    placed after it (`before_placed`: the copier may see an order only once later ones filled),
    the order book read on both sides of the positions so that a fill landing in between is not
    counted twice. A book that cannot place the order (not in it, ids that are not numbers) leaves
    the order's own fills alone to take out, read on both sides of the positions. The position is
    None when the broker could not confirm it."""
    book, positions = _read_around_positions(
        account, gateway, lambda: read_book(account, gateway), lambda a, b: _fills_in(a, key) == _fills_in(b, key))
    if book is None or positions is None:
        return None, positions
    before = before_placed(positions.positions.get(key, 0), book, order_id, key)
    if before is not None:
        return before, positions
    order, positions = _read_around_positions(
        account, gateway, lambda: _order_read(gateway, order_id), lambda a, b: a.filled_qty == b.filled_qty)
    if order is None or positions is None:
        return None, positions
    return positions.positions.get(key, 0) - sign * order.filled_qty, positions


def _read_around_positions(account: str, gateway: AccountGateway, read: Callable[[], T | None],
                           same: Callable[[T, T], bool]) -> tuple[T | None, PositionsSnapshot | None]:
    """`read()` on both sides of a positions reading, until the two reads agree (`same`), at most
    `LOOKUP_ROUNDS` times: the later read and those positions. None for the read when a read
    failed or they never agreed (what filled meanwhile may or may not be in the positions)."""
    positions = None
    for _ in range(LOOKUP_ROUNDS):
        first = read()
        positions = read_positions(account, gateway)
        again = read()
        if first is None or again is None or positions is None:
            return None, positions
        if same(first, again):
            return again, positions
    return None, positions


def _order_read(gateway: AccountGateway, order_id: str) -> OrderUpdate | None:
    answer = gateway.order(order_id)
    return answer.data if answer.ok else None


def _fills_in(book: Iterable[BookFill], key: PositionKey) -> dict[str, int]:
    return {fill.order_id: fill.filled for fill in book if fill.key == key}


class AccountReader:
    """Broker readings for the sizing actor, told to it through `tell`. Its threads are daemons,
    `threads` of them however many accounts there are (every account of a round is read at once,
    a handful at a time)."""

    def __init__(self, gateways: Mapping[str, AccountGateway], tell: Callable[[Any], None],
                 threads: int = MAX_THREADS) -> None:
        self.gateways = gateways
        self._tell = tell
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._open: dict[int, Callable[[], None]] = {}  # readings that can be hurried, until told
        self._closed = threading.Event()
        self._threads = [threading.Thread(target=self._work, name=f"account-reader-{i}", daemon=True)
                         for i in range(threads)]
        for thread in self._threads:
            thread.start()

    def close(self) -> None:
        """Stop: calls in progress end, the rest are dropped and nothing more is told."""
        self._closed.set()
        for _ in self._threads:
            self._jobs.put(None)

    def read_all(self, request: int, funds: Mapping[str, Funds] | None = None, books: Iterable[str] = ()) -> None:
        """Every account's funds (but those given in `funds`) and positions, and the order books
        of the accounts in `books`."""
        tasks: list[Callable[[], Any]] = []
        for account, gateway in self.gateways.items():
            given = (funds or {}).get(account)
            tasks.append(lambda a=account, g=gateway, f=given: read_capital(a, g, f))
            tasks.append(lambda a=account, g=gateway: read_positions(a, g))
        for account in books:
            if account in self.gateways:
                tasks.append(lambda a=account: _book_of(a, self.gateways[a]))
        self._gather(tasks, lambda results: AccountsRead(
            request, capital=tuple(r for r in results if isinstance(r, CapitalSnapshot)),
            positions=tuple(r for r in results if isinstance(r, PositionsSnapshot)),
            books=tuple(r for r in results if isinstance(r, BookFills))))

    def read_exit(self, request: int, followers: Iterable[str],
                  lookups: Iterable[tuple[str, str, PositionKey, int]] = (), unread: Iterable[str] = ()) -> None:
        """What exits wait for: the followers' positions, and for each (leader account, order id,
        instrument, side) in `lookups`, that leader's position before its order. Told once all
        are in, or at `hurry(request)` with those in by then (`AccountsRead.unread` names the
        followers still out, and those in `unread`, not asked; the whole reading is told again
        once they are in)."""
        not_asked = tuple(unread)
        names = [account for account in followers if account in self.gateways]
        tasks: list[Callable[[], Any]] = [lambda a=account: read_positions(a, self.gateways[a]) for account in names]
        looked_up = []
        for leader_account, order_id, key, sign in lookups:
            leader = self.gateways.get(leader_account)
            if leader is not None and order_id:
                looked_up.append(order_id)
                tasks.append(lambda g=leader, o=order_id, k=key, s=sign, a=leader_account:
                             (o, *leader_before(g, o, k, s, a)))

        def told(results: list[Any]) -> AccountsRead:
            before: list[tuple[str, int | None]] = []
            positions = []
            for result in results:
                if isinstance(result, tuple):
                    order_id, position, result = result
                    before.append((order_id, position))
                if isinstance(result, PositionsSnapshot):
                    positions.append(result)
            # a lookup still out has not confirmed the leader's position (as one that failed)
            before.extend((order_id, None) for order_id, result in zip(looked_up, results[len(names):])
                          if result is _OUT)
            unread = not_asked + tuple(name for name, result in zip(names, results) if result is _OUT)
            return AccountsRead(request, positions=tuple(positions), leaders_before=tuple(before), unread=unread)

        self._gather(tasks, told, request)

    def hurry(self, request: int) -> None:
        """Tell reading `request` now with what is in (a no-op once it was told)."""
        with self._lock:
            gather = self._open.pop(request, None)
        if gather is not None:
            gather()

    def read_books(self, request: int, accounts: Iterable[str]) -> None:
        """The accounts' order books, each as how much of every order has filled (one that could
        not be read whole, or not in by `hurry(request)`, is left out)."""
        tasks: list[Callable[[], Any]] = [lambda a=account: _book_of(a, self.gateways[a])
                                          for account in accounts if account in self.gateways]
        self._gather(tasks, lambda results: AccountsRead(request, books=tuple(
            book for book in results if isinstance(book, BookFills))), request)

    def _gather(self, tasks: list[Callable[[], Any]], message: Callable[[list[Any]], AccountsRead],
                request: int | None = None) -> None:
        """Run `tasks` on the workers; once the last has ended, tell `message(results)`. A task
        that raises (a bug) counts as a reading that failed: the request never waits forever.
        With `request`, `hurry(request)` tells `message` at once with the results in by then
        (those still out are `_OUT`)."""
        results: list[Any] = [_OUT] * len(tasks)
        left = [len(tasks)]
        lock = threading.Lock()

        def tell_now() -> None:
            with lock:
                now = list(results)
            self._tell(message(now))

        def run(index: int, task: Callable[[], Any]) -> None:
            result = None
            try:
                result = task()
            except Exception:  # noqa: BLE001 - whatever it was, the waiting request gets its answer
                log.exception("an account reading failed")
            with lock:
                results[index] = result
                left[0] -= 1
                last = left[0] == 0
            if last:
                if request is not None:
                    with self._lock:
                        self._open.pop(request, None)
                self._tell(message(results))

        if not tasks:
            self._tell(message([]))
            return
        if request is not None:
            with self._lock:
                self._open[request] = tell_now
        for index, task in enumerate(tasks):
            self._jobs.put(lambda i=index, t=task: run(i, t))

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None or self._closed.is_set():
                return
            job()
