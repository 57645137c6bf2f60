"""The order actor: one per leader order, the only place that order's events are applied.

Being one actor per order serialises everything that happens to the order (place, modify, cancel,
fills, broker answers) without locks, and lets other orders proceed in parallel.

The model is *convergence*: for each follower the actor keeps a `target` (the leader's latest
terms, sized for that follower, plus whether it should be cancelled) and a `confirmed` (what the
broker last acknowledged). After every event it stores both, acknowledges the event, and sends at
most one broker call per copy to move `confirmed` toward `target`. That single rule gives
coalesced modifications (2.6), modify/cancel before placement (8.1, 8.2), and restart safety: a
restarted actor reloads target and confirmed from storage, looks its copies up at the broker
(by correlation id when the placement may not have landed), and carries on.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Collection

import pykka

from actors.context import CopierContext
from actors.feed import store_and_route
from actors.rate_limiter import send_all
from actors.messages import (LEADER, BrokerCall, BrokerReply, CancelCopies, FillSeen, OrderActorIdle,
                             OrderUpdateReceived, QuotePrice, ReleaseCapital, RetryCopy, SizeCopies, SizeCopy,
                             SizeDecision, SyncCopies, Tick, UnwindLeg, UnwindStrategy)
from app import metrics
from broker import codes
from broker.errors import BrokerError, ErrorKind
from storage import StorageDown
from storage import models as m
from supervisors import Address, Supervised
from trading.instruments import Instrument
from trading.lifecycle import InvalidTransition, OrderEvent, event_for_status, next_state
from trading.ordering import Ordering, order_of
from trading.orders import (OrderStatus, OrderTerms, OrderType, OrderUpdate, Side, Validity, correlation_id,
                            terms_from_dict, terms_to_dict, update_from_dict, update_to_dict)
from trading.prices import LEADER_FILL, NONE, QUOTE, awaits_price, own_price, traded_price

log = logging.getLogger(__name__)
S = OrderStatus


class OrderLog(logging.LoggerAdapter):
    """An order actor's log: every line carries its leader order id, and the follower when the
    line names one ("... follower %s ..."), as fields of the JSON log (app/logs.py)."""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if not self.isEnabledFor(level):
            return
        extra = dict(self.extra or {})
        pieces = str(msg).split("%s")
        for index, piece in enumerate(pieces[:-1]):
            if piece.endswith("follower ") and index < len(args):
                extra["follower"] = args[index]
                break
        self.logger.log(level, msg, *args, extra=extra, **kwargs)

# Lookups of a placement whose outcome is unknown, after one that got no answer: the next waits
# this long, doubling up to the cap (each lookup is itself retried by the rate limiter first).
LOOKUP_BACKOFF_FIRST = 0.5
LOOKUP_BACKOFF_MAX = 5.0
REREAD_ATTEMPTS = 5  # reads of an ambiguous leader order before the reconciler is left to check it
SETTLED_BY_BROKER = "settled_by_broker"  # outcome of held ambiguous updates once the broker's answer is applied
# A copy the broker could not be asked about (its lookup failed) is asked again after
# LOOKUP_RETRY_SECONDS, doubling up to LOOKUP_RETRY_MAX_SECONDS. After LOOKUP_ATTEMPTS failures in
# a row it is flagged `lookup_failed`, alerted and left alone until news of its order arrives (an
# update, a leader change, an operator's command) or the copier restarts: an order the broker
# does not know is not found by asking forever, and every ask spends the account's data budget.
LOOKUP_RETRY_SECONDS = 1.0
LOOKUP_RETRY_MAX_SECONDS = 30.0
LOOKUP_ATTEMPTS = 6
# Tokens of the calls order actors send, unique in the process: a restarted actor's copies must
# tell the answer to their own call from one to a call an earlier incarnation left queued.
_CALL_TOKENS = itertools.count(1)

# The leader's and a follower's fills come on different sockets, in either order. A follower fill
# applied before any leader fill waits this long for the leader's before it is judged: the copy
# filled first only if the exchange stamped the leader's fill later (or not at all by then).
FILLED_FIRST_GRACE_SECONDS = 2.0

# Broker failures that are a property of the market or the account, not of the copier: recorded
# as skips with the reason (5.3, 5.6, 6.x), never retried, never dead-lettered.
SKIP_REASONS = frozenset({"insufficient_margin", "circuit_limit", "trading_halted", "market_closed",
                          "exchange_holiday"})


@dataclass
class _Copy:
    """A follower copy in memory: its stored row plus what is in flight right now."""

    row: m.FollowerOrder
    in_flight: str | None = None
    in_flight_token: int = 0  # the token of the call in flight (BrokerCall.token)
    needs_sync: bool = False
    received_ns: int = 0  # when the leader update that created it arrived (latency), not stored
    rejection_handled: bool = False
    # while its placement's outcome is UNKNOWN (monotonic seconds; this incarnation's, not stored)
    unknown_since: float = 0.0
    absent_believed_from: float = 0.0  # a lookup sent before this that finds nothing is not believed
    next_lookup: float = 0.0  # the next lookup is not sent before this
    lookups_failed: int = 0  # lookups in a row that got no answer (their backoff)
    found_absent: int = 0  # placements a lookup found never took effect (each then placed again)
    lookup_failures: int = 0  # lookups in a row that failed
    lookup_after: float = 0.0  # monotonic: backing off, no lookup before this
    lookups_given_up: bool = False

    @property
    def status(self) -> OrderStatus:
        return OrderStatus(self.row.status)

    @property
    def target(self) -> OrderTerms:
        return _terms(self.row.target)

    @property
    def confirmed(self) -> OrderTerms | None:
        return _terms(self.row.confirmed) if self.row.confirmed else None


@dataclass
class _Sighting:
    """A leader order seen but not yet decided: it names no price and none is known yet. Its
    updates are held, not acknowledged (a restart replays them), until a quote or its fill
    values it, or the wait for one ends."""

    event_ids: list[int]
    update: OrderUpdate  # the latest of them
    timer: threading.Timer
    received_ns: int  # when the first arrived: the copies' latency counts the wait


@dataclass
class _Reread:
    """A read of the leader's order at the broker, asked because updates of it were ambiguous."""

    covers: frozenset[int]  # the held inbox events its answer settles
    changes: int  # leader updates applied when it was asked: its answer is current only if none since
    answer: OrderUpdate | None = None  # stored and routed, on its way back here
    failures: int = 0


@functools.lru_cache(maxsize=4096)
def _terms(text: str) -> OrderTerms:
    """Stored terms JSON -> OrderTerms. Convergence reads every copy's terms on every message;
    OrderTerms is immutable, so one parse per distinct text is shared."""
    return terms_from_dict(json.loads(text))


class OrderActor(Supervised):
    def __init__(self, address: Address, supervisor: Address | None, leader_order_id: str,
                 ctx: CopierContext) -> None:
        super().__init__(address, supervisor)
        self.leader_order_id = leader_order_id
        self.ctx = ctx
        self.log = OrderLog(log, {"leader_order_id": leader_order_id})
        self.leader: m.LeaderOrder | None = None
        self.copies: dict[str, _Copy] = {}  # by follower name
        self.applied: set[int] = set()  # inbox event ids applied by this incarnation
        self._seqs: dict[str, int] = {}  # last event-store sequence per order key, counted here
        self._lag_timer: threading.Timer | None = None
        self._sighting: _Sighting | None = None
        self._outbox: list[BrokerCall] = []  # decided calls, sent together by _flush
        self._ambiguous: dict[int, OrderUpdate] = {}  # leader updates held, not done, until the broker answers
        self._reread: _Reread | None = None  # the read of the leader's order asked for them
        self._leader_changes = 0  # leader updates applied by this incarnation
        self._storage_down = False  # a write was refused: this incarnation is done
        self._retry_timer: threading.Timer | None = None  # wakes the actor for the next lookup due
        self._retry_due = 0.0
        self._leader_filled_at: str | None = None  # exchange time of the leader's first fill seen here
        self._filled_first: dict[str, str] = {}  # follower -> exchange time of a fill the leader's may follow

    @property
    def key(self) -> str:
        return f"L:{self.leader_order_id}"

    # -- start: rebuild from storage -------------------------------------------------------------
    def started(self) -> None:
        metrics.ACTORS_RUNNING.inc()
        store = self.ctx.store
        if not store.has_leader_order(self.leader_order_id):
            return  # a new order: nothing stored yet (its copies are stored with it)
        self.leader = store.leader_order(self.leader_order_id)
        for row in store.follower_orders(self.leader_order_id):
            copy = _Copy(row)
            if not copy.status.is_terminal:
                copy.needs_sync = self.ctx.policy.sync_on_start
            if copy.status == S.UNKNOWN:  # still unknown: a "not found" counts only after a settle
                copy.unknown_since = time.monotonic()
                copy.absent_believed_from = copy.unknown_since + self.ctx.policy.unknown_settle_seconds
                self._schedule_unknown_check()
            elif copy.status == S.PENDING_PLACEMENT:
                # An earlier incarnation (or process) may have sent its placement: still on its way,
                # the broker may act on it up to a timeout after its client would have given up.
                copy.absent_believed_from = time.monotonic() + 2 * self.ctx.policy.unknown_settle_seconds
            self.copies[row.follower] = copy
        # Updates not yet done are routed to this incarnation by the router (on restart, and by
        # its sweep), so there is nothing more to read here.
        self._converge_all()
        self._maybe_idle()

    def on_stop(self) -> None:
        super().on_stop()
        metrics.ACTORS_RUNNING.dec()
        if self._lag_timer:
            self._lag_timer.cancel()
        if self._sighting:
            self._sighting.timer.cancel()
        if self._retry_timer:
            self._retry_timer.cancel()

    def on_failure(self, *exc_info: Any) -> None:
        metrics.ACTORS_RUNNING.dec()
        if self._lag_timer:
            self._lag_timer.cancel()
        if self._sighting:
            self._sighting.timer.cancel()
        if self._retry_timer:
            self._retry_timer.cancel()
        super().on_failure(*exc_info)

    # -- messages --------------------------------------------------------------------------------
    def on_receive(self, message: Any) -> Any:
        if self._storage_down:
            return None
        try:
            return self._receive(message)
        except StorageDown as exc:
            # This incarnation's memory may be ahead of storage (the transaction rolled back), so it
            # does nothing more; the router starts a fresh one from storage once storage is back.
            self._storage_down = True
            self._report_crash(exc)
            self.actor_ref.stop(block=False)
            return None

    def _receive(self, message: Any) -> Any:
        if isinstance(message, (OrderUpdateReceived, CancelCopies, SyncCopies, UnwindLeg)):
            self._resume_lookups()  # news of the order, or a command: worth asking the broker again
        if isinstance(message, OrderUpdateReceived):
            self._dispatch(message)
        elif isinstance(message, BrokerReply) and message.call.follower == LEADER:
            self._on_reread_reply(message)
        elif isinstance(message, BrokerReply):
            self._on_reply(message)
        elif isinstance(message, Tick) and message.what == "lag":
            self._check_lag()
        elif isinstance(message, QuotePrice):
            self._on_quote(message)
        elif isinstance(message, Tick) and message.what == "price_wait":
            self._on_price_wait_over()
        elif isinstance(message, Tick) and message.what == "unknown":
            self._check_unknown()
        elif isinstance(message, Tick) and message.what == "reread":
            if self._reread is not None and self._reread.answer is None:
                self._send_reread()
        elif isinstance(message, Tick) and message.what == "retry":
            self._retry_timer = None  # fired: the next lookup due gets a timer of its own
        elif isinstance(message, Tick) and message.what == "filled_first":
            self._judge_filled_first()
        elif isinstance(message, CancelCopies):
            for copy in self.copies.values():
                if not copy.status.is_terminal and not copy.row.cancel_requested:
                    self.ctx.store.write(lambda c=copy: self._request_cancel(c, message.reason))
        elif isinstance(message, RetryCopy):
            self._retry_copy(message)
        elif isinstance(message, UnwindLeg):
            self._unwind_leg(message)
        elif isinstance(message, SyncCopies):
            for copy in self.copies.values():
                if not copy.status.is_terminal:
                    copy.needs_sync = True
                    copy.lookup_failures = 0  # asked for: a fresh budget of lookups
        elif message == "state":
            return self._snapshot()
        self._converge_all()
        self._maybe_idle()
        return None

    def _dispatch(self, message: OrderUpdateReceived) -> None:
        if message.event_id in self.applied:
            return
        self.applied.add(message.event_id)
        if message.account == LEADER:
            self._on_leader_update(message.event_id, message.update)
        else:
            self._on_follower_update(message.event_id, message.account, message.update)

    # -- leader updates ----------------------------------------------------------------------------
    def _on_leader_update(self, event_id: int, update: OrderUpdate) -> None:
        if self.leader is None:
            self._first_sighting(event_id, update)
            return
        reread = self._reread
        if reread is None or reread.answer is None or update != reread.answer:
            self._apply_leader_update(event_id, update, settles=())
            return
        # The broker's answer to this incarnation's re-read. It is the order's current state unless
        # a leader update was applied after the read was asked (that one may be older or newer).
        current = reread.changes == self._leader_changes
        self._apply_leader_update(event_id, update, settles=reread.covers if current else (), authoritative=current)
        for settled in reread.covers if current else ():
            self._ambiguous.pop(settled, None)
        self._reread = None
        if self._ambiguous:  # seen after the read was asked, or the answer itself was overtaken
            self._ask_broker()

    def _apply_leader_update(self, event_id: int, update: OrderUpdate, settles: Collection[int],
                             authoritative: bool = False) -> None:
        """Apply a leader update that is later than the state applied; acknowledge it, and the
        ambiguous updates it `settles`, with its effect. One that may be older or newer (see
        trading/ordering.py) is held, not applied, until the broker says where the order is."""
        leader = self.leader
        assert leader is not None
        old_terms = _terms(leader.terms)
        previous = OrderStatus(leader.status)
        verdict = order_of(OrderUpdate(self.leader_order_id, previous, old_terms, filled_qty=leader.filled_qty,
                                       updated_at=leader.updated_at, sequence=leader.sequence), update)
        if verdict == Ordering.AMBIGUOUS and authoritative:
            verdict = Ordering.NEWER
        if verdict == Ordering.AMBIGUOUS:
            self._ambiguous[event_id] = update  # not done: a restart asks again
            if self._reread is None:
                self._ask_broker()
            return
        if verdict == Ordering.STALE:
            metrics.STALE_UPDATES.labels("leader").inc()
            self._ack(event_id, "stale", settles)
            return
        changed = old_terms.modifiable_view() != update.terms.modifiable_view()
        event = event_for_status(previous, update.status, leader.filled_qty, update.filled_qty, changed)
        if event is None:
            metrics.DUPLICATE_UPDATES.labels("leader").inc()
            self._ack(event_id, "no_change", settles)
            return
        try:
            new_status = next_state(previous, event)
        except InvalidTransition as exc:
            metrics.INVALID_TRANSITIONS.labels("leader", event.value).inc()
            self.log.warning("leader order %s: %s; ignored", self.leader_order_id, exc)
            self._ack(event_id, "invalid_transition", settles)
            return
        metrics.LEADER_EVENTS.labels(event.value.lower()).inc()
        fill = self._fill_delta(leader.filled_qty, leader.avg_price, update)
        resized = self._retarget(old_terms, update.terms) if changed else {}

        def effect() -> None:
            self._save_leader(update, new_status)
            self._append(self.key, event.value, update_to_dict(update))
            if fill:
                self.ctx.store.create(m.Fill, account=LEADER, order_id=self.leader_order_id, leader_order_id=self.leader_order_id,
                              quantity=fill[0], price=fill[1], cumulative_qty=update.filled_qty,
                              exchange_time=update.updated_at)
            for follower, target in resized.items():
                self._set_target(self.copies[follower], target)
            if new_status in (S.CANCELLED, S.REJECTED, S.EXPIRED):
                for copy in self.copies.values():
                    if not copy.status.is_terminal and not copy.row.cancel_requested:
                        copy.row.cancel_requested = True
                        self._save_copy(copy)
                        self._append(self._copy_key(copy), "CANCEL_REQUESTED",
                                                          {"because": new_status.value})
            self.ctx.store.mark_done([event_id], event.value.lower())
            self.ctx.store.mark_done(settles, SETTLED_BY_BROKER)

        self.ctx.store.write(effect)
        self._leader_changes += 1
        if fill:
            metrics.FILLS.labels("leader").inc()
            self._tell_fill(LEADER, update, fill[0])
            self._leader_filled_at = self._leader_filled_at or update.updated_at
        if new_status == S.TRADED:
            self._schedule_lag_check()

    def _ask_broker(self) -> None:
        """Read the leader's order from the broker (`GET /orders/{id}`) for the ambiguous updates
        held now. The answer comes back as a message, is stored in the inbox like any update, and
        is applied as the order's current state (`_on_leader_update`)."""
        self._reread = _Reread(frozenset(self._ambiguous), self._leader_changes)
        metrics.LEADER_REREADS.labels("asked").inc()
        self.log.info("leader order %s: %d updates may be older or newer than the state applied (same second, "
                      "no sequence); asking the broker", self.leader_order_id, len(self._ambiguous))
        self._send_reread()

    def _send_reread(self) -> None:
        # through the leader's limiter: its data-API rate, retries of transient failures, a worker
        # thread for the call; never this actor's thread
        self.ctx.leader_limiter.tell(BrokerCall(
            op="get", follower=LEADER, leader_order_id=self.leader_order_id, correlation_id="",
            reply_to=self.address, broker_order_id=self.leader_order_id))

    def _on_reread_reply(self, reply: BrokerReply) -> None:
        reread = self._reread
        if reread is None or reread.answer is not None:
            return  # asked by an earlier incarnation: what it held is routed here again, and asked anew
        order = reply.order
        if reply.ok and order is not None and order.order_id == self.leader_order_id:
            reread.answer = dataclasses.replace(order, source="reread", received_ns=time.monotonic_ns())
            assert self.supervisor is not None  # the router: the answer takes the way every update takes
            store_and_route(self.ctx.store, self.supervisor, LEADER, reread.answer, key=f"reread:{uuid.uuid4().hex}")
            return
        reread.failures += 1
        metrics.LEADER_REREADS.labels("failed").inc()
        problem = reply.error or f"answered with order {order.order_id if order else 'none'}"
        if reread.failures < REREAD_ATTEMPTS:
            self.log.warning("leader order %s: could not read it from the broker (%s); trying again",
                             self.leader_order_id, problem)
            timer = threading.Timer(float(reread.failures), self.address.tell, args=(Tick("reread"),))
            timer.daemon = True
            timer.start()
            return
        # Give up: the state applied stands; the reconciler compares every copy with the leader's
        # order at the broker and repairs what this leaves wrong.
        held = list(self._ambiguous)
        self.ctx.store.write(lambda: self.ctx.store.mark_done(held, "unresolved"))
        self._ambiguous.clear()
        self._reread = None
        metrics.LEADER_REREADS.labels("unresolved").inc()
        self.ctx.alert("warning", "leader_reread",
                       f"leader order {self.leader_order_id}: {len(held)} ambiguous updates could not be checked "
                       f"with the broker ({problem}); the reconciler will compare its copies")

    def _first_sighting(self, event_id: int, update: OrderUpdate) -> None:
        """A leader order seen for the first time: decide, per follower, copy or skip.

        An order that names no price (MARKET) is sized and checked at a reference price: a fresh
        quote from the board at once; else the first of a quote asked now and the leader's own
        fill (it follows within moments), for at most `market_fill_wait_seconds`. Until then its
        updates are held here (`_Sighting`). An order with a price never waits."""
        sighting = self._sighting
        if sighting is not None:  # a later update of an order still waiting for a price
            sighting.event_ids.append(event_id)
            latest = sighting.update
            if order_of(latest, update) not in (Ordering.STALE, Ordering.SAME):  # a tie goes to arrival order
                sighting.update = update
            if not awaits_price(sighting.update):  # it traded (or closed): decide now
                self._end_wait(traded_price(sighting.update), LEADER_FILL)
            return
        if not awaits_price(update) or not self.ctx.policy.price_needed:
            self._decide([event_id], update, traded_price(update), LEADER_FILL, update.received_ns)
            return
        quotes = self.ctx.quotes
        cached = quotes.cached(update.terms) if quotes is not None else None
        wait = self.ctx.policy.market_fill_wait_seconds
        if cached is not None or wait <= 0:
            self._decide([event_id], update, cached or 0.0, QUOTE if cached else NONE, update.received_ns)
            return
        timer = threading.Timer(wait, self.address.tell, args=(Tick("price_wait"),))
        timer.daemon = True
        self._sighting = _Sighting([event_id], update, timer, update.received_ns)
        timer.start()
        if quotes is not None:
            quotes.ask(update.terms, self.address)

    def _on_quote(self, quote: QuotePrice) -> None:
        if self._sighting is not None and quote.price > 0:
            self._end_wait(quote.price, QUOTE)

    def _on_price_wait_over(self) -> None:
        """No quote and no fill in time: decided unvalued (a value rule refuses it as price_unknown)."""
        if self._sighting is not None:
            self._end_wait(0.0, NONE)

    def _end_wait(self, reference: float, source: str) -> None:
        sighting, self._sighting = self._sighting, None
        assert sighting is not None
        sighting.timer.cancel()
        self._decide(sighting.event_ids, sighting.update, reference, source, sighting.received_ns)

    def _decide(self, event_ids: list[int], update: OrderUpdate, reference: float, source: str,
                received_ns: int) -> None:
        """The first sighting's decision, per follower, at `reference` (0: no price known);
        `received_ns`: when the order was first seen."""
        metrics.LEADER_EVENTS.labels("placed").inc()
        instrument = self.ctx.instruments.get(update.terms.exchange_segment, update.terms.security_id)
        order_skip = self._order_skip_reason(update, instrument)
        # At a first start on an empty database, copies made before it may exist at the brokers.
        adopted = self.ctx.store.adopted_copies(self.leader_order_id) if update.source == "adopt" else {}
        decisions: dict[str, tuple[SizeDecision | None, str]] = {}
        group_id = None
        if order_skip is None:
            assert instrument is not None
            source = source if reference > 0 else NONE
            if own_price(update.terms) <= 0:
                metrics.REFERENCE_PRICES.labels(source).inc()
            requests = tuple(SizeCopy(f, correlation_id(self.leader_order_id, f), update.terms, instrument, reference,
                                      update.filled_qty, self.leader_order_id, source)
                             for f in self.ctx.followers if f not in adopted)
            if requests:
                sized = self._ask_sizing(SizeCopies(requests, self.leader_order_id))
                group_id = sized.group_id
                for request, decision in zip(requests, sized.decisions):
                    decisions[request.follower] = (decision, request.correlation_id)
        status = update.status
        strategy = {"group_id": group_id, "underlying": instrument.underlying if instrument else None}
        fill = self._fill_delta(0, 0.0, update)  # first seen already (partly) filled

        def effect() -> None:
            self._seqs[self.key] = 0
            self._save_leader(update, status, first=True, extra=strategy)
            self._append(self.key, "SEEN", update_to_dict(update))
            if fill:
                self.ctx.store.create(m.Fill, account=LEADER, order_id=self.leader_order_id,
                                      leader_order_id=self.leader_order_id, quantity=fill[0], price=fill[1],
                                      cumulative_qty=update.filled_qty, exchange_time=update.updated_at)
            if order_skip is not None:
                reason, detail = order_skip
                self.ctx.store.create(m.Skip, leader_order_id=self.leader_order_id, follower=None, reason=reason, detail=detail)
            for follower, (decision, cid) in decisions.items():
                self.copies[follower] = self._new_copy(follower, cid, update, decision, received_ns)
            for follower, (generation, order) in adopted.items():
                self.copies[follower] = self._adopted_copy(follower, generation, update_from_dict(order),
                                                           cancel=status in (S.CANCELLED, S.REJECTED, S.EXPIRED))
            self.ctx.store.mark_done(event_ids, "skipped" if order_skip else "copied")

        self.ctx.store.write(effect)
        if update.source == "adopt":  # look every copy up by its correlation id before placing or following it
            for copy in self.copies.values():
                copy.needs_sync = not copy.status.is_terminal
            for follower, (_generation, order) in adopted.items():
                self.log.info("follower %s: broker order %s adopted as the copy of leader order %s", follower,
                              order.get("order_id"), self.leader_order_id)
        if fill:  # after the sizing ask, which accounted for it through leader_filled
            metrics.FILLS.labels("leader").inc()
            self._tell_fill(LEADER, update, fill[0])
            self._leader_filled_at = update.updated_at
        if order_skip is not None:
            metrics.SKIPS.labels("all", order_skip[0]).inc()
            self.log.info("leader order %s not copied: %s (%s)", self.leader_order_id, *order_skip)
        for follower, (decision, _cid) in decisions.items():
            if decision is not None and decision.skip_reason:
                metrics.SKIPS.labels(follower, decision.skip_reason).inc()
                self.log.info("leader order %s: follower %s skipped: %s (%s)", self.leader_order_id, follower,
                         decision.skip_reason, decision.detail)
            if decision is not None and decision.unwind and group_id:
                self._unwind_strategy(follower, decision.skip_reason or "leg not placed")
        if status == S.TRADED:
            self._schedule_lag_check()

    def _order_skip_reason(self, update: OrderUpdate, instrument: Instrument | None) -> tuple[str, str] | None:
        if update.source == "baseline":
            return "preexisting_order", "placed before the copier first started"
        if update.source == "outage":
            return "storage_unavailable", "placed while storage could not be written; not copied late"
        if update.status == S.REJECTED:
            return "leader_rejected", update.reason or "rejected by the broker"
        if update.status in (S.CANCELLED, S.EXPIRED):
            return "leader_closed_before_copy", f"already {update.status.value} when first seen"
        if instrument is None:  # 5.4, 8.6: before any broker call
            return "unknown_instrument", (f"security {update.terms.security_id} on {update.terms.exchange_segment} "
                                          "is not in the instrument master")
        forever = self.ctx.forever_trigger(update)
        if forever:  # each follower's own forever copy triggers by itself: copying this would double it
            return "forever_triggered", f"created by the leader's forever order {forever}, copied as a forever order"
        off = self.ctx.copying_enabled()
        if off:
            return off, "copying is switched off"
        return self._market_skip_reason(update)

    def _market_skip_reason(self, update: OrderUpdate) -> tuple[str, str] | None:
        """5.5, 6.1 to 6.5: nothing is sent outside the session rules; one alert per reason a day."""
        if self.ctx.calendar is None:
            return None
        at = self.ctx.clock()
        terms = update.terms
        verdict = self.ctx.calendar.check_order(terms.exchange_segment, terms.order_type.value, terms.amo, at)
        if verdict.allowed:
            return None
        reason = verdict.reason or "market_closed"
        self.ctx.alert("warning", f"market:{reason}:{at.date().isoformat()}",
                       f"leader order {self.leader_order_id} not copied: {reason} ({verdict.detail})")
        return reason, verdict.detail

    def _ask_sizing(self, message: SizeCopy | SizeCopies) -> Any:
        try:
            return self.ctx.sizing.ask(message, timeout=5.0)
        except (pykka.ActorDeadError, pykka.Timeout) as exc:
            raise RuntimeError(f"sizing unavailable: {exc}") from exc  # crash: retried after restart

    def _new_copy(self, follower: str, cid: str, update: OrderUpdate, decision: SizeDecision | None,
                  received_ns: int) -> _Copy:
        """Inside the write transaction: the follower row, PENDING_PLACEMENT or SKIPPED."""
        assert decision is not None
        skipped = decision.skip_reason is not None
        target = update.terms.with_changes(quantity=decision.quantity, disclosed_qty=decision.disclosed_qty)
        row = self.ctx.store.create(m.FollowerOrder, 
            leader_order_id=self.leader_order_id, follower=follower, correlation_id=cid,
            status=(S.SKIPPED if skipped else S.PENDING_PLACEMENT).value, security_id=target.security_id,
            side=target.side.value, quantity=target.quantity, target=json.dumps(terms_to_dict(target)),
            skip_reason=decision.skip_reason, last_error=decision.detail or None, reserved=decision.reserved)
        if skipped:
            self.ctx.store.create(m.Skip, leader_order_id=self.leader_order_id, follower=follower, reason=decision.skip_reason,
                          detail=decision.detail)
        copy = _Copy(row, received_ns=received_ns)
        self._seqs[self._copy_key(copy)] = 0
        self._append(self._copy_key(copy), "SKIPPED" if skipped else "SUBMITTED",
                                          {"status": row.status, "target": terms_to_dict(target),
                                           "reason": decision.skip_reason})
        return copy

    def _adopted_copy(self, follower: str, generation: int, order: OrderUpdate, cancel: bool) -> _Copy:
        """Inside the write transaction: a copy found at the follower's broker at a first start,
        taken over as it stands (its terms are the target). It is looked up by its correlation id
        like a copy whose placement's answer was lost; cancelled when the leader's order already is."""
        target = order.terms
        row = self.ctx.store.create(
            m.FollowerOrder, leader_order_id=self.leader_order_id, follower=follower,
            correlation_id=correlation_id(self.leader_order_id, follower, generation), generation=generation,
            status=S.PENDING_PLACEMENT.value, security_id=target.security_id, side=target.side.value,
            quantity=target.quantity, target=json.dumps(terms_to_dict(target)))
        copy = _Copy(row)
        self._seqs[self._copy_key(copy)] = 0
        self._append(self._copy_key(copy), "SUBMITTED", {"status": row.status, "target": terms_to_dict(target),
                                                         "reason": None, "adopted": order.order_id})
        if cancel:
            self._request_cancel(copy, "the leader's order was closed before its copy was adopted")
        return copy

    def _retarget(self, old: OrderTerms, terms: OrderTerms) -> dict[str, OrderTerms]:
        """New targets after the leader changed its terms (2.1 to 2.5): every field copied, the
        quantity re-sized from the new leader quantity with the same pure rule."""
        out: dict[str, OrderTerms] = {}
        instrument = self.ctx.instruments.get(terms.exchange_segment, terms.security_id)
        for follower, copy in self.copies.items():
            if copy.status.is_terminal or copy.row.cancel_requested:
                continue
            target = copy.target
            quantity, disclosed = target.quantity, target.disclosed_qty
            if instrument is not None and (
                    terms.quantity != old.quantity or terms.disclosed_qty != old.disclosed_qty):
                decision = self._ask_sizing(SizeCopy(follower, copy.row.correlation_id, terms, instrument, 0.0,
                                                     self.leader.filled_qty if self.leader else 0,
                                                     self.leader_order_id))
                if decision.skip_reason:
                    self._record_skip(follower, f"modify_{decision.skip_reason}", decision.detail)
                else:
                    quantity, disclosed = decision.quantity, decision.disclosed_qty
            out[follower] = terms.with_changes(quantity=quantity, disclosed_qty=disclosed)
        return out

    # -- follower updates --------------------------------------------------------------------------
    def _on_follower_update(self, event_id: int | None, follower: str, update: OrderUpdate) -> None:
        copy = self.copies.get(follower)
        if copy is None or self._other_generation(copy, update):
            # unknown, or an update of an order this copy replaced (cap, DLQ retry) queued before it
            if event_id is not None:
                self.ctx.store.write(lambda: self.ctx.store.mark_done([event_id], "not_this_copy"))
            return
        previous = copy.status
        confirmed = copy.confirmed
        changed = confirmed is not None and confirmed.modifiable_view() != update.terms.modifiable_view()
        event = event_for_status(previous, update.status, copy.row.filled_qty, update.filled_qty, changed)
        new_status = previous
        if event is not None:
            try:
                new_status = next_state(previous, event)
            except InvalidTransition as exc:
                metrics.INVALID_TRANSITIONS.labels("follower", event.value).inc()
                self.log.warning("follower %s copy of %s: %s; ignored", follower, self.leader_order_id, exc)
                event = None
        fill = self._fill_delta(copy.row.filled_qty, copy.row.avg_price, update)

        def effect() -> None:
            row = copy.row
            if not row.broker_order_id:
                row.broker_order_id = update.order_id
            if event is not None:
                row.status = new_status.value
                self._append(self._copy_key(copy), event.value, update_to_dict(update))
            if update.status == S.REJECTED and update.reason:
                row.last_error = update.reason
            if fill:
                row.filled_qty, row.avg_price = update.filled_qty, update.avg_price or fill[1]
                self.ctx.store.create(m.Fill, account=follower, order_id=update.order_id, leader_order_id=self.leader_order_id,
                              quantity=fill[0], price=fill[1], cumulative_qty=update.filled_qty,
                              exchange_time=update.updated_at)
            if copy.in_flight in (None, "lookup", "get") and update.status.is_open:  # no change of terms in flight
                row.confirmed = json.dumps(terms_to_dict(update.terms))
            if new_status == S.TRADED:
                row.slippage = self._slippage(row)
            self._save_copy(copy)
            if event_id is not None:
                self.ctx.store.mark_done([event_id], event.value.lower() if event else "no_change")

        self.ctx.store.write(effect)
        if fill:
            metrics.FILLS.labels("follower").inc()
            self._tell_fill(follower, update, fill[0])
        if fill and self.leader is not None:
            self._check_filled_first(follower, update.updated_at)
        if new_status != previous:
            self._after_status_change(copy, previous, new_status)
        elif new_status == S.REJECTED and not copy.rejection_handled and copy.row.last_error:
            self._classify_rejection(copy)  # the reason arrived after the status

    def _check_filled_first(self, follower: str, filled_at: str) -> None:
        """Did this follower fill come before the leader's first fill? Judged by the exchange's fill
        times (fills stamped in the same second are not first); when the leader has no fill yet, the
        verdict waits FILLED_FIRST_GRACE_SECONDS for it to arrive on its own socket."""
        if self.leader is not None and self.leader.filled_qty > 0:
            if self._leader_filled_at and filled_at and filled_at < self._leader_filled_at:
                self._flag_filled_first(follower)
            return
        if follower in self._filled_first:
            return
        if not self._filled_first:
            timer = threading.Timer(FILLED_FIRST_GRACE_SECONDS, self.address.tell, args=(Tick("filled_first"),))
            timer.daemon = True
            timer.start()
        self._filled_first[follower] = filled_at

    def _judge_filled_first(self) -> None:
        suspects, self._filled_first = self._filled_first, {}
        for follower, filled_at in suspects.items():
            if self.leader is None or self.leader.filled_qty == 0:
                self._flag_filled_first(follower)
            else:
                self._check_filled_first(follower, filled_at)

    def _flag_filled_first(self, follower: str) -> None:
        copy = self.copies[follower]
        if copy.row.anomaly is None:  # recorded, no action taken
            self.ctx.store.write(lambda: self._flag(copy, "follower_filled_first"))
        metrics.ANOMALIES.labels("follower_filled_first").inc()
        self.log.warning("follower %s filled its copy of %s before the leader filled", follower, self.leader_order_id)

    @staticmethod
    def _other_generation(copy: _Copy, update: OrderUpdate) -> bool:
        if update.correlation_id and update.correlation_id != copy.row.correlation_id:
            return True
        return bool(update.order_id and copy.row.broker_order_id and update.order_id != copy.row.broker_order_id)

    def _after_status_change(self, copy: _Copy, previous: OrderStatus, status: OrderStatus) -> None:
        follower = copy.row.follower
        if status.is_terminal:
            self.ctx.sizing.tell(ReleaseCapital(follower, copy.row.correlation_id))
        if status == S.CANCELLED:
            metrics.FOLLOWER_ORDERS.labels(follower, "cancel", "cancelled").inc()
            if copy.row.anomaly == "replacing" and self.leader is not None and \
                    OrderStatus(self.leader.status).is_open:
                self._replace(copy)
        elif status == S.REJECTED:
            if copy.row.last_error:
                self._classify_rejection(copy)
            elif copy.row.broker_order_id:
                self._send(copy, "get")  # learn the broker's reason before classifying
        elif status == S.TRADED and copy.row.slippage is not None:
            metrics.SLIPPAGE.labels(follower).observe(copy.row.slippage)

    def _classify_rejection(self, copy: _Copy) -> None:
        """5.2 / 5.3: market and account reasons are skips; anything else is dead-lettered."""
        copy.rejection_handled = True
        message = copy.row.last_error or "rejected"
        reason = _reason_label(message)
        self.ctx.store.write(lambda: self._store_rejection(copy, reason, "REJECTED", message))
        self._announce_rejection(copy, reason, message)

    def _store_rejection(self, copy: _Copy, reason: str, code: str, message: str) -> None:
        """Inside a transaction: the skip or the dead letter that records why a copy failed."""
        if reason in SKIP_REASONS:
            self.ctx.store.create(m.Skip, leader_order_id=self.leader_order_id, follower=copy.row.follower, reason=reason,
                          detail=message)
        else:
            self.ctx.store.create(m.DeadLetter, leader_order_id=self.leader_order_id, follower=copy.row.follower,
                                correlation_id=copy.row.correlation_id, operation="place", error_code=code,
                                reason=message)

    def _unwind_strategy(self, follower: str, reason: str) -> None:
        """1.4.5: this leg cannot be placed for `follower`, so the strategy's other legs there must
        not stay naked."""
        assert self.leader is not None and self.leader.group_id
        self.ctx.alert("critical", f"strategy:{follower}",
                       f"follower {follower}: a leg ({self.leader_order_id}) of strategy {self.leader.group_id} "
                       f"could not be placed ({reason}); unwinding its other legs")
        if self.supervisor is not None:
            self.supervisor.tell(UnwindStrategy(self.leader.group_id, follower, reason, self.leader_order_id))

    def _unwind_leg(self, request: UnwindLeg) -> None:
        copy = self.copies.get(request.follower)
        if copy is None:
            return
        if not copy.status.is_terminal and not copy.row.cancel_requested:
            self.ctx.store.write(lambda: self._request_cancel(copy, f"strategy unwound: {request.reason}"))
        filled = copy.row.filled_qty
        if filled <= 0 or copy.row.anomaly in ("flattened", "naked_leg"):
            return
        if self.ctx.policy.flatten_naked_legs:
            target = copy.target
            opposite = target.with_changes(side=Side.SELL if target.side == Side.BUY else Side.BUY, quantity=filled,
                                           order_type=OrderType.MARKET, price=0.0, trigger_price=0.0,
                                           disclosed_qty=0, validity=Validity.DAY, amo=False, amo_time=None)
            self.ctx.store.write(lambda: self._flag(copy, "flattened"))
            self.ctx.limiters[copy.row.follower].tell(BrokerCall(
                op="place", follower=copy.row.follower, leader_order_id=self.leader_order_id,
                correlation_id=flatten_correlation_id(self.leader_order_id, copy.row.follower),
                reply_to=self.address, terms=opposite))
        else:
            self.ctx.store.write(lambda: self._flag(copy, "naked_leg"))
            self.ctx.alert("critical", f"naked:{copy.row.follower}",
                           f"follower {copy.row.follower}: {filled} filled of leg {self.leader_order_id} is left "
                           "without its strategy; close it (or set copy.flatten_naked_legs)")

    def _announce_rejection(self, copy: _Copy, reason: str, message: str) -> None:
        follower = copy.row.follower
        if self.leader is not None and self.leader.group_id:
            self._unwind_strategy(follower, reason)
        metrics.FOLLOWER_FAILURES.labels(follower, "place", reason).inc()
        if reason in SKIP_REASONS:
            metrics.SKIPS.labels(follower, reason).inc()
            self.log.info("leader order %s: follower %s skipped: %s (%s)", self.leader_order_id, follower, reason, message)
            return
        self.ctx.on_broker_failure(follower, reason)
        metrics.DEAD_LETTERS.set(self.ctx.store.read(
            lambda: m.DeadLetter.select().where(m.DeadLetter.resolved == False).count()))  # noqa: E712
        self.ctx.alert("error", f"dlq:{follower}", f"follower {follower}: placement of leader order "
                       f"{self.leader_order_id} failed and was dead-lettered: {message}")

    def _slippage(self, row: m.FollowerOrder) -> float | None:
        if self.leader is None or not self.leader.avg_price or not row.avg_price:
            return None
        sign = 1.0 if row.side == "BUY" else -1.0
        return sign * (row.avg_price - self.leader.avg_price) / self.leader.avg_price

    # -- broker answers ----------------------------------------------------------------------------
    def _on_reply(self, reply: BrokerReply) -> None:
        call = reply.call
        if call.correlation_id == flatten_correlation_id(self.leader_order_id, call.follower):
            outcome = f"failed: {reply.error}" if reply.error else f"placed as {reply.broker_order_id}"
            if reply.error is not None and reply.error.outcome_unknown:
                outcome = f"has an unknown outcome ({reply.error}); check {call.follower}'s order book"
            self.log.warning("follower %s: flattening order for naked leg %s %s", call.follower, self.leader_order_id, outcome)
            metrics.FOLLOWER_ORDERS.labels(call.follower, "flatten", "failed" if reply.error else "placed").inc()
            return
        copy = self.copies.get(call.follower)
        if copy is None or copy.row.correlation_id != call.correlation_id:
            return
        if call.token == copy.in_flight_token:
            # Only the answer to the call in flight ends it. An answer to another call (one an
            # earlier incarnation of this actor left queued at the rate limiter) is news of the
            # copy all the same, but clearing the slot for it let a second placement go out while
            # the first was still unanswered: a doubled order.
            copy.in_flight = None
        follower = call.follower
        if call.op in ("lookup", "get"):
            self._on_sync_reply(copy, reply)
            return
        if reply.error is not None:
            self._on_call_failed(copy, reply)
            return
        row = copy.row

        def effect() -> None:
            if call.op == "place":
                row.broker_order_id = reply.broker_order_id or row.broker_order_id
                row.confirmed = json.dumps(terms_to_dict(call.terms)) if call.terms else row.confirmed
                row.placed_at = time.time()
                if reply.sent_ns and call.received_ns:
                    row.latency_ms = (reply.sent_ns - call.received_ns) / 1e6
                self._append(self._copy_key(copy), "PLACED",
                                                  {"broker_order_id": row.broker_order_id, "status": reply.status})
            elif call.op == "modify":
                row.modifications += 1
                row.confirmed = json.dumps(terms_to_dict(call.terms)) if call.terms else row.confirmed
                self._append(self._copy_key(copy), "MODIFY_ACKED",
                                                  {"terms": terms_to_dict(call.terms) if call.terms else None})
            elif call.op == "cancel":
                self._append(self._copy_key(copy), "CANCEL_ACKED", {"status": reply.status})
            self._save_copy(copy)

        self.ctx.store.write(effect)
        if call.op != "cancel":  # a cancel is counted once, when the copy is seen CANCELLED
            metrics.FOLLOWER_ORDERS.labels(follower, call.op, "placed" if call.op == "place" else "modified").inc()
        self.log.info("follower %s: %s of leader order %s -> broker order %s", follower, call.op,
                 self.leader_order_id, row.broker_order_id)
        if reply.order is not None:  # a placement found by correlation id: adopt its state
            self._on_follower_update(None, follower, reply.order)
        elif call.op == "place" and reply.status:
            status = _status_or_none(reply.status)
            if status is not None and status != S.PENDING_PLACEMENT:
                self._apply_answer_status(copy, status)
        elif call.op == "cancel" and reply.status:
            status = _status_or_none(reply.status)
            if status == S.CANCELLED:
                self._apply_answer_status(copy, status)

    def _apply_answer_status(self, copy: _Copy, status: OrderStatus) -> None:
        """A status given in an answer (place, cancel) moves the copy like a socket update would."""
        confirmed = copy.confirmed or copy.target
        snapshot = OrderUpdate(order_id=copy.row.broker_order_id or "", status=status, terms=confirmed,
                               filled_qty=copy.row.filled_qty, avg_price=copy.row.avg_price, source="answer")
        self._on_follower_update(None, copy.row.follower, snapshot)

    def _on_sync_reply(self, copy: _Copy, reply: BrokerReply) -> None:
        if copy.status == S.UNKNOWN:
            self._on_unknown_lookup(copy, reply)
            return
        if reply.error is not None:
            self._on_lookup_failed(copy, reply.error)
            return
        copy.needs_sync = False
        copy.lookup_failures = 0
        if reply.not_found:
            if copy.status == S.PENDING_PLACEMENT:
                if reply.sent_ns / 1e9 < copy.absent_believed_from:  # too soon after a restart: ask again then
                    copy.needs_sync, copy.lookup_after = True, copy.absent_believed_from
                return  # never reached the broker: converge places (or aborts) it
            self.log.warning("follower %s: broker has no order for copy %s", copy.row.follower, copy.row.correlation_id)
            return
        if reply.order is not None:
            if copy.status == S.PENDING_PLACEMENT:
                order = reply.order
                self.ctx.store.write(lambda: self._adopt(copy, order))
            self._on_follower_update(None, copy.row.follower, reply.order)

    def _placement_unknown(self, copy: _Copy, error: BrokerError) -> None:
        """A placement the broker may or may not hold (no answer, a 5xx, an unreadable answer):
        the copy is UNKNOWN until a lookup answers. Never placed again, never rejected, on this."""
        follower = copy.row.follower
        metrics.UNKNOWN_OUTCOMES.labels(follower).inc()
        if copy.status != S.PENDING_PLACEMENT:  # its own update (the socket) came first: it exists
            self.log.info("follower %s: answer to the placement of %s lost (%s); the order is known already",
                          follower, self.leader_order_id, error)
            copy.needs_sync = True  # learn the terms it holds
            return
        self.log.warning("follower %s: outcome of the placement of %s unknown (%s); looking it up", follower,
                         self.leader_order_id, error)

        def effect() -> None:
            copy.row.status = next_state(S.PENDING_PLACEMENT, OrderEvent.OUTCOME_UNKNOWN).value
            self._append(self._copy_key(copy), OrderEvent.OUTCOME_UNKNOWN.value, {"error": str(error)})
            self._save_copy(copy)

        self.ctx.store.write(effect)
        copy.unknown_since = time.monotonic()
        # Without an answer from the broker itself (a timeout, a dropped connection, a gateway's
        # 5xx), the request may still be at work there: a lookup finding nothing is believed only
        # once the broker has had the REST timeout again to act on it. A DH-908 is the broker's own
        # answer: a lookup after it is believed.
        settle = 0.0 if error.from_broker else self.ctx.policy.unknown_settle_seconds
        copy.absent_believed_from = copy.unknown_since + settle
        copy.next_lookup, copy.lookups_failed = 0.0, 0
        self._schedule_unknown_check()

    def _on_unknown_lookup(self, copy: _Copy, reply: BrokerReply) -> None:
        """A lookup of a placement whose outcome is unknown. Found: adopted. No answer: looked up
        again after a capped, doubling delay. Not found: believed only from a lookup sent after
        `absent_believed_from` (see _placement_unknown); then it is placed again."""
        follower = copy.row.follower
        if reply.error is not None:
            copy.lookups_failed += 1
            delay = min(LOOKUP_BACKOFF_MAX, LOOKUP_BACKOFF_FIRST * 2 ** (copy.lookups_failed - 1))
            copy.next_lookup = time.monotonic() + delay
            self.log.warning("follower %s: lookup of the unknown placement of %s got no answer (%s); again in %.1fs",
                             follower, self.leader_order_id, reply.error, delay)
            return
        copy.lookups_failed = 0
        if reply.order is not None:
            order = reply.order
            self.ctx.store.write(lambda: self._adopt(copy, order))
            self.log.info("follower %s: the unknown placement of %s was found at the broker as %s", follower,
                          self.leader_order_id, order.order_id)
            self._on_follower_update(None, follower, order)
            return
        if reply.sent_ns / 1e9 < copy.absent_believed_from:
            copy.next_lookup = copy.absent_believed_from
            return
        copy.found_absent += 1
        copy.received_ns = 0  # a placement sent again is not a measure of replication latency

        def effect() -> None:
            copy.row.status = next_state(S.UNKNOWN, OrderEvent.NOT_PLACED).value
            self._append(self._copy_key(copy), OrderEvent.NOT_PLACED.value, {"placements": copy.found_absent})
            self._save_copy(copy)

        self.ctx.store.write(effect)
        if copy.found_absent >= self.ctx.policy.placement_attempts:  # known absent: safe to give up on
            self._reject_placement(copy, BrokerError(
                "NOT_PLACED", ErrorKind.OTHER, f"{copy.found_absent} placements never took effect at the broker"))
            return
        self.log.warning("follower %s: the placement of %s never took effect at the broker; placing it again",
                         follower, self.leader_order_id)

    def _schedule_unknown_check(self) -> None:
        if self.ctx.policy.unknown_alert_seconds > 0:
            timer = threading.Timer(self.ctx.policy.unknown_alert_seconds, self.address.tell, args=(Tick("unknown"),))
            timer.daemon = True
            timer.start()

    def _check_unknown(self) -> None:
        """Alert for every copy whose placement is still unknown after the bound (again after
        another bound while it stays so; the alerts' cooldown keeps that quiet)."""
        bound = self.ctx.policy.unknown_alert_seconds
        overdue = [c for c in self.copies.values()
                   if c.status == S.UNKNOWN and time.monotonic() - c.unknown_since >= bound]
        for copy in overdue:
            follower = copy.row.follower
            self.ctx.alert("critical", f"unknown:{follower}",
                           f"follower {follower}: the outcome of the placement copying leader order "
                           f"{self.leader_order_id} (correlation id {copy.row.correlation_id}) is still unknown "
                           f"after {bound:.0f}s: it is looked up, and not placed again until a lookup answers; "
                           f"check {follower}'s order book")
        if overdue:
            self._schedule_unknown_check()
    def _on_lookup_failed(self, copy: _Copy, error: BrokerError) -> None:
        """Ask again after a pause that doubles with every failure in a row, LOOKUP_ATTEMPTS times at
        most (a refused token is not asked again at all)."""
        copy.lookup_failures += 1
        follower = copy.row.follower
        if error.kind == ErrorKind.AUTH:
            copy.needs_sync = False
            self.log.warning("follower %s: could not look up copy of %s: %s", follower, self.leader_order_id, error)
            return
        if copy.lookup_failures >= LOOKUP_ATTEMPTS:
            copy.needs_sync = False
            copy.lookups_given_up = True
            self.ctx.store.write(lambda: self._flag(copy, "lookup_failed"))
            metrics.ANOMALIES.labels("lookup_failed").inc()
            self.ctx.alert("warning", f"lookup:{follower}",
                           f"follower {follower}: copy {copy.row.correlation_id} of leader order "
                           f"{self.leader_order_id} could not be looked up {copy.lookup_failures} times in a row "
                           f"({error}); left {copy.status.value} until news of it arrives (see run.py reconcile)")
            return
        delay = min(LOOKUP_RETRY_MAX_SECONDS, LOOKUP_RETRY_SECONDS * 2 ** (copy.lookup_failures - 1))
        copy.lookup_after = time.monotonic() + delay
        self.log.warning("follower %s: could not look up copy of %s (%d of %d): %s; again in %.1fs", follower,
                         self.leader_order_id, copy.lookup_failures, LOOKUP_ATTEMPTS, error, delay)

    def _resume_lookups(self) -> None:
        """Copies whose lookups were given up are looked up once more: still unknown, so looked up
        before anything is sent for them (a further failure gives up again at once)."""
        for copy in self.copies.values():
            if copy.lookups_given_up and not copy.status.is_terminal:
                copy.lookups_given_up = False
                copy.needs_sync = True

    def _adopt(self, copy: _Copy, order: OrderUpdate) -> None:
        """Inside a transaction: a placement found at the broker by its correlation id (7.7)."""
        copy.row.broker_order_id = order.order_id
        copy.row.confirmed = json.dumps(terms_to_dict(order.terms))
        copy.row.placed_at = copy.row.placed_at or time.time()
        self._append(self._copy_key(copy), "FOUND_BY_CORRELATION_ID",
                                          {"broker_order_id": order.order_id})
        self._save_copy(copy)

    def _on_call_failed(self, copy: _Copy, reply: BrokerReply) -> None:
        call, error = reply.call, reply.error
        assert error is not None
        if call.op == "place" and error.outcome_unknown:
            self._placement_unknown(copy, error)
            return
        follower = copy.row.follower
        metrics.FOLLOWER_ORDERS.labels(follower, call.op, "failed").inc()
        if call.op != "place":  # placements are counted with their classification
            metrics.FOLLOWER_FAILURES.labels(follower, call.op, error.reason).inc()
        self.log.warning("follower %s: %s of leader order %s failed: %s", follower, call.op, self.leader_order_id, error)
        if error.kind == ErrorKind.AUTH:  # the token actor pauses this account, not the copier
            self.ctx.on_auth_failure(follower, f"{error.code} on {call.op}")
        if call.op == "place":
            self._reject_placement(copy, error)
            return
        # modify / cancel failed: the order may have filled or been cancelled meanwhile; ask the broker
        self.ctx.store.write(lambda: self._note_error(copy, error))
        if call.op == "modify" and copy.row.modifications >= self.ctx.policy.max_modifications:
            return
        copy.needs_sync = error.kind != ErrorKind.AUTH
        if call.op == "cancel" and not error.transient:
            copy.needs_sync = True

    def _reject_placement(self, copy: _Copy, error: BrokerError) -> None:
        """The broker refused the placement, or holds no order after every attempt: REJECTED,
        with a skip or a dead letter that says why."""
        copy.rejection_handled = True
        reason = error.reason

        def effect() -> None:
            copy.row.status = S.REJECTED.value
            copy.row.last_error = str(error)
            self._append(self._copy_key(copy), "REJECTED", {"error": str(error)})
            self._save_copy(copy)
            self._store_rejection(copy, reason, error.code, str(error))  # same transaction

        self.ctx.store.write(effect)
        self.ctx.sizing.tell(ReleaseCapital(copy.row.follower, copy.row.correlation_id))
        self._announce_rejection(copy, reason, str(error))

    def _note_error(self, copy: _Copy, error: Any) -> None:
        copy.row.last_error = str(error)
        self._save_copy(copy)

    # -- convergence -------------------------------------------------------------------------------
    def _converge_all(self) -> None:
        for copy in self.copies.values():
            self._converge(copy)
        self._flush()
        self._schedule_lookups()

    def _converge(self, copy: _Copy) -> None:
        """At most one broker call in flight per copy; the next one is decided from stored state."""
        if copy.in_flight is not None or copy.status.is_terminal or copy.lookups_given_up:
            return
        row = copy.row
        if copy.status == S.UNKNOWN:  # looked up until a lookup answers; never placed while unknown
            copy.needs_sync = False
            self._send(copy, "lookup", not_before=copy.next_lookup)
            return
        if copy.needs_sync:
            if copy.lookup_after > time.monotonic():
                return  # backing off after a failed lookup: the retry timer wakes this actor
            self._send(copy, "lookup" if not row.broker_order_id else "get")
            return
        if copy.status == S.PENDING_PLACEMENT:
            if row.cancel_requested:  # 8.2: cancelled before it was ever sent
                self.ctx.store.write(lambda: self._abort(copy))
                self._after_status_change(copy, S.PENDING_PLACEMENT, S.CANCELLED)
                return
            self._send(copy, "place", copy.target)
            return
        if not row.broker_order_id:
            return
        if row.cancel_requested:
            self._send(copy, "cancel")
            return
        target, confirmed = copy.target, copy.confirmed
        if confirmed is None or target.modifiable_view() == confirmed.modifiable_view():
            return
        if target.quantity <= row.filled_qty:  # re-sized at or below what already filled: cancel the rest
            self.ctx.store.write(lambda: self._request_cancel(copy, "resized_below_filled"))
            self._send(copy, "cancel")
            return
        if row.modifications >= self.ctx.policy.max_modifications:
            if self.ctx.policy.replace_after_modification_cap and row.filled_qty == 0:
                # cancel, then place afresh with the current target (see _replace)
                self.ctx.store.write(lambda: (self._flag(copy, "replacing"),
                                              self._request_cancel(copy, "modification cap: cancel and replace")))
                self._send(copy, "cancel")
                return
            if row.anomaly != "modification_cap":
                self.ctx.store.write(lambda: self._flag(copy, "modification_cap"))
                self._record_skip(row.follower, "modification_cap",
                                  f"{row.modifications} modifications reached the broker's cap")
                self.ctx.alert("warning", f"modcap:{row.follower}",
                               f"follower {row.follower}: copy of {self.leader_order_id} hit the modification cap")
            return
        self._send(copy, "modify", target)

    def _replace(self, copy: _Copy) -> None:
        """The second half of cancel-and-replace past the modification cap: the cancelled copy is
        placed again, with the current target, under the next generation's correlation id."""
        def effect() -> None:
            row = copy.row
            row.generation += 1
            row.correlation_id = correlation_id(self.leader_order_id, row.follower, row.generation)
            row.status, row.broker_order_id, row.confirmed = S.PENDING_PLACEMENT.value, None, None
            row.modifications, row.cancel_requested, row.anomaly = 0, False, None
            self._append(self._copy_key(copy), "REPLACED", {"correlation_id": row.correlation_id,
                                                            "generation": row.generation})
            self._save_copy(copy)

        self.ctx.store.write(effect)
        # the old order is cancelled; its cancel's answer, if still to come, is for a correlation id
        # this copy no longer has and will be ignored, so it must not hold the copy as in flight
        copy.in_flight = None
        self.log.info("follower %s: copy replaced after the modification cap as %s", copy.row.follower,
                      copy.row.correlation_id)

    def _abort(self, copy: _Copy) -> None:
        """8.2: the leader cancelled before the copy was sent; never placed, and recorded as a skip
        like anything else not copied."""
        copy.row.status = S.CANCELLED.value
        self._append(self._copy_key(copy), "CANCELLED", {"aborted_before_placement": True})
        self._save_copy(copy)
        self.ctx.store.create(m.Skip, leader_order_id=self.leader_order_id, follower=copy.row.follower,
                              reason="leader_cancelled_before_placement",
                              detail="the leader cancelled before the copy was sent; nothing was placed")

    def _request_cancel(self, copy: _Copy, why: str) -> None:
        copy.row.cancel_requested = True
        self._append(self._copy_key(copy), "CANCEL_REQUESTED", {"because": why})
        self._save_copy(copy)

    def _flag(self, copy: _Copy, anomaly: str) -> None:
        copy.row.anomaly = anomaly
        self._save_copy(copy)

    def _send(self, copy: _Copy, op: str, terms: OrderTerms | None = None, not_before: float = 0.0) -> None:
        """Queue a broker call (sent by its rate limiter not before `not_before`, monotonic);
        `_flush` hands the queued ones to their rate limiters together."""
        row = copy.row
        copy.in_flight, copy.in_flight_token = op, next(_CALL_TOKENS)
        received_ns = copy.received_ns if op == "place" else 0
        self._outbox.append(BrokerCall(
            op=op, follower=row.follower, leader_order_id=self.leader_order_id,
            correlation_id=row.correlation_id, reply_to=self.address, terms=terms,
            broker_order_id=row.broker_order_id, received_ns=received_ns, not_before=not_before,
            token=copy.in_flight_token))

    def _flush(self) -> None:
        """One tight loop for a leader order's fan-out: every follower's call is with its broker
        worker before those workers start competing for the GIL with this thread (deciding and
        sending copy by copy let the tenth copy wait for nine placements' CPU)."""
        outbox, self._outbox = self._outbox, []
        if outbox:
            send_all(self.ctx.limiters, outbox)

    def _schedule_lookups(self) -> None:
        """One timer per actor, for the earliest copy waiting to be looked up again (a timer per
        failure let wake-ups multiply: every one re-sent every copy's lookup)."""
        now = time.monotonic()
        due = min((c.lookup_after for c in self.copies.values()
                   if c.needs_sync and c.in_flight is None and c.lookup_after > now), default=None)
        if due is None or (self._retry_timer is not None and now < self._retry_due <= due):
            return
        if self._retry_timer is not None:
            self._retry_timer.cancel()
        self._retry_due = due
        self._retry_timer = threading.Timer(due - now, self.address.tell, args=(Tick("retry"),))
        self._retry_timer.daemon = True
        self._retry_timer.start()

    # -- lag (4.5) ---------------------------------------------------------------------------------
    def _schedule_lag_check(self) -> None:
        if self._lag_timer is None and self.ctx.policy.lag_alert_seconds > 0:
            self._lag_timer = threading.Timer(self.ctx.policy.lag_alert_seconds, self.address.tell,
                                              args=(Tick("lag"),))
            self._lag_timer.daemon = True
            self._lag_timer.start()

    def _check_lag(self) -> None:
        for copy in self.copies.values():
            if copy.status.is_open or copy.status in (S.PENDING_PLACEMENT, S.UNKNOWN):
                follower = copy.row.follower
                metrics.LAG_ALERTS.labels(follower).inc()
                self.ctx.store.write(lambda c=copy: self._flag(c, "lagging"))
                self.ctx.alert("warning", f"lag:{follower}",
                               f"follower {follower}: copy of leader order {self.leader_order_id} still "
                               f"{copy.status.value} {self.ctx.policy.lag_alert_seconds:.0f}s after the leader filled")

    # -- helpers -----------------------------------------------------------------------------------
    @staticmethod
    def _fill_delta(filled_before: int, avg_before: float, update: OrderUpdate) -> tuple[int, float] | None:
        quantity = update.filled_qty - filled_before
        if quantity <= 0:
            return None
        if update.avg_price and update.filled_qty:
            price = (update.avg_price * update.filled_qty - avg_before * filled_before) / quantity
        else:
            price = update.last_fill_price
        return quantity, round(price, 4)

    def _save_leader(self, update: OrderUpdate, status: OrderStatus, first: bool = False,
                     extra: dict[str, Any] | None = None) -> None:
        fields = dict(status=status.value, security_id=update.terms.security_id,
                      exchange_segment=update.terms.exchange_segment, symbol=update.symbol, side=update.terms.side.value,
                      quantity=update.terms.quantity, terms=json.dumps(terms_to_dict(update.terms)),
                      filled_qty=max(update.filled_qty, self.leader.filled_qty if self.leader else 0),
                      avg_price=update.avg_price or (self.leader.avg_price if self.leader else 0.0),
                      created_at=update.created_at or (self.leader.created_at if self.leader else ""),
                      updated_at=update.updated_at, sequence=update.sequence, last_event_at=time.time())
        if status == S.TRADED:
            fields["filled_at"] = time.time()
        fields.update(extra or {})
        if first or self.leader is None:
            self.leader = self.ctx.store.create(m.LeaderOrder, order_id=self.leader_order_id, **fields)
        else:
            for name, value in fields.items():
                setattr(self.leader, name, value)
            self.ctx.store.save(self.leader)

    def _set_target(self, copy: _Copy, target: OrderTerms) -> None:
        copy.row.target = json.dumps(terms_to_dict(target))
        copy.row.quantity = target.quantity
        self._append(self._copy_key(copy), "TARGET_CHANGED", terms_to_dict(target))
        self._save_copy(copy)

    def _save_copy(self, copy: _Copy) -> None:
        copy.row.updated_at = time.time()
        self.ctx.store.save(copy.row)

    @staticmethod
    def _copy_key(copy: _Copy) -> str:
        return copy_key(copy.row.leader_order_id, copy.row.follower)

    def _retry_copy(self, request: RetryCopy) -> None:
        """An operator's DLQ retry: the copy was refused for good, so it is placed afresh under the
        next generation's correlation id (the old one may exist at the broker as a rejected order)."""
        copy = self.copies.get(request.follower)

        def effect() -> None:
            m.DeadLetter.update(resolved=True, retry_count=m.DeadLetter.retry_count + 1, next_retry_at=None) \
                .where(m.DeadLetter.id == request.dead_letter_id).execute()
            if copy is None or copy.status != S.REJECTED:
                return
            row = copy.row
            row.generation += 1
            row.correlation_id = correlation_id(self.leader_order_id, row.follower, row.generation)
            row.status, row.broker_order_id, row.confirmed, row.last_error = \
                S.PENDING_PLACEMENT.value, None, None, None
            self._append(self._copy_key(copy), "RETRIED", {"correlation_id": row.correlation_id,
                                                           "generation": row.generation})
            self._save_copy(copy)

        self.ctx.store.write(effect)
        if copy is not None:
            copy.rejection_handled = False
            self.log.info("follower %s: retrying the copy of %s as %s", request.follower, self.leader_order_id,
                     copy.row.correlation_id)

    def _tell_fill(self, account: str, update: OrderUpdate, quantity: int) -> None:
        """Keep the sizing actor's positions current between polls. Only fills the socket brings:
        one recovered from the order book may already be in the positions it read at start."""
        if update.source != "socket":
            return
        terms = update.terms
        signed = quantity if terms.side == Side.BUY else -quantity
        self.ctx.sizing.tell(FillSeen(account, terms.exchange_segment, terms.security_id, signed,
                                      update.received_ns))

    def _append(self, order_key: str, kind: str, payload: dict[str, Any]) -> None:
        """Inside a write transaction: append to the event store. This actor is the only writer
        of its orders' keys, so it counts their sequence itself (a rolled-back attempt leaves a
        gap, never a repeat)."""
        last = self._seqs.get(order_key)
        if last is None:
            last = self.ctx.store.last_seq(order_key)
        self.ctx.store.append_order_event(order_key, kind, payload, last + 1)
        self._seqs[order_key] = last + 1

    def _ack(self, event_id: int, outcome: str, settles: Collection[int] = ()) -> None:
        def effect() -> None:
            self.ctx.store.mark_done([event_id], outcome)
            self.ctx.store.mark_done(settles, SETTLED_BY_BROKER)

        self.ctx.store.write(effect)

    def _record_skip(self, follower: str, reason: str, detail: str) -> None:
        metrics.SKIPS.labels(follower, reason).inc()
        self.log.info("leader order %s: follower %s: %s (%s)", self.leader_order_id, follower, reason, detail)
        self.ctx.store.write(lambda: self.ctx.store.create(m.Skip, leader_order_id=self.leader_order_id, follower=follower,
                                                   reason=reason, detail=detail))

    def _finished(self) -> bool:
        if self.leader is None:
            return False
        leader_done = (OrderStatus(self.leader.status).is_terminal and self._reread is None and not self._ambiguous
                       and not self._filled_first)
        return leader_done and all(c.status.is_terminal and c.in_flight is None for c in self.copies.values())

    def _maybe_idle(self) -> None:
        if self._finished() and self.supervisor is not None:
            self.supervisor.tell(OrderActorIdle(self.leader_order_id))

    def _snapshot(self) -> dict[str, Any]:
        return {"leader": self.leader.status if self.leader else None,
                "copies": {f: (c.status.value, c.in_flight) for f, c in self.copies.items()}}


def flatten_correlation_id(leader_order_id: str, follower: str) -> str:
    """The correlation id of the order that closes a naked strategy leg (one per leg and follower)."""
    return correlation_id(leader_order_id + ":flatten", follower)


def copy_key(leader_order_id: str, follower: str) -> str:
    """The event-store key of a follower copy: stable across retries (its correlation id is not)."""
    return f"F:{leader_order_id}:{follower}"


def _status_or_none(text: str) -> OrderStatus | None:
    try:
        return codes.status(text)
    except ValueError:
        return None


def _reason_label(message: str) -> str:
    return BrokerError("", ErrorKind.ORDER, message).reason
