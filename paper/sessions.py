"""Market session state: an explicit override for tests, or the NSE/BSE timetable from the
clock (IST, XBOM holidays via exchange_calendars): pre-open 09:00-09:15, open 09:15-15:30."""
from __future__ import annotations

import warnings
from datetime import date, datetime, time, timedelta, timezone
from typing import Callable

IST = timezone(timedelta(hours=5, minutes=30))
SESSIONS = ("open", "pre_open", "closed", "holiday", "auto")
PRE_OPEN, OPEN, CLOSE = time(9, 0), time(9, 15), time(15, 30)
AMO_DELAY = {"OPEN": 0, "OPEN_30": 30 * 60, "OPEN_60": 60 * 60, "": 0}


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class SessionClock:
    def __init__(self, mode: str, clock: Callable[[], datetime] | None) -> None:
        if mode not in SESSIONS:
            raise ValueError(f"session must be one of {SESSIONS}")
        self.mode = mode
        self.clock = clock or utc_now
        self._calendar = None
        self._trading_days: dict[date, bool] = {}
        self._opened_at: float | None = None   # business-clock epoch of the last manual open

    def now(self) -> datetime:
        return self.clock()

    def now_ist(self) -> datetime:
        return self.now().astimezone(IST)

    def stamp(self) -> str:
        """Dhan's timestamp text: IST, 'YYYY-MM-DD HH:MM:SS'."""
        return self.now_ist().strftime("%Y-%m-%d %H:%M:%S")

    def set(self, mode: str) -> None:
        if mode not in SESSIONS:
            raise ValueError(f"session must be one of {SESSIONS}")
        if mode == "open" and self.mode != "open":
            self._opened_at = self.now().timestamp()
        self.mode = mode

    def _is_trading_day(self, d: date) -> bool:
        """Weekday and not an XBOM holiday; cached per day because the calendar lookup is slow."""
        known = self._trading_days.get(d)
        if known is not None:
            return known
        ok = d.weekday() < 5
        if ok:
            with warnings.catch_warnings():   # pandas deprecation noise inside exchange_calendars
                warnings.simplefilter("ignore")
                if self._calendar is None:
                    import exchange_calendars as xcals
                    self._calendar = xcals.get_calendar("XBOM")
                cal = self._calendar
                if cal.first_session.date() <= d <= cal.last_session.date():
                    ok = bool(cal.is_session(d.isoformat()))
        self._trading_days[d] = ok
        return ok

    def state(self) -> str:
        if self.mode != "auto":
            return self.mode
        now = self.now_ist()
        if not self._is_trading_day(now.date()):
            return "holiday"
        t = now.time()
        if PRE_OPEN <= t < OPEN:
            return "pre_open"
        if OPEN <= t < CLOSE:
            return "open"
        return "closed"

    def open_epoch(self) -> float:
        """When the current/next open is (business clock): AMO release times count from it."""
        if self.mode != "auto":
            return self._opened_at if self._opened_at is not None else self.now().timestamp()
        now = self.now_ist()
        return datetime.combine(now.date(), OPEN, IST).timestamp()
