"""Follower shards (`shards: N`): a leader feed process publishes the leader's updates on a NATS
JetStream stream, and N shard processes, each owning some followers (its own storage, lock and
metrics port), copy them. End to end: the real processes (`run.py --shard feed|K`), a real
nats-server, the paper exchange in a process of its own; copies are counted on the exchange's books.

nats-server is Debian's package (./test.sh installs it): where it is missing, the end-to-end tests
are skipped saying how to get it, and fail under CI=true.
"""
from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from copier.config import ConfigError, load, parse
from copier.shards import FEED, assignment, rendezvous, role_config, role_storage_path
from tests import natsserver
from tests.conftest import (ROOT, client, copier_ready, paper_control, placed_again, run_test_without_tools,
                            start_paper_process, wait_until)
from trading.orders import correlation_id


# -- which shard copies to whom ---------------------------------------------------------------------------
def test_a_followers_shard_depends_only_on_its_name_so_adding_followers_moves_none():
    names = [f"client-{i}" for i in range(200)]
    before = {name: rendezvous(name, 4) for name in names}
    after = {name: rendezvous(name, 4) for name in [*names, *(f"new-{i}" for i in range(50))]}
    assert all(after[name] == shard for name, shard in before.items())
    counts = Counter(before.values())
    assert set(counts) == {0, 1, 2, 3} and min(counts.values()) >= 30, counts  # spread, roughly even


def test_raising_the_shard_count_moves_followers_only_onto_the_new_shard():
    names = [f"client-{i}" for i in range(400)]
    moved = {name: rendezvous(name, 5) for name in names if rendezvous(name, 5) != rendezvous(name, 4)}
    assert moved and set(moved.values()) == {4}
    assert len(moved) < len(names) / 3  # about a fifth: what the new shard wins, nothing else


def live_config(tmp_path: Path, followers: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"mode": "live",
            "leader": {"client_id": "1100000001", "access_token": "leader-token", "api_base_url": "http://127.0.0.1:1",
                       "order_update_url": "ws://127.0.0.1:1"},
            "followers": [{"client_id": f"12000000{i:02d}", "access_token": f"token-{i}",
                           "api_base_url": "http://127.0.0.1:1", "order_update_url": "ws://127.0.0.1:1", **f}
                          for i, f in enumerate(followers)],
            "instruments": {"master": str(ROOT / "paper" / "data" / "instruments.csv")},
            "storage": {"path": str(tmp_path / "copytrader.db")}, **extra}


def test_each_process_has_its_own_followers_storage_and_metrics_port(tmp_path):
    raw = live_config(tmp_path, [{"name": "a", "shard": 1}, {"name": "b", "shard": 0}, {"name": "c"}], shards=2,
                      metrics={"port": 9300})
    config = parse(raw)
    shards = assignment(config)
    assert shards["a"] == 1 and shards["b"] == 0 and shards["c"] == rendezvous("c", 2)
    feed, zero, one = role_config(config, FEED), role_config(config, 0), role_config(config, 1)
    assert feed.followers == () and feed.storage.path == str(tmp_path / "copytrader.feed.db")
    assert [f.name for f in zero.followers] == sorted(n for n, k in shards.items() if k == 0)
    assert [f.name for f in one.followers] == sorted(n for n, k in shards.items() if k == 1)
    assert one.storage.path == role_storage_path(str(tmp_path / "copytrader.db"), 1) == str(
        tmp_path / "copytrader.shard-1.db")
    assert (feed.metrics.port, zero.metrics.port, one.metrics.port) == (9300, 9301, 9302)


@pytest.mark.parametrize("change,expected", [
    (lambda c: c.update(shards=0), "shards: must be >= 1"),
    (lambda c: c.update(shards=3), "shards: 3 shards for 2 followers"),
    (lambda c: c.update(shards=2, mode="paper"), "shards: needs mode: live"),
    (lambda c: c.update(stream={"url": "nats://127.0.0.1:4222"}), "stream: is used only with shards"),
    (lambda c: c["followers"][1].update(shard=0), "followers[1].shard: is used only with shards"),
    (lambda c: (c.update(shards=2), c["followers"][1].update(shard=2)), "followers[1].shard: must be below shards (2)"),
    (lambda c: c.update(shards=2, stream={"url": "http://127.0.0.1:4222"}), "stream.url: must be nats://"),
    (lambda c: c.update(shards=2, stream={"url": "nats://10.1.2.3:4222"}), "stream.url: 'nats://10.1.2.3:4222' is not "
                                                                           "encrypted"),
    (lambda c: c.update(shards=2, stream={"name": "a.b"}), "stream.name: must be"),
    (lambda c: c.update(shards=2, stream={"urls": "x"}), "stream.urls: unknown key"),
], ids=["zero", "more_than_followers", "paper", "stream_alone", "pin_alone", "pin_out_of_range", "scheme",
        "plain_text_remote", "stream_name", "typo"])
def test_a_bad_shards_config_is_refused_naming_the_key(tmp_path, change, expected):
    raw = live_config(tmp_path, [{"name": "a"}, {"name": "b"}])
    change(raw)
    with pytest.raises(ConfigError) as refused:
        parse(raw)
    assert expected in str(refused.value)


def test_renewing_the_leaders_token_is_refused_with_shards(tmp_path, monkeypatch):
    monkeypatch.setenv("COPYTRADER_TOKEN_KEY", "eYpP1cKkT7nJmM0DjBz3oN0Q8yXvlV0mUu6QhW2Jg7Y=")
    raw = live_config(tmp_path, [{"name": "a"}, {"name": "b"}], shards=2, tokens={"renew_leader_every_minutes": 60})
    with pytest.raises(ConfigError, match="tokens.renew_leader_every_minutes: cannot be used with shards"):
        parse(raw)


def test_the_stream_password_is_a_secret(tmp_path):
    config = parse(live_config(tmp_path, [{"name": "a"}], shards=1,
                               stream={"url": "nats://copier:s3cret-pass@127.0.0.1:4222"}))
    assert "s3cret-pass" in config.secrets()  # redacted from every log line


def test_a_single_process_copier_never_imports_the_nats_client():
    code = ("import sys\n"
            "import app.cli, app.commands, app.token_command, copier.tree, copier.config, copier.shards\n"
            "import actors.stream_feed, actors.stream_publisher, actors.stream_control, streams, streams.wire\n"
            "loaded = sorted(m for m in sys.modules if m == 'nats' or m.startswith('nats.'))\n"
            "print(loaded)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# -- without nats-server ----------------------------------------------------------------------------------
def shard_test_without_nats_server(tmp_path: Path, ci: bool) -> subprocess.CompletedProcess:
    return run_test_without_tools("tests/test_shards.py::test_two_shards_copy_every_leader_order_once_to_each_follower",
                                  tmp_path, ci, NATS_SERVER_SEARCH=str(tmp_path))  # nowhere to find nats-server


def test_without_nats_server_the_shard_tests_skip_saying_how_to_get_it(tmp_path):
    result = shard_test_without_nats_server(tmp_path, ci=False)
    assert result.returncode == 0, result.stdout
    assert "1 skipped" in result.stdout and "apt-get install -y nats-server" in result.stdout


def test_without_nats_server_the_shard_tests_fail_under_ci(tmp_path):
    result = shard_test_without_nats_server(tmp_path, ci=True)
    assert result.returncode == 1, result.stdout
    assert "1 failed" in result.stdout and "apt-get install -y nats-server" in result.stdout


# -- end to end -----------------------------------------------------------------------------------------------
class Cluster:
    """nats-server, the paper exchange (own process), and `run.py --shard ...` processes on one config."""

    def __init__(self, tmp_path: Path, followers: int = 4, shards: int = 2, config: dict | None = None) -> None:
        self.tmp = tmp_path
        self.nats = natsserver.NatsServer(tmp_path / "nats").start()
        self.exchange, self.urls, accounts = start_paper_process("--accounts", str(followers + 1), "--no-price-walk",
                                                                 "--unlimited")
        (self.leader_id, self.leader_token), *self.follower_accounts = accounts
        self.names = [f"f{i + 1}" for i in range(followers)]
        self.config = {
            "mode": "live", "shards": shards, "stream": {"url": self.nats.url},
            "leader": {"client_id": self.leader_id, "access_token": self.leader_token,
                       "api_base_url": self.urls["REST"], "order_update_url": self.urls["WS"]},
            "followers": [{"name": name, "client_id": cid, "access_token": token, "shard": i % shards,
                           "api_base_url": self.urls["REST"], "order_update_url": self.urls["WS"],
                           "sizing": {"strategy": "fixed_ratio", "ratio": 0.5}}
                          for i, (name, (cid, token)) in enumerate(zip(self.names, self.follower_accounts))],
            "instruments": {"master": str(ROOT / "paper" / "data" / "instruments.csv")},
            "market_hours": {"enforce": False},
            "storage": {"path": str(tmp_path / "copytrader.db")},
            "metrics": {"port": 0},
            "rate_limits": {"orders_per_second": 100, "orders_per_minute": 2000},
            # no periodic reconciliation: it would repair a copy the stream lost, and hide the loss
            "reconcile": {"interval_seconds": 0},
            **(config or {}),
        }
        self.config["stream"] = {**(config or {}).get("stream", {}), "url": self.nats.url}
        self.path = tmp_path / "config.yaml"
        self.path.write_text(yaml.safe_dump(self.config))
        self.shards = shards
        self.procs: dict[str, subprocess.Popen] = {}
        self.leader = client(self.urls["REST"], self.leader_id, self.leader_token, timeout=10)

    def db(self, role: str) -> Path:
        return Path(role_storage_path(str(self.tmp / "copytrader.db"), FEED if role == FEED else int(role)))

    def start(self, role: str) -> subprocess.Popen:
        log = open(self.tmp / f"{role}.log", "ab")
        self.procs[role] = subprocess.Popen([sys.executable, "run.py", "--config", str(self.path), "--shard", role,
                                             "run", "--no-view"], cwd=ROOT, stdout=log, stderr=log)
        return self.procs[role]

    def start_all(self) -> "Cluster":
        for role in [FEED, *map(str, range(self.shards))]:
            self.start(role)
        for role in [FEED, *map(str, range(self.shards))]:
            wait_until(lambda: copier_ready(self.db(role)), 60, interval=0.1, message=lambda: f"{role} ready: "
                       + (self.tmp / f"{role}.log").read_text()[-2000:])
        return self

    def kill_switch_applied(self, role: str) -> bool:
        """The running process of `role` has the kill switch on (its metric; storage alone may be
        ahead of the process by a poll)."""
        with sqlite3.connect(self.db(role), timeout=5) as conn:
            row = conn.execute("select value from setting where key = 'metrics_url'").fetchone()
        try:
            with urllib.request.urlopen(row[0], timeout=2) as answer:
                return "copytrader_kill_switch_active 1.0" in answer.read().decode()
        except (OSError, TypeError):
            return False

    def stream(self) -> Any:
        """A client of the stream server as the copier's processes make it (this config's streams)."""
        from copier import shards

        stream = shards.connect(load(self.path), "test")
        assert stream.wait_connected(10)
        return stream

    def wait_dropped_by_the_stream(self, before: str) -> None:
        """Wait until the stream of leader updates keeps nothing published before now (past
        `stream.max_age_hours`: the config's must be small)."""
        stream = self.stream()
        try:
            last = stream.last_sequence()
            wait_until(lambda: stream.first_sequence() > last, 30, interval=0.2,
                       message=lambda: f"the stream drops {before} ({last}: {stream.first_sequence()}-"
                                       f"{stream.last_sequence()})")
        finally:
            stream.close()

    def lose_stream_storage(self) -> None:
        """The stream server's disk replaced under it: it comes back with no stream and no consumer."""
        self.nats.kill()
        shutil.rmtree(self.nats.folder)
        self.nats.start()

    def log_tail(self, role: str, chars: int = 3000) -> str:
        return (self.tmp / f"{role}.log").read_text(errors="replace")[-chars:]

    def kill(self, role: str) -> None:
        proc = self.procs[role]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def control(self, name: str, **kwargs: Any) -> Any:
        """The paper exchange's control endpoint (faults, prices)."""
        return paper_control(self.urls["CONTROL"], name, **kwargs)

    def command(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "run.py", "--config", str(self.path), *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)

    def place(self, i: int) -> str:
        answer = self.leader.place_order(security_id="2885", exchange_segment="NSE_EQ", transaction_type="BUY",
                                         quantity=10 + 2 * (i % 5), order_type="LIMIT", product_type="INTRADAY",
                                         price=1400.0 + (i % 40))
        assert answer["status"] == "success", answer
        return answer["data"]["orderId"]

    def books(self) -> dict[str, list[dict]]:
        return {name: client(self.urls["REST"], cid, token, timeout=10).get_order_list()["data"]
                for name, (cid, token) in zip(self.names, self.follower_accounts)}

    def copies(self) -> Counter:
        """(follower, correlation id) -> orders with it on the follower's book at the exchange."""
        return Counter((name, entry.get("correlationId")) for name, book in self.books().items() for entry in book)

    def assert_exactly_once(self, leader_orders: list[str], timeout: float = 60) -> Counter:
        wanted = {(name, correlation_id(order, name)) for order in leader_orders for name in self.names}
        wait_until(lambda: wanted <= set(self.copies()), timeout, interval=0.25,
                   message=lambda: f"every follower's copy of every leader order; missing "
                                   f"{sorted(wanted - set(self.copies()))[:5]}")
        counts = self.copies()
        assert set(counts) == wanted, f"copies of nothing the leader placed: {set(counts) - wanted}"
        assert max(counts.values()) == 1, f"doubled: {[k for k, n in counts.items() if n > 1]}"
        assert placed_again(self.urls, [cid for cid, _token in self.follower_accounts]) == 0, "a copy was sent twice"
        return counts

    def stop(self) -> None:
        for proc in [*self.procs.values(), self.exchange]:
            if proc.poll() is None:
                proc.terminate()
        for proc in [*self.procs.values(), self.exchange]:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.nats.stop()


@pytest.fixture
def cluster(tmp_path):
    """Factory: cluster(followers=4, shards=2) -> a Cluster (needs nats-server: skipped, or failed under
    CI=true, without it), stopped after the test."""
    made: list[Cluster] = []

    def make(**kwargs: Any) -> Cluster:
        made.append(Cluster(tmp_path, **kwargs))
        return made[-1]

    yield make
    for c in made:
        c.stop()


def burst(cluster: Cluster, count: int, rng: random.Random, placed: list[str]) -> threading.Thread:
    """The leader places `count` orders, 10-60 ms apart, on a thread of its own."""
    def run() -> None:
        for i in range(count):
            placed.append(cluster.place(i))
            threading.Event().wait(rng.uniform(0.01, 0.06))

    thread = threading.Thread(target=run, name="leader-burst")
    thread.start()
    return thread


def stored_followers(db: Path) -> set[str]:
    with sqlite3.connect(db, timeout=5) as conn:
        return {row[0] for row in conn.execute("select distinct follower from follower_order")}


def test_two_shards_copy_every_leader_order_once_to_each_follower(cluster):
    c = cluster().start_all()
    orders = [c.place(i) for i in range(10)]
    c.assert_exactly_once(orders, timeout=30)
    # each shard copied to its own followers only, and kept them in its own storage
    assert stored_followers(c.db("0")) == {"f1", "f3"}
    assert stored_followers(c.db("1")) == {"f2", "f4"}


def test_sigkill_of_a_shard_mid_burst_never_doubles_or_misses_a_copy(cluster):
    rng = random.Random(15)
    c = cluster().start_all()
    placed: list[str] = []
    thread = burst(c, 40, rng, placed)
    for _ in range(3):  # shard 0 killed at random points of the burst, restarted at once
        wait_until(lambda: len(placed) >= 1, 10, message="burst started")
        threading.Event().wait(rng.uniform(0.1, 0.6))
        c.kill("0")
        c.start("0")
    thread.join(60)
    assert len(placed) == 40
    counts = c.assert_exactly_once(placed, timeout=90)
    print(f"shard SIGKILLed 3 times: {len(placed)} leader orders, {sum(counts.values())} copies, 0 doubled, 0 lost")


def test_sigkill_of_the_stream_server_mid_burst_never_doubles_or_misses_a_copy(cluster):
    rng = random.Random(16)
    c = cluster().start_all()
    placed: list[str] = []
    thread = burst(c, 40, rng, placed)
    wait_until(lambda: len(placed) >= 10, 10, message="burst under way")
    c.nats.kill()
    threading.Event().wait(1.0)  # the leader goes on placing while the stream server is away
    c.nats.start()
    thread.join(60)
    assert len(placed) == 40
    counts = c.assert_exactly_once(placed, timeout=90)
    print(f"stream server SIGKILLed once: {len(placed)} leader orders, {sum(counts.values())} copies, "
          "0 doubled, 0 lost")


def test_kill_switch_command_reaches_every_shard_and_status_shows_them(cluster):
    c = cluster().start_all()
    first = c.place(0)
    c.assert_exactly_once([first], timeout=30)
    done = c.command("kill-switch", "on", "--reason", "stop everything")
    assert done.returncode == 0 and done.stderr == "", done.stderr  # no traceback from the stream client's exit
    for role in ("0", "1"):
        wait_until(lambda: "kill switch: ON" in c.command("--shard", role, "status").stdout, 15,
                   message=f"shard {role} applies the kill switch")
    overview = c.command("status")
    assert overview.returncode == 0 and overview.stderr == "", overview.stderr
    assert "kill switch: ON (operator: stop everything)" in overview.stdout
    assert "shard 0: 2 followers (f1, f3): reading" in overview.stdout
    assert "shard 1: 2 followers (f2, f4): reading" in overview.stdout
    wait_until(lambda: c.kill_switch_applied("0") and c.kill_switch_applied("1"), 10, interval=0.1,
               message="both shards' processes have it on")
    second = c.place(1)
    wait_until(lambda: all(_skip(c.db(role), second) == "kill_switch_on" for role in ("0", "1")), 15,
               message="the next leader order skipped by every shard")
    assert all(not any(e.get("correlationId") == correlation_id(second, name) for e in book)
               for name, book in c.books().items())


def _skip(db: Path, leader_order_id: str) -> str | None:
    with sqlite3.connect(db, timeout=5) as conn:
        row = conn.execute("select reason from skip where leader_order_id = ? limit 1", (leader_order_id,)).fetchone()
    return row[0] if row else None


def test_a_kill_switch_one_shard_turns_on_reaches_every_other_shard(cluster):
    c = cluster(config={"kill_switch": {"after_failures": 1}})
    c.start_all()
    f1_client_id = c.follower_accounts[0][0]  # f1 is on shard 0
    c.control("reject_next", client_id=f1_client_id, error_code="DH-905", message="Invalid order", count=1)
    c.place(0)  # refused for good at f1: shard 0 turns its kill switch on
    wait_until(lambda: "kill switch: ON" in c.command("--shard", "1", "status").stdout, 20,
               message="shard 1 applies shard 0's kill switch")
    wait_until(lambda: c.kill_switch_applied("1"), 10, interval=0.1, message="shard 1's process has it on")
    later = c.place(1)
    wait_until(lambda: _skip(c.db("1"), later) == "kill_switch_on", 15, message="shard 1 skips the next order")
    assert not any(e.get("correlationId") == correlation_id(later, "f2") for e in c.books()["f2"])


def test_operator_commands_without_shard_read_every_shard_on_this_machine(cluster):
    c = cluster().start_all()
    order = c.place(0)
    c.assert_exactly_once([order], timeout=30)
    listed = c.command("orders")
    assert listed.returncode == 0, listed.stderr
    assert "shard 0 (f1, f3)" in listed.stdout and "shard 1 (f2, f4)" in listed.stdout
    assert all(f"    {name} " in listed.stdout for name in c.names)  # every follower's copy, from its shard
    replayed = c.command("replay", order)
    assert replayed.returncode == 0, replayed.stderr
    assert all(f"copy for {name} " in replayed.stdout for name in c.names)
    letters = c.command("dlq", "list")
    assert letters.returncode == 0, letters.stderr
    assert letters.stdout.count("the dead-letter queue is empty") == 2
    # a dead letter's id is its shard's own: retrying one needs the shard
    retry = c.command("dlq", "retry", "1")
    assert retry.returncode == 2 and "--shard" in retry.stderr and "dlq list" in retry.stderr
    # a shard whose storage is on another machine is named, not skipped in silence
    c.kill("1")
    c.db("1").rename(c.tmp / "elsewhere.db")
    elsewhere = c.command("orders")
    assert elsewhere.returncode == 1
    assert "shard 0 (f1, f3)" in elsewhere.stdout
    assert "shard 1: its storage is not on this machine" in elsewhere.stderr


def test_a_kill_switch_change_made_while_a_shard_is_down_applies_when_it_starts(cluster):
    c = cluster().start_all()
    c.kill("1")
    done = c.command("kill-switch", "on", "--reason", "while shard 1 is down")
    assert done.returncode == 0, done.stderr
    wait_until(lambda: "kill switch: ON" in c.command("--shard", "0", "status").stdout, 15,
               message="shard 0 applies the kill switch")
    assert "kill switch: off" in c.command("--shard", "1", "status").stdout  # down: its storage knows nothing yet
    c.start("1")
    wait_until(lambda: "kill switch: ON" in c.command("--shard", "1", "status").stdout, 30,
               message="shard 1 applies, once started, the change it missed")
    wait_until(lambda: c.kill_switch_applied("1"), 10, interval=0.1, message="shard 1's process has it on")
    order = c.place(0)
    wait_until(lambda: _skip(c.db("1"), order) == "kill_switch_on", 15,
               message=lambda: "shard 1 skips the next order; its log ends: " + c.log_tail("1"))
    assert not any(e.get("correlationId") == correlation_id(order, "f2") for e in c.books()["f2"])


def test_a_shard_with_new_storage_starts_with_a_kill_switch_older_than_the_stream_keeps_updates(cluster):
    c = cluster(config={"stream": {"max_age_hours": 0.001}})  # the stream keeps an update 3.6 s
    c.start_all()
    c.kill("1")
    done = c.command("kill-switch", "on", "--reason", "held over the weekend")
    assert done.returncode == 0, done.stderr
    wait_until(lambda: c.kill_switch_applied("0"), 15, interval=0.1, message="shard 0 has it on")
    c.place(0)  # published after the kill switch: once the stream dropped it, the switch is older still
    c.wait_dropped_by_the_stream("an update published after the kill switch went on")
    status = c.command("status")
    assert "kill switch: ON (operator: held over the weekend)" in status.stdout and status.stderr == ""
    for path in c.db("1").parent.glob(c.db("1").name + "*"):  # shard 1's machine replaced: storage new
        path.unlink()
    c.start("1")
    wait_until(lambda: copier_ready(c.db("1")), 60, interval=0.1, message=lambda: "shard 1 ready: " + c.log_tail("1"))
    wait_until(lambda: c.kill_switch_applied("1"), 15, interval=0.1,
               message=lambda: "the new shard 1 starts with the kill switch on; its log ends: " + c.log_tail("1"))
    order = c.place(1)
    wait_until(lambda: _skip(c.db("1"), order) == "kill_switch_on", 15,
               message=lambda: "shard 1 skips the next order; its log ends: " + c.log_tail("1"))
    assert not any(e.get("correlationId") == correlation_id(order, "f2") for e in c.books()["f2"])


def test_shards_copy_on_after_the_stream_server_lost_its_storage(cluster):
    c = cluster().start_all()
    first = c.place(0)
    c.assert_exactly_once([first], timeout=30)
    c.lose_stream_storage()  # no stream, no shard's consumer
    second = c.place(1)
    c.assert_exactly_once([first, second], timeout=40)


def test_a_stream_server_that_lost_its_storage_is_told_the_kill_switch_again_by_the_shards(cluster):
    c = cluster().start_all()
    done = c.command("kill-switch", "on", "--reason", "until the audit")
    assert done.returncode == 0, done.stderr
    wait_until(lambda: c.kill_switch_applied("0") and c.kill_switch_applied("1"), 15, interval=0.1,
               message="both shards have it on")
    c.lose_stream_storage()  # it knows of no kill switch
    wait_until(lambda: "kill switch: ON (operator: until the audit)" in c.command("status").stdout, 30,
               message=lambda: "the shards tell the stream server again; shard 0's log ends: " + c.log_tail("0"))


def test_a_stream_made_before_states_had_their_own_keeps_its_kill_switch_and_shards_read_it_from_there(tmp_path):
    from copier.shards import KILL_SWITCH_SUBJECT, LEADER_SUBJECT
    from streams.jetstream import JetStream
    from streams.wire import decode_kill_switch, encode_kill_switch
    from trading.kill_switch import KillSwitchState

    server = natsserver.NatsServer(tmp_path / "nats").start()
    streams: list[JetStream] = []

    def connect(**layout: Any) -> JetStream:
        streams.append(JetStream(server.url, "copytrader-1", **layout).start())
        assert streams[-1].wait_connected(10)
        return streams[-1]

    try:
        old = connect(events=[">"])  # as every earlier version made it: one stream for every subject
        on = KillSwitchState(on=True, reason="held", by="operator", at=1.0)
        old.publish(old.subject(KILL_SWITCH_SUBJECT), encode_kill_switch(on), "on-1")
        old.consumer("shard-0-control", old.subject(KILL_SWITCH_SUBJECT), fresh=True, start="last")
        old.close()
        new = connect(events=[LEADER_SUBJECT], states=[KILL_SWITCH_SUBJECT])
        subject = new.subject(KILL_SWITCH_SUBJECT)
        data = new.last(subject)
        assert data is not None and decode_kill_switch(data).reason == "held"
        [delivery] = new.consumer("shard-0-control", subject, fresh=False, start="last").fetch(10, timeout=5)
        assert decode_kill_switch(delivery.data).on  # the shard's consumer, made again on the states stream
        events = new.last_sequence()
        off = KillSwitchState(on=False, reason="back", by="operator", at=2.0)
        new.publish(subject, encode_kill_switch(off), "off-2")
        assert new.last_sequence() == events and not decode_kill_switch(new.last(subject) or b"").on
        new.publish(new.subject(LEADER_SUBJECT), b"{}", "update-1")  # updates still go to the events stream
        assert new.last_sequence() == events + 1
    finally:
        for stream in streams:
            stream.close()
        server.stop()


def test_a_new_leader_token_goes_to_every_process_on_this_machine_and_a_followers_to_its_shard(cluster, tmp_path):
    from storage.tokens import token_file_path

    c = cluster().start_all()
    env = {**os.environ, "COPYTRADER_TOKEN_KEY": "eYpP1cKkT7nJmM0DjBz3oN0Q8yXvlV0mUu6QhW2Jg7Y="}

    def token(account: str, value: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "run.py", "--config", str(c.path), "token", account], cwd=ROOT, env=env,
                              input=value + "\n", capture_output=True, text=True, timeout=60)

    leader = token("leader", c.leader_token)
    assert leader.returncode == 0, leader.stderr
    for role in (FEED, "0", "1"):
        assert token_file_path(c.db(role)).exists(), f"{role} has no token file: {leader.stdout}"
    f2 = token("f2", c.follower_accounts[1][1])  # f2 is on shard 1
    assert f2.returncode == 0, f2.stderr
    assert "copytrader.shard-1.tokens" in f2.stdout


def test_a_shard_down_longer_than_the_stream_keeps_updates_recovers_them_from_the_order_book(cluster):
    c = cluster(config={"stream": {"max_age_hours": 0.001}})  # the stream keeps an update 3.6 s
    c.start_all()
    c.kill("1")
    order = c.place(0)
    wait_until(lambda: ("f1", correlation_id(order, "f1")) in c.copies(), 20, interval=0.2,
               message="shard 0 copies it: the update went through the stream")
    c.wait_dropped_by_the_stream("the update shard 1 did not read")
    c.start("1")
    c.assert_exactly_once([order], timeout=30)  # f2 and f4 (shard 1) copied it too, once


def test_a_reload_adds_a_follower_to_its_own_shard_only_and_copies_stay_single(cluster):
    c = cluster(followers=5)
    added = c.config["followers"].pop()  # f5 (shard 0 by i % 2) joins while the shards run
    c.path.write_text(yaml.safe_dump(c.config))
    c.start_all()
    c.config["followers"].append(added)
    c.path.write_text(yaml.safe_dump(c.config))
    done = c.command("reload")  # every shard on this machine, each with its own followers
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count(" added") == 1 and "f5 added" in done.stdout, done.stdout  # none of another's
    order = c.place(0)
    c.assert_exactly_once([order], timeout=30)  # each follower once: f1..f4 as before, f5 from shard 0
