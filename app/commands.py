"""Operator commands (subcommands of run.py). Each reads storage safely while the copier runs
(SQLite in WAL mode lets readers in beside the copier's writer). A problem with the config or
what it names raises ConfigError: run.py prints one line and exits 2."""
from __future__ import annotations

import argparse
import json
import sys

from copier.config import Config, load


METRICS_URL_SETTING = "metrics_url"


def register(sub: argparse._SubParsersAction) -> None:
    status = sub.add_parser("status", help="accounts, connections, open orders, kill switch, dead letters")
    status.set_defaults(handler=cmd_status)
    kill = sub.add_parser("kill-switch", help="turn the kill switch on (no new copies, open ones cancelled) or off")
    kill.add_argument("state", choices=["on", "off"])
    kill.add_argument("--reason", default="operator command")
    kill.set_defaults(handler=cmd_kill_switch)
    dlq = sub.add_parser("dlq", help="the dead-letter queue: copies the broker refused, messages that kept "
                                     "crashing the actor handling them")
    dlq.add_argument("action", choices=["list", "retry", "drop"])
    dlq.add_argument("id", nargs="?", type=int, help="dead letter id (retry, drop)")
    dlq.set_defaults(handler=cmd_dlq)
    rec = sub.add_parser("reconcile", help="compare the broker's books with storage and print every divergence")
    rec.set_defaults(handler=cmd_reconcile)
    replay = sub.add_parser("replay", help="rebuild a leader order and its copies from their event log")
    replay.add_argument("order_id", help="leader order id")
    replay.set_defaults(handler=cmd_replay)
    orders = sub.add_parser("orders", help="leader orders beside their follower copies")
    orders.add_argument("--limit", type=int, default=30)
    orders.add_argument("--follower", help="only this follower's copies")
    orders.set_defaults(handler=cmd_orders)


def open_config(args: argparse.Namespace):
    """(config, store) of the config file the command names (in shard mode: of the process `--shard` names)."""
    from app.shard_commands import role_config
    from app.startup import open_store

    config = role_config(args, load(args.config))
    return config, open_store(config)


def _open_store(args: argparse.Namespace):
    return open_config(args)[1]


def replay_order(store, order_id: str) -> tuple[bool, list[str]]:
    """Fold the stored events of a leader order and its copies; (matches stored state, report lines)."""
    from storage.orders import copy_key
    from trading.replay import (comparable_copy, fold_copy_events, fold_leader, stored_copy_state,
                                stored_leader_state)

    lines: list[str] = []
    leader = store.leader_order(order_id)
    if leader is None:
        return False, [f"no leader order {order_id} in storage"]
    events = [(e.kind, json.loads(e.payload)) for e in store.order_events(f"L:{order_id}")]
    lines.append(f"leader order {order_id}")
    lines += [f"  {i + 1:>3} {kind:<18} {p.get('status', '')} filled={p.get('filled_qty', '')}"
              for i, (kind, p) in enumerate(events)]
    ok = fold_leader(events, order_id) == stored_leader_state(leader)
    lines.append(f"  rebuilt state matches stored state: {'yes' if ok else 'NO'}")
    for row in store.follower_orders(order_id):
        copy_events = [(e.kind, json.loads(e.payload))
                       for e in store.order_events(copy_key(order_id, row.follower, row.part))]
        slice_of = f" slice {row.part + 1}" if row.part else ""
        lines.append(f"copy for {row.follower}{slice_of} ({row.correlation_id}, broker order {row.broker_order_id})")
        lines += [f"  {i + 1:>3} {kind:<24}" for i, (kind, _p) in enumerate(copy_events)]
        fold = fold_copy_events(copy_events, order_id, row.follower)
        lines += [f"  refused by the state machine: {why}" for why in fold.refused]
        same = comparable_copy(fold.state) == stored_copy_state(row)
        lines.append(f"  rebuilt state matches stored state: {'yes' if same else 'NO'}")
        ok = ok and same
    return ok, lines


def cmd_replay(args: argparse.Namespace) -> int:
    store = _open_store(args)
    ok, lines = replay_order(store, args.order_id)
    print("\n".join(lines))
    return 0 if ok else 1


def cmd_orders(args: argparse.Namespace) -> int:
    from storage.copies import by_follower, copy_quantity, copy_status
    from trading.leader import leader_label

    config, store = open_config(args)
    if args.follower:
        known = {f.name for f in config.followers} | store.copies.followers()
        if args.follower not in known:
            print(f"orders: no follower named {args.follower!r} (followers: {', '.join(sorted(known))})",
                  file=sys.stderr)
            return 2

    print(f"{'leader order':<16} {'symbol':<28} {'side':<4} {'qty':>6} status")
    print(f"    {'follower':<10} {'qty':>6} {'status':<18} broker order or skip reason")
    for lo, copies in store.copies.recent(args.limit, args.follower):
        whose = f" ({leader_label(lo.account)})" if len(config.all_leaders) > 1 else ""
        print(f"{lo.order_id:<16} {lo.symbol or lo.security_id:<28} {lo.side:<4} {lo.quantity:>6} {lo.status}{whose}")
        for follower, slices in by_follower(copies).items():
            if len(slices) == 1:
                row = slices[0]
                detail = row.skip_reason or row.broker_order_id or ""
                if row.super_order and not row.skip_reason:  # a super order's exit legs at the broker
                    detail += f" target {row.target_leg or '-'} stop-loss {row.stop_loss_leg or '-'}"
                print(f"    {row.follower:<10} {row.quantity:>6} {row.status:<18} {detail}")
                continue
            # a copy above the freeze quantity: its line, then one per slice under it
            print(f"    {follower:<10} {copy_quantity(slices):>6} {copy_status(slices):<18} {len(slices)} slices")
            for row in slices:
                detail = row.skip_reason or row.broker_order_id or ""
                print(f"      {'slice ' + str(row.part + 1):<8} {row.quantity:>6} {row.status:<18} {detail}")
    return 0


def _live_metrics(store) -> dict[str, float] | None:
    """The running copier's metrics (None when it does not answer): the process, not storage,
    knows whether its sockets are connected."""
    import urllib.request

    url = store.settings.get(METRICS_URL_SETTING)
    if not url:
        return None
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            text = answer.read().decode()
    except OSError:
        return None
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                values[name] = float(value)
            except ValueError:
                continue
    return values


def cmd_status(args: argparse.Namespace) -> int:
    from actors.follower_control import pause_detail
    from copier.accounts import recorded_accounts
    from trading.leader import is_leader

    full = load(args.config)
    if full.shards and args.shard is None:  # the shards as the stream server sees them
        from app import shard_commands

        return shard_commands.status(full)
    config, store = open_config(args)
    live = _live_metrics(store)
    url = store.settings.get(METRICS_URL_SETTING)
    print(f"copier: {'running' if live is not None else 'not running'}" + (f" (metrics {url})" if url else ""))
    running = recorded_accounts(store) if live is not None else {}  # paper mode may make client ids up
    accounts = [(a.name, running.get(a.name, {}).get("client_id") or a.client_id)
                for a in [*config.all_leaders, *config.followers]]
    open_orders = store.copies.open_orders(f.name for f in config.followers)
    states = store.followers.states()
    for name, client_id in accounts:
        if live is None:
            socket = "unknown"
        else:
            socket = "connected" if live.get(f'copytrader_feed_connected{{account="{name}"}}') == 1 else "disconnected"
        count = open_orders.leaders.get(name, 0) if is_leader(name) else open_orders.followers[name]
        state = states.get(name)
        paused = f"  PAUSED ({pause_detail(state)})" if state is not None and state.paused else ""
        print(f"{name:<12} {client_id:<12} socket {socket:<12} open orders {count}{paused}")
    state = store.settings.kill_switch()
    print("kill switch: " + (f"ON since {_when(state.at)} ({state.by}: {state.reason})" if state.on else "off"))
    print(f"dead letters: {store.dead_letters.unresolved_count()} unresolved")
    last = store.divergences.last_run()
    print(f"last reconcile: {last or 'never'}")
    return 0


def _when(epoch: float) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def cmd_kill_switch(args: argparse.Namespace) -> int:
    full = load(args.config)
    if full.shards:  # every shard, through the stream
        from app import shard_commands

        return shard_commands.kill_switch(full, args.state == "on", args.reason)
    store = _open_store(args)
    state = store.settings.set_kill_switch(args.state == "on", args.reason, "operator")
    print(f"kill switch {'ON' if state.on else 'off'}: {state.reason} "
          "(a running copier applies it within a second)")
    return 0


def cmd_dlq(args: argparse.Namespace) -> int:
    store = _open_store(args)
    if args.action == "list":
        rows = store.dead_letters.unresolved()
        if not rows:
            print("the dead-letter queue is empty")
        for row in rows:
            pending = " (retry requested)" if row.next_retry_at else ""
            if row.operation == "inbox_event":
                order = f", leader order {row.leader_order_id}" if row.leader_order_id else ""
                print(f"{row.id:>5} {_when(row.at)} inbox event {row.event_id} from {row.follower}{order}: "
                      f"{row.reason} (parked: retry routes it again){pending}")
            elif row.operation == "socket_frame":
                print(f"{row.id:>5} {_when(row.at)} socket frame on {row.follower}'s socket: {row.reason} "
                      f"(parked: {(row.payload or '')[:80]!r})")
            else:
                print(f"{row.id:>5} {_when(row.at)} {row.follower:<10} leader order {row.leader_order_id:<16} "
                      f"{row.operation} {row.error_code}: {row.reason}{pending}")
        return 0
    if args.id is None:
        print(f"dlq {args.action}: give the dead letter's id (see: dlq list)", file=sys.stderr)
        return 2
    row = store.dead_letters.unresolved_one(args.id)
    if row is None:
        print(f"no unresolved dead letter {args.id}", file=sys.stderr)
        return 1
    if args.action == "retry" and row.operation == "socket_frame":
        print(f"dead letter {args.id} is a socket frame the copier could not handle: nothing can replay it "
              "(the order book is read again after every reconnect); drop it", file=sys.stderr)
        return 2
    if args.action == "retry":
        copy = store.copies.copy_of(row.leader_order_id, row.follower)
        if copy is not None and copy.status == "UNKNOWN":  # it may be live at the broker: never placed twice
            print(f"dead letter {args.id}: not retried: the outcome of {row.follower}'s copy of leader order "
                  f"{row.leader_order_id} is unknown (it may exist at the broker) and is being looked up",
                  file=sys.stderr)
            return 1
        store.dead_letters.request_retry(args.id)
        again = "routes the event" if row.operation == "inbox_event" else "places it"
        print(f"dead letter {args.id}: retry requested; a running copier {again} again within its sweep")
    else:
        store.dead_letters.drop(args.id)
        print(f"dead letter {args.id}: dropped")
    return 0


def copier_running(store) -> bool:
    """Whether a copier runs on this storage now (its metrics endpoint answers that it is up)."""
    live = _live_metrics(store)
    return live is not None and live.get("copytrader_up") == 1


def _reconcile_in_running_copier(store, config: Config) -> tuple[list, str] | None:
    """Ask the running copier's reconciler for a report (see actors/reconciler.py); None if it does
    not answer in time."""
    import time
    import uuid

    from actors.reconciler import REPORT_SETTING, REQUEST_SETTING, read_report

    request = uuid.uuid4().hex
    store.settings.set(REQUEST_SETTING, request)
    deadline = time.monotonic() + 10 + config.broker.timeout_seconds * (1 + len(config.followers))
    while time.monotonic() < deadline:
        report = read_report(store.settings.get(REPORT_SETTING), request)
        if report is not None:
            return report
        time.sleep(0.1)
    return None


def _reconcile_here(store, config: Config) -> tuple[list, str]:
    """Reconcile from this process with the config's accounts (live mode, no copier running)."""
    from pathlib import Path

    from actors.reconciler import fill_grace, position_check, reconcile_once, resize_by_rule
    from observability.logs import register_secret
    from broker.gateway import DhanGateway
    from trading.instruments import InstrumentMaster

    for token in config.secrets():
        register_secret(token)
    gateways = {a.name: DhanGateway(a.name, a.client_id, a.access_token, a.api_base_url, config.broker.timeout_seconds)
                for a in [*config.all_leaders, *config.followers]}
    instruments = InstrumentMaster(config.instruments.master, cache_dir=Path(config.storage.path).parent)
    try:
        instruments.load()
        configs = {f.name: f for f in config.followers}
        resize = resize_by_rule(lambda follower, leader: configs[follower].rule_for(leader) if follower in configs
                                else None, instruments)
    except (OSError, ValueError) as exc:  # without lot sizes, a copy sized for a stale leader quantity is still reported
        print(f"instrument master unavailable ({exc}); copies are not re-sized by their rules", file=sys.stderr)
        resize = None
    followers = [f.name for f in config.followers]
    try:
        divergences, leaders, books = reconcile_once(store, gateways, followers, resize,
                                                     fill_grace(config.copy.lag_alert_seconds))
        # (no copier runs: no copy is on its way that the books would not show, so no second round)
        by_name = {f.name: f for f in config.followers}
        try:
            divergences += position_check(gateways, followers, lambda name, leader: by_name[name].follows(leader),
                                          leaders, books, None)[0]
        except RuntimeError as exc:
            print(f"followers' positions not checked: {exc}", file=sys.stderr)
        return divergences, ""
    except RuntimeError as exc:
        return [], str(exc)


def cmd_reconcile(args: argparse.Namespace) -> int:
    """Report only: repairs are the running copier's (its reconciler, when reconcile.repair is on).
    A running copier is asked for the report, so it compares the very accounts and URLs it trades
    on; in paper mode nothing else can (the paper exchange and its tokens live in that process)."""
    config, store = open_config(args)
    if copier_running(store):
        report = _reconcile_in_running_copier(store, config)
        if report is None:
            print("reconcile failed: the running copier did not answer (is its reconciler stuck? see its log)",
                  file=sys.stderr)
            return 1
    elif config.mode == "paper":
        print("reconcile: no copier is running. In paper mode the paper exchange lives inside the copier: "
              "start it (python run.py) and run reconcile again", file=sys.stderr)
        return 1
    else:
        report = _reconcile_here(store, config)
    divergences, error = report
    if error:
        print(f"reconcile failed: {error}", file=sys.stderr)
        return 1
    print(f"{len(divergences)} divergences")
    for d in divergences:
        print(f"  {d.kind:<26} leader order {d.leader_order_id or '-':<16} {d.follower or '-':<10} {d.detail}")
    return 0 if not divergences else 3
