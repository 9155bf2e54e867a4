"""Coverage: per symbol and UTC minute, what the lake observed, repaired, filled, lost or has not
yet seen.

Built from one ``bars_1s`` partition, its ``quotes`` table and the partition's outage
intervals ``(start_us, end_us, kind)``: kind ``"outage"`` = the collector ran but had no live
connection, kind ``"unrecorded"`` = the collector was not running or nothing was recorded.
An interval touches every second it overlaps, even partly (the rule ``bars_1s`` flags
``is_outage`` with).

Every second of a minute is in exactly one state, the first of these that applies, so
``seconds_live + seconds_repaired + seconds_archive + seconds_outage + seconds_unrecorded +
seconds_pending`` is 60 in every row:

- ``pending``: at or after the bars' grid end (last 1 s bar + 1 s): not recorded *yet*
  (today's open partition, or bars built before the day closed). Not quiet, not lost.
- ``unrecorded``: before the grid end but missing from the bars, or touched by an interval of
  kind ``unrecorded`` (and not archive or repaired).
- ``archive``: the second has trades from Binance's public daily file (``is_archive``): the
  recorder missed them (an outage, or an id gap it could not repair) and the public file
  filled them in; its quotes are not there. On a day the public file filled (any
  ``is_archive`` second), every second the recorder lost is ``archive`` too: the file holds
  every trade of the day, so a lost second without archive trades is known to have had none.
- ``repaired``: the second has trades repaired from REST (``is_repaired``): its trades are
  whole again, whatever the connection was doing; its quotes are not.
- ``outage``: ``is_outage`` in the bars or touched by an interval of kind ``outage``.
- ``live``: observed live: the recorder was connected and listening, with or without trades
  (a quiet second counts: it is a true zero, not a hole).

``trade_count`` is the minute's trades (live, repaired and archive), ``quote_count`` the
best bid/ask updates received in it (before the grid end), and ``quotes_recorded`` is true
when at least one quote was received in the minute, or bid and ask were known in a second of
the minute while the recorder was connected (a bar row, not pending, not in any outage or unrecorded
interval): then the best bid/ask of that second is the one in force, not a guess.

Rows: the 1,440 minutes of a closed day; for today, the minutes up to the bars' grid end
(the last one partly ``pending``). Percentages (:class:`CoverageStats`, view
``coverage_daily``) are of the seconds before the grid end, so a partial day is judged on
what has elapsed, with ``seconds_pending`` saying how much is still to come.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from crypto_lake.lib.core.charts import palette_png
from crypto_lake.lib.core.duck import connect
from crypto_lake.lib.core.logs import get_logger
from crypto_lake.lib.core.parquet_out import write_dataset
from crypto_lake.lib.core.symbols import validate_day, validate_symbol
from crypto_lake.lib.raw.catalog import day_bounds_us

log = get_logger("coverage")

US = 1_000_000
MINUTE_US = 60 * US
KINDS = ("outage", "unrecorded")
STATES = ("live", "repaired", "archive", "outage", "unrecorded")  # kept/lost, chart order
MAX_STRETCHES = 20

_MINUTES_SQL = f"""
WITH b AS (
    SELECT epoch_us(window_start) // {US} AS sec, trade_count, is_repaired, {{is_archive}},
        is_outage, bid IS NOT NULL AND ask IS NOT NULL AS quoted
    FROM read_parquet($bars)
    WHERE epoch_us(window_start) >= $start_us AND epoch_us(window_start) < $grid_end_us
), day AS (SELECT coalesce(bool_or(is_archive), false) AS imported FROM b
), iv AS (
    SELECT unnest(range(greatest(s, $start_us) // {US},
                        (least(e, $grid_end_us) - 1) // {US} + 1)) AS sec, k
    FROM (SELECT unnest($iv_start) AS s, unnest($iv_end) AS e, unnest($iv_kind) AS k)
    WHERE least(e, $grid_end_us) > greatest(s, $start_us)
), ivs AS (
    SELECT sec, bool_or(k = 'unrecorded') AS unrecorded, bool_or(k = 'outage') AS outage
    FROM iv GROUP BY sec
), s AS (
    SELECT g.range // 60 AS m, b.trade_count,
        CASE WHEN g.range >= $grid_end_us // {US} THEN 'pending'
             WHEN b.sec IS NULL THEN 'unrecorded'
             WHEN b.is_archive THEN 'archive'
             WHEN b.is_repaired THEN 'repaired'
             WHEN (coalesce(ivs.unrecorded, false) OR b.is_outage
                   OR coalesce(ivs.outage, false)) AND (SELECT imported FROM day) THEN 'archive'
             WHEN coalesce(ivs.unrecorded, false) THEN 'unrecorded'
             WHEN b.is_outage OR coalesce(ivs.outage, false) THEN 'outage'
             ELSE 'live' END AS state,
        coalesce(b.quoted AND NOT b.is_outage AND ivs.sec IS NULL, false) AS quoted_connected
    FROM range($start_us // {US}, $rows_end_us // {US}) g
    LEFT JOIN b ON b.sec = g.range LEFT JOIN ivs ON ivs.sec = g.range
), q AS (
    SELECT epoch_us(ts_recv) // {MINUTE_US} AS m, count(*) AS n
    FROM read_parquet($quotes)
    WHERE epoch_us(ts_recv) >= $start_us AND epoch_us(ts_recv) < $grid_end_us
    GROUP BY m
)
SELECT $symbol AS symbol, $day::DATE AS date, make_timestamptz(s.m * {MINUTE_US}) AS minute,
    count(*) FILTER (WHERE state = 'live')::INTEGER AS seconds_live,
    count(*) FILTER (WHERE state = 'repaired')::INTEGER AS seconds_repaired,
    count(*) FILTER (WHERE state = 'archive')::INTEGER AS seconds_archive,
    count(*) FILTER (WHERE state = 'outage')::INTEGER AS seconds_outage,
    count(*) FILTER (WHERE state = 'unrecorded')::INTEGER AS seconds_unrecorded,
    count(*) FILTER (WHERE state = 'pending')::INTEGER AS seconds_pending,
    coalesce(sum(trade_count), 0)::BIGINT AS trade_count,
    coalesce(any_value(q.n), 0)::BIGINT AS quote_count,
    coalesce(any_value(q.n), 0) > 0 OR bool_or(quoted_connected) AS quotes_recorded
FROM s LEFT JOIN q ON q.m = s.m
GROUP BY s.m ORDER BY s.m
"""
# bars_1s files of schema v1 have no is_archive column (and no archive trades)
_IS_ARCHIVE, _NO_ARCHIVE = "is_archive", "false AS is_archive"

# Per symbol and date over a coverage relation ({source}): sums and percentages of the seconds
# before the grid end. Used for the Dagster metadata and as the view ``coverage_daily``.
DAILY_SQL = """
SELECT symbol, date, count(*)::BIGINT AS minutes,
    sum(seconds_live)::BIGINT AS seconds_live,
    sum(seconds_repaired)::BIGINT AS seconds_repaired,
    coalesce(sum(seconds_archive), 0)::BIGINT AS seconds_archive,
    sum(seconds_outage)::BIGINT AS seconds_outage,
    sum(seconds_unrecorded)::BIGINT AS seconds_unrecorded,
    sum(seconds_pending)::BIGINT AS seconds_pending,
    sum(trade_count)::BIGINT AS trade_count, sum(quote_count)::BIGINT AS quote_count,
    count(*) FILTER (WHERE quotes_recorded)::BIGINT AS minutes_with_quotes,
    round(100.0 * sum(seconds_live) / nullif(sum(60 - seconds_pending), 0), 3) AS pct_live,
    round(100.0 * sum(seconds_repaired) / nullif(sum(60 - seconds_pending), 0), 3)
        AS pct_repaired,
    round(100.0 * coalesce(sum(seconds_archive), 0) / nullif(sum(60 - seconds_pending), 0), 3)
        AS pct_archive,
    round(100.0 * sum(seconds_outage) / nullif(sum(60 - seconds_pending), 0), 3) AS pct_outage,
    round(100.0 * sum(seconds_unrecorded) / nullif(sum(60 - seconds_pending), 0), 3)
        AS pct_unrecorded,
    round(100.0 * count(*) FILTER (WHERE quotes_recorded)
          / nullif(count(*) FILTER (WHERE seconds_pending < 60), 0), 3)
        AS pct_minutes_with_quotes,
    -- every second of the whole day kept (live, repaired or from the public daily file): the
    -- day's trades can be trusted as they are
    count(*) = 1440 AND sum(seconds_outage + seconds_unrecorded + seconds_pending) = 0
        AS complete
FROM {source}
GROUP BY symbol, date
"""
_HOURLY_SQL = """
SELECT hour(minute) AS hour, sum(seconds_live)::BIGINT, sum(seconds_repaired)::BIGINT,
    sum(seconds_archive)::BIGINT, sum(seconds_outage)::BIGINT, sum(seconds_unrecorded)::BIGINT,
    sum(seconds_pending)::BIGINT
FROM cov GROUP BY 1 ORDER BY 1
"""
# Runs of consecutive minutes that lost seconds (outage or unrecorded).
_STRETCHES_SQL = f"""
SELECT epoch_us(min(minute)), epoch_us(max(minute)) + {MINUTE_US},
    sum(seconds_outage)::BIGINT, sum(seconds_unrecorded)::BIGINT
FROM (SELECT *, epoch_us(minute) // {MINUTE_US} - row_number() OVER (ORDER BY minute) AS run
      FROM cov WHERE seconds_outage + seconds_unrecorded > 0)
GROUP BY run ORDER BY 1
"""


@dataclass
class LostStretch:
    """Consecutive minutes [start_us, end_us) with outage or unrecorded seconds."""

    start_us: int
    end_us: int
    seconds_outage: int
    seconds_unrecorded: int


@dataclass
class CoverageStats:
    """A partition's coverage summed over the day (the ``coverage_daily`` row), for metadata."""

    symbol: str
    day: str
    minutes: int = 0
    seconds_live: int = 0
    seconds_repaired: int = 0
    seconds_archive: int = 0
    seconds_outage: int = 0
    seconds_unrecorded: int = 0
    seconds_pending: int = 0
    trade_count: int = 0
    quote_count: int = 0
    minutes_with_quotes: int = 0
    pct_live: float | None = None
    pct_repaired: float | None = None
    pct_archive: float | None = None
    pct_outage: float | None = None
    pct_unrecorded: float | None = None
    pct_minutes_with_quotes: float | None = None
    complete: bool = False
    grid_end_us: int = 0
    # per hour of the day (0-23): seconds (live, repaired, archive, outage, unrecorded,
    # pending): STATES, then pending
    hourly: dict[int, tuple[int, ...]] = field(default_factory=dict)
    stretches: list[LostStretch] = field(default_factory=list)  # the first MAX_STRETCHES
    stretch_count: int = 0


def bars_grid_end_us(con: duckdb.DuckDBPyConnection, bars_path: Path, day: str) -> int:
    """Exclusive end of the bars' grid: the last 1 s bar + 1 s (the day's start if none)."""
    start_us, end_us = day_bounds_us(day)
    last = con.execute(
        "SELECT epoch_us(max(window_start)) FROM read_parquet(?)", [str(bars_path)]
    ).fetchall()[0][0]
    return start_us if last is None else max(start_us, min(end_us, int(last) + US))


def build_coverage(
    bars_path: Path,
    quotes_path: Path,
    symbol: str,
    day: str,
    out: Path,
    intervals: Sequence[tuple[int, int, str]] = (),
    *,
    now_us: int | None = None,
    con: duckdb.DuckDBPyConnection | None = None,
) -> CoverageStats:
    """Write the per-minute coverage of (symbol, day) to ``out`` (atomic) and summarize it.

    ``intervals`` are the partition's outage intervals ``(start_us, end_us, kind)``;
    ``now_us`` (default: the clock) decides whether the day is closed (1,440 rows) or today
    (rows up to the bars' grid end).
    """
    symbol, day = validate_symbol(symbol), validate_day(day)
    bad = {k for _, _, k in intervals} - set(KINDS)
    if bad:
        raise ValueError(f"unknown outage kind(s) {sorted(bad)}; known: {KINDS}")
    con = con or connect()
    start_us, day_end_us = day_bounds_us(day)
    grid_end = bars_grid_end_us(con, bars_path, day)
    now = time.time_ns() // 1000 if now_us is None else now_us
    if day_end_us <= now:
        rows_end = day_end_us
    else:  # today: up to the grid end, rounded up to a whole minute
        rows_end = start_us + -(-(grid_end - start_us) // MINUTE_US) * MINUTE_US
    params = {
        "bars": str(bars_path),
        "quotes": str(quotes_path),
        "symbol": symbol,
        "day": day,
        "start_us": start_us,
        "grid_end_us": grid_end,
        "rows_end_us": rows_end,
        "iv_start": [int(a) for a, _, _ in intervals],
        "iv_end": [int(b) for _, b, _ in intervals],
        "iv_kind": [str(k) for _, _, k in intervals],
    }
    has_archive = "is_archive" in pq.read_schema(bars_path).names
    sql = _MINUTES_SQL.format(is_archive=_IS_ARCHIVE if has_archive else _NO_ARCHIVE)
    table = con.sql(sql, params=params).to_arrow_table()
    write_dataset(table, out, "coverage")
    stats = coverage_stats(con, table, symbol, day)
    stats.grid_end_us = grid_end
    log.info("coverage %s %s: %d minutes, %s %% live", symbol, day, stats.minutes, stats.pct_live)
    return stats


def coverage_stats(con: duckdb.DuckDBPyConnection, table, symbol: str, day: str) -> CoverageStats:
    """The day's sums, percentages, hourly seconds and lost stretches of a coverage table."""
    stats = CoverageStats(symbol, day)
    con.register("cov", table)
    try:
        cur = con.execute(DAILY_SQL.format(source="cov"))
        names = [d[0] for d in cur.description]
        row = cur.fetchone()
        if row is not None:
            for name, value in zip(names, row, strict=True):
                if name in ("symbol", "date") or value is None:
                    continue
                setattr(stats, name, float(value) if name.startswith("pct_") else value)
        stats.hourly = {int(h): tuple(int(v) for v in rest)
                        for h, *rest in con.execute(_HOURLY_SQL).fetchall()}  # fmt: skip
        runs = con.execute(_STRETCHES_SQL).fetchall()
    finally:
        con.unregister("cov")
    stats.stretch_count = len(runs)
    stats.stretches = [LostStretch(*map(int, r)) for r in runs[:MAX_STRETCHES]]
    return stats


def render_hourly_chart(stats: CoverageStats) -> bytes:
    """A small PNG: per hour of the day, stacked live/repaired/archive/outage/unrecorded/pending
    seconds."""
    from matplotlib.figure import Figure  # heavy import, only when a chart is drawn

    colours = {"live": "#2ca02c", "repaired": "#1f77b4", "archive": "#9467bd",
               "outage": "#ff7f0e", "unrecorded": "#d62728", "pending": "#c7c7c7"}  # fmt: skip
    hours = list(range(24))
    fig = Figure(figsize=(6.4, 2.2), dpi=72)
    ax = fig.subplots()
    bottom = [0.0] * 24
    for i, state in enumerate([*STATES, "pending"]):
        minutes = [stats.hourly.get(h, (0,) * (len(STATES) + 1))[i] / 60 for h in hours]
        ax.bar(hours, minutes, bottom=bottom, width=0.85, color=colours[state], label=state)
        bottom = [b + m for b, m in zip(bottom, minutes, strict=True)]
    ax.set_xlim(-0.6, 23.6)
    ax.set_ylim(0, 60)
    ax.set_xticks(range(0, 24, 3), [f"{h:02d}:00" for h in range(0, 24, 3)])
    ax.set_ylabel("minutes", fontsize=7)
    ax.set_title(f"{stats.symbol} {stats.day}: coverage per hour (UTC)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=6, ncol=6, loc="lower center", bbox_to_anchor=(0.5, -0.45), frameon=False)
    fig.subplots_adjust(left=0.08, right=0.99, top=0.88, bottom=0.33)
    return palette_png(fig, colors=24)  # a few kB (fewer colours merge the small states)
