"""Follower shards (`shards: N`): the copier as N + 1 processes that share one config.

  feed process (--shard feed)   the leader's socket -> its own inbox -> the stream (NATS JetStream)
  shard K (--shard K)           the stream -> its own inbox -> the copier of its followers only

The feed process copies nothing: it reads the leader's socket (and the order book after every
reconnect), stores each update, publishes it (StreamPublisher) and marks it done once the stream
server confirmed it. Each shard is a whole copier over its followers, with its own storage, lock,
metrics port and account checks; its leader feed reads the stream (StreamFeedActor) instead of
the socket, storing each update in its own inbox before acknowledging it. Everything after the
inbox (order actors, correlation ids, lookups of unknown outcomes) is the single copier's, so
exactly once per follower holds per shard as it does in one process. The kill switch travels on
the stream's control subject (StreamControl): an operator command or a shard publishes, every
shard applies it to its own storage.

Which shard copies to a follower: its `shard:` when the config pins one, otherwise rendezvous
hashing of its name (the shard whose hash of (shard, name) is highest). A follower's shard
depends on its name and N only: adding or removing followers moves no other follower, and
raising N moves only the followers the new shards win.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from actors.dead_letters import park_input
from actors.feed import FeedActor
from actors.messages import LEADER, PublishKillSwitch
from actors.stream_control import StreamControl
from actors.stream_feed import StreamFeedActor
from actors.stream_publisher import StreamPublisher
from copier.accounts import Accounts, record_accounts
from copier.config import Config, ConfigError, FollowerConfig, key_error, load
from copier.tree import Copier, alert_channels, start_copier, start_sockets
from observability import metrics
from observability.alerts import Alerts
from storage import Store, StorageUnavailable
from supervisors import Address, ChildSpec, Escalated, Supervisor

if TYPE_CHECKING:
    from streams.jetstream import JetStream

log = logging.getLogger(__name__)

FEED = "feed"
Role = str | int  # FEED, or a shard's number


# -- who copies to whom -------------------------------------------------------------------------------
def rendezvous(name: str, shards: int) -> int:
    """The shard of `name` among `shards`: the highest hash of (shard, name) wins."""
    return max(range(shards), key=lambda k: hashlib.sha256(f"{k}/{name}".encode()).digest())


def shard_of(follower: FollowerConfig, shards: int) -> int:
    return follower.shard if follower.shard is not None else rendezvous(follower.name, shards)


def assignment(config: Config) -> dict[str, int]:
    """Follower name -> its shard."""
    return {f.name: shard_of(f, config.shards) for f in config.followers}


def parse_role(value: str, config: Config) -> Role:
    """`--shard` as given: "feed" or a shard number below `shards`."""
    if value == FEED:
        return FEED
    if value.isdigit() and int(value) < config.shards:
        return int(value)
    raise ConfigError(f"--shard: must be 'feed' or a shard number 0-{config.shards - 1} (shards: {config.shards}), "
                      f"got {value!r}")


def role_name(role: Role) -> str:
    return FEED if role == FEED else f"shard {role}"


# -- each process's part of the config --------------------------------------------------------------------
def role_storage_path(storage_path: str, role: Role) -> str:
    """`data/copytrader.db` -> `data/copytrader.feed.db`, `data/copytrader.shard-0.db`, ..."""
    path = Path(storage_path)
    part = FEED if role == FEED else f"shard-{role}"
    return str(path.with_name(f"{path.stem}.{part}{path.suffix}"))


def role_metrics_port(config: Config, role: Role) -> int:
    """The feed process listens on `metrics.port`, shard K on `metrics.port` + 1 + K (0: any free port)."""
    if config.metrics.port == 0:
        return 0
    port = config.metrics.port + (0 if role == FEED else 1 + int(role))
    if port > 65535:
        raise key_error(config, "metrics.port", f"shard {role} would listen on {port}: give a port <= "
                                                f"{65535 - config.shards}")
    return port


def role_config(config: Config, role: Role) -> Config:
    """The config one process runs: its own storage and metrics port, and its followers only (none for
    the feed process)."""
    shards = assignment(config)
    followers = () if role == FEED else tuple(f for f in config.followers if shards[f.name] == role)
    return config.model_copy(update={
        "followers": followers,
        "storage": config.storage.model_copy(update={"path": role_storage_path(config.storage.path, role)}),
        "metrics": config.metrics.model_copy(update={"port": role_metrics_port(config, role)})})


def stream_name(config: Config) -> str:
    return config.stream.name or f"copytrader-{config.leader.client_id}"


LEADER_SUBJECT = "leader"
KILL_SWITCH_SUBJECT = "control.kill_switch"


def consumer_name(shard: int, what: str = "leader") -> str:
    return f"shard-{shard}" if what == "leader" else f"shard-{shard}-{what}"


def connect(config: Config, client_name: str) -> "JetStream":
    """The stream, connecting in the background (the only import of the NATS client)."""
    from streams.jetstream import JetStream

    return JetStream(config.stream.url, stream_name(config), events=[LEADER_SUBJECT], states=[KILL_SWITCH_SUBJECT],
                     max_age_seconds=config.stream.max_age_hours * 3600,
                     client_name=client_name,
                     on_connected=lambda up: metrics.STREAM_CONNECTED.set(1 if up else 0)).start()


def moved_followers(store: Store, config: Config, shard: int) -> dict[str, int]:
    """Followers with open copies in this shard's storage that the config now gives another shard
    (their copies would be followed by no shard): follower -> its shard now."""
    now = assignment(config)
    held = store.copies.followers() - {f.name for f in config.followers if now[f.name] == shard}
    gone = {name for name in held if name not in now}
    counts = store.copies.open_orders(held).followers if held else {}
    return {name: now.get(name, -1) for name in held if counts.get(name) and name not in gone}


# -- the processes --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class ShardCopier(Copier):
    """A copier process of shard mode: also stops its stream connection and its own supervisors."""

    stream: Any = None
    extra: list[Any] = dataclasses.field(default_factory=list)  # supervisors besides the copier's

    def stop(self, timeout: float = 8.0) -> None:
        for ref in self.extra:
            try:
                ref.stop(timeout=timeout)
            except Exception:  # noqa: BLE001 - already stopped
                pass
        self.extra = []
        super().stop(timeout)
        if self.stream is not None:
            self.stream.close()
            self.stream = None
        metrics.STREAM_CONNECTED.set(0)


def start_role(full: Config, role: Role, config: Config, store: Store, *, accounts: Accounts,
               on_escalate: Callable[[Escalated], None] | None = None) -> Copier:
    """Start what `role` runs; `full`: the whole config, `config`: the role's (role_config)."""
    if role == FEED:
        return start_feed(full, config, store, accounts=accounts, on_escalate=on_escalate)
    return start_shard(full, int(role), config, store, accounts=accounts, on_escalate=on_escalate)


def start_feed(full: Config, config: Config, store: Store, *, accounts: Accounts,
               on_escalate: Callable[[Escalated], None] | None = None) -> Copier:
    """The leader feed process: the leader's socket, stored, then published on the stream."""
    copier = ShardCopier(config=config, store=store, gateways=accounts.gateways)
    copier.alerts = Alerts(record=store.alerts.record, cooldown_seconds=config.alerts.cooldown_seconds,
                           channels=alert_channels(config), unrecorded=(StorageUnavailable,))
    copier.stream = connect(full, "copytrader-feed")
    timers = copier.timers.start()
    copier.sockets = start_sockets(config)
    record_accounts(store, config)
    metrics.SHARD_FOLLOWERS.labels(FEED).set(0)
    metrics.FEED_CONNECTED.labels(LEADER).set(0)
    top, publisher = Address("feed_process"), Address("publisher")
    feed_pool = copier.leader_feed_pool(LEADER)
    leader = config.leader

    def auth_refused(account: str, detail: str) -> None:
        copier.alerts("critical", f"auth:{account}",  # type: ignore[misc]
                      f"the leader's token was refused ({detail}): nothing reaches the shards until it works; "
                      "the socket is tried again with a growing delay")

    specs = [
        ChildSpec("publisher", lambda a: StreamPublisher.start(
            a, top, store=store, stream=copier.stream, subject=copier.stream.subject(LEADER_SUBJECT), timers=timers),
            kind="publisher", address=publisher),
        ChildSpec(f"feed:{LEADER}", lambda a: feed_pool.spawn(FeedActor(
            a, top, account=LEADER, url=leader.order_update_url, gateway=accounts.gateways[LEADER], store=store,
            router=publisher, sockets=copier.sockets, timers=timers,
            copy_existing_on_first_start=config.copy.copy_existing_on_first_start,
            max_frame_bytes=config.feed.max_frame_bytes, alert=copier.alerts, on_auth_failure=auth_refused)),
            kind="feed"),
    ]
    metrics.create_series([LEADER], [], {spec.kind for spec in specs})
    _supervise(copier, "feed", top, specs, store, on_escalate)
    return copier


def start_shard(full: Config, shard: int, config: Config, store: Store, *, accounts: Accounts,
                on_escalate: Callable[[Escalated], None] | None = None) -> Copier:
    """Follower shard `shard`: a copier of its followers whose leader feed is the stream."""
    metrics.SHARD_FOLLOWERS.labels(str(shard)).set(len(config.followers))
    stream = connect(full, f"copytrader-shard-{shard}")
    if not config.followers:  # rendezvous hashing gave it none: pin some with followers[].shard
        log.warning("shard %d has no followers (%d shards for %d followers): it copies nothing", shard,
                    full.shards, len(full.followers))
        return ShardCopier(config=config, store=store, stream=stream)
    control = Address("stream_control")
    leader_feed = functools.partial(StreamFeedActor, stream=stream, durable=consumer_name(shard),
                                    subject=stream.subject(LEADER_SUBJECT))
    base = start_copier(config, store, on_escalate=on_escalate, accounts=accounts, leader_feed=leader_feed,
                        on_kill_switch_engaged=lambda state: control.tell(PublishKillSwitch(state)),
                        read_config=lambda path: role_config(load(path), shard))
    copier = ShardCopier(**{f.name: getattr(base, f.name) for f in dataclasses.fields(Copier)}, stream=stream)
    top = Address("shard_control")
    spec = ChildSpec("stream_control", lambda a: StreamControl.start(
        a, top, store=store, stream=stream, durable=consumer_name(shard, "control"),
        subject=stream.subject(KILL_SWITCH_SUBJECT), timers=copier.timers, shard=str(shard)),
        kind="stream_control", address=control)
    metrics.ACTOR_RESTARTS.labels("stream_control")
    copier.extra.append(_supervisor(copier, "shard_control", top, [spec], store, on_escalate))
    return copier


def _supervisor(copier: Copier, name: str, top: Address, specs: list[ChildSpec], store: Store,
                on_escalate: Callable[[Escalated], None] | None) -> Any:
    def escalate(escalation: Escalated) -> None:
        copier.escalation = escalation
        if copier.alerts:
            copier.alerts("critical", "escalated", f"supervisor gave up on {escalation.child_id}: {escalation.error}")
        if on_escalate:
            on_escalate(escalation)
        copier.stopped.set()

    ref = Supervisor.start(name, specs, address=top, max_restarts=5, period=30.0,
                           on_restart=lambda kind, error: metrics.ACTOR_RESTARTS.labels(kind).inc(),
                           on_escalate=escalate,
                           on_dead_letter=lambda child_id, message, exc: park_input(
                               store, copier.alerts, child_id, message, exc))
    top.bind(ref)
    ref.proxy().start_children().get(timeout=30)
    return ref


def _supervise(copier: Copier, name: str, top: Address, specs: list[ChildSpec], store: Store,
               on_escalate: Callable[[Escalated], None] | None) -> None:
    copier._ref = _supervisor(copier, name, top, specs, store, on_escalate)
    metrics.UP.set(1)
    copier._unwatch = store.watch_health(lambda healthy: metrics.READY.set(1 if healthy else 0))
    metrics.READY.set(1 if store.healthy else 0)
