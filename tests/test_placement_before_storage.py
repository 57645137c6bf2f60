"""A first placement leaves before its copy's transaction is written, and a crash between the two
never sends it twice: the copy is looked up by its correlation id. In-process (`make_rig`); the
storage write is slowed or failed at the order's storage boundary (`OrderRecords.create_copy`),
and every count is taken on the exchange's books."""
from __future__ import annotations

import sqlite3
import threading
from typing import Any

import peewee as pw
import pytest

from actors.feed import store_and_route
from app.commands import replay_order
from broker.parsing import from_order_book
from observability import metrics
from storage import models as m
from storage.orders import OrderRecords
from supervisors import Address
from tests.conftest import LEADER_ID, RELIANCE, client, run_command, start_rig, wait_until
from trading.orders import correlation_id


def _placement_requests(rig: Any, follower: str = "f1") -> int:
    """Every placement the follower's account was sent, accepted or refused."""
    return sum(1 for r in rig.exchange.request_log(rig.follower_ids[follower])
               if r["method"] == "POST" and r["path"].endswith("/orders"))


def test_a_copy_is_placed_while_its_transaction_is_still_being_written(make_rig, monkeypatch):
    rig = make_rig()
    held, release = threading.Event(), threading.Event()
    create_copy = OrderRecords.create_copy

    def slow_disk(self: OrderRecords, *args: Any, **kwargs: Any) -> None:
        held.set()
        release.wait(10)
        create_copy(self, *args, **kwargs)

    monkeypatch.setattr(OrderRecords, "create_copy", slow_disk)
    try:
        leader_id = rig.place(quantity=10)
        wait_until(held.is_set, message="the copy's transaction under way")
        placed = wait_until(rig.follower_book, 5, message="the copy at the exchange while its transaction is held")
    finally:
        release.set()
    row = rig.wait_row(leader_id, lambda r: r.broker_order_id is not None, message="the answer recorded")
    assert row.broker_order_id == placed[0]["orderId"] and placed[0]["quantity"] == 5
    assert _placement_requests(rig) == 1 and len(rig.follower_book()) == 1


@pytest.mark.parametrize("failure, crashes", [
    (pw.OperationalError(sqlite3.OperationalError("database or disk is full")), 0),  # storage down, then back
    (RuntimeError("a defect after the placement left"), 1),  # the order actor crashes and restarts
], ids=["storage_down", "actor_crash"])
def test_a_copy_sent_but_not_stored_is_found_by_its_correlation_id_and_never_sent_again(make_rig, monkeypatch,
                                                                                       failure, crashes):
    rig = make_rig()
    restarts = metrics.ACTOR_RESTARTS.labels("order")._value.get()
    failed = threading.Event()
    create_copy = OrderRecords.create_copy

    def failing_disk(self: OrderRecords, *args: Any, **kwargs: Any) -> None:
        if not failed.is_set():
            failed.set()
            raise failure
        create_copy(self, *args, **kwargs)

    monkeypatch.setattr(OrderRecords, "create_copy", failing_disk)
    leader_id = rig.place(quantity=10)
    wait_until(failed.is_set, message="the copy's transaction failed")
    row = rig.wait_row(leader_id, lambda r: r.broker_order_id is not None, timeout=30,
                       message="the copy stored once storage is back")
    book = rig.follower_book()
    assert len(book) == 1 and row.broker_order_id == book[0]["orderId"]
    assert row.correlation_id == book[0]["correlationId"] and row.status == "PENDING"
    assert _placement_requests(rig) == 1
    assert metrics.ACTOR_RESTARTS.labels("order")._value.get() == restarts + crashes
    assert rig.follower_copy(rig.place(quantity=12))["quantity"] == 6  # copying goes on


def test_an_update_an_earlier_run_stored_and_may_have_copied_is_looked_up_before_it_is_copied(make_rig):
    """What a crash between a copy's placement and its transaction leaves: the leader's update
    stored and not done, the copy at the broker, no copy in storage."""
    rig = make_rig()
    rig.copier.stop()
    price = round(rig.exchange.price(RELIANCE) * 0.97, 1)
    leader_id = rig.place(quantity=10, price=price)
    entry = rig.exchange.order(LEADER_ID, leader_id)
    assert store_and_route(rig.store, Address("order-router"), "leader", from_order_book(entry))
    f1 = rig.config.followers[0]
    sent = client(rig.exchange, f1.client_id, f1.access_token).place_order(
        security_id=RELIANCE, exchange_segment="NSE_EQ", transaction_type="BUY", quantity=5, order_type="LIMIT",
        product_type="INTRADAY", price=price, tag=correlation_id(leader_id, "f1"))
    assert sent["status"] == "success", sent

    start_rig(rig)
    row = rig.wait_row(leader_id, lambda r: r.broker_order_id is not None, timeout=20,
                       message="the copy found at the broker")
    assert row.broker_order_id == sent["data"]["orderId"] and row.status == "PENDING"
    assert _placement_requests(rig) == 1 and len(rig.follower_book()) == 1
    assert rig.follower_copy(rig.place(quantity=12))["quantity"] == 6  # new orders are copied at once
    rig.copier.stop()
    rebuilt, lines = replay_order(rig.store, leader_id)  # the copy's events rebuild its stored state
    assert rebuilt, "\n".join(lines)


def test_an_update_parked_after_its_copy_was_sent_says_so_and_a_retry_in_a_later_run_adopts_the_copy(
        make_rig, monkeypatch, tmp_path):
    rig = make_rig(config={"copy": {"sweep_seconds": 0.2}})
    create_copy = OrderRecords.create_copy

    def defect(self: OrderRecords, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("a defect in storing a copy")

    monkeypatch.setattr(OrderRecords, "create_copy", defect)
    leader_id = rig.place(quantity=10)
    letter = wait_until(lambda: rig.store.read(lambda: m.DeadLetter.get_or_none(m.DeadLetter.leader_order_id == leader_id)),
                        30, message="the update parked after crashing its order actor")
    alert = wait_until(lambda: rig.store.read(lambda: m.Alert.get_or_none(m.Alert.key == "poison:order")), 5,
                       message="the poison alert stored")
    assert "placements to f1 were sent and not stored" in alert.message, alert.message
    book = rig.follower_book()
    assert len(book) == 1 and _placement_requests(rig) == 1  # sent once; the next incarnations looked it up

    monkeypatch.setattr(OrderRecords, "create_copy", create_copy)  # the defect fixed: a new version, a new run
    rig.copier.stop()
    start_rig(rig)
    assert run_command(rig, tmp_path, "dlq", "retry", str(letter.id)).returncode == 0
    row = rig.wait_row(leader_id, lambda r: r.broker_order_id is not None, timeout=20, message="the copy adopted")
    assert row.broker_order_id == book[0]["orderId"] and row.status == "PENDING"
    assert _placement_requests(rig) == 1 and len(rig.follower_book()) == 1


def test_an_update_an_earlier_run_stored_and_never_copied_is_copied_once_its_lookup_finds_nothing(make_rig):
    rig = make_rig(config={"broker": {"timeout_seconds": 1.0}})
    rig.copier.stop()
    leader_id = rig.place(quantity=10)
    assert store_and_route(rig.store, Address("order-router"), "leader",
                           from_order_book(rig.exchange.order(LEADER_ID, leader_id)))

    start_rig(rig)
    placed = rig.follower_copy(leader_id, timeout=15)  # looked up, found absent, then placed
    assert placed["quantity"] == 5 and placed["correlationId"] == correlation_id(leader_id, "f1")
    assert _placement_requests(rig) == 1 and len(rig.follower_book()) == 1
    lookups = [r for r in rig.exchange.request_log(rig.follower_ids["f1"]) if "/orders/external/" in r["path"]]
    assert lookups, "the copy was placed without a lookup"
