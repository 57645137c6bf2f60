"""Every message the copier's actors exchange, as small frozen dataclasses.

Flow of one leader placement:
  FeedActor --OrderUpdateReceived--> OrderRouter --OrderUpdateReceived--> OrderActor
  OrderActor --QuoteWanted--> QuoteActor --QuotePrice--> OrderActor   (an order without a price, on a
             cache miss; decided then, or at the leader's fill, whichever comes first)
  OrderActor --SizeCopies (ask, one per leader order)--> SizingActor --> SizeDecision per follower
  OrderActor --BrokerCall--> RateLimiter[follower] (admits and sends it; a worker reads the answer)
             --BrokerReply--> OrderActor
  (a call that must wait, or a transient failure to retry, goes through RateLimiterActor[follower])
Follower order updates travel the same way from the follower's FeedActor.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from broker.errors import BrokerError
from trading.instruments import Instrument
from trading.orders import ForeverOrder, OrderTerms, OrderUpdate

LEADER = "leader"  # the account name of the leader in messages and storage


# -- feed -> router -> order actor ----------------------------------------------------------------
@dataclass(frozen=True)
class OrderUpdateReceived:
    """An order update, already stored in the inbox as `event_id` (not yet done)."""

    account: str  # LEADER or a follower name
    event_id: int
    update: OrderUpdate


@dataclass(frozen=True)
class RouteStored:
    """Router: (re)route every stored update not yet done (after a restart or on a sweep)."""


@dataclass(frozen=True)
class OrderActorIdle:
    """Order actor -> router: my order is finished and I have nothing in flight; stop me."""

    leader_order_id: str


# -- order actor <-> sizing -------------------------------------------------------------------------
@dataclass(frozen=True)
class SizeCopy:
    """Ask: size a follower copy of leader `terms` and reserve its capital under the lock."""

    follower: str
    correlation_id: str
    terms: OrderTerms
    instrument: Instrument
    reference_price: float  # for the capital check when the order itself has no price (MARKET)
    leader_filled: int = 0  # of this leader order already, so its position *before* it can be known
    leader_order_id: str = ""
    price_source: str = ""  # what set reference_price: quote, leader_fill, or none (trading/prices.py)


@dataclass(frozen=True)
class SizeCopies:
    """Ask: size every follower's copy of one leader order in one round trip (the decisions come
    back in the same order); reserved under the lock one after another, as separate asks would."""

    requests: tuple[SizeCopy, ...]
    leader_order_id: str = ""


@dataclass(frozen=True)
class SizedCopies:
    """The answer to SizeCopies: one decision per follower, and the multi-leg strategy the leader
    order belongs to (its first leg's order id), if any."""

    decisions: tuple["SizeDecision", ...]
    group_id: str | None = None


@dataclass(frozen=True)
class SizeDecision:
    quantity: int
    disclosed_qty: int
    reserved: float
    skip_reason: str | None = None
    detail: str = ""
    unwind: bool = False  # a strategy leg that cannot be placed: the legs already placed must be unwound


@dataclass(frozen=True)
class ReleaseCapital:
    """The copy is finished (cancelled, rejected, filled): drop its reservation."""

    follower: str
    correlation_id: str


@dataclass(frozen=True)
class CapitalSnapshot:
    """A fresh `/fundlimit` reading for an account."""

    account: str
    available: float
    start_of_day: float
    fetched_at: float


@dataclass(frozen=True)
class PositionsSnapshot:
    """A fresh `/positions` reading for an account: net quantity by (segment, security), P&L today."""

    account: str
    positions: dict
    realised: float
    unrealised: float
    fetched_ns: int  # monotonic, when the request started: fills received before it are in it


@dataclass(frozen=True)
class FillSeen:
    """Order actor -> sizing: a fill moved an account's position (kept current between polls)."""

    account: str
    exchange_segment: str
    security_id: str
    signed_qty: int
    received_ns: int  # monotonic, when the copier received the fill


@dataclass(frozen=True)
class SuspendAccount:
    """Token actor -> sizing: the broker refused this follower's token (DH-901); copy nothing more
    for it (each copy is a recorded skip) until the broker accepts its token again."""

    follower: str
    reason: str


@dataclass(frozen=True)
class ResumeAccount:
    follower: str


@dataclass(frozen=True)
class AuthRefused:
    """Any actor -> token actor: the broker refused this account's access token (a REST answer or
    the order-update socket's login); the token actor pauses the account until a token works."""

    account: str  # LEADER or a follower name
    detail: str  # e.g. "DH-901 on the order-update socket"; never the token



# -- order actor <-> rate limiter -------------------------------------------------------------------
@dataclass(frozen=True)
class BrokerCall:
    """One broker operation for one follower copy. `op`: place, modify, cancel, lookup (by
    correlation id), get (by broker order id); forever_place, forever_modify, forever_cancel,
    forever_lookup for forever (GTT) copies."""

    op: str
    follower: str
    leader_order_id: str
    correlation_id: str
    reply_to: Any  # Address of the order actor
    terms: OrderTerms | None = None
    broker_order_id: str | None = None
    forever: ForeverOrder | None = None  # forever_place / forever_modify
    received_ns: int = 0  # when the leader update that caused it arrived (latency)
    attempt: int = 1
    not_before: float = 0.0  # monotonic time before which it must not be sent (backoff)
    admitted_at: float = 0.0  # monotonic time the rate limiter counted it (refunded on DH-904)
    token: int = 0  # unique per call an order actor sends (kept by retries): which one an answer is to


@dataclass(frozen=True)
class BrokerReply:
    call: BrokerCall
    order: OrderUpdate | None = None  # the order as the broker answered (place, lookup, get)
    broker_order_id: str | None = None
    status: str | None = None  # orderStatus in the answer
    error: BrokerError | None = None
    not_found: bool = False  # lookup: the broker has no order with that correlation id
    sent_ns: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None and not self.not_found


@dataclass(frozen=True)
class Drain:
    """RateLimiter -> its actor: calls are waiting; and the actor's timer to itself: a slot may
    be free now."""


@dataclass(frozen=True)
class CallCompleted:
    """A worker thread -> its RateLimiterActor: `call` failed transiently; decide its retry."""

    reply: BrokerReply


# -- order actor <-> quotes -------------------------------------------------------------------------
@dataclass(frozen=True)
class QuoteWanted:
    """Order actor -> QuoteActor: the last traded price of an instrument, for a leader order that
    names no price (the board had no fresh one)."""

    exchange_segment: str
    security_id: str
    reply_to: Any  # Address of the order actor


@dataclass(frozen=True)
class QuotePrice:
    """QuoteActor -> order actor: the answer; price 0 when none could be had (no data plan, no
    data for the instrument, a failed request)."""

    exchange_segment: str
    security_id: str
    price: float


# -- operator and risk controls ----------------------------------------------------------------------
@dataclass(frozen=True)
class CancelCopies:
    """Router -> every order actor with open copies (kill switch): cancel them all."""

    reason: str


@dataclass(frozen=True)
class SyncCopies:
    """Router -> order actor (reconciler repair): look the open copies up at the broker again
    and converge from what it says."""

    leader_order_id: str


@dataclass(frozen=True)
class UnwindStrategy:
    """Order actor -> router: a leg of strategy `group_id` cannot be placed for `follower`; the
    strategy's other legs must not be left naked there."""

    group_id: str
    follower: str
    reason: str
    failed_leg: str


@dataclass(frozen=True)
class UnwindLeg:
    """Router -> order actor of a leg: cancel the follower's copy if open, flatten it if filled
    (when configured), and alert."""

    follower: str
    reason: str


@dataclass(frozen=True)
class RetryCopy:
    """Router -> order actor: an operator asked to retry a dead-lettered copy."""

    follower: str
    dead_letter_id: int


# -- misc -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tick:
    """A periodic timer message (idle checks, lag checks, polls)."""

    what: str = ""
    payload: Any = field(default=None)


# -- storage -> feed ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class StorageRecovered:
    """Storage takes writes again after being down: what could not be stored meanwhile is caught up."""
