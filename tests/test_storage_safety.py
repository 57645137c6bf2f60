"""Storage as a user meets it: one copier per database, a database deleted or replaced under a
running copier, a copier started on an empty database while copies exist at the brokers, and a
disk that fills up. The copier runs as `run.py` in its own process where the user sees the
difference (exit status, log, metrics), in-process (`make_rig`) otherwise; counts are taken on
the exchange's books.

A full disk is a real one: a small tmpfs mounted in a private mount namespace (`unshare`) that
only the copier process sees, filled from outside through /proc/PID/root. Where the machine does
not allow such a namespace those tests are skipped with the reason; SQLite's own page limit
stands in for a full disk in the in-process test, which runs everywhere.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from actors.feed import BASELINE_SETTING
from observability import metrics
from storage import Store, StorageDown
from tests.conftest import (RELIANCE, ROOT, client, copier_ready, end_processes, free_port, paper_control,
                            start_paper_process, start_rig, wait_until)
from trading.adoption import find_copies
from trading.orders import OrderStatus, OrderTerms, OrderType, OrderUpdate, Product, Side, Validity, correlation_id

TERMS = OrderTerms(security_id=RELIANCE, exchange_segment="NSE_EQ", side=Side.BUY, product=Product.INTRADAY,
                   order_type=OrderType.LIMIT, validity=Validity.DAY, quantity=5, price=1400.0)


@dataclass
class Paper:
    """A paper exchange in its own process (it outlives the copier processes of a test)."""

    proc: subprocess.Popen
    urls: dict[str, str]
    accounts: list[tuple[str, str]]

    @property
    def leader(self) -> tuple[str, str]:
        return self.accounts[0]

    @property
    def follower(self) -> tuple[str, str]:
        return self.accounts[1]

    def control(self, name: str, **kwargs: Any) -> Any:
        return paper_control(self.urls["CONTROL"], name, **kwargs)

    def follower_book(self) -> list[dict]:
        return self.control("orders", client_id=self.follower[0])

    def follower_placements(self) -> int:
        return sum(1 for r in self.control("request_log", client_id=self.follower[0])
                   if r["method"] == "POST" and r["path"].endswith("/orders") and r.get("status") == 200)

    def place(self, quantity: int = 10, price: float | None = None) -> str:
        price = price or round(self.control("price", security_id=RELIANCE) * 0.97, 1)
        answer = client(self.urls["REST"], *self.leader, timeout=10).place_order(
            security_id=RELIANCE, exchange_segment="NSE_EQ", transaction_type="BUY", quantity=quantity,
            order_type="LIMIT", product_type="INTRADAY", price=price)
        assert answer["status"] == "success", answer
        return answer["data"]["orderId"]

    def cancel(self, order_id: str) -> None:
        answer = client(self.urls["REST"], *self.leader, timeout=10).cancel_order(order_id)
        assert answer["status"] == "success", answer

    def copy_of(self, leader_order_id: str) -> dict | None:
        cid = correlation_id(leader_order_id, "f1")
        return next((o for o in self.follower_book() if o.get("correlationId") == cid), None)


@pytest.fixture
def paper():
    proc, urls, accounts = start_paper_process("--accounts", "2", "--no-price-walk")
    try:
        yield Paper(proc, urls, accounts)
    finally:
        end_processes(proc)




@dataclass
class CopierProcess:
    """`run.py run` in its own process, its log in a file."""

    proc: subprocess.Popen
    log: Path
    metrics_port: int
    _log_file: Any = field(default=None, repr=False)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def metric(self, name: str) -> float | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2) as answer:
                text = answer.read().decode()
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
        return None

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._log_file:
            self._log_file.close()
        return self.proc.returncode


def write_config(paper: Paper, path: Path, storage: Path, metrics_port: int) -> Path:
    (leader_id, leader_token), (follower_id, follower_token) = paper.leader, paper.follower
    config = {
        "mode": "live",
        "leader": {"client_id": leader_id, "access_token": leader_token, "api_base_url": paper.urls["REST"],
                   "order_update_url": paper.urls["WS"]},
        "followers": [{"name": "f1", "client_id": follower_id, "access_token": follower_token,
                       "api_base_url": paper.urls["REST"], "order_update_url": paper.urls["WS"],
                       "sizing": {"strategy": "fixed_ratio", "ratio": 0.5}}],
        "instruments": {"master": str(ROOT / "paper" / "data" / "instruments.csv")},
        "market_hours": {"enforce": False},
        "storage": {"path": str(storage)},
        "metrics": {"port": metrics_port},
        "copy": {"lag_alert_seconds": 0},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def start_copier(config: Path, log: Path, metrics_port: int, prefix: list[str] | None = None) -> CopierProcess:
    log_file = log.open("w")
    proc = subprocess.Popen([*(prefix or []), sys.executable, "run.py", "--config", str(config), "run", "--no-view"],
                            cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT)
    return CopierProcess(proc, log, metrics_port, log_file)


def operator(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "run.py", "--config", str(config), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


# -- one copier per storage ---------------------------------------------------------------------
def test_a_second_copier_on_the_same_storage_exits_naming_the_first_while_the_first_keeps_copying(paper, tmp_path):
    db = tmp_path / "copytrader.db"
    first_port, second_port = free_port(), free_port()
    first = start_copier(write_config(paper, tmp_path / "first.yaml", db, first_port), tmp_path / "first.log",
                         first_port)
    try:
        wait_until(lambda: copier_ready(db), 30, message="first copier ready")
        second_config = write_config(paper, tmp_path / "second.yaml", db, second_port)
        second = subprocess.Popen([sys.executable, "run.py", "--config", str(second_config), "run", "--no-view"],
                                  cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = second.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            second.kill()
            second.communicate()
            pytest.fail("a second copier on the same storage kept running beside the first")
        assert second.returncode != 0
        assert f"pid {first.proc.pid}" in err, err
        assert "Traceback" not in out + err
        assert first.proc.poll() is None, "the first copier stopped"

        # the first copier still copies, once, at the right size, and follows modifications once
        leader_id = paper.place(quantity=10)
        copy = wait_until(lambda: paper.copy_of(leader_id), 15, message="the copy")
        assert copy["quantity"] == 5
        client(paper.urls["REST"], *paper.leader).modify_order(
            leader_id, order_type="LIMIT", leg_name="", quantity=10, price=copy["price"] - 1.0, trigger_price=0,
            disclosed_quantity=0, validity="DAY")
        wait_until(lambda: paper.copy_of(leader_id)["price"] == copy["price"] - 1.0, 15, message="copy modified")
        assert paper.control("modification_count", client_id=paper.follower[0], order_id=copy["orderId"]) == 1
        assert paper.follower_placements() == 1

        # operator commands that only read keep working while the copier holds the storage
        for args, ok in ((["status"], {0}), (["orders"], {0}), (["dlq", "list"], {0}), (["replay", leader_id], {0}),
                         (["reconcile"], {0, 3})):
            done = operator(second_config, *args)
            assert done.returncode in ok, (args, done.stdout, done.stderr)
        assert "copier: running" in operator(second_config, "status").stdout
        assert first.stop() == 0
    finally:
        first.stop()


# -- the database deleted or replaced under a running copier ------------------------------------
@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_database_deleted_or_replaced_while_running_stops_the_copier_with_a_critical_alert(paper, tmp_path, how):
    db = tmp_path / "copytrader.db"
    port = free_port()
    copier = start_copier(write_config(paper, tmp_path / "config.yaml", db, port), tmp_path / "copier.log", port)
    try:
        wait_until(lambda: copier_ready(db), 30, message="copier ready")
        first = paper.place(quantity=10)
        wait_until(lambda: paper.copy_of(first), 15, message="a first copy")
        if how == "deleted":
            db.unlink()
        else:
            other = tmp_path / "other.db"
            sqlite3.connect(other).close()
            os.replace(other, db)
        try:
            code = copier.proc.wait(15)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the copier kept running after its database was {how}")
        assert code != 0
        log = copier.log_text()
        alerts = [json.loads(line) for line in log.splitlines() if line.startswith("{") and '"ALERT' in line]
        assert any(a["level"] == "critical" and how in a["message"] and str(db) in a["message"] for a in alerts), log
        assert "Traceback" not in log
        assert f"stopped: storage lost: the database file {db} was" in log
    finally:
        copier.stop()


# -- an empty database at start: copies at the brokers are adopted ------------------------------
def test_a_start_with_an_empty_database_adopts_the_followers_copies_of_open_leader_orders(make_rig, tmp_path):
    rig = make_rig()
    leader_id = rig.place(quantity=10)
    rig.follower_copy(leader_id)
    rig.copier.stop()
    rig.store.close()
    for path in tmp_path.glob("copytrader.db*"):  # the database is lost
        path.unlink()
    rig.store = Store(rig.config.storage.path, retry_seconds=rig.config.storage.retry_seconds)
    start_rig(rig)

    row = rig.wait_row(leader_id, lambda r: r.broker_order_id is not None, message="the copy adopted")
    assert [s.reason for s in rig.skips(leader_id)] == []
    assert row.broker_order_id == rig.follower_book()[0]["orderId"]
    rig.cancel(leader_id)
    rig.wait_copy(leader_id, lambda c: c["orderStatus"] == "CANCELLED", message="the adopted copy cancelled")
    assert len(rig.follower_book()) == 1
    assert rig.follower_placements() == 1


def test_the_newest_generation_of_a_copy_is_the_one_adopted():
    book = [OrderUpdate(order_id=f"B{g}", status=OrderStatus.CANCELLED if g < 2 else OrderStatus.PENDING,
                        terms=TERMS, correlation_id=correlation_id("L1", "f1", g)) for g in (0, 1, 2)]
    book.append(OrderUpdate(order_id="X", status=OrderStatus.PENDING, terms=TERMS,
                            correlation_id=correlation_id("L2", "f2")))  # another follower's id
    found = find_copies(["L1", "L2", "L3"], {"f1": book})
    assert {leader: {f: (g, o.order_id) for f, (g, o) in copies.items()} for leader, copies in found.items()} == \
        {"L1": {"f1": (2, "B2")}}


# -- a full disk ----------------------------------------------------------------------------------
def _fill_database(store: Store) -> None:
    """SQLite's own page limit on the store's connection: writes then fail as on a full disk
    ("database or disk is full"). This runs everywhere; the tmpfs tests below are the real disk."""
    pages = store.read(lambda: store.db.execute_sql("PRAGMA page_count").fetchone()[0])
    store.read(lambda: store.db.execute_sql(f"PRAGMA max_page_count = {pages}"))
    for i in range(1000):
        try:
            store.settings.set(f"filler-{i}", "x" * 3000)
        except StorageDown:
            return
    raise AssertionError("the page limit never filled the database")


def test_a_copy_answered_while_storage_is_down_is_placed_once_and_recorded_when_it_is_back(make_rig):
    rig = make_rig()
    restarts = metrics.ACTOR_RESTARTS.labels("order")._value.get()
    rig.exchange.faults.delay_answers(1.5, client_id=rig.follower_ids["f1"], count=1)
    leader_id = rig.place(quantity=10)
    wait_until(lambda: rig.follower_book(), message="the copy placed at the exchange, its answer delayed")
    _fill_database(rig.store)
    assert not rig.store.healthy and metrics.READY._value.get() == 0
    during = rig.place(quantity=20)
    time.sleep(2.5)  # storage stays down while the placement's answer arrives
    assert len(rig.follower_book()) == 1

    rig.store.read(lambda: rig.store.db.execute_sql("PRAGMA max_page_count = 1073741823"))  # space is back
    wait_until(lambda: rig.store.healthy, message="storage healthy again")
    row = rig.wait_row(leader_id, lambda r: r.broker_order_id is not None, message="the answer recorded")
    assert row.broker_order_id == rig.follower_book()[0]["orderId"]
    assert rig.wait_skip(during).reason == "storage_unavailable"
    assert rig.follower_placements() == 1 and len(rig.follower_book()) == 1
    assert metrics.READY._value.get() == 1
    assert metrics.ACTOR_RESTARTS.labels("order")._value.get() == restarts  # not counted as crashes
    assert rig.follower_copy(rig.place(quantity=12))["quantity"] == 6  # copying resumed


def _private_tmpfs_prefix(mountpoint: Path, size: str) -> list[str]:
    """A command prefix that runs the command in its own mount namespace with a tmpfs of `size` on
    `mountpoint` (visible to that process only); skips the test where this is not allowed."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("needs util-linux `unshare` to give the copier a small disk of its own")
    mountpoint.mkdir(exist_ok=True)
    prefix = [unshare, "--user", "--map-root-user", "--mount", "sh", "-c",
              f'mount -t tmpfs -o size={size},mode=0700 tmpfs "$0" && exec "$@"', str(mountpoint)]
    probe = subprocess.run([*prefix, "true"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"this machine does not allow a private tmpfs (user and mount namespaces): "
                    f"{probe.stderr.strip()[:200]}")
    return prefix


def _fill(directory: Path) -> Path:
    """Write a file into `directory` until its filesystem is full; returns the file."""
    filler = directory / "filler"
    chunk = b"\0" * 65536
    with filler.open("wb", buffering=0) as f:
        while True:
            try:
                f.write(chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                break
    while True:  # the last few bytes a smaller write can still take
        try:
            with filler.open("ab", buffering=0) as f:
                f.write(b"\0" * 512)
        except OSError:
            return filler


def _rows(db: Path, sql: str, *args: Any) -> list[tuple]:
    """Query a copy of the copier's database. SQLite resolves the /proc/PID/root link to this
    process's own root, so the files are copied out first; the copy of the write-ahead log brings
    every committed transaction (a frame half written at its end is ignored, as after a crash)."""
    with tempfile.TemporaryDirectory() as scratch:
        try:
            for suffix in ("", "-wal"):
                if Path(f"{db}{suffix}").exists():
                    shutil.copyfile(f"{db}{suffix}", Path(scratch) / f"copy.db{suffix}")
            with sqlite3.connect(Path(scratch) / "copy.db", timeout=2) as conn:
                return conn.execute(sql, args).fetchall()
        except (OSError, sqlite3.Error):
            return []


def _ready(db: Path) -> bool:
    return bool(_rows(db, "select 1 from setting where key = ?", BASELINE_SETTING))


def test_a_full_disk_for_a_few_seconds_skips_new_orders_and_copying_resumes_by_itself(paper, tmp_path):
    mount = tmp_path / "disk"
    prefix = _private_tmpfs_prefix(mount, "4m")
    port = free_port()
    config = write_config(paper, tmp_path / "config.yaml", mount / "copytrader.db", port)
    copier = start_copier(config, tmp_path / "copier.log", port, prefix)
    try:
        disk = Path(f"/proc/{copier.proc.pid}/root") / str(mount).lstrip("/")
        db = disk / "copytrader.db"
        wait_until(lambda: _ready(db), 30, message="copier ready")
        before = paper.place(quantity=10)
        wait_until(lambda: paper.copy_of(before), 15, message="a copy before the disk fills")
        assert copier.metric("copytrader_storage_healthy") == 1

        filler = _fill(disk)
        # The copier notices when a write finds no room: keep acting as the leader until it does.
        placed_while_filling: list[str] = []

        def storage_down() -> bool:
            if copier.metric("copytrader_storage_healthy") == 0:
                return True
            placed_while_filling.append(paper.place(quantity=10, price=1300.0 + len(placed_while_filling)))
            return False

        wait_until(storage_down, 30, interval=0.2, message="the health gauge at 0")
        assert copier.metric("copytrader_ready") == 0
        placements = paper.follower_placements()
        during = [paper.place(quantity=10, price=1250.0 + i) for i in range(3)]
        paper.cancel(before)
        time.sleep(2.0)  # the disk stays full for a few seconds
        assert paper.follower_placements() == placements, "a copy was placed while storage could not record it"
        assert copier.proc.poll() is None, "the copier stopped on a full disk"

        filler.unlink()
        wait_until(lambda: copier.metric("copytrader_storage_healthy") == 1, 30, interval=0.2,
                   message="the health gauge back at 1")
        wait_until(lambda: copier.metric("copytrader_ready") == 1, 10, interval=0.2, message="ready again")

        # orders that arrived while storage was down: recorded as skips, never copied
        for leader_id in during:
            wait_until(lambda: _rows(db, "select reason, detail from skip where leader_order_id = ?", leader_id), 15,
                       message=f"a recorded skip for {leader_id}")
            [(reason, detail)] = _rows(db, "select reason, detail from skip where leader_order_id = ?", leader_id)
            assert reason == "storage_unavailable" and "storage" in detail
            assert paper.copy_of(leader_id) is None
        # the leader's cancel during the outage reaches the copy made before it
        wait_until(lambda: paper.copy_of(before)["orderStatus"] == "CANCELLED", 15, message="missed cancel applied")
        # copying resumes by itself
        after = paper.place(quantity=12)
        assert wait_until(lambda: paper.copy_of(after), 15, message="a copy after recovery")["quantity"] == 6
        # every order at the follower has its record in storage
        stored = {cid for (cid,) in _rows(db, "select correlation_id from follower_order")}
        assert {o["correlationId"] for o in paper.follower_book()} <= stored
        for leader_id in placed_while_filling:  # copied once, or recorded as not copied
            assert paper.copy_of(leader_id) is not None or _rows(
                db, "select reason from skip where leader_order_id = ?", leader_id)

        log = copier.log_text()
        assert sum("database or disk is full" in line for line in log.splitlines()) == 1, log[-4000:]
        assert "cannot rollback" not in log
        assert "Traceback" not in log
        assert copier.stop() == 0
    finally:
        copier.stop()


def test_a_restart_on_a_full_disk_is_one_clear_line_and_a_non_zero_exit(paper, tmp_path):
    mount = tmp_path / "disk"
    prefix = _private_tmpfs_prefix(mount, "1m")
    seed = tmp_path / "seed.db"  # the database of an earlier run, closed cleanly
    Store(seed).close()
    config = write_config(paper, tmp_path / "config.yaml", mount / "copytrader.db", free_port())
    fill_then_run = [*prefix, "sh", "-c",
                     f'cp "{seed}" "{mount}/copytrader.db" && '
                     f'(dd if=/dev/zero of="{mount}/filler" bs=4k 2>/dev/null || true) && exec "$@"', "sh"]
    done = subprocess.run([*fill_then_run, sys.executable, "run.py", "--config", str(config), "run", "--no-view"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert str(mount / "copytrader.db") in lines[0], lines[0]
    assert "disk is full" in lines[0].replace(str(mount), ""), lines[0]
