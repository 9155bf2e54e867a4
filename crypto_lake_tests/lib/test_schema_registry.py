"""The schema registry (lib/core/schema.py): every writer's output is its registered table.

One small lake is built with the real writers (ticks, both bar paths, the 1 m rollup,
coverage, klines, the order book, QA, macro and DXY); each file's Parquet schema must equal
its definition and pass its pandera contract. Writers refuse a table whose columns differ,
and the contract catches rows that break a rule of the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from urllib.parse import quote

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crypto_lake.lib.book.report import build_book_day
from crypto_lake.lib.book.synthetic import Faults, SyntheticSpec, write_day
from crypto_lake.lib.core import schema
from crypto_lake.lib.core.contracts import read_frame, validate_file, validate_frame
from crypto_lake.lib.core.parquet_out import write_dataset, write_dataset_groups
from crypto_lake.lib.core.paths import MARKET_DATASETS, QA_DATASETS, LakeLayout
from crypto_lake.lib.history.public_csv import read_klines
from crypto_lake.lib.macro import store as macro
from crypto_lake.lib.market.bars import build_bars_1m, build_bars_1s
from crypto_lake.lib.market.coverage import build_coverage
from crypto_lake.lib.market.klines import write_klines
from crypto_lake.lib.market.ticks import build_ticks
from crypto_lake.lib.market.views import build_lake_views
from crypto_lake.lib.qa import detectors, fusion, rules
from crypto_lake.lib.qa.config import QAConfig
from crypto_lake.lib.qa.pipeline import day_window, qa_file, run_qa_files
from crypto_lake.lib.raw.catalog import RawCatalog
from crypto_lake.simulator import synthetic_day_zip
from crypto_lake_tests.defs import rawgen

DAYS = ["2024-03-01", "2024-03-02"]
SYMBOL = "BTCUSDT"


@dataclass
class Built:
    layout: LakeLayout
    files: dict[str, list[Path]]  # dataset -> the files its writers wrote


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    layout = LakeLayout(tmp_path_factory.mktemp("lake"))
    sd = rawgen.generate(SYMBOL, DAYS, per_day=200)
    skip = {t.trade_id for t in sd.trades[5:8]}  # unrepaired trade id gap: R5 rows in QA
    rawgen.write_raw(layout, SYMBOL, rawgen.raw_lines(sd, skip_ids=skip, duplicate_every=7))
    d0 = rawgen.day_start_us(DAYS[0])
    rawgen.append_part(layout, SYMBOL, DAYS[0], [rawgen.disconnect_line((d0 + 650_000_000) * 1000)])
    catalog = RawCatalog(layout)
    catalog.refresh(full=True)
    files: dict[str, list[Path]] = {}

    def out(dataset: str, day: str, name: str = "part-0.parquet") -> Path:
        path = layout.market_partition_dir(dataset, SYMBOL, day) / name
        files.setdefault(dataset, []).append(path)
        return path

    klines = rawgen.reference_klines_1m(sd)
    for day in DAYS:
        trades, quotes = out("trades", day), out("quotes", day)
        stats = build_ticks(catalog.files_for(SYMBOL, day), SYMBOL, day, trades, quotes,
                            layout.quarantine_root / SYMBOL / day)  # fmt: skip
        bars = out("bars_1s", day)
        build_bars_1s(trades, quotes, SYMBOL, day, bars, stats.outages,
                      previous_close=Decimal("100.5"))  # fmt: skip
        sql = layout.root / "sql" / f"bars_1s-{day}.parquet"  # outside the lake's folders
        build_bars_1s(trades, quotes, SYMBOL, day, sql, stats.outages, fast=False)
        files["bars_1s"].append(sql)
        build_bars_1m(bars, out("bars_1m", day))
        intervals = [(a, b, k) for (a, b), k in zip(stats.outages, stats.outage_kinds, strict=True)]
        build_coverage(bars, quotes, SYMBOL, day, out("coverage", day), intervals,
                       now_us=2_000_000_000_000_000)  # fmt: skip
        start_ms = rawgen.day_start_us(day) // 1000
        rows = [r for r in klines if start_ms <= r[0] < start_ms + 86_400_000]
        write_klines(rows, out("klines_1m", day), symbol=SYMBOL)
        # klines_1s: a public 1 s klines file, read and written as import_klines_1s does
        name, data = synthetic_day_zip(SYMBOL, day, 5_000, kind="klines", interval="1s")
        (zipped := layout.root / "zips" / name).parent.mkdir(exist_ok=True)
        zipped.write_bytes(data)
        write_dataset(read_klines(zipped, day, "1s"), out("klines_1s", day), "klines_1s")
    # book_1s: a synthetic depth recording (diff events, snapshots, a disconnect) rebuilt
    spec = SyntheticSpec(symbol=SYMBOL, day=DAYS[0], start_s=7200, seconds=120, events_per_s=5,
                         levels_per_event=10, depth=200, snapshot_limit=100,
                         snapshot_every_s=30, faults=Faults(disconnects=1))  # fmt: skip
    depth = write_day(spec, layout.root / "depth_raw")
    build_book_day(depth.paths, SYMBOL, DAYS[0], out("book_1s", DAYS[0]),
                   layout.book_checks_path(SYMBOL, DAYS[0]), layout.quarantine_root,
                   out("coverage_book", DAYS[0]))  # fmt: skip
    run_qa_files(layout, SYMBOL, DAYS[0], day_window(DAYS[0]), QAConfig())
    for kind in QA_DATASETS:
        files[f"qa_{kind}"] = [qa_file(layout, kind, DAYS[0], SYMBOL)]
    idx = pd.date_range("2024-03-01 14:30", periods=30, freq="1min", tz="UTC")
    now = datetime(2024, 3, 3, tzinfo=UTC)
    for k, ticker in enumerate(macro.DXY_WEIGHTS):
        base = 1.0 + k
        frame = pd.DataFrame({"Open": base, "High": base + 0.1, "Low": base - 0.1,
                              "Close": base + 0.05, "Volume": 10}, index=idx)  # fmt: skip
        table = macro.merge_bars(None, macro.bars_from_frame(ticker, frame, DAYS[0], now).table)
        path = macro.bar_path(layout, ticker, DAYS[0])
        macro.write_if_changed(path, table, "macro_1m")
        files.setdefault("macro_1m", []).append(path)
    macro.refresh_dxy(layout, DAYS[0])
    files["dxy_synthetic_1m"] = [macro.dxy_path(layout, DAYS[0])]
    return Built(layout, files)


def test_every_dataset_is_written_by_a_real_writer(built: Built) -> None:
    assert set(built.files) == set(schema.DATASETS)
    for name, paths in built.files.items():
        assert paths and all(p.exists() for p in paths), name


@pytest.mark.parametrize("name", sorted(schema.DATASETS))
def test_written_files_equal_their_definition_and_pass_their_contract(
    built: Built, name: str
) -> None:
    ds = schema.dataset(name)
    for path in built.files[name]:
        stored = pq.read_schema(path)
        assert stored.remove_metadata().equals(ds.stored_schema()), (path, stored)
        assert [f.nullable for f in stored] == [True] * len(ds.columns)  # as always written
        result = validate_file(path, name)
        assert result.passed, (path, result.failures)
        assert result.rows == pq.ParquetFile(path).metadata.num_rows
    if name in ("bars_1s", "bars_1m", "coverage"):
        assert result.rows >= 1440  # real content, not an empty file
    if name == "qa_violations":
        assert result.rows > 0  # the unrepaired gap
    if name == "book_1s":  # reliable rows, and the disconnect's unreliable ones
        reliable = pq.read_table(path, columns=["reliable"])["reliable"].to_pylist()
        assert reliable.count(True) > 60 and reliable.count(False) >= 1


def _described(con: duckdb.DuckDBPyConnection, view: str) -> dict[str, str]:
    """A view's columns and their DuckDB types, spelled as the registry spells them."""
    spell = {"TIMESTAMP WITH TIME ZONE": "TIMESTAMPTZ"}
    rows = con.execute(f"DESCRIBE {view}").fetchall()
    return {r[0]: spell.get(r[1], r[1]).replace(", ", ",") for r in rows}


def test_views_have_the_registered_columns(built: Built, tmp_path: Path) -> None:
    views = {**{d: d for d in MARKET_DATASETS}, "macro_minute": "macro_1m",
             "dxy_synthetic_minute": "dxy_synthetic_1m"}  # fmt: skip
    for layout in (built.layout, LakeLayout(tmp_path)):  # with files, and a fresh lake
        con = duckdb.connect(str(build_lake_views(layout)), read_only=True)
        try:
            for view, name in views.items():
                types = _described(con, view)
                for column in schema.dataset(name).columns:
                    assert types[column.name] == column.duckdb, (view, column.name)
                assert types["date"] == "DATE"
        finally:
            con.close()


# --- writers refuse what is not their table --------------------------------------------------
def _klines(rows: int = 2) -> pa.Table:
    from crypto_lake.lib.market.klines import klines_table

    t0 = rawgen.day_start_us(DAYS[0]) // 1000
    row = ["1.5", "2.0", "1.0", "1.75", "3", None, "4", 7, "1", "2"]
    return klines_table([[t0 + i * 60_000, *row[:5], t0 + i * 60_000 + 59_999, *row[6:]]
                         for i in range(rows)], SYMBOL)  # fmt: skip


def test_a_writer_rejects_a_wrong_type_missing_extra_or_reordered_column(tmp_path: Path) -> None:
    good = _klines()
    out = tmp_path / "k.parquet"
    write_dataset(good, out, "klines_1m")
    assert pq.read_table(out).equals(good)
    wrong_type = good.set_column(2, "open", good["open"].cast(pa.float64()))
    missing = good.drop_columns(["trade_count"])
    extra = good.append_column("note", pa.array(["x"] * good.num_rows))
    swapped = good.select(["open_time", "symbol", *good.column_names[2:]])
    cases = [(wrong_type, "column 'open' is double, registered decimal128(18, 8)"),
             (missing, "missing column 'trade_count'"), (extra, "unexpected column 'note'"),
             (swapped, "columns in order")]  # fmt: skip
    for table, expected in cases:
        bad = tmp_path / "bad.parquet"
        with pytest.raises(schema.SchemaMismatch, match="klines_1m") as err:
            write_dataset(table, bad, "klines_1m")
        assert expected in str(err.value)
        assert not bad.exists()
    with pytest.raises(KeyError, match="unknown dataset"):
        write_dataset(good, out, "klines_5m")


def test_row_group_writer_and_macro_writer_check_too(tmp_path: Path) -> None:
    good = _klines(3)
    write_dataset_groups(tmp_path / "g.parquet", 3, lambda a, b: good.slice(a, b - a), "klines_1m")
    renamed = good.rename_columns(["symbol", "open_time", "opn", *good.column_names[3:]])
    with pytest.raises(schema.SchemaMismatch, match="missing column 'open'"):
        write_dataset_groups(tmp_path / "b.parquet", 3, lambda a, b: renamed.slice(a, b - a),
                             "klines_1m")  # fmt: skip
    dxy = macro.DXY_SCHEMA.empty_table()
    with pytest.raises(schema.SchemaMismatch, match="macro_1m"):
        macro.write_if_changed(tmp_path / "m.parquet", dxy, "macro_1m")
    assert not (tmp_path / "m.parquet").exists()


# --- contracts catch broken rows -------------------------------------------------------------
def test_contract_names_the_rows_that_break_a_rule(built: Built) -> None:
    frame = read_frame(built.files["bars_1s"][0])
    assert validate_frame(frame, "bars_1s").passed
    traded = frame.index[~frame["is_empty"]][0]
    broken = frame.copy()
    broken.loc[traded, "low"] = broken.loc[traded, "high"] + Decimal("1")
    broken.loc[3, "volume_base"] = None  # never null
    broken.loc[4, "open"] = Decimal("-1")
    result = validate_frame(broken, "bars_1s")
    assert not result.passed
    checks = {(f["column"], f["check"]) for f in result.failures}
    assert (None, "high >= low") in checks, checks
    rule_rows = [f for f in result.failures if f["check"] == "high >= low"]
    assert [f["index"] for f in rule_rows] == [str(traded)]  # once, not once per column
    assert any(c == "volume_base" and "null" in k for c, k in checks), checks
    assert any(c == "open" and k.startswith("greater_than") for c, k in checks), checks
    unsorted = frame.iloc[::-1].reset_index(drop=True)
    assert any(f["check"] == "sorted" for f in validate_frame(unsorted, "bars_1s").failures)
    as_float = frame.assign(open=frame["open"].astype(float))
    assert not validate_frame(as_float, "bars_1s").passed  # decimals must stay Decimal


def test_validate_file_reports_a_file_of_another_schema(built: Built, tmp_path: Path) -> None:
    path = tmp_path / "bars.parquet"
    pq.write_table(pq.read_table(built.files["bars_1s"][0]).drop_columns(["vwap"]), path)
    result = validate_file(path, "bars_1s")
    assert not result.passed and result.failures[0]["check"] == "arrow schema"
    assert "missing column 'vwap'" in result.failures[0]["failure_case"]


# --- the registry itself ---------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(schema.DATASETS))
def test_definition_is_consistent(name: str) -> None:
    ds = schema.dataset(name)
    assert ds.version >= 1 and len(ds.description) > 80 and ds.description.endswith(".")
    assert len(set(ds.names)) == len(ds.names)
    assert set(ds.sort_keys) | set(ds.unique) | set(ds.descending) <= set(ds.names)
    assert set(ds.descending) <= set(ds.sort_keys)
    for rule in ds.rules:
        assert ds.rule_columns(rule), rule
    for column in ds.columns:
        assert column.description and column.duckdb
        assert ds.arrow_schema().field(column.name).nullable  # what the writers write


def test_path_layouts_are_those_of_lake_layout(tmp_path: Path) -> None:
    layout = LakeLayout(tmp_path)
    day = DAYS[0]
    for name in MARKET_DATASETS:
        folder = layout.market_partition_dir(name, SYMBOL, day)
        expected = schema.dataset(name).path.format(symbol=SYMBOL, date=day)
        assert folder.relative_to(tmp_path) / "*.parquet" == Path(expected)
    macro_path = macro.bar_path(layout, "ES=F", day).relative_to(tmp_path)
    assert macro_path == Path(schema.MACRO_1M.path.format(ticker=quote("ES=F", safe=""), date=day))
    dxy_path = macro.dxy_path(layout, day).relative_to(tmp_path)
    assert dxy_path == Path(schema.DXY_SYNTHETIC_1M.path.format(date=day))
    for kind in QA_DATASETS:
        path = qa_file(layout, kind, day, SYMBOL).relative_to(tmp_path)
        assert path == Path(schema.dataset(f"qa_{kind}").path.format(date=day, symbol=SYMBOL))


def test_qa_vocabularies_are_the_qa_modules_ones() -> None:
    assert schema.QA_VIOLATIONS.column("rule").isin == tuple(rules.SEVERITY)
    assert set(schema.QA_VIOLATIONS.column("severity").isin) == set(rules.SEVERITY.values())
    assert schema.QA_ANOMALIES.column("detector").isin == detectors.DETECTORS
    assert schema.QA_ANOMALIES.column("feature").isin == detectors.FEATURES
    assert schema.QA_VERDICTS.column("verdict").isin == fusion.VERDICTS


def test_duckdb_types_derive_from_arrow() -> None:
    assert schema.duckdb_type(schema.PRICE) == "DECIMAL(18,8)"
    assert schema.duckdb_type(pa.dictionary(pa.int32(), pa.string())) == "VARCHAR"
    assert schema.duckdb_type(schema.TS_S) == "TIMESTAMPTZ"
    assert schema.stored_type(schema.TS_S) == pa.timestamp("ms", tz="UTC")
    with pytest.raises(TypeError):
        schema.duckdb_type(pa.list_(pa.int64()))
