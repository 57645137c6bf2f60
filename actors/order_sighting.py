"""A leader order seen for the first time: whether to copy it, and how much, per follower.

An order that names no price (MARKET) is sized and checked at a reference price: a fresh quote
from the board at once; else the first of a quote asked now and the leader's own fill (it follows
within moments), for at most `copy.market_fill_wait_seconds`. Until then its updates are held
(`Waiting`), not acknowledged (a restart replays them). An order with a price never waits.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import pykka

from actors.messages import QuotePrice, ReleaseCapital, SizeCopies, SizeCopy, SizeDecision, SizedCopies
from actors.order_timers import PriceWaitOver, SizingOverdue
from actors.sizing import POSITIONS_UNREAD, SIZING_TIMEOUT
from actors.order_part import OrderPart
from observability import metrics
from storage.orders import StoredLeader, leader_key
from trading import copy as c
from trading.fills import fill_delta
from trading.instruments import Instrument
from trading.leader import first_seen
from trading.leg_order import held_at_sight
from trading.ordering import Ordering, order_of
from trading.orders import OrderStatus, OrderUpdate, update_to_dict
from trading.prices import LEADER_FILL, NONE, QUOTE, awaits_price, own_price, traded_price
from trading.super_orders import SuperOrderView, leader_exits

if TYPE_CHECKING:
    from actors.order import OrderActor
    from actors.order_plan import Plan

log = logging.getLogger("actors.order")
S = OrderStatus
CLOSED = (S.CANCELLED, S.REJECTED, S.EXPIRED)


@dataclass
class Sizing:
    """A leader order whose sizing waits for a reading (an exit waits for the followers' positions):
    decided once the sizing actor tells `SizingReady`. Meanwhile the order actor holds no thread,
    and what it is told waits (`OrderActor.stashed`)."""

    future: pykka.Future
    decide: Callable[[SizedCopies], None]


@dataclass
class Waiting:
    """A leader order seen but not yet decided: it names no price and none is known yet."""

    event_ids: list[int]
    update: OrderUpdate  # the latest of its updates
    received_ns: int  # when the first arrived: the copies' latency counts the wait
    for_exits: bool = False  # a super order, waiting for its target, stop-loss and jump to be read


class FirstSighting(OrderPart):
    def __init__(self, actor: "OrderActor") -> None:
        super().__init__(actor)
        self.waiting: Waiting | None = None
        self.sizing: Sizing | None = None

    def on_update(self, event_id: int, update: OrderUpdate) -> None:
        actor = self.actor
        waiting = self.waiting
        if waiting is not None:  # a later update of an order still waiting for a price (or its exits)
            waiting.event_ids.append(event_id)
            if order_of(waiting.update, update) not in (Ordering.STALE, Ordering.SAME):  # a tie: arrival order
                waiting.update = update
            if not waiting.for_exits and not awaits_price(waiting.update):  # it traded (or closed): decide now
                self._end_wait(traded_price(waiting.update), LEADER_FILL)
            return
        if update.terms.super_order and self._copyable(update):
            # a super order: no update carries its exits, so they are read before any copy is decided
            self.waiting = Waiting([event_id], update, update.received_ns, for_exits=True)
            actor.supers.ask()
            return
        policy = actor.ctx.policy
        if not awaits_price(update) or not policy.price_needed:
            self.decide([event_id], update, traded_price(update), LEADER_FILL, update.received_ns)
            return
        quotes = actor.ctx.quotes
        cached = quotes.cached(update.terms) if quotes is not None else None
        if cached is not None or policy.market_fill_wait_seconds <= 0:
            self.decide([event_id], update, cached or 0.0, QUOTE if cached else NONE, update.received_ns)
            return
        self.waiting = Waiting([event_id], update, update.received_ns)
        actor.after(policy.market_fill_wait_seconds, PriceWaitOver(), name="price_wait")
        if quotes is not None:
            quotes.ask(update.terms, actor.address)

    def _copyable(self, update: OrderUpdate) -> bool:
        """Whether the order may be copied at all (else it is decided, as a skip, at once)."""
        instrument = self.actor.ctx.instruments.get(update.terms.exchange_segment, update.terms.security_id)
        return update.source not in ("baseline", "outage") and update.status not in (S.REJECTED, *CLOSED) \
            and instrument is not None

    def on_super(self, view: SuperOrderView) -> None:
        """The leader's super order as read: its copies are decided with its exits."""
        waiting, self.waiting = self.waiting, None
        if waiting is None:
            return
        update = waiting.update
        terms = leader_exits(view, update.terms.with_exits_of(update.terms))
        self.decide(waiting.event_ids, dataclasses.replace(update, terms=terms), traded_price(update), LEADER_FILL,
                    waiting.received_ns)

    def on_super_unreadable(self, problem: str) -> None:
        """The super order could not be read: without its exits nothing is copied (a recorded skip)."""
        waiting, self.waiting = self.waiting, None
        if waiting is None:
            return
        self.decide(waiting.event_ids, waiting.update, 0.0, NONE, waiting.received_ns,
                    skip=("super_order_unreadable", f"its target and stop-loss could not be read: {problem}"))

    def on_quote(self, quote: QuotePrice) -> None:
        if self.waiting is not None and not self.waiting.for_exits and quote.price > 0:
            self._end_wait(quote.price, QUOTE)

    def on_wait_over(self) -> None:
        """No quote and no fill in time: decided unvalued (a value rule refuses it as price_unknown)."""
        if self.waiting is not None and not self.waiting.for_exits:
            self._end_wait(0.0, NONE)

    def _end_wait(self, reference: float, source: str) -> None:
        waiting, self.waiting = self.waiting, None
        assert waiting is not None
        self.actor.cancel_timer("price_wait")
        self.decide(waiting.event_ids, waiting.update, reference, source, waiting.received_ns)

    def decide(self, event_ids: list[int], update: OrderUpdate, reference: float, source: str,
               received_ns: int, skip: tuple[str, str] | None = None) -> None:
        """Per follower, copy or skip, at `reference` (0: no price known); `received_ns`: when the
        order was first seen; `skip`: the reason none is copied, when known already. One
        transaction stores the order, its copies and their events."""
        actor = self.actor
        ctx = actor.ctx
        metrics.LEADER_EVENTS.labels("placed").inc()
        instrument = ctx.instruments.get(update.terms.exchange_segment, update.terms.security_id)
        order_skip = skip or self._order_skip_reason(update, instrument)
        # At a first start on an empty database, copies made before it may exist at the brokers.
        adopted = actor.records.adopted_copies() if update.source == "adopt" else {}  # by part key
        adopted_by = {c.split_part_key(key)[0] for key in adopted}  # followers with a copy (a slice) adopted
        if order_skip is None:
            assert instrument is not None
            source = source if reference > 0 else NONE
            if own_price(update.terms) <= 0:
                metrics.REFERENCE_PRICES.labels(source).inc()
            requests = tuple(SizeCopy(f, c.correlation_id(actor.leader_order_id, f), update.terms, instrument, reference,
                                      update.filled_qty, actor.leader_order_id, source, leader=actor.leader_account)
                             for f in ctx.followers if f not in adopted_by and ctx.follows(f, actor.leader_account))
            if requests:
                answer = actor.ask_sizing(SizeCopies(requests, actor.leader_order_id, reply_to=actor.address), wait=False)
                if isinstance(answer, pykka.Future):  # it waits for a reading: decided when told, no thread held
                    self.sizing = Sizing(answer, lambda sized: self._decide(
                        event_ids, update, received_ns, instrument, order_skip, adopted, requests, sized))
                    actor.after(SIZING_TIMEOUT, SizingOverdue(), name="sizing")
                    return
                self._decide(event_ids, update, received_ns, instrument, order_skip, adopted, requests, answer)
                return
        self._decide(event_ids, update, received_ns, instrument, order_skip, adopted, (), None)

    def on_held(self, seconds: float) -> None:
        """The sizing actor holds the exit `seconds` longer than usual (copies whose placement is
        looked up first): so much more patience before taking it for stuck."""
        if self.sizing is not None:
            self.actor.after(SIZING_TIMEOUT + seconds, SizingOverdue(), name="sizing")

    def on_sizing(self, overdue: bool) -> bool:
        """The sizing actor says the answer it owed is in (or it is overdue): True once decided."""
        sizing = self.sizing
        if sizing is None:
            return False  # an earlier incarnation's, or already decided
        try:
            sized = sizing.future.get(timeout=0)
        except pykka.Timeout as exc:
            if not overdue:
                return False
            # as a blocked ask's timeout was: sizing unavailable (a crash, retried), never poison
            raise RuntimeError(f"sizing unavailable: no answer in {SIZING_TIMEOUT:g}s") from exc
        except pykka.ActorDeadError as exc:  # it stopped before answering (a sizing bug raises as it is)
            raise RuntimeError(f"sizing unavailable: {exc}") from exc
        self.sizing = None
        self.actor.cancel_timer("sizing")
        sizing.decide(sized)
        return True

    def _decide(self, event_ids: list[int], update: OrderUpdate, received_ns: int, instrument: Instrument | None,
                order_skip: tuple[str, str] | None, adopted: dict[str, tuple[int, OrderUpdate]],
                requests: tuple[SizeCopy, ...], sized: SizedCopies | None) -> None:
        """`decide`, once its copies are sized (`sized`: None when nothing was to be sized)."""
        actor = self.actor
        ctx = actor.ctx
        decisions: dict[str, SizeDecision] = {}
        unreserve: list[str] = []
        group_id, reduces_position, position_before = None, False, None
        if sized is not None:
            assert instrument is not None
            group_id, reduces_position, position_before = sized.group_id, sized.reduces_position, sized.position_before
            decisions = {request.follower: decision for request, decision in zip(requests, sized.decisions)}
            for follower, decision in list(decisions.items()):
                refused = None if decision.skip_reason else actor.slices.refusal(instrument, decision.quantity)
                if refused is not None:  # (the capital reserved for it is released once stored)
                    decisions[follower] = SizeDecision(decision.quantity, decision.disclosed_qty, 0.0, *refused)
                    unreserve.append(follower)
        # wall clock of the first arrival: a copy's age counts from it, across restarts
        seen_at = time.time() - max(0, time.monotonic_ns() - received_ns) / 1e9 if received_ns else time.time()
        leader = StoredLeader(first_seen(update), seen_at, group_id, instrument.underlying if instrument else None,
                              actor.leader_account, reduces_position, position_before)
        fill = fill_delta(0, 0.0, update.filled_qty, update.avg_price, update.last_fill_price)  # seen (partly) filled

        def build(plan: "Plan") -> None:
            records = actor.records
            plan.write(lambda: records.create_leader(leader, update))
            plan.record(leader_key(actor.leader_order_id), "SEEN", update_to_dict(update))
            actor.leader = leader
            if fill:  # after the sizing ask, which accounted for it through leader_filled
                actor.fills.leader_fill(plan, update, fill)
            if order_skip is not None:
                plan.skip(None, *order_skip)
            for follower, decision in decisions.items():
                target = update.terms.with_changes(quantity=decision.quantity, disclosed_qty=decision.disclosed_qty)
                if decision.skip_reason:
                    plan.create(c.Skipped(actor.leader_order_id, follower, target, decision.skip_reason,
                                          decision.detail))
                    plan.skip(follower, decision.skip_reason, decision.detail)
                    continue
                # above the freeze quantity: one copy per slice (actors/order_slices.py); the capital
                # reserved for the whole copy is held by its first slice
                parts = actor.slices.targets(instrument, target)
                held = held_at_sight(ctx.leg_order(follower), target.side, group_id)  # waits for its BUY legs
                for part, terms in enumerate(parts):
                    state = plan.create(c.Submitted(actor.leader_order_id, follower, terms, part=part, held=held),
                                        decision.reserved if part == 0 else 0.0)
                    actor.received_ns[state.key] = received_ns
                    absent_from = actor.unstored_placement(state.correlation_id)
                    if absent_from is not None:  # it may be at the broker already: looked up first
                        plan.apply(state.key, c.Resumed(time.time(), absent_from))
                        plan.then(lambda cid=state.correlation_id: ctx.sent_unstored.pop(cid, None))
                if len(parts) > 1:
                    plan.then(lambda f=follower, n=len(parts): actor.slices.counted(f, n, new_copy=True))
            for key, (generation, order) in adopted.items():  # each slice of a copy adopted on its own
                follower, part = c.split_part_key(key)
                plan.create(c.Submitted(actor.leader_order_id, follower, order.terms, generation, order.order_id,
                                        part=part))
                if update.status in CLOSED:
                    plan.apply(key, c.CancelRequested("the leader's order was closed before its copy was adopted"))
            if update.source == "adopt":  # a first start on an empty database: every copy is looked up first
                for follower, copy in list(plan.states.items()):
                    if not copy.status.is_terminal and not copy.lookup_needed:
                        plan.apply(follower, c.SyncRequested())
            plan.done(event_ids, "skipped" if order_skip else "copied")
            for follower in unreserve:
                cid = c.correlation_id(actor.leader_order_id, follower)
                plan.then(lambda f=follower, cid=cid: ctx.sizing.tell(ReleaseCapital(f, cid)))

        previous = actor.leader
        try:
            actor.operate(build, placements_first=True)
        except BaseException:
            actor.leader = previous
            raise
        self._announce(update, order_skip, decisions, adopted, group_id)

    def _announce(self, update: OrderUpdate, order_skip: tuple[str, str] | None, decisions: dict[str, SizeDecision],
                  adopted: dict[str, tuple[int, OrderUpdate]], group_id: str | None) -> None:
        actor = self.actor
        for key, (_generation, order) in adopted.items():
            log.info("follower %s: broker order %s adopted as the copy of leader order %s", key,
                     order.order_id, actor.leader_order_id, extra=actor.fields(c.split_part_key(key)[0]))
        if order_skip is not None:
            metrics.SKIPS.labels("all", order_skip[0]).inc()
            log.info("leader order %s not copied: %s (%s)", actor.leader_order_id, *order_skip, extra=actor.fields())
        for follower, decision in decisions.items():
            if decision.skip_reason:
                metrics.SKIPS.labels(follower, decision.skip_reason).inc()
                log.info("leader order %s: follower %s skipped: %s (%s)", actor.leader_order_id, follower,
                         decision.skip_reason, decision.detail, extra=actor.fields(follower))
                if decision.skip_reason == POSITIONS_UNREAD:  # a position the leader closed, left open
                    actor.ctx.alert("warning", f"{POSITIONS_UNREAD}:{follower}:{actor.leader_order_id}",
                                    f"follower {follower}: the exit of leader order {actor.leader_order_id} "
                                    f"was not copied: {decision.detail}")
            if decision.unwind and group_id:
                actor.legs.unwind_strategy(follower, decision.skip_reason or "leg not placed")
        if update.status is S.TRADED:
            actor.fills.schedule_lag_check()

    def _order_skip_reason(self, update: OrderUpdate, instrument: Instrument | None) -> tuple[str, str] | None:
        ctx = self.actor.ctx
        if update.source == "baseline":
            return "preexisting_order", "placed before the copier first started"
        if update.source == "outage":
            return "storage_unavailable", "placed while storage could not be written; not copied late"
        if update.status is S.REJECTED:
            return "leader_rejected", update.reason or "rejected by the broker"
        if update.status in (S.CANCELLED, S.EXPIRED):
            return "leader_closed_before_copy", f"already {update.status.value} when first seen"
        if instrument is None:  # before any broker call
            return "unknown_instrument", (f"security {update.terms.security_id} on {update.terms.exchange_segment} "
                                          "is not in the instrument master")
        forever = ctx.forever_trigger(update, self.actor.leader_account)
        if forever:  # each follower's own forever copy triggers by itself: copying this would double it
            return "forever_triggered", f"created by the leader's forever order {forever}, copied as a forever order"
        off = ctx.copying_enabled()
        if off:
            return off, "copying is switched off"
        return self._market_skip_reason(update)

    def _market_skip_reason(self, update: OrderUpdate) -> tuple[str, str] | None:
        """Nothing is sent outside the session rules; one alert per reason a day."""
        ctx = self.actor.ctx
        if ctx.calendar is None:
            return None
        at = ctx.clock()
        terms = update.terms
        verdict = ctx.calendar.check_order(terms.exchange_segment, terms.order_type.value, terms.amo, at)
        if verdict.allowed:
            return None
        reason = verdict.reason or "market_closed"
        ctx.alert("warning", f"market:{reason}:{at.date().isoformat()}",
                  f"leader order {self.actor.leader_order_id} not copied: {reason} ({verdict.detail})")
        return reason, verdict.detail

