"""A day imported from Binance's public trades file: the trades build reads the file without
its quote_qty products (``importer.archive_trades`` passes ``quote_qty=False``), and its
trades and bars_1s files are byte for byte those built from the full table."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from crypto_lake.lib.core.config import Config
from crypto_lake.lib.core.duck import connect
from crypto_lake.lib.core.paths import LakeLayout
from crypto_lake.lib.history.importer import archive_trades
from crypto_lake.lib.history.public_csv import read_agg_trades, read_trades
from crypto_lake.lib.history.public_files import (
    UnexpectedCsv,
    checksum_path,
    sha256_file,
)
from crypto_lake.lib.market.archive_trades import ArchiveRows
from crypto_lake.lib.market.bars import build_bars_1s
from crypto_lake.lib.market.ticks import build_ticks
from crypto_lake.lib.raw.catalog import day_bounds_us

SYMBOL, DAY = "BTCUSDT", "2025-03-01"  # microseconds in the public files from 2025 on
START_US, END_US = day_bounds_us(DAY)


def _trade_lines(n: int, seed: int = 3) -> list[str]:
    """A day of ``n`` trades in Binance's public trades CSV format, sorted by (time, id)."""
    rng = np.random.default_rng(seed)
    times = np.sort(rng.integers(START_US, END_US, n))
    cents = 8_500_000 + np.cumsum(rng.integers(-3, 4, n))
    lots = rng.integers(1, 200_000, n)  # steps of 0.00001
    lines = []
    for i, (t, c, q) in enumerate(zip(times.tolist(), cents.tolist(), lots.tolist(),
                                      strict=True)):  # fmt: skip
        price, qty = f"{c // 100}.{c % 100:02d}000000", f"{q // 100_000}.{q % 100_000:05d}000"
        quote = f"{c * q / 1e7:.8f}"
        maker = "True" if (i * 7) % 3 else "False"
        lines.append(f"{1_000 + i},{price},{qty},{quote},{t},{maker},True")
    return lines


def _store_zip(root: Path, kind: str, lines: list[str]) -> Path:
    """The public zip of (kind, DAY) with its .CHECKSUM, where the lake keeps it."""
    path = LakeLayout(root).public_file(kind, SYMBOL, DAY)
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(path.name[:-4] + ".csv", "\n".join(lines) + "\n")
    checksum_path(path).write_text(f"{sha256_file(path)}  {path.name}\n")
    return path


def _built_bytes(root: Path, archive: pa.Table | ArchiveRows) -> tuple[bytes, bytes]:
    """The trades and bars_1s files of a day without raw files, from ``archive``."""
    root.mkdir()
    con = connect(threads=2)
    trades, quotes, seconds = root / "t.parquet", root / "q.parquet", root / "s.parquet"
    stats = build_ticks([], SYMBOL, DAY, trades, quotes, root / "quarantine", con=con,
                        seconds_out=seconds, archive=archive)  # fmt: skip
    build_bars_1s(trades, quotes, SYMBOL, DAY, root / "b.parquet", stats.outages,
                  end_us=END_US, con=con, seconds=seconds)  # fmt: skip
    return trades.read_bytes(), (root / "b.parquet").read_bytes()


def test_the_build_without_products_writes_the_same_bytes(tmp_path):
    """The table with products, the general reader's without, and the compiled reader's
    rows the asset gets (``archive_trades``) build the same files."""
    zip_path = _store_zip(tmp_path / "lake", "trades", _trade_lines(30_000))
    full = read_trades(zip_path, DAY)
    lean = read_trades(zip_path, DAY, quote_qty=False)
    assert "quote_qty" in full.column_names and "quote_qty" not in lean.column_names
    assert lean.equals(full.drop_columns(["quote_qty"]))
    rows = archive_trades(LakeLayout(tmp_path / "lake"), Config(), SYMBOL, DAY)
    assert isinstance(rows, ArchiveRows)
    built = _built_bytes(tmp_path / "full", full)
    assert _built_bytes(tmp_path / "lean", lean) == built
    assert _built_bytes(tmp_path / "rows", rows) == built


def test_agg_trades_without_products_are_the_same_rows(tmp_path):
    lines = [f"{a},{p},{q},{f},{f},{t},{m},True" for a, (_, p, q, _, t, m, _)
             in enumerate((line.split(",") for line in _trade_lines(2_000)), start=10)
             for f in [a * 3]]  # fmt: skip
    zip_path = _store_zip(tmp_path, "aggTrades", lines)
    full = read_agg_trades(zip_path, DAY)
    assert read_agg_trades(zip_path, DAY, quote_qty=False).equals(full.drop_columns(["quote_qty"]))


@pytest.mark.parametrize("column, value", [("price", "0.00000000"), ("qty", "-1.00000000")])
def test_prices_and_quantities_are_checked_without_products(tmp_path, column, value):
    lines = _trade_lines(100)
    fields = lines[50].split(",")
    fields[1 if column == "price" else 2] = value
    lines[50] = ",".join(fields)
    zip_path = _store_zip(tmp_path, "trades", lines)
    with pytest.raises(UnexpectedCsv, match=column):
        read_trades(zip_path, DAY, check_quote_qty=False, quote_qty=False)
