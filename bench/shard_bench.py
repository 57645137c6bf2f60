"""Follower shards: copies/s and latency to the last follower with 1, 2 and 4 shards.

Each run starts, every one in a process of its own: a fresh nats-server (JetStream, storage in a
temp folder), the paper exchange (no rate limits, no price walk), the leader feed process
(`run.py --shard feed`) and the shards (`run.py --shard K`), on one config of `--followers`
followers with `shards: N`; then the leader places `--rate` resting LIMIT orders a second for
`--seconds` seconds through the official `dhanhq` client, from a process of its own. A few
warm-up orders are copied first and are not counted.

Figures, per run:
- latency to the first and the last follower of each leader order, p50/p99: `latency_ms` as each
  shard stores it, from the feed process receiving the leader's update on its socket to the shard
  sending the placement (the stream hop included; one machine, so one clock);
- copies/s while the leader places (copies sent by the end of the leader's run / its duration),
  the backlog left then, and copies/s over the whole run (every copy / time until the last sent);
- the sum of the copier processes' resident memory and threads at the end, and the load average
  before and after (the machine may be shared: the figures are only as steady as it is).

The paper exchange and the leader stand for Dhan's servers and the leader's terminal, which do not
share the copier's CPU: they run at a higher priority (nice -10, when the bench may set it), or the
copier's thousand-odd threads per process starve the exchange's three and the figures measure that.

    python bench/shard_bench.py [--shards 1 2 4] [--followers 200 400] [--rate 10] [--seconds 5]

`--shards 0` runs the copier as one process (no stream, no feed process), for comparison.

Needs nats-server (Debian's package; /usr/sbin is searched too) and nats-py. Exit status is non-zero
only on errors (something did not start, nothing copied); a run whose copies are not all sent
within --timeout seconds after the leader's last order is reported as INCOMPLETE.
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dhanhq import DhanContext, dhanhq  # noqa: E402

from actors.feed import BASELINE_SETTING  # noqa: E402
from bench.replication_bench import INSTRUMENTS, BenchError, start_nats, stop_process  # noqa: E402
from copier.shards import FEED, role_storage_path  # noqa: E402
from storage import readonly  # noqa: E402

WARMUP_ORDERS = 3


def favoured() -> None:
    """Run ahead of the copier's threads (see the module's docstring); as is where not allowed."""
    try:
        os.nice(-10)
    except OSError:
        pass


# -- the parties ------------------------------------------------------------------------------------
@dataclass
class Exchange:
    proc: subprocess.Popen[str]
    urls: dict[str, str]
    accounts: list[tuple[str, str]]

    def control(self, name: str, **kwargs: Any) -> Any:
        request = urllib.request.Request(f"{self.urls['CONTROL']}/{name}", data=json.dumps(kwargs).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.loads(answer.read())["result"]

    def sockets(self) -> int:
        with urllib.request.urlopen(self.urls["CONTROL"], timeout=10) as answer:
            return int(json.loads(answer.read())["sockets"])


def start_exchange(accounts: int, workdir: Path) -> Exchange:
    err = open(workdir / "paper.stderr", "w")
    proc = subprocess.Popen([sys.executable, "-m", "paper", "--port", "0", "--ws-port", "0", "--unlimited",
                             "--no-price-walk", "--accounts", str(accounts), "--funds", "1e10", "--session", "open"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True, preexec_fn=favoured)
    urls: dict[str, str] = {}
    creds: list[tuple[str, str]] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            word, *rest = line.split() or [""]
            if word in ("REST", "WS", "CONTROL"):
                urls[word] = rest[0]
            elif word == "ACCOUNT":
                creds.append((rest[0], rest[1]))
            elif word == "READY":
                ready.set()
        ready.set()

    threading.Thread(target=read, name="paper-stdout", daemon=True).start()
    if not ready.wait(60) or "CONTROL" not in urls:
        proc.kill()
        raise BenchError(f"paper exchange did not start: {(workdir / 'paper.stderr').read_text()[-500:]}")
    return Exchange(proc, urls, creds)


def place_orders(rest_url: str, client_id: str, token: str, prices: dict[str, float], first: int, count: int,
                 interval: float, out: Any) -> None:
    """The leader's terminal, in a child process: `count` resting LIMIT orders `interval` s apart."""
    favoured()
    context = DhanContext(client_id, token)
    http = context.get_dhan_http()
    http.base_url, http.timeout = rest_url, 5
    client = dhanhq(context)
    placed: list[str] = []
    start = time.perf_counter()
    for i in range(count):
        delay = start + i * interval - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        n = first + i
        security_id = INSTRUMENTS[n % len(INSTRUMENTS)]
        side = "BUY" if (n // len(INSTRUMENTS)) % 2 == 0 else "SELL"
        price = round(round(prices[security_id] * (0.95 if side == "BUY" else 1.05) / 0.05) * 0.05, 2)
        answer = client.place_order(security_id=security_id, exchange_segment="NSE_EQ", transaction_type=side,
                                    quantity=1, order_type="LIMIT", product_type="INTRADAY", price=price)
        if answer.get("status") == "success":
            placed.append(str(answer["data"]["orderId"]))
    out.put((placed, time.perf_counter() - start))


def leader_places(exchange: Exchange, prices: dict[str, float], first: int, count: int,
                  interval: float) -> tuple[list[str], float]:
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    leader_id, token = exchange.accounts[0]
    child = context.Process(target=place_orders, name="leader", daemon=True,
                            args=(exchange.urls["REST"], leader_id, token, prices, first, count, interval, out))
    child.start()
    try:
        return out.get(timeout=60 + count * interval * 2)
    except queue.Empty:
        raise BenchError("the leader process placed nothing within its time") from None
    finally:
        child.join(10)


# -- reading the results ------------------------------------------------------------------------------
def latencies(dbs: list[Path], order_ids: list[str]) -> dict[str, list[float]]:
    """leader order -> latency_ms of each of its copies sent so far, over every shard."""
    out: dict[str, list[float]] = {}
    for db in dbs:
        for order_id, _follower, latency in readonly.copy_latencies(db, order_ids):
            out.setdefault(order_id, []).append(latency)
    return out


def sent(dbs: list[Path], order_ids: list[str]) -> int:
    return sum(len(v) for v in latencies(dbs, order_ids).values())


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)] if ordered else float("nan")


def proc_status(pid: int) -> tuple[float, int]:
    """(resident MB, threads) of a running process."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["Threads"])


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# -- one run --------------------------------------------------------------------------------------------
def run(shards: int, followers: int, rate: float, seconds: float, timeout: float) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="shard-bench-"))
    load_before = loadavg()
    keep = False
    procs: list[subprocess.Popen[Any]] = []
    nats, nats_url = start_nats(workdir)
    exchange = start_exchange(followers + 1, workdir)
    try:
        (leader_id, leader_token), *creds = exchange.accounts
        rest, ws = exchange.urls["REST"], exchange.urls["WS"]
        config = {
            "mode": "live", **({"shards": shards, "stream": {"url": nats_url}} if shards else {}),
            "leader": {"client_id": leader_id, "access_token": leader_token, "api_base_url": rest,
                       "order_update_url": ws},
            "followers": [{"name": f"f{i + 1}", "client_id": cid, "access_token": token, "api_base_url": rest,
                           "order_update_url": ws, "sizing": {"strategy": "fixed_ratio", "ratio": 1}}
                          for i, (cid, token) in enumerate(creds)],
            "instruments": {"master": str(ROOT / "paper" / "data" / "instruments.csv")},
            "market_hours": {"enforce": False},
            "storage": {"path": str(workdir / "copytrader.db")},
            "metrics": {"port": 0},
            "rate_limits": {"orders_per_second": 1000, "orders_per_minute": 60_000, "orders_per_hour": 1_000_000,
                            "orders_per_day": 10_000_000, "data_per_second": 1000},
            "copy": {"lag_alert_seconds": 0},
            "reconcile": {"interval_seconds": 0},
            "logging": {"level": "WARNING"},
        }
        path = workdir / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        roles = [FEED, *map(str, range(shards))] if shards else ["single"]
        started = time.monotonic()
        for role in roles:
            log = open(workdir / f"{role}.log", "w")
            shard = ["--shard", role] if shards else []
            procs.append(subprocess.Popen([sys.executable, "run.py", "--config", str(path), *shard, "run", "--no-view"],
                                          cwd=ROOT, stdout=log, stderr=log))
        if shards:
            dbs = [Path(role_storage_path(str(workdir / "copytrader.db"), int(role))) for role in roles[1:]]
            feed: list[Path] = [Path(role_storage_path(str(workdir / "copytrader.db"), FEED))]
        else:  # the one copier process, for comparison
            dbs, feed = [workdir / "copytrader.db"], []
        deadline = time.monotonic() + 60 + followers * 0.5
        while not (all(readonly.setting(db, BASELINE_SETTING) for db in [*feed, *dbs])
                   and exchange.sockets() >= 1 + followers):
            dead = [role for role, proc in zip(roles, procs) if proc.poll() is not None]
            if dead or time.monotonic() > deadline:
                tail = (workdir / f"{(dead or roles)[0]}.log").read_text()[-1500:]
                raise BenchError(f"{'process ' + dead[0] + ' ended' if dead else 'not ready in time'}: {tail}")
            time.sleep(0.2)
        start_up = time.monotonic() - started

        prices = {sid: float(exchange.control("price", security_id=sid)) for sid in INSTRUMENTS}
        warm, _ = leader_places(exchange, prices, 0, WARMUP_ORDERS, 0.1)
        deadline = time.monotonic() + 120
        while sent(dbs, warm) < len(warm) * followers:
            if time.monotonic() > deadline:
                raise BenchError(f"warm-up copies missing: {sent(dbs, warm)} of {len(warm) * followers}")
            time.sleep(0.2)

        count = max(1, round(rate * seconds))
        begun = time.monotonic()
        placed, placing = leader_places(exchange, prices, WARMUP_ORDERS, count, 1 / rate)
        at_end = sent(dbs, placed)
        expected = len(placed) * followers
        deadline = time.monotonic() + timeout
        while (done := sent(dbs, placed)) < expected and time.monotonic() < deadline:
            time.sleep(0.25)
        finished = time.monotonic() - begun
        got = latencies(dbs, placed)
        memory = [proc_status(p.pid) for p in procs if p.poll() is None]
        complete = [v for k, v in got.items() if len(v) == followers]
        per_shard = [sent([db], placed) for db in dbs]
        if done < expected:  # kept for a look: each process's log and storage
            keep = True
        return {
            "per_shard": per_shard, "workdir": str(workdir) if done < expected else "",
            "shards": shards, "followers": followers, "leader_orders": len(placed), "copies": done,
            "expected": expected, "complete": done == expected, "start_up_s": start_up,
            "leader_s": placing, "during_per_s": at_end / placing if placing else 0.0,
            "backlog_at_end": expected - at_end, "overall_per_s": done / finished, "finished_s": finished,
            "first_p50": percentile([min(v) for v in complete], 50), "first_p99": percentile([min(v) for v in complete], 99),
            "last_p50": percentile([max(v) for v in complete], 50), "last_p99": percentile([max(v) for v in complete], 99),
            "rss_mb": sum(m for m, _ in memory), "threads": sum(t for _, t in memory),
            "load_before": load_before, "load_after": loadavg(),
        }
    finally:
        for proc in procs:
            stop_process(proc)
        stop_process(exchange.proc)
        stop_process(nats)
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--followers", type=int, nargs="+", default=[200, 400])
    parser.add_argument("--rate", type=float, default=10.0, help="leader orders per second (Dhan's cap: 10)")
    parser.add_argument("--seconds", type=float, default=5.0, help="how long the leader places")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the backlog after that")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, load average {loadavg()}; leader at {args.rate:g} orders/s for "
          f"{args.seconds:g} s; latency from the feed process's receipt to the shard's request, ms")
    print(f"{'shards':>6} {'followers':>9} {'copies':>13} {'/s during':>9} {'backlog':>7} {'/s overall':>10} "
          f"{'first p50/p99':>15} {'last p50/p99':>17} {'rss MB':>7} {'threads':>7} {'start s':>7}  load before -> after")
    failed = False
    for followers in args.followers:
        for shards in args.shards:
            try:
                r = run(shards, followers, args.rate, args.seconds, args.timeout)
            except BenchError as exc:
                print(f"{shards:>6} {followers:>9} ERROR {exc}")
                failed = True
                continue
            note = "" if r["complete"] else (f"  INCOMPLETE: copies sent by shard {r['per_shard']}; logs and "
                                             f"storage kept in {r['workdir']}")
            print(f"{shards:>6} {followers:>9} {r['copies']:>6}/{r['expected']:<6} {r['during_per_s']:>9.0f} "
                  f"{r['backlog_at_end']:>7} {r['overall_per_s']:>10.0f} "
                  f"{r['first_p50']:>7.0f}/{r['first_p99']:<7.0f} {r['last_p50']:>8.0f}/{r['last_p99']:<8.0f} "
                  f"{r['rss_mb']:>7.0f} {r['threads']:>7} {r['start_up_s']:>7.1f}  {r['load_before']} -> "
                  f"{r['load_after']}{note}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
