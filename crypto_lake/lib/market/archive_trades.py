"""Trades from Binance's public daily files ("archive" trades) as rows of the tick builder.

``crypto_lake.lib.history`` reads a day's public trades or aggTrades file into an Arrow table
(trade_id, ts_event, price, qty, quote_qty, is_buyer_maker; aggTrades also first_trade_id
and last_trade_id, the aggregate id in trade_id). ``build_ticks(archive=...)`` adds those
rows to the raw files' rows, marked ``FLAG_ARCHIVE``, before deduplicating: an id the raw
files have keeps its live or repaired copy, and an archive copy that disagrees with it is a
trade id conflict like any other. Archive rows equal to the only raw copy of their id are
left out first (``rows_to_merge``): on a day recorded whole they are all of them. The
archive has no receive time: its rows carry ``NO_RECV_US`` in the receive column, which
nothing downstream reads (``ts_recv`` is NULL).
"""

from __future__ import annotations

import mmap
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from crypto_lake.lib.market import columns
from crypto_lake.lib.market.dedup import trades_differ
from crypto_lake.lib.raw import fastparse

TRADE, AGG_TRADE = "trade", "aggTrade"  # the kinds of TickStats.trade_kind
NO_RECV_US = 0  # receive column of archive rows (masked wherever receive times are used);
# 0: archive_rows leaves that row as allocated (zeros)
_COLUMNS = {
    "trade_id": pa.int64(),
    "ts_event": columns.TS_US,
    "price": columns.PRICE,
    "qty": columns.QTY,
    "is_buyer_maker": pa.bool_(),
}
_AGG_COLUMNS = {"first_trade_id": pa.int64(), "last_trade_id": pa.int64()}
FILL_THREADS = 2


@dataclass(frozen=True)
class ArchiveRows:
    """A public file's trades already as tick rows (``archive_rows`` of its table), as
    ``history.fast_trades`` reads them; ``kind``: TRADE or AGG_TRADE."""

    kind: str
    rows: np.ndarray


class ArchiveKindMismatch(ValueError):
    """The public file's kind (trades or aggTrades) is not the day's trade kind: their ids are
    different id spaces, so the two cannot be merged."""


def archive_kind(table: pa.Table | ArchiveRows) -> str:
    """``"aggTrade"`` for a table of aggTrades (with first/last trade ids), else ``"trade"``;
    a table without the columns and types of either is refused (ValueError)."""
    if isinstance(table, ArchiveRows):
        return table.kind
    names = set(table.column_names)
    agg = set(_AGG_COLUMNS) <= names
    if not agg and names & set(_AGG_COLUMNS):
        raise ValueError("archive table has only one of first_trade_id, last_trade_id")
    want = {**_COLUMNS, **(_AGG_COLUMNS if agg else {})}
    have = {f.name: f.type for f in table.schema}
    wrong = [f"{n} ({have.get(n, 'missing')}, want {t})" for n, t in want.items()
             if have.get(n) != t]  # fmt: skip
    if wrong:
        raise ValueError(f"archive table columns do not match a public trades file: {wrong}")
    return AGG_TRADE if agg else TRADE


def check_kind(archive_kind: str, day_kind: str | None) -> None:
    """Raise ArchiveKindMismatch unless the archive's kind is the day's (None: no raw trades,
    the archive sets it)."""
    if day_kind is not None and archive_kind != day_kind:
        raise ArchiveKindMismatch(
            f"the public file holds {archive_kind}s but the day's raw trades are {day_kind}s "
            "(the collector's trade stream): trade ids and aggregate ids are different id "
            f"spaces; import the {day_kind}s file of the day instead"
        )


def archive_rows(table: pa.Table | ArchiveRows, start_us: int, end_us: int) -> np.ndarray:
    """The archive table as tick rows (``fastparse.TRADE_COLUMNS`` x n, each row contiguous):
    prices and quantities in 1e-8, flags ``FLAG_ARCHIVE`` (+ ``FLAG_IBM``). Every row must
    be a trade of the day [start_us, end_us) without nulls (ValueError otherwise).

    The rows are filled batch by batch straight from the Arrow buffers, by two threads: a
    busy day is 6.5 M trades (468 MB of rows), and most of the time goes to the first touch
    of fresh memory (``zeros``), which the kernel serves in parallel; a whole-column copy on
    the way would cost as much again. The receive row is left as allocated: zeros, which is
    ``NO_RECV_US``, and its pages are never touched. ``ArchiveRows`` are such rows already:
    only checked to lie inside the day."""
    if isinstance(table, ArchiveRows):
        return _inside_day(table.rows, start_us, end_us)
    kind = archive_kind(table)
    nulls = [c for c in (*_COLUMNS, *_AGG_COLUMNS)
             if c in table.column_names and table.column(c).null_count]  # fmt: skip
    if nulls:
        raise ValueError(f"archive table has nulls in {nulls}")
    agg = kind == AGG_TRADE
    m = zeros(len(fastparse.TRADE_COLUMNS), table.num_rows)
    if not table.num_rows:
        return m
    batches = table.select([*_COLUMNS, *(_AGG_COLUMNS if agg else ())]).to_batches()
    starts = np.cumsum([0, *(b.num_rows for b in batches)]).tolist()

    def fill(i: int) -> None:
        if batches[i].num_rows:
            _fill(m[:, starts[i] : starts[i + 1]], batches[i], agg)

    with ThreadPoolExecutor(FILL_THREADS) as pool:  # numpy copies release the GIL
        list(pool.map(fill, range(len(batches))))
    if agg and np.any(m[3] > m[4]):
        raise ValueError("archive table has an aggTrade with first_trade_id > last_trade_id")
    return _inside_day(m, start_us, end_us)


def _inside_day(m: np.ndarray, start_us: int, end_us: int) -> np.ndarray:
    """``m`` after checking that every row's time lies in [start_us, end_us)."""
    ts = m[5]
    if len(ts) and (ts.min() < start_us or ts.max() >= end_us):
        outside = (ts < start_us) | (ts >= end_us)
        raise ValueError(
            f"archive table holds {int(np.count_nonzero(outside))} trade(s) outside the day "
            f"[{start_us}, {end_us}) µs (first trade id {int(m[2][outside][0])}): "
            "a public daily file of another day?"
        )
    return m


def _fill(rows: np.ndarray, batch: pa.RecordBatch, agg: bool) -> None:
    """Tick rows (all but the receive row, NO_RECV_US as allocated) of one batch of
    ``_COLUMNS`` (+ ``_AGG_COLUMNS``)."""
    ids = _words(batch.column(0), 1)
    rows[0] = fastparse.KIND_AGG if agg else fastparse.KIND_TRADE
    rows[2] = ids
    rows[3] = _words(batch.column(5), 1) if agg else ids
    rows[4] = _words(batch.column(6), 1) if agg else ids
    rows[5] = _words(batch.column(1), 1)
    rows[6] = _units(batch.column(2), "price")
    rows[7] = _units(batch.column(3), "qty")
    rows[8] = _bools(batch.column(4))
    rows[8] *= fastparse.FLAG_IBM
    rows[8] |= fastparse.FLAG_ARCHIVE


def rows_to_merge(archived: np.ndarray, raw: np.ndarray) -> np.ndarray:
    """The archive rows the deduplication must see, of ``archived`` (``archive_rows``) given
    the day's ``raw`` trade rows: those of ids the raw rows lack, those that disagree with
    the raw copy of their id (a conflict) and those of ids the raw rows hold more than once.
    An archive row equal to the only raw copy of its id would lose to it without a word:
    leaving those out spares sorting a day of raw rows twice over."""
    n = raw.shape[1]
    if not n or not archived.shape[1]:
        return archived
    ids = raw[2]
    order = None if np.all(ids[1:] > ids[:-1]) else np.argsort(ids, kind="stable")
    by_id = ids if order is None else ids[order]
    pos = np.minimum(np.searchsorted(by_id, archived[2]), n - 1)
    found = by_id[pos] == archived[2]
    after = np.minimum(pos + 1, n - 1)
    repeated = found & (after > pos) & (by_id[after] == archived[2])
    copy = raw[:, pos if order is None else order[pos]]
    return archived[:, ~found | repeated | trades_differ(archived, copy)]


def conflicting_losers(conflicts: np.ndarray) -> int:
    """Archive copies among the dropped copies of conflicting ids (``dedup_sorted``'s
    conflict rows: grouped by id, the kept copy first)."""
    ids = conflicts[2]
    lost = np.zeros(len(ids), dtype=bool)
    lost[1:] = ids[1:] == ids[:-1]
    return int(np.count_nonzero(lost & ((conflicts[8] & fastparse.FLAG_ARCHIVE) != 0)))


def zeros(rows: int, n: int) -> np.ndarray:
    """A (rows, n) int64 matrix of zeros in an anonymous memory map: the kernel zeroes its
    pages on first touch, 4 KB at a time. numpy asks for transparent huge pages for large
    arrays; on the 2-core benchmark VM their first touch cost 0.4-1 s for a day's matrix,
    against 0.15 s in small pages (bench/bench_import.py). Freed with the last view of it."""
    if not n:
        return np.zeros((rows, 0), dtype=np.int64)
    return np.frombuffer(mmap.mmap(-1, rows * n * 8), dtype=np.int64).reshape(rows, n)


def _words(arr: pa.Array, width: int) -> np.ndarray:
    """The 64-bit words of a fixed-width array's values (``width`` per value: 1 for int64 and
    timestamps, 2 for decimal128), a view of its buffer."""
    words = np.frombuffer(arr.buffers()[1], dtype=np.int64)
    return words[width * arr.offset : width * (arr.offset + len(arr))]


def _bools(arr: pa.Array) -> np.ndarray:
    """The values of a boolean array without nulls, unpacked from its bits (``to_numpy``
    would first import pandas: a third of a second of a process's first build)."""
    bits = np.unpackbits(np.frombuffer(arr.buffers()[1], dtype=np.uint8), bitorder="little")
    return bits[arr.offset : arr.offset + len(arr)].view(np.bool_)


def _units(arr: pa.Array, name: str) -> np.ndarray:
    """A decimal array of scale 8 as integers of 1e-8, a view of the low words (the tick rows
    hold them as int64; Binance keeps prices and quantities as 64-bit integers of 1e-8, so
    they fit)."""
    words = _words(arr, 2)
    lo, hi = words[0::2], words[1::2]
    if np.any(hi != lo >> 63):
        raise ValueError(f"archive {name} beyond 64-bit integers of 1e-8")
    return lo
