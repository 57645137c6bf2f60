"""The command line: `run` (the default) starts the copier; the other commands inspect or steer it."""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Sequence

from app import metrics
from app.config import Config, ConfigError, load
from app.logs import register_secret, setup as setup_logging

log = logging.getLogger("copytrader")


def build_parser() -> argparse.ArgumentParser:
    from app import __version__

    # prog: run.py or dhan-copytrader (the console script), whichever the user typed
    parser = argparse.ArgumentParser(description="Copy a leader Dhan account's orders to followers.")
    parser.add_argument("--version", action="version", version=f"dhan-copytrader {__version__}")
    parser.add_argument("--config", default="config.yaml",
                        help="config file (default: config.yaml); relative paths in it are relative to its folder")
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="run the copier in the foreground (the default)")
    run.add_argument("--no-view", action="store_true", help="plain log lines even in a terminal")
    run.add_argument("--no-bot", action="store_true", help="paper mode: do not start the demo leader")
    from app import commands

    commands.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command not in (None, "run"):
            return args.handler(args)
        config = load(args.config)
        return run(config, view=not getattr(args, "no_view", False),
                   bot=None if not getattr(args, "no_bot", False) else False)
    except ConfigError as exc:  # whatever command: one line naming the key, exit status 2
        print(f"config error: {exc}", file=sys.stderr)
        return 2


def run(config: Config, *, view: bool = True, bot: bool | None = None) -> int:
    """Start the copier and wait for a signal. A ConfigError (something the config names cannot be
    used) stops what was started before it propagates; the metrics endpoint's daemon thread ends
    with the process."""
    from app.startup import open_store, serve_metrics
    from supervisors.tree import start_copier

    for token in config.tokens():
        register_secret(token)
    interactive = view and sys.stdout.isatty()
    setup_logging(config.log_level, json_lines=None if not interactive else False)
    if config.allow_insecure:
        log.warning("allow_insecure is set: %s", "; ".join(f"{k}: {why}" for k, why in config.insecure_settings().items())
                    or "nothing insecure is configured now; remove it to keep it so")
    store = open_store(config, retry_seconds=config.storage_retry_seconds,
                       on_retry=lambda exc: metrics.STORAGE_RETRIES.inc(),
                       on_health=lambda healthy: metrics.STORAGE_HEALTHY.set(1 if healthy else 0))
    metrics.STORAGE_HEALTHY.set(1)
    try:
        port = serve_metrics(config)
    except ConfigError:
        store.close()
        raise
    log.info("metrics on http://%s:%d/metrics", config.metrics_host, port)
    from app.commands import METRICS_URL_SETTING

    store.set_setting(METRICS_URL_SETTING, f"http://{config.metrics_host}:{port}/metrics")
    paper = None
    if config.mode == "paper":
        from app.paper_mode import start_paper

        paper = start_paper(config, bot=bot)
        config = paper.config
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    try:
        copier = start_copier(config, store, on_escalate=lambda e: done.set())
    except ConfigError:  # nothing started yet but the paper exchange: stop it, main() says why
        if paper:
            paper.stop()
        store.close()
        raise
    log.info("copier running: leader %s -> %s", config.leader.client_id,
             ", ".join(f.name for f in config.followers))
    live = None
    if interactive:
        from app.live_view import LiveView

        live = LiveView(store, config, metrics_url=store.get_setting(METRICS_URL_SETTING) or "").start()
    while not done.wait(0.5):
        pass
    log.info("stopping")
    if live:
        live.stop()
    copier.stop()
    if paper:
        paper.stop()
    store.close()
    if copier.escalation:
        print(f"stopped: {copier.escalation.child_id} kept crashing: {copier.escalation.error}", file=sys.stderr)
        return 1
    return 0
