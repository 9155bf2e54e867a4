"""The book_1s table: its columns and types, NULLs where the book is not proved, doubles that
are correctly rounded quotients of the exact integers, and a Parquet file DuckDB reads. Also
the two supports of the compiled path: the synthetic writer's exact line formats and the
compiled code's cache keyed on all its sources."""

from __future__ import annotations

import inspect
from fractions import Fraction
from pathlib import Path

import duckdb
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crypto_lake.lib.book import engine, jit, levels, rows, scan, state, verify
from crypto_lake.lib.book import model as M
from crypto_lake.lib.book.fast import reconstruct_day
from crypto_lake.lib.book.lines import read_line
from crypto_lake.lib.book.synthetic import (
    Faults,
    SyntheticSpec,
    depth_event_line,
    ticker_line,
    write_day,
)
from crypto_lake.lib.book.table import BOOK_1S, book_1s_table
from crypto_lake.lib.core.parquet_out import write_parquet
from crypto_lake.lib.raw.lines import ws_line


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> M.BookDay:
    spec = SyntheticSpec(seconds=40, start_s=7200, seed=9, snapshot_every_s=10,
                         faults=Faults(drop=0.01, stale=1.0))  # fmt: skip
    raw = write_day(spec, tmp_path_factory.mktemp("raw"))
    return reconstruct_day(raw.paths, spec.symbol, spec.day)


def test_columns_and_types_are_the_registered_ones(day: M.BookDay) -> None:
    table = book_1s_table(day)
    assert table.column_names == BOOK_1S.names
    for f in table.schema:
        got = f.type.value_type if pa.types.is_dictionary(f.type) else f.type
        assert got == BOOK_1S.column(f.name).arrow, f.name
    # from the first reliable second to the last one the clock passed (the 40 s recorded,
    # but the last: no event after it closes it)
    assert table.num_rows == day.last_second - day.first_reliable + 1 == 39
    assert book_1s_table(day).column("reliable")[-1].as_py()  # no trailing no_data rows
    assert table.column("window_start")[0].value == day.start_us + 7200 * 10**6


def test_unreliable_rows_hold_no_book_and_reliable_ones_are_exact(day: M.BookDay) -> None:
    t = book_1s_table(day).to_pylist()
    book = [c for c in BOOK_1S.names if c not in ("symbol", "window_start", "reliable",
                                                  "unreliable_reason", "events",
                                                  "level_updates")]  # fmt: skip
    reasons = {r["unreliable_reason"] for r in t if not r["reliable"]}
    assert "gap" in reasons and "no_data" not in reasons
    checked = 0
    for i, r in enumerate(t):
        if not r["reliable"]:
            assert all(r[c] is None for c in book), r["window_start"]
            continue
        raw = day.rows[:, day.first_reliable + i].tolist()
        b, a = raw[M.R_BID_PX], raw[M.R_ASK_PX]
        bq, aq = raw[M.R_BID_QTY], raw[M.R_ASK_QTY]
        assert r["mid"] == float(Fraction(b + a, 2 * 10**8))
        assert r["microprice"] == float(Fraction(b * aq + a * bq, (bq + aq) * 10**8))
        assert r["spread"] * 10**8 == a - b
        assert r["bid_price_1"] * 10**8 == b and r["ask_qty_1"] * 10**8 == aq
        assert r["update_id"] == raw[M.R_UPDATE_ID]
        if r["bid_depth_10bps"] is not None and r["ask_depth_10bps"] is not None:
            bd, ad = r["bid_depth_10bps"] * 10**8, r["ask_depth_10bps"] * 10**8
            assert r["imbalance_10bps"] == float(Fraction(int(bd - ad), int(bd + ad)))
            checked += 1
        assert (r["bid_depth_50bps"] is None) == (not raw[M.R_FLAGS] & M.band_bit(1, 0))
    assert checked > 20


def test_parquet_file_reads_back_in_duckdb(day: M.BookDay, tmp_path: Path) -> None:
    path = tmp_path / "book_1s.parquet"
    write_parquet(book_1s_table(day), path)
    assert pq.read_schema(path).field("bid_price_1").type == pa.decimal128(18, 8)
    con = duckdb.connect()
    types = {r[0]: r[1] for r in con.execute(f"DESCRIBE SELECT * FROM '{path}'").fetchall()}
    assert types["bid_qty_20"] == "DECIMAL(20,8)"
    assert types["ask_notional_50bps"] == "DECIMAL(38,16)"
    n, spread = con.execute(f"SELECT count(*), max(ask_price_1 - bid_price_1) FROM '{path}' "
                            "WHERE reliable").fetchall()[0]  # fmt: skip
    assert n == day.reliable_seconds and spread > 0


def test_the_synthetic_lines_are_the_collectors_exact_format(tmp_path: Path) -> None:
    spec = SyntheticSpec(seconds=2, trades_per_event=1, unit="ms", seed=3)
    data = write_day(spec, tmp_path).paths[0].read_bytes()
    kinds = set()
    for line in data.splitlines(keepends=True):
        obj = orjson.loads(line)
        if "rest" in obj:
            continue
        item = read_line(line.rstrip(b"\n"), "BTCUSDT")
        if obj["stream"].endswith("@depth@100ms"):
            again = depth_event_line(item.recv_ns, item.t_us, item.first_id, item.last_id,
                                     item.bids, item.asks, unit="ms")  # fmt: skip
        elif obj["stream"].endswith("@bookTicker"):
            again = ticker_line(item.recv_ns, item.update_id, item.bid, item.bid_qty, item.ask,
                                item.ask_qty, unit="ms")  # fmt: skip
        else:
            message = orjson.dumps({"stream": obj["stream"], "data": obj["data"]})
            again = ws_line(obj["recv_ns"], obj["conn"], obj["unit"], message)
        assert line == again
        kinds.add(obj["stream"])
    assert kinds == {"btcusdt@depth@100ms", "btcusdt@bookTicker", "btcusdt@trade"}


def test_compiled_code_is_cached_under_the_digest_of_all_its_sources() -> None:
    count = 0
    for module in (engine, levels, rows, scan, state, verify):
        for _, fn in inspect.getmembers(module, lambda f: hasattr(f, "_cache")):
            if fn.__module__ == module.__name__:
                locator = fn._cache._impl._locator
                assert isinstance(locator, jit._PackageLocator), fn
                assert locator.get_source_stamp() == jit.DIGEST
                count += 1
    assert count > 30
    assert len(np.unique([p.name for p in jit._SOURCES])) == len(jit._SOURCES)
