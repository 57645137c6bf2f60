"""The reconciler reports every divergence between the broker's books and storage,
and repairs the safe ones."""
from __future__ import annotations

import pytest

from actors.messages import AnswerReconcileRequests, Reconcile
from actors.reconciler import REPORT_SETTING, REQUEST_SETTING, read_report
from storage import models as m
from tests.conftest import LEADER_ID, RELIANCE, client, run_command, start_rig, wait_until
from tests.faultproxy import NEVER
from trading import reconcile as r
from trading.orders import OrderStatus, OrderTerms, OrderType, OrderUpdate, Product, Side, Validity
from trading.sizing import SizingRule


def test_B_5_reconciler_reports_and_repairs_diverged_books(make_rig, tmp_path):
    rig = make_rig(config={"reconcile": {"interval_seconds": 0}})
    cancelled_later = rig.place(quantity=10, price=1430.0)
    resized_by_hand = rig.place(quantity=20, price=1431.0)
    for leader_id in (cancelled_later, resized_by_hand):
        rig.wait_row(leader_id, lambda r: r.broker_order_id is not None, message="copy placed")

    # the copier's feeds stop (not crash: nothing restarts them): it hears nothing of what follows,
    # and no reconnect backfill can heal it before the reconciler runs
    for feed in ("feed:leader", "feed:f1"):
        rig.copier.terminate_child(feed)
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

    found = rig.copier.address("reconciler").ask(Reconcile(), timeout=30)
    assert {(d.kind, d.leader_order_id) for d in found} == {
        (r.MISSING_REPLICATION, missed), (r.STATUS_MISMATCH, cancelled_later), (r.QUANTITY_MISMATCH, resized_by_hand)}
    stored = rig.store.read(lambda: list(m.Divergence.select()))
    assert len(stored) == 3 and all(d.repaired for d in stored)

    # the repairs went through the REST API while the feeds were still stopped
    assert rig.follower_copy(missed)["quantity"] == 8
    rig.wait_copy(cancelled_later, lambda c: c["orderStatus"] == "CANCELLED", message="orphan cancelled")
    rig.wait_copy(resized_by_hand, lambda c: c["quantity"] == 10, message="quantity restored")
    wait_until(lambda: rig.copier.address("reconciler").ask(Reconcile(), timeout=30) == [], timeout=15,
               message="a clean reconcile")
    assert rig.store.settings.get("last_reconcile").endswith("0 divergences")


def test_reconciler_resizes_a_copy_sized_for_a_leader_quantity_the_copier_never_heard_of(make_rig, tmp_path):
    rig = make_rig(config={"reconcile": {"interval_seconds": 0}})
    leader_id = rig.place(quantity=10, price=1420.0)
    rig.wait_row(leader_id, lambda r: r.broker_order_id is not None, message="copy placed")
    # the copier hears nothing more from the leader: its copy matches what it stored, and is wrong
    rig.copier.terminate_child("feed:leader")
    wait_until(lambda: rig.exchange.socket_count(LEADER_ID) == 0, message="leader socket closed")
    rig.modify(leader_id, quantity=30, price=1425.0)
    assert rig.follower_order_now(leader_id)["quantity"] == 5

    report = run_command(rig, tmp_path, "reconcile")
    assert report.returncode == 3, report.stdout + report.stderr
    for kind in (r.QUANTITY_MISMATCH, r.COPY_TERMS_MISMATCH):
        assert any(kind in line and leader_id in line for line in report.stdout.splitlines()), report.stdout

    found = rig.copier.address("reconciler").ask(Reconcile(), timeout=30)
    assert {(d.kind, d.leader_order_id, d.follower) for d in found} == {
        (r.QUANTITY_MISMATCH, leader_id, "f1"), (r.COPY_TERMS_MISMATCH, leader_id, "f1")}
    assert all(d.repaired for d in rig.store.read(lambda: list(m.Divergence.select())))
    rig.wait_copy(leader_id, lambda c: (c["quantity"], c["price"]) == (15, 1425.0), message="re-sized and re-priced")
    wait_until(lambda: rig.copier.address("reconciler").ask(Reconcile(), timeout=30) == [], timeout=15,
               message="a clean reconcile")
    assert rig.follower_placements("f1") == 1


def test_reconciler_reports_a_copy_cancelled_while_its_leader_order_is_open_and_places_nothing(make_rig, tmp_path):
    rig = make_rig(config={"reconcile": {"interval_seconds": 0}})
    leader_id = rig.place(quantity=10, price=1420.0)
    copy = rig.follower_copy(leader_id)
    hand = client(rig.exchange, rig.follower_ids["f1"], rig.config.followers[0].access_token)
    assert hand.cancel_order(copy["orderId"])["status"] == "success"
    rig.wait_row(leader_id, lambda row: row.status == "CANCELLED", message="the copier saw the cancel")

    report = run_command(rig, tmp_path, "reconcile")
    assert report.returncode == 3, report.stdout + report.stderr
    assert any(r.COPY_CANCELLED_LEADER_OPEN in line and leader_id in line
               for line in report.stdout.splitlines()), report.stdout
    for _ in range(2):
        found = rig.copier.address("reconciler").ask(Reconcile(), timeout=30)
        assert [(d.kind, d.leader_order_id, d.follower) for d in found] == [
            (r.COPY_CANCELLED_LEADER_OPEN, leader_id, "f1")]
    assert not any(d.repaired for d in rig.store.read(lambda: list(m.Divergence.select())))
    assert rig.exchange.order(LEADER_ID, leader_id)["orderStatus"] == "PENDING"
    assert rig.follower_placements("f1") == 1
    assert rig.follower_order_now(leader_id)["orderStatus"] == "CANCELLED"


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
    found = wait_until(lambda: rig.copier.address("reconciler").ask(Reconcile(), timeout=30) == [] or None,
                       timeout=15, interval=0.5,
                       message=lambda: f"a clean reconcile, got {rig.copier.address('reconciler').ask(Reconcile())}")
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


# -- each open copy against its leader's order as the broker holds it now, row by row ----------------
NOW = 1_000_000.0
S = OrderStatus


def _order(order_id: str, status: OrderStatus, qty: int, cid: str | None = None, price: float = 1400.0,
           trigger: float = 0.0, order_type: OrderType = OrderType.LIMIT) -> OrderUpdate:
    terms = OrderTerms("2885", "NSE_EQ", Side.BUY, Product.CNC, order_type, Validity.DAY, qty, price, trigger)
    return OrderUpdate(order_id, status, terms, correlation_id=cid)


def _stored(target: int = 5, sized_for: int = 10, cancel_requested: bool = False, leader_status: str = "PENDING",
            filled_at: float | None = None) -> r.StoredCopy:
    return r.StoredCopy("L1", "f1", "CT1", "PENDING", target, placed=True, sized_for=sized_for,
                        cancel_requested=cancel_requested, leader_status=leader_status, leader_filled_at=filled_at)


def half(follower: str, leader: OrderUpdate) -> int:  # f1's rule here: fixed_ratio 0.5
    return leader.terms.quantity // 2


@pytest.mark.parametrize("leader, copy, stored, resize, expected", [
    pytest.param(_order("L1", S.PENDING, 10), _order("F1", S.PENDING, 5, "CT1"), _stored(), half, [],
                 id="agreeing"),
    pytest.param(_order("L1", S.PENDING, 10), _order("F1", S.PENDING, 7, "CT1"), _stored(), half,
                 [(r.QUANTITY_MISMATCH, "copy holds 7, sizing asked for 5")], id="copy-drifted-at-its-broker"),
    pytest.param(_order("L1", S.PENDING, 30), _order("F1", S.PENDING, 5, "CT1"), _stored(sized_for=10), half,
                 [(r.QUANTITY_MISMATCH, "copy holds 5; the leader's order is 30 now, which f1's sizing makes 15")],
                 id="sized-for-a-leader-quantity-gone"),
    pytest.param(_order("L1", S.PENDING, 30), _order("F1", S.PENDING, 5, "CT1"), _stored(sized_for=10),
                 lambda follower, leader: 5, [], id="rule-independent-of-the-leader-quantity"),
    pytest.param(_order("L1", S.PENDING, 30), _order("F1", S.PENDING, 5, "CT1"), _stored(sized_for=10),
                 lambda follower, leader: None,
                 [(r.QUANTITY_MISMATCH, "copy holds 5, sized for the leader's 10; the leader's order is 30 now")],
                 id="rule-cannot-say"),
    pytest.param(_order("L1", S.PENDING, 10, price=1425.0), _order("F1", S.PENDING, 5, "CT1"), _stored(), half,
                 [(r.COPY_TERMS_MISMATCH, "copy price 1400, the leader's 1425")], id="price"),
    pytest.param(_order("L1", S.PENDING, 10, trigger=1390.0, order_type=OrderType.STOP_LOSS),
                 _order("F1", S.PENDING, 5, "CT1", trigger=1395.0, order_type=OrderType.STOP_LOSS), _stored(), half,
                 [(r.COPY_TERMS_MISMATCH, "copy trigger 1395, the leader's 1390")], id="trigger"),
    pytest.param(_order("L1", S.PENDING, 10, trigger=1390.0, order_type=OrderType.STOP_LOSS),
                 _order("F1", S.PENDING, 5, "CT1"), _stored(), half,
                 [(r.COPY_TERMS_MISMATCH, "copy order type LIMIT, the leader's STOP_LOSS; trigger 0, the leader's 1390")],
                 id="order-type"),
    pytest.param(_order("L1", S.PENDING, 10, price=0.0, order_type=OrderType.MARKET),
                 _order("F1", S.PENDING, 5, "CT1", price=1400.0, order_type=OrderType.MARKET), _stored(), half, [],
                 id="a-market-orders-price-is-not-its-terms"),
    pytest.param(_order("L1", S.PENDING, 10), _order("F1", S.CANCELLED, 5, "CT1"), _stored(), half,
                 [(r.COPY_CANCELLED_LEADER_OPEN, "copy CANCELLED (not by the copier) while the leader's order is "
                                                 "PENDING; not placed again")], id="cancelled-outside-the-copier"),
    pytest.param(_order("L1", S.PENDING, 10), _order("F1", S.CANCELLED, 5, "CT1"),
                 _stored(cancel_requested=True, leader_status="CANCELLED"), half,
                 [(r.COPY_CANCELLED_LEADER_OPEN, "copy CANCELLED (the copier took the leader's order for CANCELLED) "
                                                 "while the leader's order is PENDING; not placed again")],
                 id="cancelled-for-a-leader-cancel-the-broker-does-not-hold"),
    pytest.param(_order("L1", S.PENDING, 10), _order("F1", S.CANCELLED, 5, "CT1"),
                 _stored(cancel_requested=True, leader_status="PENDING"), half, [],
                 id="cancelled-by-design-kill-switch-or-unwind"),
    pytest.param(_order("L1", S.CANCELLED, 10), _order("F1", S.PENDING, 5, "CT1"), _stored(), half,
                 [(r.STATUS_MISMATCH, "leader CANCELLED, copy still PENDING")], id="open-while-the-leader-cancelled"),
    pytest.param(_order("L1", S.TRADED, 10), _order("F1", S.PENDING, 5, "CT1"), _stored(filled_at=NOW - 60), half,
                 [(r.COPY_OPEN_LEADER_FILLED, "leader TRADED (filled 60s ago), copy still PENDING")],
                 id="open-long-after-the-leader-filled"),
    pytest.param(_order("L1", S.TRADED, 10), _order("F1", S.PENDING, 5, "CT1"), _stored(filled_at=NOW - 5), half, [],
                 id="open-just-after-the-leader-filled"),
    pytest.param(_order("L1", S.TRADED, 10), _order("F1", S.PENDING, 5, "CT1"), _stored(filled_at=None), half,
                 [(r.COPY_OPEN_LEADER_FILLED, "leader TRADED (the copier has not seen the fill), copy still PENDING")],
                 id="open-after-a-fill-the-copier-never-saw"),
    pytest.param(_order("L1", S.TRADED, 10), _order("F1", S.TRADED, 5, "CT1"), _stored(filled_at=NOW - 60), half, [],
                 id="both-filled"),
])
def test_each_copy_is_compared_with_its_leaders_order_as_it_is_now(leader, copy, stored, resize, expected):
    found = r.find_divergences([leader], {"f1": [copy]}, [stored], {"L1"}, ["f1"], resize=resize, now=NOW,
                               fill_grace_seconds=30.0)
    assert [(d.kind, d.detail) for d in found] == expected
    assert all((d.leader_order_id, d.follower) == ("L1", "f1") for d in found)


@pytest.mark.parametrize("rule, terms, lot, expected", [
    (SizingRule("fixed_ratio", ratio=0.5), _order("L1", S.PENDING, 30).terms, 1, 15),
    (SizingRule("fixed_ratio", ratio=0.5), _order("L1", S.PENDING, 225).terms, 75, 75),  # whole lots, rounded down
    (SizingRule("fixed_lots", lots=2), _order("L1", S.PENDING, 30).terms, 75, 150),
    (SizingRule("capital_proportional"), _order("L1", S.PENDING, 30).terms, 1, None),  # needs both capitals
    (SizingRule("fixed_ratio", ratio=0.01), _order("L1", S.PENDING, 30).terms, 1, None),  # rounds to nothing
])
def test_a_copy_is_resized_by_its_followers_rule_alone(rule, terms, lot, expected):
    assert r.rule_quantity(rule, terms, lot) == expected


RELIANCE_KEY, TCS_KEY = ("NSE_EQ", "2885"), ("NSE_EQ", "11536")
POSITION_ROWS = [
    # (why, leaders' positions, f1's, f1 copied, settling, f1 seen so the round before, reported)
    ("flat leader, f1 still long, the round before too", {"leader": {}}, {RELIANCE_KEY: 10}, {RELIANCE_KEY}, set(),
     True, "f1 holds 10 of NSE_EQ 2885 while its leader holds none"),
    ("found the first time only: a leader's exit whose copy is on its way looks the same", {"leader": {}},
     {RELIANCE_KEY: 10}, {RELIANCE_KEY}, set(), False, None),
    ("the other side of its leader", {"leader": {RELIANCE_KEY: 20}}, {RELIANCE_KEY: -4}, {RELIANCE_KEY}, set(), True,
     "f1 holds -4 of NSE_EQ 2885 while its leader holds 20"),
    ("its leader's side, whatever its size", {"leader": {RELIANCE_KEY: 20}}, {RELIANCE_KEY: 3}, {RELIANCE_KEY}, set(),
     True, None),
    ("flat with its leader", {"leader": {RELIANCE_KEY: 20}}, {}, {RELIANCE_KEY}, set(), True, None),
    ("an instrument never copied to it today (a holding of its own)", {"leader": {}}, {TCS_KEY: 5}, {RELIANCE_KEY},
     set(), True, None),
    ("an order still open in it: left for a later round", {"leader": {}}, {RELIANCE_KEY: 10}, {RELIANCE_KEY},
     {RELIANCE_KEY}, True, None),
    ("a leader it does not copy is not its leader", {"leader:b": {RELIANCE_KEY: 10}}, {RELIANCE_KEY: 10},
     {RELIANCE_KEY}, set(), True, None),
    ("one of two leaders on its side", {"leader": {}, "leader:a": {RELIANCE_KEY: 6}}, {RELIANCE_KEY: 10},
     {RELIANCE_KEY}, set(), True, None),
    ("both leaders flat", {"leader": {}, "leader:a": {}}, {RELIANCE_KEY: 10}, {RELIANCE_KEY}, set(), True,
     "f1 holds 10 of NSE_EQ 2885 while its leader holds none"),
    ("no copier running (run.py reconcile on its own): at once", {"leader": {}}, {RELIANCE_KEY: 10}, {RELIANCE_KEY},
     set(), None, "f1 holds 10 of NSE_EQ 2885 while its leader holds none"),
]


@pytest.mark.parametrize("why, leaders, held, copied, settling, before, reported", POSITION_ROWS,
                         ids=[row[0] for row in POSITION_ROWS])
def test_B_5_a_follower_holding_against_its_leaders_is_reported(why, leaders, held, copied, settling, before,
                                                                 reported):
    found, seen = r.positions_against_leaders(leaders, {"f1": held}, lambda _f, leader: leader != "leader:b",
                                              {"f1": copied}, settling,
                                              None if before is None else {("f1", RELIANCE_KEY)} if before else set())
    assert [d.detail for d in found] == ([reported] if reported else [])
    assert all((d.kind, d.follower, d.leader_order_id) == (r.POSITION_AGAINST_LEADER, "f1", None) for d in found)
    if reported:
        assert ("f1", RELIANCE_KEY) in seen


def test_B_5_a_follower_left_holding_what_its_leader_sold_is_reported_and_alerted(make_rig, tmp_path):
    """The follower's copy of its leader's exit is refused by its broker: the leader is flat, the
    follower still holds 10. The reconciler reports it (once it has seen it in two rounds running),
    raises an error alert, and `run.py reconcile` prints it; nothing is traded."""
    rig = make_rig(proxied=["f1"], config={"reconcile": {"interval_seconds": 0}})
    price = rig.exchange.price(RELIANCE)  # (priced through it, each order trades at once)
    entry = rig.place(quantity=20, price=round(price * 1.05, 1))
    rig.wait_row(entry, lambda row: row.status == "TRADED", message="the entry copied and filled")
    refusal = '{"errorType": "Order_Error", "errorCode": "DH-906", "errorMessage": "order refused by RMS"}'
    rig.proxies["f1"].respond("POST /orders", 400, refusal, forward=NEVER)
    exit_order = rig.place(quantity=20, side="SELL", price=round(price * 0.95, 1))
    rig.wait_row(exit_order, lambda row: row.status == "REJECTED", message="the exit's copy refused")
    reconciler = rig.copier.address("reconciler")
    assert [d for d in reconciler.ask(Reconcile(), timeout=30) if d.kind == r.POSITION_AGAINST_LEADER] == []
    found = [d for d in reconciler.ask(Reconcile(), timeout=30) if d.kind == r.POSITION_AGAINST_LEADER]
    assert [(d.follower, d.detail) for d in found] == [("f1", "f1 holds 10 of NSE_EQ 2885 while its leader holds none")]
    alerts = rig.store.read(lambda: [a.message for a in m.Alert.select()
                                     .where(m.Alert.key == "position_against_leader:f1")])
    assert alerts and "holds 10" in alerts[0]
    report = run_command(rig, tmp_path, "reconcile")  # (on its own: it does not find the rig's copier running)
    assert report.returncode == 3, report.stdout + report.stderr
    assert any(r.POSITION_AGAINST_LEADER in line and "f1 holds 10" in line for line in report.stdout.splitlines())
    rig.store.settings.set(REQUEST_SETTING, "asked")  # as run.py reconcile asks a running copier
    reconciler.ask(AnswerReconcileRequests(), timeout=30)
    reported, error = read_report(rig.store.settings.get(REPORT_SETTING), "asked")
    assert error == "" and [d.kind for d in reported] == [r.POSITION_AGAINST_LEADER]
    assert rig.follower_placements("f1") == 1  # the entry: nothing was traded to mend it


def test_B_5_positions_that_cannot_be_read_leave_the_books_reconciled(make_rig):
    """The follower's broker fails every positions call: the round still compares the books (a
    missed order is reported and repaired), and only the position check waits for a later round."""
    rig = make_rig(config={"reconcile": {"interval_seconds": 0}})
    rig.exchange.faults.fail_fraction(1.0, mode="DH-908", client_id=rig.follower_ids["f1"], paths="GET /positions")
    rig.copier.terminate_child("feed:leader")
    wait_until(lambda: rig.exchange.socket_count(LEADER_ID) == 0, message="leader socket closed")
    missed = rig.place(quantity=16, price=1432.0)
    found = rig.copier.address("reconciler").ask(Reconcile(), timeout=30)
    assert found is not None and [(d.kind, d.leader_order_id) for d in found] == [(r.MISSING_REPLICATION, missed)]
    assert rig.follower_copy(missed)["quantity"] == 8
