"""Market sessions, holidays, circuit limits and halts.

The copier's clock is injected (its market-hours rules are checked against it); the paper
exchange stays open unless a test says otherwise, so what is asserted is the copier's decision.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from storage import models as m

IST = timezone(timedelta(hours=5, minutes=30))
WEDNESDAY = datetime(2026, 11, 25, tzinfo=IST)  # (the 24th is Guru Nanak Jayanti, a holiday)


def _at(hour: int, minute: int, day: datetime = WEDNESDAY):
    moment = day.replace(hour=hour, minute=minute)
    return lambda: moment


def _enforced(make_rig, clock):
    return make_rig(config={"market_hours": {"enforce": True}}, clock=clock)


def test_6_1_market_open_copies_at_once(make_rig):
    rig = _enforced(make_rig, _at(10, 30))
    assert rig.follower_copy(rig.place(quantity=10))["quantity"] == 5


def test_6_2_market_closed_not_sent_recorded_and_alerted_once(make_rig):
    rig = _enforced(make_rig, _at(18, 0))
    first, second = rig.place(quantity=10), rig.place(quantity=12, price=1420.0)
    assert rig.wait_skip(first).reason == "market_closed"
    assert rig.wait_skip(second).reason == "market_closed"
    assert rig.follower_placements("f1") == 0
    alerts = rig.store.read(lambda: list(m.Alert.select().where(m.Alert.key.startswith("market:market_closed"))))
    assert len(alerts) == 1


def test_5_5_outside_trading_hours_not_sent(make_rig):
    rig = _enforced(make_rig, _at(7, 45))
    leader_id = rig.place(quantity=10)
    skip = rig.wait_skip(leader_id)
    assert skip.reason == "market_closed" and rig.follower_placements("f1") == 0


def test_6_3_pre_open_follows_the_exchange_rules(make_rig):
    rig = _enforced(make_rig, _at(9, 3))
    limit = rig.place(quantity=10)  # a LIMIT equity order may be entered in the pre-open
    market = rig.place(quantity=10, order_type="MARKET")
    assert rig.follower_copy(limit)["orderType"] == "LIMIT"
    assert rig.wait_skip(market).reason == "pre_open_rules"


def test_6_4_amo_outside_hours_copied_as_amo(make_rig):
    rig = _enforced(make_rig, _at(18, 0))
    rig.exchange.set_session("closed")
    leader_id = rig.place(after_market_order=True, amo_time="OPEN_60")
    copy = rig.follower_copy(leader_id)
    assert copy["afterMarketOrder"] is True and copy.get("amoTime") == "OPEN_60"


def test_6_5_exchange_holiday_is_a_clear_skip(make_rig):
    christmas = datetime(2026, 12, 25, tzinfo=IST)
    rig = _enforced(make_rig, _at(11, 0, christmas))
    leader_id = rig.place(quantity=10)
    skip = rig.wait_skip(leader_id)
    assert skip.reason == "exchange_holiday"
    assert rig.follower_placements("f1") == 0


def _rejected_once(rig, message: str) -> m.Skip:
    rig.exchange.reject_next(rig.follower_ids["f1"], error_code="DH-906", message=message)
    leader_id = rig.place(quantity=10)
    skip = rig.wait_skip(leader_id, "f1")
    rig.wait_row(leader_id, lambda r: r.status == "REJECTED", message="rejected")
    assert rig.follower_placements("f1") == 0 and len(rig.exchange.request_log(rig.follower_ids["f1"])) <= 4
    assert rig.store.read(lambda: m.DeadLetter.select().count()) == 0  # a market reason: no retry, no DLQ
    return skip


def test_5_6_circuit_limit_rejection_is_recorded_without_retry(rig):
    assert _rejected_once(rig, "Order price is outside the circuit limit").reason == "circuit_limit"


def test_6_6_trading_halt_is_skipped_never_retried(rig):
    assert _rejected_once(rig, "Trading halted in this security").reason == "trading_halted"


def test_6_7_market_wide_circuit_breaker_is_skipped_never_retried(rig):
    assert _rejected_once(rig, "Market wide circuit breaker: trading halted").reason == "trading_halted"
