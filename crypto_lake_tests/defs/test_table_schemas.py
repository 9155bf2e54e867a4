"""What Dagster shows of the table definitions (lib/core/schema.py): column schemas,
descriptions, and the schema_contract check's result for a partition."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest

from crypto_lake.defs.market.checks import SCHEMA_CONTRACT, contract_evaluation
from crypto_lake.defs.table_schemas import COLUMN_SCHEMA, column_schema
from crypto_lake.lib.core import schema
from crypto_lake.lib.core.parquet_out import write_dataset

ASSETS = {
    "trades": "trades", "quotes": "quotes", "bars_1s": "bars_1s", "bars_1m": "bars_1m",
    "binance_klines_1m": "klines_1m", "coverage": "coverage", "macro_minute": "macro_1m",
    "dxy_synthetic_minute": "dxy_synthetic_1m", "qa_violations": "qa_violations",
    "qa_anomalies": "qa_anomalies", "qa_verdicts": "qa_verdicts",
}  # fmt: skip


@pytest.fixture(scope="module")
def graph():
    from crypto_lake.definitions import defs

    return defs().resolve_asset_graph()


@pytest.mark.parametrize("asset", sorted(ASSETS))
def test_asset_shows_its_registered_table(graph, asset: str) -> None:
    ds = schema.dataset(ASSETS[asset])
    node = graph.get(dg.AssetKey(asset))
    shown = node.metadata[COLUMN_SCHEMA]
    assert shown == column_schema(ds.name)
    assert [c.name for c in shown.columns] == ds.names
    for col, column in zip(shown.columns, ds.columns, strict=True):
        assert col.type == str(column.arrow) and col.description == column.description
        assert col.constraints.nullable == column.nullable
    assert f"schema version {ds.version}" in shown.constraints.other
    if not asset.startswith("qa_"):  # QA assets keep their own (richer) docstrings
        assert node.description.startswith(ds.description)


def test_market_and_macro_materializations_use_the_registry() -> None:
    from crypto_lake.defs.macro.assets import BAR_COLUMNS

    assert column_schema("macro_1m") == BAR_COLUMNS
    price = column_schema("bars_1s").columns[2]
    assert (price.name, price.type) == ("open", "decimal128(18, 8)")
    assert price.constraints.other == ["> 0"] and price.constraints.nullable


def test_schema_contract_evaluation_of_a_partition(tmp_path: Path) -> None:
    key = "2024-03-01|BTCUSDT"
    missing = contract_evaluation("bars_1m", key, tmp_path / "none.parquet", None)
    assert not missing.passed and missing.severity == dg.AssetCheckSeverity.WARN
    assert missing.description.startswith("Skipped") and missing.metadata["skipped"].value
    assert missing.check_name == SCHEMA_CONTRACT and missing.partition == key

    klines = schema.KLINES_1M.arrow_schema()
    row = {f.name: [None] for f in klines}
    row.update(symbol=["BTCUSDT"], open_time=[0], close_time=[59_999_000], trade_count=[3])
    path = tmp_path / "k.parquet"
    write_dataset(pa.table(row, schema=klines), path, "klines_1m")  # columns right, values not
    bad = contract_evaluation("klines_1m", key, path, None)
    assert not bad.passed and not bad.metadata["skipped"].value
    assert (
        bad.metadata["failures"].value >= 1
        and "not_nullable" in bad.metadata["failure_cases"].value
    )


def test_archive_provenance_is_registered() -> None:
    """Trades from Binance's public daily file: a source column, no receive time; their
    seconds and minutes flagged is_archive; coverage counts them in its own state."""
    trades = schema.TRADES
    assert trades.column("ts_recv").nullable
    assert trades.column("source").isin == ("live", "repair", "archive")
    assert "repaired == (source == 'repair')" in trades.rules
    for ds in (schema.BARS_1S, schema.BARS_1M):
        assert ds.names[ds.names.index("is_repaired") + 1] == "is_archive"
    cov = schema.COVERAGE
    assert "seconds_archive" in cov.names and "seconds_archive" in cov.rules[0]
    assert {d.version for d in (trades, schema.BARS_1S, schema.BARS_1M, cov)} == {2}
    shown = column_schema("trades")
    assert next(c for c in shown.columns if c.name == "ts_recv").constraints.nullable
