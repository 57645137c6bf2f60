"""The real run.py process is SIGKILLed at random points of a burst and restarted;
every leader order ends with exactly one copy per follower (exactly once via correlation ids),
and every follower with its share of its leader's position."""
from __future__ import annotations

import random
import sqlite3
import subprocess
import threading
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from tests.conftest import (client, end_processes, kill_during_burst, paper_control, placed_again, start_paper_process,
                            started_copier, wait_until)

ORDERS = 40
KILLS = 4


@dataclass
class KilledRun:
    """A paper exchange process with a leader and two followers, and the real run.py copying them,
    SIGKILLed and started again while the leader trades (`during_kills`)."""

    urls: dict[str, str]
    leader_id: str
    leader: Any  # the leader's dhanhq client
    followers: list[tuple[str, str]]  # (client id, token) of f1, f2
    copier: subprocess.Popen
    start: Callable[[], subprocess.Popen]

    def during_kills(self, burst: Callable[[], None], placed: Callable[[], Any], rng: random.Random, kills: int,
                     pause: tuple[float, float] = (0.1, 0.5)) -> None:
        """Run `burst` (the leader's orders) on a thread of its own while the copier is SIGKILLed
        `kills` times once `placed()` says it is under way (`kill_during_burst`)."""
        thread = threading.Thread(target=burst)
        thread.start()
        self.copier = kill_during_burst(self.copier, self.start, placed, rng, kills, pause)
        thread.join(60)

    def books(self) -> list[tuple[str, dict]]:
        """Every order on the followers' books at the exchange, with its follower's name."""
        return [(f"f{i + 1}", entry) for i, (cid, tok) in enumerate(self.followers)
                for entry in client(self.urls["REST"], cid, tok, timeout=10).get_order_list()["data"]]

    def copies(self) -> Counter:
        """How many orders on the followers' books carry each (follower, correlation id)."""
        return Counter((name, entry.get("correlationId")) for name, entry in self.books())

    def placed_again(self) -> int:
        return placed_again(self.urls, [cid for cid, _tok in self.followers])


@contextmanager
def killed_run(tmp_path: Path, ratio: float, *exchange_args: str) -> Iterator[KilledRun]:
    exchange, urls, accounts = start_paper_process("--accounts", "3", "--no-price-walk", "--unlimited", *exchange_args)
    run: KilledRun | None = None
    try:
        (leader_id, leader_token), *followers = accounts
        copier, start = started_copier(tmp_path, urls, accounts, ratio=ratio)
        run = KilledRun(urls, leader_id, client(urls["REST"], leader_id, leader_token, timeout=10), followers,
                        copier, start)
        yield run
    finally:
        end_processes(run.copier if run is not None else None, exchange)






def test_7_7_sigkill_mid_burst_never_doubles_or_misses(tmp_path):
    rng = random.Random(77)
    with killed_run(tmp_path, 0.5) as run:
        leader = run.leader
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

        run.during_kills(burst, lambda: placed, rng, KILLS)
        assert len(placed) == ORDERS

        wait_until(lambda: sum(run.copies().values()) >= ORDERS * len(run.followers), 60, interval=0.2,
                   message="a copy of every leader order in every follower")
        counts = run.copies()
        assert sum(counts.values()) == ORDERS * len(run.followers), "some copies missed or doubled"
        assert max(counts.values()) == 1, "a correlation id appears twice"
        assert run.placed_again() == 0, "a copy was sent twice"
        print(f"7.7: {ORDERS} leader orders, {KILLS} SIGKILLs, {sum(counts.values())} follower orders, "
              f"0 doubled, 0 missed")


SLICED_ORDERS = 16


def test_sigkill_in_the_middle_of_sliced_placements_never_doubles_or_misses_a_slice(tmp_path):
    """Leader orders whose copies are cut into two or three slices each (ratio 3 on NIFTY options,
    freeze quantity 1800), the real run.py SIGKILLed while they are placed: on the followers'
    books every slice exists exactly once, under the correlation id derived for it, with its size."""
    from trading.copy import correlation_id
    from trading.freeze import slice_sizes

    rng = random.Random(14)
    with killed_run(tmp_path, 3, "--funds", "1000000000") as run:
        leader = run.leader
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

        run.during_kills(burst, lambda: placed, rng, 3, pause=(0.1, 0.4))
        assert len(placed) == SLICED_ORDERS

        expected = {(f"f{i + 1}", correlation_id(order, f"f{i + 1}", 0, part)): size
                    for order, quantity in placed.items() for i in range(len(run.followers))
                    for part, size in enumerate(slice_sizes(3 * quantity, 1800))}

        wait_until(lambda: len(run.books()) >= len(expected), 60, interval=0.2,
                   message=lambda: f"{len(expected)} slices on the followers' books, {len(run.books())} there")
        held = run.books()
        counts = Counter((name, entry["correlationId"]) for name, entry in held)
        assert max(counts.values()) == 1, "a slice was placed twice"
        assert run.placed_again() == 0, "a slice was sent twice"
        assert set(counts) == set(expected), "a slice is missing, or an order no slice accounts for"
        assert {(name, e["correlationId"]): e["quantity"] for name, e in held} == expected
        assert all(e["orderStatus"] == "PENDING" for _name, e in held), "a slice was refused"
        print(f"{SLICED_ORDERS} leader orders, {len(expected)} slices, 3 SIGKILLs: 0 doubled, 0 missed")


TRADES = 40


def test_7_7_sigkill_while_the_leader_trades_in_and_out_leaves_every_follower_holding_its_share(tmp_path):
    """The leader buys and sells (each order trades at once), often selling part or all of what it
    holds, while the real run.py is SIGKILLed and restarted: once the copier settles, every
    follower holds half the leader's position on the exchange's books (ratio 0.5), each leader
    order has one copy per follower, and none was sent twice. (Exits right after a restart wait
    for the copies the killed copier was placing: up to two broker timeouts.)"""
    rng = random.Random(2911)
    with killed_run(tmp_path, 0.5) as run:
        leader, urls, followers = run.leader, run.urls, run.followers
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

        run.during_kills(burst, lambda: placed, rng, KILLS, pause=(0.3, 1.5))
        assert len(placed) == TRADES

        def position(client_id: str) -> int:
            return sum(p["netQty"] for p in paper_control(urls["CONTROL"], "positions", client_id=client_id)
                       if p["securityId"] == "2885")

        def skips() -> list[tuple]:
            """What the copier recorded as skipped (for a failure's message)."""
            with sqlite3.connect(tmp_path / "copytrader.db", timeout=5) as conn:
                return conn.execute("select leader_order_id, follower, reason from skip").fetchall()

        wait_until(lambda: sum(run.copies().values()) >= TRADES * len(followers), 60, interval=0.2,
                   message=lambda: f"{TRADES * len(followers)} copies, {sum(run.copies().values())} on the books; "
                                   f"skips {skips()}")
        leader_holds = position(run.leader_id)
        wait_until(lambda: all(position(cid) == leader_holds // 2 for cid, _tok in followers), 30, interval=0.2,
                   message=lambda: f"followers holding {leader_holds // 2} as the leader holds {leader_holds}: "
                                   f"{[position(cid) for cid, _tok in followers]}; skips {skips()}")
        counts = run.copies()
        assert max(counts.values()) == 1, "a correlation id appears twice"
        assert run.placed_again() == 0, "a copy was sent twice"
