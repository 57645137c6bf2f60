"""Followers cost mailboxes and sockets, not threads: the real run.py copying a burst to twenty-two
followers holds no more threads than it does copying it to two (their feeds and rate limiters run
on shared pools, their sockets are read by one thread, their calls by a fixed pool of broker
threads, which a bigger burst may start more of, up to its size)."""
from __future__ import annotations

import subprocess
from pathlib import Path

from actors.broker_threads import DEFAULT_THREADS
from tests.conftest import (client, copier_ready, end_processes, start_copier_process, start_paper_process,
                            wait_until, write_live_config)

BURST = 20
SPARE = 3  # threads a run may start late (a timer, an alert channel): not per follower


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError(f"no thread count for process {pid}")


def copier_threads_after_a_burst(tmp_path: Path, followers: int) -> int:
    """Threads of a copier process that copied BURST leader orders to `followers` followers."""
    exchange, urls, accounts = start_paper_process("--accounts", str(1 + followers), "--no-price-walk",
                                                   "--unlimited")
    copier: subprocess.Popen | None = None
    try:
        (leader_id, leader_token), *follower_accounts = accounts
        run = tmp_path / f"followers-{followers}"
        run.mkdir()
        copier = start_copier_process(write_live_config(run, urls, accounts, ratio=1))
        wait_until(lambda: copier_ready(run / "copytrader.db"), 30, message="copier ready")
        leader = client(urls["REST"], leader_id, leader_token, timeout=10)
        for i in range(BURST):
            answer = leader.place_order(security_id="2885", exchange_segment="NSE_EQ", transaction_type="BUY",
                                        quantity=1 + i % 3, order_type="LIMIT", product_type="INTRADAY",
                                        price=1400.0 + i)
            assert answer["status"] == "success", answer
        books = [client(urls["REST"], cid, token, timeout=10) for cid, token in follower_accounts]
        wait_until(lambda: all(len(book.get_order_list()["data"]) == BURST for book in books), 60, interval=0.2,
                   message=f"the burst copied to each of {followers} followers")
        return _threads(copier.pid)
    finally:
        end_processes(copier, exchange)


def test_twenty_two_followers_take_no_more_threads_than_two(tmp_path):
    two = copier_threads_after_a_burst(tmp_path, 2)
    many = copier_threads_after_a_burst(tmp_path, 22)
    assert many <= two + DEFAULT_THREADS + SPARE, (f"{many} threads copying to 22 followers, {two} copying to 2: "
                                                   f"{(many - two) / 20:.1f} more per follower")
