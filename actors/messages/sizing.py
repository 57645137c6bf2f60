"""Order actor <-> sizing actor: sizes, capital, positions, accounts paused."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trading.account import PositionKey
from trading.copies_on_way import Protection
from trading.instruments import Instrument
from trading.leader import LEADER
from trading.orders import OrderTerms


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
    new_order: bool = False  # sized as a new copy (pause, copy window), not a re-size (a catch-up's first sizing)
    leader: str = LEADER  # the leader account whose order it copies: the follower's sizing for that leader


@dataclass(frozen=True)
class SizeCopies:
    """Ask: size every follower's copy of one leader order in one round trip (the decisions come
    back in the same order); reserved under the lock one after another, as separate asks would."""

    requests: tuple[SizeCopy, ...]
    leader_order_id: str = ""
    # Told `SizingReady()` once an answer that had to wait (a future) is set: the asker does not
    # wait for it on its thread (actors/order_sighting.py).
    reply_to: Any = None


@dataclass(frozen=True)
class SizingReady:
    """Told to `SizeCopies.reply_to`: the future it was answered with is set."""


@dataclass(frozen=True)
class SizingHeld:
    """Told to `SizeCopies.reply_to`: its exit waits `seconds` longer than an exit's usual wait,
    for copies whose placement is looked up first (CopiesInDoubt): the asker's patience too."""

    seconds: float


@dataclass(frozen=True)
class SizedCopies:
    """The answer to SizeCopies: one decision per follower, and the multi-leg strategy the leader
    order belongs to (its first leg's order id), if any."""

    decisions: tuple["SizeDecision", ...]
    group_id: str | None = None
    reduces_position: bool = False  # read as an exit of the leader's position
    position_before: int | None = None  # of such an exit: the leader's position before it


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
    """A fresh `/positions` reading for an account: net quantity by (segment, security), P&L today,
    and what was carried into the day (None: the broker did not say). `orders`: how much of each
    of the day's orders the quantities count (None: not known; then a fill received after
    `fetched_ns` is taken to be one they do not count)."""

    account: str
    positions: dict
    realised: float
    unrealised: float
    fetched_ns: int  # monotonic, when the request started: fills received before it are in it
    carried: dict | None = None
    orders: dict | None = None
    answered_ns: int = 0  # monotonic, when the answer came (0: not known): an order made after it is not in it


@dataclass(frozen=True)
class BookFills:
    """An account's order book, as how much of each of the day's orders has filled (a tuple of
    trading.account.BookFill)."""

    account: str
    fills: tuple


@dataclass(frozen=True)
class AccountsRead:
    """Account reader -> sizing: readings made on the reader's threads, never under the capital
    lock. `request` names what they were read for (the first round, a periodic refresh, or the
    exits waiting for them); `leaders_before`, (leader order id, position) for each exit whose
    leader's position before its order was asked of the broker (None: it could not be confirmed);
    `books`, for an exit, the order books of followers a fill was seen for while their positions
    were read, or the leaders' books the copier counts their fills from. An exits' reading told
    before every follower's positions were in names those in `unread`, and comes again whole."""

    request: int
    capital: tuple[CapitalSnapshot, ...] = ()
    positions: tuple[PositionsSnapshot, ...] = ()
    leaders_before: tuple[tuple[str, int | None], ...] = ()
    books: tuple[BookFills, ...] = ()
    unread: tuple[str, ...] = ()  # followers whose positions were not in when the exits stopped waiting


@dataclass(frozen=True)
class CopyInDoubt:
    """A follower's copy not known at its broker yet whose outcome may take a while: a placement
    that may have been sent (after a restart, or a timeout) is looked up first, and a lookup that
    finds nothing is believed only from `believed_from` (wall clock, seconds)."""

    follower: str
    correlation_id: str
    key: PositionKey  # its position's (exchange segment, security id)
    leader: str
    leader_order_id: str
    leader_filled: int  # of the leader order when told
    believed_from: float


@dataclass(frozen=True)
class CopiesInDoubt:
    """Order actor -> sizing: copies not at their brokers that are looked up before they are
    placed (again): loaded by a new incarnation (the sizing actor's memory of copies on their way
    may have ended with the last run), or whose placement went unanswered. Exits of their followers
    in their instruments wait for them until a lookup that finds nothing is believed and the copy
    has had time to be placed."""

    copies: tuple[CopyInDoubt, ...]


@dataclass(frozen=True)
class CopyResting:
    """A follower's copy open at its broker, loaded by a new incarnation of its order actor."""

    follower: str
    correlation_id: str
    key: PositionKey
    leader: str
    leader_order_id: str
    leader_traded: bool  # its leader order has wholly filled, as stored


@dataclass(frozen=True)
class ExitWaiting:
    """Order actor -> sizing: a leader exit that waits for its price (a stop-loss, a target),
    loaded by a new incarnation of its order actor (the sizing actor's memory of it may have ended
    with the last run) or changed by its leader, with the followers whose copies of it may grow: it
    grows as their copies that are their share of what the leader holds fill
    (actors/sizing_resting.py)."""

    leader: str
    protection: Protection
    followers: tuple[str, ...]


@dataclass(frozen=True)
class CopiesResting:
    """Order actor -> sizing: copies loaded open at their brokers (the sizing actor's memory of them
    may have ended with the last run). An exit that closes its leader's position cancels those of
    leader orders that have wholly filled."""

    copies: tuple[CopyResting, ...]


@dataclass(frozen=True)
class PlacementRetried:
    """Rate limiter -> sizing: a copy's placement failed with no effect at the broker (refused
    for its rate, or a transient error) and is sent again at `retry_at` (monotonic): still on its
    way, its answer is due that much later."""

    follower: str
    correlation_id: str
    retry_at: float


@dataclass(frozen=True)
class PlacementsPaused:
    """Rate limiter -> sizing: the follower's broker refused a call for its rate, and none of its
    placements is sent before `until` (monotonic): every copy of it on its way waits that long."""

    follower: str
    until: float


@dataclass(frozen=True)
class CopiesSettleDue:
    """Timer -> sizing: exits have waited long enough for their followers' copies on their way."""


@dataclass(frozen=True)
class ExitReadingDue:
    """Timer -> sizing: exits have waited long enough for reading `request`: those in decide."""

    request: int


@dataclass(frozen=True)
class FillSeen:
    """Order actor -> sizing: a fill moved an account's position (kept current between polls)."""

    account: str
    exchange_segment: str
    security_id: str
    signed_qty: int
    received_ns: int  # monotonic, when the copier received the fill
    order_id: str
    filled: int  # the order's whole filled quantity with this fill: a fill seen twice counts once
    leader_order_id: str = ""  # of a follower's copy: the leader order it copies


@dataclass(frozen=True)
class FillUncounted:
    """Order actor -> sizing: a fill of `account`'s order copying (or being) leader order
    `leader_order_id` that came by no socket (from an order book, a lookup): not counted in the
    positions kept between polls (it may be in a reading already), but an exit that waits for its
    price and its followers' resting copies still hear of it."""

    account: str
    leader_order_id: str


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
