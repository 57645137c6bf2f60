"""A copy costs the same however many followers there are: nothing done per copy walks every other
copy of the same leader order (that made a leader order's cost grow with the square of the
followers), and the replies of a fan-out are stored together."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
from collections import Counter

import pytest

from trading import copy as c
from tests.conftest import client, end_processes, start_paper_process, started_copier, wait_until

FOLLOWERS = 40
UNTHROTTLED_EXCHANGE = {"rate_limits": {"per_second": 10_000, "per_minute": None, "per_hour": None, "per_day": None}}
UNTHROTTLED_COPIER = {"rate_limits": {"orders_per_second": 10_000, "orders_per_minute": 100_000,
                                      "orders_per_hour": 100_000, "orders_per_day": 100_000}}


def _followers(n: int) -> list[dict]:
    return [{"name": f"f{i + 1}", "sizing": {"strategy": "fixed_ratio", "ratio": 1}, "funds": 50_000_000}
            for i in range(n)]


@pytest.fixture
def decisions(monkeypatch):
    """Counts the copy state machine's `decide` calls (each one a copy looked at)."""
    counted = {"calls": 0}
    lock = threading.Lock()
    original = c.decide

    def decide(*args, **kwargs):
        with lock:
            counted["calls"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(c, "decide", decide)
    return counted


def test_the_replies_of_a_fan_out_are_decided_for_their_own_copy_only(make_rig, decisions):
    rig = make_rig(followers=_followers(FOLLOWERS), exchange=UNTHROTTLED_EXCHANGE, config=UNTHROTTLED_COPIER)
    warm = rig.place(quantity=2)
    wait_until(lambda: all(rig.copy_row(warm, f"f{i + 1}") is not None and rig.copy_row(warm, f"f{i + 1}").broker_order_id
                           for i in range(FOLLOWERS)), 30, message="the warm-up order copied to every follower")
    before = decisions["calls"]
    order = rig.place(quantity=2)
    # trades at once: each copy is answered, then echoed PENDING and TRADED on its follower's socket
    rig.exchange.fill(rig.config.leader.client_id, order)
    wait_until(lambda: all((row := rig.copy_row(order, f"f{i + 1}")) is not None and row.broker_order_id
                           for i in range(FOLLOWERS)), 30, message="every copy placed")
    for i in range(FOLLOWERS):
        rig.exchange.fill(rig.follower_ids[f"f{i + 1}"], rig.copy_row(order, f"f{i + 1}").broker_order_id)
    wait_until(lambda: all(rig.copy_row(order, f"f{i + 1}").status == "TRADED" for i in range(FOLLOWERS)), 30,
               message="every copy seen traded")
    looked_at = decisions["calls"] - before
    # A constant per copy: one look at the fan-out, one per reply (its answer, its two updates), and
    # one for each of the few leader updates and timers of the order (they concern every copy).
    # Deciding every copy on every reply was FOLLOWERS looks per reply: over 3 * FOLLOWERS per copy.
    assert looked_at <= 10 * FOLLOWERS, f"{looked_at} decisions for one leader order to {FOLLOWERS} followers"


def test_a_followers_updates_of_its_copies_are_routed_without_asking_storage_whose_they_are(make_rig, monkeypatch):
    rig = make_rig(followers=_followers(10), exchange=UNTHROTTLED_EXCHANGE, config=UNTHROTTLED_COPIER)
    asked = Counter()
    original = rig.store.leader_order_of_copy

    def leader_order_of_copy(account, correlation_id, order_id):
        asked[account] += 1
        return original(account, correlation_id, order_id)

    monkeypatch.setattr(rig.store, "leader_order_of_copy", leader_order_of_copy)
    orders = [rig.place(quantity=2) for _ in range(5)]
    for order in orders:
        rig.exchange.fill(rig.config.leader.client_id, order)
    wait_until(lambda: all((row := rig.copy_row(order, f"f{i + 1}")) is not None and row.broker_order_id
                           for order in orders for i in range(10)), 30, message="every copy placed")
    for order in orders:
        for i in range(10):
            rig.exchange.fill(rig.follower_ids[f"f{i + 1}"], rig.copy_row(order, f"f{i + 1}").broker_order_id)
    wait_until(lambda: all(rig.copy_row(order, f"f{i + 1}").status == "TRADED" for order in orders for i in range(10)),
               30, message="every copy seen traded")
    # each copy's updates (PENDING, TRADED) reached its order actor; none needed a storage query
    assert not asked, f"storage asked whose copy it was: {dict(asked)}"


KILLED_FOLLOWERS = 20
KILLED_ORDERS = 30
KILLS = 4


def test_sigkill_while_a_fan_outs_replies_are_stored_together_never_doubles_or_misses(tmp_path):
    """The answers and echoes of a fan-out are stored in one transaction after they all are
    applied: the real run.py is SIGKILLed while they come in (answers held in memory, never
    stored) and restarted; every copy is looked up by its correlation id, never placed again."""
    rng = random.Random(15)
    exchange, urls, accounts = start_paper_process("--accounts", str(KILLED_FOLLOWERS + 1), "--no-price-walk",
                                                   "--unlimited")
    copier: subprocess.Popen | None = None
    try:
        (leader_id, leader_token), *followers = accounts
        def copies() -> Counter:
            counts: Counter = Counter()
            for i, (cid, tok) in enumerate(followers):
                for entry in client(urls["REST"], cid, tok, timeout=10).get_order_list()["data"]:
                    counts[(f"f{i + 1}", entry.get("correlationId"))] += 1
            return counts

        copier, start_copier = started_copier(tmp_path, urls, accounts, ratio=0.5)
        leader = client(urls["REST"], leader_id, leader_token, timeout=10)
        placed: list[str] = []
        for i in range(KILLED_ORDERS):
            answer = leader.place_order(security_id="2885", exchange_segment="NSE_EQ", transaction_type="BUY",
                                        quantity=10 + 2 * (i % 5), order_type="LIMIT", product_type="INTRADAY",
                                        price=1400.0 + i)
            assert answer["status"] == "success", answer
            placed.append(answer["data"]["orderId"])
            if i % (KILLED_ORDERS // KILLS) == KILLED_ORDERS // KILLS - 1:
                # once this order's copies are on their way: some answered, their replies not all stored
                wait_until(lambda: sum(copies().values()) > (i + 0.3) * KILLED_FOLLOWERS, 30, interval=0.005,
                           message="the fan-out under way")
                threading.Event().wait(rng.uniform(0.0, 0.05))
                os.kill(copier.pid, signal.SIGKILL)
                copier.wait(10)
                copier = start_copier()
            else:
                threading.Event().wait(rng.uniform(0.01, 0.05))

        wait_until(lambda: sum(copies().values()) >= KILLED_ORDERS * KILLED_FOLLOWERS, 90, interval=0.2,
                   message="a copy of every leader order in every follower")
        counts = copies()
        doubled = {key: n for key, n in counts.items() if n > 1}
        assert not doubled, f"copies placed twice: {doubled}"
        assert sum(counts.values()) == KILLED_ORDERS * KILLED_FOLLOWERS, "some copies missed"
    finally:
        end_processes(copier, exchange)
