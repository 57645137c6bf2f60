"""Scenario B.5: the reconciler reports every divergence between the broker's books and storage,
and repairs the safe ones."""
from __future__ import annotations

from storage import models as m
from tests.conftest import client, run_command, start_rig, wait_until
from trading import reconcile as r
from trading.orders import OrderStatus, OrderTerms, OrderType, OrderUpdate, Product, Side, Validity


def test_B_5_reconciler_reports_and_repairs_diverged_books(make_rig, tmp_path):
    rig = make_rig(config={"reconcile": {"interval_seconds": 0}})
    cancelled_later = rig.place(quantity=10, price=1430.0)
    resized_by_hand = rig.place(quantity=20, price=1431.0)
    for leader_id in (cancelled_later, resized_by_hand):
        rig.wait_row(leader_id, lambda r: r.broker_order_id is not None, message="copy placed")

    # the copier's feeds stop (not crash: nothing restarts them): it hears nothing of what follows,
    # and no reconnect backfill can heal it before the reconciler runs
    for feed in ("feed:leader", "feed:f1"):
        rig.copier.address(feed).ref.stop()
    wait_until(lambda: rig.exchange.socket_count() == 0, message="sockets closed")
    missed = rig.place(quantity=16, price=1432.0)
    rig.cancel(cancelled_later)
    hand = client(rig.exchange, rig.follower_ids["f1"], rig.config.followers[0].access_token)
    copy_id = rig.copy_row(resized_by_hand).broker_order_id
    assert hand.modify_order(copy_id, "LIMIT", "", 30, 1431.0, 0, 0, "DAY")["status"] == "success"

    report = run_command(rig, tmp_path, "reconcile")
    assert report.returncode == 3, report.stdout + report.stderr
    for kind, leader_id in ((r.MISSING_REPLICATION, missed), (r.STATUS_MISMATCH, cancelled_later),
                            (r.QUANTITY_MISMATCH, resized_by_hand)):
        assert any(kind in line and leader_id in line for line in report.stdout.splitlines()), report.stdout

    found = rig.copier.address("reconciler").ask("run", timeout=30)
    assert {(d.kind, d.leader_order_id) for d in found} == {
        (r.MISSING_REPLICATION, missed), (r.STATUS_MISMATCH, cancelled_later), (r.QUANTITY_MISMATCH, resized_by_hand)}
    stored = rig.store.read(lambda: list(m.Divergence.select()))
    assert len(stored) == 3 and all(d.repaired for d in stored)

    # the repairs went through the REST API while the feeds were still stopped
    assert rig.follower_copy(missed)["quantity"] == 8
    rig.wait_copy(cancelled_later, lambda c: c["orderStatus"] == "CANCELLED", message="orphan cancelled")
    rig.wait_copy(resized_by_hand, lambda c: c["quantity"] == 10, message="quantity restored")
    wait_until(lambda: rig.copier.address("reconciler").ask("run", timeout=30) == [], timeout=15,
               message="a clean reconcile")
    assert rig.store.get_setting("last_reconcile").endswith("0 divergences")


def _update(order_id: str, status: OrderStatus, qty: int, cid: str | None = None) -> OrderUpdate:
    terms = OrderTerms("2885", "NSE_EQ", Side.BUY, Product.CNC, OrderType.LIMIT, Validity.DAY, qty, 1400.0)
    return OrderUpdate(order_id, status, terms, correlation_id=cid)


def test_B_5_a_copy_missing_from_the_follower_book_is_reported():
    copies = [r.StoredCopy("L1", "f1", "CT1", "PENDING", 5, placed=True),
              r.StoredCopy("L2", "f1", "CT2", "SKIPPED", 0, placed=False)]
    leader = [_update("L1", OrderStatus.PENDING, 10), _update("L2", OrderStatus.PENDING, 1),
              _update("L3", OrderStatus.REJECTED, 10)]
    found = r.find_divergences(leader, {"f1": []}, copies, {"L1", "L2", "L3"}, ["f1"])
    assert found == [r.Divergence(r.MISSING_FOLLOWER_ORDER, "L1", "f1", "copy CT1 is not in f1's order book")]


def test_B_5_agreeing_books_have_no_divergence():
    copies = [r.StoredCopy("L1", "f1", "CT1", "PENDING", 5, placed=True)]
    found = r.find_divergences([_update("L1", OrderStatus.PENDING, 10)],
                               {"f1": [_update("F1", OrderStatus.PENDING, 5, "CT1")]}, copies, {"L1"}, ["f1"])
    assert found == []


def test_a_copy_that_converged_while_the_copier_was_down_leaves_no_quantity_divergence(make_rig):
    """The leader resizes twice while the copy's modifications answer late; the copier stops after
    the second modification reached the broker but before its answer did. Restarted, it finds the
    copy already right: the reconciler must agree, not compare with the first modification's size."""
    rig = make_rig(config={"reconcile": {"interval_seconds": 0}})
    leader_id = rig.place(quantity=24, price=1400.0)
    rig.wait_copy(leader_id, lambda c: c["quantity"] == 12, message="placed at 12")
    rig.exchange.faults.delay_answers(2.0, client_id=rig.follower_ids["f1"], paths=("PUT /orders/*",))
    rig.modify(leader_id, quantity=32)
    rig.wait_copy(leader_id, lambda c: c["quantity"] == 16, message="modified to 16")
    rig.modify(leader_id, quantity=24)  # back to 12, while the first modification's answer is late
    rig.wait_copy(leader_id, lambda c: c["quantity"] == 12, timeout=10, message="modified back to 12")
    rig.copier.stop()  # the second modification's answer is still on its way
    rig.exchange.faults.clear()

    start_rig(rig)
    found = wait_until(lambda: rig.copier.address("reconciler").ask("run", timeout=30) == [] or None,
                       timeout=15, interval=0.5,
                       message=lambda: f"a clean reconcile, got {rig.copier.address('reconciler').ask('run')}")
    assert found
    assert rig.follower_order_now(leader_id)["quantity"] == 12
def test_a_copy_whose_placement_outcome_is_unknown_is_a_divergence_of_its_own_kind():
    copies = [r.StoredCopy("L1", "f1", "CT1", "UNKNOWN", 5, placed=False),
              r.StoredCopy("L2", "f1", "CT2", "UNKNOWN", 5, placed=False)]
    leader = [_update("L1", OrderStatus.PENDING, 10), _update("L2", OrderStatus.CANCELLED, 10)]
    found = r.find_divergences(leader, {"f1": [_update("F9", OrderStatus.PENDING, 5, "CT1")]}, copies,
                               {"L1", "L2"}, ["f1"])
    assert [(d.kind, d.leader_order_id, d.follower) for d in found] == [
        (r.OUTCOME_UNKNOWN, "L1", "f1"), (r.OUTCOME_UNKNOWN, "L2", "f1")]
    assert "in f1's order book as PENDING (order F9)" in found[0].detail
    assert "not in f1's order book" in found[1].detail
