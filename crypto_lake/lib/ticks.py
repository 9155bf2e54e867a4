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
  a REST-repaired one; among equals the earliest received wins.
* **Bad lines** (not JSON, wrong shape, unparseable fields) of the day's own folder are
  counted and copied to the quarantine folder; they never stop the build.
"""

from __future__ import annotations

import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from crypto_lake.lib import fastparse
from crypto_lake.lib.fsutil import atomic_path
from crypto_lake.lib.logs import get_logger
from crypto_lake.lib.raw import open_raw
from crypto_lake.lib.raw_catalog import RAW_COLUMNS, day_bounds_us, ndjson_source
from crypto_lake.lib.symbols import validate_day, validate_symbol

log = get_logger("ticks")

PRICE_T = "DECIMAL(18,8)"
QTY_T = "DECIMAL(20,8)"
ROW_GROUP_SIZE = 262_144  # fixed, so the same rows always give the same bytes
_DICTIONARY = ["symbol"]  # the other tick columns are near unique: dictionaries only cost

# data keys pulled in one JSON parse; positions are used below as j[1]..j[17]
_DATA_KEYS = ["t", "p", "q", "T", "m", "a", "f", "l", "u", "b", "B", "A"]
_DATA_KEYS += ["id", "price", "qty", "time", "isBuyerMaker"]
_J = {k: i + 1 for i, k in enumerate(_DATA_KEYS)}


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


_TS = pa.timestamp("us", tz="UTC")
_INT64 = pa.int64()
_PRICE = pa.decimal128(18, 8)
_QTY = pa.decimal128(20, 8)
_QUOTE_QTY = pa.decimal128(38, 16)


def _decimal(lo: np.ndarray, hi: np.ndarray, dtype: pa.DataType) -> pa.Array:
    """An arrow decimal array from the two 64-bit words of each 128-bit unscaled value."""
    words = np.empty((len(lo), 2), dtype=np.int64)
    words[:, 0] = lo
    words[:, 1] = hi
    return pa.Array.from_buffers(dtype, len(lo), [None, pa.py_buffer(words)])


def _int64(values: np.ndarray, dtype: pa.DataType = _INT64) -> pa.Array:
    """int64 values as an arrow array of ``dtype`` over the same buffer (pa.array takes a
    slow element-wise path for these)."""
    values = np.ascontiguousarray(values, dtype=np.int64)
    return pa.Array.from_buffers(dtype, len(values), [None, pa.py_buffer(values)])


def _timestamps(us: np.ndarray) -> pa.Array:
    """Microseconds since the epoch as timestamp[us, UTC]."""
    return _int64(us, _TS)


def _units(units: np.ndarray, dtype: pa.DataType) -> pa.Array:
    """Integers of 1e-8 as an arrow decimal with scale 8, without arithmetic."""
    return _decimal(units, units >> 63, dtype)


def _product(a: np.ndarray, b: np.ndarray) -> pa.Array:
    """The exact 128-bit products a * b of int64 values as decimal(38, 16) (scale 8 + 8)."""
    neg = (a < 0) != (b < 0)
    ua, ub = np.abs(a).astype(np.uint64), np.abs(b).astype(np.uint64)
    m32 = np.uint64(0xFFFFFFFF)
    s32 = np.uint64(32)
    a0, a1, b0, b1 = ua & m32, ua >> s32, ub & m32, ub >> s32
    p00, p01, p10 = a0 * b0, a0 * b1, a1 * b0
    mid = (p00 >> s32) + (p01 & m32) + (p10 & m32)
    lo = (p00 & m32) | (mid << s32)
    hi = a1 * b1 + (p01 >> s32) + (p10 >> s32) + (mid >> s32)
    if neg.any():  # two's complement of the 128-bit magnitude
        nlo, nhi = ~lo + np.uint64(1), ~hi + (lo == 0).astype(np.uint64)
        lo, hi = np.where(neg, nlo, lo), np.where(neg, nhi, hi)
    return _decimal(lo.view(np.int64), hi.view(np.int64), _QUOTE_QTY)


def _trades_table(symbol: str, m: np.ndarray) -> pa.Table:
    """Trade rows (TRADE_COLUMNS x n) as the trades table."""
    m = np.ascontiguousarray(m)  # arrow copies strided rows element by element
    n = m.shape[1]
    return pa.table({
        "symbol": _repeat(symbol, n),
        "trade_id": _int64(m[2]), "ts_event": _timestamps(m[5]), "ts_recv": _timestamps(m[1]),
        "price": _units(m[6], _PRICE), "qty": _units(m[7], _QTY),
        "quote_qty": _product(m[6], m[7]),
        "is_buyer_maker": (m[8] & fastparse.FLAG_IBM) != 0,
        "repaired": (m[8] & fastparse.FLAG_REPAIRED) != 0,
        "first_trade_id": _int64(m[3]), "last_trade_id": _int64(m[4]),
        "trade_count": _int64(m[4] - m[3] + 1),
    })  # fmt: skip


def _quotes_table(symbol: str, m: np.ndarray) -> pa.Table:
    """Quote rows (QUOTE_COLUMNS x n) as the quotes table."""
    m = np.ascontiguousarray(m)  # arrow copies strided rows element by element
    return pa.table({
        "symbol": _repeat(symbol, m.shape[1]), "update_id": _int64(m[1]),
        "ts_recv": _timestamps(m[0]),
        "bid": _units(m[2], _PRICE), "bid_qty": _units(m[3], _QTY),
        "ask": _units(m[4], _PRICE), "ask_qty": _units(m[5], _QTY),
    })  # fmt: skip


def _repeat(value: str, n: int) -> pa.Array:
    """``value`` n times as an arrow string array, built from its buffers."""
    raw = value.encode()
    offsets = (np.arange(n + 1, dtype=np.int32) * len(raw)).astype(np.int32)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets),
                                                  pa.py_buffer(raw * n)])  # fmt: skip


def _dedup_sorted(m: np.ndarray, ids: int, first: int, keys) -> tuple[np.ndarray, int]:
    """Rows unique by id, sorted by (row ``first``, id); and how many rows were dropped.

    Of rows sharing an id the first by ``keys(m)`` (sort keys, most significant first) is
    kept, exactly like the SQL ``DISTINCT ON (id) ... ORDER BY keys``. Live data arrives in
    output order with increasing ids: that is checked in O(n) and costs no sort; otherwise
    stable sorts (fast on nearly sorted input) do the work, and the full key comparison runs
    only over the duplicated ids.
    """
    n = m.shape[1]
    if n < 2:
        return m, 0
    i, f = m[ids], m[first]
    if np.all(i[1:] > i[:-1]) and np.all(f[1:] >= f[:-1]):
        return m, 0  # unique ids, already in (first, id) order
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
        keep = np.ones(n, dtype=bool)
        keep[cand[loser]] = False
        dropped = int(np.count_nonzero(loser))
        m = m[:, keep]
        i, f = m[ids], m[first]
    order = np.argsort(i, kind="stable")
    order = order[np.argsort(f[order], kind="stable")]
    return m[:, order], dropped


def write_parquet(table: pa.Table, out: Path, dictionary: bool | list[str] = True) -> None:
    """Atomic, deterministic zstd Parquet: fixed row groups, no wall-clock metadata.
    ``dictionary`` names the columns worth dictionary encoding (default: all)."""
    with atomic_path(Path(out), durable=False) as tmp:
        pq.write_table(
            table,
            tmp,
            compression="zstd",
            row_group_size=ROW_GROUP_SIZE,
            use_dictionary=dictionary,
            write_statistics=True,
        )


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
) -> TickStats:
    """Parse ``raw_files`` into the trades and quotes Parquet files of (symbol, day).

    Re-running replaces both outputs (and the day's quarantine file) atomically. ``fast``
    reads common lines with the compiled reader (``fastparse``); False sends every line
    through the general DuckDB path, with the same result.
    """
    symbol, day = validate_symbol(symbol), validate_day(day)
    start_us, end_us = day_bounds_us(day)
    stats = TickStats(symbol=symbol, day=day, raw_files=len(raw_files))
    own, other = _split_files(raw_files, day)
    con = con or connect()
    (threads,) = con.execute("SELECT current_setting('threads')").fetchone()
    with tempfile.TemporaryDirectory(prefix="ticks-") as tmp:
        if fast:
            parsed = _fast_parse(own, other, symbol, start_us, end_us, int(threads))
            fb_own = _spill(Path(tmp) / "own.jsonl", parsed["fallback_own"])
            fb_other = _spill(Path(tmp) / "other.jsonl", parsed["fallback_other"])
            suspects = parsed["fallback_files"]  # a bad line is always a fallback line
        else:
            parsed = {"trades": [], "quotes": [], "other": 0}
            fb_own, fb_other = own, other
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
            trades_written = _write_trades(writer, trades, symbol, stats, trades_out)
            del trades
            # SQL order of the general path: id, recv_us, px, qt, ask_px, ask_qt
            quotes, stats.quote_duplicates = _dedup_sorted(
                quotes, 1, 0, keys=lambda m: [m[1], m[0], m[2], m[3], m[4], m[5]]
            )
            write_parquet(_quotes_table(symbol, quotes), quotes_out, _DICTIONARY)
            trades_written.result()
        stats.quote_rows = quotes.shape[1]
        if stats.quote_rows:
            stats.max_ts_recv_us = max(stats.max_ts_recv_us or 0, int(quotes[0].max()))
        stats.outages = session_outages(con, start_us, end_us, first_live)
        stats.quarantine_path = _quarantine(con, stats, suspects, quarantine_dir)
    finally:
        con.execute("DROP TABLE IF EXISTS stage")
    stats.duplicates_dropped = stats.trade_duplicates + stats.quote_duplicates
    log.info(
        "ticks %s %s: %d trades, %d quotes, %d duplicates, %d bad lines, %d id gaps",
        symbol, day, stats.trade_rows, stats.quote_rows, stats.duplicates_dropped,
        stats.bad_lines, len(stats.trade_id_gaps),
    )  # fmt: skip
    return stats


def _read_raw(path: Path) -> bytes:
    with open_raw(path) as fh:
        return fh.read()


def _fast_parse(
    own: list[str], other: list[str], symbol: str, start_us: int, end_us: int, threads: int
) -> dict:
    """Every file through the compiled reader, ``threads`` files at a time (it releases
    the GIL); rows in file order."""
    jobs = [(Path(f), True) for f in own] + [(Path(f), False) for f in other]

    def one(job: tuple[Path, bool]) -> fastparse.Parsed:
        return fastparse.parse(_read_raw(job[0]), symbol, start_us, end_us, keep_other=job[1])

    trades, quotes, other_lines = [], [], 0
    fallback_own: list[bytes] = []
    fallback_files: list[str] = []
    fallback_other: list[bytes] = []
    with ThreadPoolExecutor(max(1, threads)) as pool:
        for (path, is_own), res in zip(jobs, pool.map(one, jobs), strict=True):
            trades.append(res.trades)
            quotes.append(res.quotes)
            other_lines += res.other_lines
            (fallback_own if is_own else fallback_other).extend(res.fallback)
            if is_own and res.fallback:
                fallback_files.append(str(path))
    return {"trades": trades, "quotes": quotes, "other": other_lines,
            "fallback_own": fallback_own, "fallback_other": fallback_other,
            "fallback_files": fallback_files}  # fmt: skip


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
    con: duckdb.DuckDBPyConnection, parsed: dict, stats: TickStats
) -> tuple[np.ndarray, np.ndarray]:
    """Fast rows + the general path's rows as two matrices; fills the line counts and
    chooses the trade kind when a day mixes @trade and @aggTrade. Takes the row blocks out of
    ``parsed``, so each is freed once merged."""

    def matrix(sql: str) -> np.ndarray:
        cols = con.execute(sql).fetchnumpy()
        return np.stack([np.asarray(c, dtype=np.int64) for c in cols.values()])

    fast_rows = sum(m.shape[1] for m in parsed["trades"] + parsed["quotes"]) + parsed["other"]
    trades = np.concatenate([*parsed.pop("trades"), matrix(_STAGE_TRADES)], axis=1)
    quotes = np.concatenate([*parsed.pop("quotes"), matrix(_STAGE_QUOTES)], axis=1)
    counts = dict(con.execute("SELECT kind, count(*) FROM stage GROUP BY kind").fetchall())
    stats.bad_lines = counts.get("bad", 0)
    stats.invalidated_agg_trades = counts.get("invalid", 0)
    n_trade = int(np.count_nonzero(trades[0] == fastparse.KIND_TRADE))
    n_agg = trades.shape[1] - n_trade
    # Trade ids and aggregate ids are different id spaces; mixing them would double count.
    # A day normally has one kind; if the stream setting changed mid-day, the larger wins.
    if n_trade or n_agg:
        stats.trade_kind = "aggTrade" if n_agg > n_trade else "trade"
    minority = n_trade if stats.trade_kind == "aggTrade" else n_agg
    n_other = counts.get("other", 0) + parsed["other"]
    stats.ignored_lines = n_other + stats.invalidated_agg_trades + minority
    stats.raw_lines = fast_rows + sum(counts.values())
    return trades, quotes


def _write_trades(
    writer: ThreadPoolExecutor, trades: np.ndarray, symbol: str, stats: TickStats, out: Path
) -> Future:
    """Deduplicate and sort the chosen kind's rows, fill the trade stats; the Parquet file
    is written by ``writer`` (the returned future)."""
    # SQL order of the general path: id, repaired, recv_us, ts_us, px, qt, ibm, first, last
    trades, stats.trade_duplicates = _dedup_sorted(
        trades, 2, 5,
        keys=lambda m: [m[2], m[8] >> 1, m[1], m[5], m[6], m[7], m[8] & 1, m[3], m[4]],
    )  # fmt: skip
    written = writer.submit(write_parquet, _trades_table(symbol, trades), out, _DICTIONARY)
    stats.trade_rows = n = trades.shape[1]
    if not n:
        return written
    stats.first_trade_id, stats.last_trade_id = int(trades[3].min()), int(trades[4].max())
    stats.repaired_trades = int(np.count_nonzero(trades[8] & fastparse.FLAG_REPAIRED))
    stats.min_ts_event_us, stats.max_ts_event_us = int(trades[5, 0]), int(trades[5, -1])
    stats.max_ts_recv_us = int(trades[1].max())
    stats.trade_id_gaps = trade_id_gaps(trades[3], trades[4])
    stats.missing_trade_ids = sum(b - a + 1 for a, b in stats.trade_id_gaps)
    return written


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


def session_outages(
    con: duckdb.DuckDBPyConnection, start_us: int, end_us: int, first_live_us: int | None
) -> list[tuple[int, int]]:
    """Intervals with no live connection, from session records, clipped to the day.

    A disconnect opens an outage only when no other connection is live (the make-before-break
    replacement keeps streaming); the next connect/subscribed closes it. An outage still open
    at the end of the records runs to the end of the day. When the day's first record is a
    connect and no live line came before it, the recorder was not running until then: the
    day starts in an outage.
    """
    rows = con.execute(
        "SELECT recv_us, session, conn FROM stage WHERE kind = 'session' "
        "ORDER BY recv_us, session, conn"
    ).fetchall()
    live: set[str] = set()
    seen: set[str] = set()
    outages, opened = _leading_outage(rows, start_us, end_us, first_live_us), None
    for recv_us, event, conn in rows:
        if event in ("connect", "subscribed"):
            live.add(conn)
            seen.add(conn)
            if opened is not None:
                outages.append((opened, recv_us))
                opened = None
        elif event in ("disconnect", "replaced", "collector_stop"):
            if conn not in seen:
                seen.add(conn)  # it was live before the first record we have
            live.discard(conn)
            if event == "collector_stop":
                live.clear()
            if not live and opened is None and event != "replaced":
                opened = recv_us
    if opened is not None:
        outages.append((opened, end_us))
    clipped = [(max(a, start_us), min(b, end_us)) for a, b in outages]
    return [(a, b) for a, b in clipped if b > a]


def _leading_outage(
    rows: list[tuple], start_us: int, end_us: int, first_live_us: int | None
) -> list[tuple[int, int]]:
    """[day start, first record) when the day's first session record is a collector start or
    a connect that no live line (``first_live_us``, the first one of the day) precedes: the
    recorder was not running before it."""
    first = next((r for r in rows if start_us <= r[0] < end_us), None)
    if first is None or first[1] not in ("collector_start", "connect", "subscribed"):
        return []
    return [(start_us, first[0])] if first_live_us is None or first_live_us > first[0] else []


def _unreadable(con: duckdb.DuckDBPyConnection, path: Path) -> list[bytes]:
    """Quarantine records of the lines of ``path`` that DuckDB reads no recv_ns from at all,
    with their exact text: the reader's own JSON transform decides, so every line counted
    as bad is listed once and no line it did read is."""
    with open_raw(path) as fh:
        lines = [(n, line.rstrip(b"\n")) for n, line in enumerate(fh, 1) if line.strip()]
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
    con: duckdb.DuckDBPyConnection, stats: TickStats, suspects: list[str], quarantine_dir: Path
) -> str | None:
    """Write the day's bad lines to ``{quarantine_dir}/{symbol}_{day}.jsonl`` (or remove it).
    ``suspects`` are the day's own files that may hold unreadable lines."""
    out = Path(quarantine_dir) / f"{stats.symbol}_{stats.day}.jsonl"
    if not stats.bad_lines:
        out.unlink(missing_ok=True)
        return None
    rows = con.execute(
        "SELECT data, recv_us FROM stage WHERE kind = 'bad' ORDER BY recv_us NULLS FIRST, data"
    ).fetchall()
    # valid JSON with a recv_ns, but a field would not parse
    records = [orjson.dumps({"reason": "invalid field", "recv_us": recv, "data": data})
               for data, recv in rows if recv is not None]  # fmt: skip
    if any(recv is None for _, recv in rows):  # rare: find the files holding unreadable lines
        unreadable = con.execute(
            f"SELECT DISTINCT filename FROM {ndjson_source('own')} WHERE recv_ns IS NULL "
            f"ORDER BY filename",
            {"own": suspects},
        ).fetchall()
        for (fn,) in unreadable:
            records += _unreadable(con, Path(fn))
    with atomic_path(out, durable=False) as tmp:
        tmp.write_bytes(b"\n".join(records) + b"\n")
    log.warning("quarantined %d bad lines of %s %s to %s", stats.bad_lines, stats.symbol,
                stats.day, out)  # fmt: skip
    return str(out)
