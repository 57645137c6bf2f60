"""Rejections and edge cases: what is not copied is recorded with its reason."""
from __future__ import annotations

import threading
import time
from pathlib import Path

from actors.messages import LEADER
from observability import metrics
from storage import models as m
from tests.conftest import LEADER_ID, RELIANCE, ROOT, TCS, wait_until
from trading.instruments import InstrumentMaster


def test_5_1_leader_order_rejected_is_not_copied(rig):
    # outside the circuit band: the exchange creates the leader order as REJECTED
    leader_id = rig.place(price=round(rig.exchange.price(RELIANCE) * 1.5, 1))
    skip = rig.wait_skip(leader_id)
    assert skip.reason == "leader_rejected"
    assert rig.follower_book("f1") == []
    assert rig.follower_placements("f1") == 0


def test_5_3_follower_lacks_margin_is_a_skip_without_retry(make_rig):
    # capital check off, so the broker's own margin rejection is what the copier meets
    rig = make_rig(followers=[{"name": "f1", "sizing": {"strategy": "fixed_ratio", "ratio": 1.0}, "funds": 1_000}],
                   config={"copy": {"check_capital": False}})
    leader_id = rig.place(quantity=100, product="CNC")
    skip = rig.wait_skip(leader_id, "f1")
    assert skip.reason == "insufficient_margin"
    row = rig.copy_row(leader_id)
    assert row.status == "REJECTED" and "margin" in (row.last_error or "").lower()
    assert rig.follower_placements("f1") == 1  # never retried
    assert rig.store.read(lambda: m.DeadLetter.select().count()) == 0


def test_5_4_unknown_security_skipped_before_any_broker_call(make_rig, tmp_path):
    master = tmp_path / "master.csv"
    lines = (ROOT / "paper" / "data" / "instruments.csv").read_text().splitlines()
    master.write_text("\n".join(line for line in lines if ",11536," not in line) + "\n")  # no TCS
    rig = make_rig(config={"instruments": {"master": str(master)}})
    leader_id = rig.place(security_id=TCS, quantity=10)
    skip = rig.wait_skip(leader_id)
    assert skip.reason == "unknown_instrument" and "11536" in skip.detail
    assert rig.follower_placements("f1") == 0


def test_8_6_instrument_missing_from_cache_is_reloaded_from_master(make_rig, tmp_path, monkeypatch):
    monkeypatch.setattr(InstrumentMaster, "RELOAD_ON_MISS_SECONDS", 0.0)
    master = tmp_path / "master.csv"
    full = (ROOT / "paper" / "data" / "instruments.csv").read_text()
    master.write_text("\n".join(line for line in full.splitlines() if ",11536," not in line) + "\n")
    rig = make_rig(config={"instruments": {"master": str(master)}})
    master.write_text(full)  # the master now lists TCS; the copier's cache does not yet
    leader_id = rig.place(security_id=TCS, quantity=10, price=round(rig.exchange.price(TCS) * 0.97, 1))
    assert rig.follower_copy(leader_id)["securityId"] == TCS


def test_8_4_simultaneous_orders_never_over_commit_capital(make_rig):
    # each copy (CNC, full value) needs ~ 60% of the follower's capital: only one may go through
    rig = make_rig(followers=[{"name": "f1", "sizing": {"strategy": "fixed_ratio", "ratio": 1.0}, "funds": 150_000}])
    price = round(rig.exchange.price(RELIANCE) * 0.97, 1)
    quantity = int(90_000 // price)
    ids: list[str] = []
    barrier = threading.Barrier(2)

    def place() -> None:
        barrier.wait()
        ids.append(rig.place(quantity=quantity, price=price, product="CNC"))

    threads = [threading.Thread(target=place) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(ids) == 2
    rows = [rig.wait_row(i, lambda r: r.status != "PENDING_PLACEMENT") for i in ids]
    statuses = sorted(r.status for r in rows)
    assert statuses == ["PENDING", "SKIPPED"], statuses
    skipped = next(r for r in rows if r.status == "SKIPPED")
    assert skipped.skip_reason == "insufficient_capital"
    assert len(rig.follower_book("f1")) == 1


def test_8_5_capital_runs_out_mid_day(make_rig):
    rig = make_rig(followers=[{"name": "f1", "sizing": {"strategy": "fixed_ratio", "ratio": 1.0}, "funds": 100_000}])
    price = round(rig.exchange.price(RELIANCE) * 0.97, 1)
    quantity = int(30_000 // price)
    rows = []
    for _ in range(5):  # one after another through the day
        leader_id = rig.place(quantity=quantity, price=price, product="CNC")
        rows.append(rig.wait_row(leader_id, lambda r: r.status != "PENDING_PLACEMENT"))
    assert [r.status for r in rows[:3]] == ["PENDING"] * 3, [(r.skip_reason, r.last_error) for r in rows]
    assert [(r.status, r.skip_reason) for r in rows[3:]] == [("SKIPPED", "insufficient_capital")] * 2


def test_8_7_size_rounding_to_zero_is_skipped(rig):
    leader_id = rig.place(quantity=1)  # 0.5 of one share
    row = rig.wait_row(leader_id, lambda r: r.status == "SKIPPED")
    assert row.skip_reason == "size_rounds_to_zero"
    assert rig.follower_placements("f1") == 0


def test_8_7_round_up_to_one_lot_only_when_configured(make_rig):
    rig = make_rig(followers=[{"name": "f1", "sizing": {"strategy": "fixed_ratio", "ratio": 0.5,
                                                        "round_up_to_one_lot": True}}])
    assert rig.follower_copy(rig.place(quantity=1))["quantity"] == 1


def test_8_8_market_order_with_price_zero(rig):
    leader_id = rig.place(order_type="MARKET", quantity=20, price=0)
    copy = rig.follower_copy(leader_id)
    assert (copy["orderType"], copy["price"], copy["quantity"]) == ("MARKET", 0.0, 10)


def test_8_9_malformed_socket_message_is_counted_and_skipped(rig):
    before = metrics.MALFORMED_MESSAGES.labels("leader", "bad_json")._value.get()
    rig.exchange.send_raw(LEADER_ID, "{not json")
    rig.exchange.send_raw(LEADER_ID, '{"Type": "order_alert", "Data": {"OrderNo": "1"}}')
    wait_until(lambda: metrics.MALFORMED_MESSAGES.labels("leader", "bad_json")._value.get() > before,
               message="malformed message counted")
    # the feed keeps running: the next real order is copied
    assert rig.follower_copy(rig.place(quantity=10))["quantity"] == 5


def test_B_1_followers_sized_independently_and_never_delayed_by_each_other(make_rig):
    rig = make_rig(followers=[
        {"name": "f1", "sizing": {"strategy": "fixed_ratio", "ratio": 0.5}},
        {"name": "f2", "sizing": {"strategy": "fixed_lots", "lots": 3}},
        {"name": "slow", "sizing": {"strategy": "fixed_ratio", "ratio": 2.0}},
    ])
    rig.exchange.faults.delay_answers(3.0, client_id=rig.follower_ids["slow"], paths=("POST /orders",))
    started = time.monotonic()
    leader_id = rig.place(quantity=10)
    assert rig.follower_copy(leader_id, "f1")["quantity"] == 5
    assert rig.follower_copy(leader_id, "f2")["quantity"] == 3
    # f1 and f2 were answered while the slow follower's answer was still held back
    rig.wait_row(leader_id, lambda r: r.broker_order_id is not None, "f1", timeout=2.0)
    rig.wait_row(leader_id, lambda r: r.broker_order_id is not None, "f2", timeout=2.0)
    assert time.monotonic() - started < 2.5
    assert rig.follower_copy(leader_id, "slow")["quantity"] == 20


def test_5_3_margin_calculator_checked_before_placing_when_configured(make_rig):
    rig = make_rig(followers=[{"name": "f1", "sizing": {"strategy": "fixed_ratio", "ratio": 1.0}, "funds": 1_000}],
                   config={"copy": {"check_capital": False, "margin_check": True}})
    leader_id = rig.place(quantity=100, product="CNC")
    skip = rig.wait_skip(leader_id, "f1")
    assert skip.reason == "insufficient_margin" and "margin calculator" in skip.detail
    log = rig.exchange.request_log(rig.follower_ids["f1"])
    assert [r["path"] for r in log if r["method"] == "POST"] == ["/margincalculator"]  # no order, no retry
