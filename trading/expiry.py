"""When an order's session is over: a DAY (or IOC) order lives only in the session it was entered
for, and the exchange expires what is left of it at that session's close.

The broker's order book and its order lookups cover today's orders only, so an order of an
earlier session left open in storage can never be confirmed there; the copier closes it at
start-up instead of asking about it (see storage/expiry.py).
"""
from __future__ import annotations

from datetime import date, datetime, timedelta

from trading.calendar import IST, SEGMENT_HOURS, MarketCalendar, ist_date

SESSION_VALIDITIES = frozenset({"DAY", "IOC"})  # valid for one session only
_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"  # the broker's order entry time, in exchange time (IST)


def parse_exchange_time(text: str) -> datetime | None:
    """The broker's "YYYY-MM-DD HH:MM:SS" (IST) as an aware datetime; None when absent or unreadable."""
    try:
        return datetime.strptime(text.strip(), _TIME_FORMAT).replace(tzinfo=IST)
    except (AttributeError, ValueError):
        return None


def session_day(calendar: MarketCalendar, segment: str, entered: datetime) -> date | None:
    """The trading day whose session an order entered at `entered` belongs to: that day when it was
    entered before the segment's close on a trading day, else the next trading day (an order entered
    after the close, or on a holiday, waits for the next open). None for an unknown segment."""
    hours = SEGMENT_HOURS.get(segment)
    if hours is None:
        return None
    day = entered.astimezone(IST).date()
    if calendar.day(day).trading and entered.astimezone(IST).time() < hours.close:
        return day
    for _ in range(30):
        day += timedelta(days=1)
        if calendar.day(day).trading:
            return day
    return None


def ended_session(calendar: MarketCalendar, segment: str, created_at: str, now: datetime) -> date | None:
    """The session day of an order entered at `created_at` (IST text) when that day is before
    today's (IST) date; None while its session may still be running, or when its date or segment
    does not say (an order is never expired on a guess)."""
    entered = parse_exchange_time(created_at)
    if entered is None:
        return None
    today = ist_date(now)
    if entered.date() >= today:
        return None  # entered today: its session is today's or a later one
    day = session_day(calendar, segment, entered)
    return day if day is not None and day < today else None


def expired_session(calendar: MarketCalendar, segment: str, validity: str, created_at: str,
                    now: datetime) -> date | None:
    """`ended_session` for a one-session (DAY or IOC) order: the day the exchange expired it."""
    return ended_session(calendar, segment, created_at, now) if validity in SESSION_VALIDITIES else None
