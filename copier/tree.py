"""The copier's supervision tree, built from the config. Read top to bottom, it is the system:

  (before it: every account's token is chosen and checked with the broker, copier/accounts.py)
  copier (one-for-one; more than 5 restarts of its children in 30 s: every child stopped, then
          a clean stop; input a child crashed on is parked as a dead letter instead, see
          actors/dead_letters.py)
    sizing                   SizingActor          capital lock and follower quantities
    quotes                   QuoteActor           market quotes for orders without a price (batched, paced)
    limiter:<follower> ...   RateLimiterActor     one per follower account: the clock and retries of
                                                  its RateLimiter, the only path to its broker
    limiter:leader ...       RateLimiterActor     each leader's: order actors' re-reads of its orders
    router                   OrderRouter          one OrderActor per leader order, supervised by it
    forever                  ForeverActor         copies of the (first) leader's forever orders
    reconciler               ReconcilerActor      the brokers' books against storage, now and then
    kill_switch              KillSwitchActor      while on: no new copies, open ones cancelled
    square_off               SquareOffActor       a follower's open copies cancelled, its positions closed
    control                  FollowerControlActor operators' commands: pause, resume, sizing, followers
                                                  added and removed (copier/roster.py), square-off
    tokens                   TokenActor           access tokens: renewed, refused ones paused and retried
    feed:<follower> ...      FeedActor            each follower's socket: fills and states of its copies
    feed:leader ...          FeedActor            each leader's socket (`leader`, or `leader:NAME` of several
                                                  leaders): the events everything else follows

Consumers start before producers, so nothing is routed to an actor that does not exist yet; stop
runs in reverse, so the feeds go quiet first. Every actor's delayed and periodic messages come from
one `Timers` thread, made here; every account's broker calls run on one `BrokerThreads` (a fixed
pool and one answer reader), and every feed's socket is read and pinged by one `SocketHub` thread
(broker/sockets.py), both made here too and stopped after the actors.
"""
from __future__ import annotations

import gc
import logging
import threading
from pathlib import Path
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

from actors.context import CopierContext, CopyPolicy
from actors.dead_letters import park_input
from actors.feed import FeedActor
from actors.follower_control import FollowerControlActor
from actors.forever import ForeverActor, triggered_forever
from actors.broker_threads import BrokerThreads
from actors.kill_switch import KillSwitchActor, engage, report_broker_failure
from actors.messages import AuthRefused, is_leader
from actors.quotes import QuoteActor, QuoteBoard, Quotes
from actors.rate_limiter import RateLimiter, RateLimiterActor
from actors.reconciler import ReconcilerActor, fill_grace, resize_by_rule
from actors.router import OrderRouter
from actors.sizing import SizingActor
from actors.square_off import SquareOffActor
from actors.tokens import TokenActor
from broker.errors import CODES, FAILURE_REASONS
from broker.gateway import DhanGateway
from broker.sockets import SocketHub
from copier.accounts import Accounts, prepare_accounts, record_accounts
from copier.config import Config, FollowerConfig, key_error, load
from copier.roster import Roster, SnapshotDict, SnapshotList, config_file
from observability import metrics
from observability.alert_channels import TelegramChannel, WebhookChannel
from observability.alerts import Alerts
from storage import Store, StorageUnavailable
from supervisors import Address, ChildSpec, Escalated, Supervisor, Timers
from supervisors.pool import ActorPool
from trading.calendar import MarketCalendar, now as calendar_now
from trading.freeze import FreezeLimits
from trading.instruments import InstrumentMaster
from trading.kill_switch import KillSwitchState
from trading.lifecycle import OrderEvent
from trading.prices import LEADER_FILL, NONE, QUOTE

log = logging.getLogger(__name__)

# Objects allocated, net of those freed, before the collector looks at the young ones (Python's
# default is 700). A leader order's fan-out allocates thousands that live for its copies' round
# trips (at 100 followers); at 700 each fan-out was collected mid-flight and promoted, and the
# older generations' collections that followed walked every live object, every thread stopped.
GC_YOUNG_THRESHOLD = 100_000
ACCOUNT_THREADS = 4  # the pool of every follower's feed and every rate limiter (a feed's backfill waits on the broker)


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
    timers: Timers = field(default_factory=Timers)  # the one timer thread of every actor
    broker_threads: BrokerThreads = field(default_factory=BrokerThreads)  # every account's broker calls
    sockets: SocketHub | None = None  # the one reader thread of every follower's socket (start_sockets)
    # the leaders' sockets, on a reader thread of their own that stores and routes each frame itself
    leader_sockets: SocketHub | None = None
    stopped: threading.Event = field(default_factory=threading.Event)
    escalation: Escalated | None = None
    roster: Roster | None = None  # its followers now, added and removed while it runs
    # the threads the account actors (feeds, rate limiters) run on: a fixed number, whatever the
    # number of followers (supervisors/pool.py); each leader's feed has a thread of its own
    pools: list[ActorPool] = field(default_factory=list)
    _ref: object = None
    _unwatch: Callable[[], None] | None = None

    def start_pool(self, threads: int, name: str) -> ActorPool:
        """A pool of `threads` for actors of this copier, stopped with it (after its actors)."""
        pool = ActorPool(threads, name=name).start()
        self.pools.append(pool)
        return pool

    def leader_feed_pool(self, leader: str) -> ActorPool:
        """A leader's feed keeps a thread of its own: every copy waits on it, so it never queues
        behind a follower's feed."""
        return self.start_pool(1, f"feed-{leader}")

    def address(self, name: str) -> Address:
        return self.addresses[name]

    def terminate_child(self, child_id: str) -> bool:
        """Stop one of the copier's actors on purpose: it is not restarted. False when there is none."""
        if self._ref is None:
            return False
        return self._ref.proxy().terminate_child(child_id).get(timeout=15)  # type: ignore[attr-defined]

    def stop(self, timeout: float = 8.0) -> None:
        if self._ref is not None:
            try:
                self._ref.stop(timeout=timeout)  # type: ignore[attr-defined]
            except Exception:  # noqa: BLE001 - already stopped
                pass
            self._ref = None
        for pool in self.pools:
            pool.stop()
        self.pools.clear()
        self.timers.stop()
        self.broker_threads.stop()  # after the limiters: what they had not sent stays pending in storage
        for hub in (self.sockets, self.leader_sockets):
            if hub is not None:
                hub.stop()
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        metrics.UP.set(0)
        metrics.READY.set(0)
        self.stopped.set()


def start_sockets(config: Config, name: str = "sockets", connectors: int = 2) -> SocketHub:
    """A socket hub of the copier's, with the config's liveness checks, started."""
    return SocketHub(ping_interval=config.feed.ping_interval_seconds, ping_timeout=config.feed.ping_timeout_seconds,
                     read_timeout=config.feed.read_timeout_seconds, name=name, connectors=connectors).start()


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
                 clock: Callable[[], datetime] | None = None, accounts: Accounts | None = None,
                 config_path: str | None = None,
                 prepare_follower: Callable[[FollowerConfig], FollowerConfig] | None = None,
                 leader_feed: Callable[..., Any] | None = None,
                 on_kill_switch_engaged: Callable[[KillSwitchState], None] | None = None,
                 read_config: Callable[[str], Config] | None = None) -> Copier:
    """Start the tree. `clock` (an aware datetime source) is for tests of market-hours rules.
    `accounts`: what copier.accounts.prepare_accounts decided (it is called here when not given; it
    raises StartRefused before anything starts). `config_path`: the file a reload reads followers
    from (default: the one `config` was loaded from); `prepare_follower`: what a follower added
    while running needs first (paper mode: its account on the paper exchange).
    A follower shard (copier/shards.py) gives `leader_feed`, what makes the leader's feed actor instead
    of FeedActor (the leader's updates come from the stream), `on_kill_switch_engaged`, how
    the other shards hear of its kill switch, and `read_config`, how a reload reads the file (its
    own followers only).

        copier = start_copier(load("config.yaml"), Store(path, exclusive=True))
        copier.stopped.wait()     # set when the supervisor gives up (copier.escalation says why)
        copier.stop()             # every actor, the last started first
    """
    if accounts is None:
        accounts = prepare_accounts(config)
    copier = Copier(config=config, store=store)
    copier.alerts = alerts or Alerts(record=store.alerts.record, cooldown_seconds=config.alerts.cooldown_seconds,
                                     channels=alert_channels(config), unrecorded=(StorageUnavailable,))
    for name, reason in accounts.paused.items():
        copier.alerts("critical", f"auth:{name}",
                      f"follower {name}: {reason}; it starts paused: nothing is copied to it until it has a "
                      f"working token (python run.py token {name})")
    instruments = InstrumentMaster(config.instruments.master, cache_dir=Path(config.storage.path).parent)
    try:
        count = instruments.load()
    except OSError as exc:  # the config's to fix, like any other key: one line, exit status 2
        raise key_error(config, "instruments.master",
                        f"cannot read {config.instruments.master!r}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise key_error(config, "instruments.master", str(exc)) from None
    log.info("instrument master: %d instruments from %s", count, config.instruments.master)
    copier.instruments = instruments
    timers = copier.timers.start()
    accounts_pool = copier.start_pool(ACCOUNT_THREADS, "accounts")
    copier.sockets = start_sockets(config)
    # A leader's frame is read, stored and routed on one thread, its hub's reader (docs/design.md):
    # a hub of its own, so no follower's socket waits on that.
    copier.leader_sockets = start_sockets(config, "leader-sockets", connectors=1)

    leaders = config.all_leaders
    first_leader = config.leader.name  # forever (GTT) orders are copied from this leader's account
    # shared with actors that walk them while followers are added and removed: iterated over a snapshot
    copier.gateways = SnapshotDict(accounts.gateways)

    record_accounts(store, config)
    names = SnapshotList(f.name for f in config.followers)
    kill_switch_on = threading.Event()
    # Labelled series exist from the start (metrics.create_series below, once the actor kinds are
    # known), so Prometheus' increase() sees their first event.
    metrics.DEAD_LETTERS.set(store.dead_letters.unresolved_count())
    for name in [*(leader.name for leader in leaders), *names]:
        metrics.FEED_CONNECTED.labels(name).set(0)
    sizing_address = Address("sizing")
    limiters: SnapshotDict = SnapshotDict()
    # Order actors read a leader's order again when two of its updates are ambiguous: through
    # that leader's own limiter, so those reads stay inside its account's data-API rate.
    leader_limiters = {leader.name: RateLimiter(copier.gateways[leader.name],
                                                order_limits=config.rate_limits.order_windows(),
                                                data_limits=config.rate_limits.data_windows(), workers=2,
                                                max_attempts=config.broker.max_attempts,
                                                threads=copier.broker_threads) for leader in leaders}
    router_address = Address("router")
    kill_switch_address = Address("kill_switch")
    quotes = Quotes(QuoteBoard(config.quotes.cache_seconds), Address("quotes"))
    # An order without a price waits for one only when something uses its value.
    price_needed = config.copy.check_capital or any(
        f.risk.max_order_value is not None or f.risk.max_capital_share_per_instrument is not None
        or f.sizing.strategy == "risk_based" for f in config.followers)
    tokens_address = Address("tokens")
    feed_addresses = {leader.name: Address(f"feed:{leader.name}") for leader in leaders}
    suspended = dict(accounts.paused)  # sizing's, shared so that it outlives a restart of sizing
    configured_tokens = {name: t.configured for name, t in accounts.tokens.items()}  # the token actor's
    roster = copier.roster = Roster(config, store, names, copier.gateways, limiters, configured_tokens, suspended,
                                    sizing_address, router_address, copier.alerts,
                                    config_path=config_path or config_file(config),
                                    prepare=prepare_follower or (lambda follower: follower),
                                    read=read_config or load)

    def auth_refused(account: str, detail: str) -> None:
        tokens_address.tell(AuthRefused(account, detail))

    ctx = CopierContext(
        store=store, instruments=instruments, followers=names, sizing=sizing_address, limiters=limiters,
        leader_limiters=leader_limiters, timers=timers,
        policy=CopyPolicy(max_modifications=config.copy.max_modifications, lag_alert_seconds=config.copy.lag_alert_seconds,
                          flatten_naked_legs=config.copy.flatten_naked_legs,
                          replace_after_modification_cap=config.copy.replace_after_modification_cap,
                          price_needed=price_needed, market_fill_wait_seconds=config.copy.market_fill_wait_seconds,
                          unknown_settle_seconds=config.broker.timeout_seconds,
                          unknown_alert_seconds=config.copy.unknown_alert_seconds,
                          placement_attempts=config.broker.max_attempts, max_delay_seconds=config.copy.max_delay_seconds,
                          slice_above_freeze_limit=config.copy.slice_above_freeze_limit,
                          super_order_poll_seconds=config.copy.super_order_poll_seconds,
                          leg_window_seconds=config.copy.leg_window_seconds,
                          buy_first_wait_seconds=config.copy.buy_first_wait_seconds),
        alert=copier.alerts,
        # built here, at start-up, so that no order waits for it; never when not enforced
        calendar=MarketCalendar().load() if config.market_hours.enforce else None,
        copying_enabled=lambda: "kill_switch_on" if kill_switch_on.is_set() else None,
        on_broker_failure=lambda follower, reason: report_broker_failure(kill_switch_address, follower, reason),
        on_auth_failure=auth_refused,
        forever_trigger=lambda update, leader: (triggered_forever(store, copier.gateways[leader], update)
                                                if leader == first_leader else None),
        follows=roster.follows,
        clock=clock or calendar_now,
        quotes=quotes,
        freeze=FreezeLimits({(segment, name): qty for segment, name, qty in config.freeze_limits}),
        leg_order=roster.leg_order,
    )

    def escalate(escalation: Escalated) -> None:
        copier.escalation = escalation
        copier.alerts("critical", "escalated", f"supervisor gave up on {escalation.child_id}: {escalation.error}")
        if on_escalate:
            on_escalate(escalation)
        copier.stopped.set()

    top = Address("copier")

    def follower_children(f: FollowerConfig, gateway: DhanGateway) -> tuple[ChildSpec, ChildSpec]:
        """A follower's rate limiter (made and registered here) and feed: at start, and when added."""
        limiters[f.name] = RateLimiter(gateway, order_limits=config.rate_limits.order_windows(),
                                       data_limits=config.rate_limits.data_windows(),
                                       max_attempts=config.broker.max_attempts, margin_check=config.copy.margin_check,
                                       threads=copier.broker_threads)
        feed_addresses[f.name] = Address(f"feed:{f.name}")
        return (ChildSpec(f"limiter:{f.name}",
                          lambda a: accounts_pool.spawn(RateLimiterActor(a, top, limiters[f.name], timers,
                                                                         sizing=sizing_address)),
                          kind="rate_limiter", address=Address(f"limiter:{f.name}")),
                feed_spec(f))

    def feed_spec(acc) -> ChildSpec:  # noqa: ANN001 - the leader's AccountConfig or a FollowerConfig
        make_feed = leader_feed if leader_feed is not None and is_leader(acc.name) else FeedActor
        pool = copier.leader_feed_pool(acc.name) if is_leader(acc.name) else accounts_pool
        return ChildSpec(f"feed:{acc.name}", lambda a: pool.spawn(make_feed(
            a, top, account=acc.name, url=acc.order_update_url, gateway=copier.gateways[acc.name],
            store=store, router=router_address, timers=timers,
            sockets=copier.leader_sockets if is_leader(acc.name) else copier.sockets,
            runs_on_reader=is_leader(acc.name),
            copy_existing_on_first_start=config.copy.copy_existing_on_first_start,
            max_frame_bytes=config.feed.max_frame_bytes, alert=copier.alerts, on_auth_failure=auth_refused,
            follower_gateways=({n: copier.gateways[n] for n in names if roster.follows(n, acc.name)}
                               if is_leader(acc.name) else None))),
            kind="feed", address=feed_addresses[acc.name])

    follower_specs = [follower_children(f, copier.gateways[f.name]) for f in config.followers]
    roster.children = follower_children
    # Each incarnation of sizing starts from the followers as they are now, with operators' stored
    # pauses and sizing over the config's.
    # A pool of its own: its one thread never waits behind order actors, and an order actor's ask
    # finding it idle is answered on the order actor's own thread (supervisors/pool.py).
    sizing_pool = copier.start_pool(1, "sizing")
    specs: list[ChildSpec] = [ChildSpec("sizing", lambda a: sizing_pool.spawn(SizingActor(
        a, top, dict(roster.rules),
        copier.gateways, refresh_seconds=config.copy.funds_refresh_seconds, check_capital=config.copy.check_capital,
        leg_window_seconds=config.copy.leg_window_seconds, limits={n: f.risk for n, f in roster.configs.items()},
        on_daily_loss=lambda follower, detail: engage(kill_switch_address, f"daily loss limit of {follower}: {detail}",
                                                      "risk"),
        filters={n: f.filters for n, f in roster.configs.items()}, suspended=suspended, first_funds=accounts.funds,
        copy_windows={n: f.copy_window for n, f in roster.configs.items() if f.copy_window}, clock=ctx.clock,
        timers=timers, paused=roster.paused(), leader_rules=roster.leader_rules, ledger=ctx.ledger,
        exit_reading_seconds=config.copy.exit_reading_seconds, answer_wait_seconds=config.broker.timeout_seconds,
        router=router_address)),
        kind="sizing", address=sizing_address),
        ChildSpec("quotes", lambda a: QuoteActor.start(a, top, quotes.board, copier.gateways, timers=timers,
                                                       requests_per_second=config.quotes.requests_per_second),
                  kind="quotes", address=quotes.actor)]
    specs.extend(limiter for limiter, _feed in follower_specs)
    specs.extend(ChildSpec(f"limiter:{account}",
                           lambda a, limiter=limiter: accounts_pool.spawn(RateLimiterActor(a, top, limiter, timers)),
                           kind="rate_limiter") for account, limiter in leader_limiters.items())
    # A pool of its own, as sizing's: a leader's feed hands its updates' routing to its own thread
    # when the router is idle (supervisors/pool.py), and the router's thread runs the rest.
    router_pool = copier.start_pool(1, "router")
    specs.append(ChildSpec("router", lambda a: router_pool.spawn(OrderRouter(
        a, top, ctx, sweep_seconds=config.copy.sweep_seconds)), kind="router", address=router_address))
    broker_switches = ([copier.gateways[n].kill_switch for n in names]
                       if config.kill_switch.activate_broker else [])
    specs.append(ChildSpec("forever", lambda a: ForeverActor.start(
        a, top, store=store, leader=copier.gateways[first_leader], followers=roster.followers_of(first_leader),
        limiters=limiters,
        sizing=sizing_address, instruments=instruments, timers=timers, poll_seconds=config.copy.forever_poll_seconds),
        kind="forever"))
    specs.append(ChildSpec("reconciler", lambda a: ReconcilerActor.start(
        a, top, store, copier.gateways, names, router_address, copier.alerts, timers,
        interval_seconds=config.reconcile.interval_seconds, repair=config.reconcile.repair,
        resize=resize_by_rule(roster.rule_for, instruments),
        fill_grace_seconds=fill_grace(config.copy.lag_alert_seconds), follows=roster.follows), kind="reconciler"))
    specs.append(ChildSpec("kill_switch", lambda a: KillSwitchActor.start(
        a, top, store, router_address, copier.alerts, timers, broker_switches,
        on_change=lambda on: kill_switch_on.set() if on else kill_switch_on.clear(),
        after_failures=config.kill_switch.after_failures, failure_window=config.kill_switch.failure_window_seconds,
        on_engaged=on_kill_switch_engaged or (lambda state: None)),
        kind="kill_switch",
        address=kill_switch_address))
    square_off_address = Address("square_off")
    specs.append(ChildSpec("square_off", lambda a: SquareOffActor.start(
        a, top, store, copier.gateways, limiters, router_address, copier.alerts, timers,
        settle_seconds=config.broker.timeout_seconds, max_attempts=config.broker.max_attempts), kind="square_off",
        address=square_off_address))
    specs.append(ChildSpec("control", lambda a: FollowerControlActor.start(
        a, top, store, roster, sizing_address, router_address, square_off_address, timers, alert=copier.alerts),
        kind="control"))
    specs.append(ChildSpec("tokens", lambda a: TokenActor.start(
        a, top, copier.gateways, sizing_address, copier.alerts, config.tokens.renew_seconds,
        config.tokens.leader_renew_seconds, timers=timers, token_file=accounts.token_file,
        configured=configured_tokens,
        paused=dict(suspended),  # a restarted token actor goes on trying the accounts sizing still skips
        feeds=feed_addresses), kind="tokens", address=tokens_address))
    specs.extend(feed for _limiter, feed in follower_specs)
    specs.extend(feed_spec(leader) for leader in leaders)

    kinds = {spec.kind for spec in specs} | {"order"}

    def metric_series(followers: list[str]) -> None:
        metrics.create_series([leader.name for leader in leaders], followers, kinds,
                              order_events=[e.value for e in OrderEvent], error_codes=CODES,
                              failure_reasons=FAILURE_REASONS, price_sources=(QUOTE, LEADER_FILL, NONE))

    metric_series(list(names))
    roster.metric_series = lambda follower: metric_series([follower])
    supervisor_ref = Supervisor.start("copier", specs, address=top, max_restarts=5, period=30.0,
                                      on_restart=lambda kind, error: metrics.ACTOR_RESTARTS.labels(kind).inc(),
                                      on_escalate=escalate,
                                      on_dead_letter=lambda child_id, message, exc: park_input(
                                          store, copier.alerts, child_id, message, exc))
    top.bind(supervisor_ref)
    copier.addresses = supervisor_ref.proxy().start_children().get(timeout=30)
    copier._ref = supervisor_ref
    roster.supervisor = supervisor_ref.proxy
    # What start-up built lives as long as the process: out of the collector's walk; and copying
    # makes no reference cycles, so the collector is only a safety net (docs/design.md).
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    metrics.UP.set(1)
    # Running is not copying: nothing is copied while storage cannot record it.
    copier._unwatch = store.watch_health(lambda healthy: metrics.READY.set(1 if healthy else 0))
    metrics.READY.set(1 if store.healthy else 0)
    return copier
