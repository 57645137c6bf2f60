"""The store's write path: order events appended in a transaction are written at its commit, in
sequence, and vanish with it when it fails; cached UPDATEs save only what changed; a full database
is reported once by its real cause and recovers by itself; its files are private."""
from __future__ import annotations

import time

import pytest

from storage import Store, StorageUnavailable
from storage import models as m
from tests.conftest import wait_until


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


def test_a_full_database_logs_its_cause_once_refuses_writes_and_recovers_by_itself(tmp_path, caplog):
    # SQLite's own page limit gives the error a full disk gives ("database or disk is full")
    health: list[bool] = []
    store = Store(tmp_path / "full.db", retry_seconds=2.0, on_health=health.append)
    try:
        size = store.read(lambda: store.db.execute_sql("PRAGMA page_count").fetchone()[0])
        store.read(lambda: store.db.execute_sql(f"PRAGMA max_page_count = {size}"))
        failures = []
        started = time.monotonic()
        for i in range(20):
            try:
                store.settings.set(f"filler-{i}", "x" * 3000)
            except StorageUnavailable as exc:
                failures.append(exc)
        assert failures, "the page limit never filled the database"
        assert time.monotonic() - started < 2.0, "writes to a full database were retried instead of refused"
        assert all("database or disk is full" in str(exc) for exc in failures)
        assert not store.healthy and health == [False]
        messages = [r.getMessage() for r in caplog.records]
        assert sum("database or disk is full" in m for m in messages) == 1, messages
        assert not any("cannot rollback" in m for m in messages)

        store.read(lambda: store.db.execute_sql("PRAGMA max_page_count = 1073741823"))  # space is back
        wait_until(lambda: store.healthy, 10, message="storage healthy again without a write of ours")
        assert health == [False, True]
        store.settings.set("after", "written")
        assert store.settings.get("after") == "written"
    finally:
        store.close()


def test_storage_files_are_readable_by_their_owner_only(tmp_path):
    store = Store(tmp_path / "private.db", exclusive=True)
    try:
        store.settings.set("k", "v")
        names = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
        assert {"private.db", "private.db-wal", "private.db-shm", "private.db.lock"} <= set(names), names
        assert all(mode == 0o600 for mode in names.values()), {n: oct(mode) for n, mode in names.items()}
    finally:
        store.close()
