"""Live control of followers while the copier runs: pause, resume (with or without catching up),
sizing changes, followers added and removed from the config file, and square-off. Operators act
through `run.py` in another process, as they would; every assertion reads the exchange's books."""
from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from collections import Counter
from pathlib import Path

import yaml
from rich.console import Console

from actors.sizing_control import FOLLOWER_PAUSED
from app.commands import METRICS_URL_SETTING
from app.live_view import render
from observability import metrics
from storage.readonly import skipped_orders
from tests.conftest import (ROOT, Rig, client, copier_ready, end_processes, run_command, start_paper_process,
                            start_rig, wait_until)
from tests.faultproxy import FIRST
from trading.orders import correlation_id

TWO = [{"name": "f1", "sizing": {"strategy": "fixed_ratio", "ratio": 0.5}, "funds": 5_000_000},
       {"name": "f2", "sizing": {"strategy": "fixed_ratio", "ratio": 1.0}, "funds": 5_000_000}]
UNTHROTTLED_EXCHANGE = {"rate_limits": {"per_second": 1000, "per_minute": None, "per_hour": None, "per_day": None}}
FAST_COPIER = {"rate_limits": {"orders_per_second": 100, "orders_per_minute": 1000}}


def answering(rig: Rig) -> Rig:
    """Operator commands find a running copier by its metrics endpoint, as they find run.py's."""
    port = metrics.serve(0)
    rig.store.settings.set(METRICS_URL_SETTING, f"http://127.0.0.1:{port}/metrics")
    return rig


def book(rig: Rig, follower: str) -> Counter:
    """The follower's orders on the exchange, counted by correlation id."""
    return Counter(entry.get("correlationId") for entry in rig.follower_book(follower))


def decided(rig: Rig, leader_order_id: str, follower: str) -> bool:
    row = rig.copy_row(leader_order_id, follower)
    return row is not None and (row.status == "SKIPPED" or row.broker_order_id is not None)


def net_positions(rig: Rig, follower: str) -> dict[str, int]:
    return {p["securityId"]: p["netQty"] for p in rig.exchange.positions(rig.follower_ids[follower])}


def paused_gauge(follower: str) -> float | None:
    return metrics.FOLLOWER_PAUSED.labels(follower)._value.get()


# -- pause and resume --------------------------------------------------------------------------------
def test_a_pause_during_a_burst_loses_and_doubles_nothing_and_records_each_order_it_did_not_copy(make_rig,
                                                                                                 tmp_path):
    rig = answering(make_rig(followers=TWO, exchange=UNTHROTTLED_EXCHANGE, config=FAST_COPIER))
    placed: list[str] = []
    stop = threading.Event()

    def burst() -> None:
        i = 0
        while not stop.is_set() and i < 300:
            placed.append(rig.place(quantity=10 + 2 * (i % 5), price=1400.0 + i % 20))
            i += 1
            stop.wait(0.02)

    thread = threading.Thread(target=burst)
    thread.start()
    try:
        wait_until(lambda: len(placed) >= 10, message="the burst under way")
        paused = run_command(rig, tmp_path, "follower", "pause", "f1", "--reason", "checking the account")
        answered_at = len(placed)  # the orders placed from here on were placed after the pause took effect
        wait_until(lambda: len(placed) >= answered_at + 10, message="more of the burst after the pause")
    finally:
        stop.set()
        thread.join(30)
    assert paused.returncode == 0, paused.stdout + paused.stderr
    assert "f1 paused" in paused.stdout

    wait_until(lambda: all(decided(rig, o, f) for o in placed for f in ("f1", "f2")), 60,
               message="every leader order copied or skipped for both followers")
    f1, f2 = book(rig, "f1"), book(rig, "f2")
    assert max(f1.values()) == 1 and max(f2.values()) == 1, "a copy placed twice"
    assert len(f2) == len(placed), "f2 was not paused: it copies every order"
    copied = {o for o in placed if rig.copy_row(o, "f1").correlation_id in f1}
    skipped = {o for o in placed if [s.reason for s in rig.skips(o, "f1")] == ["follower_paused"]}
    assert copied | skipped == set(placed), "a leader order neither copied nor recorded as skipped"
    assert not copied & skipped
    assert len(f1) == len(copied)
    assert set(placed[answered_at:]) <= skipped, "an order placed after the pause was copied"
    assert len(copied) >= 10 and len(skipped) >= 10
    print(f"pause during a burst: {len(placed)} leader orders, f1 {len(copied)} copied + {len(skipped)} "
          f"skipped as follower_paused, f2 {len(f2)} copied; 0 lost, 0 doubled")


def test_a_pause_during_a_burst_holds_through_a_sigkill_with_nothing_lost_or_doubled(tmp_path):
    """The real run.py: f1 paused mid-burst, the copier SIGKILLed a little later and started again
    while the leader goes on placing. Every leader order ends copied exactly once to f2, and to f1
    either copied once (before the pause) or recorded once as a follower_paused skip."""
    exchange, urls, accounts = start_paper_process("--accounts", "3", "--no-price-walk", "--unlimited")
    copier: subprocess.Popen | None = None
    try:
        (leader_id, leader_token), *followers = accounts
        path, db = tmp_path / "config.yaml", tmp_path / "copytrader.db"
        path.write_text(yaml.safe_dump({
            "mode": "live",
            "leader": {"client_id": leader_id, "access_token": leader_token, "api_base_url": urls["REST"],
                       "order_update_url": urls["WS"]},
            "followers": [{"name": f"f{i + 1}", "client_id": cid, "access_token": tok, "api_base_url": urls["REST"],
                           "order_update_url": urls["WS"], "sizing": {"strategy": "fixed_ratio", "ratio": 1.0}}
                          for i, (cid, tok) in enumerate(followers)],
            "instruments": {"master": str(ROOT / "paper" / "data" / "instruments.csv")},
            "market_hours": {"enforce": False},
            "storage": {"path": str(db)},
            "metrics": {"port": 0},
            "rate_limits": {"orders_per_second": 100, "orders_per_minute": 1000},
        }))

        def start() -> subprocess.Popen:
            return subprocess.Popen([sys.executable, "run.py", "--config", str(path), "run", "--no-view"], cwd=ROOT,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        copier = start()
        wait_until(lambda: copier_ready(db), 30, message="copier ready")
        leader = client(urls["REST"], leader_id, leader_token, timeout=10)
        placed: list[str] = []
        stop = threading.Event()

        def burst() -> None:
            i = 0
            while not stop.is_set():
                answer = leader.place_order(security_id="2885", exchange_segment="NSE_EQ", transaction_type="BUY",
                                            quantity=10 + 2 * (i % 5), order_type="LIMIT", product_type="INTRADAY",
                                            price=1400.0 + i % 40)
                assert answer["status"] == "success", answer
                placed.append(answer["data"]["orderId"])
                i += 1
                stop.wait(0.03)

        thread = threading.Thread(target=burst)
        thread.start()
        try:
            wait_until(lambda: len(placed) >= 10, 30, message="the burst under way")
            paused = run_command_at(path, "follower", "pause", "f1")
            after_pause = len(placed)
            wait_until(lambda: len(placed) >= after_pause + 5, 30, message="more of the burst after the pause")
            os.kill(copier.pid, signal.SIGKILL)  # with copies of the burst on their way
            copier.wait(10)
            copier = start()
            wait_until(lambda: copier_ready(db), 30, message="copier ready again")
            restarted = len(placed)
            wait_until(lambda: len(placed) >= restarted + 10, 30, message="the burst going on after the restart")
        finally:
            stop.set()
            thread.join(30)
        assert paused.returncode == 0, paused.stdout + paused.stderr

        def book(i: int) -> Counter:
            cid, tok = followers[i]
            return Counter(e.get("correlationId") for e in client(urls["REST"], cid, tok, timeout=10)
                           .get_order_list()["data"] or [])

        f1_cids = {correlation_id(order, "f1"): order for order in placed}
        wait_until(lambda: sum(book(1).values()) >= len(placed)
                   and sum(book(0).values()) + len(skipped_orders(db, "f1", FOLLOWER_PAUSED)) >= len(placed),
                   60, interval=0.2, message="every leader order copied or skipped for both followers")
        f1, f2 = book(0), book(1)
        skipped = skipped_orders(db, "f1", FOLLOWER_PAUSED)
        assert max(f1.values()) == 1 and max(f2.values()) == 1, "a copy placed twice"
        assert set(f2) == {correlation_id(order, "f2") for order in placed}, "f2 (not paused) missed or doubled"
        assert set(f1) <= set(f1_cids), "f1 got an order that is no copy's first placement"
        copied = {f1_cids[cid] for cid in f1}
        assert len(skipped) == len(set(skipped)), "a leader order skipped twice"
        assert not copied & set(skipped), "a leader order both copied and skipped"
        assert copied | set(skipped) == set(placed), "a leader order neither copied nor recorded as skipped"
        assert set(placed[after_pause:]) <= set(skipped), "an order placed after the pause (or the restart) was copied"
        print(f"pause during a burst, then SIGKILL: {len(placed)} leader orders ({len(placed) - restarted} after the "
              f"restart); f1 {len(copied)} copied + {len(skipped)} skipped as follower_paused; f2 {len(f2)} copied; "
              "0 lost, 0 doubled")
    finally:
        end_processes(copier, exchange)


def test_a_paused_follower_stays_paused_across_a_restart_and_resuming_does_not_backfill(make_rig, tmp_path):
    rig = answering(make_rig())
    assert run_command(rig, tmp_path, "follower", "pause", "f1").returncode == 0
    rig.copier.stop()
    start_rig(rig)  # the pause is stored: the config (which has no pause) does not undo it

    while_paused = rig.place(quantity=10, price=1400.0)
    skip = rig.wait_skip(while_paused, "f1")
    assert skip.reason == "follower_paused" and "paused by" in skip.detail
    assert paused_gauge("f1") == 1

    resumed = run_command(rig, tmp_path, "follower", "resume", "f1")
    assert resumed.returncode == 0, resumed.stderr
    assert paused_gauge("f1") == 0
    again = run_command(rig, tmp_path, "follower", "resume", "f1")
    assert again.returncode == 0 and "f1 was not paused" in again.stdout, again.stdout + again.stderr
    after = rig.place(quantity=10, price=1401.0)
    assert rig.follower_copy(after)["quantity"] == 5
    assert len(rig.follower_book("f1")) == 1, "the order placed while paused was back-filled"

    history = run_command(rig, tmp_path, "follower", "history", "f1")
    assert history.returncode == 0, history.stderr
    lines = history.stdout.splitlines()
    assert any(" pause " in line and "f1" in line for line in lines), history.stdout
    assert len([line for line in lines if " resume " in line and "f1" in line]) == 1, "a resume that changed nothing recorded"


def test_resume_with_catch_up_copies_only_the_leader_orders_still_open(make_rig, tmp_path):
    rig = answering(make_rig())
    assert run_command(rig, tmp_path, "follower", "pause", "f1").returncode == 0
    still_open = rig.place(quantity=10, price=1400.0)
    cancelled = rig.place(quantity=20, price=1401.0)
    for order in (still_open, cancelled):
        assert rig.wait_skip(order, "f1").reason == "follower_paused"
    rig.cancel(cancelled)
    wait_until(lambda: rig.store.leader_order(cancelled).status == "CANCELLED", message="the leader's cancel seen")

    caught_up = run_command(rig, tmp_path, "follower", "resume", "f1", "--catch-up")
    assert caught_up.returncode == 0, caught_up.stderr
    assert "1 still-open leader order" in caught_up.stdout, caught_up.stdout
    assert rig.follower_copy(still_open)["quantity"] == 5
    assert len(rig.follower_book("f1")) == 1, "a closed leader order was copied"
    rig.modify(still_open, price=1398.0)  # a caught-up copy follows the leader like any other
    rig.wait_copy(still_open, lambda c: c["price"] == 1398.0, message="modified with the leader")


def test_follower_set_resizes_new_copies_is_validated_like_the_config_and_outlives_a_restart(make_rig, tmp_path):
    rig = answering(make_rig())
    negative = run_command(rig, tmp_path, "follower", "set", "f1", "ratio=-1")
    assert negative.returncode == 2 and "sizing.ratio: must be > 0" in negative.stderr, negative.stderr
    typo = run_command(rig, tmp_path, "follower", "set", "f1", "rattio=2")
    assert typo.returncode == 2 and "sizing.rattio: unknown key" in typo.stderr, typo.stderr
    unused = run_command(rig, tmp_path, "follower", "set", "f1", "lots=2")
    assert unused.returncode == 2 and "sizing.lots: not used by strategy fixed_ratio" in unused.stderr, unused.stderr
    assert rig.follower_copy(rig.place(quantity=40, price=1400.0))["quantity"] == 20, "a refused change applied"

    changed = run_command(rig, tmp_path, "follower", "set", "f1", "ratio=0.25")
    assert changed.returncode == 0, changed.stderr
    assert rig.follower_copy(rig.place(quantity=40, price=1401.0))["quantity"] == 10
    rig.copier.stop()
    start_rig(rig)  # the stored sizing wins over the config's ratio 0.5
    assert rig.follower_copy(rig.place(quantity=40, price=1402.0))["quantity"] == 10

    assert run_command(rig, tmp_path, "follower", "reset", "f1").returncode == 0
    assert rig.follower_copy(rig.place(quantity=40, price=1403.0))["quantity"] == 20
    listing = run_command(rig, tmp_path, "follower", "list")
    assert listing.returncode == 0 and "f1" in listing.stdout and "ratio 0.5" in listing.stdout, listing.stdout


def test_the_live_view_and_the_metrics_show_a_paused_follower(make_rig, tmp_path):
    rig = answering(make_rig(followers=TWO))
    assert paused_gauge("f1") == 0 and paused_gauge("f2") == 0
    assert run_command(rig, tmp_path, "follower", "pause", "f1").returncode == 0
    assert paused_gauge("f1") == 1 and paused_gauge("f2") == 0
    console = Console(file=io.StringIO(), width=120, height=24, force_terminal=False, color_system=None)
    console.print(render(rig.store, rig.config))
    shown = console.file.getvalue()
    assert "f1 (paused)" in shown and "f2 (paused)" not in shown, shown
    status = run_command(rig, tmp_path, "status")
    assert any(line.startswith("f1") and "PAUSED" in line for line in status.stdout.splitlines()), status.stdout


def test_in_paper_mode_a_change_without_a_running_copier_is_refused_as_the_next_start_empties_storage(tmp_path):
    path = tmp_path / "paper.yaml"
    path.write_text(yaml.safe_dump({"mode": "paper", "followers": [{"name": "f1"}],
                                    "storage": {"path": str(tmp_path / "copytrader.db")}, "metrics": {"port": 0}}))
    for args in (("pause", "f1"), ("set", "f1", "ratio=2")):
        result = run_command_at(path, "follower", *args)
        assert result.returncode == 1 and "paper mode starts every run on empty storage" in result.stderr, result.stderr
    assert "paused" not in run_command_at(path, "follower", "list").stdout


# -- square-off -------------------------------------------------------------------------------------
def _filled_and_open_copies(rig: Rig, followers: tuple[str, ...]) -> tuple[str, str]:
    filled = rig.place(quantity=10, order_type="MARKET")
    for f in followers:
        rig.wait_copy(filled, lambda c: c["orderStatus"] == "TRADED", follower=f, message="filled")
    working = rig.place(quantity=20, price=1300.0)
    for f in followers:
        rig.follower_copy(working, f)
    return filled, working


def test_square_off_cancels_open_copies_closes_positions_at_market_and_leaves_the_follower_paused(make_rig,
                                                                                                  tmp_path):
    rig = answering(make_rig(followers=TWO))
    _filled, working = _filled_and_open_copies(rig, ("f1", "f2"))
    assert net_positions(rig, "f1") == {"2885": 5} and net_positions(rig, "f2") == {"2885": 10}

    result = run_command(rig, tmp_path, "square-off", "f1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "confirmed" in result.stdout, result.stdout
    assert rig.follower_order_now(working, "f1")["orderStatus"] == "CANCELLED"
    assert net_positions(rig, "f1") == {"2885": 0}
    closing = [e for e in rig.follower_book("f1") if e["transactionType"] == "SELL"]
    assert len(closing) == 1 and closing[0]["orderType"] == "MARKET" and closing[0]["quantity"] == 5, closing
    # f2 was not asked for
    assert net_positions(rig, "f2") == {"2885": 10}
    assert rig.follower_order_now(working, "f2")["orderStatus"] == "PENDING"
    # f1 is left paused
    later = rig.place(quantity=10, price=1301.0)
    assert rig.wait_skip(later, "f1").reason == "follower_paused"
    rig.follower_copy(later, "f2")
    assert paused_gauge("f1") == 1


def test_square_off_of_one_segment_closes_only_the_positions_in_it(make_rig, tmp_path):
    rig = answering(make_rig())
    stock = rig.place(quantity=10, order_type="MARKET")
    option = rig.place(security_id="45105", segment="NSE_FNO", quantity=150, order_type="MARKET", product="MARGIN")
    for order in (stock, option):
        rig.wait_copy(order, lambda c: c["orderStatus"] == "TRADED", message="filled")
    assert net_positions(rig, "f1") == {"2885": 5, "45105": 75}
    result = run_command(rig, tmp_path, "square-off", "f1", "--segment", "NSE_FNO")
    assert result.returncode == 0, result.stdout + result.stderr
    assert net_positions(rig, "f1") == {"2885": 5, "45105": 0}
    bad = run_command(rig, tmp_path, "square-off", "f1", "--segment", "NSE_FUT")
    assert bad.returncode == 2 and "unknown segment 'NSE_FUT'" in bad.stderr, bad.stderr


def test_square_off_all_flattens_every_follower(make_rig, tmp_path):
    rig = answering(make_rig(followers=TWO))
    _filled_and_open_copies(rig, ("f1", "f2"))
    result = run_command(rig, tmp_path, "square-off", "--all")
    assert result.returncode == 0, result.stdout + result.stderr
    assert net_positions(rig, "f1") == {"2885": 0} and net_positions(rig, "f2") == {"2885": 0}
    for f in ("f1", "f2"):
        assert not [e for e in rig.follower_book(f) if e["orderStatus"] in ("PENDING", "TRANSIT")]


def test_square_off_closes_positions_with_the_kill_switch_on(make_rig, tmp_path):
    """The kill switch stops copies; a square-off is the operator's own order, and it is what they
    reach for once copying is stopped."""
    rig = answering(make_rig())
    filled = rig.place(quantity=10, order_type="MARKET")
    rig.wait_copy(filled, lambda c: c["orderStatus"] == "TRADED", message="filled")
    assert run_command(rig, tmp_path, "kill-switch", "on", "--reason", "leader gone").returncode == 0
    result = run_command(rig, tmp_path, "square-off", "f1")
    assert result.returncode == 0 and "confirmed flat" in result.stdout, result.stdout + result.stderr
    assert net_positions(rig, "f1") == {"2885": 0}


def test_a_closing_order_whose_answer_was_lost_is_looked_up_not_placed_again_even_across_a_restart(
        make_rig, tmp_path):
    rig = answering(make_rig(proxied=["f1"], config={"broker": {"timeout_seconds": 1}}))
    filled = rig.place(quantity=10, order_type="MARKET")
    rig.wait_copy(filled, lambda c: c["orderStatus"] == "TRADED", message="filled")
    # the closing order reaches the exchange; its answer never comes back
    rig.proxies["f1"].hang("POST /orders", seconds=30, forward=FIRST, count=1)
    path = tmp_path / "operator.yaml"
    path.write_text(rig.config_yaml)
    command = subprocess.Popen([sys.executable, "run.py", "--config", str(path), "square-off", "f1"], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: any(e["transactionType"] == "SELL" for e in rig.follower_book("f1")), 30,
                   message="the closing order at the exchange")
        rig.copier.stop()  # mid square-off: the closing order's answer still held
        rig.proxies["f1"].clear()
        start_rig(rig)
        wait_until(lambda: net_positions(rig, "f1") == {"2885": 0}, 30, message="f1 flat")
        history = lambda: run_command(rig, tmp_path, "follower", "history", "f1").stdout  # noqa: E731
        wait_until(lambda: "square-off" in history() and "confirmed" in history(), 30,
                   message=lambda: f"the square-off confirmed in the history:\n{history()}")
    finally:
        command.kill()
        command.wait(10)
    sells = [e for e in rig.follower_book("f1") if e["transactionType"] == "SELL"]
    assert len(sells) == 1, f"the closing order was placed {len(sells)} times"
    assert net_positions(rig, "f1") == {"2885": 0}


def test_a_square_off_killed_with_its_closing_order_on_the_way_places_it_once_after_the_restart(tmp_path,
                                                                                              fault_proxy):
    """The real run.py, SIGKILLed while the closing order's answer is held by the network: the
    restarted copier finishes the square-off from storage, looks the order up, and never sends it
    twice."""
    exchange, urls, accounts = start_paper_process("--accounts", "2", "--no-price-walk", "--unlimited")
    copier = command = None
    try:
        (leader_id, leader_token), (f1_id, f1_token) = accounts
        proxy = fault_proxy(urls["REST"])
        path, db = tmp_path / "config.yaml", tmp_path / "copytrader.db"
        path.write_text(yaml.safe_dump({
            "mode": "live",
            "leader": {"client_id": leader_id, "access_token": leader_token, "api_base_url": urls["REST"],
                       "order_update_url": urls["WS"]},
            "followers": [{"name": "f1", "client_id": f1_id, "access_token": f1_token, "api_base_url": proxy.url,
                           "order_update_url": urls["WS"], "sizing": {"strategy": "fixed_ratio", "ratio": 1.0}}],
            "instruments": {"master": str(ROOT / "paper" / "data" / "instruments.csv")},
            "market_hours": {"enforce": False},
            "storage": {"path": str(db)},
            "metrics": {"port": 0},
            "broker": {"timeout_seconds": 1},
        }))

        def start() -> subprocess.Popen:
            return subprocess.Popen([sys.executable, "run.py", "--config", str(path), "run", "--no-view"], cwd=ROOT,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        copier = start()
        wait_until(lambda: copier_ready(db), 30, message="copier ready")
        leader = client(urls["REST"], leader_id, leader_token, timeout=10)
        f1 = client(urls["REST"], f1_id, f1_token, timeout=10)

        def net() -> dict[str, int]:
            return {p["securityId"]: p["netQty"] for p in f1.get_positions()["data"] or []}

        def sells() -> list[dict]:
            return [o for o in f1.get_order_list()["data"] or [] if o["transactionType"] == "SELL"]

        answer = leader.place_order(security_id="2885", exchange_segment="NSE_EQ", transaction_type="BUY",
                                    quantity=10, order_type="MARKET", product_type="INTRADAY", price=0)
        assert answer["status"] == "success", answer
        wait_until(lambda: net() == {"2885": 10}, 30, message="f1 holds the copy's 10")
        # the copy's own placement: the proxy records a call once the exchange has answered it, a
        # moment after the exchange's positions show its fill
        placements_before = wait_until(lambda: len(proxy.calls_to("POST /orders")), 10,
                                       message="the copy's placement recorded by the proxy")
        proxy.hang("POST /orders", seconds=8, forward=FIRST, count=1)  # placed; its answer held past the kill
        command = subprocess.Popen([sys.executable, "run.py", "--config", str(path), "square-off", "f1"], cwd=ROOT,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: sells(), 30, message="the closing order at the exchange")
        os.kill(copier.pid, signal.SIGKILL)
        copier.wait(10)
        proxy.clear()
        copier = start()
        history = lambda: run_command_at(path, "follower", "history", "f1").stdout  # noqa: E731
        wait_until(lambda: "confirmed flat" in history(), 60, interval=0.5,
                   message=lambda: f"the square-off finished after the restart:\n{history()}")
        # the held call is recorded once its answer is let go, 8 s after it arrived
        wait_until(lambda: any(c["action"] == "hang" for c in proxy.calls_to("POST /orders")), 30,
                   message="the held closing order's call recorded")
        sent = len(proxy.calls_to("POST /orders")) - placements_before
        assert sent == 1, f"the closing order was sent {sent} times"  # (the exchange refuses a reused id)
        assert len(sells()) == 1 and net() == {"2885": 0}
        listing = run_command_at(path, "follower", "list").stdout
        assert "paused by" in listing and "square-off" in listing, listing
    finally:
        end_processes(command, copier, exchange)


# -- followers added and removed from the config file ------------------------------------------------
def test_sighup_adds_a_follower_from_the_config_file_and_remove_cancels_its_copies(tmp_path):
    exchange, urls, accounts = start_paper_process("--accounts", "3", "--no-price-walk", "--unlimited")
    copier: subprocess.Popen | None = None
    try:
        (leader_id, leader_token), *followers = accounts

        def follower(i: int) -> dict:
            cid, tok = followers[i]
            return {"name": f"f{i + 1}", "client_id": cid, "access_token": tok, "api_base_url": urls["REST"],
                    "order_update_url": urls["WS"], "sizing": {"strategy": "fixed_ratio", "ratio": 1.0}}

        def write(names: list[int]) -> None:
            path.write_text(yaml.safe_dump({
                "mode": "live",
                "leader": {"client_id": leader_id, "access_token": leader_token, "api_base_url": urls["REST"],
                           "order_update_url": urls["WS"]},
                "followers": [follower(i) for i in names],
                "instruments": {"master": str(ROOT / "paper" / "data" / "instruments.csv")},
                "market_hours": {"enforce": False},
                "storage": {"path": str(tmp_path / "copytrader.db")},
                "metrics": {"port": 0},
            }))

        path = tmp_path / "config.yaml"
        write([0])
        copier = subprocess.Popen([sys.executable, "run.py", "--config", str(path), "run", "--no-view"], cwd=ROOT,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wait_until(lambda: copier_ready(tmp_path / "copytrader.db"), 30, message="copier ready")
        leader = client(urls["REST"], leader_id, leader_token, timeout=10)
        books = [client(urls["REST"], cid, tok, timeout=10) for cid, tok in followers]

        def place(price: float) -> str:
            answer = leader.place_order(security_id="2885", exchange_segment="NSE_EQ", transaction_type="BUY",
                                        quantity=10, order_type="LIMIT", product_type="INTRADAY", price=price)
            assert answer["status"] == "success", answer
            return answer["data"]["orderId"]

        def orders(i: int) -> list[dict]:
            return books[i].get_order_list()["data"] or []

        before_add = place(1300.0)
        wait_until(lambda: len(orders(0)) == 1, 15, message="f1's copy")

        write([0, 1])
        os.kill(copier.pid, signal.SIGHUP)
        history = lambda: run_command_at(path, "follower", "history").stdout  # noqa: E731
        wait_until(lambda: " add " in history(), 30, message=lambda: f"f2 added:\n{history()}")
        after_add = place(1301.0)
        wait_until(lambda: len(orders(1)) == 1, 15, message="f2's copy of an order placed after it was added")
        assert orders(1)[0]["quantity"] == 10
        assert len(orders(0)) == 2 and before_add, "f1 copies as before"

        assert run_command_at(path, "follower", "pause", "f2").returncode == 0
        status = run_command_at(path, "status").stdout
        metrics_url = status.split("metrics ", 1)[1].split(")", 1)[0]
        paused_series = 'copytrader_follower_paused{follower="f2"} 1.0'
        assert paused_series in urllib.request.urlopen(metrics_url, timeout=10).read().decode()
        write([0])
        removed = run_command_at(path, "follower", "remove", "f2")
        assert removed.returncode == 0, removed.stdout + removed.stderr
        exported = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
        assert 'copytrader_follower_paused{follower="f2"}' not in exported, "a removed follower still counted as paused"
        assert [o["orderStatus"] for o in orders(1)] == ["CANCELLED"], "f2's open copy left behind"
        after_remove = place(1302.0)
        wait_until(lambda: len(orders(0)) == 3, 15, message="f1 copies on")
        assert len(orders(1)) == 1, "f2 got a copy after it was removed"
        lines = run_command_at(path, "follower", "history", "f2").stdout.splitlines()
        assert any(" add " in line and "SIGHUP" in line for line in lines), lines
        assert any(" remove " in line for line in lines), lines
        assert after_add and after_remove
        assert copier.poll() is None, "the copier stopped"
    finally:
        end_processes(copier, exchange)


def run_command_at(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "run.py", "--config", str(config), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
