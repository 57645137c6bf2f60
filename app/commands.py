"""Operator commands (subcommands of run.py). Each reads storage safely while the copier runs
(SQLite in WAL mode lets readers in beside the copier's writer)."""
from __future__ import annotations

import argparse
import json
import sys

from app.config import ConfigError, load


def register(sub: argparse._SubParsersAction) -> None:
    replay = sub.add_parser("replay", help="rebuild a leader order and its copies from their event log")
    replay.add_argument("order_id", help="leader order id")
    replay.set_defaults(handler=cmd_replay)
    orders = sub.add_parser("orders", help="leader orders beside their follower copies")
    orders.add_argument("--limit", type=int, default=30)
    orders.add_argument("--follower", help="only this follower's copies")
    orders.set_defaults(handler=cmd_orders)


def _open_store(args: argparse.Namespace):
    from storage import Store

    try:
        config = load(args.config)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        raise SystemExit(2)
    return Store(config.storage_path)


def replay_order(store, order_id: str) -> tuple[bool, list[str]]:
    """Fold the stored events of a leader order and its copies; (matches stored state, report lines)."""
    from trading.replay import fold_copy, fold_leader, stored_copy_state, stored_leader_state

    lines: list[str] = []
    leader = store.leader_order(order_id)
    if leader is None:
        return False, [f"no leader order {order_id} in storage"]
    events = [(e.kind, json.loads(e.payload)) for e in store.order_events(f"L:{order_id}")]
    lines.append(f"leader order {order_id}")
    lines += [f"  {i + 1:>3} {kind:<18} {p.get('status', '')} filled={p.get('filled_qty', '')}"
              for i, (kind, p) in enumerate(events)]
    ok = fold_leader(events) == stored_leader_state(leader)
    lines.append(f"  rebuilt state matches stored state: {'yes' if ok else 'NO'}")
    for row in store.follower_orders(order_id):
        copy_events = [(e.kind, json.loads(e.payload)) for e in store.order_events(f"F:{row.correlation_id}")]
        lines.append(f"copy for {row.follower} ({row.correlation_id}, broker order {row.broker_order_id})")
        lines += [f"  {i + 1:>3} {kind:<24}" for i, (kind, _p) in enumerate(copy_events)]
        same = fold_copy(copy_events) == stored_copy_state(row)
        lines.append(f"  rebuilt state matches stored state: {'yes' if same else 'NO'}")
        ok = ok and same
    return ok, lines


def cmd_replay(args: argparse.Namespace) -> int:
    store = _open_store(args)
    ok, lines = replay_order(store, args.order_id)
    print("\n".join(lines))
    return 0 if ok else 1


def cmd_orders(args: argparse.Namespace) -> int:
    from storage import models as m

    store = _open_store(args)

    def query():
        leaders = list(m.LeaderOrder.select().order_by(m.LeaderOrder.first_seen_at.desc()).limit(args.limit))
        copies = m.FollowerOrder.select().where(m.FollowerOrder.leader_order_id.in_([lo.order_id for lo in leaders]))
        if args.follower:
            copies = copies.where(m.FollowerOrder.follower == args.follower)
        by_leader: dict[str, list] = {}
        for row in copies:
            by_leader.setdefault(row.leader_order_id, []).append(row)
        return leaders, by_leader

    leaders, by_leader = store.read(query)
    for lo in leaders:
        print(f"{lo.order_id:<16} {lo.symbol or lo.security_id:<28} {lo.side:<4} {lo.quantity:>6} {lo.status}")
        for row in by_leader.get(lo.order_id, []):
            detail = row.skip_reason or row.broker_order_id or ""
            print(f"    {row.follower:<10} {row.quantity:>6} {row.status:<18} {detail}")
    return 0
