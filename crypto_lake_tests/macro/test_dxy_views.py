"""Synthetic DXY from FX minute bars, and the DuckDB views over macro data."""

import math

import duckdb
import pytest

from crypto_lake.lib.core.paths import LakeLayout
from crypto_lake.lib.macro import store
from crypto_lake.lib.macro.calendar import session_minutes_utc
from crypto_lake.lib.macro.store import (
    DXY_CONSTANT,
    DXY_SCHEMA,
    DXY_WEIGHTS,
    dxy_path,
    macro_view_statements,
    read_table,
    refresh_dxy,
    refresh_partition,
)
from crypto_lake.lib.macro.yahoo import YahooSettings
from crypto_lake.simulator.yahoo import YahooServer, price_at
from crypto_lake_tests.macro.days import utc

DAY = "2026-11-20"
NOW = utc("2026-11-23", 12)


def _expected_dxy(ts: int) -> float:
    value = DXY_CONSTANT
    for ticker, weight in DXY_WEIGHTS.items():
        value *= price_at(ticker, ts, 0.0) ** weight
    return value


def test_dxy_uses_ice_weights_and_only_complete_minutes(
    yahoo: YahooServer, settings: YahooSettings, layout: LakeLayout
) -> None:
    minutes = session_minutes_utc("USDSEK=X", utc(DAY).date()).astype("int64")
    yahoo.state.drop["USDSEK=X"] = {int(t) for t in minutes[:15]}
    for ticker in DXY_WEIGHTS:
        refresh_partition(layout, ticker, DAY, NOW, settings)
    out = refresh_dxy(layout, DAY)
    assert out.missing_inputs == []
    assert out.rows == 1320 - 15 and out.minutes_with_some_inputs == 15
    table = read_table(dxy_path(layout, DAY), DXY_SCHEMA)
    assert table is not None and table.schema == DXY_SCHEMA
    first_ts = int(table.column("ts")[0].as_py().timestamp())
    assert first_ts == int(minutes[15])
    assert table.column("close")[0].as_py() == pytest.approx(_expected_dxy(first_ts), rel=1e-12)
    assert 80 < table.column("close")[0].as_py() < 130  # a plausible dollar index
    # Recomputing gives the very same file; an input disappearing never shrinks the DXY.
    before = dxy_path(layout, DAY).read_bytes()
    store.bar_path(layout, "USDSEK=X", DAY).unlink()
    again = refresh_dxy(layout, DAY)
    assert again.rows == 0 and again.missing_inputs == ["USDSEK=X"]
    assert again.stored_rows == 1305 and dxy_path(layout, DAY).read_bytes() == before


def test_views_bind_on_an_empty_lake_and_read_the_partitions(
    yahoo: YahooServer, settings: YahooSettings, layout: LakeLayout
) -> None:
    con = duckdb.connect()
    for stmt in macro_view_statements(layout):
        con.execute(stmt)
    assert con.execute("SELECT count(*) FROM macro_minute").fetchone() == (0,)
    assert con.execute("SELECT count(*) FROM dxy_synthetic_minute").fetchone() == (0,)

    for ticker in ("SPY", "ES=F", *DXY_WEIGHTS):
        refresh_partition(layout, ticker, DAY, NOW, settings)
    refresh_dxy(layout, DAY)
    for stmt in macro_view_statements(layout):
        con.execute(stmt)
    rows = dict(con.execute("SELECT ticker, count(*) FROM macro_minute GROUP BY 1").fetchall())
    assert rows["ES=F"] == 1320 and rows["SPY"] == 390 and len(rows) == 8
    types = dict(
        con.execute("SELECT column_name, column_type FROM (DESCRIBE macro_minute)").fetchall()
    )
    assert types["ts"] == "TIMESTAMP WITH TIME ZONE" and types["volume"] == "BIGINT"
    assert types["date"] == "DATE" and types["ticker"] == "VARCHAR"
    pruned = con.execute(
        f"SELECT count(*) FROM macro_minute WHERE date = DATE '{DAY}' AND ticker = 'ES=F'"
    ).fetchone()
    assert pruned == (1320,)
    assert con.execute("SELECT count(*) FROM dxy_synthetic_minute").fetchone() == (1320,)

    # The documented join (lib/macro/store.py docstring) against a bars_1m relation.
    con.execute(
        "CREATE TABLE bars_1m AS SELECT 'BTCUSDT' AS symbol, ts AS window_start, "
        "95000.0 AS close FROM dxy_synthetic_minute"
    )
    query = store.__doc__.split("Example query")[1].split("::", 1)[1].split(";")[0]
    joined = con.execute(query.replace("2026-11-20 14:30:00+00", f"{DAY} 14:30:00+00")).fetchall()
    with_spy = [r for r in joined if r[3] is not None]
    assert len(with_spy) == 390 and all(not math.isnan(r[4]) for r in joined)
    assert len(joined) == 1320 - 14 * 60 - 30  # from 14:30 to 22:00 UTC
