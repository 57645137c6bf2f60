"""The chaos soak. A seeded leader places, modifies and cancels 1000 times, through the real `dhanhq`
client, against a paper exchange in its own process, while everything around the copier misbehaves
as Dhan and a bad day can, and the real `run.py` is SIGKILLed and restarted at random moments:

- the broker, on the followers' placements: DH-908 and DH-909 before any effect, answers lost
  after the order took effect, answers that arrive late;
- the wire between the copier and the exchange (a `FaultProxy` per follower): 5xx answers without
  an error code on placements, before and after the order took effect; placement answers held past
  the copier's timeout, after, before or with a late effect, and the lookups that follow them
  (`GET /orders/external/{id}`, `GET /orders`) hanging or answering 5xx;
- the order-update sockets: frames without `Sequence` (Dhan's carry none), duplicated, reordered
  within one second (and, from a moment of the seed's choosing, across seconds), dropped sockets,
  refused reconnects, and poison frames on the leader's and the followers' sockets;
- the copier's storage, on a small disk of its own that fills up for a few seconds.

Once the faults stop and the copier settles, counted on the exchange's books, not in the copier's
storage: 0 lost and 0 doubled follower orders, every copy's final terms matching its leader order's
now, and `run.py reconcile` reporting no divergence. The soak also checks that each fault really
struck (a fault switched on that never hit proves nothing), that the copier never exited on its own
and stops cleanly at the end, and that it paced itself: the exchange enforces Dhan's 10 orders/s
per account, and refuses at most a few calls that arrive bunched while the copier catches up.

Faults, kill moments and the leader's actions all come from one seed (`CHAOS_SEED`); the timing
between them is real, so what the copier sees differs from run to run, but what is asserted does not.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from dhanhq import dhanhq

from actors.feed import BASELINE_SETTING
from tests.conftest import ROOT, client, end_processes, free_port, paper_control, start_paper_process, wait_until
from tests.faultproxy import FIRST, LATE, NEVER, FaultProxy, Rule
from tests.frames import FrameInjector, bad_frames
from tests.test_storage_safety import _fill as fill_disk
from trading.orders import correlation_id

SEED = int(os.environ.get("CHAOS_SEED", "1005"))
EVENTS = int(os.environ.get("CHAOS_EVENTS", "1000"))  # leader placements + modifications + cancels
# Leader events per second. Each one costs every follower one order call (its copy's placement,
# modification or cancel), and the faults add some (placements retried after DH-908/909, placed
# again after a lookup found them absent): at 9 a second the followers stay under Dhan's 10.
PACE = 9.0
KILLS = 4
RATIOS = {"f1": 0.5, "f2": 1.0, "f3": 2.0}  # fixed_ratio; leader quantities are even
OPEN = ("PENDING", "TRANSIT", "PART_TRADED")
INSTRUMENTS = ("2885", "11536")  # RELIANCE, TCS
TIMEOUT = 2.0  # the copier's broker.timeout_seconds: a held answer past it is lost to the copier
POLL = 0.2  # seconds between looks at the copier while the burst runs (each costs it a /metrics page)
ORDERS_PER_SECOND = 10  # Dhan's order rate per account: the copier's limit, and the exchange's
MAX_THROTTLED = 0.05  # of a follower's order calls, the most the exchange may refuse as over its rate
# Scheduled faults: each kind at least once, then EXTRA_FAULTS more of the kinds that can repeat.
FAULT_KINDS = ("drop", "drop_refuse", "delay", "poison_leader", "poison_follower", "lost_answer",
               "full_disk", "reorder_across_seconds", "lag")
REPEATABLE = ("drop", "drop_refuse", "delay", "poison_leader", "poison_follower", "lost_answer")
EXTRA_FAULTS = 8
# 5xx answers without an error code, as a gateway in front of the broker gives them
NO_CODE_JSON = '{"status": "error", "message": "upstream failure"}'
NO_CODE_HTML = "<html><body><h1>503 Service Unavailable</h1></body></html>"
# Skip reasons the faults may cause, and why the order was not copied: any other skip is a problem
STORAGE_DOWN = "storage_unavailable"
CANCELLED_FIRST = "leader_cancelled_before_placement"
CLOSED_UNSEEN = "leader_closed_before_copy"  # placed and cancelled while the copier was down or deaf


class Control:
    """The paper exchange's control endpoint (POST /control/<name>, keyword arguments as JSON)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def __call__(self, name: str, **kwargs) -> object:
        return paper_control(self.url, name, request_timeout=30, **kwargs)


@dataclass
class LeaderOrder:
    order_id: str
    security_id: str
    side: str
    quantity: int
    price: float
    placed_at: float  # monotonic
    modifications: int = 0
    open: bool = True


class Leader:
    """The leader: a seeded plan of placements, modifications and cancels at a person's pace.
    Prices stay away from the market (no fills), so every order's final state is its own doing."""

    def __init__(self, client: dhanhq, rng: random.Random, ltp: dict[str, float]) -> None:
        self.client, self.rng, self.ltp = client, rng, ltp
        self.orders: list[LeaderOrder] = []
        self.events = Counter()
        self.errors: list[str] = []

    def _price(self, security_id: str, side: str) -> float:
        away = self.rng.uniform(0.02, 0.08)
        return round(self.ltp[security_id] * (1 - away if side == "BUY" else 1 + away), 1)

    def step(self) -> None:
        open_orders = [o for o in self.orders if o.open]
        roll = self.rng.random()
        if len(open_orders) < 5 or roll < 0.5:
            security_id, side = self.rng.choice(INSTRUMENTS), self.rng.choice(("BUY", "SELL"))
            quantity, price = 2 * self.rng.randint(1, 10), self._price(security_id, side)
            placed_at = time.monotonic()
            answer = self.client.place_order(security_id=security_id, exchange_segment="NSE_EQ",
                                             transaction_type=side, quantity=quantity, order_type="LIMIT",
                                             product_type="INTRADAY", price=price)
            if answer.get("status") != "success":
                self.errors.append(f"place: {answer}")
                return
            self.orders.append(LeaderOrder(answer["data"]["orderId"], security_id, side, quantity, price, placed_at))
            self.events["place"] += 1
        elif roll < 0.8 and any(o.modifications < 3 for o in open_orders):
            order = self.rng.choice([o for o in open_orders if o.modifications < 3])
            quantity = order.quantity if self.rng.random() < 0.5 else 2 * self.rng.randint(1, 10)
            price = self._price(order.security_id, order.side)
            answer = self.client.modify_order(order.order_id, "LIMIT", "", quantity, price, 0, 0, "DAY")
            if answer.get("status") != "success":
                self.errors.append(f"modify {order.order_id}: {answer}")
                return
            order.quantity, order.price = quantity, price
            order.modifications += 1
            self.events["modify"] += 1
        else:
            order = self.rng.choice(open_orders)
            answer = self.client.cancel_order(order.order_id)
            if answer.get("status") != "success":
                self.errors.append(f"cancel {order.order_id}: {answer}")
                return
            order.open = False
            self.events["cancel"] += 1


_QUERY = """
import json, sqlite3, sys
with sqlite3.connect(sys.argv[1], timeout=5) as conn:
    print(json.dumps(conn.execute(sys.argv[2], json.loads(sys.argv[3])).fetchall()))
"""


@dataclass
class SmallDisk:
    """The copier's storage folder on a small filesystem of its own that the soak fills and frees:
    a tmpfs mounted in a private mount namespace, kept by a sleeping process so that it outlives the
    copier processes the soak kills. Every copier and operator command runs inside it (`prefix`);
    the soak fills it from outside through /proc/PID/root, and reads storage with a short query
    process inside it (SQLite would resolve /proc/PID/root to this process's own root). Commands
    run inside it start in the repository's folder.

    Where the machine allows no such namespace, `unavailable` says why, and the folder is an
    ordinary one that is never filled."""

    folder: Path
    size: str = "128m"  # room for the write-ahead log at its 64 MiB bound beside the database
    prefix: list[str] = field(default_factory=list)
    unavailable: str = ""
    _holder: subprocess.Popen | None = None
    _filler: Path | None = None

    def start(self) -> "SmallDisk":
        self.folder.mkdir()
        unshare, nsenter = shutil.which("unshare"), shutil.which("nsenter")
        if unshare is None or nsenter is None:
            self.unavailable = "needs util-linux `unshare` and `nsenter` to give the copier a small disk"
            return self
        self._holder = subprocess.Popen(
            [unshare, "--user", "--map-root-user", "--mount", "sh", "-c",
             f'mount -t tmpfs -o size={self.size},mode=0700 tmpfs "$0" && echo mounted && exec sleep 100000',
             str(self.folder)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self._holder.stdout is not None and self._holder.stderr is not None
        if self._holder.stdout.readline().strip() != "mounted":
            self.unavailable = ("this machine does not allow a private tmpfs (user and mount namespaces): "
                                + self._holder.stderr.read().strip()[:200])
            self.stop()
            return self
        self.prefix = [nsenter, f"--target={self._holder.pid}", "--user", "--mount", "--preserve-credentials",
                       f"--wd={ROOT}", "--"]  # entering the mount namespace would leave us in its /
        return self

    @property
    def outside(self) -> Path:
        """The folder as this process reaches it."""
        if self._holder is None:
            return self.folder
        return Path(f"/proc/{self._holder.pid}/root") / str(self.folder).lstrip("/")

    def query(self, db: Path, sql: str, *args: Any) -> list[list[Any]]:
        """Rows of `sql` on the copier's database ([] while it cannot be read)."""
        if not self.prefix:
            try:
                with sqlite3.connect(db, timeout=5) as conn:
                    return [list(row) for row in conn.execute(sql, args)]
            except sqlite3.Error:
                return []
        done = subprocess.run([*self.prefix, sys.executable, "-c", _QUERY, str(db), sql, json.dumps(args)],
                              capture_output=True, text=True, timeout=30)
        return json.loads(done.stdout) if done.returncode == 0 else []

    def fill(self) -> None:
        """Write a file until the filesystem is full."""
        assert self.prefix, self.unavailable
        self._filler = fill_disk(self.outside)

    def free(self) -> None:
        assert self._filler is not None
        self._filler.unlink()
        self._filler = None

    def stop(self) -> None:
        if self._holder is not None and self._holder.poll() is None:
            self._holder.kill()
            self._holder.wait(10)


def _scrape(port: int) -> dict[tuple[str, frozenset], float]:
    """The copier's metrics: (name, labels) -> value; {} while nobody answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:
            lines = answer.read().decode().splitlines()
    except OSError:
        return {}
    found = {}
    for line in lines:
        if not line or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        name, _, labels = series.partition("{")
        pairs = frozenset(tuple(p.split("=", 1)) for p in labels.rstrip("}").replace('"', "").split(",") if p)
        found[(name, pairs)] = float(value)
    return found


def _metric(scraped: dict, name: str, **labels: str) -> float | None:
    return scraped.get((name, frozenset(labels.items())))


def _books(urls: dict[str, str], followers: dict[str, tuple[str, str]]) -> dict[str, list[dict]]:
    books = {}
    for name, (cid, token) in followers.items():
        answer = client(urls["REST"], cid, token, timeout=10).get_order_list()
        assert answer["status"] == "success", answer
        books[name] = answer["data"]
    return books


def _check(leader_book: list[dict], books: dict[str, list[dict]], skips: list[tuple[str, str | None, str]],
           storage_down: list[tuple[float, float]], placed_at: dict[str, float]) -> dict:
    """Compare every follower book with the leader's; returns counts and the first problems.

    A leader order may lack a copy only with a recorded skip the faults explain: the leader
    cancelled it before its copy was sent, or before the copier saw it (placed and cancelled while
    the copier was down or its socket was), or the copier first saw it while storage could not
    record it (a leader order placed while the disk was full). Any other skip is a problem too."""
    report: dict[str, Any] = {"lost": [], "doubled": [], "mismatched": [], "unexpected_skips": [], "skipped": 0,
                              "aborted": 0, "follower_orders": 0, "wrong_quantity": 0}
    leader_status = {lo["orderId"]: lo["orderStatus"] for lo in leader_book}

    def explained(leader_id: str, reason: str) -> bool:
        if reason in (CANCELLED_FIRST, CLOSED_UNSEEN):
            return leader_status.get(leader_id) == "CANCELLED"
        if reason == STORAGE_DOWN:  # first seen while the disk was full (the copy sent, if at all, before it)
            at = placed_at.get(leader_id)
            return at is not None and any(start - 2.0 <= at <= end for start, end in storage_down)
        return False

    by_copy: dict[tuple[str, str], str] = {}
    for leader_id, follower, reason in skips:
        if not explained(leader_id, reason):
            report["unexpected_skips"].append(f"{follower or 'all'}: {leader_id} skipped as {reason}")
        for name in ([follower] if follower else list(books)):
            by_copy[(leader_id, name)] = reason
    for follower, book in books.items():
        report["follower_orders"] += len(book)
        by_cid = Counter(entry.get("correlationId") for entry in book)
        expected = {correlation_id(lo["orderId"], follower): lo for lo in leader_book}
        for cid, count in by_cid.items():
            if cid not in expected:
                report["doubled"].append(f"{follower}: order with unknown correlation id {cid} (x{count})")
            elif count > 1:
                report["doubled"].append(f"{follower}: {count} orders for leader {expected[cid]['orderId']} ({cid})")
        copies = {entry.get("correlationId"): entry for entry in book}
        for cid, lo in expected.items():
            leader_id, copy = lo["orderId"], copies.get(cid)
            skip = by_copy.get((leader_id, follower))
            if copy is None:
                if skip in (CANCELLED_FIRST, CLOSED_UNSEEN):
                    report["aborted"] += 1
                elif skip is not None:
                    report["skipped"] += 1
                else:
                    report["lost"].append(f"{follower}: leader order {leader_id} ({lo['orderStatus']}) has neither "
                                          "a copy nor a recorded skip")
                continue
            if skip is not None:
                report["mismatched"].append(f"{follower}: {leader_id} was copied but also recorded as skipped ({skip})")
            if lo["orderStatus"] in OPEN:
                want = (lo["securityId"], lo["transactionType"], lo["orderType"], lo["productType"],
                        round(lo["quantity"] * RATIOS[follower]), float(lo["price"]))
                got = (copy["securityId"], copy["transactionType"], copy["orderType"], copy["productType"],
                       copy["quantity"], float(copy["price"]))
                report["wrong_quantity"] += got[4] != want[4]
                if copy["orderStatus"] not in OPEN or got != want:
                    report["mismatched"].append(f"{follower}: copy of open {leader_id} is {copy['orderStatus']} "
                                                f"{got}, leader wants {want}")
            elif lo["orderStatus"] == "CANCELLED":
                if copy["orderStatus"] != "CANCELLED":
                    report["mismatched"].append(f"{follower}: copy of cancelled {leader_id} is {copy['orderStatus']}")
            else:
                report["mismatched"].append(f"leader order {leader_id} ended {lo['orderStatus']} (unexpected)")
    return report


def _order_calls(entries: list[dict]) -> list[dict]:
    """The order calls (placements, modifications, cancels) of an exchange request log that the
    exchange answered."""
    return [e for e in entries if e["method"] in ("POST", "PUT", "DELETE") and e["path"].startswith("/orders")
            and e["status"] != 0]


def test_chaos_soak_never_loses_or_doubles_and_converges(tmp_path):
    rng = random.Random(SEED)
    started_at = time.monotonic()
    exchange, urls, accounts = start_paper_process(
        "--accounts", str(1 + len(RATIOS)), "--no-price-walk", "--funds", "1e10", "--seed", str(SEED),
        "--no-sequence", "--orders-per-second", str(ORDERS_PER_SECOND), "--orders-per-minute", "0",
        "--orders-per-hour", "0", "--orders-per-day", "0")
    control = Control(urls["CONTROL"])
    disk = SmallDisk(tmp_path / "disk").start()
    if disk.unavailable:
        warnings.warn(f"chaos soak without its full-disk fault: {disk.unavailable}")
    proxies: dict[str, FaultProxy] = {}
    copier: subprocess.Popen | None = None
    log_path = tmp_path / "copier.log"
    log_file = open(log_path, "a")
    try:
        (leader_id, leader_token), *follower_accounts = accounts
        followers = dict(zip(RATIOS, follower_accounts))
        control("rate_limit_exempt", client_id=leader_id)  # the leader's pace is the soak's (PACE), not under test
        for i, name in enumerate(followers):
            proxies[name] = FaultProxy(urls["REST"], seed=SEED * 10 + i).start()
        db = disk.folder / "copytrader.db"
        metrics_port = free_port()
        config = {
            "mode": "live",
            "leader": {"client_id": leader_id, "access_token": leader_token, "api_base_url": urls["REST"],
                       "order_update_url": urls["WS"]},
            "followers": [{"name": name, "client_id": cid, "access_token": tok, "api_base_url": proxies[name].url,
                           "order_update_url": urls["WS"], "sizing": {"strategy": "fixed_ratio", "ratio": RATIOS[name]}}
                          for name, (cid, tok) in followers.items()],
            "instruments": {"master": str(ROOT / "paper" / "data" / "instruments.csv")},
            "market_hours": {"enforce": False},
            "storage": {"path": str(db)},
            "metrics": {"port": metrics_port},
            "broker": {"timeout_seconds": TIMEOUT},
            # Dhan's 10 orders/s per follower; the minute/hour/day caps are raised only so that a
            # whole trading day's volume fits in a CI minute
            "rate_limits": {"orders_per_second": ORDERS_PER_SECOND, "orders_per_minute": 600,
                            "orders_per_hour": 36000, "orders_per_day": 100000},
        }
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config))

        def metrics() -> dict:
            return _scrape(metrics_port)

        def start_copier() -> subprocess.Popen:
            log_file.write(f"==== copier start at {time.monotonic() - started_at:.1f}s\n")
            log_file.flush()
            return subprocess.Popen([*disk.prefix, sys.executable, "run.py", "--config", str(path), "run",
                                     "--no-view"], cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT)

        def copying() -> bool:
            """The copier process answers and copies (storage taking writes, sockets logged in)."""
            return _metric(metrics(), "copytrader_ready") == 1 and control("socket_count") == 1 + len(followers)

        def alive() -> None:
            assert copier is not None and copier.poll() is None, \
                f"the copier exited by itself ({copier.returncode if copier else None}); see {log_path}"

        copier = start_copier()
        wait_until(lambda: disk.query(db, "select 1 from setting where key = ?", BASELINE_SETTING), 30,
                   interval=0.1, message="copier ready")
        wait_until(copying, 30, interval=POLL, message="copier copying")
        ready_seconds = time.monotonic() - started_at

        # Faults on for the whole burst. The exchange: each follower's placements fail before any
        # effect (DH-908, DH-909) or lose their answer after it; socket frames carry no Sequence,
        # are duplicated, and reordered within one second.
        for cid, _tok in followers.values():
            control("faults.fail_fraction", fraction=0.03, mode="DH-908", client_id=cid, paths=["POST /orders"])
            control("faults.fail_fraction", fraction=0.03, mode="DH-909", client_id=cid, paths=["POST /orders"])
            control("faults.fail_after_effect", fraction=0.03, client_id=cid, paths=["POST /orders"])
        control("faults.duplicate_messages", fraction=0.1)
        control("faults.reorder_messages", fraction=0.3, same_second=True)
        # The wire: placements answered 5xx without an error code after the order took effect or
        # before it reached the exchange, now and then held past the copier's timeout; a third of
        # the lookups by correlation id and of the order-book reads answered 5xx, some held.
        for proxy in proxies.values():
            proxy.respond("POST /orders", 502, NO_CODE_JSON, forward=FIRST, fraction=0.02)
            proxy.respond("POST /orders", 503, NO_CODE_HTML, forward=NEVER, fraction=0.02, content_type="text/html")
            proxy.hang("POST /orders", TIMEOUT + 1.0, forward=FIRST, fraction=0.005)
            proxy.respond("GET /orders/external/*", 503, NO_CODE_JSON, forward=NEVER, fraction=0.3)
            proxy.hang("GET /orders/external/*", TIMEOUT + 0.5, forward=NEVER, fraction=0.05)
            proxy.respond("GET /orders", 502, NO_CODE_HTML, forward=NEVER, fraction=0.3, content_type="text/html")

        leader = Leader(client(urls["REST"], leader_id, leader_token, timeout=10), rng,
                        {sid: control("price", security_id=sid) for sid in INSTRUMENTS})
        duration = EVENTS / PACE
        kinds = list(FAULT_KINDS) + [rng.choice(REPEATABLE) for _ in range(EXTRA_FAULTS)]
        schedule = sorted([(rng.uniform(0.1, 0.9) * duration, "kill") for _ in range(KILLS)] +
                          [(rng.uniform(0.05, 0.85) * duration, kind) for kind in kinds])
        faults_done: Counter = Counter()
        poison_counted: Counter = Counter()
        storage_down: list[tuple[float, float]] = []
        lost_answers: list[tuple[Rule, list[Rule]]] = []  # a held placement, and the lookup faults after it
        kills = 0
        timeline: list[tuple[float, str]] = []  # (wall clock, what): beside the exchange's request log
        stop = threading.Event()

        def drive() -> None:
            last = float("-inf")
            for _ in range(EVENTS):
                # pacing, not synchronisation: one event every 1/PACE seconds at most, never a burst
                # to catch up after a slow answer (that would take the followers to Dhan's rate)
                stop.wait(max(0.0, last + 1 / PACE - time.monotonic()))
                if stop.is_set():
                    return
                last = time.monotonic()
                leader.step()

        def poison(account: str, cid: str, role: str) -> None:
            """The six kinds of bad frame on one account's socket: each counted by the copier with its
            reason, none restarting its feed."""
            wait_until(lambda: control("socket_count", client_id=cid) == 1, 15, interval=POLL,
                       message=f"{account}'s socket logged in")
            frames = FrameInjector.for_control(control, {account: cid})
            sent = bad_frames(frames.order_alert(account))
            before = wait_until(metrics, 10, interval=POLL, message="the copier's metrics")
            restarts = _metric(before, "copytrader_actor_restarts_total", kind="feed")
            assert restarts is not None, "no copytrader_actor_restarts_total{kind=feed} series"
            for text, _reason in sent.values():
                frames.send(account, text)
            want = {reason: (_metric(before, "copytrader_malformed_messages_total", role=role, reason=reason) or 0) +
                    count for reason, count in Counter(reason for _text, reason in sent.values()).items()}

            def counted() -> dict | None:
                now = metrics()
                return now if all((_metric(now, "copytrader_malformed_messages_total", role=role, reason=reason)
                                   or 0) >= n for reason, n in want.items()) else None

            now = wait_until(counted, 15, interval=POLL,
                             message=f"{role} frames counted as {sorted(want)} (copier log: {log_path})")
            assert _metric(now, "copytrader_actor_restarts_total", kind="feed") == restarts
            poison_counted[role] += len(sent)

        driver = threading.Thread(target=drive, name="leader")
        driver.start()
        burst_start = time.monotonic()
        try:
            for at, what in schedule:
                stop.wait(max(0.0, burst_start + at - time.monotonic()))
                alive()
                timeline.append((time.time(), what))
                if what == "kill":
                    os.kill(copier.pid, signal.SIGKILL)
                    assert copier.wait(10) == -signal.SIGKILL
                    kills += 1
                    copier = start_copier()
                    wait_until(copying, 30, interval=POLL, message=f"copier copying after kill {kills}")
                    continue
                faults_done[what] += 1
                if what == "drop":
                    control("faults.drop_sockets")
                elif what == "drop_refuse":
                    control("faults.refuse_reconnects", seconds=rng.uniform(1.0, 3.0))
                    control("faults.drop_sockets")
                elif what == "delay":
                    cid = rng.choice(list(followers.values()))[0]
                    control("faults.delay_answers", seconds=rng.uniform(0.3, 1.5), client_id=cid,
                            paths=["POST /orders", "PUT /orders/*", "DELETE /orders/*"], count=20)
                elif what == "poison_leader":
                    poison("leader", leader_id, "leader")
                elif what == "poison_follower":
                    name = rng.choice(list(followers))
                    poison(name, followers[name][0], "follower")
                elif what == "lost_answer":
                    # a placement whose answer is lost (after, before, or with a late effect), then
                    # the lookups that would tell its outcome fail: by id twice, held once, the book too
                    proxy = proxies[rng.choice(list(followers))]
                    forward = rng.choice((FIRST, NEVER, LATE))
                    held = proxy.hang("POST /orders", TIMEOUT * 1.5 if forward == LATE else TIMEOUT + 1.0,
                                      forward=forward, count=1)
                    lost_answers.append((held, [
                        proxy.respond("GET /orders/external/*", 503, NO_CODE_JSON, forward=NEVER, count=2),
                        proxy.hang("GET /orders/external/*", TIMEOUT + 0.5, forward=NEVER, count=1)]))
                    proxy.respond("GET /orders", 503, NO_CODE_HTML, forward=NEVER, count=1, content_type="text/html")
                    proxy.hang("GET /orders", TIMEOUT + 0.5, forward=NEVER, count=1)
                elif what == "reorder_across_seconds":
                    control("faults.reorder_messages", fraction=0.1, same_second=False)
                elif what == "lag":  # one follower's socket lags its REST answers until the burst ends
                    control("faults.delay_messages", seconds=rng.uniform(0.3, 1.0),
                            client_id=rng.choice(list(followers.values()))[0])
                elif what == "full_disk" and not disk.unavailable:
                    full_at = time.monotonic()
                    disk.fill()
                    wait_until(lambda: _metric(metrics(), "copytrader_storage_healthy") == 0, 15, interval=POLL,
                               message="the copier noticing its full disk")
                    assert _metric(metrics(), "copytrader_ready") == 0
                    stop.wait(rng.uniform(2.0, 4.0))  # the disk stays full for a few seconds
                    alive()
                    disk.free()
                    wait_until(lambda: _metric(metrics(), "copytrader_storage_healthy") == 1, 30, interval=POLL,
                               message="storage healthy again once space is free")
                    storage_down.append((full_at, time.monotonic()))
                    # the leader orders it saw meanwhile recorded as not copied (before a kill can come)
                    wait_until(lambda: (disk.query(db, "select count(*) from skip where reason = ?", STORAGE_DOWN)
                                        or [[0]])[0][0] > 0, 15, interval=POLL,
                               message="leader orders seen while storage was down recorded as not copied")
            driver.join(duration + 60)
        finally:
            finished = not driver.is_alive()
            stop.set()
            driver.join(30)
        assert finished, "the leader did not finish its plan in time"
        assert not leader.errors, leader.errors[:5]
        burst_seconds = time.monotonic() - burst_start
        alive()

        control("faults.clear")
        for proxy in proxies.values():
            proxy.clear()
        leader_client = client(urls["REST"], leader_id, leader_token, timeout=10)
        placed_at = {o.order_id: o.placed_at for o in leader.orders}

        def settled() -> dict | None:
            leader_book = leader_client.get_order_list()["data"]
            skips = disk.query(db, "select leader_order_id, follower, reason from skip")
            report = _check(leader_book, _books(urls, followers), skips, storage_down, placed_at)
            report["leader_orders"] = len(leader_book)
            settled.last = report  # type: ignore[attr-defined]
            problems = report["lost"] + report["doubled"] + report["mismatched"] + report["unexpected_skips"]
            return report if not problems else None

        settle_start = time.monotonic()
        try:
            wait_until(settled, 90, interval=0.5, message="follower books converged on the leader's")
        except AssertionError:
            pass  # asserted below, with the details
        report = settled.last  # type: ignore[attr-defined]
        settle_seconds = time.monotonic() - settle_start

        reconcile_runs = []

        def reconciled() -> bool:
            result = subprocess.run([*disk.prefix, sys.executable, "run.py", "--config", str(path), "reconcile"],
                                    cwd=ROOT, capture_output=True, text=True, timeout=60)
            reconcile_runs.append(result)
            return result.returncode == 0

        try:
            wait_until(reconciled, 45, interval=0.5, message="a clean reconcile")
        except AssertionError:
            pass
        last = reconcile_runs[-1]
        reconcile_seconds = time.monotonic() - settle_start - settle_seconds
        divergences = last.stdout.splitlines()[0].split()[0] if last.stdout.strip() else "?"

        # what the faults did, counted where they struck
        exchange_faults = control("faults.counts")
        proxy_calls = [c for proxy in proxies.values() for c in proxy.calls]

        def struck(method: str, prefix: str, action: str, forwarded: bool | None = None) -> int:
            return sum(1 for c in proxy_calls if c["method"] == method and c["path"].startswith(prefix)
                       and c["action"] == action and (forwarded is None or c["forwarded"] == forwarded))

        wire = {
            "placement_5xx_after_effect": struck("POST", "/orders", "respond", True),
            "placement_5xx_before_effect": struck("POST", "/orders", "respond", False),
            "placement_answer_held": struck("POST", "/orders", "hang"),
            "lookup_by_id_failed": struck("GET", "/orders/external/", "respond") +
            struck("GET", "/orders/external/", "hang"),
            "order_book_failed": sum(1 for c in proxy_calls if c["method"] == "GET" and c["path"].split("?")[0] ==
                                     "/orders" and c["action"] != "forward"),
        }
        logins = {name: len(control("socket_logins", client_id=cid))
                  for name, cid in [("leader", leader_id), *((n, c) for n, (c, _t) in followers.items())]}
        requests = {name: control("request_log", client_id=cid) for name, (cid, _t) in followers.items()}
        (tmp_path / "timeline.json").write_text(json.dumps({"scheduled": timeline, "requests": requests}))
        calls = {name: _order_calls(log) for name, log in requests.items()}
        throttled = {name: sum(1 for e in log if e["error_code"] == "DH-904") for name, log in calls.items()}
        # a placement the exchange refused as a correlation id used before: Dhan takes it, a second order
        placed_again = {name: sum(1 for e in log if e["method"] == "POST" and e["path"] == "/orders"
                                  and e["error_code"] == "DH-905") for name, log in calls.items()}
        rereads = sum(1 for e in control("request_log", client_id=leader_id)
                      if e["method"] == "GET" and e["route"] == "GET /orders/{orderId}")
        log_text = log_path.read_text(errors="replace")
        events = sum(leader.events.values())
        print(f"\nchaos soak (seed {SEED}): {events} leader events ({dict(leader.events)}) over "
              f"{burst_seconds:.0f}s, {report['leader_orders']} leader orders, {len(followers)} followers, "
              f"{report['follower_orders']} follower orders, lost {len(report['lost'])}, "
              f"doubled {len(report['doubled'])} (placed again under a used id {sum(placed_again.values())}), "
              f"mismatched {len(report['mismatched'])} "
              f"(wrong quantity {report['wrong_quantity']}), "
              f"unexpected skips {len(report['unexpected_skips'])}, {report['skipped']} recorded skips "
              f"(storage down), {report['aborted']} copies not placed (leader cancelled first), "
              f"kills {kills}, scheduled faults {dict(faults_done)}, exchange faults {exchange_faults}, "
              f"wire faults {wire}, poison frames {sum(poison_counted.values())}, "
              f"full disk {len(storage_down)}x {sum(e - s for s, e in storage_down):.1f}s"
              f"{' (' + disk.unavailable + ')' if disk.unavailable else ''}, leader re-reads {rereads}, "
              f"socket logins {logins}, follower order calls {sum(map(len, calls.values()))} "
              f"({sum(map(len, calls.values())) / len(calls) / burst_seconds:.1f}/s each), throttled {throttled}, "
              f"divergences {divergences} (reconcile exit {last.returncode}); seconds: ready {ready_seconds:.1f}, "
              f"burst {burst_seconds:.1f}, settled {settle_seconds:.1f}, reconciled {reconcile_seconds:.1f}, "
              f"total {time.monotonic() - started_at:.1f}")

        assert events == EVENTS
        problems = report["lost"] + report["doubled"] + report["mismatched"] + report["unexpected_skips"]
        assert not problems, f"{len(problems)} problems (copier log: {log_path}):\n" + "\n".join(problems[:30])
        assert placed_again == {name: 0 for name in followers}, f"copies placed twice: {placed_again}; see {log_path}"
        assert last.returncode == 0, last.stdout[-3000:] + last.stderr[-2000:]
        alive()
        # every fault struck (kills, poison frames and the full disk were checked as they happened)
        for kind in ("DH-908", "DH-909", "lost_answer", "delayed_answer", "refused_login", "dropped_sockets",
                     "duplicated", "reordered"):
            assert exchange_faults.get(kind, 0) > 0, f"the exchange fault {kind} never struck: {exchange_faults}"
        for kind, count in wire.items():
            assert count > 0, f"the wire fault {kind} never struck: {wire}"
        for held, lookups in lost_answers:  # each lost placement answer, and the lookups that failed after it
            assert held.hits == 1 and all(rule.exhausted for rule in lookups), \
                [(rule.pattern, rule.action, rule.hits) for rule in (held, *lookups)]
        assert rereads > 0, "no leader order was read again: same-second updates without Sequence never met"
        for name, count in logins.items():  # every socket came back after each kill and each drop
            assert count >= 1 + KILLS + faults_done["drop"] + faults_done["drop_refuse"], (name, logins)
        if not disk.unavailable:  # logged once, with its cause
            assert sum("database or disk is full" in line for line in log_text.splitlines()) == len(storage_down), \
                f"the full disk was not logged once with its cause; see {log_path}"
        assert "cannot rollback" not in log_text
        assert "Traceback" not in log_text, f"a traceback in the copier's log: {log_path}"
        # The copier paces each follower at Dhan's 10 orders/s, and the exchange enforces it. Calls
        # arrive bunched now and then while the copier catches up at that full rate (after a kill,
        # a dropped socket, the full disk), and the exchange refuses one (retried at once); a
        # copier that did not pace would see a whole backlog refused after every kill.
        for name in followers:
            assert throttled[name] <= MAX_THROTTLED * len(calls[name]), (throttled, {n: len(c) for n, c in calls.items()})
        # the copier stops cleanly after all that
        copier.send_signal(signal.SIGTERM)
        assert copier.wait(30) == 0, f"the copier did not stop cleanly; see {log_path}"
    finally:
        end_processes(copier, exchange)
        for proxy in proxies.values():
            proxy.stop()
        disk.stop()
        log_file.close()
