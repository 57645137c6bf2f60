"""Operator commands in shard mode (`shards: N`).

- `kill-switch on|off` reaches every shard, wherever it runs: it is published on the stream's
  control subject, and each shard writes it into its own storage (actors/stream_control.py); a
  shard that is down applies it when it starts.
- `status` without `--shard` asks the stream server: each shard's consumer (reading or not, what it
  has not acknowledged yet), the kill switch as last published.
- `orders`, `replay`, `reconcile`, `dlq list` and `reload` without `--shard` run once per shard, over each
  shard's storage found on this machine, under a heading naming the shard and its followers; a
  shard whose storage is elsewhere is named on stderr (run the command there, with `--shard K`).
- `token NAME` stores a follower's token with its shard, the leader's with every process whose
  storage is on this machine (app/token_command.py).
- With `--shard K` (or `feed`), every command reads that process's storage, as it reads the one
  copier's; `dlq retry|drop ID` needs it: a dead letter's id is its shard's own.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from copier.config import Config, ConfigError, load

CONNECT_WAIT = 5.0
EVERY_SHARD = ("orders", "replay", "reconcile", "dlq", "reload")  # run once per shard on this machine


def dispatch(args: argparse.Namespace) -> int:
    """Run an operator command: once per shard when it is a view of every shard and `--shard` is not
    given (shard mode only), otherwise as it is."""
    if getattr(args, "shard", None) is None and args.command in EVERY_SHARD:
        config = load(args.config)
        if config.shards:
            if args.command == "dlq" and args.action != "list":
                raise ConfigError(f"--shard: a dead letter's id is its shard's own: give --shard K with dlq "
                                  f"{args.action} (dlq list shows each shard's)")
            return every_shard(args, config)
    return args.handler(args)


def every_shard(args: argparse.Namespace, config: Config) -> int:
    """`args.handler` once per shard whose storage is on this machine; the worst exit status (1 when a
    shard's storage is not here)."""
    from copier import shards

    assigned = shards.assignment(config)
    worst = 0
    for k in range(config.shards):
        names = ", ".join(sorted(name for name, shard in assigned.items() if shard == k))
        path = Path(shards.role_storage_path(config.storage.path, k))
        if not path.exists():
            print(f"shard {k}: its storage is not on this machine ({path}): run this command on shard {k}'s "
                  f"machine with --shard {k}", file=sys.stderr)
            worst = max(worst, 1)
            continue
        print(f"== shard {k} ({names})", flush=True)
        worst = max(worst, args.handler(argparse.Namespace(**{**vars(args), "shard": str(k)})))
        sys.stdout.flush()
    return worst


def role_config(args: argparse.Namespace, config: Config) -> Config:
    """The config of the process `--shard` names (the config itself outside shard mode)."""
    if not config.shards:
        if getattr(args, "shard", None) is not None:
            raise ConfigError("--shard: the config has no `shards` key: the copier runs as one process")
        return config
    from copier import shards

    if getattr(args, "shard", None) is None:
        raise ConfigError(f"--shard: with shards: {config.shards}, `{args.command}` reads one process's storage: "
                          f"give --shard feed (the leader feed) or --shard K (0-{config.shards - 1})")
    return shards.role_config(config, shards.parse_role(args.shard, config))


def _stream(config: Config):  # -> JetStream | None
    from copier import shards

    stream = shards.connect(config, "copytrader-operator")
    if stream.wait_connected(CONNECT_WAIT):
        return stream
    stream.close()
    from streams import redact_url

    print(f"the stream server at {redact_url(config.stream.url)} cannot be reached (is nats-server running? "
          "see the README's Follower shards)", file=sys.stderr)
    return None


def kill_switch(config: Config, on: bool, reason: str) -> int:
    from copier import shards
    from streams import StreamUnavailable
    from streams.wire import encode_kill_switch
    from actors.stream_control import kill_switch_message_id
    from trading.kill_switch import KillSwitchState

    stream = _stream(config)
    if stream is None:
        return 1
    try:
        state = KillSwitchState(on=on, reason=reason, by="operator", at=time.time())
        stream.publish(stream.subject(shards.KILL_SWITCH_SUBJECT), encode_kill_switch(state),
                       kill_switch_message_id(state))
    except StreamUnavailable as exc:
        print(f"kill switch not changed: {exc}", file=sys.stderr)
        return 1
    finally:
        stream.close()
    print(f"kill switch {'ON' if on else 'off'}: {reason} (published to all {config.shards} shards; each running "
          "shard applies it within a second, a stopped one when it starts)")
    return 0


def status(config: Config) -> int:
    from copier import shards
    from streams import StreamUnavailable, redact_url
    from streams.wire import BadStreamMessage, decode_kill_switch

    stream = _stream(config)
    if stream is None:
        return 1
    try:
        consumers = {c.name: c for c in stream.consumer_states()}
        last = stream.last_sequence()
        data = stream.last(stream.subject(shards.KILL_SWITCH_SUBJECT))
    except StreamUnavailable as exc:
        print(f"status: {exc}", file=sys.stderr)
        return 1
    finally:
        stream.close()
    print(f"stream {shards.stream_name(config)} on {redact_url(config.stream.url)}: {last} messages stored")
    try:
        state = decode_kill_switch(data) if data else None
    except BadStreamMessage:
        state = None
    print("kill switch: " + (f"ON ({state.by}: {state.reason})" if state and state.on else "off"))
    assigned = shards.assignment(config)
    for k in range(config.shards):
        names = sorted(name for name, shard in assigned.items() if shard == k)
        consumer = consumers.get(shards.consumer_name(k))
        if consumer is None:
            reading = "never started"
        else:
            reading = (f"{'reading' if consumer.waiting else 'not reading'}, {consumer.pending} updates not yet "
                       f"delivered, {consumer.unacknowledged} unacknowledged")
        print(f"shard {k}: {len(names)} followers ({', '.join(names)}): {reading}")
    print("(each process's own state: status --shard feed, status --shard K)")
    return 0
