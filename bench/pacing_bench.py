"""Copy latency with a leader at the broker's own pace, for a minute: does it stay flat?

A Dhan account may place 10 orders a second, so a leader at full pace and a follower held to the
same 10 a second leave the copier no spare capacity: any margin its rate limiter keeps is paid on
every order, and the lag grows for as long as the leader keeps going. This bench runs exactly
that: the paper exchange (its own process) enforces 10 order calls a second per account, the
copier's follower limit is 10 a second, and the leader (a process of its own, the official
`dhanhq` client) places a resting LIMIT order every 100 ms on its own clock for --seconds
seconds; the exchange does not limit the leader, so every one of its orders is accepted and its
followers get exactly 10 a second to copy, with the socket's jitter. The minute,
hour and day windows are raised on both sides so that only the per-second limit is in play.

It prints, per --slice seconds of the leader's run, the p50 / p99 / max latency from the leader
order's event reaching the copier to the follower's placement request being sent, the DH-904
(rate limited) answers the follower received, and whether every copy arrived.

    python bench/pacing_bench.py [--seconds 60] [--followers 1] [--slice 10]
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from actors.feed import BASELINE_SETTING  # noqa: E402
from copier.config import parse  # noqa: E402
from bench.replication_bench import INSTRUMENTS, BenchError, Leader, percentile, start_exchange  # noqa: E402
from storage import Store  # noqa: E402
from copier.tree import start_copier  # noqa: E402

PER_SECOND = 10


def latencies_by_order(db_path: str, order_ids: list[str]) -> dict[str, list[float]]:
    """leader order id -> the stored latency (ms) of each of its copies."""
    from storage import readonly

    out: dict[str, list[float]] = {}
    for order_id, _follower, latency in readonly.copy_latencies(db_path, order_ids):
        out.setdefault(order_id, []).append(latency)
    return out


def wait_copies(db_path: str, order_ids: list[str], copies: int, timeout: float) -> dict[str, list[float]]:
    """latencies_by_order, once `copies` latencies are stored or `timeout` seconds passed."""
    deadline = time.monotonic() + timeout
    while True:
        got = latencies_by_order(db_path, order_ids)
        if sum(len(v) for v in got.values()) >= copies or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def run(seconds: float, followers: int, slice_seconds: float, rate: float) -> int:
    workdir = tempfile.mkdtemp(prefix="pacing-bench-")
    exchange = start_exchange(followers + 1, workdir,
                              limits=("--orders-per-second", str(PER_SECOND), "--orders-per-minute", "0"))
    copier = store = None
    try:
        (leader_id, leader_token), *creds = exchange.accounts
        names = [f"f{i + 1}" for i in range(followers)]
        raw: dict[str, Any] = {
            "mode": "live",
            "leader": {"client_id": leader_id, "access_token": leader_token,
                       "api_base_url": exchange.rest_url, "order_update_url": exchange.ws_url},
            "followers": [{"name": name, "client_id": cid, "access_token": token,
                           "api_base_url": exchange.rest_url, "order_update_url": exchange.ws_url,
                           "sizing": {"strategy": "fixed_ratio", "ratio": 1}}
                          for name, (cid, token) in zip(names, creds)],
            "instruments": {"master": str(ROOT / "paper" / "data" / "instruments.csv")},
            "market_hours": {"enforce": False},
            "storage": {"path": os.path.join(workdir, "copytrader.db")},
            "metrics": {"port": 0},
            "rate_limits": {"orders_per_second": PER_SECOND, "orders_per_minute": 100_000,
                            "orders_per_hour": 1_000_000, "orders_per_day": 10_000_000},
            "copy": {"lag_alert_seconds": 0},
            "logging": {"level": "WARNING"},
        }
        config = parse(raw, "pacing_bench")
        store = Store(config.storage.path)
        copier = start_copier(config, store)
        deadline = time.monotonic() + 15
        while store.settings.get(BASELINE_SETTING) is None or exchange.state()["sockets"] < 1 + followers:
            if time.monotonic() > deadline:
                raise BenchError("copier did not log in / record its baseline within 15 s")
            time.sleep(0.05)
        exchange.control("rate_limit_exempt", client_id=leader_id)
        prices = {sid: float(exchange.control("price", security_id=sid)) for sid in INSTRUMENTS}
        leader = Leader(exchange.rest_url, leader_id, leader_token, prices, orders="resting")
        interval = 1.0 / rate
        count = int(seconds * rate)
        placed, placing = leader.place(count, interval)  # (a failed placement ends the run: BenchError)
        by_order = wait_copies(config.storage.path, placed, len(placed) * followers, 30)
        copied = sum(len(v) for v in by_order.values())
        print(f"leader: {len(placed)} orders placed in {placing:.1f} s ({len(placed) / placing:.2f}/s)")
        print(f"followers: {followers}, {copied}/{len(placed) * followers} copies sent")
        per_slice = int(slice_seconds * rate)
        print(f"  {'leader seconds':<16} {'copies':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
        firsts: list[float] = []
        lasts: list[float] = []
        for start in range(0, len(placed), per_slice):
            chunk = [v for oid in placed[start:start + per_slice] for v in by_order.get(oid, [])]
            if not chunk:
                continue
            label = f"{start / rate:>4.0f}-{min(start + per_slice, len(placed)) / rate:<4.0f}"
            print(f"  {label:<16} {len(chunk):>7} {percentile(chunk, 50):>8.2f} {percentile(chunk, 99):>8.2f} "
                  f"{max(chunk):>8.2f}")
            firsts = firsts or chunk
            lasts = chunk
        limited = sum(1 for cid, _ in creds for r in exchange.control("request_log", client_id=cid)
                      if r.get("error_code") == "DH-904")
        print(f"  DH-904 answers to the followers: {limited}")
        if firsts and lasts:
            growth = percentile(lasts, 50) - percentile(firsts, 50)
            print(f"  p50 growth, first slice to last: {growth:+.2f} ms")
        return 0 if copied == len(placed) * followers else 1
    finally:
        logging.disable(logging.CRITICAL)
        try:
            if copier is not None:
                copier.stop()
            if store is not None:
                store.close()
            exchange.stop()
        finally:
            logging.disable(logging.NOTSET)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=60.0, help="how long the leader places (default 60)")
    p.add_argument("--followers", type=int, default=1)
    p.add_argument("--slice", type=float, default=10.0, help="seconds of the leader's run per printed row")
    p.add_argument("--rate", type=float, default=PER_SECOND,
                   help=f"leader orders per second (default {PER_SECOND}, the follower's own limit)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    print(f"copy latency with the leader at {args.rate:g} orders/s and follower limits of {PER_SECOND}/s "
          f"({os.cpu_count()} CPUs)")
    try:
        return run(args.seconds, args.followers, args.slice, args.rate)
    except BenchError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
