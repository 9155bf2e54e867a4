"""Raw JSONL lines -> deduplicated tick tables (trades, quotes) for one symbol and UTC day.

``build_ticks`` runs the steps, each in its own module: the compiled reader parses the
common lines (``tick_reader``); one DuckDB scan types every other line into a narrow staging
table (``tick_staging``); rows are deduplicated and trade id conflicts found (``dedup``);
session records become outages (``outages``); bad lines go to quarantine (``quarantine``).
Decisions worth knowing:

* **Exact numbers.** Prices are ``DECIMAL(18,8)`` and quantities ``DECIMAL(20,8)`` (Binance
  keeps both as 64-bit integers of 1e-8, so 20 digits always fit); ``quote_qty`` is the exact
  product ``price * qty`` as ``DECIMAL(38,16)``. Sums over these are exact, so thread count
  and row order cannot change a result. Readers get Python ``Decimal`` in pandas
  (``.astype(float)`` converts) and native decimals in DuckDB and polars.
* **Day membership.** A trade belongs to the UTC day of its exchange trade time, a quote
  (bookTicker has no exchange time) to the day of its local receive time.
* **Duplicates.** Trades are unique by trade id (aggTrade input: by aggregate id, with the
  underlying first/last trade ids and count kept), quotes by update id; copies of one trade
  id that disagree are a conflict, quarantined and saved for the partition's blocking check
  (see ``dedup``).
* **Sources.** A live copy of a trade wins over a REST repair, which wins over Binance's
  public daily file (``archive``: ``archive_trades``), which fills only the ids the raw files
  lack; ``source`` says which copy was kept. Archive trades were never received: their
  ``ts_recv`` is NULL, and they change neither the recording's outages nor its receive times.
* **Bad lines** (not JSON, wrong shape, unparseable fields) of the day's own folder are
  counted and copied to the quarantine folder; they never stop the build.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import orjson
import pyarrow as pa

from crypto_lake.lib.archive.compact import raw_file_day
from crypto_lake.lib.core.duck import connect
from crypto_lake.lib.core.logs import get_logger
from crypto_lake.lib.core.parquet_out import (
    DICTIONARY,
    write_dataset_groups,
    write_parquet_groups,
)
from crypto_lake.lib.core.schema import check_schema
from crypto_lake.lib.core.symbols import validate_day, validate_symbol
from crypto_lake.lib.market import archive_trades, columns, fastbars
from crypto_lake.lib.market.dedup import (
    MAX_LISTED_CONFLICTS,
    SOURCES,
    conflict_copies,
    dedup_sorted,
    save_trade_conflicts,
    trades_differ,
)
from crypto_lake.lib.market.outages import first_live, session_outages, trade_id_gaps
from crypto_lake.lib.market.quarantine import without_long_lines, write_quarantine
from crypto_lake.lib.market.tick_reader import Parsed, fast_parse
from crypto_lake.lib.market.tick_staging import (
    append_stage_rows,
    create_stage,
    drop_stage,
    spill_lines,
)
from crypto_lake.lib.raw import fastparse
from crypto_lake.lib.raw.catalog import day_bounds_us

log = get_logger("ticks")


@dataclass
class TickStats:
    """What one build_ticks run found; every field is plain data for Dagster metadata."""

    symbol: str
    day: str
    raw_files: int = 0
    raw_lines: int = 0
    trade_rows: int = 0
    quote_rows: int = 0
    duplicates_dropped: int = 0
    trade_duplicates: int = 0
    quote_duplicates: int = 0
    trade_id_conflicts: int = 0  # ids received with different content (not in trade_duplicates)
    conflicting_trade_ids: list[int] = field(default_factory=list)  # the first MAX_LISTED
    bad_lines: int = 0
    ignored_lines: int = 0  # other streams/symbols, invalidated aggTrades, the minority kind
    invalidated_agg_trades: int = 0
    trade_kind: str | None = None  # "trade" or "aggTrade"
    first_trade_id: int | None = None
    last_trade_id: int | None = None
    trade_id_gaps: list[tuple[int, int]] = field(default_factory=list)
    missing_trade_ids: int = 0
    repaired_trades: int = 0
    archive_file_trades: int = 0  # trades of the day in the public file passed as ``archive``
    archive_trades: int = 0  # of these, kept: ids the raw files do not have
    min_ts_event_us: int | None = None
    max_ts_event_us: int | None = None
    max_ts_recv_us: int | None = None
    outages: list[tuple[int, int]] = field(default_factory=list)  # [start_us, end_us)
    # one per outages entry: "outage" (collector ran, no live connection) or "unrecorded"
    outage_kinds: list[str] = field(default_factory=list)
    quarantine_path: str | None = None


def _summary(trades: np.ndarray, quotes: np.ndarray, start_us: int) -> pa.Table | None:
    """The per-second summary of the ticks; None when they hold sums no bar can: the ticks
    are kept, and building the bars says why it cannot."""
    try:
        return fastbars.seconds_from_rows(trades, quotes, start_us // fastbars.US)
    except fastbars.BarRangeError as exc:
        log.error("no per-second summary: %s", exc)
        return None


def _save_summary(summary: pa.Table | None, out: Path, trades_out: Path,
                  quotes_out: Path) -> None:  # fmt: skip
    """Save the per-second summary (none: the stale one removed)."""
    if summary is None:
        Path(out).unlink(missing_ok=True)
        return
    fastbars.save_seconds(summary, out, trades_out, quotes_out)


def build_ticks(
    raw_files: list[Path],
    symbol: str,
    day: str,
    trades_out: Path,
    quotes_out: Path,
    quarantine_dir: Path,
    *,
    con: duckdb.DuckDBPyConnection | None = None,
    fast: bool = True,
    seconds_out: Path | None = None,
    conflicts_out: Path | None = None,
    archive: pa.Table | None = None,
) -> TickStats:
    """Parse ``raw_files`` into the trades and quotes Parquet files of (symbol, day).

    Re-running replaces both outputs (and the day's quarantine file) atomically. ``fast``
    reads common lines with the compiled reader (``fastparse``); False sends every line
    through the general DuckDB path, with the same result. ``seconds_out`` also saves the
    day's per-second summary for ``build_bars_1s(seconds=...)``, stamped with the two tick
    files it was computed with, so the bars need not read the tick tables again.
    ``conflicts_out`` (``trade_conflicts_path``) receives the day's trade id conflicts, an
    empty list when there are none (read back by ``load_trade_conflicts``).

    ``archive``, the day's trades from Binance's public daily file (``archive_trades``:
    trades or aggTrades, the kind of the day's raw trades, else ``ArchiveKindMismatch``),
    completes the trades: every trade id the raw files do not have is added with source
    "archive" and no receive time; an archive copy that disagrees with the raw copy of its id
    is a trade id conflict. A day without raw files gives the archive's trades and no
    quotes. The outages stay those of the recording (the bars flag a filled second both
    ``is_outage`` and ``is_archive``).
    """
    symbol, day = validate_symbol(symbol), validate_day(day)
    start_us, end_us = day_bounds_us(day)
    stats = TickStats(symbol=symbol, day=day, raw_files=len(raw_files))
    archived = None if archive is None else archive_trades.archive_rows(archive, start_us,
                                                                        end_us)  # fmt: skip
    con = con or connect()
    bufs = columns.buffers()
    parsed, suspects = _parse(con, raw_files, symbol, day, fast, bufs)
    try:
        trades, quotes = _merge_stage(con, parsed, stats)
        live_from = first_live(trades, quotes, start_us)
        if archived is not None:
            a_kind = archive_trades.archive_kind(archive)
            archive_trades.check_kind(a_kind, stats.trade_kind)
            stats.trade_kind, stats.archive_file_trades = a_kind, archived.shape[1]
        kind = fastparse.KIND_AGG if stats.trade_kind == "aggTrade" else fastparse.KIND_TRADE
        chosen = trades[0] == kind
        if not chosen.all():  # a day that mixes kinds (rare): keep the chosen one
            trades = trades[:, chosen]
        trades, merged = _with_archive(trades, archived)
        with ThreadPoolExecutor(1) as writer:  # Parquet encoding releases the GIL: overlap
            trades_written, trades, conflicts, received = _write_trades(
                writer, bufs, trades, symbol, stats, trades_out, merged
            )
            quotes = _write_quotes(bufs, quotes, symbol, stats, quotes_out)
            # computed while the trades are written; saved with the files' stamp after
            summary = None if seconds_out is None else _summary(trades, quotes, start_us)
            trades_written.result()
        if seconds_out is not None:
            _save_summary(summary, seconds_out, trades_out, quotes_out)
        outages = session_outages(con, start_us, end_us, live_from, (received, quotes[0]))
        stats.outages = [(a, b) for a, b, _ in outages]
        stats.outage_kinds = [k for _, _, k in outages]
        del trades
        stats.quote_rows = quotes.shape[1]
        if stats.quote_rows:
            stats.max_ts_recv_us = max(stats.max_ts_recv_us or 0, int(quotes[0].max()))
        versions = conflict_copies(conflicts)
        stats.quarantine_path = write_quarantine(
            con, quarantine_dir, symbol, day, bad_lines=stats.bad_lines,
            trade_id_conflicts=stats.trade_id_conflicts, suspects=suspects,
            more=[*parsed.long_lines, *(orjson.dumps(v) for v in versions)],
        )  # fmt: skip
        if conflicts_out is not None:
            save_trade_conflicts(conflicts_out, symbol, day, stats.trade_id_conflicts,
                                 stats.conflicting_trade_ids, versions)  # fmt: skip
    finally:
        drop_stage(con)
    stats.duplicates_dropped = stats.trade_duplicates + stats.quote_duplicates
    log.info(
        "ticks %s %s: %d trades, %d quotes, %d duplicates, %d bad lines, %d id gaps",
        symbol, day, stats.trade_rows, stats.quote_rows, stats.duplicates_dropped,
        stats.bad_lines, len(stats.trade_id_gaps),
    )  # fmt: skip
    return stats


def _parse(
    con: duckdb.DuckDBPyConnection, raw_files: list[Path], symbol: str, day: str, fast: bool,
    bufs: columns.Buffers,
) -> tuple[Parsed, list[str]]:  # fmt: skip
    """Read the day's files: the compiled reader's rows, and the ``stage`` table of ``con``
    with every other line; and the own files that may hold bad lines."""
    start_us, end_us = day_bounds_us(day)
    own, other = _split_files(raw_files, day)
    (threads,) = con.execute("SELECT current_setting('threads')").fetchone()
    with tempfile.TemporaryDirectory(prefix="ticks-") as tmp:
        if fast:
            parsed = fast_parse(own, other, symbol, start_us, end_us, int(threads), bufs)
            fb_own = spill_lines(Path(tmp) / "own.jsonl", parsed.fallback_own)
            fb_other = spill_lines(Path(tmp) / "other.jsonl", parsed.fallback_other)
            suspects = parsed.fallback_files  # a bad line is always a fallback line
        else:
            parsed = Parsed(bufs)
            fb_own, parsed.long_lines = without_long_lines(own, Path(tmp) / "own")
            fb_other, _ = without_long_lines(other, Path(tmp) / "other")
            suspects = own
        create_stage(con, symbol, start_us, end_us, fb_own, fb_other)
    return parsed, suspects


def _merge_stage(
    con: duckdb.DuckDBPyConnection, parsed: Parsed, stats: TickStats
) -> tuple[np.ndarray, np.ndarray]:
    """The compiled reader's rows + the general path's rows, as two matrices (each row
    contiguous); fills the line counts and chooses the trade kind when a day mixes @trade
    and @aggTrade."""
    fast_rows = parsed.trades.n + parsed.quotes.n + parsed.other
    trades, quotes, counts = append_stage_rows(con, parsed.trades, parsed.quotes)
    stats.bad_lines = counts.get("bad", 0) + len(parsed.long_lines)
    stats.invalidated_agg_trades = counts.get("invalid", 0)
    n_trade = int(np.count_nonzero(trades[0] == fastparse.KIND_TRADE))
    n_agg = trades.shape[1] - n_trade
    # Trade ids and aggregate ids are different id spaces; mixing them would double count.
    # A day normally has one kind; if the stream setting changed mid-day, the larger wins.
    if n_trade or n_agg:
        stats.trade_kind = "aggTrade" if n_agg > n_trade else "trade"
    minority = n_trade if stats.trade_kind == "aggTrade" else n_agg
    n_other = counts.get("other", 0) + parsed.other
    stats.ignored_lines = n_other + stats.invalidated_agg_trades + minority
    stats.raw_lines = fast_rows + sum(counts.values()) + len(parsed.long_lines)
    return trades, quotes


def _with_archive(trades: np.ndarray, archived: np.ndarray | None) -> tuple[np.ndarray, int]:
    """The raw trade rows followed by the archive rows the dedup must see (copies of an id
    sort by their flags, wherever they are), and how many of those there are."""
    if archived is None:
        return trades, 0
    archived = archive_trades.rows_to_merge(archived, trades)
    if not archived.shape[1]:
        return trades, 0
    if not trades.shape[1]:  # no raw trades (a day of history): no copy of the whole day
        return archived, archived.shape[1]
    return np.concatenate([trades, archived], axis=1), archived.shape[1]


def _write_trades(
    writer: ThreadPoolExecutor, bufs: columns.Buffers, trades: np.ndarray, symbol: str,
    stats: TickStats, out: Path, merged: int = 0,
) -> tuple[Future, np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Deduplicate and sort the chosen kind's rows (the last ``merged`` from the public
    file), fill the trade stats; the Parquet file is written by ``writer`` (the returned
    future, with the rows written, the rows of conflicting ids and the receive times of the
    rows written that were received: all but the public file's)."""
    # SQL order of the general path: id, repaired, recv_us, ts_us, px, qt, ibm, first, last
    trades, dropped, conflicts = dedup_sorted(
        trades, 2, 5,
        keys=lambda m: [m[2], m[8] >> 1, m[1], m[5], m[6], m[7], m[8] & 1, m[3], m[4]],
        differ=trades_differ,
    )  # fmt: skip

    def rows(a: int, b: int, slot: int) -> pa.Table:
        return _trades_table(bufs, symbol, trades[:, a:b], merged > 0, f"{slot}")

    # the stats are taken while the file is written
    written = writer.submit(_write_trades_file, out, trades.shape[1], rows)
    ids = np.unique(conflicts[2])
    stats.trade_id_conflicts = len(ids)
    stats.conflicting_trade_ids = ids[:MAX_LISTED_CONFLICTS].tolist()
    stats.trade_duplicates = dropped - (conflicts.shape[1] - len(ids))  # identical copies
    received, n_rows = trades[1], trades.shape[1]
    if merged:  # archive copies that lost to a raw copy of their id are not duplicates
        from_file = _flag_set(trades[8], fastparse.FLAG_ARCHIVE)
        stats.archive_trades = int(np.count_nonzero(from_file))
        lost = merged - stats.archive_trades - archive_trades.conflicting_losers(conflicts)
        stats.trade_duplicates -= lost
        received = received[~from_file] if stats.archive_trades < n_rows else received[:0]
    stats.trade_rows = n_rows
    if not n_rows:
        return written, trades, conflicts, received
    stats.first_trade_id, stats.last_trade_id = int(trades[3].min()), int(trades[4].max())
    stats.repaired_trades = int(np.count_nonzero(_flag_set(trades[8], fastparse.FLAG_REPAIRED)))
    stats.min_ts_event_us, stats.max_ts_event_us = int(trades[5, 0]), int(trades[5, -1])
    if len(received):
        stats.max_ts_recv_us = int(received.max())
    stats.trade_id_gaps = trade_id_gaps(trades[3], trades[4])
    stats.missing_trade_ids = sum(b - a + 1 for a, b in stats.trade_id_gaps)
    return written, trades, conflicts, received


def _flag_set(flags: np.ndarray, bit: int, block: int = 1 << 20) -> np.ndarray:
    """Whether ``bit`` is set in each of ``flags``, block by block: ``flags & bit`` of a whole
    day would be a fresh int64 array of its size (slow to touch: see ``columns``)."""
    out = np.empty(len(flags), dtype=bool)
    for a in range(0, len(flags), block):
        np.not_equal(flags[a : a + block] & bit, 0, out=out[a : a + block])
    return out


def _write_trades_file(out: Path, n: int, rows: Callable[[int, int, int], pa.Table]) -> None:
    """The trades Parquet file of the ``n`` rows ``rows(a, b, slot)`` builds, each row group
    checked against the registered columns; ``source`` stays dictionary encoded like
    ``symbol`` (three values). Each row group's columns are built by another thread while the
    writer encodes the one before (``_BuiltAhead``)."""

    def checked(a: int, b: int, slot: int) -> pa.Table:
        table = rows(a, b, slot)
        check_schema("trades", table.schema)
        return table

    with ThreadPoolExecutor(1) as builder:
        ahead = _BuiltAhead(checked, n, builder)
        write_parquet_groups(out, n, ahead.rows, dictionary=(*DICTIONARY, "source"))


class _BuiltAhead:
    """``rows(a, b)`` for ``write_parquet_groups`` that builds the next row group (the same
    size, right after) in ``pool`` while the writer encodes this one. ``build(a, b, slot)``
    builds into the buffers of ``slot`` (0 or 1): they alternate, so a group's buffers are
    refilled only after the writer asked for the next group, that is, was done with it."""

    def __init__(self, build: Callable[[int, int, int], pa.Table], n: int,
                 pool: ThreadPoolExecutor) -> None:  # fmt: skip
        self._build, self._n, self._pool = build, n, pool
        self._slot = 0  # of the group last handed out
        self._pending: tuple[tuple[int, int], Future] | None = None

    def rows(self, a: int, b: int) -> pa.Table:
        pending, self._pending = self._pending, None
        if pending is not None:
            table = pending[1].result()  # built into the other slot: wait even if unused
        if pending is None or pending[0] != (a, b):
            table = self._build(a, b, 1 - self._slot)
        self._slot = 1 - self._slot
        if b < self._n:
            nxt = (b, min(b + (b - a), self._n))
            self._pending = (nxt, self._pool.submit(self._build, *nxt, 1 - self._slot))
        return table


def _write_quotes(
    bufs: columns.Buffers, quotes: np.ndarray, symbol: str, stats: TickStats, out: Path
) -> np.ndarray:
    """Deduplicate and sort the quote rows and write them; the rows written."""
    # SQL order of the general path: id, recv_us, px, qt, ask_px, ask_qt
    quotes, stats.quote_duplicates, _ = dedup_sorted(
        quotes, 1, 0, keys=lambda m: [m[1], m[0], m[2], m[3], m[4], m[5]]
    )

    def quote_rows(a: int, b: int) -> pa.Table:
        return _quotes_table(bufs, symbol, quotes[:, a:b])

    write_dataset_groups(out, quotes.shape[1], quote_rows, "quotes")
    return quotes


def _trades_table(bufs: columns.Buffers, symbol: str, m: np.ndarray,
                  archive: bool = False, slot: str = "") -> pa.Table:  # fmt: skip
    """Trade rows (TRADE_COLUMNS x n, each row contiguous) as the trades table; ``archive``:
    some rows may come from the public file (their ts_recv is null); ``slot`` names the set
    of buffers it is built in."""
    n = m.shape[1]
    received = (m[8] & fastparse.FLAG_ARCHIVE) == 0 if archive else None
    return pa.table({
        "symbol": columns.repeat(bufs, f"t.symbol{slot}", symbol, n),
        "trade_id": columns.int64(m[2]), "ts_event": columns.timestamps(m[5]),
        "ts_recv": columns.timestamps(m[1], received),
        "price": columns.units(bufs, f"t.price{slot}", m[6], columns.PRICE),
        "qty": columns.units(bufs, f"t.qty{slot}", m[7], columns.QTY),
        "quote_qty": columns.products(bufs, f"t.quote_qty{slot}", m[6], m[7]),
        "is_buyer_maker": columns.flag(bufs, f"t.ibm{slot}", m[8], fastparse.FLAG_IBM),
        "repaired": columns.flag(bufs, f"t.repaired{slot}", m[8], fastparse.FLAG_REPAIRED),
        "source": columns.codes(bufs, f"t.source{slot}", m[8], 1, SOURCES),
        "first_trade_id": columns.int64(m[3]), "last_trade_id": columns.int64(m[4]),
        "trade_count": columns.span(bufs, f"t.count{slot}", m[3], m[4]),
    })  # fmt: skip


def _quotes_table(bufs: columns.Buffers, symbol: str, m: np.ndarray) -> pa.Table:
    """Quote rows (QUOTE_COLUMNS x n, each row contiguous) as the quotes table."""
    return pa.table({
        "symbol": columns.repeat(bufs, "q.symbol", symbol, m.shape[1]),
        "update_id": columns.int64(m[1]), "ts_recv": columns.timestamps(m[0]),
        "bid": columns.units(bufs, "q.bid", m[2], columns.PRICE),
        "bid_qty": columns.units(bufs, "q.bid_qty", m[3], columns.QTY),
        "ask": columns.units(bufs, "q.ask", m[4], columns.PRICE),
        "ask_qty": columns.units(bufs, "q.ask_qty", m[5], columns.QTY),
    })  # fmt: skip


def _split_files(raw_files: list[Path], day: str) -> tuple[list[str], list[str]]:
    """Files of the day's own folder (whose bad lines this day quarantines; a compacted day
    counts as its folder) and neighbour files, each in receive order."""
    own, other = [], []
    days = {Path(f): raw_file_day(f) for f in raw_files}
    for p in sorted(days, key=lambda p: (days[p] or "", p.name, str(p))):
        d = days[p]
        (own if d in (day, None) or not _is_day_name(d) else other).append(str(p))
    return own, other


def _is_day_name(name: str) -> bool:
    try:
        validate_day(name)
        return True
    except ValueError:
        return False
