"""What the broker says about an account, in the copier's own types: funds, positions, trades,
margin and profile. The broker adapter (`broker/`) reads Dhan's answers into these and checks
every field it fills; nothing above it sees Dhan's wire format.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Iterable, Mapping, TypeVar

from trading.orders import Leg, Product, Side

T = TypeVar("T")
PositionKey = tuple[str, str]  # (exchange segment, security id)


@dataclass(frozen=True)
class Funds:
    """An account's funds: what it can commit now, and the limit it started the day with (0 when
    the broker gave none)."""

    available: float
    start_of_day: float = 0.0
    utilised: float = 0.0
    withdrawable: float = 0.0


@dataclass(frozen=True)
class Position:
    """An account's position in one instrument and product today. `net_qty` is signed (short < 0);
    `realised` and `unrealised` are today's profit (a loss < 0) in rupees."""

    exchange_segment: str
    security_id: str
    product: Product | None
    net_qty: int
    buy_avg: float = 0.0
    sell_avg: float = 0.0
    realised: float = 0.0
    unrealised: float = 0.0
    day_bought: int | None = None  # today's filled quantities (None: the broker did not say)
    day_sold: int | None = None

    @property
    def key(self) -> PositionKey:
        return (self.exchange_segment, self.security_id)


@dataclass(frozen=True)
class Trade:
    """One fill of an order, as the broker's trade book lists it."""

    order_id: str
    exchange_segment: str
    security_id: str
    side: Side
    quantity: int
    price: float
    traded_at: str = ""  # the broker's text, IST "YYYY-MM-DD HH:MM:SS"


@dataclass(frozen=True)
class Margin:
    """The broker's margin calculator on one order: what it needs, what is available, and the
    shortfall (0 when the order fits)."""

    required: float
    available: float
    shortfall: float


@dataclass(frozen=True)
class Profile:
    """An account's setup: what matters here is whether its Data API plan is active (without it
    the market quote API refuses the account)."""

    client_id: str
    data_plan: bool
    data_valid_until: str = ""
    token_valid_until: str = ""


@dataclass(frozen=True)
class Listing(Generic[T]):
    """A list the broker answered: the entries that could be read, and for each one that could
    not, a short reason (a metric label: bad_type, missing_field, ...) for the caller to count."""

    entries: tuple[T, ...] = ()
    unreadable: tuple[str, ...] = ()


def counted_as(order_id: str, leg: str = "") -> str:
    """The name an order's fills are counted under: its id; a super order's target and stop-loss
    legs, which share the entry's id, add their leg."""
    return f"{order_id}:{leg}" if leg and leg != Leg.ENTRY.value else order_id


def counted_order(name: str) -> str:
    """The order id of a name `counted_as` gave (a super order's legs share their entry's)."""
    return name.split(":")[0]


@dataclass(frozen=True)
class BookFill:
    """How much of one of the day's orders has filled, as the order book says: `filled` signed
    (a SELL's < 0); `order_id` as `counted_as` names it."""

    order_id: str
    key: PositionKey
    filled: int


def carried_in(positions: Iterable[Position]) -> dict[PositionKey, int] | None:
    """Net quantity by instrument carried into the day: net less today's fills, which does not
    change in the day. None when the positions do not give today's fills."""
    carried: dict[PositionKey, int] = {}
    for position in positions:
        if position.day_bought is None or position.day_sold is None:
            return None
        today = position.day_bought - position.day_sold
        carried[position.key] = carried.get(position.key, 0) + position.net_qty - today
    return carried


def held_at_book(carried: Mapping[PositionKey, int], book: Iterable[BookFill]) -> dict[PositionKey, int]:
    """Net quantity by instrument as of the order book: what was carried into the day plus every
    fill the book counts (the two need not be read at one instant)."""
    held = dict(carried)
    for fill in book:
        held[fill.key] = held.get(fill.key, 0) + fill.filled
    return held


def net_quantities(positions: Iterable[Position]) -> dict[PositionKey, int]:
    """Net quantity by instrument, over every product it is held in."""
    net: dict[PositionKey, int] = {}
    for position in positions:
        net[position.key] = net.get(position.key, 0) + position.net_qty
    return net
