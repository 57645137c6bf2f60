"""A follower copy's lifecycle, as a pure state machine.

A copy is a frozen `CopyState`. It is created from its first event (`start`), then moves only by
`apply(state, event)`: every step is a row of `TRANSITIONS`, keyed by the copy's `Phase` (where
it stands, including the broker call in flight) and the event's type. An event the table does not
allow raises `InvalidCopyEvent`; the caller counts it and leaves the copy as it was.
`decide(state, leader, now)` says what the copy needs next: one broker call (`Place`, `Modify`,
`Cancel`, `Lookup`, `Read`), one local step (`Abort`, `SkipLate`, `Replace`, ...), a `Wait`, or
None. At most one call is in flight per copy.

Nothing here does I/O or reads a clock: times arrive as event fields and `now` (wall-clock
seconds). The order actor (actors/order.py) turns messages into events and carries decisions
out; replay (trading/replay.py) folds the stored events through the same `apply`.

    state = start(Submitted("L1", "f1", terms))
    decision = decide(state, Leader(open=True, seen_at=t0), now=t0)   # Place(terms=...)
    state = apply(state, PlaceSent())                                  # phase PLACING
    state = apply(state, Placed("F1", OrderStatus.PENDING, terms))     # phase OPEN

Sends (`PlaceSent`, ...) are not stored, and neither is anything else that changes only what is
in memory (lookup backoff, the call in flight): a restarted actor forgets them and looks every
open copy up before it acts (`Resumed`). So every answer is also accepted when nothing is in
flight: that is how replay sees it, and how an incarnation started after a crash receives the
answer to a call its predecessor sent.
"""
from __future__ import annotations

import enum
import functools
from dataclasses import dataclass
from typing import Any, Callable, Container, Iterable, Mapping, Union

from trading.fills import fill_delta
from trading.leg_order import HEDGE_NOT_FILLED
from trading.lifecycle import InvalidTransition, OrderEvent, event_for_status, next_state
from trading.orders import Leg, OrderStatus, OrderTerms, OrderType, OrderUpdate
from trading.orders import correlation_id as _correlation_id
from trading.super_orders import leg_open

S = OrderStatus
_cached_correlation_id = functools.lru_cache(maxsize=8192)(_correlation_id)  # a hash per copy and generation


def correlation_id(leader_order_id: str, follower: str, generation: int = 0, part: int = 0) -> str:
    """The correlation id of a copy's order: of the copy itself for its first (or only) part, and
    one derived from it for each further slice, so that every slice is placed, looked up and
    adopted on its own, exactly once."""
    if part == 0:
        return _cached_correlation_id(leader_order_id, follower, generation)
    return _cached_correlation_id(f"{leader_order_id}#{part}", follower, generation)


def part_key(follower: str, part: int = 0) -> str:
    """How an order actor names one part of a follower's copy: the follower for the first (or
    only) slice, `follower#N` for slice N+1 (follower names never hold '#')."""
    return follower if part == 0 else f"{follower}#{part}"


def split_part_key(key: str) -> tuple[str, int]:
    """(follower, part) of a part key (`part_key`'s inverse)."""
    follower, _, part = key.partition("#")
    return follower, int(part or 0)


def parts_of(states: Mapping[str, "CopyState"], follower: str, sliced: Container[str]) -> list["CopyState"]:
    """Every slice of `follower`'s copy in `states` (by part key), the first first. `sliced`: the
    followers with a slice beyond the first; any other holds one part at most, found by its key
    (a fan-out's every reply asks, so no walk over every follower's copy)."""
    if follower not in sliced:
        state = states.get(follower)
        return [state] if state is not None else []
    return sorted((s for s in states.values() if s.follower == follower), key=lambda s: s.part)


def sliced_followers(states: Iterable["CopyState"]) -> frozenset[str]:
    return frozenset(s.follower for s in states if s.part > 0)


# Lookups of a placement whose outcome is unknown that got no answer: the next waits this long,
# doubling up to the cap.
LOOKUP_BACKOFF_FIRST = 0.5
LOOKUP_BACKOFF_MAX = 5.0
# Any other lookup that failed is asked again after LOOKUP_RETRY_SECONDS, doubling up to
# LOOKUP_RETRY_MAX_SECONDS; after LOOKUP_ATTEMPTS failures in a row the copy is flagged
# `lookup_failed` and left alone until news of its order arrives (an order the broker does not
# know is not found by asking forever, and every ask spends the account's data budget).
LOOKUP_RETRY_SECONDS = 1.0
LOOKUP_RETRY_MAX_SECONDS = 30.0
LOOKUP_ATTEMPTS = 6

# Broker refusals that are a property of the market or the account, not of the copier: recorded
# as skips with the reason, never retried, never dead-lettered.
SKIP_REASONS = frozenset({"insufficient_margin", "circuit_limit", "trading_halted", "market_closed",
                          "exchange_holiday"})
TOO_LATE = "copy_too_late"  # the skip reason of a copy not sent because it was too old
AT_MARKET = frozenset({OrderType.MARKET, OrderType.STOP_LOSS_MARKET})  # orders that execute at the market's price


class Call(str, enum.Enum):
    """The broker call in flight for a copy (at most one)."""

    NONE = "none"
    PLACE = "place"
    MODIFY = "modify"
    CANCEL = "cancel"
    LOOKUP = "lookup"  # by correlation id (else in the order book)
    READ = "get"  # by broker order id


class Phase(str, enum.Enum):
    """Where a copy stands: its status, or the call in flight when there is one."""

    NEW = "new"  # stored, not sent (PENDING_PLACEMENT)
    PLACING = "placing"
    UNKNOWN = "unknown"  # a placement's outcome unknown: looked up, never sent again
    OPEN = "open"  # working at the broker (TRANSIT, PENDING, PART_TRADED)
    MODIFYING = "modifying"
    CANCELLING = "cancelling"
    LOOKING_UP = "looking_up"
    READING = "reading"
    CLOSED = "closed"  # TRADED, CANCELLED, REJECTED, EXPIRED or SKIPPED


_CALL_PHASES = {Call.PLACE: Phase.PLACING, Call.MODIFY: Phase.MODIFYING, Call.CANCEL: Phase.CANCELLING,
                Call.LOOKUP: Phase.LOOKING_UP, Call.READ: Phase.READING}


@dataclass(frozen=True)
class CopyState:
    """One follower's copy of one leader order. `target` is what it should be (the leader's terms,
    sized); `confirmed` what the broker last acknowledged."""

    leader_order_id: str
    follower: str
    correlation_id: str
    target: OrderTerms
    status: OrderStatus = S.PENDING_PLACEMENT
    part: int = 0  # which slice of the follower's copy (0: the first, or the only one)
    generation: int = 0  # bumped when the copy is placed afresh (operator retry, replace past the cap)
    call: Call = Call.NONE
    broker_order_id: str | None = None
    confirmed: OrderTerms | None = None
    cancel_requested: bool = False
    filled_qty: int = 0
    avg_price: float = 0.0
    modifications: int = 0
    anomaly: str | None = None
    replacing: bool = False  # cancelled past the modification cap, to be placed afresh
    skip_reason: str | None = None
    last_error: str | None = None
    error_code: str | None = None  # of last_error: a broker code, or REJECTED for a rejection seen on the socket
    error_reason: str | None = None  # the broker error's reason label, when the placement was refused
    rejection_recorded: bool = True  # a REJECTED copy's skip or dead letter is stored
    # ask the broker before acting: after a restart, an adoption, a failed call, an operator's sync
    lookup_needed: bool = False
    lookup_failures: int = 0  # lookups in a row that failed
    lookup_after: float = 0.0  # backing off: no lookup before this
    lookups_given_up: bool = False
    # a placement whose outcome is unknown
    unknown_since: float = 0.0
    absent_believed_from: float = 0.0  # a lookup sent before this that finds nothing is not believed
    next_lookup: float = 0.0
    unknown_lookups_failed: int = 0
    found_absent: int = 0  # placements lookups found never took effect (each placed again)
    # a super order's exit legs at the broker (None: not placed yet, or no update of them seen yet)
    target_leg: OrderStatus | None = None
    stop_loss_leg: OrderStatus | None = None
    # a SELL leg of a strategy, held (not sent) until its BUY legs fill (trading/leg_order.py)
    held: bool = False

    @property
    def phase(self) -> Phase:
        return phase(self)

    @property
    def key(self) -> str:
        return part_key(self.follower, self.part)

    @property
    def in_flight(self) -> str | None:
        return None if self.call is Call.NONE else self.call.value


def phase(state: CopyState) -> Phase:
    if state.call is not Call.NONE:
        return _CALL_PHASES[state.call]
    status = state.status
    if status is S.PENDING_PLACEMENT:
        return Phase.NEW
    if status is S.UNKNOWN:
        return Phase.UNKNOWN
    return Phase.CLOSED if status.is_terminal and not exits_live(state) else Phase.OPEN


def exits_live(state: CopyState) -> bool:
    """A super order whose entry traded (some of it) keeps working through its exit legs, until
    each has traded or been cancelled: its copy is not finished before."""
    if not state.target.super_order or state.filled_qty <= 0 or not state.broker_order_id:
        return False
    terms = state.confirmed or state.target
    return ((terms.target_price > 0 and leg_open(state.target_leg))
            or (terms.stop_loss_price > 0 and leg_open(state.stop_loss_leg)))


def _evolve(state: CopyState, **changes: Any) -> CopyState:
    """`dataclasses.replace` without its cost (it re-runs `__init__` over every field): a copy
    moves several times per leader event, on the copier's hot path."""
    new = object.__new__(CopyState)
    new.__dict__.update(state.__dict__)
    new.__dict__.update(changes)
    return new


# -- events ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Submitted:
    """A copy to place (or, with `adopted`, an order found at the broker at a first start)."""

    leader_order_id: str
    follower: str
    target: OrderTerms
    generation: int = 0
    adopted: str | None = None  # the broker order id of an adopted copy
    part: int = 0  # a slice of a copy above the freeze quantity: which one
    held: bool = False  # a SELL leg held until its strategy's BUY legs fill (follower `legs: buy_first`)


@dataclass(frozen=True)
class Skipped:
    """A copy decided against at first sight (sizing, a risk rule, a paused account...)."""

    leader_order_id: str
    follower: str
    target: OrderTerms
    reason: str
    detail: str = ""


@dataclass(frozen=True)
class OrderSeen:
    """A snapshot of the copy's order at the broker (socket, order book, an answer). Fields a
    stored record lacks stay at their defaults."""

    order_id: str
    status: OrderStatus
    terms: OrderTerms | None = None
    filled_qty: int = 0
    avg_price: float = 0.0
    last_fill_price: float = 0.0
    reason: str = ""

    @classmethod
    def of(cls, update: OrderUpdate) -> "OrderSeen":
        return cls(update.order_id, update.status, update.terms, update.filled_qty, update.avg_price,
                   update.last_fill_price, update.reason)


@dataclass(frozen=True)
class Resumed:
    """A new incarnation of the order actor loaded the copy from storage at `at`; what was in
    flight is forgotten. `sync`: look it up before acting. A placement the last incarnation may
    have sent (the copy unknown, or stored and not yet answered) can still reach the broker: a
    lookup that finds nothing is believed only from `absent_believed_from` on."""

    at: float
    absent_believed_from: float
    sync: bool = True


@dataclass(frozen=True)
class SyncRequested:
    """Look the copy up again and converge from what the broker says (reconciler, operator)."""


@dataclass(frozen=True)
class NewsArrived:
    """News of the order, or a command: lookups given up are worth one more try."""


@dataclass(frozen=True)
class TargetChanged:
    target: OrderTerms


@dataclass(frozen=True)
class CancelRequested:
    because: str


@dataclass(frozen=True)
class Aborted:
    """Cancelled before it was ever sent: nothing was placed."""


@dataclass(frozen=True)
class SkippedLate:
    """Not sent: the copy was `age` seconds old, past the limit for its order type."""

    age: float
    limit: float
    order_type: str = ""

    @property
    def detail(self) -> str:
        kind = f"{self.order_type} " if self.order_type else ""
        return (f"the {kind}copy was {self.age:.1f}s old, past copy.max_delay_seconds ({self.limit:g}s): "
                "not sent late")


@dataclass(frozen=True)
class ReplaceStarted:
    """Past the modification cap: cancelled, to be placed afresh with the current target."""


@dataclass(frozen=True)
class Replaced:
    """The cancelled copy placed afresh under the next generation's correlation id."""


@dataclass(frozen=True)
class Retried:
    """An operator's retry of a refused copy: placed afresh under the next generation's id."""


@dataclass(frozen=True)
class CaughtUp:
    """An operator resumed a paused follower with catch-up: its copy, skipped while it was paused,
    of a leader order still open is placed now, sized as `target`, under the next generation's id."""

    target: OrderTerms


@dataclass(frozen=True)
class Released:
    """A held SELL leg's BUY legs filled (or none came within the leg window): placed now."""


@dataclass(frozen=True)
class HedgeRefused:
    """A held SELL leg whose BUY legs failed or did not fill in time: never placed."""

    detail: str


@dataclass(frozen=True)
class Flagged:
    anomaly: str  # lagging, follower_filled_first, modification_cap, lookup_failed, flattened, naked_leg


@dataclass(frozen=True)
class RejectionRecorded:
    """The skip or dead letter saying why the copy was refused is stored."""


@dataclass(frozen=True)
class PlaceSent:
    """A `Place` carried out: the placement of the current target is in flight."""


@dataclass(frozen=True)
class ModifySent:
    pass


@dataclass(frozen=True)
class CancelSent:
    pass


@dataclass(frozen=True)
class LookupSent:
    pass


@dataclass(frozen=True)
class ReadSent:
    pass


@dataclass(frozen=True)
class Placed:
    """The broker accepted the placement of `terms` as `broker_order_id` (its answer's status, if any)."""

    broker_order_id: str
    status: OrderStatus | None
    terms: OrderTerms | None


@dataclass(frozen=True)
class PlacementRefused:
    """The broker refused the placement, or holds no order after every attempt."""

    error: str
    code: str
    reason: str


@dataclass(frozen=True)
class OutcomeUnknown:
    """A placement's answer was lost (no answer, a 5xx, unreadable): the broker may hold it. A
    lookup that finds nothing is believed only when sent from `absent_believed_from` on."""

    error: str
    at: float
    absent_believed_from: float


@dataclass(frozen=True)
class ModifyAccepted:
    terms: OrderTerms | None


@dataclass(frozen=True)
class CancelAccepted:
    status: OrderStatus | None
    leg: Leg | None = None  # a super order's exit leg cancelled on its own


@dataclass(frozen=True)
class CallFailed:
    """A modify, cancel, lookup or read failed for good (transient failures were retried first)."""

    call: Call
    error: str
    at: float = 0.0
    auth: bool = False  # the broker refused the account's token
    transient: bool = False
    leg: Leg | None = None  # the super order's exit leg the modify or cancel was for


@dataclass(frozen=True)
class LegSeen:
    """A snapshot of one exit leg of the copy's super order at the broker."""

    leg: Leg
    status: OrderStatus


@dataclass(frozen=True)
class OrderFound:
    """A lookup or read found the order (`order`; None in records of older versions)."""

    broker_order_id: str
    order: OrderSeen | None = None


@dataclass(frozen=True)
class NotFound:
    """A lookup answered that the broker holds no order with the copy's correlation id."""

    sent_at: float = float("inf")


Event = Union[Resumed, SyncRequested, NewsArrived, TargetChanged, CancelRequested, Aborted, SkippedLate,
              ReplaceStarted, Replaced, Retried, CaughtUp, Released, HedgeRefused, Flagged, RejectionRecorded,
              PlaceSent, ModifySent, CancelSent,
              LookupSent, ReadSent, Placed, PlacementRefused, OutcomeUnknown, ModifyAccepted, CancelAccepted,
              CallFailed, OrderFound, NotFound, OrderSeen, LegSeen]


class InvalidCopyEvent(Exception):
    """An event the table does not allow in the copy's phase."""

    def __init__(self, state: CopyState, event: object) -> None:
        super().__init__(f"{type(event).__name__} is not allowed for a copy in phase {phase(state).value} "
                         f"(status {state.status.value})")
        self.phase = phase(state)
        self.event = event


def start(event: Submitted | Skipped) -> CopyState:
    """A copy from its first event."""
    if isinstance(event, Skipped):
        return CopyState(event.leader_order_id, event.follower, correlation_id(event.leader_order_id, event.follower),
                         event.target, status=S.SKIPPED, skip_reason=event.reason, last_error=event.detail or None)
    return CopyState(event.leader_order_id, event.follower,
                     correlation_id(event.leader_order_id, event.follower, event.generation, event.part), event.target,
                     part=event.part, generation=event.generation, lookup_needed=event.adopted is not None,
                     held=event.held)


# -- the effects of the rows ---------------------------------------------------------------------------
def _entry(state: CopyState, seen: OrderSeen) -> OrderSeen:
    """A super order's entry leg as the broker shows it, completed with the exits the copy has
    (no update carries them)."""
    if not state.target.super_order or seen.terms is None:
        return seen
    return _evolve_seen(seen, seen.terms.with_exits_of(state.confirmed or state.target))


def _evolve_seen(seen: OrderSeen, terms: OrderTerms) -> OrderSeen:
    return OrderSeen(seen.order_id, seen.status, terms, seen.filled_qty, seen.avg_price, seen.last_fill_price,
                     seen.reason)


def broker_transition(state: CopyState, seen: OrderSeen) -> tuple[OrderEvent | None, bool]:
    """The lifecycle event a snapshot makes of the copy's status (None: nothing new), and whether the
    lifecycle table allows it. A disallowed one leaves the status as it was (the rest of the
    snapshot, such as a fill, still counts); the caller counts it."""
    seen = _entry(state, seen)
    changed = (seen.terms is not None and state.confirmed is not None
               and state.confirmed.modifiable_view() != seen.terms.modifiable_view())
    event = event_for_status(state.status, seen.status, state.filled_qty, seen.filled_qty, changed)
    if event is None:
        return None, True
    try:
        next_state(state.status, event)
    except InvalidTransition:
        return event, False
    return event, True


def _seen(state: CopyState, seen: OrderSeen) -> CopyState:
    changes: dict[str, Any] = {}
    seen = _entry(state, seen)
    event, allowed = broker_transition(state, seen)
    if event is not None and allowed:
        changes["status"] = next_state(state.status, event)
    if not state.broker_order_id and seen.order_id:
        changes["broker_order_id"] = seen.order_id
    if seen.status is S.REJECTED and seen.reason:
        changes.update(last_error=seen.reason, error_code="REJECTED", error_reason=None)
    fill = fill_delta(state.filled_qty, state.avg_price, seen.filled_qty, seen.avg_price, seen.last_fill_price)
    if fill:
        changes.update(filled_qty=seen.filled_qty, avg_price=seen.avg_price or fill.price)
    if state.call in (Call.NONE, Call.LOOKUP, Call.READ) and seen.status.is_open and seen.terms is not None:
        changes["confirmed"] = seen.terms  # nothing that changes its terms is in flight
    if changes.get("status") is S.REJECTED and state.status is not S.REJECTED:
        changes["rejection_recorded"] = False
    return _evolve(state, **changes) if changes else state


def _answer_status(state: CopyState, status: OrderStatus) -> CopyState:
    """A status given in an answer moves the copy like a snapshot of it would."""
    return _seen(state, OrderSeen(state.broker_order_id or "", status, state.confirmed or state.target,
                                  state.filled_qty, state.avg_price))


def _sent(call: Call) -> Callable[[CopyState, Any], CopyState]:
    return lambda state, _event: _evolve(state, call=call)


def _placed(state: CopyState, e: Placed) -> CopyState:
    state = _evolve(state, call=Call.NONE, broker_order_id=e.broker_order_id or state.broker_order_id,
                    confirmed=e.terms or state.confirmed)
    status = e.status if e.status not in (None, S.PENDING_PLACEMENT) else S.PENDING  # the broker holds it
    return _answer_status(state, status)


def _refused(state: CopyState, e: PlacementRefused) -> CopyState:
    return _evolve(state, call=Call.NONE, status=S.REJECTED, last_error=e.error, error_code=e.code,
                   error_reason=e.reason,
                   rejection_recorded=state.rejection_recorded and state.status is S.REJECTED)


def _unknown(state: CopyState, e: OutcomeUnknown) -> CopyState:
    if state.status is not S.PENDING_PLACEMENT:  # its own update came first: it exists; learn its terms
        return _evolve(state, call=Call.NONE, lookup_needed=True)
    return _evolve(state, call=Call.NONE, status=next_state(S.PENDING_PLACEMENT, OrderEvent.OUTCOME_UNKNOWN),
                   unknown_since=e.at, absent_believed_from=e.absent_believed_from, next_lookup=0.0,
                   unknown_lookups_failed=0)


def _late(state: CopyState, e: SkippedLate) -> CopyState:
    return _evolve(state, call=Call.NONE, status=S.SKIPPED, skip_reason=TOO_LATE, last_error=e.detail)


def _modify_accepted(state: CopyState, e: ModifyAccepted) -> CopyState:
    return _evolve(state, call=Call.NONE, modifications=state.modifications + 1,
                   confirmed=e.terms or state.confirmed)


_LEG_FIELDS = {Leg.TARGET: ("target_leg", {"target_price": 0.0}),
               Leg.STOP_LOSS: ("stop_loss_leg", {"stop_loss_price": 0.0, "trailing_jump": 0.0})}


def _closed(status: OrderStatus | None) -> OrderStatus:
    return status if status is not None and status.is_terminal else S.CANCELLED


def _leg_gone(state: CopyState, leg: Leg) -> CopyState:
    """An exit leg that is cancelled (or that the broker says cannot be cancelled any more)."""
    name, priced_out = _LEG_FIELDS[leg]
    return _evolve(state, confirmed=(state.confirmed or state.target).with_changes(**priced_out),
                   **{name: _closed(getattr(state, name))})


def _cancel_accepted(state: CopyState, e: CancelAccepted) -> CopyState:
    state = _evolve(state, call=Call.NONE)
    if e.leg in _LEG_FIELDS:
        return _leg_gone(state, e.leg)
    if state.target.super_order and state.status.is_terminal:  # the entry traded: its exit legs cancelled
        return _evolve(state, target_leg=_closed(state.target_leg), stop_loss_leg=_closed(state.stop_loss_leg))
    return _answer_status(state, S.CANCELLED) if e.status is S.CANCELLED else state


def _leg_seen(state: CopyState, e: LegSeen) -> CopyState:
    name = _LEG_FIELDS[e.leg][0] if e.leg in _LEG_FIELDS else None
    if name is None or getattr(state, name) is e.status:
        return state
    current = getattr(state, name)
    if current is not None and current.is_terminal:  # nothing follows a leg's end
        return state
    return _evolve(state, **{name: e.status})


def _call_failed(state: CopyState, e: CallFailed) -> CopyState:
    state = _evolve(state, call=Call.NONE)
    if state.target.super_order and e.call in (Call.MODIFY, Call.CANCEL) and not (e.transient or e.auth):
        state = _super_call_refused(state, e)
    if e.call in (Call.MODIFY, Call.CANCEL):  # it may have filled or been cancelled meanwhile: ask
        return _evolve(state, last_error=e.error,
                       lookup_needed=not e.auth or (e.call is Call.CANCEL and not e.transient))
    if state.status is S.UNKNOWN:  # no answer: looked up again after a capped, doubling pause
        failed = state.unknown_lookups_failed + 1
        delay = min(LOOKUP_BACKOFF_MAX, LOOKUP_BACKOFF_FIRST * 2 ** (failed - 1))
        return _evolve(state, unknown_lookups_failed=failed, next_lookup=e.at + delay)
    if state.status is S.REJECTED and not state.last_error:  # the reason cannot be had: record it without
        return _evolve(state, last_error=f"rejected (the broker's reason could not be read: {e.error})")
    failures = state.lookup_failures + 1
    if e.auth:  # the token actor pauses the account; asking again now would only be refused
        return _evolve(state, lookup_failures=failures, lookup_needed=False)
    if failures >= LOOKUP_ATTEMPTS:
        return _evolve(state, lookup_failures=failures, lookup_needed=False, lookups_given_up=True,
                       anomaly="lookup_failed")
    delay = min(LOOKUP_RETRY_MAX_SECONDS, LOOKUP_RETRY_SECONDS * 2 ** (failures - 1))
    return _evolve(state, lookup_failures=failures, lookup_after=e.at + delay)


def _super_call_refused(state: CopyState, e: CallFailed) -> CopyState:
    """A super order's call the broker refused for good is not asked again: an exit leg it will
    not cancel is over; a leg's modification it refuses is given up (the leg keeps its price); a
    cancel of a super order whose entry traded finds nothing left to cancel."""
    if e.call is Call.CANCEL and e.leg in _LEG_FIELDS:
        return _leg_gone(state, e.leg)
    if e.call is Call.MODIFY and e.leg in _LEG_FIELDS:
        confirmed = state.confirmed or state.target
        kept = ({"target_price": confirmed.target_price} if e.leg is Leg.TARGET else
                {"stop_loss_price": confirmed.stop_loss_price, "trailing_jump": confirmed.trailing_jump})
        return _evolve(state, target=state.target.with_changes(**kept))
    if e.call is Call.CANCEL and state.status.is_terminal:
        return _evolve(state, target_leg=_closed(state.target_leg), stop_loss_leg=_closed(state.stop_loss_leg))
    return state


def _found(state: CopyState, e: OrderFound) -> CopyState:
    changes: dict[str, Any] = dict(call=Call.NONE, lookup_needed=False, lookup_failures=0, unknown_lookups_failed=0)
    if state.status in (S.PENDING_PLACEMENT, S.UNKNOWN):  # the placement landed: adopt it
        changes["broker_order_id"] = e.broker_order_id or state.broker_order_id
        if e.order is not None and e.order.terms is not None:
            changes["confirmed"] = e.order.terms
    state = _evolve(state, **changes)
    if e.order is not None:
        state = _seen(state, e.order)
    if state.status is S.REJECTED and not state.last_error:
        state = _evolve(state, last_error="rejected (the broker gave no reason)", error_code="REJECTED")
    return state


def _not_found(state: CopyState, e: NotFound) -> CopyState:
    state = _evolve(state, call=Call.NONE, lookup_needed=False, lookup_failures=0)
    if state.status is S.PENDING_PLACEMENT and e.sent_at < state.absent_believed_from:
        # resumed: an earlier incarnation's placement may still be on its way; ask again then
        return _evolve(state, lookup_needed=True, lookup_after=state.absent_believed_from)
    if state.status is not S.UNKNOWN:  # never reached the broker (placed or aborted next), or gone
        return state
    if e.sent_at < state.absent_believed_from:  # the broker may still act on the placement
        return _evolve(state, unknown_lookups_failed=0, next_lookup=state.absent_believed_from)
    return _evolve(state, status=next_state(S.UNKNOWN, OrderEvent.NOT_PLACED), found_absent=state.found_absent + 1,
                   unknown_lookups_failed=0)


def _afresh(state: CopyState, **changes: Any) -> CopyState:
    generation = state.generation + 1
    return _evolve(state, generation=generation,
                   correlation_id=correlation_id(state.leader_order_id, state.follower, generation, state.part),
                   status=S.PENDING_PLACEMENT, call=Call.NONE, broker_order_id=None, confirmed=None,
                   found_absent=0, lookup_needed=False, **changes)


def _replaced(state: CopyState, _e: Replaced) -> CopyState:
    if state.status is not S.CANCELLED:
        raise InvalidCopyEvent(state, _e)
    return _afresh(state, modifications=0, cancel_requested=False, anomaly=None, replacing=False)


def _retried(state: CopyState, _e: Retried) -> CopyState:
    if state.status is not S.REJECTED:
        raise InvalidCopyEvent(state, _e)
    return _afresh(state, last_error=None, error_code=None, error_reason=None, rejection_recorded=True)


def _caught_up(state: CopyState, e: CaughtUp) -> CopyState:
    if state.status is not S.SKIPPED:
        raise InvalidCopyEvent(state, e)
    return _afresh(state, target=e.target, skip_reason=None, last_error=None)


def _released(state: CopyState, e: Released) -> CopyState:
    if not state.held:
        raise InvalidCopyEvent(state, e)
    return _evolve(state, held=False)


def _hedge_refused(state: CopyState, e: HedgeRefused) -> CopyState:
    if not state.held:
        raise InvalidCopyEvent(state, e)
    return _evolve(state, held=False, status=next_state(state.status, OrderEvent.SKIPPED),
                   skip_reason=HEDGE_NOT_FILLED, last_error=e.detail)


def _resumed(state: CopyState, e: Resumed) -> CopyState:
    if state.status.is_terminal:  # (a super order's exit legs are followed from their own updates)
        return _evolve(state, call=Call.NONE,
                       rejection_recorded=state.status is not S.REJECTED or bool(state.last_error))
    changes: dict[str, Any] = dict(call=Call.NONE, lookup_needed=e.sync and not state.held)  # held: never sent
    if state.status is S.UNKNOWN:
        changes.update(unknown_since=e.at, absent_believed_from=e.absent_believed_from)
    elif state.status is S.PENDING_PLACEMENT:
        changes.update(absent_believed_from=e.absent_believed_from)
    return _evolve(state, **changes)


def _news(state: CopyState, _e: NewsArrived) -> CopyState:
    if state.lookups_given_up and not state.status.is_terminal:  # still unknown to us: looked up first
        return _evolve(state, lookups_given_up=False, lookup_needed=True)
    return state


# -- the table -----------------------------------------------------------------------------------------
P = Phase
_IDLE = (P.NEW, P.UNKNOWN, P.OPEN, P.CLOSED)
_IN_FLIGHT = (P.PLACING, P.MODIFYING, P.CANCELLING, P.LOOKING_UP, P.READING)
_LIVE = (P.NEW, P.PLACING, P.UNKNOWN, P.OPEN, P.MODIFYING, P.CANCELLING, P.LOOKING_UP, P.READING)
_ALL = (*_LIVE, P.CLOSED)


@dataclass(frozen=True)
class Row:
    phases: tuple[Phase, ...]
    event: type
    effect: Callable[[CopyState, Any], CopyState]
    why: str


ROWS: tuple[Row, ...] = (
    # sends: the decision carried out; one call in flight at a time
    Row((P.NEW,), PlaceSent, _sent(Call.PLACE), "a stored copy is placed"),
    Row((P.OPEN,), ModifySent, _sent(Call.MODIFY), "a working copy is moved to its target"),
    Row((P.OPEN,), CancelSent, _sent(Call.CANCEL), "a working copy is cancelled"),
    Row((P.NEW, P.UNKNOWN, P.OPEN), LookupSent, _sent(Call.LOOKUP), "asked for by its correlation id"),
    Row((P.OPEN, P.CLOSED), ReadSent, _sent(Call.READ), "read by its broker order id"),
    # answers; also accepted with nothing in flight (folded from storage, or sent by an earlier incarnation)
    Row((P.PLACING, P.NEW, P.OPEN, P.CLOSED), Placed, _placed, "the broker accepted the placement"),
    Row((P.PLACING, P.NEW), PlacementRefused, _refused, "the broker refused the placement, or never took it"),
    Row((P.PLACING, P.NEW), OutcomeUnknown, _unknown, "no readable answer: the placement may exist"),
    Row((P.NEW, P.PLACING), SkippedLate, _late, "too old to be sent (decided, or refused by the rate limiter)"),
    Row((P.MODIFYING, P.OPEN, P.CLOSED), ModifyAccepted, _modify_accepted, "the broker took the modification"),
    Row((P.CANCELLING, P.OPEN, P.CLOSED), CancelAccepted, _cancel_accepted, "the broker took the cancel"),
    Row((P.MODIFYING, P.CANCELLING, P.LOOKING_UP, P.READING, *_IDLE), CallFailed, _call_failed,
        "a call failed: asked again, backing off"),
    Row((P.LOOKING_UP, P.READING, *_IDLE), OrderFound, _found, "the broker holds the order: adopted, then applied"),
    Row((P.LOOKING_UP, P.UNKNOWN, P.NEW, P.OPEN), NotFound, _not_found, "the broker holds no such order"),
    Row(_ALL, OrderSeen, _seen, "the broker's snapshot of the order"),
    Row(_ALL, LegSeen, _leg_seen, "the broker's snapshot of a super order's exit leg"),
    # the leader, the operator and the copy's own decisions
    Row(_LIVE, TargetChanged, lambda s, e: _evolve(s, target=e.target), "the leader changed its order"),
    Row(_LIVE, CancelRequested, lambda s, e: _evolve(s, cancel_requested=True), "to be cancelled"),
    Row((P.NEW,), Aborted, lambda s, e: _evolve(s, status=S.CANCELLED, held=False), "cancelled before it was sent"),
    Row((P.OPEN,), ReplaceStarted,
        lambda s, e: _evolve(s, cancel_requested=True, replacing=True, anomaly="replacing"),
        "past the modification cap: cancelled, to be placed afresh"),
    Row((P.CLOSED,), Replaced, _replaced, "the cancelled copy placed afresh under a new correlation id"),
    Row((P.CLOSED,), Retried, _retried, "an operator retries a refused copy"),
    Row((P.CLOSED,), CaughtUp, _caught_up, "a copy skipped while its follower was paused, placed on resume"),
    Row((P.NEW,), Released, _released, "a held SELL leg's BUY legs filled: placed now"),
    Row((P.NEW,), HedgeRefused, _hedge_refused, "a held SELL leg's BUY legs did not fill: never placed"),
    Row(_ALL, Flagged, lambda s, e: _evolve(s, anomaly=e.anomaly), "an anomaly worth a look"),
    Row((P.CLOSED,), RejectionRecorded, lambda s, e: _evolve(s, rejection_recorded=True), "why it was refused, stored"),
    Row(_IDLE, Resumed, _resumed, "loaded by a new incarnation: in-flight calls forgotten"),
    Row(_LIVE, SyncRequested, lambda s, e: _evolve(s, lookup_needed=True, lookup_failures=0), "look it up again"),
    Row(_ALL, NewsArrived, _news, "news of the order: lookups given up are tried again"),
)

TRANSITIONS: dict[tuple[Phase, type], Callable[[CopyState, Any], CopyState]] = {
    (p, row.event): row.effect for row in ROWS for p in row.phases}


def apply(state: CopyState, event: Event) -> CopyState:
    """The copy after `event`, or `InvalidCopyEvent`."""
    effect = TRANSITIONS.get((phase(state), type(event)))
    if effect is None:
        raise InvalidCopyEvent(state, event)
    return effect(state, event)


def belongs(state: CopyState, order_id: str, correlation: str | None) -> bool:
    """Whether a broker order is this copy's current order (not one a replaced or retried
    generation left behind)."""
    if correlation and correlation != state.correlation_id:
        return False
    return not (order_id and state.broker_order_id and order_id != state.broker_order_id)


# -- decisions -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Leader:
    """What a copy's decisions need of its leader order."""

    open: bool = True  # still working at the broker
    seen_at: float = 0.0  # wall clock: when the copier first saw it
    place_by: float | None = None  # wall clock: a copy not placed by then is too late (None: never)


@dataclass(frozen=True)
class Rules:
    """Replication policy the decisions follow (config key `copy`)."""

    max_modifications: int = 25  # the broker's cap per order
    replace_after_cap: bool = False  # past it: cancel and place afresh (when nothing filled)
    placement_attempts: int = 6  # placements lookups may find absent before the copy is given up


@dataclass(frozen=True)
class Place:
    terms: OrderTerms
    expires_at: float | None = None  # the rate limiter does not send it after this (wall clock)


@dataclass(frozen=True)
class Modify:
    terms: OrderTerms
    leg: Leg | None = None  # a super order: the leg the modification is for (the entry restates all)


@dataclass(frozen=True)
class Cancel:
    leg: Leg | None = None  # a super order's exit leg on its own (else the whole order)


@dataclass(frozen=True)
class Lookup:
    not_before: float = 0.0  # wall clock


@dataclass(frozen=True)
class Read:
    pass


@dataclass(frozen=True)
class Wait:
    """Nothing to send before `until` (a lookup backing off)."""

    until: float


@dataclass(frozen=True)
class Abort:
    pass


@dataclass(frozen=True)
class SkipLate:
    age: float
    limit: float


@dataclass(frozen=True)
class GiveUp:
    """Lookups found the placement absent `placements` times: refused for good."""

    placements: int


@dataclass(frozen=True)
class RequestCancel:
    because: str


@dataclass(frozen=True)
class StartReplace:
    pass


@dataclass(frozen=True)
class Replace:
    pass


@dataclass(frozen=True)
class FlagCap:
    modifications: int


@dataclass(frozen=True)
class RecordRejection:
    message: str
    code: str
    reason: str | None  # the broker error's label, when known; else the caller labels `message`


Decision = Union[Place, Modify, Cancel, Lookup, Read, Wait, Abort, SkipLate, GiveUp, RequestCancel, StartReplace,
                 Replace, FlagCap, RecordRejection]
CALLS = (Place, Modify, Cancel, Lookup, Read)  # the decisions that send a broker call


def placement_deadline(order_type: OrderType, seen_at: float, max_delay: float) -> float | None:
    """When a copy of an order first seen at `seen_at` is too late to send: orders that execute at
    the market's price (MARKET, STOP_LOSS_MARKET) after `max_delay` seconds (0: never); priced
    orders never (their price protects the follower however late the copy arrives)."""
    if max_delay <= 0 or order_type not in AT_MARKET:
        return None
    return seen_at + max_delay


def decide(state: CopyState, leader: Leader, now: float, rules: Rules = Rules()) -> Decision | None:
    """What the copy needs next, from its state alone."""
    if state.call is not Call.NONE or state.lookups_given_up:
        return None
    status = state.status
    if status.is_terminal and not exits_live(state):
        return _decide_closed(state, leader)
    if status is S.UNKNOWN:  # looked up until a lookup answers; never placed while unknown
        return Lookup(not_before=state.next_lookup)
    if state.held:  # never sent: its strategy's BUY legs release or refuse it (trading/leg_order.py)
        return Abort() if state.cancel_requested else None
    if state.lookup_needed:
        if state.lookup_after > now:
            return Wait(state.lookup_after)
        return Read() if state.broker_order_id and status is not S.PENDING_PLACEMENT else Lookup()
    if status is S.PENDING_PLACEMENT:
        if state.cancel_requested:
            return Abort()
        if state.found_absent >= rules.placement_attempts:
            return GiveUp(state.found_absent)
        if leader.place_by is not None and now > leader.place_by:
            return SkipLate(now - leader.seen_at, leader.place_by - leader.seen_at)
        return Place(state.target, leader.place_by)
    if not state.broker_order_id:
        return None
    if state.cancel_requested:
        return Cancel()
    target, confirmed = state.target, state.confirmed
    if confirmed is None or target.modifiable_view() == confirmed.modifiable_view():
        return None
    if target.super_order and (not status.is_open or target.entry_view() == confirmed.entry_view()):
        return _decide_exits(state, confirmed)
    if target.quantity <= state.filled_qty:  # re-sized at or below what already filled: cancel the rest
        return RequestCancel("resized_below_filled")
    if state.modifications >= rules.max_modifications:
        if rules.replace_after_cap and state.filled_qty == 0:
            return StartReplace()
        return FlagCap(state.modifications) if state.anomaly != "modification_cap" else None
    return Modify(target, Leg.ENTRY) if target.super_order else Modify(target)


def _decide_exits(state: CopyState, confirmed: OrderTerms) -> Decision | None:
    """A super order whose entry is as it should be (or has traded): its exit legs, one at a time.
    Only a leg the broker has can be moved or cancelled (a cancelled one is never added again)."""
    target = state.target
    if target.target_price != confirmed.target_price and confirmed.target_price > 0 and leg_open(state.target_leg):
        if target.target_price <= 0:
            return Cancel(Leg.TARGET)
        return Modify(confirmed.with_changes(target_price=target.target_price), Leg.TARGET)
    stop = (target.stop_loss_price, target.trailing_jump)
    if (stop != (confirmed.stop_loss_price, confirmed.trailing_jump) and confirmed.stop_loss_price > 0
            and leg_open(state.stop_loss_leg)):
        if target.stop_loss_price <= 0:
            return Cancel(Leg.STOP_LOSS)
        return Modify(confirmed.with_changes(stop_loss_price=target.stop_loss_price,
                                             trailing_jump=target.trailing_jump), Leg.STOP_LOSS)
    return None


def _decide_closed(state: CopyState, leader: Leader) -> Decision | None:
    if state.status is S.REJECTED and not state.rejection_recorded:
        if state.last_error:
            return RecordRejection(state.last_error, state.error_code or "REJECTED", state.error_reason)
        if state.broker_order_id:
            return Read()  # learn the broker's reason first
        return RecordRejection("rejected", "REJECTED", None)
    if state.status is S.CANCELLED and state.replacing and leader.open:
        return Replace()
    return None
