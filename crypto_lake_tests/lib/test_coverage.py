"""Coverage per minute from a hand-built bars file: every second's state counted exactly."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crypto_lake.lib.core.parquet_out import write_parquet
from crypto_lake.lib.core.paths import LakeLayout
from crypto_lake.lib.core.schema import COVERAGE
from crypto_lake.lib.market.coverage import build_coverage, render_hourly_chart
from crypto_lake.lib.market.views import BOOK_COLUMNS, build_lake_views
from crypto_lake.lib.raw.catalog import day_bounds_us

DAY = "2024-03-01"
START_US, END_US = day_bounds_us(DAY)
US = 1_000_000
PRICE = pa.decimal128(18, 8)


def write_bars(path: Path, secs: np.ndarray, trades: np.ndarray, repaired: np.ndarray,
               outage: np.ndarray, quoted: np.ndarray) -> Path:  # fmt: skip
    """A bars_1s file with the columns coverage reads, one row per second in ``secs``."""
    n = len(secs)
    bid = pa.array([Decimal("99.5") if q else None for q in quoted], PRICE)
    ask = pa.array([Decimal("100.5") if q else None for q in quoted], PRICE)
    table = pa.table({
        "symbol": pa.array(["BTCUSDT"] * n),
        "window_start": pa.array(START_US + secs.astype(np.int64) * US, pa.timestamp("us", "UTC")),
        "trade_count": pa.array(trades, pa.int64()),
        "bid": bid, "ask": ask,
        "is_live": pa.array(trades > 0, pa.bool_()),
        "is_repaired": pa.array(repaired, pa.bool_()),
        "is_empty": pa.array(trades == 0, pa.bool_()),
        "is_outage": pa.array(outage, pa.bool_()),
    })  # fmt: skip
    write_parquet(table, path)
    return path


def write_quotes(path: Path, recv_us: list[int]) -> Path:
    n = len(recv_us)
    price = pa.array([Decimal("100")] * n, PRICE)
    table = pa.table({
        "symbol": pa.array(["BTCUSDT"] * n, pa.string()),
        "update_id": pa.array(range(1, n + 1), pa.int64()),
        "ts_recv": pa.array(recv_us, pa.timestamp("us", "UTC")),
        "bid": price, "bid_qty": price, "ask": price, "ask_qty": price,
    })  # fmt: skip
    write_parquet(table, path)
    return path


@pytest.fixture
def closed_day(tmp_path: Path) -> tuple[Path, Path, list[tuple[int, int, str]]]:
    """A closed day with one of each state (seconds are since midnight):

    minute 0: trades in 0-9 (2 each), quiet after; bid/ask unknown in 0-4, a quote at 5.2 s
    minute 1: repaired trades in 60-69 inside an outage [60, 90); connected again 90-119
    minute 2: an unrecorded interval [120.5, 180) (touches the whole of second 120)
    minute 3: an outage interval [180, 200) the bars do not flag; a quote at 205.5 s
    minute 120: seconds 7200-7229 missing from the bars
    """
    secs = np.setdiff1d(np.arange(86_400), np.arange(7200, 7230))
    trades = np.where(secs < 10, 2, 0)
    trades[(secs >= 60) & (secs < 70)] = 1
    repaired = (secs >= 60) & (secs < 70)
    outage = (secs >= 60) & (secs < 90) | (secs >= 120) & (secs < 180)
    bars = write_bars(tmp_path / "bars.parquet", secs, trades, repaired, outage, secs >= 5)
    quotes = write_quotes(tmp_path / "quotes.parquet", [START_US + 5_200_000,
                                                        START_US + 205_500_000])  # fmt: skip
    intervals = [
        (START_US + 60 * US, START_US + 90 * US, "outage"),
        (START_US + 120 * US + US // 2, START_US + 180 * US, "unrecorded"),
        (START_US + 180 * US, START_US + 200 * US, "outage"),
    ]
    return bars, quotes, intervals


def minute_rows(path: Path) -> dict[int, dict]:
    rows = pq.read_table(path).to_pylist()
    return {int(r["minute"].timestamp() - START_US // US) // 60: r for r in rows}


def test_closed_day_counts_every_state_exactly(tmp_path: Path, closed_day) -> None:
    bars, quotes, intervals = closed_day
    out = tmp_path / "coverage" / "part-0.parquet"
    stats = build_coverage(bars, quotes, "BTCUSDT", DAY, out, intervals, now_us=END_US)
    table = pq.read_table(out)
    assert table.column_names == COVERAGE.names
    rows = minute_rows(out)
    assert len(rows) == 1440 and sorted(rows) == list(range(1440))
    assert rows[0]["minute"] == datetime(2024, 3, 1, tzinfo=UTC)
    assert str(rows[0]["date"]) == DAY and rows[0]["symbol"] == "BTCUSDT"

    def counts(m: int) -> tuple:
        r = rows[m]
        return (r["seconds_live"], r["seconds_repaired"], r["seconds_outage"],
                r["seconds_unrecorded"], r["seconds_pending"], r["trade_count"],
                r["quote_count"], r["quotes_recorded"])  # fmt: skip

    #                    live rep  out  unrec pend trades quotes recorded
    assert counts(0) == (60, 0, 0, 0, 0, 20, 1, True)
    assert counts(1) == (30, 10, 20, 0, 0, 10, 0, True)  # bid known while connected again
    assert counts(2) == (0, 0, 0, 60, 0, 0, 0, False)  # bid carried, but nothing recorded
    assert counts(3) == (40, 0, 20, 0, 0, 0, 1, True)
    assert counts(4) == (60, 0, 0, 0, 0, 0, 0, True)  # quiet and connected: quote in force
    assert counts(120) == (30, 0, 0, 30, 0, 0, 0, True)
    for m, r in rows.items():
        assert sum(r[f"seconds_{s}"] for s in ("live", "repaired", "outage", "unrecorded",
                                                "pending")) == 60, m  # fmt: skip
    lost_live = 10 + 20 + 60 + 20 + 30
    assert (stats.minutes, stats.seconds_live, stats.seconds_repaired) == (
        1440,
        86_400 - lost_live,
        10,
    )
    assert (stats.seconds_outage, stats.seconds_unrecorded, stats.seconds_pending) == (40, 90, 0)
    assert (stats.trade_count, stats.quote_count, stats.minutes_with_quotes) == (30, 2, 1439)
    assert stats.pct_live == round(100 * (86_400 - lost_live) / 86_400, 3)
    assert stats.pct_unrecorded == round(100 * 90 / 86_400, 3)
    assert stats.pct_minutes_with_quotes == round(100 * 1439 / 1440, 3)
    assert not stats.complete
    # Lost stretches: minutes 1-3 (one run) and minute 120.
    runs = [(s.start_us - START_US) // (60 * US) for s in stats.stretches]
    assert runs == [1, 120] and stats.stretch_count == 2
    assert (stats.stretches[0].seconds_outage, stats.stretches[0].seconds_unrecorded) == (40, 60)
    # (live, repaired, archive, outage, unrecorded, pending)
    assert stats.hourly[0] == (3600 - 110, 10, 0, 40, 60, 0)
    assert stats.hourly[2] == (3570, 0, 0, 0, 30, 0)


def test_today_stops_at_the_grid_end_and_counts_the_rest_as_pending(tmp_path: Path) -> None:
    secs = np.arange(150)  # bars up to 00:02:30, nothing quoted yet
    zeros = np.zeros(150, dtype=bool)
    bars = write_bars(tmp_path / "b.parquet", secs, np.zeros(150, np.int64), zeros, zeros, zeros)
    quotes = write_quotes(tmp_path / "q.parquet", [])
    out = tmp_path / "c.parquet"
    stats = build_coverage(bars, quotes, "BTCUSDT", DAY, out, now_us=START_US + 200 * US)
    rows = minute_rows(out)
    assert sorted(rows) == [0, 1, 2]
    assert (rows[2]["seconds_live"], rows[2]["seconds_pending"]) == (30, 30)
    assert not any(r["quotes_recorded"] for r in rows.values())  # bid/ask never known
    assert stats.seconds_pending == 30 and stats.pct_live == 100.0
    assert stats.pct_minutes_with_quotes == 0.0 and not stats.complete
    assert stats.grid_end_us == START_US + 150 * US
    # The same bars once the day is over: the rest of the day is pending (bars not rebuilt
    # yet), not quiet and not lost.
    late = build_coverage(bars, quotes, "BTCUSDT", DAY, out, now_us=END_US + 1)
    assert late.minutes == 1440 and late.seconds_pending == 86_400 - 150
    assert late.seconds_live == 150 and late.pct_live == 100.0


def test_empty_bars_of_today_give_no_rows(tmp_path: Path) -> None:
    none = np.array([], dtype=np.int64)
    bars = write_bars(tmp_path / "b.parquet", none, none, none.astype(bool), none.astype(bool),
                      none.astype(bool))  # fmt: skip
    quotes = write_quotes(tmp_path / "q.parquet", [])
    stats = build_coverage(bars, quotes, "BTCUSDT", DAY, tmp_path / "c.parquet",
                           now_us=START_US + 5 * US)  # fmt: skip
    assert stats.minutes == 0 and stats.pct_live is None
    assert pq.read_metadata(tmp_path / "c.parquet").num_rows == 0


def test_unknown_kind_is_refused(tmp_path: Path, closed_day) -> None:
    bars, quotes, _ = closed_day
    with pytest.raises(ValueError, match="unknown outage kind"):
        build_coverage(bars, quotes, "BTCUSDT", DAY, tmp_path / "c.parquet",
                       [(START_US, START_US + US, "down")])  # fmt: skip
    assert not (tmp_path / "c.parquet").exists()


def test_rewrite_is_byte_identical_and_the_chart_is_small(tmp_path: Path, closed_day) -> None:
    bars, quotes, intervals = closed_day
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    stats = build_coverage(bars, quotes, "BTCUSDT", DAY, a, intervals, now_us=END_US)
    build_coverage(bars, quotes, "BTCUSDT", DAY, b, intervals, now_us=END_US)
    assert a.read_bytes() == b.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    png = render_hourly_chart(stats)
    assert png.startswith(b"\x89PNG") and len(png) < 60_000
    assert duckdb.sql(f"SELECT count(*) FROM '{a}'").fetchall() == [(1440,)]


def test_views_bind_on_a_fresh_lake_and_read_a_partition(tmp_path: Path, closed_day) -> None:
    layout = LakeLayout(tmp_path / "lake")
    db = build_lake_views(layout, extra_statements=[])
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM coverage_daily").fetchall() == [(0,)]
        cols = {r[0] for r in con.execute("DESCRIBE coverage").fetchall()}
        assert cols == {*COVERAGE.names, "exchange", *BOOK_COLUMNS}
    bars, quotes, intervals = closed_day
    out = layout.market_partition_dir("coverage", "BTCUSDT", DAY) / "part-0.parquet"
    stats = build_coverage(bars, quotes, "BTCUSDT", DAY, out, intervals, now_us=END_US)
    db = build_lake_views(layout, extra_statements=[])
    with duckdb.connect(str(db), read_only=True) as con:
        row = con.execute(
            "SELECT symbol, date, minutes, seconds_unrecorded, pct_live, pct_minutes_with_quotes, "
            "complete FROM coverage_daily"
        ).fetchall()
    assert row == [("BTCUSDT", date(2024, 3, 1), 1440, 90, stats.pct_live,
                    stats.pct_minutes_with_quotes, False)]  # fmt: skip
