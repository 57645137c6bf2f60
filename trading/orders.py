"""Order terms and order updates in the copier's own types (never Dhan's wire format)."""
from __future__ import annotations

import dataclasses
import enum
import functools
import re
from dataclasses import dataclass, field


class Side(str, enum.Enum):
    BUY = "BUY"
    SELL = "SELL"


class OrderType(str, enum.Enum):
    LIMIT = "LIMIT"
    MARKET = "MARKET"
    STOP_LOSS = "STOP_LOSS"
    STOP_LOSS_MARKET = "STOP_LOSS_MARKET"


class Product(str, enum.Enum):
    CNC = "CNC"
    INTRADAY = "INTRADAY"
    MARGIN = "MARGIN"
    MTF = "MTF"
    CO = "CO"
    BO = "BO"


class Validity(str, enum.Enum):
    DAY = "DAY"
    IOC = "IOC"


class Leg(str, enum.Enum):
    """The legs of a super order: an entry, and a target and a stop-loss that exit what it traded."""

    ENTRY = "ENTRY_LEG"
    TARGET = "TARGET_LEG"
    STOP_LOSS = "STOP_LOSS_LEG"


class OrderStatus(str, enum.Enum):
    """The broker's order statuses plus the copier's own pre-broker states."""

    PENDING_PLACEMENT = "PENDING_PLACEMENT"  # ours: stored, placement not yet acknowledged
    UNKNOWN = "UNKNOWN"  # ours: sent, and its outcome unknown (answer lost, 5xx): looked up, never re-sent
    SKIPPED = "SKIPPED"  # ours: deliberately not copied, reason recorded
    TRANSIT = "TRANSIT"
    PENDING = "PENDING"
    PART_TRADED = "PART_TRADED"
    TRADED = "TRADED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES

    @property
    def is_open(self) -> bool:
        """Working at the broker: can still fill, be modified or be cancelled."""
        return self in (OrderStatus.TRANSIT, OrderStatus.PENDING, OrderStatus.PART_TRADED)


TERMINAL_STATUSES = frozenset(
    {OrderStatus.TRADED, OrderStatus.CANCELLED, OrderStatus.REJECTED, OrderStatus.EXPIRED, OrderStatus.SKIPPED}
)

EXCHANGE_SEGMENTS = ("NSE_EQ", "BSE_EQ", "NSE_FNO", "BSE_FNO", "MCX_COMM", "NSE_CURRENCY")
AMO_TIMES = ("OPEN", "OPEN_30", "OPEN_60")


@dataclass(frozen=True)
class OrderTerms:
    """What an order asks the exchange for: the fields a copy must reproduce.

    `quantity` and `disclosed_qty` are in units (shares or contracts), as the broker takes them.
    """

    security_id: str
    exchange_segment: str
    side: Side
    product: Product
    order_type: OrderType
    validity: Validity
    quantity: int
    price: float = 0.0
    trigger_price: float = 0.0
    disclosed_qty: int = 0
    amo: bool = False
    amo_time: str | None = None
    # A super order: the entry (the fields above) with a target and a stop-loss leg that exit what
    # it trades, the stop-loss trailing by `trailing_jump` (0: not). A leg priced 0 has none.
    super_order: bool = False
    target_price: float = 0.0
    stop_loss_price: float = 0.0
    trailing_jump: float = 0.0

    def with_changes(self, **changes: object) -> "OrderTerms":
        return dataclasses.replace(self, **changes)

    def modifiable_view(self) -> tuple:
        """The fields a broker modification can change; two terms with equal views need no modify."""
        return self._modifiable_view

    @functools.cached_property
    def _modifiable_view(self) -> tuple:
        # once per terms (they are immutable): an update's terms are compared three or four times
        return (self.order_type, self.validity, self.quantity, round(self.price, 4),
                round(self.trigger_price, 4), self.disclosed_qty, round(self.target_price, 4),
                round(self.stop_loss_price, 4), round(self.trailing_jump, 4))

    def entry_view(self) -> tuple:
        """What a super order's entry leg carries (its modification restates the exits too)."""
        return (self.order_type, self.quantity, round(self.price, 4))

    def with_exits_of(self, known: "OrderTerms") -> "OrderTerms":
        """A super order's entry as the broker shows it on an order update or book entry (no target,
        stop-loss or jump; a MARKET entry without its price), completed from `known`."""
        price = known.price if self.order_type == OrderType.MARKET and not self.price else self.price
        return dataclasses.replace(self, super_order=True, price=price, target_price=known.target_price,
                                   stop_loss_price=known.stop_loss_price, trailing_jump=known.trailing_jump)


@dataclass(frozen=True)
class OrderUpdate:
    """One observed state of an order at the broker, from the socket, the order book or an answer.

    It is a snapshot (cumulative filled quantity, latest terms), not a delta: applying the same
    snapshot twice has no further effect, which is what makes replay and dedupe safe.
    """

    order_id: str
    status: OrderStatus
    terms: OrderTerms
    filled_qty: int = 0
    avg_price: float = 0.0
    last_fill_price: float = 0.0
    correlation_id: str | None = None
    symbol: str = ""
    reason: str = ""
    created_at: str = ""  # broker's text, IST "YYYY-MM-DD HH:MM:SS"
    updated_at: str = ""
    sequence: int | None = None  # the paper exchange's per-order counter; Dhan sends none
    lot_size: int | None = None
    source: str = "socket"  # socket | book | answer | poll
    received_ns: int = field(default=0, compare=False)
    leg: str = ""  # a super order's leg (trading.orders.Leg): its three legs share one order id

    @property
    def exit_leg(self) -> bool:
        """A super order's target or stop-loss leg (not an order of its own)."""
        return self.leg in (Leg.TARGET.value, Leg.STOP_LOSS.value)

    def state_key(self) -> tuple:
        """Everything that makes two snapshots of one order different; used to drop exact duplicates."""
        return (self.order_id, self.status.value, self.terms.modifiable_view(), self.filled_qty,
                round(self.avg_price, 4), self.updated_at, self.sequence) + ((self.leg,) if self.leg else ())


@dataclass(frozen=True)
class ForeverOrder:
    """A forever (GTT) order: `terms` is its entry leg (trigger in `terms.trigger_price`); an OCO
    order adds a second leg (`price1`, `trigger_price1`, `quantity1`). The broker announces none
    of it on the order socket until it triggers."""

    order_id: str
    status: str  # PENDING, TRIGGERED, CANCELLED, REJECTED, ...
    order_flag: str  # SINGLE or OCO
    terms: OrderTerms
    price1: float = 0.0
    trigger_price1: float = 0.0
    quantity1: int = 0
    correlation_id: str | None = None
    triggered_order_id: str | None = None  # the paper exchange says which order a trigger created

    def modifiable_view(self) -> tuple:
        return (*self.terms.modifiable_view(), round(self.price1, 4), round(self.trigger_price1, 4), self.quantity1)


_COPIER_CORRELATION_ID = re.compile(r"^CT[0-9A-F]{22}$")


def made_by_copier(update: "OrderUpdate") -> bool:
    """Whether an order carries a correlation id this copier derives (`correlation_id`): one of
    its copies, slices or closing orders, never an order a leader placed itself. An account that
    is a leader and a follower at once sees its copies in its leader book; they are not copied back."""
    return bool(update.correlation_id) and _COPIER_CORRELATION_ID.match(update.correlation_id) is not None


def correlation_id(leader_order_id: str, follower: str, generation: int = 0) -> str:
    """The follower order's correlation id: derived, never random, so a retry or a restart can
    look the order up at the broker instead of placing it twice. 24 characters of [0-9A-Z],
    within the broker's 25-character limit."""
    import hashlib

    digest = hashlib.sha1(f"{leader_order_id}|{follower}|{generation}".encode()).hexdigest().upper()
    return "CT" + digest[:22]


_TERMS_FIELDS = tuple(f.name for f in dataclasses.fields(OrderTerms))
_UPDATE_FIELDS = tuple(f.name for f in dataclasses.fields(OrderUpdate))


def terms_to_dict(terms: OrderTerms) -> dict:
    """A JSON-ready dict; shallow on purpose (`dataclasses.asdict` deep-copies, and this runs for
    every order update on the copier's hot path)."""
    data = {name: getattr(terms, name) for name in _TERMS_FIELDS}
    data.update(side=terms.side.value, product=terms.product.value, order_type=terms.order_type.value,
                validity=terms.validity.value)
    return data


def terms_from_dict(data: dict) -> OrderTerms:
    return OrderTerms(**{**data, "side": Side(data["side"]), "product": Product(data["product"]),
                         "order_type": OrderType(data["order_type"]), "validity": Validity(data["validity"])})


def update_to_dict(update: OrderUpdate) -> dict:
    data = {name: getattr(update, name) for name in _UPDATE_FIELDS}
    data.update(status=update.status.value, terms=terms_to_dict(update.terms))
    return data


def update_from_dict(data: dict) -> OrderUpdate:
    return OrderUpdate(**{**data, "status": OrderStatus(data["status"]), "terms": terms_from_dict(data["terms"])})
