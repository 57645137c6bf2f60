"""The command line: `run` (the default) starts the copier; the other commands inspect or steer it."""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import TYPE_CHECKING, Callable, Sequence

from copier.accounts import START_REFUSED_EXIT, StartRefused, prepare_accounts
from copier.config import Config, ConfigError, load
from observability import metrics
from observability.logs import register_secret, setup as setup_logging

if TYPE_CHECKING:
    from copier.tree import Copier
    from storage import Store
    from storage.identity import StorageIdentity

log = logging.getLogger("copytrader")


def build_parser() -> argparse.ArgumentParser:
    from app import __version__

    # prog: run.py or dhan-copytrader (the console script), whichever the user typed
    parser = argparse.ArgumentParser(description="Copy a leader Dhan account's orders to followers.")
    parser.add_argument("--version", action="version", version=f"dhan-copytrader {__version__}")
    parser.add_argument("--config", default="config.yaml",
                        help="config file (default: config.yaml); relative paths in it are relative to its folder")
    parser.add_argument("--shard", metavar="K|feed",
                        help="with `shards: N` in the config: run (or inspect) the leader feed process ('feed') or "
                             "follower shard K (0 to N-1); see the README's Follower shards")
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="run the copier in the foreground (the default)")
    run.add_argument("--no-view", action="store_true", help="plain log lines even in a terminal")
    run.add_argument("--no-bot", action="store_true", help="paper mode: do not start the demo leader")
    from app import commands

    commands.register(sub)
    from app import token_command

    token_command.register(sub)
    from app import follower_commands

    follower_commands.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command not in (None, "run"):
            from app.shard_commands import dispatch

            return dispatch(args)
        config = load(args.config)
        if config.shards or args.shard is not None:
            return run_role(config, args.shard, view=not getattr(args, "no_view", False))
        return run(config, view=not getattr(args, "no_view", False),
                   bot=None if not getattr(args, "no_bot", False) else False)
    except ConfigError as exc:  # whatever command: one line naming the key, exit status 2
        print(f"config error: {exc}", file=sys.stderr)
        return START_REFUSED_EXIT


def run_role(config: Config, shard: str | None, *, view: bool = True) -> int:
    """Shard mode: run the one process `--shard` names (copier/shards.py)."""
    if not config.shards:
        raise ConfigError("--shard: the config has no `shards` key: the copier runs as one process")
    from copier import shards

    if shard is None:
        print(f"shards: {config.shards} in {config.source or 'the config'}: each process is started with --shard: "
              f"the leader feed with --shard feed, the followers' shards with --shard 0 to --shard {config.shards - 1} "
              "(see the README's Follower shards)", file=sys.stderr)
        return START_REFUSED_EXIT
    role = shards.parse_role(shard, config)
    own = shards.role_config(config, role)
    return run(own, view=view, bot=False, start=lambda cfg, store, **kw: shards.start_role(config, role, cfg, store, **kw),
               claim=lambda store: _claim_shard(store, config, role))


def _claim_shard(store: "Store", config: Config, role: object) -> str | None:
    """Why `role` may not use its storage: copies open there of followers now given to another shard."""
    from copier import shards

    if role == shards.FEED:
        return None
    moved = shards.moved_followers(store, config, int(role))  # type: ignore[call-overload]
    if not moved:
        return None
    names = ", ".join(f"{name} (now shard {k})" if k >= 0 else name for name, k in sorted(moved.items()))
    return (f"shard {role}'s storage holds open copies of followers the config gives another shard: {names}. "
            "Nothing would follow those copies: move followers only when they have no open copies (after the "
            "close), or pin them back with followers[].shard")


def run(config: Config, *, view: bool = True, bot: bool | None = None, start: "Callable[..., Copier] | None" = None,
        claim: "Callable[[Store], str | None] | None" = None) -> int:
    """Start the copier and wait for a signal. Exit status: 0 stopped by a signal; 1 stopped by a
    failure while running (storage lost, the supervisor gave up); START_REFUSED_EXIT (2) refused to
    start: storage in use by another copier, unusable or made for another exchange, an account the
    broker refuses or cannot reach. A ConfigError (something the config names cannot be used, the
    metrics port say) stops what was started before it propagates to main(), which names the key."""
    from app.startup import open_store, serve_metrics
    from storage import StorageUnavailable, identity
    from storage.lock import StorageInUse
    from copier.tree import start_copier

    for token in config.secrets():
        register_secret(token)
    interactive = view and sys.stdout.isatty()
    setup_logging(config.logging.level, json_lines=None if not interactive else False)
    if config.allow_insecure:
        log.warning("allow_insecure is set: %s", "; ".join(f"{k}: {why}" for k, why in config.insecure_settings().items())
                    or "nothing insecure is configured now; remove it to keep it so")
    done = threading.Event()
    lost: list[str] = []  # why the database file is gone, when it is

    def storage_lost(reason: str) -> None:
        lost.append(reason)
        done.set()

    try:
        # exclusive: one copier per database, and one that takes writes before anything starts
        store = open_store(config, retry_seconds=config.storage.retry_seconds,
                           on_retry=lambda exc: metrics.STORAGE_RETRIES.inc(),
                           on_health=lambda healthy: metrics.STORAGE_HEALTHY.set(1 if healthy else 0),
                           exclusive=True, on_lost=storage_lost)
    except (StorageInUse, StorageUnavailable) as exc:
        print(f"storage error: {exc}", file=sys.stderr)
        return START_REFUSED_EXIT
    # Storage of another exchange or leader is refused at once; a live run records itself as the
    # storage's owner only once the brokers accepted its accounts, so a start refused for a
    # mistyped URL does not leave the storage recorded as that URL's.
    if not _claimed(store, config, check_only=config.mode == "live"):
        return START_REFUSED_EXIT
    refusal = claim(store) if claim else None
    if refusal:
        store.close()
        print(f"storage error: {refusal}", file=sys.stderr)
        return START_REFUSED_EXIT
    metrics.STORAGE_HEALTHY.set(1)
    try:
        port = serve_metrics(config)
    except ConfigError:
        store.close()
        raise
    log.info("metrics on http://%s:%d/metrics", config.metrics.host, port)
    from app.commands import METRICS_URL_SETTING

    store.settings.set(METRICS_URL_SETTING, f"http://{config.metrics.host}:{port}/metrics")
    paper = None
    if config.mode == "paper":
        from app.paper_mode import start_paper

        paper = start_paper(config, bot=bot)
        config = paper.config
        identity.record(store, storage_identity(config))  # the URLs of this run's exchange
    try:
        accounts = prepare_accounts(config)  # nothing is copied before every account is checked
    except StartRefused as exc:
        print(f"refused to start: {exc}", file=sys.stderr)
        store.close()
        if paper:
            paper.stop()
        return START_REFUSED_EXIT
    if config.mode == "live" and not _claimed(store, config):
        return START_REFUSED_EXIT
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    reload_wanted = threading.Event()  # SIGHUP: followers added and removed as the config file says now
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, lambda *_: reload_wanted.set())
    try:
        if start is not None:  # a process of shard mode (live only: no paper exchange)
            copier = start(config, store, on_escalate=lambda e: done.set(), accounts=accounts)
        else:
            copier = start_copier(config, store, on_escalate=lambda e: done.set(), accounts=accounts,
                                  prepare_follower=paper.open_account if paper else None)
    except ConfigError:  # nothing started yet but the paper exchange: stop it, main() says why
        if paper:
            paper.stop()
        store.close()
        raise
    log.info("copier running: %s -> %s", ", ".join(f"{a.label} {a.client_id}" for a in config.all_leaders),
             ", ".join(f.name for f in config.followers))
    live = None
    if interactive:
        from app.live_view import LiveView

        live = LiveView(store, config, metrics_url=store.settings.get(METRICS_URL_SETTING) or "",
                        followers=copier.roster.followers if copier.roster else None).start()
    while not done.wait(0.5):
        if reload_wanted.is_set():  # queued like `run.py reload`: the copier's control actor does it
            reload_wanted.clear()
            log.info("SIGHUP: reloading the followers of %s", config.source or "the config file")
            store.requests.submit({"action": "reload"}, "signal SIGHUP")
    if lost and copier.alerts:
        copier.alerts("critical", "storage_lost", f"{lost[0]}: the copier stopped, as nothing it did could be "
                      "recorded any more. Started again on an empty database, it adopts its copies at the brokers")
    log.info("stopping")
    if live:
        live.stop()
    copier.stop()
    if paper:
        paper.stop()
    store.close()
    if copier.alerts:
        for channel in copier.alerts.channels:  # let queued alerts (the storage_lost one) go out
            flush = getattr(channel, "flush", None)
            if flush:
                flush(5.0)
    if lost:
        print(f"stopped: storage lost: {lost[0]}", file=sys.stderr)
        return 1
    if copier.escalation:
        print(f"stopped: {copier.escalation.child_id} kept crashing: {copier.escalation.error}", file=sys.stderr)
        return 1
    return 0


def storage_identity(config: Config) -> "StorageIdentity":
    """The exchange and accounts `config` trades, as storage records them."""
    from storage.identity import Account, StorageIdentity

    # further leaders are recorded beside the followers, by their account names (leader:NAME)
    return StorageIdentity(config.mode, Account(config.leader.client_id, config.leader.api_base_url),
                           {a.name: Account(a.client_id, a.api_base_url)
                            for a in [*config.leaders[1:], *config.followers]})


def _claimed(store: "Store", config: Config, check_only: bool = False) -> bool:
    """`_claim_storage` (`check_only`: its refusal only, nothing recorded), or False (the store
    closed, the refusal printed) when the storage is another's."""
    from storage import identity

    try:
        if check_only:
            identity.check(store, storage_identity(config), config.storage.path)
        else:
            _claim_storage(store, config)
        return True
    except identity.StorageMismatch as exc:
        store.close()
        print(f"storage error: {exc}", file=sys.stderr)
        return False


def _claim_storage(store: "Store", config: Config) -> None:
    """Storage belongs to one exchange and leader (storage/identity.py). Paper mode starts with empty
    storage, because its exchange starts empty every run; a live run opens only its own."""
    from storage import identity

    if config.mode == "paper":
        identity.start_afresh(store, config.storage.path)
        log.info("paper mode: storage %s starts empty, like the paper exchange", config.storage.path)
    elif identity.claim(store, storage_identity(config), config.storage.path):
        log.info("storage %s did not record its exchange and accounts; recorded them as this config's "
                 "(leader %s)", config.storage.path, config.leader.client_id)
