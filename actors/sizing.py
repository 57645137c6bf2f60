"""The sizing actor: follower quantities, the capital lock, and the pre-trade risk checks.

Every copy is sized and its capital reserved here, one request at a time (an actor's inbox is
its lock), so two leader orders arriving at the same instant can never together commit more than
a follower has, and once capital runs out later copies are skipped with a reason.

The broker is never called under that lock: an `AccountReader` reads funds and positions on its
own threads and tells this actor what it read, every account at start and every
`refresh_seconds`. A capital reading supersedes the reservations made before it was fetched (the
broker's balance counts those orders already); fills seen since a positions reading was fetched
are added to it. Requests made before the first readings wait for them.

An order that only reduces the leader's position is an exit: the follower reduces its *own*
position by the same fraction, never more than it holds. The leader's position is the one its
order found (actors/leader_ledger.py; read from the broker where that is not known). The follower
may have traded by hand since the last reading, so an exit waits for positions read after it
arrived (exits that come while a reading is out share the next one), answered with a
future (`ask_sizing`; a `SizeCopies` asker is told `SizingReady()` when it is set, and holds no
thread meanwhile); meanwhile other orders are sized, only those on the same underlying waiting
behind it. An exit waits for its followers' copies still on their way (actors/sizing_on_way.py),
and cancels or shrinks those left resting, or grows as they fill (actors/sizing_resting.py).
Each follower's `risk` limits are checked here too; a daily-loss breach calls `on_daily_loss`
(the kill switch).
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Iterable

import pykka

from actors.account_reader import AccountGateway, AccountReader
from actors.leader_ledger import LeaderLedger
from actors.positions import KnownPositions
from actors.reservations import Reservation, Reservations
from actors.sizing_control import CONTROLS, FOLLOWER_PAUSED, apply_control
from actors.sizing_on_way import OnTheirWay
from actors.sizing_resting import RestingCopies
from actors.strategy_legs import Strategy, size_legs
from actors.messages import (AccountsRead, CapitalSnapshot, CopiesInDoubt, CopiesResting, CopiesSettleDue,
                             ExitReadingDue, ExitWaiting, FillSeen, FillUncounted, FreeCapital, PlacementRetried,
                             PlacementsPaused, PositionsSnapshot, RefreshAccounts, ReleaseCapital, ResumeAccount,
                             SizeCopies, SizeCopy, SizeDecision, SizedCopies, SizingHeld, SizingReady, SuspendAccount,
                             is_leader)
from supervisors import Address, Timers
from supervisors.pool import PooledSupervised
from trading import risk
from trading.calendar import ist_date, now as exchange_now
from trading.filters import OUTSIDE_COPY_WINDOW, CopyWindow, Filters
from trading.prices import price_note
from trading.sizing import SizingRule, estimate_margin, size_order


log = logging.getLogger(__name__)

# Ids of readings, unique in the process: a restarted actor never takes an earlier incarnation's
# reading for one it asked for.
_READINGS = itertools.count(1)
NEXT_ROUND = 0  # an exit waiting for the next exit reading to begin (one is out)


SIZING_TIMEOUT = 5.0  # an order actor's patience for a size, a reading's included (more when told SizingHeld)
EXIT_READING_SECONDS = 3.0
ANSWER_WAIT_SECONDS = 5.0  # the broker timeout's default (copier/config.py)
POSITIONS_UNREAD = "positions_unread"
NO_POSITION_TO_EXIT = "no_position_to_exit"
MAX_SIZED_KEPT = 100_000  # copies whose first sizing time is remembered (the oldest forgotten first)


def ask_sizing(sizing: Address, message: SizeCopy | SizeCopies, timeout: float = SIZING_TIMEOUT,
               wait: bool = True) -> Any:
    """Ask the sizing actor for a size. A request that waits for broker readings is answered with
    a future, which this waits for within the same `timeout` (`wait=False`: returned as it is; a
    `SizeCopies` with a `reply_to` has it told `SizingReady()` once it is set):

        sized = ask_sizing(ctx.sizing, SizeCopies(requests, leader_order_id))

    Raises pykka.Timeout or pykka.ActorDeadError, as an ask does."""
    deadline = time.monotonic() + timeout
    answer = sizing.ask(message, timeout=timeout)
    if isinstance(answer, pykka.Future) and wait:
        answer = answer.get(timeout=max(0.0, deadline - time.monotonic()))
    return answer


@dataclass
class _Waiting:
    """A size request answered later, through `future`."""

    message: SizeCopies | SizeCopy
    requests: tuple[SizeCopy, ...]
    future: pykka.Future = field(init=False)
    reading: int | None = None  # the exit reading it waits for (NEXT_ROUND: the next one begun)
    exit_reading: AccountsRead | None = None
    checked: bool = False  # looked at as a possible exit (once the first readings are in)
    followers: tuple[str, ...] = ()  # whose positions the exit reading reads
    before: int | None = None  # the leader's position before its order (None: not an exit)
    look_up: bool = False  # `before` is asked of the broker with the reading (the copier could not count it)
    closes: bool = False  # it takes its leader's position to nothing: copies left resting are cancelled
    read_since: float = 0.0  # monotonic, when its exit reading began: its readings share one deadline
    settle_by: float | None = None  # monotonic: until then it waits for its followers' copies on their way
    lane_held_until: float = 0.0  # monotonic: until when its lane is held for it (askers in it told)

    @property
    def lane(self) -> str:
        """Requests on one underlying are answered in the order they came."""
        first = self.requests[0] if self.requests else None
        return (first.instrument.underlying or first.terms.security_id) if first else ""

    def tell_held(self, seconds: float) -> None:
        """It waits up to `seconds` more than a size usually takes (an exit ahead of it, or itself,
        waits for copies in doubt): so the asker does not take the sizing actor for stuck meanwhile."""
        self._tell_asker(SizingHeld(seconds))

    def tell_settled(self) -> None:
        """Its future is set (an answer or a failure)."""
        self._tell_asker(SizingReady())

    def _tell_asker(self, message: Any) -> None:
        """Tell an asker that does not wait on its future (a SizeCopy's asker waits: it has none)."""
        reply_to = getattr(self.message, "reply_to", None)
        if reply_to is not None:
            reply_to.tell(message)


class SizingActor(PooledSupervised):
    """The capital lock (the module's docstring says how it sizes). Asked one leader order at a
    time through `ask_sizing`; told what the account reader read (`AccountsRead`), the fills
    order actors see (`FillSeen`), and the copies that ended (`ReleaseCapital`)."""

    def __init__(self, address: Address, supervisor: Address | None, rules: dict[str, SizingRule],
                 accounts: dict[str, AccountGateway], refresh_seconds: float = 30.0,
                 margin_fractions: dict[str, float] | None = None, check_capital: bool = True,
                 leg_window_seconds: float = 0.0, limits: dict[str, risk.RiskLimits] | None = None,
                 on_daily_loss: Callable[[str, str], None] = lambda follower, detail: None,
                 filters: dict[str, Filters] | None = None, suspended: dict[str, str] | None = None,
                 first_funds: dict[str, Any] | None = None, copy_windows: dict[str, CopyWindow] | None = None,
                 clock: Callable[[], datetime] = exchange_now, timers: Timers | None = None,
                 paused: dict[str, str] | None = None,
                 leader_rules: dict[tuple[str, str], SizingRule] | None = None,
                 ledger: LeaderLedger | None = None, exit_reading_seconds: float = EXIT_READING_SECONDS,
                 answer_wait_seconds: float = ANSWER_WAIT_SECONDS, router: Address | None = None) -> None:
        super().__init__(address, supervisor)
        self.router = router  # told to cancel the copies an exit leaves resting, or to grow an exit's copies
        # each leader's position as its updates told it, in order (actors/leader_ledger.py): the
        # position each leader order found, when known, says whether it is an exit
        self.ledger = ledger
        # follower -> the skip detail of its new orders while an operator has it paused; given by
        # the tree (read from storage at start), so it outlives a restart of this actor
        self.paused: dict[str, str] = paused if paused is not None else {}
        self.copy_windows = copy_windows or {}
        self.clock = clock  # the copier's exchange clock, the one its market-hours rules read
        self.timers = timers
        self.rules = rules
        # (follower, leader account) -> the follower's sizing for that leader's orders, over `rules`
        self.leader_rules = leader_rules or {}
        self.accounts = accounts  # account -> its gateway (fund_limit, positions, order), the leader's included
        self.limits = limits or {}
        self.filters = filters or {}
        self.on_daily_loss = on_daily_loss
        self.positions = KnownPositions()
        self.recent_orders: dict[str, deque[float]] = {name: deque(maxlen=1000) for name in rules}
        # follower -> why its copies are skipped; given by the tree, so it outlives a restart of this actor
        self.suspended: dict[str, str] = suspended if suspended is not None else {}
        # the start-up account check's /fundlimit answers: the first reading, not asked for twice
        self.first_funds = first_funds if first_funds is not None else {}
        self.refresh_seconds = refresh_seconds
        self.margin_fractions = margin_fractions
        self.check_capital = check_capital
        self.capital: dict[str, CapitalSnapshot] = {}
        self.start_of_day: dict[str, float] = {}
        self.reservations: dict[str, Reservations] = {name: Reservations() for name in rules}
        self.last_price: dict[str, float] = {}
        self.leg_window = leg_window_seconds
        self.strategies: dict[tuple[str, str], Strategy] = {}  # by leader account and underlying
        self.reader: AccountReader | None = None
        self.waiting: list[_Waiting] = []  # in the order they came
        self._first_round: int | None = None  # the start-up reading, while it is out
        self._refresh: int | None = None  # a periodic reading, while it is out
        # Exits' readings: one out at a time, and every exit that came meanwhile waits for the
        # next, which reads for them all (a reading begun after an exit came serves it): however
        # fast exits come, a follower's positions are read at most once per reading's round trip.
        self._exit_round: int | None = None
        self._exits_next: list[_Waiting] = []
        # followers whose positions were still out when a round was hurried, by round: until that
        # round's whole reading is in they are not asked again (a later round would wait for them)
        self._slow: dict[int, tuple[str, ...]] = {}
        self._asked: frozenset[str] = frozenset()  # the followers the round out asked
        # how long exits wait for their followers' positions: one slow broker must not hold up
        # every follower's exit (a follower not read by then is sized from what the copier knows)
        self.exit_reading_seconds = exit_reading_seconds
        self.answer_wait_seconds = answer_wait_seconds  # the broker's timeout: a placement is answered by then
        # (follower, leader order) -> when its copy was first sized (monotonic ns): the copy's
        # orders did not exist before, so a reading answered earlier does not hold their fills
        self._sized: dict[tuple[str, str], int] = {}
        self.on_way = OnTheirWay(rules)  # copies not yet at their broker, which exits wait for
        self.resting = RestingCopies(self)  # what exits do to those left resting

    def started(self) -> None:
        funds = {}
        for account in self.accounts:
            answer = self.first_funds.pop(account, None)  # used by the first incarnation only
            if answer is not None and answer.ok:
                funds[account] = answer.data
        self.reader = AccountReader(self.accounts, self.address.tell)
        self._first_round = next(_READINGS)
        self.reader.read_all(self._first_round, funds, books=self._leader_books())
        if self.timers is not None:
            self.timers.every(self.refresh_seconds, self.address, RefreshAccounts(), owner=self.actor_ref)

    def on_stop(self) -> None:
        super().on_stop()
        self._halt()

    def on_failure(self, *exc_info: Any) -> None:
        self._halt()
        super().on_failure(*exc_info)

    def _halt(self) -> None:
        """The readings stop; whoever waits for an answer is told at once that none will come."""
        if self.reader is not None:
            self.reader.close()
        for waiting in self.waiting:
            waiting.future.set_exception(exc_info=(pykka.ActorDeadError, pykka.ActorDeadError(
                f"{self.address.name} stopped before answering"), None))
            waiting.tell_settled()
        self.waiting, self._exits_next = [], []

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, (SizeCopies, SizeCopy)):
            return self._admit(message)
        if isinstance(message, AccountsRead):
            self._apply_reading(message)
        elif isinstance(message, ReleaseCapital):
            self.reservations.get(message.follower, {}).pop(message.correlation_id, None)
            self._arrived(((message.follower, message.correlation_id),))
        elif isinstance(message, CopiesInDoubt):
            self.on_way.in_doubt(message.copies)
            self._settling_changed()
        elif isinstance(message, CopiesResting):
            self.on_way.resting(message.copies, self.resting.traded)
        elif isinstance(message, ExitWaiting):
            self.on_way.exit_told(message.followers, message.leader, message.protection, self.resting.traded)
        elif isinstance(message, PlacementRetried):
            if self.on_way.retried(message.follower, message.correlation_id, message.retry_at):
                self._settling_changed()
        elif isinstance(message, PlacementsPaused):
            if self.on_way.paused(message.follower, message.until):
                self._settling_changed()
        elif isinstance(message, CopiesSettleDue):
            self._drain()
        elif isinstance(message, CapitalSnapshot):
            self._apply_snapshot(message)
        elif isinstance(message, PositionsSnapshot):
            self._apply_positions(message)
        elif isinstance(message, FillSeen):
            self.positions.fill(message)
            self.resting.fill_seen(message.account, message.leader_order_id)
        elif isinstance(message, FillUncounted):
            self.resting.fill_uncounted(message)
        elif isinstance(message, SuspendAccount):
            self.suspended[message.follower] = message.reason
        elif isinstance(message, ResumeAccount):
            self.suspended.pop(message.follower, None)
        elif isinstance(message, RefreshAccounts):
            self.read_all()
        elif isinstance(message, ExitReadingDue):  # (the reader ignores one told already)
            if self.reader is not None:
                self.reader.hurry(message.request)
        elif isinstance(message, FreeCapital):
            return {name: self._free(name) for name in self.rules}
        elif isinstance(message, CONTROLS):
            apply_control(self, message)
        return None

    def read_all(self) -> None:
        """Read every account's funds and positions, unless a round is out already."""
        if self.reader is not None and self._first_round is None and self._refresh is None:
            self._refresh = next(_READINGS)
            self.reader.read_all(self._refresh, books=self._leader_books())

    def _leader_books(self) -> list[str]:
        """The leaders whose order books the ledger still needs (read with every account's funds)."""
        if self.ledger is None:
            return []
        day = ist_date(self.clock())
        return [account for account in self.accounts if is_leader(account) and self.ledger.wants_book(account, day)]

    # -- requests that wait ----------------------------------------------------------------------
    def _admit(self, message: SizeCopies | SizeCopy) -> Any:
        """The answer now when it can be given, else a future answered once it can."""
        waiting = _Waiting(message, message.requests if isinstance(message, SizeCopies) else (message,))
        if not self._asked_again(waiting):
            if self._ready(waiting, self.waiting):
                return self._answer(waiting)
            waiting.future = pykka.ThreadingFuture()  # (made only for a request that waits: most never do)
            self.waiting.append(waiting)
        held = self.on_way.lane_held(waiting.lane)
        if held > 0:  # (in a lane held by an exit that waits for copies in doubt)
            waiting.tell_held(held)
        return waiting.future

    def _asked_again(self, waiting: _Waiting) -> bool:
        """A leader order's copies asked for again while the first request still waits (its order
        actor gave up waiting and restarted): the new request takes the first one's place and
        whatever it waited for, so it is not sized after the orders that came since."""
        message = waiting.message
        if not isinstance(message, SizeCopies) or not message.leader_order_id:
            return False
        for first in self.waiting:
            if isinstance(first.message, SizeCopies) and first.message.leader_order_id == message.leader_order_id:
                first.future.set_exception(exc_info=(RuntimeError, RuntimeError(
                    f"the copies of leader order {message.leader_order_id} were asked again"), None))
                first.tell_settled()
                first.message, first.requests = message, waiting.requests
                first.future = waiting.future = pykka.ThreadingFuture()
                return True
        return False

    def _ready(self, waiting: _Waiting, ahead: list[_Waiting]) -> bool:
        """Whether `waiting` can be answered now; asks for the readings an exit needs."""
        if self._first_round is not None or waiting.reading is not None:
            return False
        if waiting.settle_by is not None:  # an exit waiting for its followers' copies on their way
            now, until = time.monotonic(), self._unsettled(waiting)
            if until is not None and (until > waiting.settle_by  # (a copy fell in doubt meanwhile)
                                      or (waiting.lane_held_until < until and now >= self._hold_lane_at(waiting))):
                self._hold(waiting, until, now)
            if until is not None and now < waiting.settle_by:
                return False
            if self._cancel_resting(waiting):
                until = self._unsettled(waiting)
                if until is not None:
                    self._hold(waiting, until, now)
                    return False
            waiting.settle_by = None  # (a long wait for copies in doubt leaves its reading half the time)
            if not any(other.settle_by is not None for other in self.waiting if other.lane == waiting.lane):
                self.on_way.release_lane(waiting.lane)
            waiting.read_since = max(waiting.read_since, now - self.exit_reading_seconds / 2)
            self._read_for(waiting)
            return False
        if any(other.lane == waiting.lane for other in ahead):
            return False
        if not waiting.checked:
            waiting.checked = True
            followers = [r.follower for r in waiting.requests if self._may_copy(r) is None]
            first = waiting.requests[0] if waiting.requests else None
            if first is not None and followers and self.reader is not None:
                key, sign = risk.position_key(first.terms), risk.side_sign(first.terms)
                found = self.ledger.found(first.leader, first.leader_order_id, key) if self.ledger else None
                if found is not None:  # the leader's position when its order came: no reading of it
                    if not risk.is_exit(found, sign * first.terms.quantity):
                        return True
                    waiting.before = found
                else:  # the broker says: what the copier saw may miss fills or hold one twice (a
                    # reading made after the order filled, less its fills as first seen: none). A
                    # ledger that could not place it saw it out of order; with none (no leader feed
                    # in order), the copier's own reading rules out what it can.
                    known = self.positions.quantity(first.leader, key) - sign * first.leader_filled
                    as_read = self.positions.as_read(first.leader, key)  # (fills seen since may be in it)
                    if (self.ledger is None or not first.leader_order_id) and not any(
                            risk.is_exit(held, sign * first.terms.quantity)
                            for held in (known, as_read, as_read - sign * first.leader_filled)):
                        return True
                    waiting.before, waiting.look_up = known, bool(first.leader_order_id)
                waiting.followers = tuple(followers)
                waiting.closes = not waiting.look_up and self._closes(waiting)  # (else once the broker says)
                self._cancel_resting(waiting)
                settle_by = self._unsettled(waiting) if self.timers is not None else None
                if settle_by is not None:
                    waiting.read_since = time.monotonic()  # (its reading's deadline counts from now)
                    self._hold(waiting, settle_by, waiting.read_since)
                    return False
                self._read_for(waiting)
                return False
        return True

    def _unsettled(self, waiting: _Waiting) -> float | None:
        """Until when the exit waits for its followers' copies on their way (None: it need not)."""
        first, ledger = waiting.requests[0], self.ledger
        return self.on_way.held_until(waiting.followers, risk.position_key(first.terms), first.leader_order_id,
                                      self.exit_reading_seconds, self.answer_wait_seconds,
                                      ledger.filled if ledger is not None else lambda _leader, _order_id: None)

    def _closes(self, waiting: _Waiting) -> bool:
        """Whether the exit takes its leader's position (`waiting.before`) to nothing."""
        first = waiting.requests[0]
        return waiting.before is not None and waiting.before + risk.side_sign(first.terms) * first.terms.quantity == 0

    def _closes_once_looked_up(self, waiting: _Waiting) -> bool:
        """An exit whose leader's position before it the broker was asked for, and says it closes
        that position: it cancels its followers' copies left resting, and reads their positions
        again once those have ended. Whether it does."""
        waiting.closes = self._closes(waiting)
        if not self._cancel_resting(waiting):
            return False
        until = self._unsettled(waiting)
        if until is None:
            return False
        waiting.exit_reading, waiting.look_up = None, False
        self._hold(waiting, until, time.monotonic())
        return True

    def _cancel_resting(self, waiting: _Waiting) -> bool:
        """An exit that closes its leader's position cancels its followers' copies still resting
        of the leader's orders in it that have filled (trading/copies_on_way.py `resting`), and
        waits for them to end. Whether it asked for any. Only an exit at the market, or one that
        has begun to fill: a target or a protective stop that waits for its price leaves the leader
        holding what those copies follow until it fills (actors/sizing_resting.py then)."""
        if not waiting.closes or self.router is None or self.ledger is None or self.timers is None:
            return False
        first = waiting.requests[0]
        if not self.resting.executing(first):
            return False
        asked = self.on_way.cancel_resting(waiting.followers, first.leader, risk.position_key(first.terms),
                                           first.leader_order_id, self.exit_reading_seconds, self.answer_wait_seconds,
                                           self.ledger.traded)
        self.resting.cancel(first.leader_order_id, asked)
        return bool(asked)

    def _hold(self, waiting: _Waiting, until: float, now: float) -> None:
        """The exit waits for its followers' copies until `until` (monotonic), at most. Once it has
        waited half an exit wait (a copy nearly always has filled long before), it holds
        up its lane: the wait can outlast an order actor's patience for a size (a slow broker,
        copies in doubt), so every asker in the lane is told how long."""
        assert self.timers is not None
        waiting.settle_by = until
        hold_lane_at = self._hold_lane_at(waiting)
        if now < hold_lane_at:  # (looked at again then, if it still waits)
            self.timers.after(min(until, hold_lane_at) - now, self.address, CopiesSettleDue(), owner=self.actor_ref)
            return
        self.timers.after(until - now, self.address, CopiesSettleDue(), owner=self.actor_ref)
        waiting.lane_held_until = until
        lane = waiting.lane
        self.on_way.hold_lane(lane, until)
        for other in [waiting, *(other for other in self.waiting if other is not waiting and other.lane == lane)]:
            other.tell_held(until - now)

    def _hold_lane_at(self, waiting: _Waiting) -> float:
        """When an exit still waiting for copies holds up its lane (monotonic)."""
        return waiting.read_since + self.exit_reading_seconds / 2

    def _arrived(self, copies: Iterable[tuple[str, str]]) -> None:
        """Copies ended (filled, or cancelled, rejected, skipped): exits waiting for them go on."""
        if self.on_way.arrived(copies):
            self._settling_changed()

    def _settling_changed(self) -> None:
        """Copies on their way came or went: the exits waiting for them go on, or wait longer."""
        if any(waiting.settle_by is not None for waiting in self.waiting):
            self._drain()

    def _read_for(self, waiting: _Waiting) -> None:
        """The exit's followers' positions, with the next exit reading."""
        waiting.reading = NEXT_ROUND
        self._exits_next.append(waiting)
        self._read_exits()

    def _read_exits(self) -> None:
        """Begin the next exit reading, for every exit waiting for one, unless one is out."""
        if self._exit_round is not None or not self._exits_next or self.reader is None:
            return
        batch, self._exits_next = self._exits_next, []
        self._exit_round = next(_READINGS)
        followers: dict[str, None] = {}
        slow = {follower for round_ in self._slow.values() for follower in round_}
        now = time.monotonic()
        lookups = []
        since = min([waiting.read_since for waiting in batch if waiting.read_since] + [now])
        for waiting in batch:  # (one that waited for copies on its way began its wait then)
            waiting.reading, waiting.read_since = self._exit_round, waiting.read_since or now
            followers.update(dict.fromkeys(waiting.followers))
            if waiting.look_up:
                first = waiting.requests[0]
                lookups.append((first.leader, first.leader_order_id, risk.position_key(first.terms),
                                risk.side_sign(first.terms)))
        self._asked = frozenset(f for f in followers if f not in slow)
        self.reader.read_exit(self._exit_round, [f for f in followers if f in self._asked], lookups,
                              unread=[f for f in followers if f in slow])
        self._hurry_later(self._exit_round, since)

    def _hurry_later(self, request: int, since: float) -> None:
        """Exits wait until `exit_reading_seconds` after their reading began (`since`) for reading
        `request`, then decide with what is in: a book read after the positions shares that time."""
        if self.timers is not None and self.exit_reading_seconds > 0:
            delay = max(0.0, since + self.exit_reading_seconds - time.monotonic())
            self.timers.after(delay, self.address, ExitReadingDue(request), owner=self.actor_ref)

    def _answer(self, waiting: _Waiting) -> Any:
        reading = waiting.exit_reading
        exit_before = waiting.before if reading is not None else None
        unread = frozenset(reading.unread) if reading is not None else frozenset()
        if isinstance(waiting.message, SizeCopies):
            sized = self._size_order(waiting.message, exit_before, unread)
            if exit_before is not None:
                self.resting.exit_sized(waiting.requests[0], waiting.before, waiting.followers)
            return sized
        return self._size(waiting.message, exit_before, new_order=waiting.message.new_order, unread=unread)

    def _drain(self) -> None:
        """Answer, in order, every waiting request that now can be."""
        index = 0
        while index < len(self.waiting):
            waiting = self.waiting[index]
            if not self._ready(waiting, self.waiting[:index]):
                index += 1
                continue
            del self.waiting[index]
            try:
                waiting.future.set(self._answer(waiting))
            except Exception:  # noqa: BLE001 - as with an ask, the error goes back to the asker
                log.exception("sizing a waiting request failed")
                waiting.future.set_exception()
            waiting.tell_settled()

    def _apply_reading(self, reading: AccountsRead) -> None:
        for capital in reading.capital:
            self._apply_snapshot(capital)
        for positions in reading.positions:
            self._apply_positions(positions)
        if reading.request == self._first_round:
            self._first_round = None
        elif reading.request == self._refresh:
            self._refresh = None
        elif reading.request == self._exit_round:
            self._exit_round = None
            pending = tuple(follower for follower in reading.unread if follower in self._asked)
            if pending:
                self._slow[reading.request] = pending
        elif reading.request in self._slow:  # the whole of a hurried round: its slow followers answered
            del self._slow[reading.request]
        for book in reading.books:
            if is_leader(book.account) and self.ledger is not None:  # (read until the ledger has one)
                self.ledger.book(book.account, book.fills, ist_date(self.clock()))
            else:
                self.positions.apply_book(book.account, book.fills)
        for waiting in self.waiting:
            if waiting.reading != reading.request:
                continue
            waiting.reading = None
            if waiting.exit_reading is None:  # (else these are the books it waited for)
                waiting.exit_reading = reading
                if waiting.look_up:
                    waiting.before = dict(reading.leaders_before).get(waiting.requests[0].leader_order_id,
                                                                      waiting.before)
                    if self._closes_once_looked_up(waiting):
                        continue
                raced = self._raced(waiting, reading)
                if raced and self.reader is not None:
                    waiting.reading = next(_READINGS)
                    self.reader.read_books(waiting.reading, raced)
                    self._hurry_later(waiting.reading, waiting.read_since)
        self._read_exits()
        self._drain()

    def _raced(self, waiting: _Waiting, reading: AccountsRead) -> list[str]:
        """The followers an exit's reading may count a fill twice for: one seen in its instrument
        while their positions were read (the broker may have counted it already), or since the
        last reading of a follower whose positions could not be read now. Their order books say."""
        key, mine = risk.position_key(waiting.requests[0].terms), set(waiting.followers)
        read = {positions.account for positions in reading.positions} | set(reading.unread)  # (not asked again)
        return [positions.account for positions in reading.positions
                if positions.account in mine and positions.carried is not None
                and self.positions.raced(positions.account, key, self._made_ns)] + \
            [follower for follower in waiting.followers
             if follower not in read and self.positions.raced(follower, key, self._made_ns)]

    def _apply_snapshot(self, snapshot: CapitalSnapshot) -> None:
        current = self.capital.get(snapshot.account)
        if current is not None and snapshot.fetched_at < current.fetched_at:
            return  # read before the one in hand, answered late
        self.capital[snapshot.account] = snapshot
        self.start_of_day.setdefault(snapshot.account, snapshot.start_of_day)
        for cid, reservation in list(self.reservations.get(snapshot.account, {}).items()):
            if reservation.made_at < snapshot.fetched_at - 1.0:
                del self.reservations[snapshot.account][cid]

    def _apply_positions(self, snapshot: PositionsSnapshot) -> None:
        if self.ledger is not None and snapshot.carried is not None and is_leader(snapshot.account):
            self.ledger.carry(snapshot.account, snapshot.carried, ist_date(self.clock()))
        if not self.positions.apply(snapshot):
            return
        self.resting.positions_read(snapshot)
        limits = self.limits.get(snapshot.account)
        if limits is not None and risk.daily_loss_breached(limits, self._risk_state(snapshot.account)):
            self.on_daily_loss(snapshot.account, f"P&L today {snapshot.realised + snapshot.unrealised:,.0f} "
                                                 f"beyond the limit of -{limits.max_daily_loss:,.0f}")

    def _risk_state(self, follower: str) -> risk.RiskState:
        positions = self.positions.get(follower)
        capital = self.capital.get(follower)
        return risk.RiskState(positions=positions.positions if positions else {},
                              recent_orders=tuple(self.recent_orders.get(follower, ())),
                              capital=capital.start_of_day if capital else 0.0,
                              realised_pnl=positions.realised if positions else 0.0,
                              unrealised_pnl=positions.unrealised if positions else 0.0)

    def _outside_window(self, request: SizeCopy, new_order: bool, exit_decision: SizeDecision | None
                        ) -> SizeDecision | None:
        """The skip of a new order outside the follower's copy window, or None (exits pass)."""
        window = self.copy_windows.get(request.follower) if new_order else None
        detail = window.refusal(self.clock(), exit=exit_decision is not None) if window is not None else None
        return SizeDecision(0, 0, 0.0, OUTSIDE_COPY_WINDOW, detail) if detail else None

    def _exit(self, request: SizeCopy, before: int | None, unread: frozenset[str] = frozenset()
              ) -> SizeDecision | None:
        """The follower's quantity for a leader order that only reduces the leader's position, or
        None when it is not such an order. `before`: the leader's position before it, once the
        follower's positions were read after it arrived (None: no exit, or the broker could not
        confirm the leader's position); `unread`: followers whose positions were not in in time,
        sized from the last reading and the fills since, unless a fill since may be in it."""
        terms = request.terms
        if not risk.reduces(terms, before):
            return None  # (None before: the broker could not confirm the leader's position, sized as an entry)
        key = risk.position_key(terms)
        held = self.positions.quantity(request.follower, key)
        if self.positions.raced(request.follower, key, self._made_ns):  # (its order book could not say which)
            if request.follower in unread:
                return SizeDecision(0, 0, 0.0, POSITIONS_UNREAD,
                                    f"{request.follower}'s positions were not answered within "
                                    f"{self.exit_reading_seconds:g} s and a fill since its last reading may be in "
                                    f"it: the exit is not copied, its position is left as it is")
            held = risk.surely_held(held, self.positions.as_read(request.follower, key))
        quantity = risk.exit_quantity(before, terms.quantity, held, request.instrument.lot_size)
        if quantity <= 0:
            return SizeDecision(0, 0, 0.0, NO_POSITION_TO_EXIT,
                                f"the leader reduces its position; {request.follower} holds nothing to reduce")
        return SizeDecision(quantity, 0, 0.0)

    def _free(self, follower: str) -> float | None:
        snapshot = self.capital.get(follower)
        if snapshot is None:
            return None
        reserved = self.reservations.get(follower)
        return snapshot.available - (reserved.total if reserved is not None else 0.0)

    def _capital_ratio(self, follower: str, leader_account: str) -> float | None:
        leader, mine = self.start_of_day.get(leader_account), self.start_of_day.get(follower)
        return (mine / leader) if leader and mine else None

    def _size_order(self, message: SizeCopies, exit_before: int | None = None,
                    unread: frozenset[str] = frozenset()) -> SizedCopies:
        """Every follower's copy of one leader order, then the strategy it may be a leg of (see
        actors/strategy_legs.py). Deciding it here, one order at a time, means two legs arriving
        together cannot both believe they are the first."""
        decisions = [self._size(request, exit_before, new_order=True, unread=unread)
                     for request in message.requests]
        sized = size_legs(self.strategies, message, decisions, self.leg_window, time.monotonic(), self._drop)
        if message.requests and risk.reduces(message.requests[0].terms, exit_before):
            return dataclasses.replace(sized, reduces_position=True, position_before=exit_before)  # (sent however late)
        return sized

    def _drop(self, request: SizeCopy, reason: str, detail: str, unwind: bool = False) -> SizeDecision:
        self.reservations[request.follower].pop(request.correlation_id, None)
        return SizeDecision(0, 0, 0.0, reason, detail, unwind=unwind)

    def _may_copy(self, request: SizeCopy) -> SizeDecision | None:
        """The skip of a follower that copies nothing of this order, whatever its size."""
        if request.follower in self.suspended:
            return SizeDecision(0, 0, 0.0, "account_suspended", self.suspended[request.follower])
        refused_by = self.filters[request.follower].refusal(request.instrument) if request.follower in self.filters else None
        if refused_by:
            return SizeDecision(0, 0, 0.0, "filtered", f"{request.instrument.symbol} refused by filters.{refused_by}")
        return None

    def _size(self, request: SizeCopy, exit_before: int | None = None, new_order: bool = False,
              unread: frozenset[str] = frozenset()) -> SizeDecision:
        """`exit_before`, `unread`: the leader's position before the order, when it was read as an
        exit, and the followers not read for it (see `_exit`). `new_order`: the first sizing of a
        leader order's copies, which the follower's copy window may refuse, and an operator's
        pause; a re-size (the leader modified its quantity) follows the leader at any hour."""
        paused = self.paused.get(request.follower) if new_order else None
        if paused is not None:
            return SizeDecision(0, 0, 0.0, FOLLOWER_PAUSED, paused)
        skipped = self._may_copy(request)
        if skipped is not None:
            return skipped
        exit_decision = self._exit(request, exit_before, unread)
        decision = (self._outside_window(request, new_order, exit_decision) or exit_decision
                    or self._entry(request))
        if decision.skip_reason is None:
            limits = self.limits.get(request.follower)
            if limits is not None and limits.enabled:
                price = request.terms.price or request.terms.trigger_price or request.reference_price \
                    or self.last_price.get(request.terms.security_id, 0.0)
                verdict = risk.check(limits, self._risk_state(request.follower),
                                     request.terms.with_changes(quantity=decision.quantity), price, time.time())
                if not verdict.allowed:
                    self.reservations[request.follower].pop(request.correlation_id, None)
                    note = price_note(request.terms, request.reference_price, request.price_source, price)
                    return SizeDecision(0, 0, 0.0, verdict.rule or "risk_limit",
                                        f"{verdict.detail}; {note}" if note else verdict.detail)
            self.recent_orders[request.follower].append(time.time())
            if decision.quantity > 0 and request.leader_order_id:
                self._note_sized(request.follower, request.leader_order_id)
                self.on_way.sized(request)
        return decision

    def _note_sized(self, follower: str, leader_order_id: str) -> None:
        if (follower, leader_order_id) in self._sized:
            return  # (a re-size: the copy may have been placed since its first sizing)
        if len(self._sized) >= MAX_SIZED_KEPT:
            del self._sized[next(iter(self._sized))]
        self._sized[(follower, leader_order_id)] = time.monotonic_ns()

    def _made_ns(self, fill: FillSeen) -> int:
        """When the order of `fill` could first exist: its copy's first sizing (0: not known)."""
        return self._sized.get((fill.account, fill.leader_order_id), 0) if fill.leader_order_id else 0

    def _entry(self, request: SizeCopy) -> SizeDecision:
        rule = self.leader_rules.get((request.follower, request.leader)) or self.rules[request.follower]
        terms, inst = request.terms, request.instrument
        price = terms.price or terms.trigger_price or request.reference_price or self.last_price.get(terms.security_id, 0.0)
        if price > 0:
            self.last_price[terms.security_id] = price
        sized = size_order(rule, terms.quantity, terms.disclosed_qty, inst.lot_size, price,
                           terms.trigger_price, self._capital_ratio(request.follower, request.leader))
        if sized.skip_reason:
            return SizeDecision(0, 0, 0.0, sized.skip_reason, sized.detail)
        cost = estimate_margin(terms.product.value, terms.side.value, sized.quantity, price,
                               inst.is_option, inst.is_derivative, self.margin_fractions)
        existing = self.reservations[request.follower].get(request.correlation_id)
        free = self._free(request.follower)
        if existing is not None and free is not None:
            free += existing.amount  # a re-size replaces its own reservation
        if self.check_capital and free is not None and cost > free:
            return SizeDecision(0, 0, 0.0, "insufficient_capital",
                                f"needs about {cost:,.0f}, {max(free, 0):,.0f} free")
        self.reservations[request.follower][request.correlation_id] = Reservation(cost, time.time())
        return SizeDecision(sized.quantity, sized.disclosed_qty, cost)
