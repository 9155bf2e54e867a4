"""Materializing a partition reads the sealed raw files on disk, whether or not the raw
sensor has catalogued them (`dagster asset materialize` or the launchpad right after the
collector sealed them, or on a lake the sensor never ran on)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import duckdb

from crypto_lake.defs.market.assets import partition_file, ticks
from crypto_lake.defs.market.partitions import market_key
from crypto_lake.lib.raw.catalog import RawCatalog
from crypto_lake_tests.defs import rawgen
from crypto_lake_tests.defs.conftest import DAYS, make_lake


def test_ticks_read_raw_files_the_sensor_has_not_catalogued(tmp_path: Path) -> None:
    symbol, day = "BTCUSDT", DAYS[0]
    sd = rawgen.generate(symbol, DAYS, per_day=120)
    start = rawgen.day_start_us(day)
    last = max(
        (t for t in sd.trades if t.ts_us < start + 86_400 * rawgen.US), key=lambda t: t.ts_us
    )
    last.ts_us = start + 86_400 * rawgen.US - 500  # received 2 ms later: the next day's folder
    lake = make_lake(tmp_path, "http://127.0.0.1:9", {symbol: sd})  # klines are not built
    written = sorted(p for p in lake.layout.raw_root.rglob("part-*"))
    assert not (lake.layout.state_dir / "raw_catalog").exists()  # never catalogued

    with dg.instance_for_test() as instance:
        result = dg.materialize([ticks], partition_key=str(market_key(day, symbol)),
                                resources={"lake": lake.resource}, instance=instance)  # fmt: skip

    assert result.success
    expected = [t.trade_id for t in sd.trades if start <= t.ts_us < start + 86_400 * rawgen.US]
    trades = partition_file(lake.layout, "trades", symbol, day)
    got = duckdb.sql(f"SELECT trade_id FROM '{trades}' ORDER BY trade_id").fetchall()
    # every trade of the day, including the last one, filed under the next day's folder
    assert [r[0] for r in got] == expected and expected[-1] == last.trade_id
    # the raw sensor still announces every file, once
    assert sorted(Path(i.path) for i in RawCatalog(lake.layout).refresh()) == written
