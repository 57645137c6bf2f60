"""A copy costs the same however many followers there are: nothing done per copy walks every other
copy of the same leader order (that made a leader order's cost grow with the square of the
followers), and the replies of a fan-out are stored together."""
from __future__ import annotations

import threading

import pytest

from trading import copy as c
from tests.conftest import wait_until

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
    # one look per copy at the fan-out, and one per reply (its answer, its updates): a constant per
    # copy. Deciding every copy on every reply was FOLLOWERS looks per reply.
    assert looked_at <= 6 * FOLLOWERS, f"{looked_at} decisions for one leader order to {FOLLOWERS} followers"
