"""Replication at the leader's full pace: the copier against a naive copier, from 1 to 200 followers.

For each follower count N, two runs on a fresh paper exchange each, every party in a process of
its own (2 cores: the exchange, the leader, and the copier compete for them as on a user's box):

  copier  `python run.py --config ...` (mode live, real sockets, SQLite in a temp dir)
  naive   bench/naive_copier.py: socket in, `dhanhq.place_order` out, follower after follower

The leader (the official `dhanhq` client, its own process) places --rate orders a second for
--seconds (default 10/s, the most a Dhan account may place, for 60 s) after a few uncounted
warm-up orders. Its orders are LIMIT buys priced through the market, so they and their copies
trade at once (a follower copy is answered, then echoed twice on its socket: PENDING, TRADED);
--resting keeps them resting far from the market instead (then every order stays open, and the
paper exchange's own per-order work grows with them); --exits makes every second order a SELL of
the buy before it, an exit the copier sizes from positions read anew for each follower.

Rate limits are raised so that only the copiers' own work limits them: the exchange runs with
--unlimited, and the copier's rate_limits allow 1,000 orders a second per account.

Printed per run:
- latency from the leader's order to the first and to the last follower's placement, p50/p99:
  * at the exchange: the follower's POST /orders reaching the exchange's handler, less the
    leader's reaching it (the leader's order-update frame leaves within that handler); the same
    clock and the same span for both copiers, including the socket and the request on the wire;
  * by the copier's own clock (copier only): its socket reader reading the leader's frame to the
    placement's bytes being written (`latency_ms` as stored);
- copies/s sustained over the leader's minute, and the backlog (copies of the leader's orders
  older than one leader interval that had not reached the exchange) at each quarter and at the end;
- the copier process's peak RSS (VmHWM), peak thread count, and CPU (user + system) per copy,
  read once the copier has seen every copy traded (its TRADED echo applied), so work it put off
  past the leader's minute is counted (and the time that took is printed);
- POSITIONS OFF when, at the end, a follower's positions on the exchange's books are not the
  leader's (every follower copies at ratio 1, so each should hold what the leader holds).

    python bench/replication_bench.py [--followers 1,10,50,100,200] [--seconds 60] [--rate 10]
                                      [--quick] [--no-naive] [--resting | --exits] [--profile gil|cpu]
                                      [--shards N] [--positions-delay MS]

--positions-delay MS: the exchange answers every positions request MS milliseconds late, as a slow
broker does; with --exits, every exit's positions readings take that long.

--shards N: the copier as `shards: N` on this one machine (a stream server, the leader feed
process and N shards, followers dealt out evenly), so one process's GIL is no longer its limit;
its RSS, threads and CPU are those of every one of these processes summed.

--quick: 10 s and followers 1,10 (unless given): a spot check, not the figures. --profile runs
py-spy on the copier during the measured window and keeps its flame graph in bench/results/
(profiled runs are slower: do not quote their latencies). Exit status is non-zero only on
errors (an exchange or copier that did not start, nothing copied); a missed target prints MISS.
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dhanhq import DhanContext, dhanhq  # noqa: E402

from actors.broker_threads import DEFAULT_THREADS as BROKER_THREADS  # noqa: E402
from actors.feed import BASELINE_SETTING  # noqa: E402
from copier.shards import FEED, role_storage_path  # noqa: E402
from storage import readonly  # noqa: E402

INSTRUMENTS = ("2885", "11536", "1594")  # RELIANCE, TCS, INFY (NSE_EQ, lot 1)
WARMUP_ORDERS = 20  # (even: with --exits, the measured orders start with a buy)
ORDERS = {"trading": "trading at once", "resting": "resting",
          "exits": "buys trading at once, each sold again (an exit)"}
RESULTS = ROOT / "bench" / "results"
COPIER_RATE_LIMITS = {"orders_per_second": 1000, "orders_per_minute": 60_000, "orders_per_hour": 1_000_000,
                      "orders_per_day": 10_000_000, "data_per_second": 1000}


class BenchError(RuntimeError):
    pass


# -- processes ----------------------------------------------------------------------------------------
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
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read())["result"]

    def state(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.control_url, timeout=10) as resp:
            return json.loads(resp.read())

    def placements(self) -> list[dict[str, Any]]:
        """Every POST /orders the exchange answered with an order, in arrival order."""
        return [e for e in self.control("request_log") if e["route"] == "POST /orders" and e.get("order_id")]

    def stop(self) -> None:
        stop_process(self.proc)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_nats(workdir: Path) -> tuple[subprocess.Popen[Any], str]:
    binary = shutil.which("nats-server", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/usr/local/sbin")
    if binary is None:
        raise BenchError("nats-server is not installed (sudo apt-get install -y nats-server)")
    port = free_port()
    proc = subprocess.Popen([binary, "-js", "-sd", str(workdir / "nats"), "-a", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, f"nats://127.0.0.1:{port}"
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError("nats-server did not start") from None
            time.sleep(0.05)


def stop_process(proc: subprocess.Popen[Any], timeout: float = 20) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def start_exchange(accounts: int, workdir: str, limits: tuple[str, ...] = ("--unlimited",)) -> Exchange:
    """A paper exchange process; `limits`: its rate-limit arguments (none by default)."""
    stderr_path = os.path.join(workdir, "paper.stderr")
    cmd = [sys.executable, "-m", "paper", "--port", "0", "--ws-port", "0", *limits, "--no-price-walk",
           "--accounts", str(accounts), "--funds", "1e10", "--session", "open"]
    with open(stderr_path, "w") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines: list[str] = []
    done = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("READY"):
                done.set()
        done.set()

    threading.Thread(target=read, name="paper-stdout", daemon=True).start()
    if not done.wait(30) or not any(line.startswith("READY") for line in lines):
        proc.kill()
        raise BenchError(f"paper exchange did not start: {''.join(lines)[-500:]} {Path(stderr_path).read_text()[-500:]}")
    urls: dict[str, str] = {}
    creds: list[tuple[str, str]] = []
    for line in lines:
        word, *rest = line.split()
        if word in ("REST", "WS", "CONTROL"):
            urls[word] = rest[0]
        elif word == "ACCOUNT":
            creds.append((rest[0], rest[1]))
    return Exchange(proc, urls["REST"], urls["WS"], urls["CONTROL"], creds, stderr_path)


class ProcessWatch:
    """Samples a process's threads and RSS from /proc while it runs; reads its CPU time."""

    def __init__(self, pid: int, every: float = 0.25) -> None:
        self.pid = pid
        self.every = every
        self.peak_threads = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watch", daemon=True)

    def start(self) -> "ProcessWatch":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)

    def _run(self) -> None:
        while not self._stop.is_set():
            threads = self.status().get("Threads")
            if threads is not None:
                self.peak_threads = max(self.peak_threads, int(threads))
            self._stop.wait(self.every)

    def status(self) -> dict[str, str]:
        try:
            text = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return {}
        return {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}

    def peak_rss_mb(self) -> float:
        return int(self.status().get("VmHWM", "0 kB").split()[0]) / 1024

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


class Watches:
    """The copier's processes as one (shard mode: the stream server, the feed process and every
    shard): peak RSS and peak threads summed over them, CPU summed."""

    def __init__(self, pids: list[int]) -> None:
        self.watches = [ProcessWatch(pid).start() for pid in pids]

    def stop(self) -> None:
        for watch in self.watches:
            watch.stop()

    @property
    def peak_threads(self) -> int:
        return sum(watch.peak_threads for watch in self.watches)

    def peak_rss_mb(self) -> float:
        return sum(watch.peak_rss_mb() for watch in self.watches)

    def cpu_seconds(self) -> float:
        return sum(watch.cpu_seconds() for watch in self.watches)


# -- the leader ------------------------------------------------------------------------------------------
def place_orders(rest_url: str, client_id: str, token: str, prices: dict[str, float], first: int, count: int,
                 interval: float, orders: str, out: Any) -> None:
    """The leader's own terminal, in a child process: `count` LIMIT orders `interval` s apart
    (`orders`: "trading", "resting" or "exits", as the module says)."""
    context = DhanContext(client_id, token)
    http = context.get_dhan_http()
    http.base_url = rest_url
    http.timeout = 10
    client = dhanhq(context)
    placed: list[str] = []
    errors: list[str] = []
    start = time.perf_counter()
    for i in range(count):
        delay = start + i * interval - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        exit_ = orders == "exits" and (first + i) % 2 == 1  # a sell of the buy before it
        security_id = INSTRUMENTS[((first + i) // 2 if orders == "exits" else first + i) % len(INSTRUMENTS)]
        side = "SELL" if exit_ else "BUY"
        # resting: 5% below the market; else 1% through it, so it trades (inside the circuit band either way)
        through = 0.99 if exit_ else 1.01
        price = round(round(prices[security_id] * (0.95 if orders == "resting" else through) / 0.05) * 0.05, 2)
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
    orders: str  # "trading", "resting" or "exits"
    n: int = 0

    def place(self, count: int, interval: float) -> tuple[list[str], float]:
        """Place `count` orders from a child process; (order ids, seconds the placing took)."""
        context = multiprocessing.get_context("spawn")
        out = context.Queue()
        child = context.Process(target=place_orders, name="leader", daemon=True, args=(
            self.rest_url, self.client_id, self.token, self.prices, self.n, count, interval, self.orders, out))
        child.start()
        try:
            placed, errors, seconds = out.get(timeout=60 + count * interval * 2)
        except queue.Empty:
            raise BenchError("the leader process placed nothing within its time") from None
        finally:
            child.join(10)
        self.n += count
        if errors:
            raise BenchError(f"{len(errors)} leader placements failed, e.g. {errors[0]}")
        return placed, seconds


def wait_for(what: str, check: Callable[[], bool], timeout: float, every: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(every)
    return True


# -- one run ------------------------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


@dataclass
class Run:
    kind: str  # "copier" or "naive"
    followers: int
    orders: int = 0
    expected: int = 0
    copied: int = 0  # copies that reached the exchange by the end of the drain
    window: float = 0.0  # seconds from the leader's first order to its last order plus one interval
    copies_per_second: float = 0.0
    backlog: list[tuple[str, int]] = field(default_factory=list)  # (when, copies behind)
    drain: float | None = None  # seconds from the leader's last order to its last copy
    exchange_first: list[float] = field(default_factory=list)  # ms, at the exchange
    exchange_last: list[float] = field(default_factory=list)
    own_first: list[float] = field(default_factory=list)  # ms, the copier's own clock
    own_last: list[float] = field(default_factory=list)
    peak_rss_mb: float | None = None
    peak_threads: int | None = None
    cpu_per_copy_ms: float | None = None
    notes: list[str] = field(default_factory=list)


def measure(run: Run, exchange: Exchange, leader_ids: list[str], leader_clients: str, follower_ids: list[str],
            interval: float, copies_of: Callable[[dict[str, dict[str, Any]]], dict[str, list[tuple[int, str]]]]) -> None:
    """Exchange-side figures of a run from the exchange's request log. `copies_of(by_order_id)`:
    leader order id -> [(follower index, follower's order id)] of the copies to count."""
    entries = exchange.placements()
    by_order = {e["order_id"]: e for e in entries}
    leader_at = {oid: by_order[oid]["arrived"] for oid in leader_ids if oid in by_order}
    if len(leader_at) < len(leader_ids):
        raise BenchError(f"the exchange logged {len(leader_at)} of the leader's {len(leader_ids)} orders")
    copies = copies_of(by_order)
    n = len(follower_ids)
    first_t, last_t = min(leader_at.values()), max(leader_at.values())
    run.window = last_t - first_t + interval
    arrivals: list[float] = []
    for oid, t0 in leader_at.items():
        for index, follower_order in copies.get(oid, []):
            entry = by_order.get(follower_order)
            if entry is None:
                continue
            arrivals.append(entry["arrived"])
            ms = (entry["arrived"] - t0) * 1000
            if index == 0:
                run.exchange_first.append(ms)
            if index == n - 1:
                run.exchange_last.append(ms)
    arrivals.sort()
    run.copied = len(arrivals)
    end = last_t + interval
    run.copies_per_second = sum(1 for t in arrivals if first_t <= t <= end) / run.window
    leader_times = sorted(leader_at.values())

    def behind(t: float) -> int:
        due = sum(1 for lt in leader_times if lt <= t - interval) * n
        return max(0, due - sum(1 for a in arrivals if a <= t))

    for q in (0.25, 0.5, 0.75):
        run.backlog.append((f"{int(q * 100)}%", behind(first_t + q * run.window)))
    run.backlog.append(("end", behind(end)))
    if run.copied >= run.expected and arrivals:
        run.drain = max(0.0, arrivals[-1] - last_t)


def _net_positions(exchange: Exchange, client_id: str) -> dict[str, int]:
    """An account's non-zero net quantities by security, as the exchange's books say."""
    return {p["securityId"]: p["netQty"] for p in exchange.control("positions", client_id=client_id) if p["netQty"]}


def run_copier(followers: int, seconds: float, rate: float, orders: str, profile: str | None,
               drain_timeout: float, shards: int = 0, positions_delay: float = 0.0) -> Run:
    """`shards`: run the copier as a leader feed process and this many shards, over a stream
    server of their own (`shards:` in the config; followers dealt out evenly). `positions_delay`:
    seconds the exchange takes to answer every account's positions."""
    workdir = tempfile.mkdtemp(prefix="replication-bench-")
    exchange = start_exchange(followers + 1, workdir)
    procs: list[subprocess.Popen[Any]] = []
    watch: Watches | None = None
    run = Run(f"{shards} shards" if shards else "copier", followers)
    try:
        (leader_id, leader_token), *follower_creds = exchange.accounts
        names = [f"f{i + 1}" for i in range(followers)]
        db = os.path.join(workdir, "copytrader.db")
        config = {
            "mode": "live",
            "leader": {"client_id": leader_id, "access_token": leader_token,
                       "api_base_url": exchange.rest_url, "order_update_url": exchange.ws_url},
            "followers": [{"name": name, "client_id": cid, "access_token": token,
                           "api_base_url": exchange.rest_url, "order_update_url": exchange.ws_url,
                           "sizing": {"strategy": "fixed_ratio", "ratio": 1}, **({"shard": i % shards} if shards else {})}
                          for i, (name, (cid, token)) in enumerate(zip(names, follower_creds))],
            "instruments": {"master": str(ROOT / "paper" / "data" / "instruments.csv")},
            "market_hours": {"enforce": False},
            "storage": {"path": db},
            "metrics": {"port": 0},
            "rate_limits": COPIER_RATE_LIMITS,
            "copy": {"lag_alert_seconds": 0},
            "logging": {"level": "WARNING"},
        }
        roles: list[str | None] = [None]
        dbs = [db]
        if shards:
            nats, nats_url = start_nats(Path(workdir))
            procs.append(nats)
            config.update(shards=shards, stream={"url": nats_url})
            roles = [FEED, *map(str, range(shards))]
            dbs = [role_storage_path(db, int(role)) for role in roles[1:]]
        config_path = os.path.join(workdir, "config.yaml")
        Path(config_path).write_text(json.dumps(config))
        logs = {}
        for role in roles:
            logs[role] = os.path.join(workdir, f"copier-{role or 'single'}.log")
            with open(logs[role], "wb") as log_file:
                procs.append(subprocess.Popen([sys.executable, str(ROOT / "run.py"), "--config", config_path,
                                               *(["--shard", role] if role else []), "run", "--no-view"],
                                              cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT,
                                              env={**os.environ, "PYTHONPATH": str(ROOT)}))
        copier = procs[-1]  # the one process, or the last shard (profiled)
        watch = Watches([proc.pid for proc in procs])

        def ready() -> bool:
            for role, proc in zip(roles, procs[-len(roles):]):
                if proc.poll() is not None:
                    raise BenchError(f"the copier ({role or 'one process'}) exited ({proc.returncode}): "
                                     f"{Path(logs[role]).read_text()[-800:]}")
            try:
                stores = [role_storage_path(db, FEED), *dbs] if shards else dbs
                return (all(readonly.setting(path, BASELINE_SETTING) is not None for path in stores)
                        and exchange.state()["sockets"] >= 1 + followers)
            except Exception:  # noqa: BLE001 - the database is not made yet
                return False

        if not wait_for("copier", ready, 120):
            raise BenchError(f"the copier did not log in within 120 s: {Path(logs[roles[-1]]).read_text()[-800:]}")
        prices = {sid: float(exchange.control("price", security_id=sid)) for sid in INSTRUMENTS}
        if positions_delay:
            exchange.control("faults.delay_answers", seconds=positions_delay, paths=["GET /positions"])
        leader = Leader(exchange.rest_url, leader_id, leader_token, prices, orders)

        warm, _ = leader.place(WARMUP_ORDERS, 1 / max(rate, 20))
        def sent() -> int:
            return sum(readonly.sent_copies(path) for path in dbs)

        if not wait_for("warm-up", lambda: sent() >= len(warm) * followers, 60):
            raise BenchError(f"warm-up copies missing: {[readonly.unsent_copies(path, warm) for path in dbs]} "
                             f"{[readonly.skips(path) for path in dbs]}")

        profiler = start_profiler(copier.pid, profile, f"copier-{followers}", seconds) if profile else None
        cpu_before = watch.cpu_seconds()
        interval = 1 / rate
        measured, placing = leader.place(int(round(seconds * rate)), interval)
        run.orders = len(measured)
        run.expected = len(measured) * followers
        target = (len(warm) + len(measured)) * followers
        if not wait_for("drain", lambda: sent() >= target, drain_timeout, every=0.1):
            run.notes.append(f"INCOMPLETE: {sent() - len(warm) * followers} of {run.expected} "
                             f"copies answered {drain_timeout:.0f} s after the leader's last order")
        if orders == "resting":
            time.sleep(1.0)  # the copies' PENDING echoes
        else:  # every copy's TRADED echo applied: work put off past the leader's minute is counted too
            started_settling = time.monotonic()
            if wait_for("settled", lambda: sum(readonly.traded_copies(path) for path in dbs) >= target,
                        drain_timeout, every=0.1):
                run.notes.append(f"every copy seen traded {time.monotonic() - started_settling:.2f} s after the "
                                 "last was placed")
            else:
                run.notes.append(f"NOT SETTLED: {sum(readonly.traded_copies(path) for path in dbs)} of {target} "
                                 f"copies seen traded {drain_timeout:.0f} s after the last was placed")
        cpu = watch.cpu_seconds() - cpu_before
        if profiler is not None:
            finish_profiler(profiler, run)
        rows = [row for path in dbs for row in readonly.copy_orders(path)]
        order_index = {name: i for i, name in enumerate(names)}
        wanted = set(measured)
        own: dict[str, list[float]] = {}
        copies: dict[str, list[tuple[int, str]]] = {}
        for leader_order_id, follower, broker_order_id, latency in rows:
            if leader_order_id not in wanted:
                continue
            copies.setdefault(leader_order_id, []).append((order_index[follower], broker_order_id))
            if latency is not None:
                own.setdefault(follower, []).append(latency)
        run.own_first = own.get(names[0], [])
        run.own_last = own.get(names[-1], [])
        measure(run, exchange, measured, leader_id, [c for c, _ in follower_creds], interval, lambda _: copies)
        if shards:
            run.notes.append(f"{shards} shards, {followers // shards}+ followers each, and the feed process and "
                             "the stream server, on this machine: RSS, threads and CPU summed over them; own "
                             "clock from the feed process's read of the leader's frame")
        # At ratio 1 every follower holds what its leader holds, once every copy has traded
        leader_held = _net_positions(exchange, leader_id)
        off = sum(1 for cid, _token in follower_creds if _net_positions(exchange, cid) != leader_held)
        if off:
            run.notes.append(f"POSITIONS OFF: {off} of {followers} followers do not hold what the leader holds")
        run.peak_rss_mb = watch.peak_rss_mb()
        run.peak_threads = watch.peak_threads
        run.cpu_per_copy_ms = cpu / max(run.copied, 1) * 1000
        run.notes.append(f"leader: {run.orders} orders in {placing:.1f} s, after {len(warm)} warm-up orders")
        return run
    finally:
        if watch is not None:
            watch.stop()
        for proc in reversed(procs):
            stop_process(proc)
        exchange.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def run_naive(followers: int, seconds: float, rate: float, orders: str, drain_timeout: float) -> Run:
    workdir = tempfile.mkdtemp(prefix="naive-bench-")
    exchange = start_exchange(followers + 1, workdir)
    naive: subprocess.Popen[str] | None = None
    watch: ProcessWatch | None = None
    run = Run("naive", followers)
    try:
        (leader_id, leader_token), *follower_creds = exchange.accounts
        follower_ids = [cid for cid, _ in follower_creds]
        creds_path = os.path.join(workdir, "followers.json")
        out_path = os.path.join(workdir, "naive.json")
        Path(creds_path).write_text(json.dumps(follower_creds))
        naive = subprocess.Popen([sys.executable, str(ROOT / "bench" / "naive_copier.py"), "--ws", exchange.ws_url,
                                  "--rest", exchange.rest_url, "--leader", f"{leader_id}:{leader_token}",
                                  "--followers", creds_path, "--out", out_path],
                                 cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
                                 env={**os.environ, "PYTHONPATH": str(ROOT)})
        watch = ProcessWatch(naive.pid).start()
        if not wait_for("naive", lambda: exchange.state()["sockets"] >= 1, 30):
            raise BenchError("the naive copier did not log in within 30 s")
        prices = {sid: float(exchange.control("price", security_id=sid)) for sid in INSTRUMENTS}
        leader = Leader(exchange.rest_url, leader_id, leader_token, prices, orders)
        follower_set = set(follower_ids)

        def copied() -> int:
            return sum(1 for e in exchange.placements() if e["client_id"] in follower_set)

        warm, _ = leader.place(WARMUP_ORDERS, 1 / max(rate, 20))
        if not wait_for("warm-up", lambda: copied() >= len(warm) * followers, 60, every=0.5):
            raise BenchError("the naive copier's warm-up copies are missing")
        cpu_before = watch.cpu_seconds()
        interval = 1 / rate
        measured, placing = leader.place(int(round(seconds * rate)), interval)
        run.orders = len(measured)
        run.expected = len(measured) * followers
        target = (len(warm) + len(measured)) * followers
        if not wait_for("drain", lambda: copied() >= target, drain_timeout, every=1.0):
            run.notes.append(f"INCOMPLETE: {copied() - len(warm) * followers} of {run.expected} copies placed "
                             f"{drain_timeout:.0f} s after the leader's last order")
        cpu = watch.cpu_seconds() - cpu_before
        run.peak_rss_mb = watch.peak_rss_mb()
        run.peak_threads = watch.peak_threads
        watch.stop()
        stop_process(naive)
        rows = json.loads(Path(out_path).read_text()) if Path(out_path).exists() else []
        wanted = set(measured)
        copies: dict[str, list[tuple[int, str]]] = {}
        for leader_order_id, index, _received, _started, _answered, _ok, order_id in rows:
            if leader_order_id in wanted and order_id:
                copies.setdefault(leader_order_id, []).append((index, order_id))
        measure(run, exchange, measured, leader_id, follower_ids, interval, lambda _: copies)
        run.cpu_per_copy_ms = cpu / max(run.copied, 1) * 1000
        run.notes.append(f"leader: {run.orders} orders in {placing:.1f} s, after {len(warm)} warm-up orders")
        return run
    finally:
        if watch is not None:
            watch.stop()
        if naive is not None:
            stop_process(naive)
        exchange.stop()
        shutil.rmtree(workdir, ignore_errors=True)


# -- profiles -----------------------------------------------------------------------------------------------
@dataclass
class Profiler:
    proc: subprocess.Popen[bytes]
    path: Path


def start_profiler(pid: int, mode: str, label: str, seconds: float) -> Profiler | None:
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        print("  (no py-spy on PATH: pip install py-spy; not profiled)")
        return None
    RESULTS.mkdir(parents=True, exist_ok=True)
    raw = os.environ.get("BENCH_PROFILE_RAW") == "1"  # collapsed stacks, for reading self times
    path = RESULTS / f"flame-{label}-{mode}.{'txt' if raw else 'svg'}"
    cmd = [py_spy, "record", "--pid", str(pid), "--rate", "100", "--duration", str(int(seconds) + 2),
           "--format", "raw" if raw else "flamegraph", "--output", str(path), "--nonblocking"]
    if mode == "gil":
        cmd.append("--gil")
    return Profiler(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE), path)


def finish_profiler(profiler: Profiler, run: Run) -> None:
    try:
        profiler.proc.wait(30)
    except subprocess.TimeoutExpired:
        profiler.proc.send_signal(signal.SIGINT)
        profiler.proc.wait(10)
    run.notes.append(f"flame graph: {profiler.path.relative_to(ROOT)}")


# -- report -------------------------------------------------------------------------------------------------
def fmt(values: list[float]) -> str:
    if not values:
        return f"{'-':>7} {'-':>7}"
    return f"{percentile(values, 50):>7.1f} {percentile(values, 99):>7.1f}"


def report(runs: list[Run]) -> None:
    print(f"\n  {'run':<14} {'copies':>13} {'copies/s':>8}  {'at the exchange, ms':^31}  "
          f"{'own clock, ms':^31}  {'RSS MB':>6} {'threads':>7} {'CPU ms':>6}")
    print(f"  {'':<14} {'':>13} {'':>8}  {'first p50  p99':>15} {'last p50  p99':>15}  "
          f"{'first p50  p99':>15} {'last p50  p99':>15}  {'peak':>6} {'peak':>7} {'/copy':>6}")
    for run in runs:
        print(f"  {run.kind + f' N={run.followers}':<14} {run.copied:>6}/{run.expected:<6} "
              f"{run.copies_per_second:>8.0f}  {fmt(run.exchange_first):>15} {fmt(run.exchange_last):>15}  "
              f"{fmt(run.own_first):>15} {fmt(run.own_last):>15}  "
              f"{run.peak_rss_mb or 0:>6.0f} {run.peak_threads or 0:>7} {run.cpu_per_copy_ms or 0:>6.2f}")
    for run in runs:
        backlog = ", ".join(f"{when} {count}" for when, count in run.backlog)
        drain = f"{run.drain:.2f} s" if run.drain is not None else "not drained"
        print(f"  {run.kind} N={run.followers}: backlog {backlog}; last copy {drain} after the leader's last "
              "order" + "".join(f"; {note}" for note in run.notes))


def check(verdicts: list[tuple[bool, str]], ok: bool, text: str) -> None:
    verdicts.append((ok, text))


def targets(copiers: dict[int, Run], naives: dict[int, Run], rate: float) -> list[tuple[bool, str]]:
    verdicts: list[tuple[bool, str]] = []
    if 1 in copiers and 1 in naives and copiers[1].exchange_last and naives[1].exchange_last:
        for q in (50, 99):
            mine, theirs = percentile(copiers[1].exchange_last, q), percentile(naives[1].exchange_last, q)
            check(verdicts, mine <= theirs, f"1 follower, p{q} at the exchange: copier {mine:.2f} ms / naive "
                  f"{theirs:.2f} ms = {mine / theirs:.2f} (target <= 1.0)")
    if 100 in copiers:
        run = copiers[100]
        due = rate * 100
        end_backlog = run.backlog[-1][1] if run.backlog else run.expected
        check(verdicts, run.copies_per_second >= 0.98 * due and end_backlog <= 100,
              f"100 followers keep up: {run.copies_per_second:.0f} copies/s (leader's {due:.0f}), backlog "
              + ", ".join(f"{w} {c}" for w, c in run.backlog) + " (target: flat, at most one order's copies)")
        if run.own_last:
            p99 = percentile(run.own_last, 99)
            check(verdicts, p99 <= 100 and run.copied >= run.expected,
                  f"100 followers: p99 to the last follower {p99:.1f} ms by the copier's clock, "
                  f"{percentile(run.exchange_last, 99):.1f} ms at the exchange (target <= 100 ms)")
        check(verdicts, (run.peak_rss_mb or 0) <= 250, f"100 followers: peak RSS {run.peak_rss_mb:.0f} MB (target <= 250)")
    threads = {n: r.peak_threads or 0 for n, r in sorted(copiers.items())}
    if len(threads) > 1:
        # the broker pool starts its threads as calls need them, up to its fixed size
        spread = max(threads.values()) - min(threads.values())
        check(verdicts, spread <= BROKER_THREADS + 4, "threads independent of followers: peak "
              + ", ".join(f"{t} at N={n}" for n, t in threads.items())
              + f" (target: the same give or take 4, and the broker pool's {BROKER_THREADS} started as the load asks)")
    if 10 in copiers and 200 in copiers:
        a, b = copiers[10].cpu_per_copy_ms or 0, copiers[200].cpu_per_copy_ms or 0
        check(verdicts, b <= 1.2 * a, f"CPU per copy: {b:.2f} ms at 200 followers / {a:.2f} ms at 10 = "
              f"{b / a if a else float('inf'):.2f} (target <= 1.2)")
    return verdicts


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--followers", help="comma-separated follower counts (default 1,10,50,100,200; --quick: 1,10)")
    p.add_argument("--seconds", type=float, help="seconds the leader places orders (default 60; --quick: 10)")
    p.add_argument("--rate", type=float, default=10.0, help="leader orders per second (default 10, Dhan's cap)")
    p.add_argument("--quick", action="store_true", help="a spot check: 10 s, followers 1,10 unless given")
    p.add_argument("--no-naive", action="store_true", help="measure the copier only")
    kinds = p.add_mutually_exclusive_group()
    kinds.add_argument("--resting", action="store_true", help="leader orders rest far from the market (they stay open)")
    kinds.add_argument("--exits", action="store_true", help="every second leader order sells the buy before it")
    p.add_argument("--profile", choices=["gil", "cpu"],
                   help="py-spy flame graph of the copier (GIL holders, or every running thread) in bench/results/")
    p.add_argument("--shards", type=int, default=0,
                   help="run the copier as a feed process and this many follower shards over a stream server "
                        "(nats-server), all on this machine (default 0: one process)")
    p.add_argument("--positions-delay", type=float, default=0.0, metavar="MS",
                   help="the exchange answers positions this many milliseconds late (default 0), as a slow broker")
    p.add_argument("--drain-timeout", type=float, default=30.0,
                   help="seconds after the leader's last order to wait for the last copies (default 30)")
    args = p.parse_args()
    seconds = args.seconds or (10.0 if args.quick else 60.0)
    followers = [int(x) for x in (args.followers or ("1,10" if args.quick else "1,10,50,100,200")).split(",")]
    if args.rate <= 0 or seconds <= 0 or any(n < 1 for n in followers) or args.shards < 0:
        p.error("--rate and --seconds must be > 0, follower counts >= 1, --shards >= 0")
    orders = "resting" if args.resting else "exits" if args.exits else "trading"
    print(f"replication: leader at {args.rate:g} orders/s for {seconds:g} s, "
          f"{ORDERS[orders]}; followers {followers}")
    print(f"(every party its own process; {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; rate limits raised so only the copiers' own work "
          f"limits them: paper exchange --unlimited, copier {COPIER_RATE_LIMITS['orders_per_second']} orders/s "
          "per account)")
    started = time.perf_counter()
    copiers: dict[int, Run] = {}
    naives: dict[int, Run] = {}
    try:
        for n in followers:
            runs = [run_copier(n, seconds, args.rate, orders, args.profile, args.drain_timeout, args.shards,
                               args.positions_delay / 1000)]
            copiers[n] = runs[0]
            if not args.no_naive and not args.profile:
                naives[n] = run_naive(n, seconds, args.rate, orders, args.drain_timeout)
                runs.append(naives[n])
            report(runs)
            sys.stdout.flush()
    except BenchError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    if not args.profile:
        print("\ntargets")
        for ok, text in targets(copiers, naives, args.rate):
            print(f"  {'PASS' if ok else 'MISS'}  {text}")
    print(f"\ntotal {time.perf_counter() - started:.0f} s; load average now "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
