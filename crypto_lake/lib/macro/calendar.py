"""Trading hours of macro tickers, so weekends and holidays are not counted as gaps.

Three session kinds, chosen from the ticker's shape (Yahoo's own suffixes):

- ``us_equity`` (SPY, UUP, ^GSPC, anything without ``=``): NYSE regular hours 09:30-16:00
  America/New_York on weekdays, closed on NYSE holidays, 13:00 close on the usual early-close
  days (3 July, the day after Thanksgiving, 24 December). yfinance is asked for regular hours
  only, so pre/post-market minutes are outside the session by definition.
- ``cme_future`` (``=F``, e.g. ES=F): CME Globex, Sunday 18:00 to Friday 17:00 New York time
  with the daily 17:00-18:00 maintenance halt. On an NYSE holiday the equity futures halt early
  at 13:00 (approximation of CME's holiday schedule; Christmas and New Year's Day are treated
  as closed all day).
- ``fx`` (``=X``, e.g. EURUSD=X): the FX week, Sunday 17:00 to Friday 17:00 New York time,
  continuous. Yahoo's FX minute bars are sparse in quiet minutes, so the missing-minute
  check for FX is a quality signal, not a gate.

All times are computed in the exchange's zone with ``zoneinfo`` and then converted to UTC, so
DST changes move the UTC session edges automatically. A partition is one UTC day; the minutes
"in session" are the session minutes that fall inside that UTC day.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo

import numpy as np

SessionKind = Literal["us_equity", "cme_future", "fx"]
NEW_YORK = ZoneInfo("America/New_York")
_EARLY_CLOSE = time(13, 0)


def session_kind(ticker: str) -> SessionKind:
    """Which trading calendar a Yahoo ticker follows (see module docstring)."""
    if ticker.endswith("=F"):
        return "cme_future"
    if ticker.endswith("=X"):
        return "fx"
    return "us_equity"


def _easter(year: int) -> date:
    """Gregorian Easter Sunday (anonymous Gregorian algorithm)."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = divmod(b, 4)
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    m = (32 + 2 * e + 2 * i - h - k) % 7
    n = (a + 11 * h + 22 * m) // 451
    month, day = divmod(h + m - 7 * n + 114, 31)
    return date(year, month, day + 1)


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> date:
    """The n-th given weekday of a month (n=-1: the last one)."""
    if n > 0:
        first = date(year, month, 1)
        return first + timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))
    nxt = date(year + (month == 12), month % 12 + 1, 1)
    last = nxt - timedelta(days=1)
    return last - timedelta(days=(last.weekday() - weekday) % 7)


def _observed(d: date) -> date:
    """NYSE rule: a Saturday holiday is observed on Friday, a Sunday one on Monday."""
    if d.weekday() == 5:
        return d - timedelta(days=1)
    if d.weekday() == 6:
        return d + timedelta(days=1)
    return d


@lru_cache(maxsize=64)
def nyse_holidays(year: int) -> frozenset[date]:
    """NYSE full-day closures of ``year`` (the standard rule set since 2022)."""
    days = {
        _nth_weekday(year, 1, 0, 3),  # Martin Luther King Jr. Day
        _nth_weekday(year, 2, 0, 3),  # Washington's Birthday
        _easter(year) - timedelta(days=2),  # Good Friday
        _nth_weekday(year, 5, 0, -1),  # Memorial Day
        _observed(date(year, 6, 19)),  # Juneteenth
        _observed(date(year, 7, 4)),  # Independence Day
        _nth_weekday(year, 9, 0, 1),  # Labor Day
        _nth_weekday(year, 11, 3, 4),  # Thanksgiving
        _observed(date(year, 12, 25)),  # Christmas
    }
    # New Year's Day on a Saturday is not observed on the Friday before (NYSE rule 7.2).
    new_year = date(year, 1, 1)
    if new_year.weekday() != 5:
        days.add(_observed(new_year))
    return frozenset(d for d in days if d.year == year)


def nyse_early_close(d: date) -> bool:
    """True on the usual 13:00 early-close days (when they are trading days)."""
    if d.weekday() >= 5 or d in nyse_holidays(d.year):
        return False
    thanksgiving = _nth_weekday(d.year, 11, 3, 4)
    return d in {date(d.year, 7, 3), thanksgiving + timedelta(days=1), date(d.year, 12, 24)}


def _ny(d: date, t: time) -> datetime:
    return datetime.combine(d, t, tzinfo=NEW_YORK).astimezone(UTC)


def _equity_sessions(d: date) -> list[tuple[datetime, datetime]]:
    if d.weekday() >= 5 or d in nyse_holidays(d.year):
        return []
    close = _EARLY_CLOSE if nyse_early_close(d) else time(16, 0)
    return [(_ny(d, time(9, 30)), _ny(d, close))]


def _future_sessions(d: date) -> list[tuple[datetime, datetime]]:
    """Globex sessions that *start* on New York date ``d`` plus the part of ``d`` before 17:00."""
    out: list[tuple[datetime, datetime]] = []
    holiday = d in nyse_holidays(d.year)
    closed_all_day = holiday and (d.month, d.day) in {(12, 25), (12, 26), (1, 1), (1, 2)}
    # Trading from midnight until the 17:00 halt (Mon-Fri), shortened on holidays.
    if d.weekday() < 5 and not closed_all_day:
        end = _EARLY_CLOSE if holiday else time(17, 0)
        out.append((_ny(d, time(0, 0)), _ny(d, end)))
    # Evening session 18:00-24:00 (Sun-Thu).
    if d.weekday() in (6, 0, 1, 2, 3):
        out.append((_ny(d, time(18, 0)), _ny(d + timedelta(days=1), time(0, 0))))
    return out


def _fx_sessions(d: date) -> list[tuple[datetime, datetime]]:
    wd = d.weekday()
    if wd == 5:
        return []
    if wd == 6:
        return [(_ny(d, time(17, 0)), _ny(d + timedelta(days=1), time(0, 0)))]
    if wd == 4:
        return [(_ny(d, time(0, 0)), _ny(d, time(17, 0)))]
    return [(_ny(d, time(0, 0)), _ny(d + timedelta(days=1), time(0, 0)))]


_SESSIONS = {"us_equity": _equity_sessions, "cme_future": _future_sessions, "fx": _fx_sessions}


def session_intervals_utc(ticker: str, day: date) -> list[tuple[datetime, datetime]]:
    """The ticker's trading intervals clipped to the UTC day ``day`` ([start, end) in UTC)."""
    lo = datetime.combine(day, time(0), tzinfo=UTC)
    hi = lo + timedelta(days=1)
    fn = _SESSIONS[session_kind(ticker)]
    out: list[tuple[datetime, datetime]] = []
    # A UTC day overlaps New York dates day-1 and day (UTC is ahead of New York).
    for local in (day - timedelta(days=1), day, day + timedelta(days=1)):
        for start, end in fn(local):
            s, e = max(start, lo), min(end, hi)
            if s < e:
                out.append((s, e))
    return _merge_intervals(out)


def _merge_intervals(items: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    merged: list[tuple[datetime, datetime]] = []
    for s, e in sorted(items):
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(e, merged[-1][1]))
        else:
            merged.append((s, e))
    return merged


def session_minutes_utc(ticker: str, day: date) -> np.ndarray:
    """Every in-session minute start of the UTC day, as ``datetime64[s]`` (UTC, sorted)."""
    parts = [
        np.arange(
            np.datetime64(s.replace(tzinfo=None), "s"),
            np.datetime64(e.replace(tzinfo=None), "s"),
            np.timedelta64(60, "s"),
        )
        for s, e in session_intervals_utc(ticker, day)
    ]
    return np.concatenate(parts) if parts else np.array([], dtype="datetime64[s]")


@dataclass(frozen=True)
class SessionCoverage:
    """How completely stored minutes cover the ticker's session on one UTC day."""

    in_session_minutes: int
    present_in_session: int
    missing_in_session: int
    rows_outside_session: int
    missing_ranges: list[tuple[str, str]]  # up to 10 [first, last] missing minutes, ISO UTC

    @property
    def missing_fraction(self) -> float:
        if not self.in_session_minutes:
            return 0.0
        return self.missing_in_session / self.in_session_minutes


def session_coverage(
    ticker: str, day: date, stored_ts: np.ndarray, until: datetime | None = None
) -> SessionCoverage:
    """Compare stored minute timestamps (UTC ``datetime64``) with the session minutes.

    ``until`` (aware): only minutes that had closed by then are expected (today's partition).
    """
    expected = session_minutes_utc(ticker, day)
    if until is not None:
        cutoff = np.datetime64(until.astimezone(UTC).replace(tzinfo=None), "s")
        expected = expected[expected + np.timedelta64(60, "s") <= cutoff]
    stored = np.unique(stored_ts.astype("datetime64[s]"))
    present = np.isin(expected, stored)
    missing = expected[~present]
    outside = int((~np.isin(stored, expected)).sum())
    return SessionCoverage(
        in_session_minutes=int(expected.size),
        present_in_session=int(present.sum()),
        missing_in_session=int(missing.size),
        rows_outside_session=outside,
        missing_ranges=_ranges(missing)[:10],
    )


def _ranges(minutes: np.ndarray) -> list[tuple[str, str]]:
    """Collapse sorted minutes into [first, last] runs of consecutive minutes."""
    if minutes.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(minutes) != np.timedelta64(60, "s")) + 1
    starts = np.concatenate([[0], breaks])
    ends = np.concatenate([breaks - 1, [minutes.size - 1]])
    return [(f"{minutes[s]}Z", f"{minutes[e]}Z") for s, e in zip(starts, ends, strict=True)]
