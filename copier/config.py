"""Configuration: `config.yaml`, `${ENV_VAR}` interpolation, validation that names the key (B.7).

`load(path)` returns a frozen `Config` or raises `ConfigError("followers[1].sizing.ratio: must be
a number > 0, got 'abc'")`. Unknown keys are errors too: a typo must not silently fall back to a
default when real money is at stake.
"""
from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from datetime import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from broker.gateway import DEFAULT_BASE_URL, DEFAULT_ORDER_UPDATE_URL
from storage.tokens import TOKEN_KEY_ENV, MAKE_KEY, TokenFileError, key_from_environment
from trading.filters import CopyWindow, Filters
from trading.risk import RiskLimits
from trading.sizing import STRATEGIES, SizingRule

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
DEFAULT_MASTER_URL = "https://images.dhan.co/api-data/api-scrip-master.csv"


class ConfigError(ValueError):
    """Names the key and the problem; the process refuses to start."""


def key_error(config: Config, key: str, problem: str) -> ConfigError:
    """A ConfigError for `key`, prefixed with the config file like the errors of `load`."""
    return ConfigError(f"{config.source}: {key}: {problem}" if config.source else f"{key}: {problem}")


@dataclass(frozen=True)
class AccountConfig:
    name: str
    client_id: str
    access_token: str = field(repr=False)
    api_base_url: str = DEFAULT_BASE_URL
    order_update_url: str = DEFAULT_ORDER_UPDATE_URL
    token_source: str = "config file"  # where access_token came from, for messages about a refused token


@dataclass(frozen=True)
class FollowerConfig(AccountConfig):
    sizing: SizingRule = field(default_factory=SizingRule)
    risk: RiskLimits = field(default_factory=RiskLimits)
    filters: Filters = field(default_factory=Filters)
    copy_window: CopyWindow | None = None  # None: new orders are copied at any hour
    funds: float = 500_000.0  # paper mode only: the follower's starting funds


@dataclass(frozen=True)
class RateLimits:
    orders_per_second: int = 10  # the regulator's cap since March 2026; the published table says 25
    orders_per_minute: int = 250
    orders_per_hour: int = 1000
    orders_per_day: int = 7000
    data_per_second: int = 20

    def order_windows(self) -> list[tuple[int, float]]:
        return [(self.orders_per_second, 1.0), (self.orders_per_minute, 60.0),
                (self.orders_per_hour, 3600.0), (self.orders_per_day, 86400.0)]

    def data_windows(self) -> list[tuple[int, float]]:
        return [(self.data_per_second, 1.0)]


@dataclass(frozen=True)
class AlertsConfig:
    cooldown_seconds: float = 300.0
    webhook_url: str = ""
    telegram_bot_token: str = field(default="", repr=False)
    telegram_chat_id: str = ""


@dataclass(frozen=True)
class PaperConfig:
    seed: int = 7
    leader_bot: bool = True
    pace_seconds: float = 1.5
    leader_funds: float = 2_000_000.0
    port: int = 0


@dataclass(frozen=True)
class Config:
    mode: str
    leader: AccountConfig
    followers: tuple[FollowerConfig, ...]
    instruments_master: str
    enforce_market_hours: bool = True
    storage_path: str = "data/copytrader.db"
    storage_retry_seconds: float = 10.0
    metrics_port: int = 9108
    metrics_host: str = "127.0.0.1"
    rate_limits: RateLimits = field(default_factory=RateLimits)
    broker_timeout: float = 5.0
    max_attempts: int = 6
    max_modifications: int = 25
    lag_alert_seconds: float = 30.0
    unknown_alert_seconds: float = 60.0
    copy_existing_on_first_start: bool = False
    funds_refresh_seconds: float = 30.0
    check_capital: bool = True
    sweep_seconds: float = 5.0
    forever_poll_seconds: float = 5.0
    leg_window_seconds: float = 0.0  # 0: off. Grouping by timing can mistake unrelated orders for legs
    flatten_naked_legs: bool = False
    replace_after_modification_cap: bool = False
    kill_switch_activates_broker: bool = False
    kill_switch_after_failures: int = 0
    kill_switch_failure_window: float = 60.0
    token_renew_seconds: float = 0.0  # followers' tokens
    leader_token_renew_seconds: float = 0.0  # apart: renewing logs the leader out of their other tools
    margin_check: bool = False
    market_fill_wait_seconds: float = 2.0  # an order without a price and no quote: wait this long for its fill
    max_delay_seconds: float = 5.0  # a MARKET / SL-M copy not sent this long after the leader's order was seen is skipped
    quote_cache_seconds: float = 2.0
    quote_requests_per_second: int = 1  # Dhan's market quote APIs, per account with a data plan
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    reconcile_interval_seconds: float = 60.0
    reconcile_repair: bool = True
    max_frame_bytes: int = 1024 * 1024  # socket frames larger than this are refused unparsed
    paper: PaperConfig = field(default_factory=PaperConfig)
    log_level: str = "INFO"
    allow_insecure: bool = False
    source: str = ""
    # -- issue 14 (slicing, super orders): keys added by the `slicing` branch -----------------------
    # (segment, underlying, units per order or None for no limit), over trading/freeze.py's table
    freeze_limits: tuple[tuple[str, str, int | None], ...] = ()
    slice_above_freeze_limit: bool = True  # off: a copy above the freeze quantity is a recorded skip
    super_order_poll_seconds: float = 1.0  # the leader's live super orders are read this often (0: on leg updates only)
    # -- end of the `slicing` branch's keys ---------------------------------------------------------

    def __post_init__(self) -> None:
        if not self.allow_insecure:
            for key, problem in self.insecure_settings().items():
                raise ConfigError(f"{key}: {problem}; refused unless allow_insecure: true")

    def insecure_settings(self) -> dict[str, str]:
        """Key -> why: what only `allow_insecure: true` lets through. Plain-text URLs to another
        machine (tokens and orders readable on the way) and /metrics open beyond this machine.
        Loopback is exempt: that traffic never leaves the machine."""
        found: dict[str, str] = {}
        if self.mode == "live":  # paper mode replaces the accounts' URLs with the paper exchange's
            accounts = [("leader", self.leader), *((f"followers[{i}]", f) for i, f in enumerate(self.followers))]
            for key, account in accounts:
                for name in ("api_base_url", "order_update_url"):
                    if _plain_text_remote(getattr(account, name)):
                        found[f"{key}.{name}"] = f"{getattr(account, name)!r} is not encrypted (https://, wss://)"
        if _plain_text_remote(self.instruments_master):
            found["instruments.master"] = f"{self.instruments_master!r} is not encrypted (https://)"
        if not _is_loopback(self.metrics_host):
            found["metrics.host"] = f"{self.metrics_host!r} opens /metrics to other machines (127.0.0.1 keeps it local)"
        return found

    def tokens(self) -> list[str]:
        """Every secret in the config, for log redaction."""
        return [self.leader.access_token, *(f.access_token for f in self.followers),
                *([self.alerts.telegram_bot_token] if self.alerts.telegram_bot_token else [])]


# -- reading helpers -----------------------------------------------------------------------------
def _is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def _plain_text_remote(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "ws") and not _is_loopback(parts.hostname)


def _interpolate(value: Any, key: str) -> Any:
    if isinstance(value, str):
        def sub(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise ConfigError(f"{key}: environment variable {name} is not set")
        return _ENV.sub(sub, value)
    if isinstance(value, dict):
        return {k: _interpolate(v, f"{key}.{k}" if key else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, f"{key}[{i}]") for i, v in enumerate(value)]
    return value


class _Section:
    """Typed reads from one mapping, each error naming the full key; `done()` rejects unknown keys."""

    def __init__(self, data: Any, key: str) -> None:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{key or 'config'}: must be a mapping, got {type(data).__name__}")
        self.data, self.key, self.used = data, key, set()

    def _k(self, name: str) -> str:
        return f"{self.key}.{name}" if self.key else name

    def get(self, name: str, default: Any = None) -> Any:
        self.used.add(name)
        return self.data.get(name, default)

    def str(self, name: str, default: str | None = None, required: bool = False) -> str:
        value = self.get(name, default)
        if value is None or (required and str(value).strip() == ""):
            if required:
                raise ConfigError(f"{self._k(name)}: is required")
            return default or ""
        if not isinstance(value, (str, int)):
            raise ConfigError(f"{self._k(name)}: must be a string, got {type(value).__name__}")
        return str(value)

    def number(self, name: str, default: float, minimum: float | None = None, integer: bool = False,
               exclusive: bool = False) -> Any:
        value = self.get(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{self._k(name)}: must be a number, got {value!r}")
        if integer and int(value) != value:
            raise ConfigError(f"{self._k(name)}: must be a whole number, got {value!r}")
        if minimum is not None and (value <= minimum if exclusive else value < minimum):
            raise ConfigError(f"{self._k(name)}: must be {'>' if exclusive else '>='} {minimum}, got {value!r}")
        return int(value) if integer else float(value)

    def bool(self, name: str, default: bool) -> bool:
        value = self.get(name, default)
        if not isinstance(value, bool):
            raise ConfigError(f"{self._k(name)}: must be true or false, got {value!r}")
        return value

    def section(self, name: str) -> "_Section":
        return _Section(self.get(name), self._k(name))

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise ConfigError(f"{self._k(unknown[0])}: unknown key")


def _url(section: _Section, name: str, default: str, schemes: tuple[str, ...]) -> str:
    value = section.str(name, default) or default
    if not value.startswith(schemes):
        raise ConfigError(f"{section._k(name)}: must start with {' or '.join(schemes)}, got {value!r}")
    return value


def _token_source(raw_account: Any, source: str) -> str:
    """Where an account's access_token comes from: the environment variable it names, or the file."""
    value = raw_account.get("access_token") if isinstance(raw_account, dict) else None
    if isinstance(value, str):
        for match in _ENV.finditer(value):
            if match.group(1) in os.environ:
                return f"environment variable {match.group(1)}"
    return f"config file {source}" if source and source != "config" else "config file"


def _account(section: _Section, name: str, paper: bool) -> dict[str, Any]:
    return dict(
        name=name,
        client_id=section.str("client_id", required=not paper) or "",
        access_token=section.str("access_token", required=not paper) or "",
        api_base_url=_url(section, "api_base_url", DEFAULT_BASE_URL, ("http://", "https://")),
        order_update_url=_url(section, "order_update_url", DEFAULT_ORDER_UPDATE_URL, ("ws://", "wss://")),
    )


def _sizing(section: _Section) -> SizingRule:
    strategy = section.str("strategy", "fixed_ratio")
    if strategy not in STRATEGIES:
        raise ConfigError(f"{section._k('strategy')}: must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    rule = SizingRule(
        strategy=strategy,
        ratio=section.number("ratio", 1.0, 0, exclusive=True),
        lots=section.number("lots", 1, 1, integer=True),
        risk_per_trade=section.number("risk_per_trade", 0.0, 0),
        stop_loss_pct=section.number("stop_loss_pct", 1.0, 0, exclusive=True),
        max_quantity=(section.number("max_quantity", 0, 1, integer=True) if section.data.get("max_quantity") is not None
                      else section.get("max_quantity")),
        round_up_to_one_lot=section.bool("round_up_to_one_lot", False),
    )
    if strategy == "risk_based" and rule.risk_per_trade <= 0:
        raise ConfigError(f"{section._k('risk_per_trade')}: must be > 0 for the risk_based strategy")
    section.done()
    return rule


def _filters(section: _Section) -> Filters:
    def names(key: str) -> frozenset[str]:
        value = section.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, (str, int)) for v in value):
            raise ConfigError(f"{section._k(key)}: must be a list of names, got {value!r}")
        return frozenset(str(v).upper() for v in value)

    filters = Filters(options_only=section.bool("options_only", False),
                      **{key: names(key) for key in Filters.KEYS if key != "options_only"})
    section.done()
    return filters


_CLOCK_TIME = re.compile(r"^([01]?[0-9]|2[0-3]):([0-5][0-9])$")


def _copy_window(section: _Section) -> CopyWindow | None:
    """Both `start` and `end` as "HH:MM" in exchange time, or no window at all."""
    if not section.data:
        return None

    def clock_time(name: str) -> time:
        value = section.get(name)
        if value is None:
            raise ConfigError(f"{section._k(name)}: is required (give both start and end, or no copy_window)")
        match = _CLOCK_TIME.match(value) if isinstance(value, str) else None
        if match is None:
            hint = ""
            if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 24 * 60:
                # YAML 1.1 reads an unquoted 15:10 as the base-60 number 910
                hours, minutes = divmod(value, 60)
                hint = f'; YAML reads an unquoted {hours}:{minutes:02d} as a number: write "{hours:02d}:{minutes:02d}"'
            raise ConfigError(f'{section._k(name)}: must be a time "HH:MM" in exchange time (IST), got {value!r}{hint}')
        return time(int(match.group(1)), int(match.group(2)))

    start, end = clock_time("start"), clock_time("end")
    section.done()
    if not start < end:
        raise ConfigError(f"{section._k('start')}: must be before end ({start:%H:%M} >= {end:%H:%M}); "
                          "a window cannot run across midnight")
    return CopyWindow(start, end)


def _resolve(path: str, base_dir: Path | None) -> str:
    """A relative path in a config file is relative to the file's folder, not the working directory."""
    if base_dir is None or Path(path).is_absolute():
        return path
    return str(base_dir / path)


def parse(raw: Any, source: str = "config", base_dir: Path | None = None) -> Config:
    """Validate a config mapping; relative paths resolve against `base_dir` (the config file's
    folder) when given, else the working directory."""
    raw_accounts = raw if isinstance(raw, dict) else {}
    raw_followers = raw_accounts.get("followers") if isinstance(raw_accounts.get("followers"), list) else []
    root = _Section(_interpolate(raw, ""), "")
    mode = root.str("mode", "live")
    if mode not in ("live", "paper"):
        raise ConfigError(f"mode: must be 'live' or 'paper', got {mode!r}")
    paper = mode == "paper"

    leader_s = root.section("leader")
    leader = AccountConfig(**_account(leader_s, "leader", paper),
                           token_source=_token_source(raw_accounts.get("leader"), source))
    leader_s.done()

    followers_raw = root.get("followers")
    if not isinstance(followers_raw, list) or not followers_raw:
        raise ConfigError("followers: must be a non-empty list of follower accounts")
    followers: list[FollowerConfig] = []
    for i, raw_f in enumerate(followers_raw):
        fs = _Section(raw_f, f"followers[{i}]")
        name = fs.str("name", required=True)
        if not _NAME.match(name) or name == "leader":
            raise ConfigError(f"followers[{i}].name: must be 1-32 letters, digits, '-' or '_' and not 'leader', got {name!r}")
        if any(f.name == name for f in followers):
            raise ConfigError(f"followers[{i}].name: {name!r} is used twice")
        account = _account(fs, name, paper)
        sizing = _sizing(fs.section("sizing"))
        risk_section = fs.section("risk")
        try:
            limits = RiskLimits.from_mapping(risk_section.data)
        except (TypeError, ValueError) as exc:  # RiskLimits names the key after "risk"
            message = str(exc) if str(exc).startswith("risk") else f"risk: {exc}"
            raise ConfigError(f"followers[{i}].{message}") from None
        filters = _filters(fs.section("filters"))
        copy_window = _copy_window(fs.section("copy_window"))
        funds = fs.number("funds", 500_000.0, 0)
        fs.done()
        followers.append(FollowerConfig(**account, sizing=sizing, risk=limits, filters=filters, funds=funds,
                                        copy_window=copy_window,
                                        token_source=_token_source(raw_followers[i], source)))

    inst = root.section("instruments")
    default_master = str(Path(__file__).resolve().parent.parent / "paper" / "data" / "instruments.csv") if paper else DEFAULT_MASTER_URL
    master = inst.str("master", default_master) or default_master
    if not master.startswith(("http://", "https://")):
        master = _resolve(master, base_dir)
    if not master.startswith(("http://", "https://")) and not Path(master).exists():
        raise ConfigError(f"instruments.master: file {master!r} does not exist")
    inst.done()

    hours = root.section("market_hours")
    enforce = hours.bool("enforce", True)
    hours.done()
    storage = root.section("storage")
    storage_path = _resolve(storage.str("path", "data/copytrader.db") or "data/copytrader.db", base_dir)
    storage_retry = storage.number("retry_seconds", 10.0, 0, exclusive=True)
    storage.done()
    met = root.section("metrics")
    metrics_port = met.number("port", 9108, 0, integer=True)
    if metrics_port > 65535:
        raise ConfigError(f"metrics.port: must be <= 65535, got {metrics_port}")
    metrics_host = met.str("host", "127.0.0.1")
    met.done()

    rl = root.section("rate_limits")
    limits = RateLimits(**{name: rl.number(name, default, 1, integer=True)
                           for name, default in vars(RateLimits()).items()})
    rl.done()
    broker = root.section("broker")
    timeout = broker.number("timeout_seconds", 5.0, 0, exclusive=True)
    attempts = broker.number("max_attempts", 6, 1, integer=True)
    broker.done()
    cp = root.section("copy")
    max_mods = cp.number("max_modifications", 25, 1, integer=True)
    lag = cp.number("lag_alert_seconds", 30.0, 0)
    unknown_alert = cp.number("unknown_alert_seconds", 60.0, 0)
    existing = cp.bool("copy_existing_on_first_start", False)
    funds_refresh = cp.number("funds_refresh_seconds", 30.0, 1)
    check_capital = cp.bool("check_capital", True)
    margin_check = cp.bool("margin_check", False)
    sweep_seconds = cp.number("sweep_seconds", 5.0, 0, exclusive=True)
    forever_poll = cp.number("forever_poll_seconds", 5.0, 0)
    leg_window = cp.number("leg_window_seconds", 0.0, 0)
    flatten_legs = cp.bool("flatten_naked_legs", False)
    replace_after_cap = cp.bool("replace_after_modification_cap", False)
    fill_wait = cp.number("market_fill_wait_seconds", 2.0, 0)
    max_delay = cp.number("max_delay_seconds", 5.0, 0)
    # -- issue 14 (slicing, super orders): keys added by the `slicing` branch -----------------------
    slice_orders = cp.bool("slice_above_freeze_limit", True)
    super_poll = cp.number("super_order_poll_seconds", 1.0, 0)
    freeze_limits = _freeze_limits(root.get("freeze_limits"))
    # -- end of the `slicing` branch's keys ---------------------------------------------------------
    cp.done()
    qs = root.section("quotes")
    quote_cache = qs.number("cache_seconds", 2.0, 0)
    quote_rate = qs.number("requests_per_second", 1, 1, integer=True)
    qs.done()
    ks = root.section("kill_switch")
    kill_broker = ks.bool("activate_broker", False)
    kill_after = ks.number("after_failures", 0, 0, integer=True)
    kill_window = ks.number("failure_window_seconds", 60.0, 0, exclusive=True)
    ks.done()
    al = root.section("alerts")
    alerts = AlertsConfig(cooldown_seconds=al.number("cooldown_seconds", 300.0, 0),
                          webhook_url=_url(al, "webhook_url", "", ("http://", "https://")) if al.data.get("webhook_url") else "",
                          telegram_bot_token=al.str("telegram_bot_token", ""),
                          telegram_chat_id=al.str("telegram_chat_id", ""))
    if bool(alerts.telegram_bot_token) != bool(alerts.telegram_chat_id):
        raise ConfigError("alerts.telegram_chat_id: telegram_bot_token and telegram_chat_id go together")
    al.done()
    tk = root.section("tokens")
    renew_minutes = tk.number("renew_every_minutes", 0.0, 0)
    renew_leader_minutes = tk.number("renew_leader_every_minutes", 0.0, 0)
    tk.done()
    try:
        token_key = key_from_environment()
    except TokenFileError as exc:
        raise ConfigError(str(exc)) from None
    for name, minutes in (("renew_every_minutes", renew_minutes), ("renew_leader_every_minutes", renew_leader_minutes)):
        if minutes and token_key is None:  # renewing expires the old token: the new one must outlive the process
            raise ConfigError(f"tokens.{name}: renewed tokens are stored encrypted, and the environment variable "
                              f"{TOKEN_KEY_ENV} (the key) is not set; make one with: {MAKE_KEY}")
    rc = root.section("reconcile")
    reconcile_interval = rc.number("interval_seconds", 60.0, 0)
    reconcile_repair = rc.bool("repair", True)
    rc.done()
    fd = root.section("feed")
    # an order_alert is about 1.5 KB; below 4 KiB a real frame could be refused
    max_frame_bytes = fd.number("max_frame_bytes", 1024 * 1024, 4096, integer=True)
    fd.done()
    ps = root.section("paper")
    paper_cfg = PaperConfig(seed=ps.number("seed", 7, integer=True), leader_bot=ps.bool("leader_bot", True),
                            pace_seconds=ps.number("pace_seconds", 1.5, 0, exclusive=True),
                            leader_funds=ps.number("leader_funds", 2_000_000.0, 0),
                            port=ps.number("port", 0, 0, integer=True))
    ps.done()
    lg = root.section("logging")
    level = lg.str("level", "INFO").upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"logging.level: must be DEBUG, INFO, WARNING or ERROR, got {level!r}")
    lg.done()
    allow_insecure = root.bool("allow_insecure", False)
    root.done()
    return Config(mode=mode, leader=leader, followers=tuple(followers), instruments_master=master,
                  enforce_market_hours=enforce, storage_path=storage_path, storage_retry_seconds=storage_retry, metrics_port=metrics_port,
                  metrics_host=metrics_host, rate_limits=limits, broker_timeout=timeout, max_attempts=attempts,
                  max_modifications=max_mods, lag_alert_seconds=lag, unknown_alert_seconds=unknown_alert,
                  copy_existing_on_first_start=existing,
                  funds_refresh_seconds=funds_refresh, check_capital=check_capital, sweep_seconds=sweep_seconds, forever_poll_seconds=forever_poll,
                  leg_window_seconds=leg_window, flatten_naked_legs=flatten_legs,
                  replace_after_modification_cap=replace_after_cap,
                  kill_switch_activates_broker=kill_broker, kill_switch_after_failures=kill_after,
                  kill_switch_failure_window=kill_window, token_renew_seconds=renew_minutes * 60,
                  leader_token_renew_seconds=renew_leader_minutes * 60,
                  margin_check=margin_check, market_fill_wait_seconds=fill_wait, max_delay_seconds=max_delay,
                  quote_cache_seconds=quote_cache,
                  quote_requests_per_second=quote_rate, alerts=alerts,
                  reconcile_interval_seconds=reconcile_interval, reconcile_repair=reconcile_repair,
                  max_frame_bytes=max_frame_bytes, paper=paper_cfg, log_level=level,
                  allow_insecure=allow_insecure, source=source,
                  freeze_limits=freeze_limits, slice_above_freeze_limit=slice_orders,
                  super_order_poll_seconds=super_poll)


# -- issue 14 (slicing, super orders): the `slicing` branch's validation ------------------------------
_FNO = ("NSE_FNO", "BSE_FNO")


def _freeze_limits(raw: Any) -> tuple[tuple[str, str, int | None], ...]:
    """`freeze_limits: {NIFTY: 1800, "BSE_FNO:SENSEX": 1000, SOMESTOCK: null}`: units per order of
    an underlying's derivatives (null: no limit), in both F&O segments unless one is named."""
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise ConfigError(f"freeze_limits: must be a mapping of underlying to units per order, got "
                          f"{type(raw).__name__}")
    out: list[tuple[str, str, int | None]] = []
    for name, qty in raw.items():
        key = f"freeze_limits.{name}"
        segment, _, underlying = str(name).rpartition(":")
        segment, underlying = segment.strip().upper(), underlying.strip().upper()
        if segment and segment not in _FNO:
            raise ConfigError(f"{key}: the segment must be one of {', '.join(_FNO)}, got {segment!r}")
        if not _NAME.match(underlying):
            raise ConfigError(f"{key}: must name an underlying (letters, digits, '-', '_'), got {name!r}")
        if qty is not None and (isinstance(qty, bool) or not isinstance(qty, int) or qty < 1):
            raise ConfigError(f"{key}: must be a whole number of units >= 1, or null for no limit, got {qty!r}")
        out += [(seg, underlying, qty) for seg in ((segment,) if segment else _FNO)]
    return tuple(out)
# -- end of the `slicing` branch's validation -------------------------------------------------------


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
