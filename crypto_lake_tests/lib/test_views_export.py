"""The lake views database and the slice export CLI, over a real built partition."""

from __future__ import annotations

import csv

import duckdb
import pyarrow.parquet as pq
import pytest

from crypto_lake.lib.core.paths import LakeLayout
from crypto_lake.lib.market.export import export_slice, main, parse_time
from crypto_lake.lib.market.klines import write_klines
from crypto_lake.lib.market.views import VIEW_DATASETS, build_lake_views
from crypto_lake_tests.lib import rawgen


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    trades, quotes = rawgen.make_trades(500, seed=5), rawgen.make_quotes(60, seed=6)
    part = rawgen.build_partition(
        tmp_path_factory.mktemp("views"), rawgen.clean_lines(trades, quotes)
    )
    klines = part.layout.market_partition_dir("klines_1m", "BTCUSDT", rawgen.DAY) / "k.parquet"
    write_klines(rawgen.rest_klines(trades), klines, symbol="BTCUSDT")
    return part


def test_views_over_a_fresh_lake_bind(tmp_path):
    db = build_lake_views(LakeLayout(tmp_path), extra_statements=[])
    con = duckdb.connect(str(db), read_only=True)
    for name in [*VIEW_DATASETS, "compare_bars_vs_klines_1m"]:
        assert con.execute(f"SELECT count(*) FROM {name}").fetchall() == [(0,)]
    cols = [r[0] for r in con.execute("DESCRIBE bars_1s").fetchall()]
    assert cols[:3] == ["symbol", "window_start", "open"] and "date" in cols


def test_views_read_the_lake(lake):
    db = build_lake_views(lake.layout)
    assert db == lake.layout.duckdb_path
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT count(*) FROM bars_1s").fetchall() == [(86_400,)]
    assert con.execute("SELECT count(*) FROM bars_1m WHERE date = DATE '2024-03-01'"
                       ).fetchall() == [(1440,)]  # fmt: skip
    n_trades = pq.read_metadata(lake.trades).num_rows
    assert con.execute("SELECT count(*) FROM trades WHERE symbol = 'BTCUSDT'"
                       ).fetchall() == [(n_trades,)]  # fmt: skip
    bad = con.execute("SELECT count(*) FROM compare_bars_vs_klines_1m WHERE NOT matches"
                      ).fetchall()  # fmt: skip
    assert bad == [(0,)]
    names = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views()").fetchall()}
    assert "macro_minute" in names  # contributed by the macro domain


def test_export_bars_csv_and_parquet(lake, tmp_path):
    start, end = parse_time("2024-03-01T00:00"), parse_time("2024-03-01T00:10")
    n = export_slice(lake.layout, ["BTCUSDT"], start, end, interval="1m", fmt="csv",
                     out=tmp_path / "s.csv", progress=False)  # fmt: skip
    with open(tmp_path / "s.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert n == len(rows) == 10 and rows[0]["window_start"].startswith("2024-03-01 00:00:00")
    n = export_slice(lake.layout, ["BTCUSDT"], start, end, interval="1s", out=tmp_path / "s.pq",
                     progress=False)  # fmt: skip
    assert n == 600 == pq.read_metadata(tmp_path / "s.pq").num_rows


def test_export_cli_klines_and_errors(lake, tmp_path, capsys):
    out = tmp_path / "k.parquet"
    args = [
        "--lake",
        str(lake.layout.root),
        "--symbols",
        "BTCUSDT",
        "--start",
        "2024-03-01",
        "--end",
        "2024-03-02",
        "--kind",
        "klines",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(args) == 0
    assert pq.read_metadata(out).num_rows == 1440
    bad = [*args[:-3], "--interval", "1s", "--out", str(tmp_path / "x"), "--no-progress"]
    assert main(bad) == 2 and "no klines at 1s" in capsys.readouterr().err
    assert main([*args[:3], "../x", *args[4:]]) == 2  # invalid symbol never becomes a path
    missing = [
        "--lake",
        str(tmp_path),
        "--symbols",
        "ETHUSDT",
        "--start",
        "2024-03-01",
        "--end",
        "2024-03-02",
        "--out",
        str(tmp_path / "y.parquet"),
        "--no-progress",
    ]
    assert main(missing) == 2 and not (tmp_path / "y.parquet").exists()
