"""Order (and forever) actor <-> rate limiter: one command per broker operation, one answer per outcome."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from broker.errors import BrokerError
from trading.orders import ForeverOrder, Leg, OrderStatus, OrderTerms, OrderUpdate
from trading.super_orders import SuperOrderView


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
    leg: Leg | None = None  # a super order's leg (ENTRY restates the whole order)


@dataclass(frozen=True, kw_only=True)
class CancelCopy(BrokerCommand):
    ORDER_API: ClassVar[bool] = True
    broker_order_id: str
    leg: Leg | None = None  # a super order's leg (ENTRY cancels every leg still open)


@dataclass(frozen=True, kw_only=True)
class LookupCopy(BrokerCommand):
    """Find the order with `correlation_id` (else in the order book): it may or may not exist."""


@dataclass(frozen=True, kw_only=True)
class GetOrder(BrokerCommand):
    broker_order_id: str


@dataclass(frozen=True, kw_only=True)
class ReadSuperOrder(BrokerCommand):
    """Read super order `broker_order_id` from the account's list of super orders (its target,
    stop-loss and trailing jump are on no order update)."""

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
class SuperOrderRead:
    """The answer to ReadSuperOrder: the super order, or None when the list holds no such order."""

    command: ReadSuperOrder
    order: SuperOrderView | None


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
                CopyNotFound, CallFailed, SuperOrderRead)


@dataclass(frozen=True)
class Drain:
    """RateLimiter -> its actor: calls are waiting; and the actor's timer to itself: a slot may
    be free now."""


@dataclass(frozen=True)
class RetryCall:
    """A worker thread -> its RateLimiterActor: `command` failed transiently; decide its retry."""

    command: BrokerCommand
    error: BrokerError
