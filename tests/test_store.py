"""The store's write path: order events appended in a transaction are written at its commit, in
sequence, and vanish with it when it fails; cached UPDATEs save only what changed."""
from __future__ import annotations

import pytest

from storage import Store
from storage import models as m


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "t.db", retry_seconds=0.2)
    yield s
    s.close()


def test_events_of_one_transaction_are_stored_in_sequence_and_seen_by_last_seq(store):
    def effect() -> None:
        store.append_order_event("L:1", "SEEN", {"n": 1}, 1)
        store.append_order_event("F:1:f1", "SUBMITTED", {"n": 2}, 1)
        # an appender that does not count the sequence itself sees the buffered event
        assert store.append_order_event("L:1", "MODIFIED", {"n": 3}) == 2
        assert store.last_seq("F:1:f1") == 1

    store.write(effect)
    assert [(e.seq, e.kind) for e in store.order_events("L:1")] == [(1, "SEEN"), (2, "MODIFIED")]
    assert [(e.seq, e.kind) for e in store.order_events("F:1:f1")] == [(1, "SUBMITTED")]


def test_a_failed_transaction_leaves_no_event_behind(store):
    def effect() -> None:
        store.append_order_event("L:2", "SEEN", {}, 1)
        raise RuntimeError("the effect failed after appending")

    with pytest.raises(RuntimeError):
        store.write(effect)
    store.write(lambda: store.append_order_event("L:3", "SEEN", {}, 1))  # the next transaction
    assert store.order_events("L:2") == []
    assert [e.kind for e in store.order_events("L:3")] == ["SEEN"]


def test_save_updates_only_the_changed_columns_of_that_row(store):
    rows = store.write(lambda: [store.create(m.FollowerOrder, leader_order_id="9", follower=f, correlation_id=f"C{f}",
                                             status="PENDING_PLACEMENT", security_id="2885", side="BUY",
                                             quantity=5, target="{}") for f in ("f1", "f2")])
    first = rows[0]
    first.status, first.broker_order_id = "PENDING", "77"
    store.write(lambda: store.save(first))
    stored = {r.follower: r for r in store.read(lambda: list(m.FollowerOrder.select()))}
    assert (stored["f1"].status, stored["f1"].broker_order_id, stored["f1"].quantity) == ("PENDING", "77", 5)
    assert (stored["f2"].status, stored["f2"].broker_order_id) == ("PENDING_PLACEMENT", None)
