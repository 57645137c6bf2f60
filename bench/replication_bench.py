"""Replication latency: leader order event received -> follower placement request sent.

Issue 3 item 9. Two runs, each against a fresh paper exchange in a SUBPROCESS (so the exchange
does not share the copier's GIL) with the real copier in this process (real actors, real
sockets, real SQLite in a temp dir, rate limits set high enough never to throttle):

  (A) 1 follower                                     targets: p50 <= 3 ms, p99 <= 10 ms
  (B) 10 followers, ONE of them (f1, the first one every order actor serves) answering its
      placements 1 s late (paper fault `delay_answers(1.0, client_id=f1, paths=("POST /orders",))`)
                                                     target: the other nine keep p99 <= 20 ms

The leader places --orders resting LIMIT orders (far from the market, alternating instruments
and sides, --interval ms apart) through the official `dhanhq` client, from a process of its own
(a real leader's terminal does not share the copier's CPU).
The figure is `FollowerOrder.latency_ms` as the copier stores it (the same span the
REPLICATION_LATENCY histogram observes just before the rate limiter's worker sends the
placement), read from the SQLite file. A few warm-up orders are placed and copied first and are
not counted. The default pace is 10 orders/s (100 ms apart), the most a Dhan account may place
since March 2026, so the figures are the latency a real leader sees. A faster pace (e.g.
--interval 5) is a capacity test: once it exceeds what the copier sustains (about 200 copies/s
on 2 cores), the figures are queueing and the run says so.

    python bench/replication_bench.py [--orders 200] [--followers 10] [--interval 100]
                                      [--slow-delay 1] [--timeout 20] [--only A|B]

Exit status is non-zero only on errors (exchange or copier did not start, nothing copied);
a missed target is printed as MISS and still exits 0. Copies still unmeasured --timeout seconds
after the last leader order make a run INCOMPLETE (reported, and its targets MISS).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dhanhq import DhanContext, dhanhq  # noqa: E402

from actors.feed import BASELINE_SETTING  # noqa: E402
from observability import metrics  # noqa: E402
from copier.config import parse  # noqa: E402
from storage import Store, readonly  # noqa: E402
from copier.tree import start_copier  # noqa: E402

INSTRUMENTS = ("2885", "11536", "1594")  # RELIANCE, TCS, INFY (NSE_EQ, lot 1)
WARMUP_ORDERS = 10


class BenchError(RuntimeError):
    pass


# -- the paper exchange, in its own process ------------------------------------------------------
@dataclass
class Exchange:
    proc: subprocess.Popen[str]
    rest_url: str
    ws_url: str
    control_url: str
    accounts: list[tuple[str, str]]
    stderr_path: str

    def control(self, name: str, **kwargs: Any) -> Any:
        req = urllib.request.Request(f"{self.control_url}/{name}", data=json.dumps(kwargs).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())["result"]

    def state(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.control_url, timeout=10) as resp:
            return json.loads(resp.read())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_exchange(accounts: int, funds: float, workdir: str, limits: tuple[str, ...] = ("--unlimited",)) -> Exchange:
    """`limits`: the exchange's rate-limit flags (default: none, so only the copier's own work is measured)."""
    stderr_path = os.path.join(workdir, "paper.stderr")
    cmd = [sys.executable, "-m", "paper", "--port", "0", "--ws-port", "0", *limits, "--no-price-walk",
           "--accounts", str(accounts), "--funds", str(funds), "--session", "open"]
    with open(stderr_path, "w") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
    urls: dict[str, str] = {}
    creds: list[tuple[str, str]] = []
    lines: list[str] = []
    done = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("READY"):
                done.set()
        done.set()  # EOF: the process ended

    threading.Thread(target=read, name="paper-stdout", daemon=True).start()
    if not done.wait(20) or not any(line.startswith("READY") for line in lines):
        proc.kill()
        raise BenchError(f"paper exchange did not start: {''.join(lines)[-500:]} {Path(stderr_path).read_text()[-500:]}")
    for line in lines:
        word, *rest = line.split()
        if word in ("REST", "WS", "CONTROL"):
            urls[word] = rest[0]
        elif word == "ACCOUNT":
            creds.append((rest[0], rest[1]))
    return Exchange(proc, urls["REST"], urls["WS"], urls["CONTROL"], creds, stderr_path)


# -- the leader, as a person with the official client, in a process of its own ---------------------
def leader_client(rest_url: str, client_id: str, token: str) -> dhanhq:
    context = DhanContext(client_id, token)
    http = context.get_dhan_http()
    http.base_url = rest_url
    http.timeout = 5
    return dhanhq(context)


def place_orders(rest_url: str, client_id: str, token: str, prices: dict[str, float], first: int, count: int,
                 interval: float, out: Any) -> None:
    """The leader's own terminal: `count` resting LIMIT orders, `interval` s apart; puts (placed
    order ids, errors, seconds spent placing) on `out`. Runs in a child process: a real leader's
    client does not share the copier's CPU (in-process, its answer parsing competed with the
    fan-out)."""
    client = leader_client(rest_url, client_id, token)
    placed: list[str] = []
    errors: list[str] = []
    start = time.perf_counter()
    for i in range(count):
        delay = start + i * interval - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        n = first + i
        security_id = INSTRUMENTS[n % len(INSTRUMENTS)]
        side = "BUY" if (n // len(INSTRUMENTS)) % 2 == 0 else "SELL"
        ltp = prices[security_id]
        # far from the market (but inside the circuit band) so every order rests
        price = round(round(ltp * (0.95 if side == "BUY" else 1.05) / 0.05) * 0.05, 2)
        try:
            answer = client.place_order(security_id=security_id, exchange_segment="NSE_EQ", transaction_type=side,
                                        quantity=1, order_type="LIMIT", product_type="INTRADAY", price=price)
        except Exception as exc:  # noqa: BLE001 - reported as an error of the run
            errors.append(repr(exc)[:300])
            continue
        if answer.get("status") == "success":
            placed.append(str(answer["data"]["orderId"]))
        else:
            errors.append(str(answer)[:300])
    out.put((placed, errors, time.perf_counter() - start))


@dataclass
class Leader:
    rest_url: str
    client_id: str
    token: str
    prices: dict[str, float]
    placed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    n: int = 0

    def place(self, count: int, interval: float) -> float:
        """Place `count` orders from a child process and wait for it; results in placed/errors.
        Returns the seconds the placing took (without the child's start-up)."""
        context = multiprocessing.get_context("spawn")
        out = context.Queue()
        child = context.Process(target=place_orders, name="leader", daemon=True, args=(
            self.rest_url, self.client_id, self.token, self.prices, self.n, count, interval, out))
        child.start()
        try:
            placed, errors, seconds = out.get(timeout=60 + count * interval * 2)
        except queue.Empty:
            raise BenchError("the leader process placed nothing within its time") from None
        finally:
            child.join(10)
        self.n += count
        self.placed += placed
        self.errors += errors
        return seconds


# -- reading the results ----------------------------------------------------------------------------
def stored_latencies(db_path: str, order_ids: list[str]) -> dict[str, list[float]]:
    """follower -> latency_ms of the copies of `order_ids` that have one (own read-only connection:
    WAL lets it read beside the copier without taking the copier's store lock)."""
    out: dict[str, list[float]] = {}
    for _order_id, follower, latency in readonly.copy_latencies(db_path, order_ids):
        out.setdefault(follower, []).append(latency)
    return out


def copy_problems(db_path: str, order_ids: list[str]) -> list[str]:
    return ([f"{f}: {s} {d}" for f, s, d in readonly.unsent_copies(db_path, order_ids)]
            + [f"skip: {r} {d}" for r, d in readonly.skips(db_path)])


def wait_copies(db_path: str, order_ids: list[str], followers: list[str], timeout: float) -> dict[str, list[float]]:
    deadline = time.monotonic() + timeout
    while True:
        got = stored_latencies(db_path, order_ids)
        if all(len(got.get(f, [])) >= len(order_ids) for f in followers) or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def sent_count(follower: str) -> int:
    """Placements the rate limiter has sent for `follower` (its REPLICATION_LATENCY observations)."""
    for family in metrics.REPLICATION_LATENCY.collect():
        for sample in family.samples:
            if sample.name.endswith("_count") and sample.labels.get("follower") == follower:
                return int(sample.value)
    return 0


# -- one run ------------------------------------------------------------------------------------------
@dataclass
class RunResult:
    title: str
    rows: list[tuple[str, list[float], int]]  # label, latencies (ms), expected count
    checks: list[tuple[str, float, float, bool]]  # description, value, limit, all copies measured
    notes: list[str] = field(default_factory=list)


def run(title: str, followers: int, orders: int, interval: float, slow_delay: float, wait_timeout: float,
        slow_wait: float) -> RunResult:
    slow = slow_delay > 0
    workdir = tempfile.mkdtemp(prefix="replication-bench-")
    funds = 1e10
    exchange = start_exchange(followers + 1, funds, workdir)
    copier = store = None
    try:
        (leader_id, leader_token), *follower_creds = exchange.accounts
        names = [f"f{i + 1}" for i in range(followers)]
        raw: dict[str, Any] = {
            "mode": "live",
            "leader": {"client_id": leader_id, "access_token": leader_token,
                       "api_base_url": exchange.rest_url, "order_update_url": exchange.ws_url},
            "followers": [{"name": name, "client_id": cid, "access_token": token,
                           "api_base_url": exchange.rest_url, "order_update_url": exchange.ws_url,
                           "sizing": {"strategy": "fixed_ratio", "ratio": 1}}
                          for name, (cid, token) in zip(names, follower_creds)],
            "instruments": {"master": str(ROOT / "paper" / "data" / "instruments.csv")},
            "market_hours": {"enforce": False},
            "storage": {"path": os.path.join(workdir, "copytrader.db")},
            "metrics": {"port": 0},
            "rate_limits": {"orders_per_second": 1000, "orders_per_minute": 60_000, "orders_per_hour": 1_000_000,
                            "orders_per_day": 10_000_000, "data_per_second": 1000},
            "copy": {"lag_alert_seconds": 0},
            "logging": {"level": "WARNING"},
        }
        config = parse(raw, "replication_bench")
        store = Store(config.storage.path)
        copier = start_copier(config, store)
        deadline = time.monotonic() + 15
        while store.settings.get(BASELINE_SETTING) is None or exchange.state()["sockets"] < 1 + followers:
            if time.monotonic() > deadline:
                raise BenchError("copier did not log in / record its baseline within 15 s")
            time.sleep(0.05)

        prices = {sid: float(exchange.control("price", security_id=sid)) for sid in INSTRUMENTS}
        leader = Leader(exchange.rest_url, leader_id, leader_token, prices)

        # warm-up (not counted): threads, HTTP keep-alive sessions, SQLite pages, code paths
        leader.place(WARMUP_ORDERS, 0.02)
        warm = list(leader.placed)
        if leader.errors:
            raise BenchError(f"leader placement failed: {leader.errors[0]}")
        got = wait_copies(config.storage.path, warm, names, 20)
        if any(len(got.get(n, [])) < len(warm) for n in names):
            raise BenchError(f"warm-up copies missing: {copy_problems(config.storage.path, warm)}")

        slow_name = names[0] if slow else None
        if slow_name is not None:
            slow_client_id = follower_creds[0][0]
            exchange.control("faults.delay_answers", seconds=slow_delay, client_id=slow_client_id,
                             paths=["POST /orders"])

        sent_before = {n: sent_count(n) for n in names}
        leader.placed.clear()
        placing = leader.place(orders, interval)
        measured = list(leader.placed)
        if leader.errors:
            raise BenchError(f"{len(leader.errors)} leader placements failed, e.g. {leader.errors[0]}")

        fast = [n for n in names if n != slow_name]
        got = wait_copies(config.storage.path, measured, fast, wait_timeout)
        stored = sum(len(got.get(n, [])) for n in fast)
        if stored == 0:
            raise BenchError(f"no copy stored a latency within {wait_timeout:.0f} s: "
                             f"{copy_problems(config.storage.path, measured)}")
        expected = len(measured) * len(fast)
        complete = stored >= expected
        notes = [f"leader placed {len(measured)} orders in {placing:.2f} s "
                 f"({len(measured) / placing:.0f}/s, {interval * 1000:.1f} ms apart), after {len(warm)} "
                 "uncounted warm-up orders"]
        if not complete:
            notes.append(f"INCOMPLETE: only {stored}/{expected} copies had a stored latency {wait_timeout:.0f} s "
                         "after the last leader order (the copier fell behind); the figures cover those only")
        rows: list[tuple[str, list[float], int]] = []
        checks: list[tuple[str, float, float]] = []
        lat = [v for n in fast for v in got.get(n, [])]
        if slow_name is None:
            rows.append((f"{len(fast)} follower" + ("s" if len(fast) > 1 else ""), lat, expected))
            if len(fast) > 1:
                worst = max(fast, key=lambda n: percentile(got.get(n) or [0.0], 99))
                rows.append((f"  worst single ({worst})", got.get(worst, []), len(measured)))
            if len(fast) == 1:
                checks += [("p50 <= 3 ms", percentile(lat, 50), 3.0, complete),
                           ("p99 <= 10 ms", percentile(lat, 99), 10.0, complete)]
            else:
                checks.append((f"all {len(fast)}: p99 <= 20 ms", percentile(lat, 99), 20.0, complete))
        else:
            rows.append((f"the other {len(fast)} (pooled)", lat, expected))
            worst = max(fast, key=lambda n: percentile(got.get(n) or [0.0], 99))
            rows.append((f"  worst single ({worst})", got.get(worst, []), len(measured)))
            checks.append((f"the other {len(fast)}: p99 <= 20 ms", percentile(lat, 99), 20.0, complete))
            got = wait_copies(config.storage.path, measured, [slow_name], slow_wait)
            slow_lat = got.get(slow_name, [])
            rows.append((f"slow one ({slow_name}, answers +{slow_delay:g} s)", slow_lat, len(measured)))
            sent = sent_count(slow_name) - sent_before[slow_name]
            notes.append(f"slow one: {sent}/{len(measured)} placements sent, {len(slow_lat)} answered and stored "
                         f"by the end of the run (its answers arrive {slow_delay:g} s late; its latency is to the "
                         "request being sent, so it shows only queueing behind its own broker workers)")
        return RunResult(title, rows, checks, notes)
    finally:
        # Resting orders keep their order actors alive; stopping them (and the in-flight slow
        # answers) logs noise that is not part of the figures.
        logging.disable(logging.CRITICAL)
        try:
            if copier is not None:
                copier.stop()
            if store is not None:
                store.close()
            exchange.stop()
        finally:
            logging.disable(logging.NOTSET)


def report(result: RunResult) -> None:
    print(f"\n{result.title}")
    print(f"  {'followers':<34} {'count':>11} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for label, lat, expected in result.rows:
        if lat:
            print(f"  {label:<34} {len(lat):>5}/{expected:<5} {percentile(lat, 50):>8.2f} "
                  f"{percentile(lat, 99):>8.2f} {max(lat):>8.2f}")
        else:
            print(f"  {label:<34} {0:>5}/{expected:<5} {'-':>8} {'-':>8} {'-':>8}")
    for note in result.notes:
        print(f"  ({note})")
    for description, value, limit, complete in result.checks:
        verdict = "PASS" if value <= limit and complete else "MISS"
        print(f"  {verdict}  {description}: {value:.2f} ms" + ("" if complete else " (incomplete)"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--orders", type=int, default=200, help="leader orders per run (default 200)")
    p.add_argument("--followers", type=int, default=10, help="followers in run B, one of them slow (default 10)")
    p.add_argument("--interval", type=float, default=100.0,
                   help="ms between leader placements (default 100: 10 orders/s, the most a Dhan account "
                        "may place; use e.g. 5 to measure how many copies/s the copier can sustain)")
    p.add_argument("--slow-delay", type=float, default=1.0,
                   help="seconds f1's placement answers are delayed in run B (0: no slow follower)")
    p.add_argument("--timeout", type=float, default=20.0,
                   help="seconds after the last leader order to wait for the copies (default 20)")
    p.add_argument("--slow-wait", type=float, default=5.0,
                   help="seconds more to collect the slow follower's answers in run B (default 5)")
    p.add_argument("--only", choices=["A", "B"], help="run only one of the two")
    args = p.parse_args()
    if args.orders < 1 or args.followers < 2 or args.interval < 0 or args.slow_delay < 0:
        p.error("--orders must be >= 1, --followers >= 2, --interval and --slow-delay >= 0")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    interval = args.interval / 1000
    started = time.perf_counter()
    print("replication latency: leader order event received -> follower placement request sent")
    print(f"(copier in this process, paper exchange in a subprocess; {os.cpu_count()} CPUs)")
    try:
        if args.only in (None, "A"):
            report(run("(A) 1 follower", 1, args.orders, interval, 0.0, args.timeout, 0))
        if args.only in (None, "B"):
            title = (f"(B) {args.followers} followers, f1 answers placements {args.slow_delay:g} s late"
                     if args.slow_delay > 0 else f"(B) {args.followers} followers, none slow (control)")
            report(run(title, args.followers, args.orders, interval, args.slow_delay, args.timeout, args.slow_wait))
    except BenchError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    print(f"\ntotal {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
