"""Market quotes for leader orders that name no price (MARKET): the board and its actor.

An order actor reads the `QuoteBoard`, a thread-safe cache, and needs no message when it holds a
fresh price. On a miss it tells the `QuoteActor`, which asks Dhan's market quote API (POST
/marketfeed/ltp) and answers with a `QuotePrice`. Dhan allows that API one request a second per
account, up to 1000 instruments each, and only to accounts with a data plan (GET /profile:
`dataPlan`). So the actor reads every account's plan at start, puts every instrument waiting into
one request, paces requests per account, spreads them over the accounts that may ask, and caches
the answers for `quotes.cache_seconds`. It calls the broker on its own thread, never under the
sizing actor's lock, and nobody waits on it synchronously: an order actor that gets no price
falls back to the leader's fill (trading/prices.py).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from actors.messages import QuotePrice, QuoteWanted, Tick
from actors.rate_limiter import SlidingWindows
from app import metrics
from broker.errors import ErrorKind
from broker.gateway import DhanGateway, Quote
from supervisors import Address, Supervised
from trading.orders import OrderTerms

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
    """Asks for quotes on behalf of order actors. State is only what is being waited for: a
    restarted incarnation re-reads the plans, and order actors whose question was lost fall
    back to the leader's fill."""

    def __init__(self, address: Address, supervisor: Address | None, board: QuoteBoard,
                 gateways: Mapping[str, DhanGateway], *, requests_per_second: int = 1,
                 max_batch: int = MAX_BATCH, recheck_seconds: float = 300.0) -> None:
        super().__init__(address, supervisor)
        self.board = board
        self.gateways = gateways
        self.max_batch = max_batch
        self.recheck_seconds = recheck_seconds
        self._windows = {name: SlidingWindows([(requests_per_second, 1.0)]) for name in gateways}
        self._askers: list[str] = []  # accounts with a data plan, in the order given (the leader first)
        self._unchecked: list[str] = list(gateways)  # plan not known yet (profile unavailable)
        self._checked_at = 0.0
        self._wanted: dict[Key, list[Address]] = {}  # in order of arrival; each with its askers
        self._wake: threading.Timer | None = None

    def started(self) -> None:
        self._check_plans()

    def on_stop(self) -> None:
        super().on_stop()
        if self._wake is not None:
            self._wake.cancel()

    def on_failure(self, *exc_info: Any) -> None:
        if self._wake is not None:
            self._wake.cancel()
        super().on_failure(*exc_info)

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, QuoteWanted):
            key = (message.exchange_segment, message.security_id)
            price = self.board.fresh(key)  # a request since the order actor looked may have brought it
            if price is not None:
                message.reply_to.tell(QuotePrice(*key, price))
                return None
            self._wanted.setdefault(key, []).append(message.reply_to)
            self._drain()
        elif isinstance(message, Tick) and message.what == "quotes":
            self._wake = None
            self._drain()
        elif message == "askers":
            return list(self._askers)
        return None

    def _check_plans(self) -> None:
        """Read the profile of every account whose plan is not known yet."""
        self._checked_at = time.monotonic()
        for name in list(self._unchecked):
            answer = self.gateways[name].profile()
            if not answer.ok:
                log.warning("profile of %s unavailable (%s); its data plan is checked again later", name,
                            answer.error)
                continue
            self._unchecked.remove(name)
            if answer.data.data_plan:
                self._askers.append(name)
        metrics.QUOTE_ACCOUNTS.set(len(self._askers))
        if self._askers:
            log.info("market quotes are asked through %s", ", ".join(self._askers))
        elif not self._unchecked:
            log.warning("no account has a data plan: orders without a price are valued at the leader's fill")

    def _drain(self) -> None:
        """Ask for everything wanted, in as few requests as the accounts' windows allow."""
        while self._wanted:
            if self._unchecked and time.monotonic() - self._checked_at >= self.recheck_seconds:
                self._check_plans()
            if not self._askers:
                self._answer(list(self._wanted), {})
                return
            now = time.monotonic()
            waits = {name: self._windows[name].wait_time(now) for name in self._askers}
            account = min(self._askers, key=waits.__getitem__)
            if waits[account] > 0:
                self._wake_in(waits[account])
                return
            self._windows[account].take(now)
            batch = list(self._wanted)[:self.max_batch]
            answer = self.gateways[account].quotes(batch)
            metrics.QUOTE_REQUESTS.labels(account, "ok" if answer.ok else "failed").inc()
            if answer.ok:
                self.board.put(answer.data.values())
                self._answer(batch, answer.data)
            elif answer.error is not None and answer.error.kind == ErrorKind.AUTH:
                # the plan lapsed (DH-902) or the token expired (DH-901): ask through the others
                # meanwhile, and this one again after the next check of its profile
                self._askers.remove(account)
                self._unchecked.append(account)
                metrics.QUOTE_ACCOUNTS.set(len(self._askers))
                log.warning("market quotes refused to %s (%s); asking through the other accounts", account,
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
            self._wake = threading.Timer(seconds, self.address.tell, args=(Tick("quotes"),))
            self._wake.daemon = True
            self._wake.start()
