"""What every order actor needs, built once by the supervision tree and shared read-only."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Callable

from storage import Store
from supervisors import Address
from trading.calendar import MarketCalendar, now
from trading.instruments import InstrumentMaster

if TYPE_CHECKING:
    from actors.rate_limiter import RateLimiter


@dataclass(frozen=True)
class CopyPolicy:
    """Behaviour knobs of replication (config key `copy`)."""

    max_modifications: int = 25  # the broker's cap per order
    lag_alert_seconds: float = 30.0  # 4.5: follower still open this long after the leader filled
    idle_stop_seconds: float = 0.0  # an order actor with nothing left to do stops after this
    sync_on_start: bool = True  # restarted actors look their copies up before acting
    flatten_naked_legs: bool = False  # a filled leg of a failed strategy is closed with a MARKET order
    replace_after_modification_cap: bool = False  # past the cap: cancel the copy and place it afresh


@dataclass
class CopierContext:
    store: Store
    instruments: InstrumentMaster
    followers: list[str]
    sizing: Address
    limiters: dict[str, RateLimiter]  # by follower: the only path to its broker
    policy: CopyPolicy = field(default_factory=CopyPolicy)
    alert: Callable[[str, str, str], None] = lambda level, key, message: None
    copying_enabled: Callable[[], str | None] = lambda: None  # returns a skip reason while copying is off
    forever_trigger: Callable[[object], str | None] = lambda update: None  # leader forever order that made it
    on_broker_failure: Callable[[str, str], None] = lambda follower, reason: None  # kill switch's count
    on_auth_failure: Callable[[str, str], None] = lambda follower, detail: None  # token actor pauses it
    calendar: MarketCalendar | None = None  # None: market hours not enforced (config market_hours.enforce)
    clock: Callable[[], datetime] = now
