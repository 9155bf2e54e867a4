"""The compiled bars core gives byte-identical bars_1s Parquet to the SQL definition."""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from crypto_lake.lib.core.duck import connect
from crypto_lake.lib.market.bars import build_bars_1s
from crypto_lake_tests.lib import rawgen

DAY_US = rawgen.DAY_START_MS * 1000


def _lines() -> list[tuple[int, bytes]]:
    """Trades and quotes with the cases the core must get right: seconds of only buyer-maker
    trades, trades repaired from REST (some also received live), quotes received out of update
    order, a burst of many trades in one second, a long quiet stretch, a disconnect."""
    rng = random.Random(11)
    trades = rawgen.make_trades(3000)
    quotes = rawgen.make_quotes(2500)
    lines = []
    for tr in trades:
        recv = tr.t_ms + rng.randint(1, 30)
        if tr.id % 97 == 0:  # repaired only
            lines.append((recv + 60_000, rawgen.rest_line(tr, recv + 60_000)))
            continue
        lines.append((recv, rawgen.trade_line(tr, recv)))
        if tr.id % 89 == 0:  # received live and repaired again
            lines.append((recv + 90_000, rawgen.rest_line(tr, recv + 90_000)))
    for q in quotes:
        lines.append((q.recv_ms, rawgen.quote_line(q)))
    # an older update received after a newer one, in the same and in a later second
    late = quotes[len(quotes) // 2]
    older = rawgen.Quote(late.u - 1_000_000, late.recv_ms + 200, "1.00000000", "2.00000000",
                         "1.10000000", "3.00000000")  # fmt: skip
    lines.append((older.recv_ms, rawgen.quote_line(older)))
    lines += rawgen.disconnect_lines(rawgen.DAY_START_MS + 3_600_000,
                                     rawgen.DAY_START_MS + 3_660_500)  # fmt: skip
    return sorted(lines, key=lambda x: x[0])


@pytest.fixture(scope="module")
def part(tmp_path_factory):
    return rawgen.build_partition(tmp_path_factory.mktemp("fastbars"), _lines())


@pytest.mark.parametrize(
    "case",
    [
        {},
        {"previous_close": "61000.123456785"},  # 9 decimals: rounded as ::DECIMAL(18,8)
        {"end_us": DAY_US + 43_210_500_000},  # today, up to a second in the middle
        {"end_us": DAY_US},  # nothing complete yet
        {"outages": [(DAY_US - 5, DAY_US + 2_000_001), (DAY_US + 86_399_999_999, DAY_US + 10**12)]},
    ],
    ids=["day", "previous_close", "intraday", "no_seconds", "outages"],
)
def test_fast_and_sql_bars_are_byte_identical(part, tmp_path, case):
    case = dict(case)
    outages = case.pop("outages", part.stats.outages)
    con = connect(threads=2)
    out = {}
    for fast in (True, False):
        path = tmp_path / f"bars_{fast}.parquet"
        stats = build_bars_1s(part.trades, part.quotes, "BTCUSDT", rawgen.DAY, path, outages,
                              con=con, fast=fast, **case)  # fmt: skip
        out[fast] = (stats, path.read_bytes())
    assert out[True][0] == out[False][0]
    assert out[True][1] == out[False][1]
    table = pq.read_table(tmp_path / "bars_True.parquet")
    if case.get("end_us") != DAY_US:
        assert table.num_rows > 0 and sum(table["trade_count"].to_pylist()) > 0


def test_fast_and_sql_bars_agree_on_empty_input(tmp_path):
    from crypto_lake.lib.market.ticks import build_ticks

    t, q = tmp_path / "t.parquet", tmp_path / "q.parquet"
    build_ticks([], "BTCUSDT", rawgen.DAY, t, q, tmp_path / "quarantine")
    got = []
    for fast in (True, False):
        path: Path = tmp_path / f"b_{fast}.parquet"
        build_bars_1s(t, q, "BTCUSDT", rawgen.DAY, path, previous_close="5", fast=fast)
        got.append(path.read_bytes())
    assert got[0] == got[1]


def test_saved_summary_gives_the_same_bars_and_is_ignored_when_stale(part, tmp_path):
    """build_ticks(seconds_out=...) saves the per-second summary of the tick files it wrote;
    build_bars_1s uses it only while those files are unchanged."""
    from crypto_lake.lib.market.fastbars import load_seconds
    from crypto_lake.lib.market.ticks import build_ticks

    t, q, summary = tmp_path / "t.parquet", tmp_path / "q.parquet", tmp_path / "s.parquet"
    stats = build_ticks(part.files, "BTCUSDT", rawgen.DAY, t, q, tmp_path / "quarantine",
                        seconds_out=summary)  # fmt: skip
    assert load_seconds(summary, t, q) is not None  # saved for exactly these tick files
    con = connect(threads=2)
    kw = {"previous_close": "60000.5", "con": con}

    def bars(name: str, **extra) -> bytes:
        build_bars_1s(t, q, "BTCUSDT", rawgen.DAY, tmp_path / name, stats.outages, **kw, **extra)
        return (tmp_path / name).read_bytes()

    reference = bars("sql.parquet", fast=False)
    assert bars("saved.parquet", seconds=summary) == reference
    # The tick files change (a rebuild with fewer trades): the saved summary no longer fits.
    fewer = pq.read_table(t).slice(0, 1000)
    pq.write_table(fewer, t)
    assert load_seconds(summary, t, q) is None
    assert bars("stale.parquet", seconds=summary) == bars("sql2.parquet", fast=False)
    assert bars("stale.parquet", seconds=summary) != reference


def test_a_previous_close_beyond_the_price_type_is_an_error_on_both_paths(tmp_path):
    """Found by the fuzz test: the compiled path wrote 56637051429.00000000 into a
    DECIMAL(18,8) column where the SQL definition refuses the value."""
    import duckdb

    from crypto_lake.lib.market.fastbars import BarRangeError
    from crypto_lake.lib.market.ticks import build_ticks

    t, q = tmp_path / "t.parquet", tmp_path / "q.parquet"
    build_ticks([], "BTCUSDT", rawgen.DAY, t, q, tmp_path / "quarantine")
    for close in ("56637051429", "9999999999.999999995"):
        kw = {"previous_close": close, "end_us": DAY_US + 2_000_000}
        with pytest.raises(BarRangeError, match="DECIMAL"):
            build_bars_1s(t, q, "BTCUSDT", rawgen.DAY, tmp_path / "f.parquet", fast=True, **kw)
        with pytest.raises(duckdb.ConversionException):
            build_bars_1s(t, q, "BTCUSDT", rawgen.DAY, tmp_path / "s.parquet", fast=False, **kw)
        assert not (tmp_path / "f.parquet").exists()


@pytest.mark.parametrize("n", [11, 19], ids=["beyond_38_digits", "beyond_128_bits"])
def test_quote_sums_beyond_their_type_are_an_error_on_both_paths(tmp_path, n):
    """Found by the fuzz test: n trades at the largest price and quantity in one second. The
    SQL sum fails; the compiled sums wrote 40 digits into DECIMAL(38,16), then wrapped to a
    negative volume. Now both fail, and the ticks are still kept."""
    import duckdb

    from crypto_lake.lib.core.paths import LakeLayout
    from crypto_lake.lib.market.fastbars import BarRangeError
    from crypto_lake.lib.market.ticks import build_ticks
    from crypto_lake.lib.raw.catalog import RawCatalog

    t0 = rawgen.DAY_START_MS + 5_000
    big = [rawgen.Trade(500 + i, t0, "9999999999.99999999", "92233720368.54775807", False)
           for i in range(n)]  # fmt: skip
    layout = LakeLayout(tmp_path / "lake")
    rawgen.write_raw(layout, [(t0 + 1, rawgen.trade_line(tr, t0 + 1)) for tr in big])
    catalog = RawCatalog(layout)
    catalog.refresh()
    t, q, summary = tmp_path / "t.parquet", tmp_path / "q.parquet", tmp_path / "s.parquet"
    stats = build_ticks(catalog.files_for("BTCUSDT", rawgen.DAY), "BTCUSDT", rawgen.DAY, t, q,
                        tmp_path / "quarantine", seconds_out=summary)  # fmt: skip
    assert stats.trade_rows == n  # the ticks are kept ...
    assert not summary.exists()  # ... without a summary no bar can hold
    kw = {"end_us": DAY_US + 10_000_000}
    with pytest.raises(BarRangeError, match="DECIMAL"):
        build_bars_1s(t, q, "BTCUSDT", rawgen.DAY, tmp_path / "f.parquet", fast=True,
                      seconds=summary, **kw)  # fmt: skip
    with pytest.raises(duckdb.OutOfRangeException):
        build_bars_1s(t, q, "BTCUSDT", rawgen.DAY, tmp_path / "s.parquet", fast=False, **kw)


def test_a_summary_saved_by_other_code_is_not_reused(part, tmp_path, monkeypatch):
    """The per-second summary is stamped with the code that computed it: after a change to
    the bar logic, a saved summary is recomputed, not silently reused."""
    from crypto_lake.lib.market import fastbars
    from crypto_lake.lib.market.ticks import build_ticks

    t, q, summary = tmp_path / "t.parquet", tmp_path / "q.parquet", tmp_path / "s.parquet"
    build_ticks(part.files, "BTCUSDT", rawgen.DAY, t, q, tmp_path / "quarantine",
                seconds_out=summary)  # fmt: skip
    assert fastbars.load_seconds(summary, t, q) is not None
    monkeypatch.setattr(fastbars, "CODE_VERSION", "another-release")
    assert fastbars.load_seconds(summary, t, q) is None


def test_trades_of_schema_v1_without_source_still_give_the_same_bars(part, tmp_path):
    """A trades file written before the public-file import (schema v1: no ``source`` column,
    no archive trades) gives the bars it always did on the compiled path."""
    v1 = tmp_path / "t_v1.parquet"
    pq.write_table(pq.read_table(part.trades).drop_columns(["source"]), v1)
    out = {}
    for name, trades in (("v1", v1), ("v2", part.trades)):
        path = tmp_path / f"{name}.parquet"
        build_bars_1s(trades, part.quotes, "BTCUSDT", rawgen.DAY, path, part.stats.outages)
        out[name] = path.read_bytes()
    assert out["v1"] == out["v2"]
    assert not any(pq.read_table(tmp_path / "v2.parquet")["is_archive"].to_pylist())
