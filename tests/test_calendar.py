"""Trading calendar: sessions, holidays from exchange_calendars, order admission."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest
from freezegun import freeze_time

from trading import calendar as tcal
from trading.calendar import IST, MarketCalendar, SessionState
from trading.orders import OrderType


def ist(y: int, mo: int, d: int, h: int, mi: int = 0, s: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, tzinfo=IST)


@pytest.fixture(scope="module")
def cal() -> MarketCalendar:
    return MarketCalendar("XNSE", holiday_names={date(2026, 1, 26): "Republic Day", date(2026, 3, 3): "Holi"})


TUESDAY = (2026, 1, 27)  # an ordinary trading day, the day after Republic Day


def test_normal_tuesday_is_open_for_every_segment(cal: MarketCalendar) -> None:
    at = ist(*TUESDAY, 11, 0)
    for segment in ("NSE_EQ", "BSE_EQ", "NSE_FNO", "BSE_FNO", "NSE_CURRENCY", "MCX_COMM"):
        assert cal.session_state(segment, at) is SessionState.OPEN, segment
    verdict = cal.check_order("NSE_EQ", OrderType.MARKET, False, at)
    assert verdict.allowed and verdict.reason is None


def test_open_and_close_boundaries(cal: MarketCalendar) -> None:
    assert cal.session_state("NSE_EQ", ist(*TUESDAY, 9, 15)) is SessionState.OPEN
    assert cal.session_state("NSE_EQ", ist(*TUESDAY, 15, 29, 59)) is SessionState.OPEN
    assert cal.session_state("NSE_EQ", ist(*TUESDAY, 15, 30)) is SessionState.CLOSED


def test_pre_open_takes_only_limit_orders_during_order_entry(cal: MarketCalendar) -> None:
    at = ist(*TUESDAY, 9, 5)
    assert cal.session_state("NSE_EQ", at) is SessionState.PRE_OPEN
    assert cal.session_state("NSE_FNO", at) is SessionState.CLOSED  # no pre-open modelled for F&O
    assert cal.check_order("NSE_EQ", "LIMIT", False, at).allowed
    market = cal.check_order("NSE_EQ", OrderType.MARKET, False, at)
    assert (market.allowed, market.reason) == (False, "pre_open_rules")
    stop = cal.check_order("BSE_EQ", OrderType.STOP_LOSS, False, at)
    assert stop.reason == "pre_open_rules"
    late = cal.check_order("NSE_EQ", OrderType.LIMIT, False, ist(*TUESDAY, 9, 8))
    assert (late.allowed, late.reason) == (False, "pre_open_rules")
    assert "09:08" in late.detail
    assert cal.check_order("NSE_FNO", "LIMIT", False, at).reason == "market_closed"


def test_after_close_is_market_closed(cal: MarketCalendar) -> None:
    at = ist(*TUESDAY, 15, 31)
    assert cal.session_state("NSE_EQ", at) is SessionState.CLOSED
    verdict = cal.check_order("NSE_EQ", OrderType.LIMIT, False, at)
    assert (verdict.allowed, verdict.reason) == (False, "market_closed")
    assert "09:15-15:30" in verdict.detail
    # longer hours elsewhere
    assert cal.session_state("NSE_CURRENCY", at) is SessionState.OPEN
    assert cal.session_state("MCX_COMM", ist(*TUESDAY, 23, 0)) is SessionState.OPEN
    assert cal.session_state("MCX_COMM", ist(*TUESDAY, 23, 30)) is SessionState.CLOSED
    assert cal.session_state("NSE_EQ", ist(*TUESDAY, 8, 0)) is SessionState.CLOSED


def test_weekend_is_a_holiday_named_by_its_day(cal: MarketCalendar) -> None:
    saturday = ist(2026, 1, 31, 11, 0)
    assert cal.session_state("NSE_EQ", saturday) is SessionState.HOLIDAY
    assert cal.session_state("MCX_COMM", saturday) is SessionState.HOLIDAY
    verdict = cal.check_order("NSE_EQ", OrderType.LIMIT, False, saturday)
    assert (verdict.allowed, verdict.reason) == (False, "exchange_holiday")
    assert verdict.detail.startswith("Saturday")


@pytest.mark.parametrize("day,name", [
    (date(2026, 1, 26), "Republic Day"),
    (date(2026, 3, 3), "Holi"),
    (date(2026, 1, 15), None),  # Maharashtra municipal elections: added by the library late
    (date(2026, 11, 10), None),  # Diwali Balipratipada
    (date(2026, 12, 25), None),  # Christmas
])
def test_real_2026_holidays_from_the_library(cal: MarketCalendar, day: date, name: str | None) -> None:
    at = datetime(day.year, day.month, day.day, 11, 0, tzinfo=IST)
    assert day.weekday() < 5
    session = cal.session("NSE_EQ", at)
    assert session.state is SessionState.HOLIDAY and session.day.calendar_known
    verdict = cal.check_order("NSE_EQ", OrderType.MARKET, False, at)
    assert (verdict.allowed, verdict.reason) == (False, "exchange_holiday")
    assert verdict.detail.startswith(name or "exchange holiday")
    assert day.isoformat() in verdict.detail
    # BSE and MCX close with NSE
    assert cal.session_state("BSE_EQ", at) is SessionState.HOLIDAY
    assert cal.session_state("MCX_COMM", at) is SessionState.HOLIDAY


def test_holiday_names_are_optional() -> None:
    plain = MarketCalendar("NSE")
    assert plain.session("NSE_EQ", ist(2026, 1, 26, 11)).holiday_name is None
    assert plain.check_order("NSE_EQ", "LIMIT", False, ist(2026, 1, 26, 11)).detail.startswith("exchange holiday")


def test_amo_rules(cal: MarketCalendar) -> None:
    assert cal.check_order("NSE_EQ", "LIMIT", True, ist(*TUESDAY, 16, 0)).allowed  # after close
    assert cal.check_order("NSE_EQ", "MARKET", True, ist(*TUESDAY, 7, 0)).allowed  # before the open
    assert cal.check_order("NSE_EQ", "MARKET", True, ist(*TUESDAY, 9, 10)).allowed  # pre-open, after entry
    assert cal.check_order("NSE_FNO", "LIMIT", True, ist(2026, 1, 26, 11)).allowed  # holiday
    assert cal.check_order("NSE_EQ", "LIMIT", True, ist(2026, 1, 31, 11)).allowed  # weekend
    during = cal.check_order("NSE_EQ", "LIMIT", True, ist(*TUESDAY, 11, 0))
    assert (during.allowed, during.reason) == (False, "amo_window")
    settling = cal.check_order("NSE_EQ", "LIMIT", True, ist(*TUESDAY, 15, 40))
    assert (settling.allowed, settling.reason) == (False, "amo_window")
    assert "15:45" in settling.detail
    assert cal.check_order("NSE_EQ", "LIMIT", True, ist(*TUESDAY, 15, 45)).allowed


def test_works_under_freezegun_with_now() -> None:
    cal = MarketCalendar()
    with freeze_time("2026-01-27 05:00:00"):  # 10:30 IST
        at = tcal.now()
        assert at.tzinfo is not None
        assert cal.session_state("NSE_EQ", at) is SessionState.OPEN
    with freeze_time("2026-01-26 05:00:00"):
        assert cal.check_order("NSE_EQ", "LIMIT", False, tcal.now()).reason == "exchange_holiday"
    with freeze_time(datetime(2026, 1, 27, 10, 30, tzinfo=timezone.utc)):  # 16:00 IST
        assert cal.check_order("NSE_EQ", "LIMIT", False, tcal.now()).reason == "market_closed"


def test_library_load_under_a_frozen_clock_keeps_future_holidays() -> None:
    """The calendar's bounds must not follow a frozen clock: loading it in 2019 still knows 2026."""
    tcal._load.cache_clear()
    try:
        with freeze_time("2019-05-01"):
            cal = MarketCalendar()
            assert cal.session_state("NSE_EQ", ist(2026, 1, 26, 11)) is SessionState.HOLIDAY
            assert cal.covers(date(2026, 12, 31))
    finally:
        tcal._load.cache_clear()


def test_per_date_answers_are_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    cal = MarketCalendar()
    first = cal.day(date(2026, 1, 26))
    assert cal.day(date(2026, 1, 26)) is first

    def boom(name: str) -> None:
        raise AssertionError("library consulted again")

    monkeypatch.setattr(tcal, "_load", boom)
    for minute in range(0, 600, 7):
        cal.check_order("NSE_EQ", "LIMIT", False, ist(*TUESDAY, 9) + timedelta(minutes=minute))


def test_dates_beyond_the_library_fall_back_to_weekdays(caplog: pytest.LogCaptureFixture) -> None:
    cal = MarketCalendar()
    monday = date(2027, 1, 4)
    assert not cal.covers(monday)
    with caplog.at_level("WARNING", logger="trading.calendar"):
        session = cal.session("NSE_EQ", ist(2027, 1, 4, 11))
    assert session.state is SessionState.OPEN and not session.day.calendar_known
    assert "upgrade exchange_calendars" in caplog.text
    verdict = cal.check_order("NSE_EQ", "LIMIT", False, ist(2027, 1, 4, 11))
    assert verdict.allowed and "weekday rule assumed" in verdict.detail
    assert cal.session_state("NSE_EQ", ist(2027, 1, 9, 11)) is SessionState.HOLIDAY  # Saturday


def test_next_open_skips_weekends_and_holidays(cal: MarketCalendar) -> None:
    friday_evening = ist(2026, 1, 23, 16, 0)  # Monday 26th is Republic Day
    assert cal.next_open("NSE_EQ", friday_evening) == ist(2026, 1, 27, 9, 15)
    assert cal.next_open("NSE_EQ", ist(*TUESDAY, 9, 0)) == ist(*TUESDAY, 9, 15)
    assert cal.next_open("MCX_COMM", ist(*TUESDAY, 23, 45)) == ist(2026, 1, 28, 9, 0)
    during = ist(*TUESDAY, 11, 0)
    assert cal.next_open("NSE_EQ", during) == during


def test_bad_input_is_refused(cal: MarketCalendar) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        cal.session_state("NSE_EQ", datetime(2026, 1, 27, 11, 0))
    with pytest.raises(ValueError, match="unknown exchange segment"):
        cal.session_state("NYSE", ist(*TUESDAY, 11))
