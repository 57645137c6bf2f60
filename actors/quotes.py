"""Market quotes for leader orders that name no price (MARKET): the board and its actor.

An order actor reads the `QuoteBoard`, a thread-safe cache, and needs no message when it holds a
fresh price. On a miss it tells the `QuoteActor`, which asks Dhan's market quote API (POST
/marketfeed/ltp) and answers with a `QuotePrice`. Dhan allows that API one request a second per
account, up to 1000 instruments each, and only to accounts with a data plan (GET /profile). So
the actor finds at start an account that may ask (reading profiles in order, the
leader's first, until one has a plan; another only when more are needed), puts every instrument
waiting into one request, paces requests per account, and caches the answers for
`quotes.cache_seconds`. It calls the broker on its own thread, never under the
sizing actor's lock, and nobody waits on it synchronously: an order actor that gets no price
falls back to the leader's fill (trading/prices.py).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from actors.messages import AskQuotes, QuotePrice, QuoteWanted
from actors.rate_limiter import SlidingWindows
from observability import metrics
from broker.errors import ErrorKind
from broker.gateway import DhanGateway
from supervisors import Address, Supervised, Timers
from supervisors.timers import TimerHandle
from trading.orders import OrderTerms
from trading.prices import Quote

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (exchange segment, security id)
MAX_BATCH = 1000  # instruments in one market quote request (Dhan's limit)


def key_of(terms: OrderTerms) -> Key:
    return (terms.exchange_segment, str(terms.security_id))


class QuoteBoard:
    """The latest quote per instrument. Written by the QuoteActor, read by any order actor."""

    def __init__(self, cache_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.cache_seconds = cache_seconds
        self._clock = clock
        self._prices: dict[Key, tuple[float, float]] = {}  # key -> (price, when it was read)
        self._lock = threading.Lock()

    def fresh(self, key: Key) -> float | None:
        """The price if it was read less than `cache_seconds` ago."""
        with self._lock:
            known = self._prices.get(key)
        if known is None or self._clock() - known[1] >= self.cache_seconds:
            return None
        return known[0]

    def put(self, quotes: Iterable[Quote]) -> None:
        now = self._clock()
        with self._lock:
            for quote in quotes:
                self._prices[(quote.exchange_segment, quote.security_id)] = (quote.last_price, now)


@dataclass(frozen=True)
class Quotes:
    """An order actor's access to quotes: the board first, then the actor."""

    board: QuoteBoard
    actor: Address

    def cached(self, terms: OrderTerms) -> float | None:
        price = self.board.fresh(key_of(terms))
        metrics.QUOTE_LOOKUPS.labels("miss" if price is None else "hit").inc()
        return price

    def ask(self, terms: OrderTerms, reply_to: Address) -> None:
        self.actor.tell(QuoteWanted(*key_of(terms), reply_to))


class QuoteActor(Supervised):
    """Asks for quotes on behalf of order actors. Its state is only what is being waited for and
    which accounts ask: a restarted incarnation reads the plans again, and order actors whose
    question was lost fall back to the leader's fill."""

    def __init__(self, address: Address, supervisor: Address | None, board: QuoteBoard,
                 gateways: Mapping[str, DhanGateway], *, timers: Timers, requests_per_second: int = 1,
                 max_batch: int = MAX_BATCH, recheck_seconds: float = 300.0) -> None:
        super().__init__(address, supervisor)
        self.board = board
        self.gateways, self.timers = gateways, timers
        self.max_batch = max_batch
        self.recheck_seconds = recheck_seconds
        self._windows = {name: SlidingWindows([(requests_per_second, 1.0)]) for name in gateways}
        self._askers: list[str] = []  # accounts with a data plan, asking
        self._next_check = {name: 0.0 for name in gateways}  # the others: when their plan may be read (again)
        self._wanted: dict[Key, list[Address]] = {}  # in order of arrival; each with its askers
        self._wake: TimerHandle | None = None  # the wait for a free request slot, while one runs

    def started(self) -> None:
        if not self._find_asker():
            log.warning("no account has a data plan: orders without a price are valued at the leader's fill")

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, QuoteWanted):
            key = (message.exchange_segment, message.security_id)
            price = self.board.fresh(key)  # a request since the order actor looked may have brought it
            if price is not None:
                message.reply_to.tell(QuotePrice(*key, price))
                return None
            self._wanted.setdefault(key, []).append(message.reply_to)
            self._drain()
        elif isinstance(message, AskQuotes):
            self._wake = None
            self._drain()
        return None

    def _find_asker(self) -> bool:
        """Read the profiles of accounts not asking, in order, until one has a data plan. An account
        without one (or whose profile is unavailable) is read again `recheck_seconds` later at most."""
        for name, due in list(self._next_check.items()):
            now = time.monotonic()
            if due > now:
                continue
            answer = self.gateways[name].profile()
            if answer.ok and answer.data.data_plan:
                del self._next_check[name]
                self._askers.append(name)
                metrics.QUOTE_ACCOUNTS.set(len(self._askers))
                log.info("market quotes are asked through %s", name)
                return True
            self._next_check[name] = now + self.recheck_seconds
            if not answer.ok:
                log.warning("profile of %s unavailable (%s); its data plan is read again later", name, answer.error)
        return False

    def _drain(self) -> None:
        """Ask for everything wanted, in as few requests as the accounts' windows allow."""
        while self._wanted:
            now = time.monotonic()
            waits = {name: self._windows[name].wait_time(now) for name in self._askers}
            ready = [name for name in self._askers if waits[name] <= 0]
            if not ready and self._find_asker():  # a first account to ask through, or one more
                continue
            if not self._askers:
                self._answer(list(self._wanted), {})
                return
            if not ready:
                self._wake_in(min(waits.values()))
                return
            account = ready[0]
            self._windows[account].take(now)
            batch = list(self._wanted)[:self.max_batch]
            answer = self.gateways[account].quotes(batch)
            metrics.QUOTE_REQUESTS.labels(account, "ok" if answer.ok else "failed").inc()
            if answer.ok:
                self.board.put(answer.data.values())
                self._answer(batch, answer.data)
            elif answer.error is not None and answer.error.kind == ErrorKind.AUTH:
                # the plan lapsed (DH-902) or the token expired (DH-901): ask through another
                # account; this one's profile is read again later
                self._askers.remove(account)
                self._next_check[account] = time.monotonic() + self.recheck_seconds
                metrics.QUOTE_ACCOUNTS.set(len(self._askers))
                log.warning("market quotes refused to %s (%s); asking through another account", account,
                            answer.error)
            else:  # the waiting order actors fall back to the leader's fill
                log.warning("market quotes unavailable through %s: %s", account, answer.error)
                self._answer(batch, {})

    def _answer(self, keys: list[Key], quotes: Mapping[Key, Quote]) -> None:
        for key in keys:
            quote = quotes.get(key)
            for reply_to in self._wanted.pop(key, []):
                reply_to.tell(QuotePrice(*key, quote.last_price if quote else 0.0))

    def _wake_in(self, seconds: float) -> None:
        if self._wake is None:
            self._wake = self.timers.after(seconds, self.address, AskQuotes(), owner=self.actor_ref)
