"""Row-level R1–R7 violations: each rule catches its fault, clean bars give no rows."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from crypto_lake.lib.qa.violations import find_violations
from crypto_lake_tests.qa.conftest import make_day, window_of


@pytest.fixture(scope="module")
def clean() -> pa.Table:
    bars, _ = make_day("ADAUSDT", None, seconds=1800)
    return bars


def _set(bars: pa.Table, name: str, index: int, value) -> pa.Table:
    values = bars[name].to_pylist()
    values[index] = value
    i = bars.schema.get_field_index(name)
    return bars.set_column(i, name, pa.array(values, bars.schema.field(name).type))


def _rules(v: pa.Table) -> list[tuple[str, str]]:
    return sorted(set(zip(v["rule"].to_pylist(), v["severity"].to_pylist(), strict=True)))


def test_clean_bars_have_no_violations(clean):
    assert find_violations("ADAUSDT", clean, window=window_of(clean)).num_rows == 0


@pytest.mark.parametrize(
    ("column", "value", "rule", "severity"),
    [
        ("high", 0.0001, "R1", "critical"),  # high below open/close
        ("low", 0.0, "R2", "critical"),  # a zero price (R1 still holds: low <= everything)
        ("close", float("nan"), "R4", "critical"),
        ("open", None, "R4", "critical"),
    ],
)
def test_price_rules(clean, column, value, rule, severity):
    bad = _set(clean, column, 500, value)
    v = find_violations("ADAUSDT", bad, window=window_of(bad))
    assert (rule, severity) in _rules(v)
    hit = v.filter(pc.equal(v["rule"], rule))
    assert hit["ts"].cast(pa.int64()).to_pylist() == [window_of(clean)[0] + 500]


def test_crossed_book_is_r3_major_and_nan_quotes_are_allowed(clean):
    crossed = _set(clean, "ask", 100, clean["bid"][100].as_py() - 0.001)
    assert ("R3", "major") in _rules(find_violations("ADAUSDT", crossed))
    no_quote = _set(_set(clean, "bid", 0, None), "ask", 0, float("nan"))
    assert find_violations("ADAUSDT", no_quote).num_rows == 0


def test_r5_gaps_duplicates_misalignment_and_trade_id_gaps(clean):
    lo, hi = window_of(clean)
    keep = np.ones(clean.num_rows, bool)
    keep[300:310] = False  # 10 missing seconds
    gappy = clean.filter(pa.array(keep))
    v = find_violations("ADAUSDT", gappy, window=(lo, hi + 5))
    r5 = v.filter(pc.equal(v["rule"], "R5")).to_pylist()
    gaps = {(r["ts"].timestamp(), r["seconds"]) for r in r5 if "missing seconds" in r["detail"]}
    assert gaps == {(lo + 300, 10), (hi, 5)}
    # The trades of the lost seconds are missing too: one trade-id gap right after the hole.
    id_gaps = [r for r in r5 if "trade ids missing" in r["detail"]]
    assert [r["ts"].timestamp() for r in id_gaps] == [lo + 310]

    dup = pa.concat_tables([clean, clean.slice(50, 1)])
    assert "2 rows for this second" in " ".join(
        find_violations("ADAUSDT", dup)["detail"].to_pylist()
    )

    us = clean["window_start"].cast(pa.int64()).to_numpy().copy()
    us[70] += 250_000
    shifted = clean.set_column(1, "window_start", pa.array(us).cast(clean.schema.field(1).type))
    details = " ".join(find_violations("ADAUSDT", shifted)["detail"].to_pylist())
    assert "not on a whole second" in details

    traded = np.flatnonzero(clean["trade_count"].to_numpy() > 0)
    i = int(traded[20])
    first = clean["first_trade_id"].to_pylist()
    first[i] += 3
    skipped = clean.set_column(
        clean.schema.get_field_index("first_trade_id"),
        "first_trade_id",
        pa.array(first, pa.int64()),
    )
    v = find_violations("ADAUSDT", skipped)
    assert v.filter(pc.equal(v["rule"], "R5"))["detail"].to_pylist() == [
        f"3 trade ids missing before id {first[i]}"
    ]


def test_r6_wide_or_negative_spread_is_minor(clean):
    wide = _set(clean, "spread_bps", 10, 800.0)
    v = find_violations("ADAUSDT", wide)
    assert _rules(v) == [("R6", "minor")]


def test_r7_compares_minute_rollup_with_klines(clean):
    import duckdb

    lo, _ = window_of(clean)
    con = duckdb.connect()
    con.register("bars", clean)
    # Official klines as the exchange would report them for these bars.
    klines = con.sql(
        "SELECT time_bucket(INTERVAL 1 MINUTE, window_start) AS open_time, "
        "arg_min(open, window_start) AS open, max(high) AS high, min(low) AS low, "
        "arg_max(close, window_start) AS close, sum(volume_base) AS volume, "
        "sum(trade_count)::BIGINT AS trade_count FROM bars GROUP BY 1 ORDER BY 1"
    ).to_arrow_table()
    assert find_violations("ADAUSDT", clean, klines=klines).num_rows == 0
    counts = klines["trade_count"].to_numpy().copy()
    counts[3] += 1
    off = klines.set_column(
        klines.schema.get_field_index("trade_count"), "trade_count", pa.array(counts)
    )
    v = find_violations("ADAUSDT", clean, klines=off)
    assert _rules(v) == [("R7", "major")]
    assert v["ts"].cast(pa.int64()).to_pylist() == [lo + 180]
    assert v["seconds"].to_pylist() == [60]
    # The same minute inside a recorder outage is not a parity violation (R5 covers it).
    outage = np.zeros(clean.num_rows, dtype=bool)
    ts = clean["window_start"].cast(pa.timestamp("s")).cast(pa.int64()).to_numpy()
    outage[(ts >= lo + 180) & (ts < lo + 240)] = True
    watched = clean.append_column("is_outage", pa.array(outage))
    assert find_violations("ADAUSDT", watched, klines=off).num_rows == 0


def test_no_bars_is_one_gap_row_and_decimal_prices_work(clean):
    lo, hi = window_of(clean)
    v = find_violations("ADAUSDT", clean.slice(0, 0), window=(lo, hi))
    assert v["rule"].to_pylist() == ["R5"] and v["seconds"].to_pylist() == [hi - lo]
    dec = clean
    for name in ("open", "high", "low", "close"):  # exact DECIMAL prices, as the lake may store
        i = dec.schema.get_field_index(name)
        dec = dec.set_column(i, name, dec[name].cast(pa.decimal128(18, 8)))
    assert find_violations("ADAUSDT", dec).num_rows == 0


def test_null_prices_before_the_first_trade_are_allowed(clean):
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
    v = find_violations("ADAUSDT", lead)
    assert "R4" not in v["rule"].to_pylist()
    later = _set(lead, "close", 100, None)
    v = find_violations("ADAUSDT", later)
    assert v.filter(pc.equal(v["rule"], "R4"))["ts"].cast(pa.int64()).to_pylist() == [
        window_of(clean)[0] + 100
    ]
