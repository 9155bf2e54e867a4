"""Macro minute bars (SPEC §8): normalise yfinance frames, merge without loss, synthetic DXY.

Storage: one Parquet file per (ticker, UTC day) at
``macro_1m/ticker=<percent-encoded ticker>/date=YYYY-MM-DD/data.parquet`` with columns
ticker, ts (timestamp[us, UTC], minute start), open, high, low, close (float64), volume (int64),
unique by (ticker, ts), sorted by ts. ``ES=F`` is stored as ``ticker=ES%3DF`` because DuckDB's
hive reader rejects a raw ``=`` inside a value; DuckDB and pyarrow decode it back to ``ES=F``.

Merge rule: a fetch never shrinks what is stored. New bars replace stored bars of the same
minute (Yahoo's later answer for a minute is the complete one), stored bars absent from the
new answer are kept, an empty or failed answer leaves the file untouched. Bars of a minute that
has not closed yet at fetch time are dropped, so a half-built bar is never stored.

Synthetic DXY (ICE's formula)::

    DXY = 50.14348112 * EURUSD^-0.576 * USDJPY^0.136 * GBPUSD^-0.119
                      * USDCAD^0.091  * USDSEK^0.042 * USDCHF^0.036

computed per minute from the closes (and opens) of the six FX bars, only for minutes where all
six inputs have a bar. USDSEK=X is not one of the eight default tickers, so with
``macro.fetch_dxy_inputs`` (default true) it is fetched as an extra macro_minute partition.
Stored at ``dxy_synthetic_1m/date=YYYY-MM-DD/data.parquet`` (ts, open, close).

Example query (DuckDB, views from :func:`macro_view_statements` and bars_1m from
lib/market/views.py)::

    SELECT b.symbol, b.window_start, b.close AS btc_close,
           spy.close AS spy_close, dxy.close AS dxy
    FROM bars_1m b
    LEFT JOIN macro_minute spy ON spy.ticker = 'SPY' AND spy.ts = b.window_start
    LEFT JOIN dxy_synthetic_minute dxy ON dxy.ts = b.window_start
    WHERE b.symbol = 'BTCUSDT' AND b.window_start >= TIMESTAMPTZ '2026-11-20 14:30:00+00'
    ORDER BY b.window_start;

Macro bars exist only in trading hours, hence the LEFT JOIN (NULL outside the session).
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from crypto_lake.lib.core.duck import connect
from crypto_lake.lib.core.fsutil import atomic_write_bytes
from crypto_lake.lib.core.paths import LakeLayout
from crypto_lake.lib.core.schema import DXY_SYNTHETIC_1M, MACRO_1M, Dataset, check_schema
from crypto_lake.lib.core.symbols import validate_day, validate_ticker
from crypto_lake.lib.macro.calendar import SessionCoverage, session_coverage
from crypto_lake.lib.macro.yahoo import YahooSettings, fetch_minute_bars

BAR_FILE = "data.parquet"
BAR_SCHEMA = MACRO_1M.arrow_schema()  # lib/core/schema.py
DXY_SCHEMA = DXY_SYNTHETIC_1M.arrow_schema()
DXY_CONSTANT = 50.14348112
DXY_WEIGHTS: dict[str, float] = {
    "EURUSD=X": -0.576,
    "USDJPY=X": 0.136,
    "GBPUSD=X": -0.119,
    "USDCAD=X": 0.091,
    "USDSEK=X": 0.042,
    "USDCHF=X": 0.036,
}
YAHOO_1M_HISTORY_DAYS = 30  # Yahoo serves 1-minute bars for about the last 30 days


def partition_tickers(macro_tickers: list[str], fetch_dxy_inputs: bool) -> list[str]:
    """The tickers macro_minute is partitioned by: configured ones, plus DXY inputs if asked."""
    extra = [t for t in DXY_WEIGHTS if fetch_dxy_inputs and t not in macro_tickers]
    return [validate_ticker(t) for t in [*macro_tickers, *extra]]


def day_window(day: str | date) -> tuple[datetime, datetime]:
    """[00:00, 24:00) UTC of a partition day."""
    d = date.fromisoformat(validate_day(day))
    start = datetime(d.year, d.month, d.day, tzinfo=UTC)
    return start, start + timedelta(days=1)


def fetch_window(day: str | date, now: datetime) -> tuple[datetime, datetime] | None:
    """The request window for a partition day, or None when Yahoo cannot have bars for it.

    None for future days and for days older than Yahoo's 1-minute history; one UTC day is
    always within Yahoo's ~7-day per-request limit.
    """
    start, end = day_window(day)
    if start >= now or end <= now - timedelta(days=YAHOO_1M_HISTORY_DAYS):
        return None
    return start, min(end, now)


def empty_bars() -> pa.Table:
    return BAR_SCHEMA.empty_table()


@dataclass(frozen=True)
class Normalised:
    """A yfinance frame as lake rows, with what had to be dropped and why."""

    table: pa.Table
    dropped_incomplete: int  # minute not closed yet at fetch time, or not minute-aligned
    dropped_invalid: int  # NaN / non-positive price, inverted high/low
    dropped_outside_day: int  # bar belongs to another UTC day than the partition


def bars_from_frame(ticker: str, frame: pd.DataFrame, day: str | date, now: datetime) -> Normalised:
    """Convert yfinance's frame (exchange-local index) to UTC lake rows of one UTC day."""
    if frame.empty:
        return Normalised(empty_bars(), 0, 0, 0)
    idx = pd.DatetimeIndex(frame.index)
    # yfinance localises to the exchange zone; a naive index would be its raw UTC epoch.
    idx = idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")
    ts = idx.as_unit("us")
    o, h, lo, c = (frame[col].to_numpy(dtype="float64") for col in ("Open", "High", "Low", "Close"))
    vol = frame["Volume"].fillna(0).to_numpy(dtype="float64")
    now_ts = pd.Timestamp(now).tz_convert("UTC")
    aligned = (ts.second == 0) & (ts.microsecond == 0)
    closed = ts + pd.Timedelta(minutes=1) <= now_ts
    prices = np.vstack([o, h, lo, c])
    valid = np.isfinite(prices).all(axis=0) & (prices > 0).all(axis=0)
    valid &= (h >= np.maximum(o, c)) & (lo <= np.minimum(o, c)) & np.isfinite(vol) & (vol >= 0)
    start, end = day_window(day)
    in_day = (ts >= pd.Timestamp(start)) & (ts < pd.Timestamp(end))
    complete = aligned & closed
    keep = complete & valid & in_day
    table = pa.table(
        {
            "ticker": pa.array([ticker] * int(keep.sum()), pa.string()),
            "ts": pa.array(ts[keep], BAR_SCHEMA.field("ts").type),
            "open": o[keep],
            "high": h[keep],
            "low": lo[keep],
            "close": c[keep],
            "volume": vol[keep].astype("int64"),
        },
        schema=BAR_SCHEMA,
    )
    return Normalised(
        dedup_sorted(table),
        dropped_incomplete=int((~complete).sum()),
        dropped_invalid=int((complete & ~valid).sum()),
        dropped_outside_day=int((complete & valid & ~in_day).sum()),
    )


_LOCAL = threading.local()


def _connection() -> duckdb.DuckDBPyConnection:
    # Opening an in-memory DuckDB costs ~0.1 s; a partition needs a few tiny queries, so each
    # thread keeps one connection (DuckDB connections are not shared across threads).
    con = getattr(_LOCAL, "con", None)
    if con is None:
        con = _LOCAL.con = connect()
    return con


def _sql(query: str, **tables: pa.Table) -> pa.Table:
    con = _connection()
    try:
        for name, table in tables.items():
            con.register(name, table)
        return con.sql(query).to_arrow_table()
    finally:
        for name in tables:
            con.unregister(name)


def dedup_sorted(table: pa.Table) -> pa.Table:
    """One row per (ticker, ts), the last occurrence winning, sorted by (ticker, ts)."""
    out = _sql(
        """
        SELECT * EXCLUDE (_rn) FROM (
            SELECT *, row_number() OVER (PARTITION BY ticker, ts ORDER BY _pos DESC) AS _rn
            FROM t
        ) WHERE _rn = 1 ORDER BY ticker, ts
        """,
        t=table.append_column("_pos", pa.array(np.arange(len(table)), pa.int64())),
    )
    return out.drop_columns(["_pos"]).cast(table.schema)


def merge_bars(stored: pa.Table | None, new: pa.Table) -> pa.Table:
    """Stored rows plus new rows; on the same (ticker, ts) the new row wins. Never shrinks."""
    if stored is None or len(stored) == 0:
        return dedup_sorted(new.cast(BAR_SCHEMA))
    return dedup_sorted(pa.concat_tables([stored.cast(BAR_SCHEMA), new.cast(BAR_SCHEMA)]))


def parquet_bytes(table: pa.Table) -> bytes:
    """Deterministic Parquet encoding: same rows in, same bytes out."""
    buf = io.BytesIO()
    pq.write_table(
        table.replace_schema_metadata(None),
        buf,
        compression="zstd",
        compression_level=3,
        use_dictionary=["ticker"] if "ticker" in table.column_names else False,
        write_statistics=True,
    )
    return buf.getvalue()


def read_table(path: Path, schema: pa.Schema) -> pa.Table | None:
    """The stored table at ``path`` (None when there is no file yet)."""
    if not path.exists():
        return None
    return pq.read_table(path).cast(schema)


def write_if_changed(path: Path, table: pa.Table, dataset: str) -> bool:
    """Atomically write ``table`` of ``dataset`` (``macro_1m`` or ``dxy_synthetic_1m``, its
    columns checked against lib/core/schema.py) unless the file already holds these bytes."""
    check_schema(dataset, table.schema)
    data = parquet_bytes(table)
    if path.exists() and path.read_bytes() == data:
        return False
    atomic_write_bytes(path, data)
    return True


def bar_path(layout: LakeLayout, ticker: str, day: str | date) -> Path:
    return layout.macro_partition_dir(ticker, day) / BAR_FILE


def dxy_path(layout: LakeLayout, day: str | date) -> Path:
    return layout.dxy_partition_dir(day) / BAR_FILE


# --- one partition: fetch, normalise, merge, write ------------------------------------------


@dataclass
class PartitionOutcome:
    """What refreshing one (ticker, day) partition did; becomes the UI metadata."""

    ticker: str
    day: str
    status: str  # ok | empty | outside_yahoo_window | future
    fetched_rows: int
    stored_rows_before: int
    stored_rows: int
    new_minutes: int
    file_changed: bool
    attempts: int
    rate_limited: int
    dropped_incomplete: int
    dropped_invalid: int
    dropped_outside_day: int
    coverage: SessionCoverage
    first_ts: str | None
    last_ts: str | None
    path: Path
    reason: str = ""

    @property
    def got_nothing(self) -> bool:
        return self.fetched_rows == 0


def refresh_partition(
    layout: LakeLayout, ticker: str, day: str, now: datetime, settings: YahooSettings
) -> PartitionOutcome:
    """Fetch one UTC day of one ticker and merge it into the stored file without loss.

    Raises :class:`YahooFetchError` when Yahoo kept failing; the stored file is then untouched.
    """
    ticker, day = validate_ticker(ticker), validate_day(day)
    path = bar_path(layout, ticker, day)
    stored = read_table(path, BAR_SCHEMA)
    before = 0 if stored is None else len(stored)
    window = fetch_window(day, now)
    attempts = rate_limited = 0
    reason = ""
    if window is None:
        status = "future" if day_window(day)[0] >= now else "outside_yahoo_window"
        norm = Normalised(empty_bars(), 0, 0, 0)
    else:
        result = fetch_minute_bars(ticker, window[0], window[1], settings)
        attempts, rate_limited, reason = result.attempts, result.rate_limited, result.reason
        norm = bars_from_frame(ticker, result.frame, day, now)
        status = "ok" if len(norm.table) else "empty"
    merged = merge_bars(stored, norm.table) if len(norm.table) else stored
    changed = False
    if merged is not None and len(merged):
        changed = write_if_changed(path, merged, MACRO_1M.name)
    rows = 0 if merged is None else len(merged)
    ts = np.array([], "datetime64[s]") if merged is None else _ts_array(merged)
    return PartitionOutcome(
        ticker=ticker,
        day=day,
        status=status,
        fetched_rows=len(norm.table),
        stored_rows_before=before,
        stored_rows=rows,
        new_minutes=rows - before,
        file_changed=changed,
        attempts=attempts,
        rate_limited=rate_limited,
        dropped_incomplete=norm.dropped_incomplete,
        dropped_invalid=norm.dropped_invalid,
        dropped_outside_day=norm.dropped_outside_day,
        coverage=session_coverage(ticker, date.fromisoformat(day), ts, until=now),
        first_ts=f"{ts[0]}Z" if ts.size else None,
        last_ts=f"{ts[-1]}Z" if ts.size else None,
        path=path,
        reason=reason,
    )


def _ts_array(table: pa.Table) -> np.ndarray:
    """The ts column as naive UTC ``datetime64[s]``."""
    return table.column("ts").cast(pa.timestamp("us")).to_numpy().astype("datetime64[s]")


# --- synthetic DXY ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DxyOutcome:
    day: str
    rows: int
    stored_rows: int
    file_changed: bool
    missing_inputs: list[str]  # DXY inputs without any stored bar that day
    minutes_with_some_inputs: int  # minutes where at least one but not all inputs exist
    path: Path


def dxy_table(bars: pa.Table) -> pa.Table:
    """DXY open/close per minute from FX bars, only where all six inputs have a bar."""
    terms_open = " * ".join(
        f"pow(max(open) FILTER (WHERE ticker = '{t}'), {w})" for t, w in DXY_WEIGHTS.items()
    )
    terms_close = terms_open.replace("open)", "close)")
    out = _sql(
        f"""
        SELECT ts, {DXY_CONSTANT} * {terms_open} AS open, {DXY_CONSTANT} * {terms_close} AS close
        FROM bars WHERE ticker IN ({", ".join(f"'{t}'" for t in DXY_WEIGHTS)})
        GROUP BY ts HAVING count(DISTINCT ticker) = {len(DXY_WEIGHTS)}
        ORDER BY ts
        """,
        bars=bars,
    )
    return out.cast(DXY_SCHEMA)


def refresh_dxy(layout: LakeLayout, day: str) -> DxyOutcome:
    """Recompute one day's synthetic DXY from stored FX bars; never shrinks the stored file."""
    day = validate_day(day)
    tables = [t for t in (read_table(bar_path(layout, x, day), BAR_SCHEMA) for x in DXY_WEIGHTS)]
    present = [x for x, t in zip(DXY_WEIGHTS, tables, strict=True) if t is not None and len(t)]
    bars = pa.concat_tables([t for t in tables if t is not None] or [empty_bars()])
    fresh = dxy_table(bars)
    all_minutes = len(np.unique(_ts_array(bars))) if len(bars) else 0
    path = dxy_path(layout, day)
    stored = read_table(path, DXY_SCHEMA)
    merged = fresh
    if stored is not None and len(stored):
        keyed = [
            s.append_column("ticker", pa.array(["DXY"] * len(s), pa.string()))
            for s in (stored, fresh)
        ]
        merged = dedup_sorted(pa.concat_tables(keyed)).drop_columns(["ticker"]).cast(DXY_SCHEMA)
    changed = write_if_changed(path, merged, DXY_SYNTHETIC_1M.name) if len(merged) else False
    return DxyOutcome(
        day=day,
        rows=len(fresh),
        stored_rows=len(merged),
        file_changed=changed,
        missing_inputs=[x for x in DXY_WEIGHTS if x not in present],
        minutes_with_some_inputs=all_minutes - len(fresh),
        path=path,
    )


# --- query layer -----------------------------------------------------------------------------


def macro_view_statements(layout: LakeLayout) -> list[str]:
    """DuckDB statements creating the views ``macro_minute`` and ``dxy_synthetic_minute``.

    Views read the Parquet files directly with hive partitioning (``date`` comes from the
    path, so date filters prune files; the percent-encoded ticker decodes to ``ES=F``). Over
    an empty lake they select from an empty typed relation, so queries still bind; re-run the
    statements once files exist (lake_views does on every materialization).
    """
    macro_glob = layout.root / "macro_1m" / "*" / "*" / "*.parquet"
    dxy_glob = layout.root / "dxy_synthetic_1m" / "*" / "*.parquet"
    macro_src = (
        _hive_select(MACRO_1M, macro_glob)
        if any(layout.root.glob("macro_1m/*/*/*.parquet"))
        else _empty_select(MACRO_1M)
    )
    dxy_src = (
        _hive_select(DXY_SYNTHETIC_1M, dxy_glob)
        if any(layout.root.glob("dxy_synthetic_1m/*/*.parquet"))
        else _empty_select(DXY_SYNTHETIC_1M)
    )
    return [
        f"CREATE OR REPLACE VIEW macro_minute AS {macro_src}",
        f"CREATE OR REPLACE VIEW dxy_synthetic_minute AS {dxy_src}",
    ]


def _hive_select(dataset: Dataset, glob: Path) -> str:
    """The dataset's columns and the hive column date, from its files."""
    return (
        f"SELECT {', '.join(dataset.names)}, date FROM read_parquet('{_sql_str(glob)}', "
        "hive_partitioning = true, hive_types = {'date': DATE})"
    )


def _empty_select(dataset: Dataset) -> str:
    """An empty relation of the same columns, so queries bind before any file exists."""
    cols = [*dataset.duckdb_columns(), ("date", "DATE")]
    return "SELECT " + ", ".join(f"NULL::{t} AS {n}" for n, t in cols) + " WHERE false"


def _sql_str(path: Path) -> str:
    return str(path).replace("'", "''")
