"""Tick tables -> 1-second bars on a continuous grid, and their 1-minute rollup.

Bars follow Binance's own klines: a trade belongs to the second of its exchange trade time;
open/close are the first/last trade by trade id; an empty second repeats the previous close
with zero volume and count. Quotes are as-of: the bar carries the newest quote (highest
update id) received at or before the end of its second, carried forward; bid/ask are NULL
before the day's first quote. The flags say where a second's trades came from
(``is_live``, ``is_repaired``, ``is_archive``: ``trades.source``) and whether the recorder
was recording (``is_outage``: a second of an outage filled from Binance's public daily file
is both ``is_outage`` and ``is_archive``).

All money arithmetic is exact (DECIMAL), every aggregate is order-independent or has a
unique tie-break, and rows are written in a fixed order with fixed writer settings, so the
same ticks always give byte-identical Parquet, whatever the thread count.

This module is the definition of a 1-second bar: ``_CORE_SQL`` (the per-second core) and
``_PROJECT_SQL`` (the output columns). ``fastbars`` computes the same core in one compiled
pass for production; ``crypto_lake_tests/lib/test_bars_fuzz.py`` fuzzes raw input and checks
that both write the same bytes. A change to the bars starts here, then fastbars follows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa

from crypto_lake.lib.core.duck import connect
from crypto_lake.lib.core.logs import get_logger
from crypto_lake.lib.core.parquet_out import write_dataset
from crypto_lake.lib.core.schema import BARS_1M, BARS_1S
from crypto_lake.lib.core.symbols import validate_day, validate_symbol
from crypto_lake.lib.market import fastbars
from crypto_lake.lib.market.columns import PRICE_T
from crypto_lake.lib.raw.catalog import day_bounds_us
from crypto_lake.lib.raw.heartbeat import Recording

log = get_logger("bars")

US = 1_000_000


@dataclass
class BarStats:
    """Summary of one bars build, for Dagster metadata."""

    rows: int = 0
    first_window_us: int | None = None
    last_window_us: int | None = None
    trade_count: int = 0
    empty_seconds: int = 0
    live_seconds: int = 0
    repaired_seconds: int = 0
    archive_seconds: int = 0  # rows with trades from Binance's public daily file
    outage_seconds: int = 0
    seconds_without_quote: int = 0
    grid_complete: bool = False  # the grid covers the whole day


def _grid_end_us(
    con: duckdb.DuckDBPyConnection, trades: str, quotes: str, day: str,
    recording: Recording | None = None,
) -> int:  # fmt: skip
    """Exclusive grid end: the day's end once it is over, else the last complete second
    seen; or later, up to the last complete second the collector vouches it was recording
    (``recording``), when that covers the last tick (its connection was live since then)
    and the ticks already hold the last message it had received: the seconds in between
    were recorded and quiet, not missing."""
    start_us, end_us = day_bounds_us(day)
    now_us = time.time_ns() // 1000
    if end_us <= now_us:
        return end_us
    seen = con.execute(
        """SELECT greatest(
               (SELECT epoch_us(max(ts_recv)) FROM read_parquet($t)),
               (SELECT epoch_us(max(ts_recv)) FROM read_parquet($q)))""",
        {"t": trades, "q": quotes},
    ).fetchall()[0][0]
    grid = start_us if seen is None else seen // US * US
    held = start_us if seen is None else seen  # the ticks hold everything received to here
    if (
        recording is not None
        and recording.since_us <= held
        and (recording.last_message_us is None or recording.last_message_us <= held)
    ):
        grid = max(grid, min(now_us, recording.until_us) // US * US)
    return min(end_us, max(start_us, grid))


# The bars in two steps: the core (every value an integer or a decimal) and the projection
# to the output columns. crypto_lake.lib.market.fastbars computes the same core without SQL; both
# paths share the projection, so the doubles come from the same expressions.
_CORE_SQL = f"""
WITH t AS (
    SELECT epoch_us(ts_event) // {US} AS sec, * FROM read_parquet($trades)
), agg AS (
    SELECT sec,
        arg_min(price, trade_id) AS open, max(price) AS high, min(price) AS low,
        arg_max(price, trade_id) AS close,
        sum(qty) AS volume_base, sum(quote_qty) AS volume_quote,
        sum(trade_count) AS trade_count,
        sum(qty) FILTER (WHERE NOT is_buyer_maker) AS taker_buy_base,
        min(first_trade_id) AS first_trade_id, max(last_trade_id) AS last_trade_id,
        bool_or(source = 'live') AS has_live, bool_or(source = 'repair') AS has_repaired,
        bool_or(source = 'archive') AS has_archive
    FROM t GROUP BY sec
), q AS (
    SELECT epoch_us(ts_recv) // {US} AS sec,
        arg_max({{'u': update_id, 'bid': bid, 'bid_qty': bid_qty, 'ask': ask,
                  'ask_qty': ask_qty}}, update_id) AS qs
    FROM read_parquet($quotes) GROUP BY sec
), o AS (
    SELECT unnest($outage_start) AS s, unnest($outage_end) AS e
), g AS (
    SELECT range AS sec FROM range($start_sec, $end_sec)
), j AS (
    SELECT g.sec, agg.* EXCLUDE (sec),
        last_value(agg.close IGNORE NULLS) OVER w AS carried_close,
        arg_max(q.qs, q.qs.u) OVER w AS quote,
        EXISTS (SELECT 1 FROM o WHERE o.s < (g.sec + 1) * {US} AND o.e > g.sec * {US})
            AS is_outage
    FROM g LEFT JOIN agg USING (sec) LEFT JOIN q USING (sec)
    WINDOW w AS (ORDER BY g.sec ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
)
SELECT sec, open, high, low, close, volume_base, volume_quote, trade_count, taker_buy_base,
    first_trade_id, last_trade_id, has_live, has_repaired, has_archive,
    coalesce(carried_close, $prev_close::{PRICE_T}) AS c,
    quote.bid AS bid, quote.ask AS ask, quote.bid_qty AS bid_qty, quote.ask_qty AS ask_qty,
    is_outage
FROM j
"""
_T = {c.name: c.duckdb for c in BARS_1S.columns}  # the output types (lib/core/schema.py)
_PROJECT_SQL = f"""
SELECT $symbol AS symbol,
    make_timestamptz(sec * {US}) AS window_start,
    coalesce(open, c) AS open, coalesce(high, c) AS high,
    coalesce(low, c) AS low, coalesce(close, c) AS close,
    coalesce(volume_base, 0)::{_T["volume_base"]} AS volume_base,
    coalesce(volume_quote, 0)::{_T["volume_quote"]} AS volume_quote,
    coalesce(trade_count, 0)::BIGINT AS trade_count,
    CASE WHEN volume_base > 0 THEN (volume_quote::DOUBLE / volume_base::DOUBLE) END AS vwap,
    coalesce(taker_buy_base, 0)::{_T["taker_buy_base"]} AS taker_buy_base,
    first_trade_id, last_trade_id,
    bid, ask, bid_qty, ask_qty,
    (bid::DOUBLE + ask::DOUBLE) / 2 AS mid,
    (ask - bid)::{_T["spread"]} AS spread,
    (ask - bid)::DOUBLE / ((bid::DOUBLE + ask::DOUBLE) / 2) * 10000 AS spread_bps,
    coalesce(has_live, false) AS is_live,
    coalesce(has_repaired, false) AS is_repaired,
    coalesce(has_archive, false) AS is_archive,
    coalesce(trade_count, 0) = 0 AS is_empty,
    is_outage
FROM core
ORDER BY sec
"""
_BARS_1S_SQL = f"WITH core AS ({_CORE_SQL}) {_PROJECT_SQL}"


def build_bars_1s(
    trades_path: Path,
    quotes_path: Path,
    symbol: str,
    day: str,
    out: Path,
    outages: list[tuple[int, int]] = (),
    *,
    previous_close: Decimal | str | None = None,
    end_us: int | None = None,
    recording: Recording | None = None,
    con: duckdb.DuckDBPyConnection | None = None,
    fast: bool = True,
    seconds: Path | None = None,
) -> BarStats:
    """Write the 1 s bars of (symbol, day) to ``out`` and return a summary.

    ``outages`` are [start_us, end_us) intervals not recorded, of either kind
    (TickStats.outages): their seconds get ``is_outage``. ``previous_close`` (e.g. the
    previous day's last trade price) fills the seconds before the day's first trade, which
    are otherwise NULL; ``end_us`` overrides the grid end (default: the day's end once it is
    over, else the last complete second received, or later when ``recording``, what the
    collector's heartbeat vouches for the symbol (``heartbeat.recording_until``), says a
    quiet symbol was still being recorded). ``fast`` computes the integer core in one
    compiled pass (``fastbars``); False runs it in SQL, with the same result. ``seconds``
    is the per-second summary build_ticks wrote with these very tick files
    (``build_ticks(seconds_out=...)``): used when it matches them, so the tick tables need
    not be read again.
    """
    symbol, day = validate_symbol(symbol), validate_day(day)
    con = con or connect()
    trades, quotes = str(trades_path), str(quotes_path)
    start_us, day_end_us = day_bounds_us(day)
    grid_end = end_us if end_us is not None else _grid_end_us(con, trades, quotes, day,
                                                               recording)  # fmt: skip
    grid_end = max(start_us, min(grid_end, day_end_us))
    if fast:
        summary = None if seconds is None else fastbars.load_seconds(seconds, trades_path,
                                                                      quotes_path)  # fmt: skip
        if summary is None:  # none saved for these tick files
            summary = fastbars.seconds_from_parquet(trades_path, quotes_path, start_us // US)
        core = fastbars.core_table(summary, start_us // US, grid_end // US, outages,
                                   previous_close)  # fmt: skip
        con.register("core", core)
        try:
            table = con.sql(_PROJECT_SQL, params={"symbol": symbol}).to_arrow_table()
        finally:
            con.unregister("core")
    else:
        params = {
            "trades": trades,
            "quotes": quotes,
            "symbol": symbol,
            "start_sec": start_us // US,
            "end_sec": grid_end // US,
            "outage_start": [int(a) for a, _ in outages],
            "outage_end": [int(b) for _, b in outages],
            "prev_close": None if previous_close is None else str(previous_close),
        }
        table = con.sql(_BARS_1S_SQL, params=params).to_arrow_table()
    write_dataset(table, out, "bars_1s")
    stats = bar_stats(con, table)
    stats.grid_complete = grid_end == day_end_us
    log.info("bars_1s %s %s: %d rows, %d empty", symbol, day, stats.rows, stats.empty_seconds)
    return stats


def bar_stats(con: duckdb.DuckDBPyConnection, table: pa.Table) -> BarStats:
    """Counts over a bars table (1 s or 1 m) held in Arrow."""
    con.register("bars_view", table)
    try:
        row = con.execute(
            """SELECT count(*), epoch_us(min(window_start)), epoch_us(max(window_start)),
                      coalesce(sum(trade_count), 0),
                      count(*) FILTER (WHERE is_empty), count(*) FILTER (WHERE is_live),
                      count(*) FILTER (WHERE is_repaired), count(*) FILTER (WHERE is_archive),
                      count(*) FILTER (WHERE is_outage),
                      count(*) FILTER (WHERE bid IS NULL)
               FROM bars_view"""
        ).fetchall()[0]
    finally:
        con.unregister("bars_view")
    return BarStats(*[int(v) if v is not None else None for v in row])


def last_trade_price(trades_path: Path) -> Decimal | None:
    """The last trade price of a trades file (to carry into the next day's first seconds)."""
    if not Path(trades_path).exists():
        return None
    row = (
        connect()
        .execute("SELECT arg_max(price, trade_id) FROM read_parquet(?)", [str(trades_path)])
        .fetchall()[0]
    )
    return row[0]


# The 1-minute rollup of read_parquet($bars); also used by rule R7.
_T1M = {c.name: c.duckdb for c in BARS_1M.columns}
BARS_1M_SELECT = f"""
SELECT any_value(symbol) AS symbol,
    time_bucket(INTERVAL 1 minute, window_start) AS window_start,
    coalesce(arg_min(open, window_start) FILTER (WHERE NOT is_empty),
             arg_min(open, window_start)) AS open,
    coalesce(max(high) FILTER (WHERE NOT is_empty), arg_min(open, window_start)) AS high,
    coalesce(min(low) FILTER (WHERE NOT is_empty), arg_min(open, window_start)) AS low,
    arg_max(close, window_start) AS close,
    sum(volume_base)::{_T1M["volume_base"]} AS volume_base,
    sum(volume_quote)::{_T1M["volume_quote"]} AS volume_quote,
    sum(trade_count)::BIGINT AS trade_count,
    CASE WHEN sum(volume_base) > 0
         THEN sum(volume_quote)::DOUBLE / sum(volume_base)::DOUBLE END AS vwap,
    sum(taker_buy_base)::{_T1M["taker_buy_base"]} AS taker_buy_base,
    min(first_trade_id) AS first_trade_id, max(last_trade_id) AS last_trade_id,
    arg_max(bid, window_start) AS bid, arg_max(ask, window_start) AS ask,
    arg_max(bid_qty, window_start) AS bid_qty, arg_max(ask_qty, window_start) AS ask_qty,
    arg_max(mid, window_start) AS mid, arg_max(spread, window_start) AS spread,
    arg_max(spread_bps, window_start) AS spread_bps,
    bool_or(is_live) AS is_live, bool_or(is_repaired) AS is_repaired,
    bool_or(is_archive) AS is_archive, bool_and(is_empty) AS is_empty,
    bool_or(is_outage) AS is_outage,
    count(*)::INTEGER AS seconds,
    count(*) FILTER (WHERE NOT is_empty)::INTEGER AS trade_seconds,
    count(*) FILTER (WHERE is_outage)::INTEGER AS outage_seconds
FROM read_parquet($bars)
GROUP BY time_bucket(INTERVAL 1 minute, window_start)
"""
_BARS_1M_SQL = BARS_1M_SELECT + "ORDER BY window_start"


def build_bars_1m(
    bars_1s_path: Path, out: Path, *, con: duckdb.DuckDBPyConnection | None = None
) -> BarStats:
    """Roll 1 s bars up to 1 minute, the way Binance builds 1 m klines from the same trades.

    O/H/L/C come from the seconds that had trades (an all-empty minute carries the previous
    close); the quote is the one in force at the end of the minute. ``seconds`` says how many
    1 s rows the minute has (fewer than 60 only in today's last minute).
    """
    con = con or connect()
    table = con.sql(_BARS_1M_SQL, params={"bars": str(bars_1s_path)}).to_arrow_table()
    write_dataset(table, out, "bars_1m")
    stats = bar_stats(con, table)
    stats.grid_complete = stats.rows == 1440
    return stats
