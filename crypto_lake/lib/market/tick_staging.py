"""The general tick path: raw lines typed by DuckDB into one narrow ``stage`` table.

Every line the compiled reader (``tick_reader``) leaves aside, or every line when it is not
used, is read by DuckDB's JSON reader and typed into the temporary table ``stage`` of the
build's connection: one row per line with its kind (trade, agg, book, session, bad, invalid,
other: other streams and symbols, order book depth events and snapshots), receive time, ids,
trade time, prices and quantities as integers of 1e-8, and the text of bad lines. Trades,
quotes, session records (``outages``) and bad lines (``quarantine``) are then cut from it.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np

from crypto_lake.lib.market import columns
from crypto_lake.lib.market.columns import PRICE_T, QTY_T
from crypto_lake.lib.raw import binance
from crypto_lake.lib.raw.catalog import ndjson_source

_TRADES = (binance.TRADE, binance.HISTORICAL_TRADES)  # kind 'trade': live, then repaired
_AGGS = (binance.AGG_TRADE, binance.AGG_TRADES)  # kind 'agg'
_BOOK = (binance.BOOK_TICKER,)
# a REST depth snapshot is filed under the symbol's depth stream ("btcusdt@depth@100ms"):
# order book data, not a trade ('other', like the diff events themselves)
(_DEPTH_SUFFIX,) = {name.split("@")[0] for name in binance.DEPTH_STREAM_SUFFIX.values()}


def _stage_sql(symbol: str, start_us: int, end_us: int, own: bool, other: bool) -> str:
    """SELECT that types every line of $own (is_own) and $other files into one narrow row.

    ``data`` arrives minified from the reader, so "is an object" is a prefix test; json_type
    would parse every payload a second time. Every payload key (from the Binance map) is
    pulled in one JSON parse, as the list ``j``; a column whose key differs between a stream
    and its REST repair takes the first one present.
    """
    keys: list[str] = []

    def j(column: str, messages: tuple[binance.Message, ...]) -> str:
        """SQL: the value of ``column`` in ``messages``, as text."""
        refs = []
        for key in binance.keys_of(column, messages):
            if key not in keys:
                keys.append(key)
            refs.append(f"j[{keys.index(key) + 1}]")
        return refs[0] if len(refs) == 1 else f"coalesce({', '.join(refs)})"

    trades = _TRADES + _AGGS
    lower = symbol.lower()
    px = f"CASE WHEN kind0 = 'book' THEN {j('bid', _BOOK)} ELSE {j('price', trades)} END"
    qt = f"CASE WHEN kind0 = 'book' THEN {j('bid_qty', _BOOK)} ELSE {j('qty', trades)} END"
    typed = f"""
            TRY_CAST(CASE kind0 WHEN 'trade' THEN {j("trade_id", _TRADES)}
                                WHEN 'agg' THEN {j("trade_id", _AGGS)}
                                WHEN 'book' THEN {j("update_id", _BOOK)} END
                     AS BIGINT) AS id,
            TRY_CAST(CASE kind0 WHEN 'agg' THEN {j("first_trade_id", _AGGS)} END AS BIGINT)
                AS f_id,
            TRY_CAST(CASE kind0 WHEN 'agg' THEN {j("last_trade_id", _AGGS)} END AS BIGINT)
                AS l_id,
            TRY_CAST({j("ts_event", trades)} AS BIGINT) * mult AS ts_us,
            {_u(px, PRICE_T)} AS px,
            {_u(qt, QTY_T)} AS qt,
            {_u(f"CASE kind0 WHEN 'book' THEN {j('ask', _BOOK)} END", PRICE_T)} AS ask_px,
            {_u(f"CASE kind0 WHEN 'book' THEN {j('ask_qty', _BOOK)} END", QTY_T)} AS ask_qt,
            TRY_CAST({j("is_buyer_maker", trades)} AS BOOLEAN) AS ibm"""
    return f"""
    WITH src AS (
        {_src_sql(own, other)}
    ), x AS (
        SELECT is_own, recv_ns, conn, session, stream, data,
            split_part(stream, '@', 2) AS suffix,
            json_extract_string(data, {[f"$.{k}" for k in keys]}) AS j,
            CASE WHEN coalesce(unit, 'ms') = 'us' THEN 1 ELSE 1000 END AS mult,
            CASE
                WHEN recv_ns IS NULL THEN 'bad'
                WHEN session IS NOT NULL THEN 'session'
                WHEN stream IS NULL OR NOT starts_with(data::VARCHAR, '{{') THEN 'bad'
                WHEN split_part(stream, '@', 1) <> '{lower}' THEN 'other'
                WHEN rest = '{binance.HISTORICAL_TRADES.name}' THEN 'trade'
                WHEN rest = '{binance.AGG_TRADES.name}' THEN 'agg'
                WHEN rest = '{binance.DEPTH.name}' AND suffix = '{_DEPTH_SUFFIX}' THEN 'other'
                WHEN rest IS NOT NULL THEN 'bad'
                WHEN suffix = '{binance.TRADE.name}' THEN 'trade'
                WHEN suffix = '{binance.AGG_TRADE.name}' THEN 'agg'
                WHEN suffix = '{binance.BOOK_TICKER.name}' THEN 'book'
                ELSE 'other'
            END AS kind0
        FROM src
    ), y AS (
        SELECT *,{typed}
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


def spill_lines(path: Path, lines: list[bytes]) -> list[str]:
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


def create_stage(
    con: duckdb.DuckDBPyConnection, symbol: str, start_us: int, end_us: int, own: list[str],
    other: list[str],
) -> None:  # fmt: skip
    """(Re)create the temporary table ``stage`` from the ``own`` files (the day's folder: their
    bad lines are kept) and the ``other`` files (neighbour days: only their day's rows)."""
    con.execute("DROP TABLE IF EXISTS stage")
    params = {k: v for k, v in (("own", own), ("other", other)) if v}
    select = _stage_sql(symbol, start_us, end_us, bool(own), bool(other))
    con.execute(f"CREATE TEMP TABLE stage AS {select}", params)


def drop_stage(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("DROP TABLE IF EXISTS stage")


def append_stage_rows(
    con: duckdb.DuckDBPyConnection, trades: columns.Rows, quotes: columns.Rows
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """The stage's trade and quote rows appended to ``trades`` and ``quotes`` (after the
    compiled reader's rows), as the two whole matrices, and the stage's lines per kind."""

    def append(rows: columns.Rows, sql: str) -> np.ndarray:
        cols = con.execute(sql).fetchnumpy()
        n = len(next(iter(cols.values())))
        if n:
            rows.append(np.stack([np.asarray(c, dtype=np.int64) for c in cols.values()]))
        return rows.view

    trade_rows = append(trades, _STAGE_TRADES)
    quote_rows = append(quotes, _STAGE_QUOTES)
    counts = dict(con.execute("SELECT kind, count(*) FROM stage GROUP BY kind").fetchall())
    return trade_rows, quote_rows, counts
