"""The copier's supervision tree, built from the config. Read top to bottom, it is the system:

  copier (one-for-one, 5 restarts in 30 s, then a clean stop)
    sizing                   SizingActor          capital lock and follower quantities
    limiter:<follower> ...   RateLimiterActor     one per follower account: the clock and retries of
                                                  its RateLimiter, the only path to its broker
    router                   OrderRouter          one OrderActor per leader order, supervised by it
    feed:<follower> ...      FeedActor            each follower's socket: fills and states of its copies
    feed:leader              FeedActor            the leader's socket: the events everything else follows

Consumers start before producers, so nothing is routed to an actor that does not exist yet; stop
runs in reverse, so the feeds go quiet first.
"""
from __future__ import annotations

import gc
import logging
import sys
import threading
from pathlib import Path
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable

from actors.context import CopierContext, CopyPolicy
from actors.feed import FeedActor
from actors.forever import ForeverActor, triggered_forever
from actors.kill_switch import KillSwitchActor, engage, report_broker_failure
from actors.reconciler import ReconcilerActor
from actors.tokens import TokenActor
from actors.messages import LEADER
from actors.rate_limiter import RateLimiter, RateLimiterActor
from actors.router import OrderRouter
from actors.sizing import SizingActor
from app import metrics
from app.alert_channels import TelegramChannel, WebhookChannel
from app.alerts import Alerts
from app.config import Config
from app.startup import key_error, record_accounts
from broker.gateway import DhanGateway
from storage import Store
from storage import models as m
from supervisors.address import Address
from supervisors.supervisor import ChildSpec, Escalated, Supervisor
from trading.calendar import MarketCalendar, now as calendar_now
from trading.instruments import InstrumentMaster

log = logging.getLogger(__name__)


@dataclass
class Copier:
    """A running copier: its supervisor, addresses and shared parts."""

    config: Config
    store: Store
    supervisor: Supervisor | None = None
    addresses: dict[str, Address] = field(default_factory=dict)
    gateways: dict[str, DhanGateway] = field(default_factory=dict)
    instruments: InstrumentMaster | None = None
    alerts: Alerts | None = None
    stopped: threading.Event = field(default_factory=threading.Event)
    escalation: Escalated | None = None
    _ref: object = None

    def address(self, name: str) -> Address:
        return self.addresses[name]

    def stop(self, timeout: float = 8.0) -> None:
        if self._ref is not None:
            try:
                self._ref.stop(timeout=timeout)  # type: ignore[attr-defined]
            except Exception:  # noqa: BLE001 - already stopped
                pass
            self._ref = None
        metrics.UP.set(0)
        self.stopped.set()


LATENCY_SWITCH_INTERVAL = 0.0005


def alert_channels(config: Config) -> list[Callable[[str, str, str], None]]:
    """The configured places alerts go besides the log, storage and metrics."""
    channels: list[Callable[[str, str, str], None]] = []
    if config.alerts.webhook_url:
        channels.append(WebhookChannel(config.alerts.webhook_url, background=True))
    if config.alerts.telegram_bot_token:
        channels.append(TelegramChannel(config.alerts.telegram_bot_token, config.alerts.telegram_chat_id,
                                        background=True))
    return channels


def start_copier(config: Config, store: Store, *, alerts: Alerts | None = None,
                 on_escalate: Callable[[Escalated], None] | None = None,
                 clock: Callable[[], datetime] | None = None) -> Copier:
    """Start the tree. `clock` (an aware datetime source) is for tests of market-hours rules."""
    # A copy's latency is a chain of thread handoffs (socket, feed, router, order actor, sizing).
    # Python lets a busy thread keep the GIL for 5 ms by default; a shorter interval lets the
    # next link of the chain run sooner (p99 with 10 followers ~25% lower in
    # bench/replication_bench.py). Shorter still (0.1-0.2 ms) measured worse: more switching.
    sys.setswitchinterval(min(sys.getswitchinterval(), LATENCY_SWITCH_INTERVAL))
    copier = Copier(config=config, store=store)
    copier.alerts = alerts or Alerts(record=store.record_alert, cooldown_seconds=config.alerts.cooldown_seconds,
                                     channels=alert_channels(config))
    instruments = InstrumentMaster(config.instruments_master, cache_dir=Path(config.storage_path).parent)
    try:
        count = instruments.load()
    except OSError as exc:  # the config's to fix, like any other key: one line, exit status 2
        raise key_error(config, "instruments.master",
                        f"cannot read {config.instruments_master!r}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise key_error(config, "instruments.master", str(exc)) from None
    log.info("instrument master: %d instruments from %s", count, config.instruments_master)
    copier.instruments = instruments

    leader = config.leader
    copier.gateways[LEADER] = DhanGateway(LEADER, leader.client_id, leader.access_token, leader.api_base_url,
                                          config.broker_timeout)
    for f in config.followers:
        copier.gateways[f.name] = DhanGateway(f.name, f.client_id, f.access_token, f.api_base_url,
                                              config.broker_timeout)

    record_accounts(store, config)
    names = [f.name for f in config.followers]
    kill_switch_on = threading.Event()
    # Labelled series exist from the start (metrics.create_series below, once the actor kinds are
    # known), so Prometheus' increase() sees their first event.
    metrics.DEAD_LETTERS.set(store.read(lambda: m.DeadLetter.select().where(m.DeadLetter.resolved == False).count()))  # noqa: E712
    for name in [LEADER, *names]:
        metrics.FEED_CONNECTED.labels(name).set(0)
    sizing_address = Address("sizing")
    limiter_addresses = {name: Address(f"limiter:{name}") for name in names}
    limiters = {f.name: RateLimiter(copier.gateways[f.name], order_limits=config.rate_limits.order_windows(),
                                    data_limits=config.rate_limits.data_windows(), max_attempts=config.max_attempts,
                                    margin_check=config.margin_check) for f in config.followers}
    router_address = Address("router")
    kill_switch_address = Address("kill_switch")
    ctx = CopierContext(
        store=store, instruments=instruments, followers=names, sizing=sizing_address, limiters=limiters,
        policy=CopyPolicy(max_modifications=config.max_modifications, lag_alert_seconds=config.lag_alert_seconds,
                          flatten_naked_legs=config.flatten_naked_legs,
                          replace_after_modification_cap=config.replace_after_modification_cap),
        alert=copier.alerts,
        calendar=MarketCalendar() if config.enforce_market_hours else None,
        copying_enabled=lambda: "kill_switch_on" if kill_switch_on.is_set() else None,
        on_broker_failure=lambda follower, reason: report_broker_failure(kill_switch_address, follower, reason),
        forever_trigger=lambda update: triggered_forever(store, copier.gateways[LEADER], update),
        clock=clock or calendar_now,
    )

    def escalate(escalation: Escalated) -> None:
        copier.escalation = escalation
        copier.alerts("critical", "escalated", f"supervisor gave up on {escalation.child_id}: {escalation.error}")
        if on_escalate:
            on_escalate(escalation)
        copier.stopped.set()

    top = Address("copier")
    specs: list[ChildSpec] = [ChildSpec("sizing", lambda a: SizingActor.start(
        a, top, {f.name: f.sizing for f in config.followers},
        copier.gateways, refresh_seconds=config.funds_refresh_seconds, check_capital=config.check_capital,
        leg_window_seconds=config.leg_window_seconds, limits={f.name: f.risk for f in config.followers},
        on_daily_loss=lambda follower, detail: engage(kill_switch_address, f"daily loss limit of {follower}: {detail}",
                                                      "risk"),
        filters={f.name: f.filters for f in config.followers}), kind="sizing", address=sizing_address)]
    for f in config.followers:
        specs.append(ChildSpec(f"limiter:{f.name}", lambda a, f=f: RateLimiterActor.start(a, top, limiters[f.name]),
                               kind="rate_limiter", address=limiter_addresses[f.name]))
    specs.append(ChildSpec("router", lambda a: OrderRouter.start(a, top, ctx, sweep_seconds=config.sweep_seconds),
                           kind="router", address=router_address))
    broker_switches = ([copier.gateways[n].kill_switch for n in names]
                       if config.kill_switch_activates_broker else [])
    specs.append(ChildSpec("forever", lambda a: ForeverActor.start(
        a, top, store=store, leader=copier.gateways[LEADER], followers=names, limiters=limiters,
        sizing=sizing_address, instruments=instruments, poll_seconds=config.forever_poll_seconds), kind="forever"))
    specs.append(ChildSpec("reconciler", lambda a: ReconcilerActor.start(
        a, top, store, copier.gateways, names, router_address, copier.alerts,
        interval_seconds=config.reconcile_interval_seconds, repair=config.reconcile_repair), kind="reconciler"))
    specs.append(ChildSpec("kill_switch", lambda a: KillSwitchActor.start(
        a, top, store, router_address, copier.alerts, broker_switches,
        on_change=lambda on: kill_switch_on.set() if on else kill_switch_on.clear(),
        after_failures=config.kill_switch_after_failures, failure_window=config.kill_switch_failure_window),
        kind="kill_switch",
        address=kill_switch_address))
    specs.append(ChildSpec("tokens", lambda a: TokenActor.start(
        a, top, copier.gateways, sizing_address, copier.alerts, config.token_renew_seconds), kind="tokens"))
    for account in [*config.followers, leader]:
        specs.append(ChildSpec(f"feed:{account.name}", lambda a, acc=account: FeedActor.start(
            a, top, account=acc.name, url=acc.order_update_url, gateway=copier.gateways[acc.name],
            store=store, router=router_address,
            copy_existing_on_first_start=config.copy_existing_on_first_start, alert=copier.alerts), kind="feed"))

    metrics.create_series(LEADER, names, {spec.kind for spec in specs} | {"order"})
    supervisor_ref = Supervisor.start("copier", specs, address=top, max_restarts=5, period=30.0,
                                      on_restart=lambda kind, error: metrics.ACTOR_RESTARTS.labels(kind).inc(),
                                      on_escalate=escalate)
    top.bind(supervisor_ref)
    copier.addresses = supervisor_ref.proxy().start_children().get(timeout=30)
    copier._ref = supervisor_ref
    # What start-up built (modules, the instrument master, pandas' calendar tables) lives as long
    # as the process: moved out of the collector's sight, a full collection no longer walks it.
    # That walk was a 40 ms pause in the middle of copying (bench/replication_bench.py).
    gc.collect()
    gc.freeze()
    metrics.UP.set(1)
    return copier
