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

import gzip
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from crypto_lake.lib.fsutil import atomic_path
from crypto_lake.lib.logs import get_logger
from crypto_lake.lib.raw_catalog import day_bounds_us, ndjson_source
from crypto_lake.lib.symbols import validate_day, validate_symbol

log = get_logger("ticks")

PRICE_T = "DECIMAL(18,8)"
QTY_T = "DECIMAL(20,8)"
ROW_GROUP_SIZE = 262_144  # fixed, so the same rows always give the same bytes

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
            TRY_CAST(CASE WHEN kind0 = 'book' THEN {j("b")} ELSE coalesce({j("p")}, {j("price")})
                     END AS {PRICE_T}) AS px,
            TRY_CAST(CASE WHEN kind0 = 'book' THEN {j("B")} ELSE coalesce({j("q")}, {j("qty")})
                     END AS {QTY_T}) AS qt,
            TRY_CAST(CASE kind0 WHEN 'book' THEN {j("a")} END AS {PRICE_T}) AS ask_px,
            TRY_CAST(CASE kind0 WHEN 'book' THEN {j("A")} END AS {QTY_T}) AS ask_qt,
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


def _trades_sql(symbol: str, kind: str) -> str:
    return f"""
    SELECT '{symbol}' AS symbol, id AS trade_id,
        make_timestamptz(ts_us) AS ts_event, make_timestamptz(recv_us) AS ts_recv,
        px AS price, qt AS qty, px::DECIMAL(38,8) * qt AS quote_qty,
        ibm AS is_buyer_maker, repaired,
        first_id AS first_trade_id, last_id AS last_trade_id,
        last_id - first_id + 1 AS trade_count
    FROM (
        SELECT DISTINCT ON (id) * FROM stage WHERE kind = '{kind}'
        ORDER BY id, repaired, recv_us, ts_us, px, qt, ibm, first_id, last_id
    )
    ORDER BY ts_event, trade_id
    """


def _quotes_sql(symbol: str) -> str:
    return f"""
    SELECT '{symbol}' AS symbol, id AS update_id, make_timestamptz(recv_us) AS ts_recv,
        px AS bid, qt AS bid_qty, ask_px AS ask, ask_qt AS ask_qty
    FROM (
        SELECT DISTINCT ON (id) * FROM stage WHERE kind = 'book'
        ORDER BY id, recv_us, px, qt, ask_px, ask_qt
    )
    ORDER BY ts_recv, update_id
    """


def write_parquet(table: pa.Table, out: Path) -> None:
    """Atomic, deterministic zstd Parquet: fixed row groups, no wall-clock metadata."""
    with atomic_path(Path(out), durable=False) as tmp:
        pq.write_table(
            table,
            tmp,
            compression="zstd",
            row_group_size=ROW_GROUP_SIZE,
            use_dictionary=True,
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
) -> TickStats:
    """Parse ``raw_files`` into the trades and quotes Parquet files of (symbol, day).

    Re-running replaces both outputs (and the day's quarantine file) atomically.
    """
    symbol, day = validate_symbol(symbol), validate_day(day)
    start_us, end_us = day_bounds_us(day)
    stats = TickStats(symbol=symbol, day=day, raw_files=len(raw_files))
    own, other = _split_files(raw_files, day)
    con = con or connect()
    con.execute("DROP TABLE IF EXISTS stage")
    params = {k: v for k, v in (("own", own), ("other", other)) if v}
    con.execute(
        f"CREATE TEMP TABLE stage AS "
        f"{_stage_sql(symbol, start_us, end_us, bool(own), bool(other))}",
        params,
    )
    try:
        _fill_stats(con, stats)
        kind = "agg" if stats.trade_kind == "aggTrade" else "trade"
        trades = con.sql(_trades_sql(symbol, kind)).to_arrow_table()
        quotes = con.sql(_quotes_sql(symbol)).to_arrow_table()
        write_parquet(trades, trades_out)
        write_parquet(quotes, quotes_out)
        stats.trade_rows, stats.quote_rows = trades.num_rows, quotes.num_rows
        _trade_stats(con, stats, trades_out)
        stats.outages = session_outages(con, start_us, end_us)
        stats.quarantine_path = _quarantine(con, stats, own, quarantine_dir)
    finally:
        con.execute("DROP TABLE IF EXISTS stage")
    stats.duplicates_dropped = stats.trade_duplicates + stats.quote_duplicates
    log.info(
        "ticks %s %s: %d trades, %d quotes, %d duplicates, %d bad lines, %d id gaps",
        symbol, day, stats.trade_rows, stats.quote_rows, stats.duplicates_dropped,
        stats.bad_lines, len(stats.trade_id_gaps),
    )  # fmt: skip
    return stats


def _fill_stats(con: duckdb.DuckDBPyConnection, stats: TickStats) -> None:
    """Counts per kind; chooses the trade kind when a day mixes @trade and @aggTrade."""
    counts = dict(con.execute("SELECT kind, count(*) FROM stage GROUP BY kind").fetchall())
    stats.bad_lines = counts.get("bad", 0)
    stats.invalidated_agg_trades = counts.get("invalid", 0)
    n_trade, n_agg = counts.get("trade", 0), counts.get("agg", 0)
    # Trade ids and aggregate ids are different id spaces; mixing them would double count.
    # A day normally has one kind; if the stream setting changed mid-day, the larger wins.
    if n_trade or n_agg:
        stats.trade_kind = "aggTrade" if n_agg > n_trade else "trade"
    minority = n_trade if stats.trade_kind == "aggTrade" else n_agg
    stats.ignored_lines = counts.get("other", 0) + stats.invalidated_agg_trades + minority
    stats.raw_lines = sum(counts.values())
    kind = "agg" if stats.trade_kind == "aggTrade" else "trade"
    stats.trade_duplicates, stats.quote_duplicates = con.execute(
        f"""SELECT count(*) FILTER (WHERE kind = '{kind}')
                   - count(DISTINCT id) FILTER (WHERE kind = '{kind}'),
                   count(*) FILTER (WHERE kind = 'book')
                   - count(DISTINCT id) FILTER (WHERE kind = 'book')
            FROM stage"""
    ).fetchall()[0]


def _trade_stats(con: duckdb.DuckDBPyConnection, stats: TickStats, trades_path: Path) -> None:
    """Id range, gaps in the underlying trade ids, repaired count, time ranges."""
    row = con.execute(
        """SELECT min(first_trade_id), max(last_trade_id), count(*) FILTER (WHERE repaired),
                  epoch_us(min(ts_event)), epoch_us(max(ts_event)), epoch_us(max(ts_recv))
           FROM read_parquet(?)""",
        [str(trades_path)],
    ).fetchall()[0]
    (stats.first_trade_id, stats.last_trade_id, stats.repaired_trades) = row[:3]
    stats.min_ts_event_us, stats.max_ts_event_us, stats.max_ts_recv_us = row[3:]
    q_recv = con.execute("SELECT max(recv_us) FROM stage WHERE kind = 'book'").fetchall()[0][0]
    if q_recv is not None:
        stats.max_ts_recv_us = max(stats.max_ts_recv_us or 0, q_recv)
    stats.trade_id_gaps = trade_id_gaps(con, trades_path)
    stats.missing_trade_ids = sum(b - a + 1 for a, b in stats.trade_id_gaps)


def trade_id_gaps(
    con: duckdb.DuckDBPyConnection, trades_path: Path, limit: int = 10_000
) -> list[tuple[int, int]]:
    """Missing underlying trade ids as (first_missing, last_missing), in id order."""
    rows = con.execute(
        """SELECT prev_last + 1, first_trade_id - 1 FROM (
               SELECT first_trade_id,
                      lag(last_trade_id) OVER (ORDER BY first_trade_id) AS prev_last
               FROM read_parquet(?))
           WHERE first_trade_id > prev_last + 1
           ORDER BY 1 LIMIT ?""",
        [str(trades_path), limit],
    ).fetchall()
    return [(int(a), int(b)) for a, b in rows]


def session_outages(
    con: duckdb.DuckDBPyConnection, start_us: int, end_us: int
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
    outages, opened = _leading_outage(con, rows, start_us, end_us), None
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
    con: duckdb.DuckDBPyConnection, rows: list[tuple], start_us: int, end_us: int
) -> list[tuple[int, int]]:
    """[day start, first record) when the day's first session record is a collector start or
    a connect that no live line precedes: the recorder was not running before it."""
    first = next((r for r in rows if start_us <= r[0] < end_us), None)
    if first is None or first[1] not in ("collector_start", "connect", "subscribed"):
        return []
    (first_live,) = con.execute(
        "SELECT min(recv_us) FROM stage WHERE kind IN ('trade', 'agg', 'book') "
        "AND NOT repaired AND recv_us >= ?",
        [start_us],
    ).fetchone()
    return [(start_us, first[0])] if first_live is None or first_live > first[0] else []


def _open_raw(path: Path):
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")
    if path.name.endswith(".zst"):
        import zstandard

        return zstandard.open(path, "rb")
    return open(path, "rb")


def _unreadable_reason(line: bytes) -> str | None:
    """Why DuckDB could not read ``line`` at all (not JSON / no integer recv_ns), else None."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return f"not JSON: {exc}"
    if not isinstance(obj, dict) or not isinstance(obj.get("recv_ns"), int):
        return "raw line must be an object with an integer recv_ns"
    return None


def _quarantine(
    con: duckdb.DuckDBPyConnection, stats: TickStats, own: list[str], quarantine_dir: Path
) -> str | None:
    """Write the day's bad lines to ``{quarantine_dir}/{symbol}_{day}.jsonl`` (or remove it)."""
    out = Path(quarantine_dir) / f"{stats.symbol}_{stats.day}.jsonl"
    if not stats.bad_lines:
        out.unlink(missing_ok=True)
        return None
    records: list[bytes] = []
    rows = con.execute(
        "SELECT data, recv_us FROM stage WHERE kind = 'bad' ORDER BY recv_us NULLS FIRST, data"
    ).fetchall()
    for data, recv in rows:
        if recv is not None:  # valid JSON, but a field would not parse
            rec = {"reason": "invalid field", "recv_us": recv, "data": data}
            records.append(orjson.dumps(rec))
    unreadable: list[str] = []
    if any(recv is None for _, recv in rows):  # rare: find the files holding unreadable lines
        unreadable = sorted(
            str(fn)
            for (fn,) in con.execute(
                f"SELECT DISTINCT filename FROM {ndjson_source('own')} WHERE recv_ns IS NULL",
                {"own": own},
            ).fetchall()
        )
    for fn in unreadable:  # malformed JSON: copy the exact text from the file
        with _open_raw(Path(fn)) as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                reason = _unreadable_reason(line)
                if reason is not None:
                    text = line.decode("utf-8", "replace").rstrip("\n")
                    rec = {"file": fn, "line_no": n, "reason": reason, "line": text}
                    records.append(orjson.dumps(rec))
    with atomic_path(out, durable=False) as tmp:
        tmp.write_bytes(b"\n".join(records) + b"\n")
    log.warning("quarantined %d bad lines of %s %s to %s", stats.bad_lines, stats.symbol,
                stats.day, out)  # fmt: skip
    return str(out)
