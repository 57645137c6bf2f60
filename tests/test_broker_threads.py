"""Broker calls cost a fixed number of threads, however many followers the copier serves: every
account's calls share one small pool and one thread reads every placement's answer. A follower
whose broker hangs holds at most its own share of the pool, so the other followers' copies are
placed and cancelled as fast as before. Counted on the exchange's books."""
from __future__ import annotations

import threading
import time

import pytest

from tests.conftest import wait_until

BROKER_THREADS = 16 + 1  # the shared pool's default size, and the answer reader
UNTHROTTLED_EXCHANGE = {"rate_limits": {"per_second": 10_000, "per_minute": None, "per_hour": None, "per_day": None}}
UNTHROTTLED_COPIER = {"rate_limits": {"orders_per_second": 10_000, "orders_per_minute": 100_000,
                                      "orders_per_hour": 100_000, "orders_per_day": 100_000}}
BURST = 20


def _followers(count: int) -> list[dict]:
    return [{"name": f"f{i}", "sizing": {"strategy": "fixed_ratio", "ratio": 0.5}, "funds": 50_000_000}
            for i in range(1, count + 1)]


def _broker_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("broker-")}


@pytest.mark.parametrize("followers", [2, 12])
def test_a_burst_to_many_followers_is_placed_once_each_on_a_fixed_number_of_broker_threads(make_rig, followers):
    before = _broker_threads()  # a previous test's copier may still be winding down
    rig = make_rig(followers=_followers(followers), exchange=UNTHROTTLED_EXCHANGE, config=UNTHROTTLED_COPIER)
    names = [f"f{i}" for i in range(1, followers + 1)]
    peak: set[threading.Thread] = set()

    def all_placed() -> bool:
        peak.update(_broker_threads() - before)
        return all(len(rig.follower_book(name)) >= BURST for name in names)

    for _ in range(BURST):
        rig.place(quantity=2)
    wait_until(all_placed, 60, message=lambda: "every copy on the books: "
               + ", ".join(f"{n} {len(rig.follower_book(n))}" for n in names))
    for name in names:
        book = rig.follower_book(name)
        assert len(book) == BURST and len({o["correlationId"] for o in book}) == BURST, (name, len(book))
        assert rig.follower_placements(name) == BURST, name
    peak.update(_broker_threads() - before)
    assert len(peak) <= BROKER_THREADS, (
        f"{len(peak)} broker threads for {followers} followers: {sorted(t.name for t in peak)[:40]}")


HUNG_TIMEOUT = 10.0  # the copier's broker timeout here: a call stuck behind a hung one waits this long
SMALL_BOUND = 4.0  # seconds: what a well-behaved follower's burst takes at most, well under HUNG_TIMEOUT


def test_a_follower_whose_broker_hangs_does_not_hold_up_another_followers_cancels_or_placements(make_rig):
    rig = make_rig(followers=_followers(2), exchange=UNTHROTTLED_EXCHANGE,
                   config={**UNTHROTTLED_COPIER, "broker": {"timeout_seconds": HUNG_TIMEOUT}})
    resting = 30  # more cancels to the hung follower than the shared pool has threads
    leader_ids = [rig.place(quantity=2) for _ in range(resting)]
    wait_until(lambda: all(len(rig.follower_book(n)) >= resting for n in ("f1", "f2")), 30,
               message="the resting orders copied to both followers")

    # f2's broker takes every call but never answers in time
    rig.exchange.faults.delay_answers(HUNG_TIMEOUT * 3, client_id=rig.follower_ids["f2"], paths=None)
    started = time.monotonic()
    for leader_id in leader_ids:
        rig.cancel(leader_id)

    def f1_cancelled() -> bool:
        return all(o["orderStatus"] == "CANCELLED" for o in rig.follower_book("f1"))

    wait_until(f1_cancelled, HUNG_TIMEOUT * 2, message="f1's copies cancelled")
    took = time.monotonic() - started
    assert took < SMALL_BOUND, f"f1's {resting} cancels took {took:.1f}s while f2's broker hung"

    started = time.monotonic()
    fresh = [rig.place(quantity=2) for _ in range(5)]
    wait_until(lambda: len(rig.follower_book("f1")) >= resting + len(fresh), HUNG_TIMEOUT * 2,
               message="f1's copies of the new orders placed")
    took = time.monotonic() - started
    assert took < SMALL_BOUND, f"f1's {len(fresh)} placements took {took:.1f}s while f2's broker hung"
    assert len(rig.follower_book("f1")) == resting + len(fresh)
    assert rig.follower_placements("f1") == resting + len(fresh)
