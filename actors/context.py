"""What every order actor needs, built once by the supervision tree and shared read-only."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Callable

from actors.leader_ledger import LeaderLedger
from storage import Store
from supervisors import Address, Timers
from trading.calendar import MarketCalendar, now
from trading.freeze import FreezeLimits
from trading.instruments import InstrumentMaster
from trading.leg_order import PARALLEL

if TYPE_CHECKING:
    from actors.quotes import Quotes
    from actors.rate_limiter import RateLimiter


@dataclass(frozen=True)
class CopyPolicy:
    """Behaviour knobs of replication (config key `copy`)."""

    max_modifications: int = 25  # the broker's cap per order
    lag_alert_seconds: float = 30.0  # alert when a copy is still open this long after the leader filled
    idle_stop_seconds: float = 0.0  # an order actor with nothing left to do stops after this
    sync_on_start: bool = True  # restarted actors look their copies up before acting
    flatten_naked_legs: bool = False  # a filled leg of a failed strategy is closed with a MARKET order
    replace_after_modification_cap: bool = False  # past the cap: cancel the copy and place it afresh
    price_needed: bool = True  # some follower sizes or checks by value: orders without a price are valued first
    market_fill_wait_seconds: float = 2.0  # how long such an order waits for a quote or its own fill
    # A placement whose outcome is unknown: a lookup finding nothing is believed only when sent
    # this long after a failure the broker itself did not answer (it may act late on a request
    # its client gave up on: the REST timeout); alert when it stays unknown this long; give up
    # (dead letter) once lookups have found this many placements absent (each placed again).
    unknown_settle_seconds: float = 5.0
    unknown_alert_seconds: float = 60.0
    placement_attempts: int = 6
    # A copy of an order that executes at the market's price (MARKET, STOP_LOSS_MARKET) not sent
    # this long after the copier first saw the leader's order is skipped, never sent late (0: off).
    max_delay_seconds: float = 5.0
    # A copy above the exchange's freeze quantity is placed as slices within it (off: a recorded skip).
    slice_above_freeze_limit: bool = True
    # The leader's live super orders are read this often (a leg changed before the entry trades is
    # announced by no order update); 0: only when an update of one of its legs arrives.
    super_order_poll_seconds: float = 1.0
    # Multi-leg strategies (0: not grouped); a `legs: buy_first` follower's SELL leg waits at most
    # this long for its strategy's BUY legs to fill (trading/leg_order.py).
    leg_window_seconds: float = 0.0
    buy_first_wait_seconds: float = 30.0


@dataclass
class CopierContext:
    store: Store
    instruments: InstrumentMaster
    followers: list[str]
    sizing: Address
    limiters: dict[str, RateLimiter]  # by follower: the only path to its broker
    leader_limiters: dict[str, RateLimiter]  # by leader account, its data calls: re-reads of its orders
    timers: Timers  # the copier's one timer thread, for delayed and periodic messages
    policy: CopyPolicy = field(default_factory=CopyPolicy)
    alert: Callable[[str, str, str], None] = lambda level, key, message: None
    copying_enabled: Callable[[], str | None] = lambda: None  # returns a skip reason while copying is off
    # (update, leader account) -> the leader forever order whose trigger made it
    forever_trigger: Callable[[object, str], str | None] = lambda update, leader: None
    follows: Callable[[str, str], bool] = lambda follower, leader: True  # (follower, leader account): copies it
    on_broker_failure: Callable[[str, str], None] = lambda follower, reason: None  # kill switch's count
    on_auth_failure: Callable[[str, str], None] = lambda follower, detail: None  # token actor pauses it
    calendar: MarketCalendar | None = None  # None: market hours not enforced (config market_hours.enforce)
    clock: Callable[[], datetime] = now
    quotes: Quotes | None = None  # None: orders without a price are valued at the leader's fill only
    freeze: FreezeLimits = field(default_factory=FreezeLimits)  # freeze quantities (config key freeze_limits)
    leg_order: Callable[[str], str] = lambda follower: PARALLEL  # a follower's `legs` (it may be added live)
    # First placements sent before their copies were stored, by an order actor that has not stored
    # them yet (correlation id -> leader order id, follower): the next incarnation looks these up
    # first (actors/order_plan.py), and a dead letter of the order says they may be at the broker.
    sent_unstored: dict[str, tuple[str, str]] = field(default_factory=dict)
    # Each leader's position as its updates told it, in order: the router writes, sizing reads
    ledger: LeaderLedger = field(default_factory=LeaderLedger)
