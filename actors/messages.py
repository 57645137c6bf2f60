"""Every message the copier's actors exchange, as small frozen dataclasses.

Flow of one leader placement:
  FeedActor --OrderUpdateReceived--> OrderRouter --OrderUpdateReceived--> OrderActor
  OrderActor --QuoteWanted--> QuoteActor --QuotePrice--> OrderActor   (an order without a price, on a
             cache miss; decided then, or at the leader's fill, whichever comes first)
  OrderActor --SizeCopies (ask, one per leader order)--> SizingActor --> SizeDecision per follower
  OrderActor --PlaceCopy--> RateLimiter[follower] (admits and sends it; a worker reads the answer)
             --CopyPlaced | CopyRejected | PlacementUnknown | PlacementExpired--> OrderActor
  (a call that must wait, or a transient failure to retry, goes through RateLimiterActor[follower])
Follower order updates travel the same way from the follower's FeedActor.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from broker.errors import BrokerError
from trading.instruments import Instrument
from trading.orders import ForeverOrder, OrderStatus, OrderTerms, OrderUpdate

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
class OrderActorWanted:  # ask the router: the Address of a leader order's running actor, or None
    leader_order_id: str


@dataclass(frozen=True)
class OrderActorIdle:
    """Order actor -> router: my order is finished and I have nothing in flight; stop me."""

    leader_order_id: str


@dataclass(frozen=True)
class CopiesWanted:
    """Ask an order actor: {"leader": its status, "copies": {follower: (status, call in flight or None)}}."""


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
class AccountsRead:
    """Account reader -> sizing: readings made on the reader's threads, never under the capital
    lock. `request` names what they were read for (the first round, a periodic refresh, or one
    exit waiting for them); `leader_before` is, for an exit, the leader's position before its
    order as the broker reported it (None: it could not be confirmed)."""

    request: int
    capital: tuple[CapitalSnapshot, ...] = ()
    positions: tuple[PositionsSnapshot, ...] = ()
    leader_before: int | None = None


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



# -- order actor (and forever actor) -> rate limiter: one command per broker operation -----------------
@dataclass(frozen=True, kw_only=True)
class BrokerCommand:
    """What every command to an account's rate limiter carries. The limiter answers `reply_to`
    with one of the answers below, naming the command; it retries transient failures itself."""

    ORDER_API: ClassVar[bool] = False  # counted in the account's order window (else its data window)

    account: str  # a follower name, or LEADER
    leader_order_id: str
    correlation_id: str = ""
    reply_to: Any  # the sender's Address
    attempt: int = 1
    not_before: float = 0.0  # monotonic: not sent before (a backoff)
    admitted_at: float = 0.0  # monotonic: when the rate limiter counted it (refunded on DH-904)


@dataclass(frozen=True, kw_only=True)
class PlaceCopy(BrokerCommand):
    ORDER_API: ClassVar[bool] = True
    terms: OrderTerms
    received_ns: int = 0  # monotonic: when the leader update that caused it arrived (latency)
    expires_at: float | None = None  # wall clock: not sent after this (PlacementExpired instead)


@dataclass(frozen=True, kw_only=True)
class ModifyCopy(BrokerCommand):
    ORDER_API: ClassVar[bool] = True
    broker_order_id: str
    terms: OrderTerms


@dataclass(frozen=True, kw_only=True)
class CancelCopy(BrokerCommand):
    ORDER_API: ClassVar[bool] = True
    broker_order_id: str


@dataclass(frozen=True, kw_only=True)
class LookupCopy(BrokerCommand):
    """Find the order with `correlation_id` (else in the order book): it may or may not exist."""


@dataclass(frozen=True, kw_only=True)
class GetOrder(BrokerCommand):
    broker_order_id: str


@dataclass(frozen=True, kw_only=True)
class PlaceForever(BrokerCommand):
    """Place a forever (GTT) copy; a retry first looks for it (its earlier answer may be lost)."""

    ORDER_API: ClassVar[bool] = True
    order: ForeverOrder


@dataclass(frozen=True, kw_only=True)
class ModifyForever(BrokerCommand):
    ORDER_API: ClassVar[bool] = True
    broker_order_id: str
    order: ForeverOrder


@dataclass(frozen=True, kw_only=True)
class CancelForever(BrokerCommand):
    ORDER_API: ClassVar[bool] = True
    broker_order_id: str


@dataclass(frozen=True, kw_only=True)
class LookupForever(BrokerCommand):
    """Find the forever order with `correlation_id`."""


# -- rate limiter -> the sender: one answer per outcome ------------------------------------------------
@dataclass(frozen=True)
class CopyPlaced:
    command: PlaceCopy | PlaceForever | LookupForever
    broker_order_id: str
    status: OrderStatus | None = None  # what the answer said, if it said
    sent_ns: int = 0  # monotonic: when the request was sent


@dataclass(frozen=True)
class CopyRejected:  # the broker refused the placement: it does not exist
    command: PlaceCopy | PlaceForever
    error: BrokerError
    sent_ns: int = 0


@dataclass(frozen=True)
class PlacementUnknown:
    """The placement's answer was lost (no answer, a 5xx, unreadable): it may exist. Never sent
    again: the order actor looks it up."""

    command: PlaceCopy
    error: BrokerError
    sent_ns: int = 0


@dataclass(frozen=True)
class PlacementExpired:
    """Not sent: the copy was too old when its turn came (`command.expires_at`); nothing reached the broker."""

    command: PlaceCopy
    at: float  # wall clock


@dataclass(frozen=True)
class CopyModified:
    command: ModifyCopy | ModifyForever


@dataclass(frozen=True)
class CopyCancelled:
    command: CancelCopy | CancelForever
    status: OrderStatus | None = None  # what the answer said, if it said


@dataclass(frozen=True)
class OrderFound:
    command: LookupCopy | GetOrder
    order: OrderUpdate


@dataclass(frozen=True)
class CopyNotFound:
    """The broker answered that it holds no order with the command's correlation id."""

    command: LookupCopy | LookupForever
    sent_at: float  # wall clock: a lookup says nothing of requests that reach the broker after it


@dataclass(frozen=True)
class CallFailed:
    """The command failed for good (transient failures were retried first)."""

    command: BrokerCommand
    error: BrokerError


BrokerAnswer = (CopyPlaced, CopyRejected, PlacementUnknown, PlacementExpired, CopyModified, CopyCancelled, OrderFound,
                CopyNotFound, CallFailed)


@dataclass(frozen=True)
class Drain:
    """RateLimiter -> its actor: calls are waiting; and the actor's timer to itself: a slot may
    be free now."""


@dataclass(frozen=True)
class RetryCall:
    """A worker thread -> its RateLimiterActor: `command` failed transiently; decide its retry."""

    command: BrokerCommand
    error: BrokerError


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


# -- the other actors' own messages: timers, questions, commands --------------------------------------
# One class each, so a handler matches on a type, never on a string. Timer messages are told by
# the copier's one `Timers` service (supervisors/timers.py).
@dataclass(frozen=True)
class IsConnected:
    """Ask a feed: is its order-update socket logged in? Answers a bool."""


@dataclass(frozen=True)
class Backfill:
    """Ask a feed to read its account's order book now; answers how many updates were new."""


@dataclass(frozen=True)
class Reconnect:
    """Token actor -> feed: the account's token works again: stop waiting out the socket's backoff."""


@dataclass(frozen=True)
class FreeCapital:
    """Ask sizing: each follower's capital free for new copies, by follower."""


@dataclass(frozen=True)
class PollKillSwitch:
    """Timer -> kill switch: read the switch's stored state (an operator command may have set it)."""


@dataclass(frozen=True)
class EngageKillSwitch:
    """Turn the kill switch on from inside the copier (a risk rule, repeated broker failures)."""

    reason: str
    by: str


@dataclass(frozen=True)
class BrokerFailure:
    """A follower's placement failed for good: counted towards the kill switch's failure limit."""

    follower: str
    reason: str


@dataclass(frozen=True)
class KillSwitchStatus:
    """Ask the kill switch actor for its current `KillSwitchState`."""


@dataclass(frozen=True)
class Reconcile:
    """Timer, or an ask -> reconciler: compare the books with storage now; answers the divergences."""


@dataclass(frozen=True)
class AnswerReconcileRequests:
    """Timer -> reconciler: answer a report an operator command asked for through storage."""


@dataclass(frozen=True)
class PollForever:
    """Timer -> forever actor: read the leader's forever orders."""


@dataclass(frozen=True)
class CheckTokens:
    """Timer -> token actor: look at the token file and try paused accounts' tokens again."""


@dataclass(frozen=True)
class RenewTokens:
    """Timer -> token actor: renew the leader's token (`leader`) or every follower's; answers
    {account: renewed}."""

    leader: bool = False


@dataclass(frozen=True)
class AskQuotes:
    """Timer -> quote actor: an account's request window has room again: ask what is wanted."""


@dataclass(frozen=True)
class RefreshAccounts:
    """Timer -> sizing: read every account's funds and positions again."""
