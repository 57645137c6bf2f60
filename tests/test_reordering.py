"""Dhan's order-update frames carry no sequence number, and their `LastUpdatedTime` counts whole
seconds: two updates of one order within a second cannot be put in order by what they carry. The
paper exchange here leaves the sequence out, stamps every frame with the same second, and swaps
frames of one second; the copier must end where the leader's order is, without a reconnect."""
from __future__ import annotations

from datetime import datetime, timezone

import pykka
import pytest

from actors.messages import CopiesWanted, OrderActorWanted
from observability import metrics
from storage import models as m
from tests.conftest import LEADER_ID, Rig, wait_until

ONE_SECOND = datetime(2026, 3, 2, 5, 0, 0, tzinfo=timezone.utc)  # every frame stamped 10:30:00 IST
DHAN_LIKE = {"sequence": False, "clock": lambda: ONE_SECOND}
TWO_FOLLOWERS = [{"name": "f1", "sizing": {"strategy": "fixed_ratio", "ratio": 0.5}},
                 {"name": "f2", "sizing": {"strategy": "fixed_ratio", "ratio": 0.3}}]


def settled(rig: Rig, leader_id: str) -> bool:
    """Every update received is done with, and no broker call of the order's copies is in flight."""
    pending = rig.store.read(lambda: m.InboundEvent.select().where(m.InboundEvent.done == False).count())  # noqa: E712
    if pending:
        return False
    try:
        actor = rig.copier.address("router").ask(OrderActorWanted(leader_id), timeout=5)
        if actor is not None:
            state = actor.ask(CopiesWanted(), timeout=5)
            return all(in_flight is None for _status, in_flight in state["copies"].values())
    except pykka.ActorDeadError:
        return False  # one stopped while asked: look again
    return True  # its actor finished and stopped


def leader_reads(rig: Rig, leader_id: str) -> int:
    """`GET /orders/{id}` calls the copier made on the leader's account for that order."""
    return sum(1 for r in rig.exchange.request_log(LEADER_ID)
               if r["method"] == "GET" and r["path"].endswith(f"/orders/{leader_id}"))


def wait_settled(rig: Rig, leader_id: str) -> None:
    wait_until(lambda: settled(rig, leader_id), timeout=15, interval=0.05,
               message=f"updates of {leader_id} applied and its copies quiet")


def test_two_quick_quantity_changes_leave_every_copy_at_the_leaders_final_quantity(make_rig):
    rig = make_rig(followers=TWO_FOLLOWERS, exchange=DHAN_LIKE)
    reconnects = metrics.FEED_RECONNECTS.labels("leader")._value.get()
    leader_id = rig.place(quantity=10, price=1420.0)
    assert rig.follower_copy(leader_id, "f1")["quantity"] == 5
    assert rig.follower_copy(leader_id, "f2")["quantity"] == 3
    wait_settled(rig, leader_id)

    # the second modification's frame overtakes the first's; both say 10:30:00
    rig.exchange.faults.reorder_messages(1.0, same_second=True)
    rig.modify(leader_id, quantity=20)
    rig.modify(leader_id, quantity=30)
    assert rig.exchange.order(LEADER_ID, leader_id)["quantity"] == 30
    wait_until(lambda: rig.follower_order_now(leader_id, "f1")["quantity"] == 15, timeout=15,
               message="f1's copy at 15")
    wait_settled(rig, leader_id)
    assert rig.follower_order_now(leader_id, "f1")["quantity"] == 15
    assert rig.follower_order_now(leader_id, "f2")["quantity"] == 9
    assert metrics.FEED_RECONNECTS.labels("leader")._value.get() == reconnects
    assert leader_reads(rig, leader_id) >= 1  # the broker settled what the frames could not
    for follower in ("f1", "f2"):
        assert rig.follower_placements(follower) == 1


@pytest.mark.parametrize("terms", [{"quantity": 10}, {}], ids=["terms-before-the-modification", "current-terms"])
def test_a_late_cancel_frame_after_a_same_second_modification_leaves_the_copies_open(make_rig, terms):
    rig = make_rig(exchange=DHAN_LIKE)
    leader_id = rig.place(quantity=10, price=1420.0)
    rig.follower_copy(leader_id)
    rig.modify(leader_id, quantity=20)
    rig.wait_copy(leader_id, lambda c: c["quantity"] == 10, message="modified to 10")
    wait_settled(rig, leader_id)

    # a "Cancelled" frame of the order, stamped with the modification's second, arriving after it
    rig.exchange.send_late_alert(LEADER_ID, leader_id, status="CANCELLED", **terms)
    wait_until(lambda: rig.store.read(lambda: m.InboundEvent.select().where(
        (m.InboundEvent.order_id == leader_id) & (m.InboundEvent.payload.contains('"CANCELLED"'))).count()),
        message="the late frame received")
    wait_settled(rig, leader_id)
    assert rig.exchange.order(LEADER_ID, leader_id)["orderStatus"] == "PENDING"
    copy = rig.follower_order_now(leader_id)
    assert (copy["orderStatus"], copy["quantity"]) == ("PENDING", 10)
    assert not [r for r in rig.exchange.request_log(rig.follower_ids["f1"]) if r["method"] == "DELETE"]
    assert leader_reads(rig, leader_id) >= 1


def test_a_same_second_modification_and_cancel_arriving_reversed_still_cancel_the_copies(make_rig):
    rig = make_rig(exchange=DHAN_LIKE)
    leader_id = rig.place(quantity=10, price=1420.0)
    rig.follower_copy(leader_id)
    wait_settled(rig, leader_id)

    rig.exchange.faults.reorder_messages(1.0, same_second=True)
    rig.modify(leader_id, quantity=20)
    rig.cancel(leader_id)
    rig.wait_copy(leader_id, lambda c: c["orderStatus"] == "CANCELLED", timeout=15, message="cancelled")
    wait_settled(rig, leader_id)
    assert rig.follower_order_now(leader_id)["orderStatus"] == "CANCELLED"
    assert rig.follower_placements("f1") == 1


def test_reads_of_ambiguous_leader_orders_stay_within_the_leaders_data_rate(make_rig):
    rig = make_rig(exchange={**DHAN_LIKE, "rate_limits": {"per_second": 100}},
                   config={"rate_limits": {"data_per_second": 4}})
    leader_ids = [rig.place(quantity=10, price=1400.0 + i) for i in range(8)]
    for leader_id in leader_ids:
        rig.follower_copy(leader_id)
        wait_settled(rig, leader_id)

    rig.exchange.faults.reorder_messages(1.0, same_second=True)
    for leader_id in leader_ids:
        rig.modify(leader_id, quantity=20)
        rig.modify(leader_id, quantity=30)
    for leader_id in leader_ids:
        wait_until(lambda: rig.follower_order_now(leader_id)["quantity"] == 15, timeout=30,
                   message=f"copy of {leader_id} at 15")
        wait_settled(rig, leader_id)
        assert rig.follower_order_now(leader_id)["quantity"] == 15
    reads = sorted(r["t"] for r in rig.exchange.request_log(LEADER_ID)
                   if r["method"] == "GET" and "/orders/" in r["path"])
    assert len(reads) >= len(leader_ids)
    assert max(sum(1 for t in reads if start <= t < start + 1.0) for start in reads) <= 4


def test_a_failed_read_of_the_leader_order_is_retried_and_the_copy_still_ends_right(make_rig):
    rig = make_rig(exchange=DHAN_LIKE)
    leader_id = rig.place(quantity=10, price=1420.0)
    rig.follower_copy(leader_id)
    wait_settled(rig, leader_id)

    rig.exchange.faults.fail_fraction(1.0, mode="DH-908", client_id=LEADER_ID, paths="GET /orders/*")
    rig.exchange.faults.reorder_messages(1.0, same_second=True)
    rig.modify(leader_id, quantity=20)
    rig.modify(leader_id, quantity=30)
    wait_until(lambda: any(r["method"] == "GET" and r["status"] >= 500 for r in rig.exchange.request_log(LEADER_ID)),
               message="a read of the leader's order failed")
    rig.exchange.faults.clear()
    wait_until(lambda: rig.follower_order_now(leader_id)["quantity"] == 15, timeout=20, message="copy at 15")
    wait_settled(rig, leader_id)
    assert rig.follower_order_now(leader_id)["quantity"] == 15
    assert rig.follower_placements("f1") == 1
