"""End-to-end harness: a fresh paper exchange, the real copier over real sockets, real SQLite.

The broker is faked at the network boundary only: the leader acts through the official `dhanhq`
client as a person would, and assertions read the follower accounts' books on the exchange.
"""
from __future__ import annotations

import json
import os
import queue
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from dhanhq import DhanContext, dhanhq

from actors.feed import BASELINE_SETTING
from broker.answers import AnswerReader
from broker.gateway import Answer, SentPlacement
from copier.config import Config, parse
from storage import Store
from storage import models as m
from copier.tree import Copier, start_copier
from paper import AccountSpec, PaperExchange
from tests.faultproxy import FaultProxy
from tests.frames import FrameInjector

ROOT = Path(__file__).resolve().parent.parent
LEADER_ID = "1100000001"
LEADER_TOKEN = "leader-secret-token-0001"

# Instruments of the shipped master used across tests
RELIANCE = "2885"
TCS = "11536"


def answer_of(sent: SentPlacement, timeout: float = 10.0) -> Answer:
    """A placement's answer, read as the copier reads it: by an answer reader (broker/answers.py)."""
    reader = AnswerReader(name="test-answers")
    answers: queue.Queue[Answer] = queue.Queue()
    try:
        sent.read_by(reader, answers.put)
        return answers.get(timeout=timeout)
    finally:
        reader.stop()


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.01,
               message: str | Callable[[], str] = "condition") -> Any:
    """Poll until `predicate()` is truthy; fail the test with `message` (or its result, when it is
    a callable: built only on failure) after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for "
                                 f"{message() if callable(message) else message}")
        time.sleep(interval)


def client(exchange: PaperExchange | str, client_id: str, token: str, timeout: float = 5) -> dhanhq:
    """The official client pointed at a paper exchange (in-process, or a REST URL of a subprocess)."""
    context = DhanContext(client_id, token)
    http = context.get_dhan_http()
    http.base_url = exchange if isinstance(exchange, str) else exchange.rest_url
    http.timeout = timeout
    return dhanhq(context)


def start_paper_process(*args: str) -> tuple[subprocess.Popen, dict[str, str], list[tuple[str, str]]]:
    """`python -m paper ARGS` in its own process (it outlives copier processes that tests kill);
    returns it, its URLs by name (REST, WS, CONTROL) and its (client id, token) accounts."""
    proc = subprocess.Popen([sys.executable, "-m", "paper", *args], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    urls: dict[str, str] = {}
    accounts: list[tuple[str, str]] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        parts = line.split()
        if parts[0] in ("REST", "WS", "CONTROL"):
            urls[parts[0]] = parts[1]
        elif parts[0] == "ACCOUNT":
            accounts.append((parts[1], parts[2]))
        elif parts[0] == "READY":
            break
    return proc, urls, accounts


def free_port() -> int:
    """A loopback port free now (for a process that must be told its port before it starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_test_without_tools(test_id: str, tmp_path: Path, ci: bool, **env: str) -> subprocess.CompletedProcess:
    """Run one test in a pytest of its own with nothing on PATH (a tool it needs cannot be found),
    under CI=true or not; `env` adds variables."""
    environ = {k: v for k, v in os.environ.items() if k != "CI"}
    environ.update(PATH=str(tmp_path), **env)
    if ci:
        environ["CI"] = "true"
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", test_id],
                          cwd=ROOT, env=environ, capture_output=True, text=True, timeout=120)


def kill_during_burst(copier: subprocess.Popen, start: Callable[[], subprocess.Popen], started: Callable[[], Any],
                      rng: random.Random, kills: int, pause: tuple[float, float] = (0.1, 0.5)) -> subprocess.Popen:
    """SIGKILL the copier process `kills` times, each at a random moment (`pause` seconds, drawn from
    `rng`) once `started()` says the burst is under way, and start it again at once (`start`);
    returns the incarnation left running."""
    for _ in range(kills):
        wait_until(started, 10, message="burst started")
        threading.Event().wait(rng.uniform(*pause))  # (a random kill moment, not a synchronisation)
        os.kill(copier.pid, signal.SIGKILL)
        copier.wait(10)
        copier = start()
    return copier


def sent_twice(entries: list[dict]) -> int:
    """Requests of an exchange's request log refused for a correlation id used before: copies sent
    twice. The paper exchange keeps the second order off the book, where Dhan may take it, so a
    count of the books alone cannot see them."""
    return sum(1 for e in entries if "correlationId already used" in (e.get("error") or ""))


def paper_control(url: str, name: str, /, *, request_timeout: float = 10.0, **kwargs: Any) -> Any:
    """What a paper exchange process's control endpoint answers (`url`: its urls["CONTROL"];
    POST /control/<name>, the keyword arguments as JSON)."""
    request = urllib.request.Request(f"{url}/{name}", data=json.dumps(kwargs).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=request_timeout) as answer:
        return json.loads(answer.read())["result"]


def placed_again(urls: dict[str, str], client_ids: list[str]) -> int:
    """`sent_twice` for the accounts of a paper exchange process."""
    return sum(sent_twice(paper_control(urls["CONTROL"], "request_log", request_timeout=30, client_id=client_id))
               for client_id in client_ids)


def end_processes(*procs: subprocess.Popen | None) -> None:
    """Stop each process still running: SIGTERM, then SIGKILL after 10 s."""
    for proc in procs:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def write_live_config(tmp_path: Path, urls: dict[str, str], accounts: list[tuple[str, str]], ratio: float) -> Path:
    """config.yaml for the real run.py in live mode against a paper exchange process
    (`start_paper_process`): the first account leads, the others follow as f1, f2, ... at `ratio`."""
    (leader_id, leader_token), *followers = accounts
    endpoints = {"api_base_url": urls["REST"], "order_update_url": urls["WS"]}
    config = {
        "mode": "live",
        "leader": {"client_id": leader_id, "access_token": leader_token, **endpoints},
        "followers": [{"name": f"f{i + 1}", "client_id": cid, "access_token": tok, **endpoints,
                       "sizing": {"strategy": "fixed_ratio", "ratio": ratio}}
                      for i, (cid, tok) in enumerate(followers)],
        "instruments": {"master": str(ROOT / "paper" / "data" / "instruments.csv")},
        "market_hours": {"enforce": False},
        "storage": {"path": str(tmp_path / "copytrader.db")},
        "metrics": {"port": 0},
        "rate_limits": {"orders_per_second": 100, "orders_per_minute": 1000},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def start_copier_process(config_path: Path) -> subprocess.Popen:
    """The real `run.py` with this config, in its own process (for tests that SIGKILL it)."""
    return subprocess.Popen([sys.executable, "run.py", "--config", str(config_path), "run", "--no-view"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def started_copier(tmp_path: Path, urls: dict[str, str], accounts: list[tuple[str, str]],
                   ratio: float) -> tuple[subprocess.Popen, Callable[[], subprocess.Popen]]:
    """The real `run.py` on a live config for these paper accounts, once it is ready, and how to
    start it again (for tests that SIGKILL it); ended if it never gets ready."""
    path = write_live_config(tmp_path, urls, accounts, ratio=ratio)

    def start() -> subprocess.Popen:
        return start_copier_process(path)

    copier = start()
    try:
        wait_until(lambda: copier_ready(tmp_path / "copytrader.db"), 30, message="copier ready")
    except BaseException:
        end_processes(copier)
        raise
    return copier, start


def copier_ready(db: Path) -> bool:
    """A copier process is ready once it has recorded the leader's baseline (read from its file)."""
    if not db.exists():
        return False
    try:
        with sqlite3.connect(db, timeout=1) as conn:
            return conn.execute("select count(*) from setting where key = ?", (BASELINE_SETTING,)).fetchone()[0] == 1
    except sqlite3.Error:
        return False


@dataclass
class Rig:
    exchange: PaperExchange
    config: Config
    store: Store
    copier: Copier
    leader: dhanhq
    follower_ids: dict[str, str] = field(default_factory=dict)
    config_yaml: str = field(default="", repr=False)  # for commands run as operators would (holds tokens)
    proxies: dict[str, FaultProxy] = field(default_factory=dict)  # followers whose REST calls go through one

    # -- acting as the leader ----------------------------------------------------------------
    def place(self, security_id: str = RELIANCE, side: str = "BUY", quantity: int = 10, order_type: str = "LIMIT",
              price: float = 0.0, product: str = "INTRADAY", segment: str = "NSE_EQ", **kw: Any) -> str:
        if order_type in ("LIMIT", "STOP_LOSS") and not price:
            price = round(self.exchange.price(security_id) * (0.97 if side == "BUY" else 1.03), 1)
        answer = self.leader.place_order(security_id=security_id, exchange_segment=segment, transaction_type=side,
                                         quantity=quantity, order_type=order_type, product_type=product,
                                         price=price, **kw)
        assert answer["status"] == "success", answer
        return answer["data"]["orderId"]

    def modify(self, order_id: str, **changes: Any) -> dict:
        current = self.exchange.order(LEADER_ID, order_id)
        args = dict(order_type=current["orderType"], leg_name="", quantity=current["quantity"],
                    price=current["price"], trigger_price=current["triggerPrice"],
                    disclosed_quantity=current["disclosedQuantity"], validity=current["validity"])
        args.update(changes)
        answer = self.leader.modify_order(order_id, **args)
        assert answer["status"] == "success", answer
        return answer

    def cancel(self, order_id: str) -> None:
        answer = self.leader.cancel_order(order_id)
        assert answer["status"] == "success", answer

    # -- looking at the followers ----------------------------------------------------------------
    def copy_row(self, leader_order_id: str, follower: str = "f1") -> m.FollowerOrder | None:
        return self.store.read(lambda: m.FollowerOrder.get_or_none(
            (m.FollowerOrder.leader_order_id == leader_order_id) & (m.FollowerOrder.follower == follower)))

    def follower_book(self, follower: str = "f1") -> list[dict]:
        return self.exchange.orders(self.follower_ids[follower])

    def follower_copy(self, leader_order_id: str, follower: str = "f1", timeout: float = 10.0) -> dict:
        """Wait for the follower's copy to exist at the exchange; return its book entry."""
        def find() -> dict | None:
            row = self.copy_row(leader_order_id, follower)
            if row is None:
                return None
            for entry in self.follower_book(follower):
                if entry.get("correlationId") == row.correlation_id:
                    return entry
            return None

        return wait_until(find, timeout, message=f"{follower}'s copy of {leader_order_id}")

    def follower_order_now(self, leader_order_id: str, follower: str = "f1") -> dict | None:
        row = self.copy_row(leader_order_id, follower)
        if row is None:
            return None
        return next((e for e in self.follower_book(follower) if e.get("correlationId") == row.correlation_id), None)

    def wait_copy(self, leader_order_id: str, predicate: Callable[[dict], bool], follower: str = "f1",
                  timeout: float = 10.0, message: str = "copy state") -> dict:
        def check() -> dict | None:
            entry = self.follower_order_now(leader_order_id, follower)
            return entry if entry is not None and predicate(entry) else None

        return wait_until(check, timeout, message=f"{follower}'s copy of {leader_order_id}: {message}")

    def wait_row(self, leader_order_id: str, predicate: Callable[[m.FollowerOrder], bool], follower: str = "f1",
                 timeout: float = 10.0, message: str = "stored copy state") -> m.FollowerOrder:
        def check() -> m.FollowerOrder | None:
            row = self.copy_row(leader_order_id, follower)
            return row if row is not None and predicate(row) else None

        return wait_until(check, timeout, message=f"{follower}'s stored copy of {leader_order_id}: {message}")

    def skips(self, leader_order_id: str, follower: str | None = None) -> list[m.Skip]:
        def query() -> list[m.Skip]:
            q = m.Skip.select().where(m.Skip.leader_order_id == leader_order_id)
            if follower is not None:
                q = q.where(m.Skip.follower == follower)
            return list(q)

        return self.store.read(query)

    def wait_skip(self, leader_order_id: str, follower: str | None = None, timeout: float = 10.0) -> m.Skip:
        return wait_until(lambda: (self.skips(leader_order_id, follower) or [None])[0], timeout,
                          message=f"a recorded skip for {leader_order_id}")

    def follower_placements(self, follower: str = "f1") -> int:
        return sum(1 for r in self.exchange.request_log(self.follower_ids[follower])
                   if r["method"] == "POST" and r["path"].endswith("/orders") and r.get("status") == 200)


DEFAULT_FOLLOWERS = [{"name": "f1", "sizing": {"strategy": "fixed_ratio", "ratio": 0.5}, "funds": 5_000_000}]


def config_dict(exchange: PaperExchange, tmp_path: Path, followers: list[dict], extra: dict | None = None,
                rest_urls: dict[str, str] | None = None) -> dict:
    """The copier's config for a rig; `rest_urls` gives a follower another REST base URL than the
    exchange's (a FaultProxy's `url`)."""
    raw: dict[str, Any] = {
        "mode": "live",
        "leader": {"client_id": LEADER_ID, "access_token": LEADER_TOKEN,
                   "api_base_url": exchange.rest_url, "order_update_url": exchange.ws_url},
        "followers": [],
        "instruments": {"master": str(ROOT / "paper" / "data" / "instruments.csv")},
        "market_hours": {"enforce": False},
        "storage": {"path": str(tmp_path / "copytrader.db")},
        "metrics": {"port": 0},
        "copy": {"lag_alert_seconds": 0},
    }
    for i, f in enumerate(followers):
        entry = {k: v for k, v in f.items() if k != "funds"}
        entry.setdefault("client_id", f"12000000{i + 1:02d}")
        entry.setdefault("access_token", f"follower-secret-token-{i + 1:04d}")
        entry.update(api_base_url=(rest_urls or {}).get(entry.get("name", ""), exchange.rest_url),
                     order_update_url=exchange.ws_url)
        raw["followers"].append(entry)
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return raw


def run_command(rig: "Rig", tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """`python run.py --config <the rig's config> ARGS...` in its own process, as an operator would."""
    path = tmp_path / "operator.yaml"
    path.write_text(rig.config_yaml)
    return subprocess.run([sys.executable, "run.py", "--config", str(path), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def fault_proxy():
    """Factory: fault_proxy(upstream_url) -> a started FaultProxy (tests/faultproxy.py), stopped
    after the test."""
    proxies: list[FaultProxy] = []

    def make(upstream: str, seed: int = 0) -> FaultProxy:
        proxies.append(FaultProxy(upstream, seed=seed).start())
        return proxies[-1]

    yield make
    for proxy in proxies:
        proxy.stop()


@pytest.fixture
def make_rig(tmp_path: Path):
    """Factory: make_rig(followers=[...], exchange={...}, config={...}, proxied=[names]) -> a running
    Rig. The REST calls of the followers named in `proxied` go through a FaultProxy each
    (`rig.proxies[name]`); their order-update sockets do not."""
    started: list[tuple[PaperExchange, Rig | None]] = []
    proxies: list[FaultProxy] = []

    def make(followers: list[dict] | None = None, exchange: dict | None = None, config: dict | None = None,
             leader_funds: float = 50_000_000, start: bool = True, clock=None,
             proxied: tuple[str, ...] | list[str] = ()) -> Rig:
        ex = PaperExchange(**{"seed": 3, "price_walk": False, "tick_seconds": 0.05, "session": "open",
                              **(exchange or {})}).start()
        started.append((ex, None))
        followers = followers or DEFAULT_FOLLOWERS
        by_name = {name: FaultProxy(ex.rest_url).start() for name in proxied}
        proxies.extend(by_name.values())
        raw = config_dict(ex, tmp_path, followers, config, {name: p.url for name, p in by_name.items()})
        cfg = parse(raw)
        ex.add_account(AccountSpec(LEADER_ID, LEADER_TOKEN, leader_funds))
        for f_cfg, f in zip(cfg.followers, followers):
            ex.add_account(AccountSpec(f_cfg.client_id, f_cfg.access_token, float(f.get("funds", 5_000_000))))
        store = Store(cfg.storage.path, retry_seconds=cfg.storage.retry_seconds)
        rig = Rig(ex, cfg, store, None, client(ex, LEADER_ID, LEADER_TOKEN),  # type: ignore[arg-type]
                  {f.name: f.client_id for f in cfg.followers}, yaml.safe_dump(raw), by_name)
        if start:
            start_rig(rig, clock=clock)
        started[-1] = (ex, rig)
        return rig

    yield make
    doubled: dict[str, int] = {}
    for ex, rig in reversed(started):
        if rig is not None and rig.copier is not None:
            rig.copier.stop()
        if rig is not None:
            rig.store.close()
            doubled.update({name: n for name, cid in rig.follower_ids.items()
                            if (n := sent_twice(ex.request_log(cid)))})
        ex.stop()
    for proxy in proxies:
        proxy.stop()
    if doubled:  # every in-process test: no copy is ever sent twice, whatever else it checks
        pytest.fail(f"placements sent again under a correlation id already used: {doubled}")


def start_rig(rig: Rig, clock=None) -> Rig:
    rig.copier = start_copier(rig.config, rig.store, clock=clock)
    # The copier is ready when every socket is logged in and the leader's baseline is recorded.
    wait_until(lambda: rig.store.settings.get(BASELINE_SETTING) is not None, 10, message="leader baseline")
    wait_until(lambda: rig.exchange.socket_count() >= 1 + len(rig.config.followers), 10,
               message="sockets logged in")
    return rig


@pytest.fixture
def rig(make_rig) -> Rig:
    return make_rig()


@pytest.fixture
def frames(rig) -> FrameInjector:
    """Raw frames on the default rig's order-update sockets: `frames.send("leader" or a follower's
    name, text)`, `frames.order_alert(account, **fields)` (see tests/frames.py; for a rig from
    `make_rig`, use `FrameInjector.for_rig(rig)`)."""
    return FrameInjector.for_rig(rig)
