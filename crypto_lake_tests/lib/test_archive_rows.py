"""A public file's trades as tick rows (``archive_trades.archive_rows``), filled batch by batch
from the Arrow buffers, and the trades file written from them with each row group built
while the one before is encoded (``ticks._BuiltAhead``): the same rows and the same bytes
as a plain column copy and a plain write, whatever the table's chunks and offsets."""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pytest

from crypto_lake.lib.core import parquet_out
from crypto_lake.lib.core.duck import connect
from crypto_lake.lib.market import archive_trades, columns, ticks
from crypto_lake.lib.raw import fastparse
from crypto_lake.lib.raw.catalog import day_bounds_us

DAY, SYMBOL = "2025-03-01", "BTCUSDT"
START_US, END_US = day_bounds_us(DAY)


def _decimals(units: np.ndarray, dtype: pa.DataType, high: np.ndarray | None = None) -> pa.Array:
    """Integers as decimals of ``dtype`` (the 128-bit words: ``units``, then its sign or
    ``high``)."""
    words = np.empty(2 * len(units), dtype=np.int64)
    words[0::2], words[1::2] = units, units >> 63 if high is None else high
    return pa.Array.from_buffers(dtype, len(units), [None, pa.py_buffer(words)])


def public_table(n: int, agg: bool = False, seed: int = 3) -> pa.Table:
    """``n`` trades (or aggTrades) of DAY as ``read_trades`` (``read_agg_trades``) gives them,
    cut into uneven chunks: one empty, one a slice of a larger array (an offset)."""
    rng = np.random.default_rng(seed)
    ids = np.arange(10**9, 10**9 + n, dtype=np.int64)
    ts = START_US + np.sort(rng.integers(0, END_US - START_US, n))
    price = rng.integers(1, 10**15, n)
    qty = rng.integers(0, 2**62, n)
    cols = {
        "trade_id": pa.array(ids), "ts_event": pa.array(ts, columns.TS_US),
        "price": _decimals(price, columns.PRICE), "qty": _decimals(qty, columns.QTY),
        "quote_qty": _decimals(np.zeros(n, dtype=np.int64), columns.QUOTE_QTY),
        "is_buyer_maker": pa.array(rng.random(n) < 0.5),
    }  # fmt: skip
    if agg:
        first = np.cumsum(rng.integers(1, 4, n)) + 5 * 10**9
        cols["first_trade_id"] = pa.array(first)
        cols["last_trade_id"] = pa.array(first + rng.integers(0, 3, n))
    table = pa.table(cols)
    cuts = [0, 7, 7, n // 3, n - 5, n]
    parts = [table.slice(a, b - a) for a, b in itertools.pairwise(cuts)]
    padded = pa.concat_tables([table.slice(0, 3), parts[2]]).combine_chunks().slice(3)
    return pa.concat_tables([parts[0], parts[1], padded, *parts[3:]])


def plain_rows(table: pa.Table) -> np.ndarray:
    """The tick rows of an archive table by whole-column copies (what archive_rows fills)."""
    t, agg = table.combine_chunks(), "first_trade_id" in table.column_names
    n = t.num_rows

    def units(name: str) -> np.ndarray:
        return np.array([int(d.scaleb(8)) for d in t[name].to_pylist()], dtype=np.int64)

    ids = t["trade_id"].to_numpy()
    flags = fastparse.FLAG_ARCHIVE | fastparse.FLAG_IBM * t["is_buyer_maker"].to_numpy(
        zero_copy_only=False
    ).astype(np.int64)
    return np.stack([
        np.full(n, fastparse.KIND_AGG if agg else fastparse.KIND_TRADE),
        np.full(n, archive_trades.NO_RECV_US), ids,
        t["first_trade_id"].to_numpy() if agg else ids,
        t["last_trade_id"].to_numpy() if agg else ids,
        t["ts_event"].cast(pa.int64()).to_numpy(), units("price"), units("qty"), flags,
    ]).astype(np.int64)  # fmt: skip


@pytest.mark.parametrize("agg", [False, True])
def test_archive_rows_equal_a_plain_column_copy(agg):
    table = public_table(5000, agg)
    assert table.column("price").num_chunks > 3
    rows = archive_trades.archive_rows(table, START_US, END_US)
    assert rows.dtype == np.int64 and rows.flags.c_contiguous
    np.testing.assert_array_equal(rows, plain_rows(table))
    assert archive_trades.archive_rows(table.slice(0, 0), START_US, END_US).shape == (9, 0)


def test_archive_rows_refuse_what_is_no_trade_of_the_day():
    table = public_table(500)
    ts = table["ts_event"].cast(pa.int64()).to_numpy()
    late = table.set_column(1, "ts_event", pa.array(np.where(ts > ts[400], END_US, ts),
                                                     columns.TS_US))  # fmt: skip
    first_late = table["trade_id"].to_numpy()[ts > ts[400]][0]
    with pytest.raises(ValueError, match=rf"holds 99 trade\(s\) .*first trade id {first_late}"):
        archive_trades.archive_rows(late, START_US, END_US)
    qty = table["qty"].combine_chunks()
    high = np.zeros(500, dtype=np.int64)
    high[250] = 1  # 2^64 units of 1e-8
    wide = table.set_column(3, "qty", _decimals(np.zeros(500, dtype=np.int64), qty.type, high))
    with pytest.raises(ValueError, match="qty beyond 64-bit"):
        archive_trades.archive_rows(wide, START_US, END_US)
    agg = public_table(500, agg=True)
    swapped = agg.set_column(6, "first_trade_id", agg["last_trade_id"]).set_column(
        7, "last_trade_id", agg["first_trade_id"])  # fmt: skip
    with pytest.raises(ValueError, match="first_trade_id > last_trade_id"):
        archive_trades.archive_rows(swapped, START_US, END_US)


def test_an_archive_only_day_is_the_same_file_whatever_its_chunks_and_row_groups(
    tmp_path, monkeypatch
):
    """Row groups of 1000 rows, each built while the one before is written, give the bytes
    of one plain write of the whole table; so do the table's chunks."""
    monkeypatch.setattr(parquet_out, "ROW_GROUP_SIZE", 1000)
    table = public_table(10_500)

    def built(archive: pa.Table, name: str) -> bytes:
        out = tmp_path / name
        stats = ticks.build_ticks([], SYMBOL, DAY, out / "t.parquet", out / "q.parquet",
                                  tmp_path / "quarantine", con=connect(threads=2),
                                  archive=archive)  # fmt: skip
        assert stats.trade_rows == stats.archive_trades == archive.num_rows
        return (out / "t.parquet").read_bytes()

    rows = plain_rows(table)
    plain = tmp_path / "plain.parquet"
    parquet_out.write_parquet(ticks._trades_table(columns.Buffers(), SYMBOL, rows, True), plain,
                              dictionary=(*parquet_out.DICTIONARY, "source"))  # fmt: skip
    assert built(table, "chunked") == built(table.combine_chunks(), "whole") == plain.read_bytes()


def test_built_ahead_hands_out_each_group_and_never_refills_the_one_in_use():
    """The group being encoded and the one built meanwhile are in different slots; a request
    other than the guessed next waits for the guess, then builds in its slot."""
    for requests, calls in [
        ([(0, 10), (10, 20), (20, 25)], [(0, 10, 1), (10, 20, 0), (20, 25, 1)]),
        ([(0, 10), (5, 15), (15, 25)], [(0, 10, 1), (10, 20, 0), (5, 15, 0), (15, 25, 1)]),
    ]:
        made: list[tuple[int, int, int]] = []

        def build(a: int, b: int, slot: int, made=made) -> tuple[int, int, int]:
            made.append((a, b, slot))
            return (a, b, slot)

        with ThreadPoolExecutor(1) as pool:
            ahead = ticks._BuiltAhead(build, 25, pool)
            got = [ahead.rows(a, b) for a, b in requests]
        assert [g[:2] for g in got] == requests
        assert [g[2] for g in got] == [1, 0, 1]  # alternating
        assert made == calls
