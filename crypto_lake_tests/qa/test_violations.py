"""QA's R1–R7 rows come from lib.qa.rules: each rule catches its fault, clean bars give no rows,
and QA agrees with the asset checks' evaluate_rules on the same partition."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from crypto_lake.lib.market.klines import write_klines
from crypto_lake.lib.qa.config import QAConfig
from crypto_lake.lib.qa.pipeline import day_window, run_qa_files
from crypto_lake.lib.qa.rules import evaluate_rules
from crypto_lake.lib.qa.violations import find_violations
from crypto_lake_tests.lib import rawgen
from crypto_lake_tests.qa.conftest import make_day, window_of


@pytest.fixture(scope="module")
def clean() -> pa.Table:
    bars, _ = make_day("ADAUSDT", None, seconds=1800)
    return bars


def _file(tmp_path: Path, bars: pa.Table, name: str = "bars.parquet") -> Path:
    path = tmp_path / name
    pq.write_table(bars, path)
    return path


def _set(bars: pa.Table, name: str, index: int, value) -> pa.Table:
    values = bars[name].to_pylist()
    values[index] = value
    i = bars.schema.get_field_index(name)
    return bars.set_column(i, name, pa.array(values, bars.schema.field(name).type))


def _rules(v: pa.Table) -> list[tuple[str, str]]:
    return sorted(set(zip(v["rule"].to_pylist(), v["severity"].to_pylist(), strict=True)))


def test_clean_bars_have_no_violations(clean, tmp_path):
    assert find_violations("ADAUSDT", _file(tmp_path, clean), window=window_of(clean)).num_rows == 0


@pytest.mark.parametrize(
    ("column", "value", "rule", "severity"),
    [
        ("high", 0.0001, "R1", "critical"),  # high below open/close
        ("low", 0.0, "R2", "critical"),  # a zero price (R1 still holds: low <= everything)
        ("close", float("nan"), "R4", "critical"),  # NaN is R4's, not R1's
        ("open", None, "R4", "critical"),
    ],
)
def test_price_rules(clean, tmp_path, column, value, rule, severity):
    bad = _file(tmp_path, _set(clean, column, 500, value))
    v = find_violations("ADAUSDT", bad, window=window_of(clean))
    assert _rules(v) == [(rule, severity)]
    assert v["ts"].cast(pa.int64()).to_pylist() == [window_of(clean)[0] + 500]
    assert v["symbol"].to_pylist() == ["ADAUSDT"]


def test_crossed_book_is_r3_major_and_missing_quotes_are_allowed(clean, tmp_path):
    crossed = _set(clean, "ask", 100, clean["bid"][100].as_py() - 0.001)
    assert ("R3", "major") in _rules(find_violations("ADAUSDT", _file(tmp_path, crossed)))
    no_quote = _set(_set(clean, "bid", 0, None), "ask", 0, float("nan"))
    assert find_violations("ADAUSDT", _file(tmp_path, no_quote, "q.parquet")).num_rows == 0


def test_r5_gaps_duplicates_misalignment_and_trade_id_gaps(clean, tmp_path):
    lo, _ = window_of(clean)
    keep = np.ones(clean.num_rows, bool)
    keep[300:310] = False  # 10 missing seconds
    v = find_violations("ADAUSDT", _file(tmp_path, clean.filter(pa.array(keep)), "gap.parquet"))
    r5 = v.filter(pc.equal(v["rule"], "R5")).to_pylist()
    gaps = {(r["ts"].timestamp(), r["seconds"]) for r in r5 if "missing seconds" in r["detail"]}
    assert gaps == {(lo + 300, 10)}
    # The trades of the lost seconds are missing too: one trade-id gap right after the hole.
    id_gaps = [r for r in r5 if "trade ids missing" in r["detail"]]
    assert [r["ts"].timestamp() for r in id_gaps] == [lo + 310]

    dup = _file(tmp_path, pa.concat_tables([clean, clean.slice(50, 1)]), "dup.parquet")
    assert "duplicate row for this second" in find_violations("ADAUSDT", dup)["detail"].to_pylist()

    us = clean["window_start"].cast(pa.int64()).to_numpy().copy()
    us[70] += 250_000
    shifted = clean.set_column(1, "window_start", pa.array(us).cast(clean.schema.field(1).type))
    details = find_violations("ADAUSDT", _file(tmp_path, shifted, "shift.parquet"))["detail"]
    assert "timestamp not on a whole second (+250000 us)" in details.to_pylist()

    traded = np.flatnonzero(clean["trade_count"].to_numpy() > 0)
    i = int(traded[20])
    first = clean["first_trade_id"].to_pylist()
    first[i] += 3
    skipped = clean.set_column(
        clean.schema.get_field_index("first_trade_id"),
        "first_trade_id",
        pa.array(first, pa.int64()),
    )
    v = find_violations("ADAUSDT", _file(tmp_path, skipped, "ids.parquet"))
    assert v.filter(pc.equal(v["rule"], "R5"))["detail"].to_pylist() == [
        f"3 trade ids missing before id {first[i]}"
    ]


def test_r6_wide_or_negative_spread_is_minor(clean, tmp_path):
    wide = _file(tmp_path, _set(clean, "spread_bps", 10, 800.0))
    assert _rules(find_violations("ADAUSDT", wide)) == [("R6", "minor")]


def test_window_keeps_the_rows_inside_it_judged_on_the_whole_partition(clean, tmp_path):
    lo, hi = window_of(clean)
    bad = _file(tmp_path, _set(_set(clean, "low", 100, 0.0), "low", 1000, 0.0))
    inside = find_violations("ADAUSDT", bad, window=(lo + 900, hi))
    assert inside["ts"].cast(pa.int64()).to_pylist() == [lo + 1000]
    # NULL prices before the day's first trade are allowed only before it: the rows before
    # the window still decide R4 inside it.
    lead = clean
    for name in ("open", "high", "low", "close"):
        lead = _set(lead, name, 900, None)
    v = find_violations("ADAUSDT", _file(tmp_path, lead, "lead.parquet"), window=(lo + 900, hi))
    assert _rules(v) == [("R4", "critical")]


def test_null_prices_before_the_first_trade_are_allowed(clean, tmp_path):
    lead = clean
    for name in ("open", "high", "low", "close"):
        values = lead[name].to_pylist()
        values[:5] = [None] * 5
        lead = lead.set_column(lead.schema.get_field_index(name), name, pa.array(values))
    counts = lead["trade_count"].to_pylist()
    counts[:5] = [0] * 5
    lead = lead.set_column(
        lead.schema.get_field_index("trade_count"), "trade_count", pa.array(counts)
    )
    v = find_violations("ADAUSDT", _file(tmp_path, lead))
    assert "R4" not in v["rule"].to_pylist()
    later = _file(tmp_path, _set(lead, "close", 100, None), "later.parquet")
    v = find_violations("ADAUSDT", later)
    assert v.filter(pc.equal(v["rule"], "R4"))["ts"].cast(pa.int64()).to_pylist() == [
        window_of(clean)[0] + 100
    ]


# ------------------------------------------------------------ R7 on a real partition, via QA
@pytest.fixture(scope="module")
def real_day(tmp_path_factory) -> tuple[rawgen.Partition, list[list]]:
    """A sparse real BTCUSDT day (600 trades: most seconds are empty) with its klines."""
    trades, quotes = rawgen.make_trades(600, seed=21), rawgen.make_quotes(80, seed=22)
    part = rawgen.build_partition(
        tmp_path_factory.mktemp("lake"), rawgen.clean_lines(trades, quotes)
    )
    rows = rawgen.rest_klines(trades)
    klines = part.layout.market_partition_dir("klines_1m", "BTCUSDT", rawgen.DAY)
    write_klines(rows, klines / "part-0.parquet", symbol="BTCUSDT")
    return part, rows


def test_minutes_with_empty_seconds_pass_r7_in_the_check_and_in_qa(real_day):
    """Empty seconds carry the previous close: a rollup that let them into open/high/low
    would differ from the official kline. The check's R7 ignores them, and so must QA."""
    part, _ = real_day
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    mixed = con.execute(
        """SELECT count(*) FROM (
               SELECT arg_min(open, window_start) AS open_all,
                      arg_min(open, window_start) FILTER (WHERE NOT is_empty) AS open_traded,
                      min(low) AS low_all, min(low) FILTER (WHERE NOT is_empty) AS low_traded,
                      max(high) AS high_all, max(high) FILTER (WHERE NOT is_empty) AS high_traded
               FROM read_parquet($b) GROUP BY time_bucket(INTERVAL 1 minute, window_start))
           WHERE open_traded IS NOT NULL AND (open_all <> open_traded
                 OR low_all <> low_traded OR high_all <> high_traded)""",
        {"b": str(part.bars)},
    ).fetchone()[0]
    assert mixed > 0, "the day must have traded minutes that empty seconds would distort"
    klines = part.layout.market_partition_dir("klines_1m", "BTCUSDT", rawgen.DAY)
    check = evaluate_rules(part.bars, klines / "part-0.parquet", part.trades)["R7"]
    assert check.passed and not check.skipped and check.checked == 1440

    qa = run_qa_files(part.layout, "BTCUSDT", rawgen.DAY, day_window(rawgen.DAY), QAConfig())
    assert qa.violations.filter(pc.equal(qa.violations["rule"], "R7")).num_rows == 0
    assert qa.violations.num_rows == 0


def test_r7_rows_are_the_minutes_the_check_counts(real_day, tmp_path):
    part, rows = real_day
    busy = next(i for i, r in enumerate(rows) if int(r[8]) > 0)
    rows = [list(r) for r in rows]
    rows[busy][8] = int(rows[busy][8]) + 1  # one trade more than we saw
    klines = tmp_path / "k.parquet"
    write_klines(rows, klines, symbol="BTCUSDT")
    check = evaluate_rules(part.bars, klines, part.trades)["R7"]
    v = find_violations("BTCUSDT", part.bars, klines_1m=klines, trades=part.trades)
    assert check.violations == v.num_rows == 1
    assert _rules(v) == [("R7", "major")]
    assert v["ts"].cast(pa.int64()).to_pylist() == [rows[busy][0] // 1000]
    assert v["seconds"].to_pylist() == [60]
