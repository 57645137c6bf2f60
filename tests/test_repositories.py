"""The repositories of storage/: each domain operation in one transaction, answers as frozen
records (never the tables' rows, which would let a caller write behind storage's back)."""
from __future__ import annotations

import dataclasses
import json
import math
import time

import pytest

from storage import Store
from storage import models as m
from storage.forever import ForeverCopy
from trading.reconcile import Divergence


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "t.db", retry_seconds=0.2)
    yield s
    s.close()


def _leader(store: Store, order_id: str, status: str, first_seen_at: float, order_type: str = "LIMIT") -> None:
    store.write(lambda: m.LeaderOrder.create(
        order_id=order_id, status=status, security_id="2885", exchange_segment="NSE_EQ", symbol="RELIANCE",
        side="BUY", quantity=10, terms=json.dumps({"order_type": order_type}), first_seen_at=first_seen_at))


def _copy(store: Store, leader_order_id: str, follower: str, status: str, anomaly: str | None = None) -> None:
    store.write(lambda: m.FollowerOrder.create(
        leader_order_id=leader_order_id, follower=follower, correlation_id=f"C{leader_order_id}{follower}",
        status=status, security_id="2885", side="BUY", quantity=5, target="{}", anomaly=anomaly))


def _frozen(record: object) -> bool:
    try:
        setattr(record, dataclasses.fields(record)[0].name, None)  # type: ignore[arg-type]
    except dataclasses.FrozenInstanceError:
        return True
    return False


def test_a_parked_event_is_done_with_its_letter_and_a_retry_makes_it_pending_again(store):
    event_id = store.inbox.record("leader", "L1", "key-1", "socket", {"order_id": "L1"}, 0)
    letter_id = store.dead_letters.park_event(event_id, "dead_letter: ValueError: bad", leader_order_id="L1",
                                              follower="leader", correlation_id="", error_code="ValueError",
                                              reason="crashed the order actor 3 times", payload="{}")
    assert store.inbox.pending() == []
    assert store.read(lambda: m.InboundEvent.get_by_id(event_id)).outcome == "dead_letter: ValueError: bad"
    [letter] = store.dead_letters.unresolved()
    assert (letter.id, letter.operation, letter.event_id) == (letter_id, "inbox_event", event_id) and _frozen(letter)
    assert store.dead_letters.unresolved_count() == 1

    event = store.dead_letters.reopen(letter_id, event_id)
    assert (event.id, event.account, event.order_id) == (event_id, "leader", "L1") and _frozen(event)
    assert [e.id for e in store.inbox.pending()] == [event_id]
    assert store.dead_letters.unresolved_count() == 0


def test_an_operators_retry_is_due_until_the_copier_takes_it_and_a_drop_resolves_the_letter(store):
    first = store.dead_letters.park_frame("f1", "ValueError", "crashed the feed", "{garbage")
    second = store.dead_letters.park_frame("f1", "ValueError", "crashed the feed", "{garbage")
    assert store.dead_letters.due_for_retry(time.time()) == []
    store.dead_letters.request_retry(first)
    assert [letter.id for letter in store.dead_letters.due_for_retry(time.time() + 1)] == [first]
    store.dead_letters.retry_taken(first)
    assert store.dead_letters.due_for_retry(time.time() + 1) == []
    store.dead_letters.drop(second)
    assert store.dead_letters.unresolved_one(second) is None
    assert store.dead_letters.unresolved_one(first).operation == "socket_frame"


def test_each_reconcile_run_is_numbered_and_stored_whole_with_its_summary(store):
    found = [(Divergence("missing_replication", "L1", "f1", "no copy"), True),
             (Divergence("missing_follower_order", "L2", "f2", "gone"), False)]
    assert store.divergences.last_run() is None
    assert store.divergences.record_run(found) == 1
    assert store.divergences.record_run([]) == 2
    rows = store.read(lambda: [(d.run_id, d.kind, d.repaired) for d in m.Divergence.select().order_by(m.Divergence.id)])
    assert rows == [(1, "missing_replication", True), (1, "missing_follower_order", False)]
    assert store.divergences.last_run().endswith(", 0 divergences")


def test_a_forever_copy_reads_back_as_it_was_stored_and_a_skipped_one_records_its_skip(store):
    copy = ForeverCopy(leader_forever_id="FV1", follower="f1", correlation_id="CFV1f1", status="PENDING_PLACEMENT",
                       security_id="2885", side="BUY", leader_quantity=10, leader='{"order_id": "FV1"}',
                       target='{"quantity": 5}')
    stored = store.forever.add(copy)
    assert store.forever.open() == [stored] and _frozen(stored)
    placed = store.forever.update(stored, status="PENDING", follower_forever_id="B1", confirmed=stored.target)
    assert (placed.status, placed.follower_forever_id, placed.confirmed) == ("PENDING", "B1", '{"quantity": 5}')
    assert store.forever.open() == [placed]
    store.forever.update(placed, status="CANCELLED")
    assert store.forever.open() == []

    skipped = store.forever.add_skipped(dataclasses.replace(copy, follower="f2", correlation_id="CFV1f2"),
                                        "insufficient_funds", "forever order not copied")
    assert skipped.status == "SKIPPED" and store.forever.known("CFV1f2")
    assert store.read(lambda: [(s.leader_order_id, s.follower, s.reason) for s in m.Skip.select()]) == \
        [("FV1", "f2", "insufficient_funds")]
    assert store.forever.leader_ids_of("2885", "BUY") == {"FV1"} and store.forever.leader_ids_of("2885", "SELL") == set()


def test_open_orders_are_counted_per_account_with_the_lagging_copies(store):
    _leader(store, "L1", "PENDING", 1.0)
    _leader(store, "L2", "TRADED", 2.0)
    _copy(store, "L1", "f1", "PENDING", anomaly="lagging")
    _copy(store, "L1", "f2", "UNKNOWN")
    _copy(store, "L2", "f1", "TRADED")
    counts = store.copies.open_orders(["f1", "f2", "f3"])
    assert (counts.leader, counts.followers, counts.lagging) == (1, {"f1": 1, "f2": 1, "f3": 0},
                                                                 {"f1": 1, "f2": 0, "f3": 0})


def test_recent_leader_orders_come_newest_first_with_their_copies(store):
    _leader(store, "L1", "PENDING", 1.0, "MARKET")
    _leader(store, "L2", "PENDING", 2.0)
    _leader(store, "L3", "PENDING", 3.0)
    _copy(store, "L2", "f1", "PENDING")
    _copy(store, "L2", "f2", "SKIPPED")
    recent = store.copies.recent(2)
    assert [(lo.order_id, [c.follower for c in copies]) for lo, copies in recent] == [("L3", []), ("L2", ["f1", "f2"])]
    assert [[c.follower for c in copies] for _lo, copies in store.copies.recent(5, follower="f2")] == [[], ["f2"], []]
    assert store.copies.recent(5)[-1][0].order_type == "MARKET" and _frozen(recent[0][0])
    assert store.copies.followers() == {"f1", "f2"}
    assert store.copies.copy_of("L2", "f2").status == "SKIPPED" and store.copies.copy_of("L1", "f1") is None


def test_the_kill_switch_reads_back_as_it_was_turned(store):
    assert not store.settings.kill_switch().on
    store.settings.set_kill_switch(True, "too many losses", "risk")
    state = store.settings.kill_switch()
    assert (state.on, state.reason, state.by) == (True, "too many losses", "risk")


def test_an_update_is_stored_as_it_was_routed_a_number_that_is_not_finite_too(store):
    payload = {"order_id": "L1", "avg_price": 1401.25, "terms": {"price": float("nan"), "quantity": 10}}
    store.inbox.record("leader", "L1", "k1", "socket", payload, 0)
    store.inbox.record("leader", "L2", "k2", "socket", {**payload, "order_id": "L2", "terms": {"price": 1.5}}, 0)
    nan, plain = (json.loads(e.payload) for e in store.inbox.pending())
    assert math.isnan(nan["terms"]["price"]) and nan["avg_price"] == 1401.25
    assert plain == {"order_id": "L2", "avg_price": 1401.25, "terms": {"price": 1.5}}


def test_pending_inbox_events_are_chosen_by_order_and_age_and_events_read_back_in_sequence(store):
    first = store.inbox.record("leader", "L1", "k1", "socket", {"n": 1}, 0)
    second = store.inbox.record("f1", "B1", "k2", "book", {"n": 2}, 0)
    assert store.inbox.record("f1", "B1", "k2", "book", {"n": 2}, 0) is None  # the same update again
    assert [e.id for e in store.inbox.pending(["B1"])] == [second]
    assert store.inbox.pending(received_before=time.time() - 60) == []
    assert [e.id for e in store.inbox.pending(received_before=time.time() + 1)] == [first, second]
    assert store.inbox.knows_order("f1", "B1") and not store.inbox.knows_order("leader", "B1")

    store.write(lambda: (store.events.append("L:L1", "SEEN", {"qty": 10}), store.events.append("L:L1", "MODIFIED", {})))
    events = store.events.of("L:L1")
    assert [(e.seq, e.kind, e.payload) for e in events] == [(1, "SEEN", {"qty": 10}), (2, "MODIFIED", {})]
    assert _frozen(events[0])
