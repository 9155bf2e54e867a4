"""The order book's gaps in coverage: ``coverage_book`` counts every second of a rebuilt
symbol-day by state, and the ``coverage`` and ``coverage_daily`` views show them beside the
trades' coverage of each minute (NULL for a symbol whose book is not rebuilt)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest

from crypto_lake.lib.book import model as M
from crypto_lake.lib.book.fast import reconstruct_day
from crypto_lake.lib.book.report import build_book_day
from crypto_lake.lib.book.synthetic import Faults, SyntheticSpec, write_day
from crypto_lake.lib.book.table import book_coverage_table
from crypto_lake.lib.core.paths import LakeLayout
from crypto_lake.lib.core.schema import COVERAGE_BOOK
from crypto_lake.lib.market.coverage import build_coverage
from crypto_lake.lib.market.views import build_lake_views
from crypto_lake.lib.raw.catalog import day_bounds_us
from crypto_lake_tests.lib.test_coverage import write_bars, write_quotes

DAY = "2024-03-01"
START_US, END_US = day_bounds_us(DAY)
US = 1_000_000
# ten minutes of depth from 00:10, with lost diff events (gaps until the next snapshot)
SPEC = SyntheticSpec(day=DAY, start_s=600, seconds=600, events_per_s=5, levels_per_event=10,
                     depth=200, snapshot_limit=100, snapshot_every_s=60, seed=5,
                     faults=Faults(drop=0.003))  # fmt: skip


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_day(SPEC, tmp_path_factory.mktemp("depth")).paths


@pytest.fixture(scope="module")
def day(raw: list[Path]) -> M.BookDay:
    return reconstruct_day(raw, SPEC.symbol, DAY)


def _reference(day: M.BookDay, closed: bool) -> list[dict]:
    """Per minute, the seconds counted one by one (pending: after the last second, open day)."""
    last = day.last_second
    minutes = 1440 if closed else (0 if last is None else last // 60 + 1)
    out = []
    for m in range(minutes):
        seen = Counter()
        for s in range(m * 60, m * 60 + 60):
            pending = not closed and (last is None or s > last)
            state = day.rows[M.R_STATE, s]
            name = "pending" if pending else ("reliable", *M.STATE_NAMES[1:])[state]
            seen[f"seconds_{name}"] += 1
        row = {c: seen.get(c, 0) for c in COVERAGE_BOOK.names if c.startswith("seconds_")}
        row["events"] = int(day.rows[M.R_EVENTS, m * 60 : m * 60 + 60].sum())
        out.append(row)
    return out


def test_every_second_is_counted_in_its_state(day: M.BookDay) -> None:
    assert day.gaps() and any(g.reason == "gap" for g in day.gaps())  # the faults bit
    for closed in (True, False):
        table = book_coverage_table(day, closed)
        assert table.column_names == COVERAGE_BOOK.names
        assert table.schema == COVERAGE_BOOK.arrow_schema()
        got = table.select([c for c in table.column_names if c.startswith(("seconds_", "events"))])
        assert got.to_pylist() == _reference(day, closed)
        minutes = [t.value for t in table.column("minute")]
        assert minutes == [START_US + m * 60 * US for m in range(table.num_rows)]
    assert book_coverage_table(day, True).num_rows == 1440
    # open: up to the minute of the last second (00:19:58), its last seconds pending
    open_day = book_coverage_table(day, False).to_pylist()
    assert len(open_day) == 20 and open_day[-1]["seconds_pending"] == 59 - day.last_second % 60
    total = book_coverage_table(day, True)
    assert sum(total.column("seconds_reliable").to_pylist()) == day.reliable_seconds
    assert sum(total.column("seconds_gap").to_pylist()) > 0


def test_coverage_shows_the_book_gaps_of_each_minute(tmp_path: Path, raw: list[Path]) -> None:
    layout = LakeLayout(tmp_path / "lake")
    secs = np.arange(86_400)
    bars = write_bars(
        tmp_path / "bars.parquet",
        secs,
        np.ones(86_400, np.int64),
        np.zeros(86_400, bool),
        np.zeros(86_400, bool),
        np.ones(86_400, bool),
    )
    quotes = write_quotes(tmp_path / "quotes.parquet", [START_US + 1])
    for symbol in ("BTCUSDT", "ETHUSDT"):  # ETHUSDT records no depth
        out = layout.market_file("coverage", symbol, DAY)
        build_coverage(bars, quotes, symbol, DAY, out, [], now_us=END_US)
    book_out = layout.market_file("book_1s", "BTCUSDT", DAY)
    report = build_book_day(
        raw,
        "BTCUSDT",
        DAY,
        book_out,
        layout.book_checks_path("BTCUSDT", DAY),
        layout.quarantine_root,
        layout.market_file("coverage_book", "BTCUSDT", DAY),
        now_us=END_US,
    )
    assert pq.read_metadata(layout.market_file("coverage_book", "BTCUSDT", DAY)).num_rows == 1440
    con = duckdb.connect(str(build_lake_views(layout, extra_statements=[])), read_only=True)
    try:
        rows = con.execute(
            "SELECT symbol, epoch(minute)::BIGINT // 60 % 1440, book_seconds_reliable, "
            "book_seconds_unreliable, book_unreliable_reasons, seconds_live FROM coverage "
            "ORDER BY 1, 2"
        ).fetchall()
        # the book's own rows, per minute: reliable and unreliable seconds
        per_minute = dict.fromkeys(range(1440), (0, 0)) | {
            m: (r, u) for m, r, u in con.execute(
                "SELECT epoch(window_start)::BIGINT // 60 % 1440, count(*) FILTER (reliable), "
                "count(*) FILTER (NOT reliable) FROM book_1s GROUP BY 1"
            ).fetchall()
        }  # fmt: skip
        daily = con.execute(
            "SELECT symbol, book_seconds_reliable, book_seconds_unreliable, "
            "book_pct_reliable FROM coverage_daily ORDER BY 1"
        ).fetchall()
    finally:
        con.close()
    btc = [r for r in rows if r[0] == "BTCUSDT"]
    eth = [r for r in rows if r[0] == "ETHUSDT"]
    assert len(btc) == len(eth) == 1440 and all(r[5] == 60 for r in rows)
    assert all(r[2] is None and r[3] is None and r[4] is None for r in eth)  # no book: NULL
    gap_minutes = 0
    for _, minute, reliable, unreliable, reasons, _ in btc:
        assert reliable + unreliable == 60  # a closed day: nothing pending
        assert reliable == per_minute[minute][0]
        if minute < 10 or minute >= 20:  # before the first event, after the last: no data
            assert (reliable, reasons) == (0, ["no_data"]), minute
        gap_minutes += "gap" in reasons
        if "gap" in reasons:
            assert per_minute[minute][1] > 0  # unreliable rows of book_1s there
    assert gap_minutes >= 1
    assert sum(r[2] for r in btc) == report["reliable_seconds"]
    pct = round(100 * report["reliable_seconds"] / 86_400, 3)
    assert daily == [("BTCUSDT", report["reliable_seconds"], 86_400 - report["reliable_seconds"],
                      pct), ("ETHUSDT", None, None, None)]  # fmt: skip
