"""1 s parity (lib/qa/parity.py) on small hand-made bars and klines: what is compared, what not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from crypto_lake.lib.qa.parity import NO_KLINES, NO_SECONDS, evaluate_klines_1s_parity

T0 = datetime(2025, 3, 1, tzinfo=UTC)
TS = pa.timestamp("us", tz="UTC")
PX = pa.decimal128(18, 8)
VOL = pa.decimal128(38, 8)


def _bars(path: Path, rows: list[dict], archive: bool = True) -> Path:
    cols = {
        "window_start": pa.array([T0 + timedelta(seconds=r["s"]) for r in rows], TS),
        **{c: pa.array([r.get(c, r["px"]) for r in rows], PX)
           for c in ("open", "high", "low", "close")},
        "volume_base": pa.array([Decimal(r.get("vol", "1")) for r in rows], VOL),
        "trade_count": pa.array([r.get("n", 1) for r in rows], pa.int64()),
        "is_outage": pa.array([r.get("outage", False) for r in rows], pa.bool_()),
    }  # fmt: skip
    if archive:
        cols["is_archive"] = pa.array([r.get("archive", False) for r in rows], pa.bool_())
    pq.write_table(pa.table(cols), path)
    return path


def _klines(path: Path, rows: list[dict]) -> Path:
    table = pa.table({
        "open_time": pa.array([T0 + timedelta(seconds=r["s"]) for r in rows], TS),
        **{c: pa.array([r.get(c, r["px"]) for r in rows], PX)
           for c in ("open", "high", "low", "close")},
        "volume": pa.array([Decimal(r.get("vol", "1")) for r in rows], VOL),
        "trade_count": pa.array([r.get("n", 1) for r in rows], pa.int64()),
    })  # fmt: skip
    pq.write_table(table, path)
    return path


def test_equal_seconds_pass_and_counts_split_by_source(tmp_path: Path):
    rows = [{"s": s, "px": Decimal("10.5")} for s in range(10)]
    for r in rows[5:]:
        r["archive"], r["outage"] = True, True  # an outage the archive filled
    bars = _bars(tmp_path / "b.parquet", rows)
    klines = _klines(tmp_path / "k.parquet", rows)
    result, counts = evaluate_klines_1s_parity(bars, klines)
    assert result.passed and not result.skipped and result.checked == 10
    assert counts["live"] == {"compared": 5, "mismatched": 0}
    assert counts["archive"] == {"compared": 5, "mismatched": 0}


def test_each_column_mismatch_is_listed_with_its_second(tmp_path: Path):
    rows = [{"s": s, "px": Decimal("2")} for s in range(8)]
    kl = [dict(r) for r in rows]
    kl[1]["open"] = Decimal("2.00000001")
    kl[2]["high"] = Decimal("3")
    kl[3]["low"] = Decimal("1")
    kl[4]["close"] = Decimal("2.1")
    kl[5]["vol"] = "1.00000001"
    kl[6]["n"] = 2
    result, counts = evaluate_klines_1s_parity(
        _bars(tmp_path / "b.parquet", rows), _klines(tmp_path / "k.parquet", kl)
    )
    assert not result.passed and result.violations == 6
    listed = [r["second"] for r in counts["seconds"]]
    assert listed == [(T0 + timedelta(seconds=s)).isoformat() for s in range(1, 7)]


def test_unwatched_seconds_and_seconds_without_price_are_not_compared(tmp_path: Path):
    rows = [{"s": s, "px": Decimal("7")} for s in range(6)]
    rows[0]["px"] = None  # before the day's first price
    rows[2]["outage"] = True  # the recorder was down and no archive filled it
    kl = [dict(r, px=Decimal("8")) for r in rows]  # every kline differs
    result, counts = evaluate_klines_1s_parity(
        _bars(tmp_path / "b.parquet", rows), _klines(tmp_path / "k.parquet", kl)
    )
    assert result.checked == 4 and result.violations == 4
    assert counts["live"]["compared"] == 4


def test_missing_kline_inside_the_span_is_a_mismatch(tmp_path: Path):
    rows = [{"s": s, "px": Decimal("1")} for s in range(5)]
    kl = [r for r in rows if r["s"] != 2]
    result, _ = evaluate_klines_1s_parity(
        _bars(tmp_path / "b.parquet", rows), _klines(tmp_path / "k.parquet", kl)
    )
    assert result.violations == 1 and result.worst_rows[0]["kl_open"] is None


def test_no_klines_or_no_overlap_is_skipped_never_passed(tmp_path: Path):
    bars = _bars(tmp_path / "b.parquet", [{"s": 0, "px": Decimal("1")}], archive=False)
    result, _ = evaluate_klines_1s_parity(bars, tmp_path / "missing.parquet")
    assert result.skipped and result.reason == NO_KLINES
    klines = _klines(tmp_path / "k.parquet", [{"s": 100, "px": Decimal("1")}])
    result, _ = evaluate_klines_1s_parity(bars, klines)
    assert result.skipped and result.reason == NO_SECONDS


def test_on_an_imported_day_unwatched_empty_seconds_compare_as_archive(tmp_path: Path):
    rows = [{"s": s, "px": Decimal("3")} for s in range(6)]
    rows[1]["archive"] = rows[1]["outage"] = True  # an archive trade in the outage
    rows[2].update(outage=True, n=0, vol="0")  # no trade in the file: known empty
    result, counts = evaluate_klines_1s_parity(
        _bars(tmp_path / "b.parquet", rows), _klines(tmp_path / "k.parquet", rows)
    )
    assert result.passed and result.checked == 6
    assert counts["archive"]["compared"] == 2 and counts["live"]["compared"] == 4
