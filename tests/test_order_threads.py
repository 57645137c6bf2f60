"""Open orders cost memory, not threads: order actors share a fixed pool of threads, so a leader with
hundreds of resting orders does not make the copier hold hundreds of threads (each one a stack, and
a share of the GIL's attention)."""
from __future__ import annotations

import threading

from actors.broker_threads import DEFAULT_THREADS as BROKER_THREADS
from tests.conftest import wait_until

TWO_FOLLOWERS = [{"name": "f1", "sizing": {"strategy": "fixed_ratio", "ratio": 0.5}, "funds": 50_000_000},
                 {"name": "f2", "sizing": {"strategy": "fixed_ratio", "ratio": 0.5}, "funds": 50_000_000}]
UNTHROTTLED_EXCHANGE = {"rate_limits": {"per_second": 10_000, "per_minute": None, "per_hour": None, "per_day": None}}
UNTHROTTLED_COPIER = {"rate_limits": {"orders_per_second": 10_000, "orders_per_minute": 100_000,
                                      "orders_per_hour": 100_000, "orders_per_day": 100_000}}


def _copies_on_books(rig, count: int) -> bool:
    return all(len(rig.follower_book(name)) >= count for name in ("f1", "f2"))


def _threads() -> tuple[list[str], list[str]]:
    """(names of the broker threads, names of every other thread). The broker threads are one
    pool of a fixed size for every account (actors/broker_threads.py), started as the load asks."""
    names = sorted(t.name for t in threading.enumerate())
    return [n for n in names if n.startswith("broker-")], [n for n in names if not n.startswith("broker-")]


def test_two_hundred_resting_orders_keep_the_thread_count_where_twenty_left_it(make_rig):
    rig = make_rig(followers=TWO_FOLLOWERS, exchange=UNTHROTTLED_EXCHANGE, config=UNTHROTTLED_COPIER)
    # Twenty resting orders first: the order actors' pool and whatever else starts with the first
    # orders exists by then. Broker threads are counted apart: their pool grows with the load, up
    # to its fixed size.
    for _ in range(20):
        rig.place(quantity=2)
    wait_until(lambda: _copies_on_books(rig, 20), 30, message="twenty orders copied to both followers")
    _, after_twenty = _threads()

    for _ in range(180):
        rig.place(quantity=2)
    wait_until(lambda: _copies_on_books(rig, 200), 60, message="two hundred orders copied to both followers")
    books = {name: len(rig.follower_book(name)) for name in ("f1", "f2")}
    assert books == {"f1": 200, "f2": 200}, books
    workers, after_two_hundred = _threads()
    assert len(after_two_hundred) <= len(after_twenty) + 3, (
        f"{len(after_two_hundred)} threads with 200 open orders, {len(after_twenty)} with 20; new: "
        f"{sorted(set(after_two_hundred) - set(after_twenty))[:30]}")
    assert len(workers) <= BROKER_THREADS + 1, workers  # and the answer reader
