"""Raw JSONL lines -> deduplicated tick tables (trades, quotes) for one symbol and UTC day.

One DuckDB scan parses every raw line once into a narrow staging table; trades, quotes,
session records and bad lines are then cut from it. Decisions worth knowing:

* **Exact numbers.** Prices are ``DECIMAL(18,8)`` and quantities ``DECIMAL(20,8)`` (Binance
  keeps both as 64-bit integers of 1e-8, so 20 digits always fit); ``quote_qty`` is the exact
  product ``price * qty`` as ``DECIMAL(38,16)``. Sums over these are exact, so thread count
  and row order cannot change a result. Readers get Python ``Decimal`` in pandas
  (``.astype(float)`` converts) and native decimals in DuckDB and polars.
* **Day membership.** A trade belongs to the UTC day of its exchange trade time, a quote
  (bookTicker has no exchange time) to the day of its local receive time.
* **Duplicates.** Trades are unique by trade id (aggTrade input: by aggregate id, with the
  underlying first/last trade ids and count kept), quotes by update id. A live copy wins over
  a REST-repaired one; among equals the earliest received wins. Copies of one trade id that
  disagree on what the exchange said (trade time, price, qty, maker side) are a *conflict*:
  the same copy is kept, but every copy is quarantined, counted and saved for the
  partition's blocking check (``load_trade_conflicts``).
* **Bad lines** (not JSON, wrong shape, unparseable fields) of the day's own folder are
  counted and copied to the quarantine folder; they never stop the build.
"""

from __future__ import annotations

import gc
import os
import tempfile
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import orjson
import pyarrow as pa
import zstandard

from crypto_lake.lib import columns, fastbars, fastparse
from crypto_lake.lib.fsutil import advise, atomic_path, atomic_write_bytes
from crypto_lake.lib.logs import get_logger
from crypto_lake.lib.parquet_out import write_parquet_groups
from crypto_lake.lib.paths import LakeLayout
from crypto_lake.lib.raw import open_raw
from crypto_lake.lib.raw_catalog import (
    MAX_LINE_BYTES,
    RAW_COLUMNS,
    cut_long_lines,
    day_bounds_us,
    long_line_record,
    ndjson_source,
)
from crypto_lake.lib.symbols import validate_day, validate_symbol

log = get_logger("ticks")

PRICE_T = "DECIMAL(18,8)"
QTY_T = "DECIMAL(20,8)"

# data keys pulled in one JSON parse; positions are used below as j[1]..j[17]
_DATA_KEYS = ["t", "p", "q", "T", "m", "a", "f", "l", "u", "b", "B", "A"]
_DATA_KEYS += ["id", "price", "qty", "time", "isBuyerMaker"]
_J = {k: i + 1 for i, k in enumerate(_DATA_KEYS)}
MAX_LISTED_CONFLICTS = 100  # conflicting trade ids listed in TickStats and the saved state


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
    min_ts_event_us: int | None = None
    max_ts_event_us: int | None = None
    max_ts_recv_us: int | None = None
    outages: list[tuple[int, int]] = field(default_factory=list)  # [start_us, end_us)
    # one per outages entry: "outage" (collector ran, no live connection) or "unrecorded"
    outage_kinds: list[str] = field(default_factory=list)
    quarantine_path: str | None = None


def connect(
    threads: int | None = None, memory_limit: str | None = None
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection set up for batch jobs: UTC, no progress bar."""
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    con.execute("SET TimeZone = 'UTC'")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    if memory_limit:
        con.execute("SET memory_limit = ?", [memory_limit])
    return con


def _stage_sql(symbol: str, start_us: int, end_us: int, own: bool, other: bool) -> str:
    """SELECT that types every line of $own (is_own) and $other files into one narrow row.

    ``data`` arrives minified from the reader, so "is an object" is a prefix test; json_type
    would parse every payload a second time.
    """

    def j(key: str) -> str:
        return f"j[{_J[key]}]"

    lower = symbol.lower()
    trade_px = f"coalesce({j('p')}, {j('price')})"
    trade_qt = f"coalesce({j('q')}, {j('qty')})"
    return f"""
    WITH src AS (
        {_src_sql(own, other)}
    ), x AS (
        SELECT is_own, recv_ns, conn, session, stream, data,
            split_part(stream, '@', 2) AS suffix,
            json_extract_string(data, {[f"$.{k}" for k in _DATA_KEYS]}) AS j,
            CASE WHEN coalesce(unit, 'ms') = 'us' THEN 1 ELSE 1000 END AS mult,
            CASE
                WHEN recv_ns IS NULL THEN 'bad'
                WHEN session IS NOT NULL THEN 'session'
                WHEN stream IS NULL OR NOT starts_with(data::VARCHAR, '{{') THEN 'bad'
                WHEN split_part(stream, '@', 1) <> '{lower}' THEN 'other'
                WHEN rest = 'historicalTrades' THEN 'trade'
                WHEN rest = 'aggTrades' THEN 'agg'
                WHEN rest IS NOT NULL THEN 'bad'
                WHEN suffix = 'trade' THEN 'trade'
                WHEN suffix = 'aggTrade' THEN 'agg'
                WHEN suffix = 'bookTicker' THEN 'book'
                ELSE 'other'
            END AS kind0
        FROM src
    ), y AS (
        SELECT *,
            TRY_CAST(CASE kind0 WHEN 'trade' THEN coalesce({j("t")}, {j("id")})
                                WHEN 'agg' THEN {j("a")} WHEN 'book' THEN {j("u")} END
                     AS BIGINT) AS id,
            TRY_CAST(CASE kind0 WHEN 'agg' THEN {j("f")} END AS BIGINT) AS f_id,
            TRY_CAST(CASE kind0 WHEN 'agg' THEN {j("l")} END AS BIGINT) AS l_id,
            TRY_CAST(coalesce({j("T")}, {j("time")}) AS BIGINT) * mult AS ts_us,
            {_u(f"CASE WHEN kind0 = 'book' THEN {j('b')} ELSE {trade_px} END", PRICE_T)} AS px,
            {_u(f"CASE WHEN kind0 = 'book' THEN {j('B')} ELSE {trade_qt} END", QTY_T)} AS qt,
            {_u(f"CASE kind0 WHEN 'book' THEN {j('a')} END", PRICE_T)} AS ask_px,
            {_u(f"CASE kind0 WHEN 'book' THEN {j('A')} END", QTY_T)} AS ask_qt,
            TRY_CAST(coalesce({j("m")}, {j("isBuyerMaker")}) AS BOOLEAN) AS ibm
        FROM x
    ), z AS (
        SELECT *, CASE
            WHEN kind0 IN ('trade', 'agg') AND (id IS NULL OR ts_us IS NULL OR px IS NULL
                 OR qt IS NULL OR ibm IS NULL) THEN 'bad'
            WHEN kind0 = 'agg' AND (f_id IS NULL OR l_id IS NULL) THEN 'bad'
            WHEN kind0 = 'agg' AND f_id = -1 AND l_id = -1 THEN 'invalid'
            WHEN kind0 = 'book' AND (id IS NULL OR px IS NULL OR qt IS NULL OR ask_px IS NULL
                 OR ask_qt IS NULL) THEN 'bad'
            ELSE kind0 END AS kind
        FROM y
    )
    SELECT kind, recv_ns // 1000 AS recv_us, id,
        CASE WHEN kind = 'agg' THEN f_id ELSE id END AS first_id,
        CASE WHEN kind = 'agg' THEN l_id ELSE id END AS last_id,
        ts_us, px, qt, ask_px, ask_qt, ibm, conn = 'rest' AS repaired,
        CASE WHEN kind = 'session' THEN session END AS session,
        CASE WHEN kind = 'session' THEN conn END AS conn,
        CASE WHEN kind = 'bad' THEN data::VARCHAR END AS data
    FROM z
    WHERE CASE
        WHEN kind IN ('trade', 'agg') THEN ts_us >= {start_us} AND ts_us < {end_us}
        WHEN kind = 'book' THEN recv_ns // 1000 >= {start_us} AND recv_ns // 1000 < {end_us}
        WHEN kind = 'session' THEN true
        ELSE is_own
    END
    """


def _u(text: str, decimal_type: str) -> str:
    """SQL: a decimal string as an integer number of 1e-8 (NULL when it does not parse or
    the integer would not fit 64 bits)."""
    return f"TRY_CAST(TRY_CAST({text} AS {decimal_type})::DECIMAL(38,8) * 100000000 AS BIGINT)"


def _src_sql(own: bool, other: bool) -> str:
    # No per-row filename: it costs a string per line; bad lines are rare and located later.
    parts = [f"SELECT *, true AS is_own FROM {ndjson_source('own', False)}"] if own else []
    if other:
        parts.append(f"SELECT *, false AS is_own FROM {ndjson_source('other', False)}")
    if not parts:  # no files: an empty relation of the same shape
        return (
            "SELECT NULL::BIGINT AS recv_ns, NULL AS conn, NULL AS unit, NULL AS stream, "
            "NULL AS rest, NULL AS session, NULL::JSON AS data, false AS is_own LIMIT 0"
        )
    return " UNION ALL ".join(parts)


def _trades_table(bufs: columns.Buffers, symbol: str, m: np.ndarray) -> pa.Table:
    """Trade rows (TRADE_COLUMNS x n, each row contiguous) as the trades table."""
    n = m.shape[1]
    return pa.table({
        "symbol": columns.repeat(bufs, "t.symbol", symbol, n),
        "trade_id": columns.int64(m[2]), "ts_event": columns.timestamps(m[5]),
        "ts_recv": columns.timestamps(m[1]),
        "price": columns.units(bufs, "t.price", m[6], columns.PRICE),
        "qty": columns.units(bufs, "t.qty", m[7], columns.QTY),
        "quote_qty": columns.products(bufs, "t.quote_qty", m[6], m[7]),
        "is_buyer_maker": columns.flag(bufs, "t.ibm", m[8], fastparse.FLAG_IBM),
        "repaired": columns.flag(bufs, "t.repaired", m[8], fastparse.FLAG_REPAIRED),
        "first_trade_id": columns.int64(m[3]), "last_trade_id": columns.int64(m[4]),
        "trade_count": columns.span(bufs, "t.count", m[3], m[4]),
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


def _dedup_sorted(
    m: np.ndarray, ids: int, first: int, keys, differ=None
) -> tuple[np.ndarray, int, np.ndarray]:
    """Rows unique by id, sorted by (row ``first``, id); how many rows were dropped; and the
    rows of ids whose copies conflict, grouped by id with the kept copy first.

    Of rows sharing an id the first by ``keys(m)`` (sort keys, most significant first) is
    kept, exactly like the SQL ``DISTINCT ON (id) ... ORDER BY keys``. Live data arrives in
    output order with increasing ids: that is checked in O(n) and costs no sort; otherwise
    stable sorts (fast on nearly sorted input) do the work, and the full key comparison runs
    only over the duplicated ids. ``differ(a, b)``, given two matrices of rows, says per
    column whether those two copies of one record disagree; every copy of an id with any
    such pair conflicts (none when ``differ`` is None).
    """
    n = m.shape[1]
    conflicts = m[:, :0]
    if n < 2:
        return m, 0, conflicts
    i, f = m[ids], m[first]
    if np.all(i[1:] > i[:-1]) and np.all(f[1:] >= f[:-1]):
        return m, 0, conflicts  # unique ids, already in (first, id) order
    by_id = np.argsort(i, kind="stable")
    sid = i[by_id]
    dup = sid[1:] == sid[:-1]
    dropped = 0
    if dup.any():
        in_group = np.zeros(n, dtype=bool)
        in_group[1:] |= dup
        in_group[:-1] |= dup
        cand = by_id[in_group]
        cand = cand[np.lexsort(keys(m[:, cand])[::-1])]  # grouped by id, best first
        c_ids = m[ids, cand]
        loser = np.zeros(len(cand), dtype=bool)
        loser[1:] = c_ids[1:] == c_ids[:-1]
        if differ is not None:  # each copy against its group's kept one
            c = m[:, cand]
            kept = np.maximum.accumulate(np.where(loser, 0, np.arange(len(cand))))
            disagree = loser & differ(c, c[:, kept])
            if disagree.any():
                conflicts = c[:, np.isin(c_ids, c_ids[disagree])]
        keep = np.ones(n, dtype=bool)
        keep[cand[loser]] = False
        dropped = int(np.count_nonzero(loser))
        m = m[:, keep]
        i, f = m[ids], m[first]
    order = np.argsort(i, kind="stable")
    order = order[np.argsort(f[order], kind="stable")]
    return m[:, order], dropped, conflicts


def _trades_differ(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per column: whether two copies of a trade (rows as TRADE_COLUMNS) disagree on what
    the exchange said: trade time, price, qty or maker side. Receive time, connection, the
    repaired flag and aggregate ids may differ between a live line and its REST repair. The
    time is compared to the millisecond when either copy may come from a ms-unit line (its
    µs time is a whole ms): a µs stream repaired with ms REST times is the same trade."""
    ta, tb = a[5], b[5]
    coarse = (ta % 1000 == 0) | (tb % 1000 == 0)
    times = np.where(coarse, ta // 1000 != tb // 1000, ta != tb)
    side = ((a[8] ^ b[8]) & fastparse.FLAG_IBM) != 0
    return times | (a[6] != b[6]) | (a[7] != b[7]) | side


def _conflict_copies(rows: np.ndarray) -> list[dict]:
    """Each copy of a conflicting trade id (rows grouped by id, the kept copy first) as a
    quarantine record: its parsed values and how it was received."""
    out, previous = [], None
    for r in rows.T.tolist():  # conflicts are rare: plain Python is fine
        out.append({
            "reason": "trade id conflict", "trade_id": r[2],
            "kept": r[2] != previous, "ts_event_us": r[5],
            "price": _units_text(r[6]), "qty": _units_text(r[7]),
            "is_buyer_maker": bool(r[8] & fastparse.FLAG_IBM), "recv_us": r[1],
            "repaired": bool(r[8] & fastparse.FLAG_REPAIRED),
            "first_trade_id": r[3], "last_trade_id": r[4],
        })  # fmt: skip
        previous = r[2]
    return out


def _units_text(units: int) -> str:
    """An integer of 1e-8 as its exact decimal text."""
    sign, units = ("-" if units < 0 else ""), abs(units)
    return f"{sign}{units // 100_000_000}.{units % 100_000_000:08d}"


def trade_conflicts_path(layout: LakeLayout, symbol: str, day: str) -> Path:
    """Where a build saves the trade id conflicts of (symbol, day) for the blocking check."""
    name = f"{validate_day(day)}.json"
    return layout.state_dir / "conflicts" / f"symbol={validate_symbol(symbol)}" / name


def _save_conflicts(path: Path, stats: TickStats, copies: list[dict]) -> None:
    """The day's conflicts, rewritten by every build ([] when none, so a rebuild that
    resolves them clears the check): the count and, per listed id, its copies."""
    listed: dict[int, list[dict]] = {i: [] for i in stats.conflicting_trade_ids}
    for c in copies:
        if c["trade_id"] in listed:
            listed[c["trade_id"]].append({k: v for k, v in c.items() if k != "reason"})
    data = {"symbol": stats.symbol, "day": stats.day,
            "trade_id_conflicts": stats.trade_id_conflicts,
            "conflicts": [{"trade_id": i, "copies": c} for i, c in listed.items()]}  # fmt: skip
    atomic_write_bytes(path, orjson.dumps(data), durable=False)


def load_trade_conflicts(layout: LakeLayout, symbol: str, day: str) -> list[dict]:
    """The trade id conflicts the last build of (symbol, day) saved, one dict per id
    (``{"trade_id", "copies": [...]}``, at most MAX_LISTED_CONFLICTS); [] when it found none
    or saved nothing. An unreadable file is one entry with ``trade_id`` None and an
    ``error``, so a check fails on it rather than passing."""
    path = trade_conflicts_path(layout, symbol, day)
    try:
        return list(orjson.loads(path.read_bytes())["conflicts"])
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [{"trade_id": None, "copies": [], "error": f"unreadable {path}: {exc!r}"}]


def _split_files(raw_files: list[Path], day: str) -> tuple[list[str], list[str]]:
    """Own-folder files (whose bad lines this day quarantines) and neighbour files."""
    own, other = [], []
    for p in sorted(Path(f) for f in raw_files):
        (own if p.parent.name in (day, "") or not _is_day_name(p.parent.name) else other).append(
            str(p)
        )
    return own, other


def _is_day_name(name: str) -> bool:
    try:
        validate_day(name)
        return True
    except ValueError:
        return False


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
) -> TickStats:
    """Parse ``raw_files`` into the trades and quotes Parquet files of (symbol, day).

    Re-running replaces both outputs (and the day's quarantine file) atomically. ``fast``
    reads common lines with the compiled reader (``fastparse``); False sends every line
    through the general DuckDB path, with the same result. ``seconds_out`` also saves the
    day's per-second summary for ``build_bars_1s(seconds=...)``, stamped with the two tick
    files it was computed with, so the bars need not read the tick tables again.
    ``conflicts_out`` (``trade_conflicts_path``) receives the day's trade id conflicts, an
    empty list when there are none (read back by ``load_trade_conflicts``).
    """
    symbol, day = validate_symbol(symbol), validate_day(day)
    start_us, end_us = day_bounds_us(day)
    stats = TickStats(symbol=symbol, day=day, raw_files=len(raw_files))
    own, other = _split_files(raw_files, day)
    con = con or connect()
    (threads,) = con.execute("SELECT current_setting('threads')").fetchone()
    bufs = columns.buffers()
    with tempfile.TemporaryDirectory(prefix="ticks-") as tmp:
        if fast:
            parsed = _fast_parse(own, other, symbol, start_us, end_us, int(threads), bufs)
            fb_own = _spill(Path(tmp) / "own.jsonl", parsed.fallback_own)
            fb_other = _spill(Path(tmp) / "other.jsonl", parsed.fallback_other)
            suspects = parsed.fallback_files  # a bad line is always a fallback line
        else:
            parsed = _Parsed(bufs)
            fb_own, parsed.long_lines = _cut_long_lines(own, Path(tmp) / "own")
            fb_other, _ = _cut_long_lines(other, Path(tmp) / "other")
            suspects = own
        con.execute("DROP TABLE IF EXISTS stage")
        params = {k: v for k, v in (("own", fb_own), ("other", fb_other)) if v}
        con.execute(
            f"CREATE TEMP TABLE stage AS "
            f"{_stage_sql(symbol, start_us, end_us, bool(fb_own), bool(fb_other))}",
            params,
        )
    try:
        trades, quotes = _merge_stage(con, parsed, stats)
        first_live = _first_live(trades, quotes, start_us)
        kind = fastparse.KIND_AGG if stats.trade_kind == "aggTrade" else fastparse.KIND_TRADE
        chosen = trades[0] == kind
        if not chosen.all():  # a day that mixes kinds (rare): keep the chosen one
            trades = trades[:, chosen]
        with ThreadPoolExecutor(1) as writer:  # Parquet encoding releases the GIL: overlap
            trades_written, trades, conflicts = _write_trades(writer, bufs, trades, symbol,
                                                              stats, trades_out)  # fmt: skip
            # SQL order of the general path: id, recv_us, px, qt, ask_px, ask_qt
            quotes, stats.quote_duplicates, _ = _dedup_sorted(
                quotes, 1, 0, keys=lambda m: [m[1], m[0], m[2], m[3], m[4], m[5]]
            )

            def quote_rows(a: int, b: int) -> pa.Table:
                return _quotes_table(bufs, symbol, quotes[:, a:b])

            write_parquet_groups(quotes_out, quotes.shape[1], quote_rows)
            trades_written.result()
        if seconds_out is not None:
            summary = fastbars.seconds_from_rows(trades, quotes, start_us // fastbars.US)
            fastbars.save_seconds(summary, seconds_out, trades_out, quotes_out)
        outages = session_outages(con, start_us, end_us, first_live, (trades[1], quotes[0]))
        stats.outages = [(a, b) for a, b, _ in outages]
        stats.outage_kinds = [k for _, _, k in outages]
        del trades
        stats.quote_rows = quotes.shape[1]
        if stats.quote_rows:
            stats.max_ts_recv_us = max(stats.max_ts_recv_us or 0, int(quotes[0].max()))
        versions = _conflict_copies(conflicts)
        stats.quarantine_path = _quarantine(con, stats, suspects, quarantine_dir, [
            *parsed.long_lines, *(orjson.dumps(v) for v in versions)])  # fmt: skip
        if conflicts_out is not None:
            _save_conflicts(conflicts_out, stats, versions)
    finally:
        con.execute("DROP TABLE IF EXISTS stage")
    stats.duplicates_dropped = stats.trade_duplicates + stats.quote_duplicates
    log.info(
        "ticks %s %s: %d trades, %d quotes, %d duplicates, %d bad lines, %d id gaps",
        symbol, day, stats.trade_rows, stats.quote_rows, stats.duplicates_dropped,
        stats.bad_lines, len(stats.trade_id_gaps),
    )  # fmt: skip
    return stats


class _Parsed:
    """What the compiled reader made of a day's files: the accepted rows, appended in file
    order straight into the day's matrices, and the lines left to the general path."""

    def __init__(self, bufs: columns.Buffers) -> None:
        self.trades = columns.Rows(bufs, "trades", len(fastparse.TRADE_COLUMNS))
        self.quotes = columns.Rows(bufs, "quotes", len(fastparse.QUOTE_COLUMNS))
        self.other = 0
        self.fallback_own: list[bytes] = []
        self.fallback_other: list[bytes] = []
        self.fallback_files: list[str] = []  # own files with fallback lines
        self.long_lines: list[bytes] = []  # quarantine records of own lines too long for DuckDB


class _Scratch:
    """The bytes and parsed rows of a few consecutive files; reused job after job, so the
    per-file arrays are allocated once per build."""

    def __init__(self) -> None:
        self.data = np.empty(1 << 20, dtype=np.uint8)
        self.tr = np.empty((len(fastparse.TRADE_COLUMNS), 0), dtype=np.int64)
        self.bk = np.empty((len(fastparse.QUOTE_COLUMNS), 0), dtype=np.int64)
        self.fb_s = self.fb_e = np.empty(0, dtype=np.int64)
        self.n_tr = self.n_bk = self.n_other = 0
        self.fallback: list[bytes] = []
        self.fallback_files: list[str] = []
        self.long_lines: list[bytes] = []
        self.zstd = zstandard.ZstdDecompressor()

    def _read(self, path: Path) -> np.ndarray:
        n = 0
        with open_raw(path, self.zstd) as fh:
            while True:
                if n == len(self.data):
                    bigger = np.empty(2 * len(self.data), dtype=np.uint8)
                    bigger[:n] = self.data
                    self.data = bigger
                got = fh.readinto(memoryview(self.data)[n:])
                if not got:
                    return self.data[:n]
                n += got

    def _room(self, rows: int) -> None:
        """Capacity for ``rows`` more rows of each kind, and for ``rows`` fallback lines."""
        if self.tr.shape[1] < self.n_tr + rows or self.bk.shape[1] < self.n_bk + rows:
            cap = (max(self.n_tr, self.n_bk) + rows) * 5 // 4
            tr = np.empty((len(fastparse.TRADE_COLUMNS), cap), dtype=np.int64)
            bk = np.empty((len(fastparse.QUOTE_COLUMNS), cap), dtype=np.int64)
            tr[:, : self.n_tr] = self.tr[:, : self.n_tr]
            bk[:, : self.n_bk] = self.bk[:, : self.n_bk]
            self.tr, self.bk = tr, bk
        if len(self.fb_s) < rows:
            self.fb_s, self.fb_e = np.empty(rows, dtype=np.int64), np.empty(rows, dtype=np.int64)

    def parse(self, paths: list[Path], lower: np.ndarray, start_us: int, end_us: int,
              keep_other: bool) -> _Scratch:  # fmt: skip
        """Parse ``paths`` (all own files or all neighbour files), rows in file order."""
        self.n_tr = self.n_bk = self.n_other = 0
        self.fallback, self.fallback_files, self.long_lines = [], [], []
        for path in paths:
            buf = self._read(path)
            at, rows, fallback = 0, len(buf) // _LINE_BYTES + 1, len(self.fallback)
            while True:  # once, unless the file has more lines than guessed
                self._room(rows)
                self.n_tr, self.n_bk, n_other, m, at = fastparse.parse_buffer(
                    buf, at, lower, start_us, end_us, keep_other, self.tr, self.bk,
                    self.fb_s, self.fb_e, self.n_tr, self.n_bk,
                )  # fmt: skip
                self.n_other += n_other
                if m and int((self.fb_e[:m] - self.fb_s[:m]).max()) > MAX_LINE_BYTES:
                    self._set_aside_long_lines(buf, path, m)
                else:
                    self.fallback += [buf[self.fb_s[i] : self.fb_e[i]].tobytes()
                                      for i in range(m)]  # fmt: skip
                if at >= len(buf):
                    break
                rows *= 2
            if len(self.fallback) > fallback:
                self.fallback_files.append(str(path))
        return self

    def _set_aside_long_lines(self, buf: np.ndarray, path: Path, m: int) -> None:
        """The ``m`` fallback lines of ``buf``, those longer than MAX_LINE_BYTES (DuckDB's JSON
        reader would fail the whole day on them) as quarantine records instead."""
        for i in range(m):
            s, e = int(self.fb_s[i]), int(self.fb_e[i])
            if e - s > MAX_LINE_BYTES:
                line_no = int(np.count_nonzero(buf[:s] == 10)) + 1
                self.long_lines.append(long_line_record(path, line_no, buf[s:e].tobytes()))
            else:
                self.fallback.append(buf[s:e].tobytes())


# Room for a file's rows is guessed from its size (raw lines average about 200 bytes);
# counting its lines first would cost a pass over every byte.
_LINE_BYTES = 128
_FILES_PER_JOB = 8  # files parsed per thread hand-off (a thread switch per file costs)


def _fast_parse(
    own: list[str], other: list[str], symbol: str, start_us: int, end_us: int, threads: int,
    bufs: columns.Buffers,
) -> _Parsed:  # fmt: skip
    """Every file through the compiled reader, ``threads`` jobs of a few files at a time (it
    releases the GIL), at most one job ahead per thread; rows in file order.

    Once the first job is in, the day's matrices are sized for the whole day from its rows
    per file byte: growing them step by step would copy every row about twice more, into
    memory touched for the first time, which is slow (see ``columns``). A wrong estimate
    costs nothing worse: too high leaves untouched address space, too low grows as before.
    """
    jobs = [([Path(f) for f in group[i : i + _FILES_PER_JOB]], is_own)
            for group, is_own in ((own, True), (other, False))
            for i in range(0, len(group), _FILES_PER_JOB)]  # fmt: skip
    lower = np.frombuffer(symbol.lower().encode(), dtype=np.uint8)
    out = _Parsed(bufs)
    threads = max(1, threads)
    free = list(bufs.objects("scratch", 2 * threads, _Scratch))
    pending: deque = deque()
    sizes = _file_sizes(own)
    first = sum(sizes.get(p, 0) for p in jobs[0][0]) if jobs and jobs[0][1] else 0
    sized = not first  # jobs are taken in order: the first one sizes the day

    def take(is_own: bool, job: Future) -> None:
        nonlocal sized
        s = job.result()
        if not sized:
            sized = True
            rest = (sum(sizes.values()) - first) / first * 1.1
            out.trades.reserve(s.n_tr + int(s.n_tr * rest))
            out.quotes.reserve(s.n_bk + int(s.n_bk * rest))
        out.trades.append(s.tr[:, : s.n_tr])
        out.quotes.append(s.bk[:, : s.n_bk])
        out.other += s.n_other
        (out.fallback_own if is_own else out.fallback_other).extend(s.fallback)
        if is_own:
            out.fallback_files += s.fallback_files
            out.long_lines += s.long_lines
        free.append(s)

    with _no_cyclic_gc(), ThreadPoolExecutor(threads + 1) as pool:
        # read ahead, in order, so the reader threads rarely wait on a cold disk
        pool.submit(advise, [Path(f) for f in own + other], os.POSIX_FADV_WILLNEED)
        for paths, is_own in jobs:
            if not free:
                take(*pending.popleft())
            s = free.pop()
            pending.append((is_own, pool.submit(s.parse, paths, lower, start_us, end_us, is_own)))
        while pending:
            take(*pending.popleft())
    return out


def _file_sizes(paths: list[str]) -> dict[Path, int]:
    """Bytes on disk of each file that exists."""
    sizes = {}
    for f in paths:
        try:
            sizes[Path(f)] = os.stat(f).st_size
        except OSError:
            continue  # whoever reads it reports it
    return sizes


class _GcPause:
    """Pauses Python's cyclic garbage collector while files are parsed: the reader makes a
    few objects per file and no cycles, yet each full collection walks every object of the
    process (about 1 s of a 13-symbol day). Nested and concurrent builds share one pause."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders = 0
        self._resume = False

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._holders == 0:
                self._resume = gc.isenabled()
                gc.disable()
            self._holders += 1
        try:
            yield
        finally:
            with self._lock:
                self._holders -= 1
                if self._holders == 0 and self._resume:
                    gc.enable()


_no_cyclic_gc = _GcPause()


def _cut_long_lines(paths: list[str], folder: Path) -> tuple[list[str], list[bytes]]:
    """``paths``, each file with lines over MAX_LINE_BYTES replaced by a copy in ``folder``
    without them, and those lines' quarantine records (the general path's counterpart of
    ``_Scratch._set_aside_long_lines``)."""
    out, records = [], []
    for k, path in enumerate(paths):
        with open_raw(Path(path)) as fh:
            rest, cut = cut_long_lines(fh.read())
        if cut:
            folder.mkdir(exist_ok=True)
            copy = folder / f"{k}.jsonl"
            copy.write_bytes(rest)
            records += [long_line_record(path, n, line) for n, line in cut]
            path = str(copy)
        out.append(path)
    return out, records


def _spill(path: Path, lines: list[bytes]) -> list[str]:
    """Lines for the general path, as one file for DuckDB to read ([] when none)."""
    if not lines:
        return []
    path.write_bytes(b"\n".join(lines) + b"\n")
    return [str(path)]


_STAGE_TRADES = """
SELECT CASE kind WHEN 'trade' THEN 1 ELSE 2 END AS kind, recv_us, id, first_id, last_id,
    ts_us, px, qt, (ibm::INT + 2 * repaired::INT)::BIGINT AS flags
FROM stage WHERE kind IN ('trade', 'agg')
"""
_STAGE_QUOTES = """
SELECT recv_us, id, px, qt, ask_px, ask_qt FROM stage WHERE kind = 'book'
"""


def _merge_stage(
    con: duckdb.DuckDBPyConnection, parsed: _Parsed, stats: TickStats
) -> tuple[np.ndarray, np.ndarray]:
    """The compiled reader's rows + the general path's rows, as two matrices (each row
    contiguous); fills the line counts and chooses the trade kind when a day mixes @trade
    and @aggTrade."""

    def append(rows: columns.Rows, sql: str) -> np.ndarray:
        cols = con.execute(sql).fetchnumpy()
        n = len(next(iter(cols.values())))
        if n:
            rows.append(np.stack([np.asarray(c, dtype=np.int64) for c in cols.values()]))
        return rows.view

    fast_rows = parsed.trades.n + parsed.quotes.n + parsed.other
    trades = append(parsed.trades, _STAGE_TRADES)
    quotes = append(parsed.quotes, _STAGE_QUOTES)
    counts = dict(con.execute("SELECT kind, count(*) FROM stage GROUP BY kind").fetchall())
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


def _write_trades(
    writer: ThreadPoolExecutor, bufs: columns.Buffers, trades: np.ndarray, symbol: str,
    stats: TickStats, out: Path,
) -> tuple[Future, np.ndarray, np.ndarray]:  # fmt: skip
    """Deduplicate and sort the chosen kind's rows, fill the trade stats; the Parquet file
    is written by ``writer`` (the returned future, with the rows written, and the rows of
    conflicting ids)."""
    # SQL order of the general path: id, repaired, recv_us, ts_us, px, qt, ibm, first, last
    trades, dropped, conflicts = _dedup_sorted(
        trades, 2, 5,
        keys=lambda m: [m[2], m[8] >> 1, m[1], m[5], m[6], m[7], m[8] & 1, m[3], m[4]],
        differ=_trades_differ,
    )  # fmt: skip
    ids = np.unique(conflicts[2])
    stats.trade_id_conflicts = len(ids)
    stats.conflicting_trade_ids = ids[:MAX_LISTED_CONFLICTS].tolist()
    stats.trade_duplicates = dropped - (conflicts.shape[1] - len(ids))  # identical copies
    written = writer.submit(write_parquet_groups, out, trades.shape[1],
                            lambda a, b: _trades_table(bufs, symbol, trades[:, a:b]))  # fmt: skip
    stats.trade_rows = n = trades.shape[1]
    if not n:
        return written, trades, conflicts
    stats.first_trade_id, stats.last_trade_id = int(trades[3].min()), int(trades[4].max())
    stats.repaired_trades = int(np.count_nonzero(trades[8] & fastparse.FLAG_REPAIRED))
    stats.min_ts_event_us, stats.max_ts_event_us = int(trades[5, 0]), int(trades[5, -1])
    stats.max_ts_recv_us = int(trades[1].max())
    stats.trade_id_gaps = trade_id_gaps(trades[3], trades[4])
    stats.missing_trade_ids = sum(b - a + 1 for a, b in stats.trade_id_gaps)
    return written, trades, conflicts


def trade_id_gaps(
    first_ids: np.ndarray, last_ids: np.ndarray, limit: int = 10_000
) -> list[tuple[int, int]]:
    """Missing underlying trade ids as (first_missing, last_missing), in id order."""
    if len(first_ids) < 2:
        return []
    if not np.all(first_ids[1:] >= first_ids[:-1]):
        o = np.argsort(first_ids, kind="stable")
        first_ids, last_ids = first_ids[o], last_ids[o]
    at = np.flatnonzero(first_ids[1:] > last_ids[:-1] + 1)[:limit]
    return [(int(last_ids[i]) + 1, int(first_ids[i + 1]) - 1) for i in at]


def _first_live(trades: np.ndarray, quotes: np.ndarray, start_us: int) -> int | None:
    """The first receive time, at or after the day's start, of a live (not repaired)
    market line."""
    live = trades[1, ((trades[8] & fastparse.FLAG_REPAIRED) == 0) & (trades[1] >= start_us)]
    cands = [int(x.min()) for x in (live, quotes[0][quotes[0] >= start_us]) if len(x)]
    return min(cands) if cands else None


OUTAGE, UNRECORDED = "outage", "unrecorded"  # kinds of TickStats.outage_kinds


def session_outages(
    con: duckdb.DuckDBPyConnection, start_us: int, end_us: int, first_live_us: int | None,
    market_recv: tuple[np.ndarray, ...] = (),
) -> list[tuple[int, int, str]]:  # fmt: skip
    """Intervals without recording, from session records, clipped to the day, with their
    kind: ``"outage"`` (the collector ran without a live connection) or ``"unrecorded"`` (no
    collector ran, or nothing was recorded).

    A disconnect opens an outage only when no other connection is live (the make-before-break
    replacement keeps streaming); a collector stop opens an unrecorded stretch; the next
    connect/subscribed closes either. A collector start with no stop before it means the
    previous process died without one (SIGKILL, crash, power loss): unrecorded from the last
    line received before the start (``market_recv``: receive times, µs, of the day's market
    lines; the session records count too) to the next connect. Anything still open at the end
    of the records runs to the end of the day. See ``_leading_outage`` for the day's start.
    """
    rows = con.execute(
        "SELECT recv_us, session, conn FROM stage WHERE kind = 'session' "
        "ORDER BY recv_us, session, conn"
    ).fetchall()
    live: set[str] = set()
    seen: set[str] = set()
    outages = _leading_outage(rows, start_us, end_us, first_live_us)
    opened: tuple[int, str] | None = None
    last_line = _LastLineBefore(market_recv)
    prev_us: int | None = None  # the previous session record
    for recv_us, event, conn in rows:
        if event in ("connect", "subscribed"):
            live.add(conn)
            seen.add(conn)
            if opened is not None:
                outages.append((opened[0], recv_us, opened[1]))
                opened = None
        elif event == "collector_start":
            if opened is None:  # no stop seen: whatever ran before died at its last line
                died = last_line.before(recv_us, prev_us)
                opened = (recv_us, OUTAGE) if died is None else (died, UNRECORDED)
            live.clear()
        elif event in ("disconnect", "replaced", "collector_stop"):
            if conn not in seen:
                seen.add(conn)  # it was live before the first record we have
            live.discard(conn)
            if event == "collector_stop":
                live.clear()
            if not live and opened is None and event != "replaced":
                opened = (recv_us, UNRECORDED if event == "collector_stop" else OUTAGE)
        prev_us = recv_us
    if opened is not None:
        outages.append((opened[0], end_us, opened[1]))
    return _disjoint([(max(a, start_us), min(b, end_us), k) for a, b, k in outages])


class _LastLineBefore:
    """The latest receive time before a given time, over the day's market lines. One
    vectorized pass per question (a collector start without a stop before it is rare, a
    handful a day at worst); sorting a busy day once would cost more."""

    def __init__(self, recv: tuple[np.ndarray, ...]) -> None:
        self._recv = [np.asarray(r, dtype=np.int64) for r in recv]

    def before(self, t_us: int, floor: int | None) -> int | None:
        """max(the last market line before ``t_us``, ``floor``), None when neither exists."""
        best = -1 if floor is None else floor
        for r in self._recv:
            if len(r):
                best = max(best, int(np.max(r, where=r < t_us, initial=-1)))
        return None if best < 0 else best


def _disjoint(intervals: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """Non-empty, non-overlapping intervals in time order; where two overlap the earlier one
    keeps the overlap, and touching intervals of one kind become one."""
    out: list[tuple[int, int, str]] = []
    for a, b, kind in sorted(intervals):
        if out:
            a = max(a, out[-1][1])
        if b <= a:
            continue
        if out and out[-1][1] == a and out[-1][2] == kind:
            out[-1] = (out[-1][0], b, kind)
        else:
            out.append((a, b, kind))
    return out


def _leading_outage(
    rows: list[tuple], start_us: int, end_us: int, first_live_us: int | None
) -> list[tuple[int, int, str]]:
    """How the day starts when nothing was recording at midnight.

    [day start, first record) when the day's first session record is a collector start
    ("unrecorded") or a connect ("outage": the collector started the day before) that no live
    line (``first_live_us``, the first one of the day) precedes. A day with neither a session
    record nor a live line was not recorded at all: the whole day is "unrecorded".
    """
    first = next((r for r in rows if start_us <= r[0] < end_us), None)
    if first is None:
        return [(start_us, end_us, UNRECORDED)] if first_live_us is None else []
    if first[1] not in ("collector_start", "connect", "subscribed"):
        return []
    if first_live_us is not None and first_live_us <= first[0]:
        return []
    return [(start_us, first[0], UNRECORDED if first[1] == "collector_start" else OUTAGE)]


def _unreadable(con: duckdb.DuckDBPyConnection, path: Path) -> list[bytes]:
    """Quarantine records of the lines of ``path`` that DuckDB reads no recv_ns from at all,
    with their exact text: the reader's own JSON transform decides, so every line counted
    as bad is listed once and no line it did read is."""
    with open_raw(path) as fh:
        lines = [(n, line.rstrip(b"\n")) for n, line in enumerate(fh, 1) if line.strip()]
    lines = [(n, line) for n, line in lines if len(line) <= MAX_LINE_BYTES]  # listed apart
    texts: list[str | None] = []
    for _, line in lines:
        try:
            texts.append(line.decode())
        except UnicodeDecodeError:
            texts.append(None)  # the reader reads nothing from a line that is not UTF-8
    recv = con.execute(
        f"SELECT CASE WHEN json_valid(l) AND json_type(l) = 'OBJECT' "
        f"THEN json_transform(l, '{orjson.dumps(RAW_COLUMNS).decode()}').recv_ns END "
        f"FROM unnest($lines) WITH ORDINALITY AS t(l, i) ORDER BY i",
        {"lines": texts},
    ).fetchall()
    records = []
    for (n, line), (recv_ns,) in zip(lines, recv, strict=True):
        if recv_ns is not None:
            continue
        try:
            orjson.loads(line)
            reason = "raw line must be an object with an integer recv_ns"
        except orjson.JSONDecodeError as exc:
            reason = f"not JSON: {exc}"
        text = line.decode("utf-8", "replace")
        records.append(orjson.dumps({"file": str(path), "line_no": n, "reason": reason,
                                     "line": text}))  # fmt: skip
    return records


def _quarantine(
    con: duckdb.DuckDBPyConnection, stats: TickStats, suspects: list[str], quarantine_dir: Path,
    more: list[bytes],
) -> str | None:  # fmt: skip
    """Write the day's bad lines to ``{quarantine_dir}/{symbol}_{day}.jsonl`` (or remove it).
    ``suspects`` are the day's own files that may hold unreadable lines; ``more`` are
    records made elsewhere (lines too long for DuckDB, copies of conflicting trade ids)."""
    out = Path(quarantine_dir) / f"{stats.symbol}_{stats.day}.jsonl"
    if not stats.bad_lines and not more:
        out.unlink(missing_ok=True)
        return None
    rows = con.execute(
        "SELECT data, recv_us FROM stage WHERE kind = 'bad' ORDER BY recv_us NULLS FIRST, data"
    ).fetchall()
    # valid JSON with a recv_ns, but a field would not parse
    records = [orjson.dumps({"reason": "invalid field", "recv_us": recv, "data": data})
               for data, recv in rows if recv is not None]  # fmt: skip
    if any(recv is None for _, recv in rows):  # rare: find the files holding unreadable lines
        try:
            unreadable = con.execute(
                f"SELECT DISTINCT filename FROM {ndjson_source('own')} WHERE recv_ns IS NULL "
                f"ORDER BY filename",
                {"own": suspects},
            ).fetchall()
        except duckdb.Error:  # a suspect holds a line too long for the reader: ask each file
            unreadable = [(fn,) for fn in sorted(suspects)]
        for (fn,) in unreadable:
            records += _unreadable(con, Path(fn))
    records += more
    with atomic_path(out, durable=False) as tmp:
        tmp.write_bytes(b"\n".join(records) + b"\n")
    log.warning("quarantined %d bad lines and %d trade id conflicts of %s %s to %s",
                stats.bad_lines, stats.trade_id_conflicts, stats.symbol, stats.day,
                out)  # fmt: skip
    return str(out)
