"""Refreshing partitions via the loopback Yahoo: UTC rows, merge without loss, identical reruns."""

from datetime import UTC, datetime, timedelta

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from crypto_lake.lib.core.paths import LakeLayout
from crypto_lake.lib.macro.calendar import session_minutes_utc
from crypto_lake.lib.macro.store import (
    BAR_SCHEMA,
    bar_path,
    bars_from_frame,
    fetch_window,
    merge_bars,
    parquet_bytes,
    read_table,
    refresh_partition,
)
from crypto_lake.lib.macro.yahoo import YahooFetchError, YahooSettings
from crypto_lake.simulator.yahoo import YahooServer, price_at
from crypto_lake_tests.macro.days import utc

NOW = utc("2026-11-23", 12)  # a Monday noon; the tests' days are all within Yahoo's window


def _frame(index: list[str], tz: str, close: list[float]) -> pd.DataFrame:
    idx = pd.DatetimeIndex(pd.to_datetime(index, format="ISO8601")).tz_localize(tz)
    c = np.array(close, dtype="float64")
    return pd.DataFrame(
        {"Open": c, "High": c + 1, "Low": c - 1, "Close": c, "Adj Close": c, "Volume": 5},
        index=idx,
    )


def test_frame_is_converted_to_utc_and_cleaned() -> None:
    frame = _frame(
        ["2026-11-20 09:30", "2026-11-20 09:31", "2026-11-20 09:32", "2026-11-20 09:33:17"],
        "America/New_York",
        [10.0, float("nan"), 12.0, 13.0],
    )
    out = bars_from_frame(
        "SPY", frame, "2026-11-20", now=utc("2026-11-20", 14, 32) + timedelta(seconds=30)
    )
    assert out.table.schema == BAR_SCHEMA
    ts = out.table.column("ts").to_pylist()
    assert ts == [datetime(2026, 11, 20, 14, 30, tzinfo=UTC)]  # 14:32 had not closed yet
    assert (out.dropped_invalid, out.dropped_incomplete) == (1, 2)  # NaN; open + unaligned


def test_merge_keeps_old_rows_and_prefers_new_values() -> None:
    def table(minutes: list[int], price: float) -> pa.Table:
        ts = [utc("2026-11-20", 15) + timedelta(minutes=m) for m in minutes]
        n = len(ts)
        return pa.table(
            {"ticker": ["SPY"] * n, "ts": ts, "open": [price] * n, "high": [price] * n,
             "low": [price] * n, "close": [price] * n, "volume": [1] * n},
        ).cast(BAR_SCHEMA)  # fmt: skip

    stored = table([0, 1, 2], 1.0)
    merged = merge_bars(stored, table([2, 3, 3], 2.0))  # duplicate minute in the new answer
    assert merged.column("close").to_pylist() == [1.0, 1.0, 2.0, 2.0]
    assert len(merge_bars(stored, table([], 2.0))) == 3  # empty answer: nothing lost
    assert parquet_bytes(merged) == parquet_bytes(merge_bars(stored, table([3, 2], 2.0)))


def test_fetch_window_respects_yahoo_history_and_the_clock() -> None:
    assert fetch_window("2026-11-23", NOW) == (utc("2026-11-23"), NOW)
    assert fetch_window("2026-11-24", NOW) is None  # future
    assert fetch_window("2026-10-01", NOW) is None  # older than Yahoo's 1-minute history


def test_normal_day_writes_utc_bars_and_rerun_is_byte_identical(
    yahoo: YahooServer, settings: YahooSettings, layout: LakeLayout
) -> None:
    out = refresh_partition(layout, "SPY", "2026-11-20", NOW, settings)
    assert (out.status, out.stored_rows, out.coverage.missing_in_session) == ("ok", 390, 0)
    assert out.first_ts == "2026-11-20T14:30:00Z" and out.last_ts == "2026-11-20T20:59:00Z"
    path = bar_path(layout, "SPY", "2026-11-20")
    first = path.read_bytes()
    stored = read_table(path, BAR_SCHEMA)
    assert stored is not None and stored.column("close")[0].as_py() == pytest.approx(
        price_at("SPY", int(utc("2026-11-20", 14, 30).timestamp()), 0.0)
    )
    again = refresh_partition(layout, "SPY", "2026-11-20", NOW, settings)
    assert again.file_changed is False and path.read_bytes() == first
    path.unlink()  # a re-run from scratch writes the very same bytes
    refresh_partition(layout, "SPY", "2026-11-20", NOW, settings)
    assert path.read_bytes() == first


def test_weekend_partition_says_it_got_nothing(
    yahoo: YahooServer, settings: YahooSettings, layout: LakeLayout
) -> None:
    out = refresh_partition(layout, "SPY", "2026-11-21", NOW, settings)
    assert out.status == "empty" and out.got_nothing and out.stored_rows == 0
    assert out.coverage.in_session_minutes == 0 and out.coverage.missing_in_session == 0
    assert not bar_path(layout, "SPY", "2026-11-21").exists()


@pytest.mark.parametrize(
    "failure", ["empty", "partial", "rate_limited", "server_error", "yahoo_error"]
)
def test_stored_data_survives_every_failure_unchanged(
    yahoo: YahooServer, settings: YahooSettings, layout: LakeLayout, failure: str
) -> None:
    refresh_partition(layout, "ES=F", "2026-11-20", NOW, settings)
    path = bar_path(layout, "ES=F", "2026-11-20")
    before = path.read_bytes()
    state = yahoo.state
    minutes = session_minutes_utc("ES=F", utc("2026-11-20").date()).astype("int64")
    if failure == "empty":
        state.empty.add("ES=F")
    elif failure == "partial":
        state.drop["ES=F"] = {int(t) for t in minutes[200:]}
    elif failure == "rate_limited":
        state.rate_limit["ES=F"] = 100
    elif failure == "yahoo_error":
        state.chart_error["ES=F"] = "No data found, symbol may be delisted"
    else:
        state.fail["ES=F"] = 100
    if failure in ("rate_limited", "server_error", "yahoo_error"):
        with pytest.raises(YahooFetchError):
            refresh_partition(layout, "ES=F", "2026-11-20", NOW, settings)
    else:
        out = refresh_partition(layout, "ES=F", "2026-11-20", NOW, settings)
        assert out.stored_rows == out.stored_rows_before == 1320
        assert out.file_changed is False
        assert out.fetched_rows == (0 if failure == "empty" else 200)
    assert path.read_bytes() == before


def test_later_answer_adds_minutes_and_replaces_values_without_loss(
    yahoo: YahooServer, settings: YahooSettings, layout: LakeLayout
) -> None:
    day = "2026-11-20"
    minutes = session_minutes_utc("UUP", utc(day).date()).astype("int64")
    yahoo.state.drop["UUP"] = {int(t) for t in minutes[:10]}
    first = refresh_partition(layout, "UUP", day, NOW, settings)
    assert first.coverage.missing_in_session == 10
    assert first.coverage.missing_ranges == [("2026-11-20T14:30:00Z", "2026-11-20T14:39:00Z")]
    # Yahoo later serves all minutes, with revised prices, but drops the last 50.
    yahoo.state.drop["UUP"] = {int(t) for t in minutes[-50:]}
    yahoo.state.price_shift["UUP"] = 0.01
    second = refresh_partition(layout, "UUP", day, NOW, settings)
    assert (second.stored_rows, second.new_minutes, second.coverage.missing_in_session) == (
        390,
        10,
        0,
    )
    stored = read_table(bar_path(layout, "UUP", day), BAR_SCHEMA)
    assert stored is not None
    closes = stored.column("close").to_numpy()
    ts0 = int(minutes[0])
    assert closes[0] == pytest.approx(price_at("UUP", ts0, 0.01))  # new value won
    assert closes[-1] == pytest.approx(price_at("UUP", int(minutes[-1]), 0.0))  # old one kept


def test_dst_change_is_stored_in_utc(
    yahoo: YahooServer, settings: YahooSettings, layout: LakeLayout
) -> None:
    now = utc("2026-03-10", 12)
    before = refresh_partition(layout, "SPY", "2026-03-06", now, settings)
    after = refresh_partition(layout, "SPY", "2026-03-09", now, settings)
    assert before.first_ts == "2026-03-06T14:30:00Z" and before.last_ts == "2026-03-06T20:59:00Z"
    assert after.first_ts == "2026-03-09T13:30:00Z" and after.last_ts == "2026-03-09T19:59:00Z"
    assert before.coverage.missing_in_session == after.coverage.missing_in_session == 0
    # The futures session of DST Sunday opens at 22:00 UTC instead of 23:00.
    sunday = refresh_partition(layout, "ES=F", "2026-03-08", now, settings)
    assert (sunday.stored_rows, sunday.first_ts) == (120, "2026-03-08T22:00:00Z")


def test_todays_partition_stores_only_closed_minutes(
    yahoo: YahooServer, settings: YahooSettings, layout: LakeLayout
) -> None:
    now = utc("2026-11-20", 15, 0) + timedelta(seconds=30)
    out = refresh_partition(layout, "SPY", "2026-11-20", now, settings)
    assert out.stored_rows == 30 and out.last_ts == "2026-11-20T14:59:00Z"
    assert out.coverage.in_session_minutes == 30 and out.coverage.missing_in_session == 0


def test_hive_layout_with_equals_sign_reads_back_in_duckdb(
    yahoo: YahooServer, settings: YahooSettings, layout: LakeLayout
) -> None:
    for ticker in ("ES=F", "SPY"):
        refresh_partition(layout, ticker, "2026-11-20", NOW, settings)
    assert (layout.root / "macro_1m" / "ticker=ES%3DF").is_dir()
    glob = f"{layout.root}/macro_1m/*/*/*.parquet"
    rows = duckdb.sql(
        f"SELECT ticker, count(*) FROM read_parquet('{glob}', hive_partitioning = true) "
        "GROUP BY ticker ORDER BY ticker"
    ).fetchall()
    assert rows == [("ES=F", 1320), ("SPY", 390)]
