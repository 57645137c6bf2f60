"""The real run.py process is SIGKILLed at random points of a burst and restarted;
every leader order ends with exactly one copy per follower (exactly once via correlation ids),
and every follower with its share of its leader's position."""
from __future__ import annotations

import random
import sqlite3
import subprocess
import threading
from collections import Counter

from tests.conftest import (client, end_processes, kill_during_burst, paper_control, placed_again, start_paper_process,
                            started_copier, wait_until)

ORDERS = 40
KILLS = 4








def test_7_7_sigkill_mid_burst_never_doubles_or_misses(tmp_path):
    rng = random.Random(77)
    exchange, urls, accounts = start_paper_process("--accounts", "3", "--no-price-walk", "--unlimited")
    copier: subprocess.Popen | None = None
    try:
        (leader_id, leader_token), *followers = accounts
        copier, start_copier = started_copier(tmp_path, urls, accounts, ratio=0.5)
        leader = client(urls["REST"], leader_id, leader_token, timeout=10)
        placed: list[str] = []
        burst_done = threading.Event()

        def burst() -> None:
            for i in range(ORDERS):
                answer = leader.place_order(security_id="2885", exchange_segment="NSE_EQ", transaction_type="BUY",
                                            quantity=10 + 2 * (i % 5), order_type="LIMIT", product_type="INTRADAY",
                                            price=1400.0 + (i % 40))
                assert answer["status"] == "success", answer
                placed.append(answer["data"]["orderId"])
                if burst_done.wait(rng.uniform(0.01, 0.08)):
                    return
            burst_done.set()

        thread = threading.Thread(target=burst)
        thread.start()
        copier = kill_during_burst(copier, start_copier, lambda: placed, rng, KILLS)
        thread.join(60)
        assert len(placed) == ORDERS

        def copies() -> Counter:
            counts: Counter = Counter()
            for i, (cid, tok) in enumerate(followers):
                book = client(urls["REST"], cid, tok, timeout=10).get_order_list()["data"]
                for entry in book:
                    counts[(f"f{i + 1}", entry.get("correlationId"))] += 1
            return counts

        wait_until(lambda: sum(copies().values()) >= ORDERS * len(followers), 60, interval=0.2,
                   message="a copy of every leader order in every follower")
        counts = copies()
        assert sum(counts.values()) == ORDERS * len(followers), "some copies missed or doubled"
        assert max(counts.values()) == 1, "a correlation id appears twice"
        assert placed_again(urls, [cid for cid, _tok in followers]) == 0, "a copy was sent twice"
        print(f"7.7: {ORDERS} leader orders, {KILLS} SIGKILLs, {sum(counts.values())} follower orders, "
              f"0 doubled, 0 missed")
    finally:
        end_processes(copier, exchange)


SLICED_ORDERS = 16


def test_sigkill_in_the_middle_of_sliced_placements_never_doubles_or_misses_a_slice(tmp_path):
    """Leader orders whose copies are cut into two or three slices each (ratio 3 on NIFTY options,
    freeze quantity 1800), the real run.py SIGKILLed while they are placed: on the followers'
    books every slice exists exactly once, under the correlation id derived for it, with its size."""
    from trading.copy import correlation_id
    from trading.freeze import slice_sizes

    rng = random.Random(14)
    exchange, urls, accounts = start_paper_process("--accounts", "3", "--no-price-walk", "--unlimited",
                                                   "--funds", "1000000000")
    copier: subprocess.Popen | None = None
    try:
        (leader_id, leader_token), *followers = accounts
        copier, start_copier = started_copier(tmp_path, urls, accounts, ratio=3)
        leader = client(urls["REST"], leader_id, leader_token, timeout=10)
        placed: dict[str, int] = {}  # leader order id -> its quantity
        burst_done = threading.Event()

        def burst() -> None:
            for i in range(SLICED_ORDERS):
                quantity = 75 * (16 + i % 9)  # 1200..1800: copies of 3600..5400, two or three slices
                answer = leader.place_order(security_id="45105", exchange_segment="NSE_FNO", transaction_type="BUY",
                                            quantity=quantity, order_type="LIMIT", product_type="MARGIN",
                                            price=60.0 - (i % 10) * 0.5)
                assert answer["status"] == "success", answer
                placed[answer["data"]["orderId"]] = quantity
                if burst_done.wait(rng.uniform(0.02, 0.1)):
                    return
            burst_done.set()

        thread = threading.Thread(target=burst)
        thread.start()
        copier = kill_during_burst(copier, start_copier, lambda: placed, rng, 3, pause=(0.1, 0.4))
        thread.join(60)
        assert len(placed) == SLICED_ORDERS

        expected = {(f"f{i + 1}", correlation_id(order, f"f{i + 1}", 0, part)): size
                    for order, quantity in placed.items() for i in range(len(followers))
                    for part, size in enumerate(slice_sizes(3 * quantity, 1800))}

        def books() -> list[tuple[str, dict]]:
            return [(f"f{i + 1}", entry) for i, (cid, tok) in enumerate(followers)
                    for entry in client(urls["REST"], cid, tok, timeout=10).get_order_list()["data"]]

        wait_until(lambda: len(books()) >= len(expected), 60, interval=0.2,
                   message=lambda: f"{len(expected)} slices on the followers' books, {len(books())} there")
        held = books()
        counts = Counter((name, entry["correlationId"]) for name, entry in held)
        assert max(counts.values()) == 1, "a slice was placed twice"
        assert placed_again(urls, [cid for cid, _tok in followers]) == 0, "a slice was sent twice"
        assert set(counts) == set(expected), "a slice is missing, or an order no slice accounts for"
        assert {(name, e["correlationId"]): e["quantity"] for name, e in held} == expected
        assert all(e["orderStatus"] == "PENDING" for _name, e in held), "a slice was refused"
        print(f"{SLICED_ORDERS} leader orders, {len(expected)} slices, 3 SIGKILLs: 0 doubled, 0 missed")
    finally:
        end_processes(copier, exchange)


TRADES = 40


def test_7_7_sigkill_while_the_leader_trades_in_and_out_leaves_every_follower_holding_its_share(tmp_path):
    """The leader buys and sells (each order trades at once), often selling part or all of what it
    holds, while the real run.py is SIGKILLed and restarted: once the copier settles, every
    follower holds half the leader's position on the exchange's books (ratio 0.5), each leader
    order has one copy per follower, and none was sent twice. (Exits right after a restart wait
    for the copies the killed copier was placing: up to two broker timeouts.)"""
    rng = random.Random(2911)
    exchange, urls, accounts = start_paper_process("--accounts", "3", "--no-price-walk", "--unlimited")
    copier: subprocess.Popen | None = None
    try:
        (leader_id, leader_token), *followers = accounts
        copier, start_copier = started_copier(tmp_path, urls, accounts, ratio=0.5)
        leader = client(urls["REST"], leader_id, leader_token, timeout=10)
        price = float(paper_control(urls["CONTROL"], "price", security_id="2885"))
        placed: list[str] = []
        burst_done = threading.Event()

        def burst() -> None:
            held = 0
            for i in range(TRADES):
                if held and rng.random() < 0.45:  # an exit: all of it, or an even part
                    side, quantity = "SELL", rng.choice([held, 2 * rng.randint(1, held // 2)])
                else:
                    side, quantity = "BUY", 2 * rng.randint(1, 10)
                through = 1.01 if side == "BUY" else 0.99  # priced through the market: it trades at once
                answer = leader.place_order(security_id="2885", exchange_segment="NSE_EQ", transaction_type=side,
                                            quantity=quantity, order_type="LIMIT", product_type="INTRADAY",
                                            price=round(round(price * through / 0.05) * 0.05, 2))
                assert answer["status"] == "success", answer
                held += quantity if side == "BUY" else -quantity
                placed.append(answer["data"]["orderId"])
                if burst_done.wait(rng.uniform(0.05, 0.25)):
                    return
            burst_done.set()

        thread = threading.Thread(target=burst)
        thread.start()
        copier = kill_during_burst(copier, start_copier, lambda: placed, rng, KILLS, pause=(0.3, 1.5))
        thread.join(60)
        assert len(placed) == TRADES

        def position(client_id: str) -> int:
            return sum(p["netQty"] for p in paper_control(urls["CONTROL"], "positions", client_id=client_id)
                       if p["securityId"] == "2885")

        def copies() -> Counter:
            return Counter((f"f{i + 1}", entry.get("correlationId"))
                           for i, (cid, tok) in enumerate(followers)
                           for entry in client(urls["REST"], cid, tok, timeout=10).get_order_list()["data"])

        def skips() -> list[tuple]:
            """What the copier recorded as skipped (for a failure's message)."""
            with sqlite3.connect(tmp_path / "copytrader.db", timeout=5) as conn:
                return conn.execute("select leader_order_id, follower, reason from skip").fetchall()

        wait_until(lambda: sum(copies().values()) >= TRADES * len(followers), 60, interval=0.2,
                   message=lambda: f"{TRADES * len(followers)} copies, {sum(copies().values())} on the books; "
                                   f"skips {skips()}")
        leader_holds = position(leader_id)
        wait_until(lambda: all(position(cid) == leader_holds // 2 for cid, _tok in followers), 30, interval=0.2,
                   message=lambda: f"followers holding {leader_holds // 2} as the leader holds {leader_holds}: "
                                   f"{[position(cid) for cid, _tok in followers]}; skips {skips()}")
        counts = copies()
        assert max(counts.values()) == 1, "a correlation id appears twice"
        assert placed_again(urls, [cid for cid, _tok in followers]) == 0, "a copy was sent twice"
    finally:
        end_processes(copier, exchange)
