"""Orders of an earlier trading session: the exchange expired them at that session's close, so the
copier closes them in storage at start-up and never asks the broker about them. And a copy the
broker cannot find is looked up with a growing pause, a bounded number of times."""
from __future__ import annotations

import json
import time
from datetime import date, datetime, timedelta, timezone
from typing import Any, Callable

from prometheus_client import REGISTRY

from storage import models as m
from tests.conftest import start_rig, wait_until
from trading.calendar import IST

FOLLOWERS = [{"name": "f1", "sizing": {"strategy": "fixed_ratio", "ratio": 0.5}, "funds": 5_000_000},
             {"name": "f2", "sizing": {"strategy": "fixed_ratio", "ratio": 1.0}, "funds": 5_000_000}]


def ist(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=IST)


# -- the trading day of an order --------------------------------------------------------------------
def expired(segment: str, created_at: str, now: str, validity: str = "DAY") -> date | None:
    from trading.calendar import MarketCalendar
    from trading.expiry import expired_session

    return expired_session(MarketCalendar(), segment, validity, created_at, ist(now))


def test_a_day_order_of_an_earlier_trading_day_is_expired():
    assert expired("NSE_EQ", "2026-11-26 10:00:00", "2026-11-27 09:00:00") == date(2026, 11, 26)
    assert expired("NSE_EQ", "2026-11-26 10:00:00", "2026-11-27 09:00:00", validity="IOC") == date(2026, 11, 26)
    assert expired("MCX_COMM", "2026-11-26 23:00:00", "2026-11-27 00:30:00") == date(2026, 11, 26)


def test_a_day_order_of_todays_session_is_not_expired():
    assert expired("NSE_EQ", "2026-11-27 10:00:00", "2026-11-27 15:00:00") is None


def test_an_order_entered_after_the_close_belongs_to_the_next_trading_day():
    # entered after Friday's close (an after-market order): live in Monday's session
    assert expired("NSE_EQ", "2026-11-27 20:00:00", "2026-11-28 11:00:00") is None
    assert expired("NSE_EQ", "2026-11-27 20:00:00", "2026-11-30 10:00:00") is None
    assert expired("NSE_EQ", "2026-11-27 20:00:00", "2026-12-01 09:00:00") == date(2026, 11, 30)
    # entered the evening before a holiday (Tuesday 24 November 2026): Wednesday's session
    assert expired("NSE_EQ", "2026-11-23 18:00:00", "2026-11-24 12:00:00") is None
    assert expired("NSE_EQ", "2026-11-23 18:00:00", "2026-11-25 12:00:00") is None
    assert expired("NSE_EQ", "2026-11-23 18:00:00", "2026-11-26 09:00:00") == date(2026, 11, 25)


def test_an_order_with_no_date_or_an_unknown_segment_is_not_expired_on_a_guess():
    assert expired("NSE_EQ", "", "2026-11-27 10:00:00") is None
    assert expired("NSE_EQ", "yesterday", "2026-11-27 10:00:00") is None
    assert expired("NSE_WHATEVER", "2026-11-20 10:00:00", "2026-11-27 10:00:00") is None


# -- the copier at start-up --------------------------------------------------------------------------
def order_requests(rig, follower: str, broker_order_id: str, correlation: str) -> list[dict[str, Any]]:
    """The follower's REST calls about one order: by its broker order id or its correlation id."""
    return [r for r in rig.exchange.request_log(rig.follower_ids[follower])
            if broker_order_id in r["path"] or correlation in r["path"]]


def stays(predicate: Callable[[], bool], seconds: float) -> bool:
    """True when `predicate` holds all through `seconds` (an observation window, not a wait)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not predicate():
            return False
        time.sleep(0.05)
    return predicate()


def next_trading_day_rig(make_rig, day1, clock=None):
    """The same accounts and storage the next trading day: the broker's book no longer holds the
    earlier session's orders (a fresh paper exchange), and the copier starts again."""
    day1.copier.stop()
    day1.copier = None
    day1.store.close()
    rig = make_rig(followers=FOLLOWERS, start=False)
    start_rig(rig, clock=clock)
    return rig


def expired_metric(account: str) -> float:
    return REGISTRY.get_sample_value("copytrader_orders_expired_at_start_total", {"account": account}) or 0.0


def test_day_orders_of_an_earlier_session_are_closed_at_start_and_never_polled(make_rig):
    day1 = make_rig(followers=FOLLOWERS)
    order_id = day1.place(quantity=10)  # a LIMIT below the market: rests, and its copies rest
    copies = {f: day1.follower_copy(order_id, f) for f in ("f1", "f2")}
    before = {account: expired_metric(account) for account in ("leader", "f1", "f2")}

    later = datetime.now(timezone.utc) + timedelta(days=10)  # a trading day has passed whatever today is
    rig = next_trading_day_rig(make_rig, day1, clock=lambda: later)

    def closed() -> bool:
        leader = rig.store.leader_order(order_id)
        return leader.status == "EXPIRED" and all(rig.copy_row(order_id, f).status == "EXPIRED" for f in copies)

    wait_until(closed, 10, message="the earlier session's leader order and copies closed as EXPIRED")
    from trading.calendar import MarketCalendar
    from trading.expiry import parse_exchange_time, session_day

    created_at = parse_exchange_time(rig.store.leader_order(order_id).created_at)
    session = session_day(MarketCalendar(), "NSE_EQ", created_at).isoformat()
    for follower, entry in copies.items():
        events = [(e.kind, json.loads(e.payload)) for e in rig.store.order_events(f"F:{order_id}:{follower}")]
        kind, payload = events[-1]
        assert kind == "EXPIRED" and session in payload["reason"], events[-1]
        assert expired_metric(follower) == before[follower] + 1
    assert rig.store.order_events(f"L:{order_id}")[-1].kind == "EXPIRED"
    assert expired_metric("leader") == before["leader"] + 1

    from app.commands import replay_order

    ok, lines = replay_order(rig.store, order_id)
    assert ok, "\n".join(lines)

    def untouched() -> bool:
        return all(not order_requests(rig, f, entry["orderId"], entry["correlationId"]) for f, entry in copies.items())

    assert stays(untouched, 3.0), "the broker was asked about an order of an earlier session"


def test_a_copy_the_broker_cannot_find_is_looked_up_with_growing_pauses_then_left_alone(make_rig, monkeypatch):
    import trading.copy as copy_machine

    monkeypatch.setattr(copy_machine, "LOOKUP_RETRY_SECONDS", 0.2)
    monkeypatch.setattr(copy_machine, "LOOKUP_ATTEMPTS", 4)
    day1 = make_rig(followers=FOLLOWERS)
    order_id = day1.place(quantity=10)
    entry = day1.follower_copy(order_id, "f1")
    day1.follower_copy(order_id, "f2")
    # today's order (not expired), but the broker the copier now talks to does not know its copies
    rig = next_trading_day_rig(make_rig, day1)

    row = rig.wait_row(order_id, lambda r: r.anomaly == "lookup_failed", timeout=15,
                       message="flagged after its lookups kept failing")
    assert row.status == "PENDING", "a copy that could not be looked up stays as last known"
    lookups = order_requests(rig, "f1", entry["orderId"], entry["correlationId"])
    assert len(lookups) == 4, [r["path"] for r in lookups]
    pauses = [b["t"] - a["t"] for a, b in zip(lookups, lookups[1:])]
    assert all(later > earlier for earlier, later in zip(pauses, pauses[1:])), pauses
    assert pauses[0] >= 0.15, pauses
    assert stays(lambda: len(order_requests(rig, "f1", entry["orderId"], entry["correlationId"])) == 4, 2.0), \
        "looked up again after giving up"
    alerts = rig.store.read(lambda: list(m.Alert.select().where(m.Alert.key == "lookup:f1")))
    assert alerts and order_id in alerts[0].message
