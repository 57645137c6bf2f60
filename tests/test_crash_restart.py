"""The real run.py process is SIGKILLed at random points of a burst and restarted;
every leader order ends with exactly one copy per follower (exactly once via correlation ids)."""
from __future__ import annotations

import random
import subprocess
import threading
from collections import Counter

from tests.conftest import (client, copier_ready, end_processes, kill_during_burst, placed_again,
                            start_copier_process, start_paper_process, wait_until, write_live_config)

ORDERS = 40
KILLS = 4








def test_7_7_sigkill_mid_burst_never_doubles_or_misses(tmp_path):
    rng = random.Random(77)
    exchange, urls, accounts = start_paper_process("--accounts", "3", "--no-price-walk", "--unlimited")
    copier: subprocess.Popen | None = None
    try:
        (leader_id, leader_token), *followers = accounts
        path = write_live_config(tmp_path, urls, accounts, ratio=0.5)
        db = tmp_path / "copytrader.db"

        def start_copier() -> subprocess.Popen:
            return start_copier_process(path)

        copier = start_copier()
        wait_until(lambda: copier_ready(db), 30, message="copier ready")
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
        path = write_live_config(tmp_path, urls, accounts, ratio=3)
        db = tmp_path / "copytrader.db"

        def start_copier() -> subprocess.Popen:
            return start_copier_process(path)

        copier = start_copier()
        wait_until(lambda: copier_ready(db), 30, message="copier ready")
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
