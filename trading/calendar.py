"""Market sessions and holidays: may an order be sent to the exchange at a given instant?

Holidays come from the maintained `exchange_calendars` library (its XBOM calendar; NSE and BSE
share their trading holidays), never from a hand-written list. Hours per segment, in IST:

=============  ============================  ==================================================
segment        open                          notes
=============  ============================  ==================================================
NSE_EQ/BSE_EQ  09:15-15:30                   pre-open 09:00-09:15; order entry 09:00-09:08
NSE_FNO/BSE_FNO 09:15-15:30                  no pre-open modelled
NSE_CURRENCY   09:00-17:00
MCX_COMM       09:00-23:30                   approximation: same holidays as NSE/BSE, no
                                             morning-closed / evening-open holiday sessions,
                                             no 23:55 close in the US daylight-saving months
=============  ============================  ==================================================

Not modelled: special sessions the library does not know (Muhurat trading, weekend budget-day
sessions it lacks), the equity post-close session, intraday halts (the broker's rejection is
the authority for those).

All decisions take the instant explicitly (`at`, a timezone-aware datetime), so freezegun and
replayed events work; `now()` is the only place that reads the clock.

Dates outside the library's range (it only records holidays a year or so ahead) fall back to
"every weekday trades", logged once, and are flagged `calendar_known=False` so the caller can
alert that the library needs an upgrade.
"""
from __future__ import annotations

import enum
import functools
import logging
import threading
import warnings
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Mapping
from zoneinfo import ZoneInfo

log = logging.getLogger(__name__)

IST = ZoneInfo("Asia/Kolkata")

# Names accepted for the Indian holiday calendar; exchange_calendars has no XNSE, and NSE and BSE
# close on the same days, so every alias resolves to XBOM.
_INDIAN_ALIASES = {"XNSE": "XBOM", "NSE": "XBOM", "XBOM": "XBOM", "BSE": "XBOM"}
_CALENDAR_START = "2010-01-01"  # explicit so construction does not depend on the (frozen) clock

# AMOs are not accepted in the first minutes after the close while the broker settles the day.
AMO_BLACKOUT_AFTER_CLOSE = timedelta(minutes=15)


def now() -> datetime:
    """The current instant, timezone-aware (freezegun patches this)."""
    return datetime.now(timezone.utc)


def ist_date(at: datetime) -> date:
    """The exchange's date at instant `at` (the broker's day of orders and fills)."""
    return at.astimezone(IST).date()


class SessionState(str, enum.Enum):
    PRE_OPEN = "PRE_OPEN"
    OPEN = "OPEN"
    CLOSED = "CLOSED"  # a trading day, outside the segment's hours
    HOLIDAY = "HOLIDAY"  # an exchange holiday or a weekend


@dataclass(frozen=True)
class SegmentHours:
    open: time
    close: time
    pre_open: time | None = None  # pre-open session start; runs until `open`
    pre_open_entry_end: time | None = None  # orders may be entered in pre-open before this


_EQUITY = SegmentHours(time(9, 15), time(15, 30), time(9, 0), time(9, 8))
_FNO = SegmentHours(time(9, 15), time(15, 30))
SEGMENT_HOURS: dict[str, SegmentHours] = {
    "NSE_EQ": _EQUITY,
    "BSE_EQ": _EQUITY,
    "NSE_FNO": _FNO,
    "BSE_FNO": _FNO,
    "NSE_CURRENCY": SegmentHours(time(9, 0), time(17, 0)),
    "MCX_COMM": SegmentHours(time(9, 0), time(23, 30)),
}


@dataclass(frozen=True)
class Day:
    """What the holiday calendar says about one IST date."""

    day: date
    trading: bool
    holiday_name: str | None = None  # "Saturday"/"Sunday" for weekends; None when unnamed
    calendar_known: bool = True  # False: outside the library's range, weekday rule assumed


@dataclass(frozen=True)
class Session:
    """The state of one segment at one instant."""

    segment: str
    state: SessionState
    at_ist: datetime
    day: Day

    @property
    def holiday_name(self) -> str | None:
        return self.day.holiday_name


@dataclass(frozen=True)
class Verdict:
    """May the order be sent now? `reason` is a stable code for skips and alert keys:
    market_closed | exchange_holiday | pre_open_rules | amo_window."""

    allowed: bool
    reason: str | None
    detail: str


@functools.lru_cache(maxsize=None)
def _load(name: str):  # -> exchange_calendars.ExchangeCalendar
    """Build the library calendar once per process: construction is the slow part. The library
    (and pandas, numpy under it) is imported here, not with this module: 0.7 s and 64 MB that a
    copier not enforcing market hours never needs."""
    import exchange_calendars as xcals

    with warnings.catch_warnings():  # the library's own pandas deprecations are not ours to act on
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        # Explicit bounds: the defaults follow the (possibly frozen) clock.
        cls = type(xcals.get_calendar(name))
        end = cls.bound_max() if hasattr(cls, "bound_max") else None
        if end is None:
            return xcals.get_calendar(name, start=_CALENDAR_START)
        return xcals.get_calendar(name, start=_CALENDAR_START, end=end)


class MarketCalendar:
    """Session state and order admission per exchange segment.

    `exchange` names the holiday calendar: XNSE/NSE/XBOM/BSE all mean exchange_calendars' XBOM;
    any other exchange_calendars name is passed through (useful in tests).
    `holiday_names` optionally labels holiday dates (the library records dates only), e.g. from
    config: {date(2026, 1, 26): "Republic Day"}.

    Thread-safe; per-date answers are cached, so calling it for every order is cheap.
    """

    def __init__(self, exchange: str = "XNSE", holiday_names: Mapping[date, str] | None = None) -> None:
        self.calendar_name = _INDIAN_ALIASES.get(exchange.upper(), exchange)
        self.holiday_names = dict(holiday_names or {})
        self._lock = threading.Lock()
        self._sessions: frozenset[date] | None = None
        self._range: tuple[date, date] | None = None
        self._days: dict[date, Day] = {}
        self._warned_unknown = False

    # -- the holiday calendar ------------------------------------------------------------------
    def load(self) -> "MarketCalendar":
        """Build the holiday calendar now (about a second, the first time in a process): at
        start-up, so that no order waits for it."""
        self._ensure_loaded()
        return self

    def _ensure_loaded(self) -> None:
        if self._sessions is not None:
            return
        cal = _load(self.calendar_name)
        sessions = frozenset(ts.date() for ts in cal.sessions)
        with self._lock:
            self._range = (cal.first_session.date(), cal.last_session.date())
            self._sessions = sessions

    def covers(self, d: date) -> bool:
        """True when the library has holiday data for `d` (alert when it stops covering today)."""
        self._ensure_loaded()
        assert self._range is not None
        return self._range[0] <= d <= self._range[1]

    def day(self, d: date) -> Day:
        """Trading day or holiday, by IST date; cached."""
        cached = self._days.get(d)
        if cached is not None:
            return cached
        self._ensure_loaded()
        assert self._sessions is not None
        weekend = d.weekday() >= 5
        if self.covers(d):
            trading = d in self._sessions  # includes special weekend sessions the library knows
            name = None if trading else (d.strftime("%A") if weekend else self.holiday_names.get(d))
            info = Day(d, trading, name)
        else:
            if not self._warned_unknown:
                self._warned_unknown = True
                log.warning("holiday calendar %s has no data for %s (covers %s..%s); assuming every "
                            "weekday trades: upgrade exchange_calendars", self.calendar_name, d, *self._range)
            info = Day(d, not weekend, d.strftime("%A") if weekend else None, calendar_known=False)
        with self._lock:
            self._days[d] = info
        return info

    # -- sessions ------------------------------------------------------------------------------
    @staticmethod
    def hours(segment: str) -> SegmentHours:
        try:
            return SEGMENT_HOURS[segment]
        except KeyError:
            raise ValueError(f"unknown exchange segment {segment!r}") from None

    def session(self, segment: str, at: datetime) -> Session:
        """Full session information for `segment` at instant `at` (timezone-aware)."""
        hours = self.hours(segment)
        local = _to_ist(at)
        info = self.day(local.date())
        clock = local.time()
        if not info.trading:
            state = SessionState.HOLIDAY
        elif hours.open <= clock < hours.close:
            state = SessionState.OPEN
        elif hours.pre_open is not None and hours.pre_open <= clock < hours.open:
            state = SessionState.PRE_OPEN
        else:
            state = SessionState.CLOSED
        return Session(segment, state, local, info)

    def session_state(self, segment: str, at: datetime) -> SessionState:
        return self.session(segment, at).state

    def next_open(self, segment: str, at: datetime, horizon_days: int = 30) -> datetime:
        """The next regular open at or after `at`, in IST. Handy as an alert key for "one alert
        per closed stretch": every instant of one closed stretch has the same next open."""
        hours = self.hours(segment)
        local = _to_ist(at)
        for offset in range(horizon_days + 1):
            d = local.date() + timedelta(days=offset)
            opening = datetime.combine(d, hours.open, IST)
            if opening >= local and self.day(d).trading:
                return opening
            if offset == 0 and self.day(d).trading and local < datetime.combine(d, hours.close, IST):
                return local  # already open: "the next open" is now
        raise ValueError(f"no {segment} session within {horizon_days} days of {local:%Y-%m-%d}")

    # -- order admission -----------------------------------------------------------------------
    def check_order(self, segment: str, order_type: str, amo: bool, at: datetime) -> Verdict:
        """May an order of this type be sent for `segment` at `at`?

        Rules (simplified from Dhan's and the exchanges', documented here as the contract):
        * OPEN: any non-AMO order is allowed. An AMO is refused (`amo_window`): the broker takes
          AMOs only outside market hours.
        * AMO outside OPEN: allowed on holidays and weekends at any time, and on trading days
          whenever the segment is not open, except in the 15 minutes after the close
          (`amo_window`) while the broker settles the day. It waits at the broker for the open.
        * PRE_OPEN (NSE/BSE equities, 09:00-09:15): only LIMIT orders, and only during order
          entry 09:00-09:08; anything else is `pre_open_rules`.
        * CLOSED: `market_closed`.
        * HOLIDAY: `exchange_holiday`, with the holiday's name (or the weekday) in `detail`.
        `order_type` is an `OrderType` or its value ("LIMIT", "MARKET", ...).
        """
        s = self.session(segment, at)
        kind = getattr(order_type, "value", order_type)
        stamp = f"{s.at_ist:%a %Y-%m-%d %H:%M:%S} IST"
        hours = self.hours(segment)
        caveat = "" if s.day.calendar_known else "; holiday calendar has no data for this date, weekday rule assumed"
        if amo:
            if s.state is SessionState.OPEN:
                return Verdict(False, "amo_window", f"{segment} is open at {stamp}: send a regular order, not an AMO")
            close = datetime.combine(s.at_ist.date(), hours.close, IST)
            if s.day.trading and close <= s.at_ist < close + AMO_BLACKOUT_AFTER_CLOSE:
                resume = (close + AMO_BLACKOUT_AFTER_CLOSE).strftime("%H:%M")
                return Verdict(False, "amo_window", f"AMOs are accepted from {resume} IST after the close; it is {stamp}")
            return Verdict(True, None, f"AMO accepted at {stamp} ({s.state.value}); it waits for the open{caveat}")
        if s.state is SessionState.OPEN:
            return Verdict(True, None, f"{segment} open at {stamp}{caveat}")
        if s.state is SessionState.PRE_OPEN:
            entry_end = hours.pre_open_entry_end
            if kind == "LIMIT" and entry_end is not None and s.at_ist.time() < entry_end:
                return Verdict(True, None, f"pre-open order entry at {stamp}{caveat}")
            return Verdict(False, "pre_open_rules",
                           f"{segment} pre-open at {stamp}: only LIMIT orders, entered 09:00-"
                           f"{entry_end:%H:%M} IST; got {kind}")
        if s.state is SessionState.CLOSED:
            return Verdict(False, "market_closed",
                           f"{segment} trades {hours.open:%H:%M}-{hours.close:%H:%M} IST; it is {stamp}{caveat}")
        name = s.holiday_name or "exchange holiday"
        return Verdict(False, "exchange_holiday", f"{name}: {segment} is closed on {s.at_ist:%a %Y-%m-%d}{caveat}")


def _to_ist(at: datetime) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("`at` must be timezone-aware (use trading.calendar.now())")
    return at.astimezone(IST)
