"""The leader's super orders (an entry with a target and a stop-loss leg): copied as super orders,
sized per follower, each leg's modification and cancel followed; never copied as plain orders.
Counted on the follower's books at the paper exchange, which serves `/super/orders`."""
from __future__ import annotations

import io
import random
import subprocess
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console

from app.live_view import render
from storage import models as m
from tests.conftest import (LEADER_ID, Rig, client, end_processes, kill_during_burst, paper_control, run_command,
                            start_paper_process, start_rig, started_copier, wait_until)
from trading.copy import correlation_id

RELIANCE = "2885"


def _tick(price: float) -> float:
    return round(round(price * 20) / 20, 2)


def _place_super(rig: Rig, quantity: int = 10, marketable: bool = False, jump: float = 0.0) -> tuple[str, float]:
    price = _tick(rig.exchange.price(RELIANCE) * (1.02 if marketable else 0.98))
    answer = rig.leader.place_super_order(security_id=RELIANCE, exchange_segment="NSE_EQ", transaction_type="BUY",
                                          quantity=quantity, order_type="LIMIT", product_type="INTRADAY", price=price,
                                          targetPrice=_tick(price * 1.05), stopLossPrice=_tick(price * 0.95),
                                          trailingJump=jump)
    assert answer["status"] == "success", answer
    return answer["data"]["orderId"], price


def _supers(rig: Rig, follower: str = "f1") -> list[dict[str, Any]]:
    return rig.exchange.super_orders(rig.follower_ids[follower])


def _leg(entry: dict[str, Any], name: str) -> dict[str, Any]:
    return next(leg for leg in entry["legDetails"] if leg["legName"] == name)


def _calls(rig: Rig, follower: str = "f1") -> list[str]:
    """The follower account's order calls, as `METHOD path` (reads left out)."""
    return [r["route"] for r in rig.exchange.request_log(rig.follower_ids[follower]) if r["method"] != "GET"]


def _copy(rig: Rig) -> dict[str, Any]:
    return wait_until(lambda: (_supers(rig) or [None])[0], message="the follower's super order")


def test_a_leaders_super_order_is_copied_as_one_super_order_sized_for_the_follower(make_rig):
    rig = make_rig()
    _leader_id, price = _place_super(rig, quantity=10)

    copy = _copy(rig)
    assert copy["quantity"] == 5  # the default follower's ratio 0.5
    assert (copy["price"], _leg(copy, "TARGET_LEG")["price"], _leg(copy, "STOP_LOSS_LEG")["price"]) == \
        (price, _tick(price * 1.05), _tick(price * 0.95))
    assert len(rig.follower_book()) == 1 and len(_supers(rig)) == 1
    assert _calls(rig) == ["POST /super/orders"]  # one super order, never three plain orders


def test_the_leaders_target_and_stop_loss_changes_are_followed_leg_by_leg(make_rig):
    rig = make_rig()
    leader_id, price = _place_super(rig)
    _copy(rig)
    target, stop = _tick(price * 1.07), _tick(price * 0.93)

    assert rig.leader.modify_super_order(leader_id, "LIMIT", "TARGET_LEG", targetPrice=target)["status"] == "success"
    wait_until(lambda: _leg(_supers(rig)[0], "TARGET_LEG")["price"] == target,
               message=lambda: f"the follower's target at {target}: {_supers(rig)}")
    answer = rig.leader.modify_super_order(leader_id, "LIMIT", "STOP_LOSS_LEG", stopLossPrice=stop, trailingJump=1.0)
    assert answer["status"] == "success", answer
    wait_until(lambda: (_leg(_supers(rig)[0], "STOP_LOSS_LEG")["price"], _supers(rig)[0]["trailingJump"])
               == (stop, 1.0), message=lambda: f"the follower's stop-loss at {stop}, jump 1: {_supers(rig)}")
    assert _calls(rig).count("PUT /super/orders/{orderId}") == 2
    assert len(_supers(rig)) == 1 and len(rig.follower_book()) == 1


def test_the_leaders_entry_modification_re_sizes_the_followers_entry(make_rig):
    rig = make_rig()
    leader_id, price = _place_super(rig)
    _copy(rig)
    new_price = _tick(price * 0.99)

    answer = rig.leader.modify_super_order(leader_id, "LIMIT", "ENTRY_LEG", quantity=20, price=new_price,
                                           targetPrice=_tick(price * 1.05), stopLossPrice=_tick(price * 0.95))
    assert answer["status"] == "success", answer

    wait_until(lambda: (_supers(rig)[0]["quantity"], _supers(rig)[0]["price"]) == (10, new_price),
               message=lambda: f"the follower's entry at 10 @ {new_price}: {_supers(rig)}")
    assert len(_supers(rig)) == 1


def test_the_leaders_cancel_of_an_exit_leg_cancels_the_followers_leg_only(make_rig):
    rig = make_rig()
    leader_id, _price = _place_super(rig)
    _copy(rig)

    assert rig.leader.cancel_super_order(leader_id, "TARGET_LEG")["status"] == "success"

    wait_until(lambda: _leg(_supers(rig)[0], "TARGET_LEG")["orderStatus"] == "CANCELLED",
               message=lambda: f"the follower's target leg cancelled: {_supers(rig)}")
    copy = _supers(rig)[0]
    assert copy["orderStatus"] == "PENDING" and _leg(copy, "STOP_LOSS_LEG")["orderStatus"] == "PENDING"


def test_the_leaders_cancel_cancels_the_followers_super_order(make_rig):
    rig = make_rig()
    leader_id, _price = _place_super(rig)
    _copy(rig)

    assert rig.leader.cancel_super_order(leader_id, "ENTRY_LEG")["status"] == "success"

    wait_until(lambda: _supers(rig)[0]["orderStatus"] == "CANCELLED",
               message=lambda: f"the follower's super order cancelled: {_supers(rig)}")
    assert "DELETE /super/orders/{orderId}/{orderLeg}" in _calls(rig)


def test_exit_legs_that_trade_at_the_leader_are_not_copied_as_orders(make_rig):
    rig = make_rig()
    leader_id, _price = _place_super(rig, marketable=True)  # the entry trades: exit legs placed, at both
    wait_until(lambda: _supers(rig) and _supers(rig)[0]["orderStatus"] == "TRADED",
               message=lambda: f"the follower's entry traded: {_supers(rig)}")
    wait_until(lambda: _leg(_supers(rig)[0], "TARGET_LEG")["totalQuantity"] == 5,
               message=lambda: f"the follower's exit legs placed: {_supers(rig)}")

    rig.exchange.fill(LEADER_ID, leader_id, leg="TARGET_LEG")  # the leader's target hits
    wait_until(lambda: rig.exchange.super_orders(LEADER_ID)[0]["orderStatus"] == "CLOSED",
               message="the leader's super order closed")
    wait_until(lambda: rig.store.read(lambda: m.InboundEvent.select().where(
        (m.InboundEvent.account == "leader") & (m.InboundEvent.done == False)).count()) == 0,  # noqa: E712
        message="every update of the leader's legs handled")

    assert _calls(rig) == ["POST /super/orders"]  # the follower's own exits work at its broker
    assert _leg(_supers(rig)[0], "STOP_LOSS_LEG")["orderStatus"] == "PENDING"


def test_after_a_restart_the_leaders_leg_changes_are_still_followed(make_rig):
    rig = make_rig()
    leader_id, price = _place_super(rig)
    _copy(rig)
    wait_until(lambda: rig.copy_row(leader_id) is not None and rig.copy_row(leader_id).status == "PENDING",
               message="the copy stored as placed")
    rig.copier.stop()
    start_rig(rig)
    target = _tick(price * 1.08)

    assert rig.leader.modify_super_order(leader_id, "LIMIT", "TARGET_LEG", targetPrice=target)["status"] == "success"

    wait_until(lambda: _leg(_supers(rig)[0], "TARGET_LEG")["price"] == target, timeout=15,
               message=lambda: f"the follower's target at {target}: {_supers(rig)}")
    assert len(_supers(rig)) == 1 and _calls(rig).count("POST /super/orders") == 1


def test_the_live_view_shows_a_copied_super_orders_exit_legs(make_rig):
    rig = make_rig()
    leader_id, _price = _place_super(rig, marketable=True)
    wait_until(lambda: rig.copy_row(leader_id) is not None and rig.copy_row(leader_id).target_leg == "PENDING",
               message="the copy's exit legs seen working")

    console = Console(file=io.StringIO(), width=140, height=24, force_terminal=False, color_system=None)
    console.print(render(rig.store, rig.config))

    row = next(line for line in console.file.getvalue().splitlines() if leader_id in line)
    assert "5 TRADED target PENDING stop-loss PENDING" in row, row


def test_the_reconciler_and_the_orders_command_see_a_copied_super_order_and_its_legs(make_rig, tmp_path: Path):
    rig = make_rig()
    leader_id, _price = _place_super(rig, marketable=True)  # traded: both books hold the exit legs too
    wait_until(lambda: rig.copy_row(leader_id) is not None and rig.copy_row(leader_id).target_leg == "PENDING",
               message="the copy's exit legs seen working")

    report = run_command(rig, tmp_path, "reconcile")

    assert report.returncode == 0, report.stdout + report.stderr  # the legs share the entry's ids: no divergence
    listing = run_command(rig, tmp_path, "orders")
    assert "target PENDING stop-loss PENDING" in listing.stdout, listing.stdout


def test_a_super_order_placement_whose_answer_is_lost_is_looked_up_never_placed_again(make_rig):
    rig = make_rig()
    rig.exchange.faults.fail_after_effect(1.0, client_id=rig.follower_ids["f1"], paths=("POST /super/orders",))
    leader_id, _price = _place_super(rig)

    wait_until(lambda: rig.copy_row(leader_id) is not None and rig.copy_row(leader_id).status == "PENDING"
               and rig.copy_row(leader_id).broker_order_id, timeout=20,
               message=lambda: f"the copy found and adopted: {rig.copy_row(leader_id)}")
    assert len(_supers(rig)) == 1 and _supers(rig)[0]["quantity"] == 5
    assert _calls(rig) == ["POST /super/orders"]  # sent once; its outcome looked up, not sent again


def test_a_super_order_above_the_freeze_quantity_is_copied_as_super_orders_within_it(make_rig):
    rig = make_rig(followers=[{"name": "f1", "sizing": {"strategy": "fixed_ratio", "ratio": 2.0}, "funds": 50_000_000}])
    price = _tick(rig.exchange.price("45105") * 0.9)
    answer = rig.leader.place_super_order(security_id="45105", exchange_segment="NSE_FNO", transaction_type="BUY",
                                          quantity=1500, order_type="LIMIT", product_type="MARGIN", price=price,
                                          targetPrice=_tick(price * 1.2), stopLossPrice=_tick(price * 0.8))
    assert answer["status"] == "success", answer

    wait_until(lambda: sorted(o["quantity"] for o in _supers(rig)) == [1200, 1800],
               message=lambda: f"two super orders, 1800 + 1200 (NIFTY's freeze quantity 1800): {_supers(rig)}")
    assert _calls(rig) == ["POST /super/orders"] * 2
    leader_id = answer["data"]["orderId"]
    assert rig.leader.cancel_super_order(leader_id, "ENTRY_LEG")["status"] == "success"
    wait_until(lambda: [o["orderStatus"] for o in _supers(rig)] == ["CANCELLED", "CANCELLED"],
               message=lambda: f"both cancelled: {_supers(rig)}")


SUPER_ORDERS = 12


def test_sigkill_in_the_middle_of_copying_super_orders_never_doubles_or_misses_one(tmp_path):
    """The real run.py SIGKILLed while leader super orders are copied, restarted at once: on the
    followers' books every leader super order has exactly one super order, under its copy's
    correlation id, sized, with the leader's target and stop-loss; no plain order anywhere."""
    rng = random.Random(5)
    exchange, urls, accounts = start_paper_process("--accounts", "3", "--no-price-walk", "--unlimited")
    copier: subprocess.Popen | None = None
    try:
        paper_control(urls["CONTROL"], "set_price", security_id=RELIANCE, price=1500.0)
        (leader_id, leader_token), *followers = accounts
        copier, start_copier = started_copier(tmp_path, urls, accounts, ratio=0.5)
        leader = client(urls["REST"], leader_id, leader_token, timeout=10)
        placed: dict[str, tuple[int, float]] = {}  # leader order id -> its quantity and target
        burst_done = threading.Event()

        def burst() -> None:
            for i in range(SUPER_ORDERS):
                quantity, target = 2 * (1 + i % 5), 1550.0 + i
                answer = leader.place_super_order(RELIANCE, "NSE_EQ", "BUY", quantity, "LIMIT", "INTRADAY",
                                                  1450.0 - i, target, 1400.0, 0.0)
                assert answer["status"] == "success", answer
                placed[answer["data"]["orderId"]] = (quantity, target)
                if burst_done.wait(rng.uniform(0.02, 0.1)):
                    return
            burst_done.set()

        thread = threading.Thread(target=burst)
        thread.start()
        copier = kill_during_burst(copier, start_copier, lambda: placed, rng, 3, pause=(0.1, 0.4))
        thread.join(60)
        assert len(placed) == SUPER_ORDERS

        expected = {(f"f{i + 1}", correlation_id(order, f"f{i + 1}")): (quantity // 2, target)
                    for order, (quantity, target) in placed.items() for i in range(len(followers))}

        def supers() -> list[tuple[str, dict]]:
            return [(f"f{i + 1}", entry) for i, (cid, tok) in enumerate(followers)
                    for entry in client(urls["REST"], cid, tok, timeout=10).get_super_order_list()["data"]]

        wait_until(lambda: len(supers()) >= len(expected), 60, interval=0.2,
                   message=lambda: f"{len(expected)} super orders on the followers' books, {len(supers())} there")
        held = supers()
        counts = Counter((name, entry["correlationId"]) for name, entry in held)
        assert max(counts.values()) == 1, "a super order was placed twice"
        assert set(counts) == set(expected), "a copy is missing, or a super order no copy accounts for"
        assert {(name, e["correlationId"]): (e["quantity"], _leg(e, "TARGET_LEG")["price"])
                for name, e in held} == expected
        books = [entry for cid, tok in followers
                 for entry in client(urls["REST"], cid, tok, timeout=10).get_order_list()["data"]]
        assert len(books) == len(expected), "an order besides the copies' super orders"
        print(f"{SUPER_ORDERS} leader super orders, {len(expected)} copies, 3 SIGKILLs: 0 doubled, 0 missed")
    finally:
        end_processes(copier, exchange)


def test_a_super_order_whose_exits_cannot_be_read_is_a_recorded_skip_never_a_plain_copy(make_rig):
    rig = make_rig(config={"broker": {"max_attempts": 1}})  # each read fails at once (no transient retries)
    rig.exchange.faults.fail_fraction(1.0, mode="DH-908", client_id=LEADER_ID, paths=("GET /super/orders",))
    leader_id, _price = _place_super(rig)

    skip = rig.wait_skip(leader_id, timeout=30)
    assert skip.reason == "super_order_unreadable", skip.reason
    assert rig.follower_book() == [] and _calls(rig) == []
