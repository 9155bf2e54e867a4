"""Trading hours: weekends and holidays are not gaps; DST moves the UTC session edges."""

from datetime import UTC, date, datetime

import numpy as np
import pytest

from crypto_lake.lib.macro.calendar import (
    nyse_early_close,
    nyse_holidays,
    session_coverage,
    session_intervals_utc,
    session_kind,
    session_minutes_utc,
)


def _utc(y: int, m: int, d: int, hh: int, mm: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=UTC)


def test_session_kinds() -> None:
    assert session_kind("SPY") == "us_equity"
    assert session_kind("^GSPC") == "us_equity"
    assert session_kind("ES=F") == "cme_future"
    assert session_kind("EURUSD=X") == "fx"


def test_nyse_holidays_2026_and_observed_rules() -> None:
    h = nyse_holidays(2026)
    expected = {
        date(2026, 1, 1), date(2026, 1, 19), date(2026, 2, 16), date(2026, 4, 3),
        date(2026, 5, 25), date(2026, 6, 19), date(2026, 7, 3), date(2026, 9, 7),
        date(2026, 11, 26), date(2026, 12, 25),
    }  # fmt: skip
    assert h == expected
    # 1 Jan 2022 was a Saturday: not observed on Friday 31 Dec 2021.
    assert date(2021, 12, 31) not in nyse_holidays(2021)
    assert date(2021, 12, 24) in nyse_holidays(2021)  # Christmas 2021 (Sat) observed Fri
    assert nyse_early_close(date(2026, 11, 27)) and nyse_early_close(date(2026, 12, 24))
    assert not nyse_early_close(date(2026, 7, 3))  # the holiday itself


@pytest.mark.parametrize(
    ("ticker", "day", "minutes"),
    [
        ("SPY", date(2026, 11, 20), 390),  # Friday
        ("SPY", date(2026, 11, 21), 0),  # Saturday
        ("SPY", date(2026, 11, 26), 0),  # Thanksgiving
        ("SPY", date(2026, 11, 27), 210),  # early close 13:00
        ("SPY", date(2026, 4, 3), 0),  # Good Friday
        ("ES=F", date(2026, 11, 23), 1380),  # Monday: 23:00 Sun -> 22:00, then 23:00 ->
        ("ES=F", date(2026, 11, 22), 60),  # Sunday: opens 18:00 EST = 23:00 UTC
        ("ES=F", date(2026, 3, 8), 120),  # DST Sunday: opens 18:00 EDT = 22:00 UTC
        ("ES=F", date(2026, 11, 21), 0),  # Saturday
        ("EURUSD=X", date(2026, 11, 20), 1320),  # Friday: closes 17:00 EST = 22:00 UTC
        ("EURUSD=X", date(2026, 11, 21), 0),
        ("EURUSD=X", date(2026, 11, 22), 120),  # Sunday: opens 17:00 EST = 22:00 UTC
        ("EURUSD=X", date(2026, 11, 24), 1440),
    ],
)
def test_session_minutes(ticker: str, day: date, minutes: int) -> None:
    assert session_minutes_utc(ticker, day).size == minutes


def test_dst_moves_the_utc_session() -> None:
    # US DST began Sunday 8 March 2026: the NYSE open moves from 14:30 to 13:30 UTC.
    assert session_intervals_utc("SPY", date(2026, 3, 6)) == [
        (_utc(2026, 3, 6, 14, 30), _utc(2026, 3, 6, 21))
    ]
    assert session_intervals_utc("SPY", date(2026, 3, 9)) == [
        (_utc(2026, 3, 9, 13, 30), _utc(2026, 3, 9, 20))
    ]
    # Europe switches three weeks later; FX follows New York's 17:00 cut, not London's.
    assert session_intervals_utc("EURUSD=X", date(2026, 3, 13)) == [
        (_utc(2026, 3, 13, 0), _utc(2026, 3, 13, 21))
    ]


def test_coverage_counts_only_in_session_minutes() -> None:
    day = date(2026, 11, 20)
    expected = session_minutes_utc("SPY", day)
    stored = np.concatenate(
        [
            expected[:100],
            expected[103:],  # three minutes missing
            np.array(["2026-11-20T22:00:00"], dtype="datetime64[s]"),  # after the close
        ]
    )
    cov = session_coverage("SPY", day, stored)
    assert (cov.in_session_minutes, cov.missing_in_session) == (390, 3)
    assert cov.rows_outside_session == 1
    assert cov.missing_ranges == [("2026-11-20T16:10:00Z", "2026-11-20T16:12:00Z")]
    # A weekend has nothing to miss.
    assert session_coverage("SPY", date(2026, 11, 21), stored[:0]).missing_in_session == 0
    # Today's partition only expects minutes that have closed.
    partial = session_coverage("SPY", day, expected[:30], until=_utc(2026, 11, 20, 15, 0))
    assert (partial.in_session_minutes, partial.missing_in_session) == (30, 0)
