"""Configuration: `config.yaml` as nested, typed, frozen pydantic models that mirror the YAML.

    config = load("config.yaml")
    config.copy.max_modifications                  # copy: {max_modifications: 25}
    config.broker.timeout_seconds                  # broker: {timeout_seconds: 5}
    config.followers[0].risk.max_order_value       # followers: [{risk: {max_order_value: ...}}]

`load(path)` (or `parse(mapping)`) returns a frozen `Config` or raises one `ConfigError` naming
the key: `followers[1].sizing.ratio: must be a number > 0, got 'abc'`. Unknown keys are errors
too: a typo must not silently fall back to a default when real money is at stake. Strings may
read the environment (`"${DHAN_F1_TOKEN}"`, `"${VAR:-default}"`), and an account remembers where
its token came from. Relative paths are relative to the config file's folder.

Adding a key is one line in its section's model, with its type, default and why, e.g. in
`CopySettings`:

    max_delay_seconds: Seconds = 5.0  # a MARKET copy not sent this long after the leader's order is skipped

The type is the rule, and its error names the key by itself: `Seconds` (a number >= 0),
`Positive` (> 0), `Number(minimum, exclusive=)`, `Whole(minimum, maximum)`, `Flag`, `Text`,
`Url(schemes)`, `Choice(values)`. A new section is a `Section` subclass and one field of it in
`Config`. A rule across keys is an `@model_validator(mode="after")` on the section that raises
`refuse(problem, key)`. Then document the key in README's configuration table.

The follower's `sizing`, `filters`, `copy_window` and `risk` are the domain's own frozen types
(trading/): their keys are checked by a model here and the domain type is built from it, so
actors get what they use and the defaults stay in the domain (`risk` is checked by
`RiskLimits.from_mapping` itself).
"""
from __future__ import annotations

import importlib.util
import ipaddress
import os
import re
import warnings
from dataclasses import dataclass
from datetime import time
from pathlib import Path
from typing import Annotated, Any, Callable, Iterable
from urllib.parse import urlsplit

import yaml
from pydantic import (BaseModel, ConfigDict, Field, GetCoreSchemaHandler, PlainValidator, PrivateAttr,
                      ValidationError, ValidationInfo, field_validator, model_validator)
from pydantic_core import PydanticCustomError, core_schema

from broker.gateway import DEFAULT_BASE_URL, DEFAULT_ORDER_UPDATE_URL
from storage.tokens import TOKEN_KEY_ENV, MAKE_KEY, TokenFileError, key_from_environment
from streams import redact_url
from trading.filters import CopyWindow, Filters
from trading.leader import leader_account, leader_label, leader_name
from trading.leg_order import BUY_FIRST, LEG_ORDERS, PARALLEL
from trading.risk import RiskLimits
from trading.sizing import STRATEGIES, SizingRule

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_CLOCK_TIME = re.compile(r"^([01]?[0-9]|2[0-3]):([0-5][0-9])$")
DEFAULT_MASTER_URL = "https://images.dhan.co/api-data/api-scrip-master.csv"
PAPER_MASTER = str(Path(__file__).resolve().parent.parent / "paper" / "data" / "instruments.csv")
LEADER_NAME = "leader"


class ConfigError(ValueError):
    """Names the key and the problem; the process refuses to start."""


def key_error(config: Config, key: str, problem: str) -> ConfigError:
    """A ConfigError for `key`, prefixed with the config file like the errors of `load`."""
    return ConfigError(f"{config.source}: {key}: {problem}" if config.source else f"{key}: {problem}")


def refuse(problem: str, key: str = "") -> PydanticCustomError:
    """The error a validator raises: `problem` about `key` below where it runs ("" for itself)."""
    return PydanticCustomError("config", "{problem}", {"problem": problem, "key": key})


# -- the types: each is a rule, and its error names the key ----------------------------------------
def _interpolate(value: str) -> str:
    def sub(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise refuse(f"environment variable {name} is not set")
    return _ENV.sub(sub, value)


def _text(value: Any) -> str:
    if value is None:  # `key:` with nothing after it
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise refuse(f"must be a string, got {type(value).__name__}")
    return _interpolate(str(value))


Text = Annotated[str, PlainValidator(_text)]  # a string (a number is read as its digits), ${VAR} read


def Number(minimum: float | None = None, exclusive: bool = False) -> Any:  # noqa: N802 - a type
    """A number (an int or a float, never a bool), at least (or above) `minimum`."""
    bound = "" if minimum is None else f" {'>' if exclusive else '>='} {minimum:g}"

    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise refuse(f"must be a number{bound}, got {value!r}")
        if minimum is not None and (value <= minimum if exclusive else value < minimum):
            raise refuse(f"must be{bound}, got {value!r}")
        return float(value)
    return Annotated[float, PlainValidator(check)]


def Whole(minimum: int | None = None, maximum: int | None = None) -> Any:  # noqa: N802 - a type
    """A whole number (2.0 is 2) in [minimum, maximum]."""
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise refuse(f"must be a whole number{'' if minimum is None else f' >= {minimum}'}, got {value!r}")
        if int(value) != value:
            raise refuse(f"must be a whole number, got {value!r}")
        if minimum is not None and value < minimum:
            raise refuse(f"must be >= {minimum}, got {value!r}")
        if maximum is not None and value > maximum:
            raise refuse(f"must be <= {maximum}, got {int(value)}")
        return int(value)
    return Annotated[int, PlainValidator(check)]


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise refuse(f"must be true or false, got {value!r}")
    return value


def Url(*schemes: str) -> Any:  # noqa: N802 - a type
    """A URL with one of `schemes` ("" stays "": for a URL that is optional)."""
    def check(value: Any) -> str:
        url = _text(value)
        if url and not url.startswith(schemes):
            raise refuse(f"must start with {' or '.join(schemes)}, got {url!r}")
        return url
    return Annotated[str, PlainValidator(check)]


def Choice(values: Iterable[str], explain: str | None = None, upper: bool = False) -> Any:  # noqa: N802 - a type
    """One of `values` (compared in upper case when `upper`)."""
    allowed = tuple(values)

    def check(value: Any) -> str:
        text = _text(value)
        text = text.upper() if upper else text
        if text not in allowed:
            raise refuse(f"must be {explain or 'one of ' + ', '.join(allowed)}, got {text!r}")
        return text
    return Annotated[str, PlainValidator(check)]


def _names(value: Any) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(v, (str, int)) for v in value):
        raise refuse(f"must be a list of names, got {value!r}")
    return frozenset(_text(v).upper() for v in value)


def _clock_time(value: Any) -> time:
    match = _CLOCK_TIME.match(value) if isinstance(value, str) else None
    if match is None:
        hint = ""
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 24 * 60:
            # YAML 1.1 reads an unquoted 15:10 as the base-60 number 910
            hours, minutes = divmod(value, 60)
            hint = f'; YAML reads an unquoted {hours}:{minutes:02d} as a number: write "{hours:02d}:{minutes:02d}"'
        raise refuse(f'must be a time "HH:MM" in exchange time (IST), got {value!r}{hint}')
    return time(int(match.group(1)), int(match.group(2)))


def _local_path(value: Any, info: ValidationInfo) -> str:
    """A relative path in a config file is relative to the file's folder, not the working directory."""
    path = _text(value)
    base_dir = _context(info).base_dir
    if not path or base_dir is None or path.startswith(("http://", "https://")) or Path(path).is_absolute():
        return path
    return str(base_dir / path)


Seconds = Number(0)
Positive = Number(0, exclusive=True)
Flag = Annotated[bool, PlainValidator(_flag)]
Names = Annotated[frozenset[str], PlainValidator(_names)]  # upper-cased: NSE_FNO, OPTIDX, RELIANCE
ClockTime = Annotated[time, PlainValidator(_clock_time)]
LocalPath = Annotated[str, PlainValidator(_local_path)]


@dataclass(frozen=True)
class _Context:
    """What `parse` knows beyond the mapping: the file (for token sources), its folder, the mode."""

    source: str = "config"
    base_dir: Path | None = None
    paper: bool = False


def _context(info: ValidationInfo) -> _Context:
    return info.context if isinstance(info.context, _Context) else _Context()


class Domain:
    """`Annotated[SizingRule, Domain(SizingKeys)]`: check the section with the model `SizingKeys`,
    then the field holds the domain object its `domain()` builds. `optional`: an absent or empty
    section is None."""

    def __init__(self, keys: type[BaseModel], optional: bool = False) -> None:
        self.keys, self.optional = keys, optional

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        schema = core_schema.no_info_after_validator_function(lambda keys: keys.domain(),
                                                              handler.generate_schema(self.keys))
        if not self.optional:
            return schema
        return core_schema.no_info_before_validator_function(lambda value: None if value in (None, {}) else value,
                                                             core_schema.nullable_schema(schema))


# -- the sections ----------------------------------------------------------------------------------
class Section(BaseModel):
    """A mapping of the YAML: frozen, unknown keys refused, an empty section (`storage:`) is {}."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _empty_is_defaults(cls, data: Any) -> Any:
        return {} if data is None else data


_RULE = SizingRule()  # the domain's defaults


class SizingKeys(Section):
    strategy: Choice(STRATEGIES) = _RULE.strategy
    ratio: Positive = _RULE.ratio  # fixed_ratio
    lots: Whole(1) = _RULE.lots  # fixed_lots
    risk_per_trade: Number(0) = _RULE.risk_per_trade  # risk_based: rupees at risk per order
    stop_loss_pct: Positive = _RULE.stop_loss_pct
    max_quantity: Whole(1) | None = _RULE.max_quantity
    round_up_to_one_lot: Flag = _RULE.round_up_to_one_lot

    @model_validator(mode="after")
    def _risk_based_needs_a_risk(self) -> SizingKeys:
        if self.strategy == "risk_based" and self.risk_per_trade <= 0:
            raise refuse("must be > 0 for the risk_based strategy", "risk_per_trade")
        return self

    def domain(self) -> SizingRule:
        return SizingRule(**dict(self))


_FILTERS = Filters()


class FilterKeys(Section):
    options_only: Flag = _FILTERS.options_only
    allow_segments: Names = _FILTERS.allow_segments
    deny_segments: Names = _FILTERS.deny_segments
    allow_instruments: Names = _FILTERS.allow_instruments
    deny_instruments: Names = _FILTERS.deny_instruments
    allow_symbols: Names = _FILTERS.allow_symbols
    deny_symbols: Names = _FILTERS.deny_symbols

    def domain(self) -> Filters:
        return Filters(**dict(self))


class CopyWindowKeys(Section):
    """Both `start` and `end` as "HH:MM" in exchange time, or no window at all."""

    start: ClockTime
    end: ClockTime

    @model_validator(mode="before")
    @classmethod
    def _both_or_none(cls, data: Any) -> Any:
        for name in ("start", "end"):
            if isinstance(data, dict) and data and data.get(name) is None:
                raise refuse("is required (give both start and end, or no copy_window)", name)
        return data

    @model_validator(mode="after")
    def _in_order(self) -> CopyWindowKeys:
        if not self.start < self.end:
            raise refuse(f"must be before end ({self.start:%H:%M} >= {self.end:%H:%M}); "
                         "a window cannot run across midnight", "start")
        return self

    def domain(self) -> CopyWindow:
        return CopyWindow(self.start, self.end)


def _risk_limits(value: Any) -> RiskLimits:
    """RiskLimits checks its own keys (trading/risk.py); its errors name them after "risk"."""
    if value is not None and not isinstance(value, dict):
        raise refuse(f"must be a mapping, got {type(value).__name__}")
    try:
        return RiskLimits.from_mapping(value)
    except (TypeError, ValueError) as exc:
        key, _, problem = str(exc).partition(": ")
        if not key.startswith("risk"):
            key, problem = "risk", str(exc)
        raise refuse(problem, key.removeprefix("risk").removeprefix(".")) from None


# -- shards: several copier processes fed by one stream (copier/shards.py; README, Follower shards) ----
DEFAULT_STREAM_URL = "nats://127.0.0.1:4222"
_STREAM_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _shard_count(value: Any) -> int | None:
    """`shards: N` (N >= 1), or None without the key: one process, no stream."""
    return None if value is None else _whole_at_least(value, 1)


def _shard_number(value: Any) -> int | None:
    """`followers[].shard`: a shard's number (from 0), or None: chosen by the follower's name."""
    return None if value is None else _whole_at_least(value, 0)


def _whole_at_least(value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise refuse(f"must be a whole number >= {minimum}, got {value!r}")
    if value < minimum:
        raise refuse(f"must be >= {minimum}, got {value!r}")
    return int(value)


def _stream_url(value: Any) -> str:
    url = _text(value) or DEFAULT_STREAM_URL
    parts = urlsplit(url)
    if parts.scheme not in ("nats", "tls") or not parts.hostname:
        raise refuse(f"must be nats://HOST:PORT or tls://HOST:PORT, got {redact_url(url)!r}")
    return url


def _stream_name(value: Any) -> str:
    name = _text(value)
    if name and not _STREAM_NAME.match(name):
        raise refuse(f"must be 1-64 letters, digits, '-' or '_', got {name!r}")
    return name


ShardCount = Annotated[int | None, PlainValidator(_shard_count)]
ShardNumber = Annotated[int | None, PlainValidator(_shard_number)]


class StreamSettings(Section):
    """With `shards`: the NATS JetStream server the feed process and the shards share."""

    url: Annotated[str, PlainValidator(_stream_url)] = DEFAULT_STREAM_URL  # user:password@ allowed (redacted)
    name: Annotated[str, PlainValidator(_stream_name)] = ""  # "": copytrader-<leader client id>
    max_age_hours: Positive = 24.0  # how long the stream keeps the leader's updates


def _leg_order_rules(config: Any) -> None:
    """`legs: buy_first` orders the legs of strategies, and with no leg window there are none."""
    for i, follower in enumerate(config.followers):
        if follower.legs == BUY_FIRST and config.copy.leg_window_seconds <= 0:
            raise refuse("buy_first needs copy.leg_window_seconds above 0: with no leg window no orders are "
                         "grouped into strategies, so there are no legs to order", f"followers[{i}].legs")


def _shards_rules(config: Any) -> None:
    """The rules across keys of shard mode (Config's validator calls it)."""
    pinned = [(i, f.shard) for i, f in enumerate(config.followers) if f.shard is not None]
    if config.shards is None:
        if config.stream is not None:
            raise refuse("is used only with shards: N (the copier runs as one process without it)", "stream")
        if pinned:
            raise refuse("is used only with shards: N", f"followers[{pinned[0][0]}].shard")
        return
    for i, shard in pinned:
        if shard >= config.shards:
            raise refuse(f"must be below shards ({config.shards}): shards are numbered from 0, got {shard}",
                         f"followers[{i}].shard")
    if config.mode != "live":
        raise refuse("needs mode: live (paper mode's exchange lives inside the one copier process; run "
                     "`python -m paper` and point a live config at its URLs)", "shards")
    if config.shards > len(config.followers):
        raise refuse(f"{config.shards} shards for {len(config.followers)} followers: every shard needs a follower",
                     "shards")
    if config.tokens.renew_leader_every_minutes:
        raise refuse("cannot be used with shards: every shard reads the leader's orders with its token, and a "
                     "renewal by one would expire the others'", "tokens.renew_leader_every_minutes")
    if importlib.util.find_spec("nats") is None:
        raise refuse("needs the nats-py package (pip install 'dhan-copytrader[shards]')", "shards")
# -- end of shards ---------------------------------------------------------------------------------------


class AccountConfig(Section):
    """The leader's and every follower's account keys. In paper mode client_id and access_token
    may be left out: the paper exchange makes them up."""

    client_id: Text = Field("", validate_default=True)
    access_token: Text = Field("", repr=False, validate_default=True)
    api_base_url: Url("http://", "https://") = DEFAULT_BASE_URL
    order_update_url: Url("ws://", "wss://") = DEFAULT_ORDER_UPDATE_URL
    _token_source: str = PrivateAttr("config file")

    @property
    def token_source(self) -> str:
        """Where access_token came from ("environment variable X" or "config file F"), for messages
        about a refused token."""
        return self._token_source

    @field_validator("client_id", "access_token", mode="after")
    @classmethod
    def _required_when_live(cls, value: str, info: ValidationInfo) -> str:
        if not value.strip() and not _context(info).paper:
            raise refuse("is required")
        return value

    @field_validator("api_base_url", "order_update_url", mode="after")
    @classmethod
    def _default_when_empty(cls, value: str, info: ValidationInfo) -> str:
        return value or cls.model_fields[info.field_name].default

    @model_validator(mode="wrap")
    @classmethod
    def _remember_the_token_source(cls, data: Any, handler: Callable[[Any], AccountConfig],
                                   info: ValidationInfo) -> AccountConfig:
        account = handler(data)
        raw = data.get("access_token") if isinstance(data, dict) else None
        named = [m.group(1) for m in _ENV.finditer(raw)] if isinstance(raw, str) else []
        source = _context(info).source
        account._token_source = next((f"environment variable {name}" for name in named if name in os.environ),
                                     f"config file {source}" if source and source != "config" else "config file")
        return account


def _leader_name(name: str) -> str:
    """A leader's config name, held as its account name (trading/leader.py `leader_account`)."""
    if not _NAME.match(name):
        raise refuse(f"must be 1-32 letters, digits, '-' or '_', got {name!r}")
    return leader_account(name)


class LeaderConfig(AccountConfig):
    # the account name everything else knows it by: "leader" for `leader:`, "leader:NAME" in `leaders:`
    name: Annotated[str, PlainValidator(lambda value: _leader_name(_text(value)))] = LEADER_NAME

    @property
    def label(self) -> str:
        """Its name in messages: "leader", or "leader alpha"."""
        return leader_label(self.name)


class Subscription(Section):
    """One leader a follower copies, and the follower's sizing for that leader's orders (None: the
    follower's own `sizing`)."""

    name: Annotated[str, PlainValidator(lambda value: _leader_name(_text(value)))]
    sizing: Annotated[SizingRule | None, Domain(SizingKeys, optional=True)] = None

    @model_validator(mode="before")
    @classmethod
    def _a_name_alone(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, (str, int)) and not isinstance(data, bool) else data


class FollowerConfig(AccountConfig):
    name: Text
    sizing: Annotated[SizingRule, Domain(SizingKeys)] = _RULE
    risk: Annotated[RiskLimits, PlainValidator(_risk_limits)] = RiskLimits()
    filters: Annotated[Filters, Domain(FilterKeys)] = _FILTERS
    copy_window: Annotated[CopyWindow | None, Domain(CopyWindowKeys, optional=True)] = None  # None: any hour
    funds: Number(0) = 500_000.0  # paper mode only: the follower's starting funds
    shard: ShardNumber = None  # with shards: the shard that copies to it (None: chosen by its name)
    # with `leaders:`: the leaders it copies, each with its own sizing or the follower's (): every leader
    leaders: tuple[Subscription, ...] = ()
    legs: Choice(LEG_ORDERS) = PARALLEL  # buy_first: a strategy's SELL legs wait for its BUY legs to fill

    def follows(self, leader: str) -> bool:
        """Whether it copies the orders of the leader account `leader`."""
        return not self.leaders or any(s.name == leader for s in self.leaders)

    def sizing_for(self, leader: str) -> SizingRule | None:
        """Its own sizing for `leader`'s orders, when the config gives one."""
        return next((s.sizing for s in self.leaders if s.name == leader), None)

    def rule_for(self, leader: str) -> SizingRule:
        """The sizing the config gives it for `leader`'s orders: that leader's, else its own."""
        return self.sizing_for(leader) or self.sizing

    @field_validator("leaders", mode="before")
    @classmethod
    def _a_list_of_leaders(cls, value: Any) -> Any:
        if not isinstance(value, list) or not value:
            raise refuse("must be a non-empty list of leader names (or {name: ..., sizing: {...}})")
        return value

    @field_validator("name", mode="after")
    @classmethod
    def _a_plain_name(cls, name: str) -> str:
        if not name.strip():
            raise refuse("is required")
        if not _NAME.match(name) or name == LEADER_NAME:
            raise refuse(f"must be 1-32 letters, digits, '-' or '_' and not 'leader', got {name!r}")
        return name


class InstrumentsSettings(Section):
    # by default the paper exchange's copy in paper mode, Dhan's published CSV in live mode
    master: LocalPath = Field("", validate_default=True)

    @field_validator("master", mode="after")
    @classmethod
    def _a_readable_master(cls, master: str, info: ValidationInfo) -> str:
        master = master or (PAPER_MASTER if _context(info).paper else DEFAULT_MASTER_URL)
        if not master.startswith(("http://", "https://")) and not Path(master).exists():
            raise refuse(f"file {master!r} does not exist")
        return master


class MarketHoursSettings(Section):
    enforce: Flag = True


class StorageSettings(Section):
    path: LocalPath = Field("data/copytrader.db", validate_default=True)
    retry_seconds: Positive = 10.0  # how long a locked or busy database is retried

    @field_validator("path", mode="before")
    @classmethod
    def _default_when_empty(cls, value: Any) -> Any:
        return value or "data/copytrader.db"


class MetricsSettings(Section):
    port: Whole(0, 65535) = 9108
    host: Text = "127.0.0.1"


class RateLimits(Section):
    """Per follower account, Dhan's order APIs and data APIs."""

    orders_per_second: Whole(1) = 10  # the regulator's cap since March 2026; the published table says 25
    orders_per_minute: Whole(1) = 250
    orders_per_hour: Whole(1) = 1000
    orders_per_day: Whole(1) = 7000
    data_per_second: Whole(1) = 20

    def order_windows(self) -> list[tuple[int, float]]:
        return [(self.orders_per_second, 1.0), (self.orders_per_minute, 60.0),
                (self.orders_per_hour, 3600.0), (self.orders_per_day, 86400.0)]

    def data_windows(self) -> list[tuple[int, float]]:
        return [(self.data_per_second, 1.0)]


class BrokerSettings(Section):
    timeout_seconds: Positive = 5.0
    max_attempts: Whole(1) = 6


class CopySettings(Section):
    max_modifications: Whole(1) = 25  # the broker's cap per order
    lag_alert_seconds: Seconds = 30.0  # alert when a copy is still open this long after the leader filled
    unknown_alert_seconds: Seconds = 60.0
    copy_existing_on_first_start: Flag = False
    funds_refresh_seconds: Number(1) = 30.0
    check_capital: Flag = True
    margin_check: Flag = False
    sweep_seconds: Positive = 5.0
    forever_poll_seconds: Seconds = 5.0
    leg_window_seconds: Seconds = 0.0  # 0: off. Grouping by timing can mistake unrelated orders for legs
    flatten_naked_legs: Flag = False
    replace_after_modification_cap: Flag = False
    market_fill_wait_seconds: Seconds = 2.0  # an order without a price and no quote: wait this long for its fill
    max_delay_seconds: Seconds = 5.0  # a MARKET / SL-M copy not sent this long after the leader's order was seen is skipped (not an exit's)
    exit_reading_seconds: Positive = 3.0  # an exit waits this long for followers' positions, then decides without the rest
    slice_above_freeze_limit: Flag = True  # off: a copy above the exchange's freeze quantity is a recorded skip
    super_order_poll_seconds: Seconds = 1.0  # the leader's live super orders are read this often (0: on leg updates only)
    buy_first_wait_seconds: Positive = 30.0  # legs: buy_first: how long a SELL leg waits for its BUY legs to fill


_FNO = ("NSE_FNO", "BSE_FNO")


def _freeze_limits(raw: Any) -> tuple[tuple[str, str, int | None], ...]:
    """`freeze_limits: {NIFTY: 1800, "BSE_FNO:SENSEX": 1000, SOMESTOCK: null}`: units per order of
    an underlying's derivatives (null: no limit), in both F&O segments unless one is named; over
    the copier's table (trading/freeze.py). Each entry is (segment, underlying, units or None)."""
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise refuse(f"must be a mapping of underlying to units per order, got {type(raw).__name__}")
    out: list[tuple[str, str, int | None]] = []
    for name, qty in raw.items():
        segment, _, underlying = str(name).rpartition(":")
        segment, underlying = segment.strip().upper(), underlying.strip().upper()
        if segment and segment not in _FNO:
            raise refuse(f"the segment must be one of {', '.join(_FNO)}, got {segment!r}", str(name))
        if not _NAME.match(underlying):
            raise refuse(f"must name an underlying (letters, digits, '-', '_'), got {name!r}", str(name))
        if qty is not None and (isinstance(qty, bool) or not isinstance(qty, int) or qty < 1):
            raise refuse(f"must be a whole number of units >= 1, or null for no limit, got {qty!r}", str(name))
        out += [(seg, underlying, qty) for seg in ((segment,) if segment else _FNO)]
    return tuple(out)


FreezeLimitTable = Annotated[tuple[tuple[str, str, Any], ...], PlainValidator(_freeze_limits)]


class QuotesSettings(Section):
    cache_seconds: Seconds = 2.0
    requests_per_second: Whole(1) = 1  # Dhan's market quote APIs, per account with a data plan


class KillSwitchSettings(Section):
    activate_broker: Flag = False
    after_failures: Whole(0) = 0
    failure_window_seconds: Positive = 60.0


class AlertsConfig(Section):
    cooldown_seconds: Seconds = 300.0
    webhook_url: Url("http://", "https://") = ""
    telegram_bot_token: Text = Field("", repr=False)
    telegram_chat_id: Text = ""

    @model_validator(mode="after")
    def _telegram_takes_both(self) -> AlertsConfig:
        if bool(self.telegram_bot_token) != bool(self.telegram_chat_id):
            raise refuse("telegram_bot_token and telegram_chat_id go together", "telegram_chat_id")
        return self


class TokensSettings(Section):
    renew_every_minutes: Seconds = 0.0  # followers' tokens
    renew_leader_every_minutes: Seconds = 0.0  # apart: renewing logs the leader out of their other tools

    @property
    def renew_seconds(self) -> float:
        return self.renew_every_minutes * 60

    @property
    def leader_renew_seconds(self) -> float:
        return self.renew_leader_every_minutes * 60


class ReconcileSettings(Section):
    interval_seconds: Seconds = 60.0
    repair: Flag = True


class FeedSettings(Section):
    # socket frames larger than this are refused unparsed; an order_alert is about 1.5 KB, so
    # below 4 KiB a real frame could be refused
    max_frame_bytes: Whole(4096) = 1024 * 1024
    # a socket is pinged this often; one that sends nothing (no pong, no frame) for
    # `ping_timeout_seconds` after a ping is dead: closed and connected again
    ping_interval_seconds: Positive = 20.0
    ping_timeout_seconds: Positive = 10.0
    # a frame begun must arrive whole within this: one socket's half-sent frame holds up the others
    # (every socket is read by one thread) at most this long, then that socket is closed as dead
    read_timeout_seconds: Positive = 5.0


class PaperConfig(Section):
    seed: Whole() = 7
    leader_bot: Flag = True
    pace_seconds: Positive = 1.5
    leader_funds: Number(0) = 2_000_000.0
    port: Whole(0) = 0


class LoggingSettings(Section):
    level: Choice(("DEBUG", "INFO", "WARNING", "ERROR"), "DEBUG, INFO, WARNING or ERROR", upper=True) = "INFO"


with warnings.catch_warnings():  # the `copy` key shadows BaseModel.copy, pydantic's deprecated model_copy
    warnings.filterwarnings("ignore", message='Field name "copy"', category=UserWarning)

    class Config(Section):
        mode: Choice(("live", "paper"), "'live' or 'paper'") = "live"
        # a default of {} is validated like a written section: live mode requires its keys
        # several leaders in one process (`leaders:`), or one (`leader:`); `leader` is then the first
        leaders: tuple[LeaderConfig, ...] = ()
        leader: LeaderConfig = Field(default_factory=dict, validate_default=True)
        followers: Annotated[tuple[FollowerConfig, ...], Field(validate_default=True)] = ()
        instruments: InstrumentsSettings = Field(default_factory=dict, validate_default=True)
        market_hours: MarketHoursSettings = MarketHoursSettings()
        storage: StorageSettings = Field(default_factory=dict, validate_default=True)
        metrics: MetricsSettings = MetricsSettings()
        rate_limits: RateLimits = RateLimits()
        broker: BrokerSettings = BrokerSettings()
        copy: CopySettings = CopySettings()
        quotes: QuotesSettings = QuotesSettings()
        kill_switch: KillSwitchSettings = KillSwitchSettings()
        alerts: AlertsConfig = AlertsConfig()
        tokens: TokensSettings = TokensSettings()
        reconcile: ReconcileSettings = ReconcileSettings()
        feed: FeedSettings = FeedSettings()
        paper: PaperConfig = PaperConfig()
        logging: LoggingSettings = LoggingSettings()
        freeze_limits: FreezeLimitTable = ()  # units per order by (segment, underlying), over trading/freeze.py
        allow_insecure: Flag = False  # true accepts what `insecure_settings` names, warned about at start
        # -- shards (copier/shards.py): without `shards` one process, no stream ---------------------------
        shards: ShardCount = None  # N: a leader feed process and N follower shards
        stream: StreamSettings | None = None  # with shards: the stream server (its defaults when left out)
        # -- end of shards ------------------------------------------------------------------------------
        _source: str = PrivateAttr("")

        @property
        def source(self) -> str:
            """The config file this came from ("" when parsed from a mapping): error messages name it."""
            return self._source

        @model_validator(mode="before")
        @classmethod
        def _a_stream_with_shards(cls, data: Any) -> Any:
            if isinstance(data, dict) and data.get("shards") is not None and data.get("stream") is None:
                return {**data, "stream": {}}  # the stream server's defaults
            return data

        @model_validator(mode="before")
        @classmethod
        def _leader_or_leaders(cls, data: Any) -> Any:
            if not isinstance(data, dict) or "leaders" not in data:
                return data
            if "leader" in data:
                raise refuse("use either leader: (one leader) or leaders: (several), not both", "leaders")
            leaders = data["leaders"]
            if not isinstance(leaders, list) or not leaders or not all(isinstance(x, dict) for x in leaders):
                raise refuse("must be a non-empty list of leader accounts, each with a name", "leaders")
            for i, leader in enumerate(leaders):
                if not leader.get("name"):
                    raise refuse("is required", f"leaders[{i}].name")
            return {**data, "leader": leaders[0]}  # (checked as leaders[0]; errors name that key)

        @model_validator(mode="after")
        def _leaders_known(self) -> Config:
            names = [leader.name for leader in self.leaders]
            for i, leader in enumerate(self.leaders):
                if leader.name in names[:i]:
                    raise refuse(f"{leader_name(leader.name)!r} is used twice", f"leaders[{i}].name")
                earlier = [o.client_id for o in self.leaders[:i]]
                if leader.client_id and leader.client_id in earlier:
                    raise refuse(f"client {leader.client_id} is already leaders[{earlier.index(leader.client_id)}]",
                                 f"leaders[{i}].client_id")
            for i, follower in enumerate(self.followers):
                for j, subscription in enumerate(follower.leaders):
                    if not self.leaders:
                        raise refuse("is used only with several leaders (leaders: [...]); with leader: every "
                                     "follower copies the one leader", f"followers[{i}].leaders")
                    if subscription.name not in names:
                        raise refuse(f"no leader named {leader_name(subscription.name)!r} "
                                     f"(leaders: {', '.join(leader_name(n) for n in names)})",
                                     f"followers[{i}].leaders[{j}].name")
            if len(self.leaders) > 1 and self.shards is not None:
                raise refuse("several leaders cannot run as shards yet: run one copier per leader with shards, or "
                             "several leaders in one process", "leaders")
            return self

        @property
        def all_leaders(self) -> tuple[LeaderConfig, ...]:
            """Every leader: those of `leaders:`, or the one of `leader:`."""
            return self.leaders or (self.leader,)

        @field_validator("followers", mode="before")
        @classmethod
        def _a_list(cls, value: Any) -> Any:
            if not isinstance(value, list) or not value:
                raise refuse("must be a non-empty list of follower accounts")
            return value

        @field_validator("followers", mode="after")
        @classmethod
        def _named_once(cls, followers: tuple[FollowerConfig, ...]) -> tuple[FollowerConfig, ...]:
            for i, follower in enumerate(followers):
                if any(f.name == follower.name for f in followers[:i]):
                    raise refuse(f"{follower.name!r} is used twice", f"[{i}].name")
            return followers

        @model_validator(mode="after")
        def _secure_and_renewable(self) -> Config:
            if not self.allow_insecure:
                for key, problem in self.insecure_settings().items():
                    raise refuse(f"{problem}; refused unless allow_insecure: true", key)
            try:
                token_key = key_from_environment()
            except TokenFileError as exc:
                raise refuse(str(exc)) from None
            for name, minutes in (("renew_every_minutes", self.tokens.renew_every_minutes),
                                  ("renew_leader_every_minutes", self.tokens.renew_leader_every_minutes)):
                if minutes and token_key is None:  # renewing expires the old token: the new one must outlive the process
                    raise refuse(f"renewed tokens are stored encrypted, and the environment variable "
                                 f"{TOKEN_KEY_ENV} (the key) is not set; make one with: {MAKE_KEY}", f"tokens.{name}")
                both = _leading_and_following(self) if minutes else None
                if both is not None:  # one token, two gateways: a renewal by one expires the other's
                    raise refuse(f"client {both[0]} is {both[1]} and {both[2]}: renewing its token as one would "
                                 "expire the token the other uses; renew it by hand (python run.py token NAME)",
                                 f"tokens.{name}")
            return self

        @model_validator(mode="after")
        def _shard_mode_rules(self) -> Config:
            _shards_rules(self)
            return self

        @model_validator(mode="after")
        def _buy_first_needs_strategies(self) -> Config:
            _leg_order_rules(self)
            return self

        def accounts(self) -> list[tuple[str, AccountConfig]]:
            """(key, account): the leader and every follower, by the key that names them."""
            leaders = ([(f"leaders[{i}]", leader) for i, leader in enumerate(self.leaders)] if self.leaders
                       else [("leader", self.leader)])
            return [*leaders, *((f"followers[{i}]", f) for i, f in enumerate(self.followers))]

        def insecure_settings(self) -> dict[str, str]:
            """Key -> why: what only `allow_insecure: true` lets through. Plain-text URLs to another
            machine (tokens and orders readable on the way) and /metrics open beyond this machine.
            Loopback is exempt: that traffic never leaves the machine."""
            found: dict[str, str] = {}
            if self.mode == "live":  # paper mode replaces the accounts' URLs with the paper exchange's
                for key, account in self.accounts():
                    for name in ("api_base_url", "order_update_url"):
                        if _plain_text_remote(getattr(account, name)):
                            found[f"{key}.{name}"] = f"{getattr(account, name)!r} is not encrypted (https://, wss://)"
            if _plain_text_remote(self.instruments.master):
                found["instruments.master"] = f"{self.instruments.master!r} is not encrypted (https://)"
            if not _is_loopback(self.metrics.host):
                found["metrics.host"] = f"{self.metrics.host!r} opens /metrics to other machines (127.0.0.1 keeps it local)"
            if self.shards and self.stream and _plain_text_remote(self.stream.url):  # the leader's orders, in clear
                found["stream.url"] = f"{redact_url(self.stream.url)!r} is not encrypted (tls://)"
            return found

        def secrets(self) -> list[str]:
            """Every secret in the config, for log redaction."""
            return [*(leader.access_token for leader in self.all_leaders), *(f.access_token for f in self.followers),
                    *([self.alerts.telegram_bot_token] if self.alerts.telegram_bot_token else []),
                    *([urlsplit(self.stream.url).password] if self.stream and urlsplit(self.stream.url).password else [])]


def _leading_and_following(config: Any) -> tuple[str, str, str] | None:
    """(client id, its leader key, its follower key) of an account that leads and follows, if any."""
    accounts = config.accounts()
    followers = {account.client_id: key for key, account in accounts if isinstance(account, FollowerConfig)}
    for key, account in accounts:
        if isinstance(account, LeaderConfig) and account.client_id and account.client_id in followers:
            return account.client_id, key, followers[account.client_id]
    return None


def _is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def _plain_text_remote(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "ws", "nats") and not _is_loopback(parts.hostname)


# -- reading ---------------------------------------------------------------------------------------
def _key(loc: Iterable[int | str]) -> str:
    key = ""
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key and not part.startswith("[") else part)
    return key


def _problem(error: Any) -> str:
    """Our words for pydantic's own errors (ours, of type "config", carry theirs)."""
    kind, value = error["type"], error.get("input")
    if kind == "config":
        return error["ctx"]["problem"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "is required"
    if kind in ("model_type", "model_attributes_type", "dict_type", "dataclass_type"):
        return f"must be a mapping, got {type(value).__name__}"
    return f"{error['msg'][:1].lower()}{error['msg'][1:]}, got {value!r}"


def _explain(error: ValidationError) -> ConfigError:
    """The first error, as `key: problem`, the key spelled as in the YAML (followers[1].sizing.ratio)."""
    first = error.errors(include_url=False)[0]
    loc = list(first["loc"])
    sub = (first.get("ctx") or {}).get("key", "") if first["type"] == "config" else ""
    if sub:
        loc.append(sub)
    key = _key(loc)
    if not key and first["type"] != "config":
        key = "config"
    return ConfigError(f"{key}: {_problem(first)}" if key else _problem(first))


def parse(raw: Any, source: str = "config", base_dir: Path | None = None) -> Config:
    """Validate a config mapping; relative paths resolve against `base_dir` (the config file's
    folder) when given, else the working directory."""
    mode = raw.get("mode") if isinstance(raw, dict) else None
    try:
        paper = isinstance(mode, str) and _interpolate(mode) == "paper"
    except PydanticCustomError:
        paper = False  # the mode's own check names the variable
    try:
        config = Config.model_validate(raw, context=_Context(source, base_dir, paper))
    except ValidationError as exc:
        raise _explain(exc) from None
    config._source = source
    return config


def load(path: str | Path) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    try:
        return parse(raw, str(path), base_dir=path.resolve().parent)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
