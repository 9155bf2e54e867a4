"""Row-level R1–R7 violations of one symbol's bars_1s (SPEC §6), computed in DuckDB.

The asset checks on ``bars_1s`` answer "does the partition pass?"; this module answers
"which seconds broke which rule?", one row per offending second (per gap for missing
seconds, per minute for R7), which is what ``qa_violations`` stores and fusion scores.

NaN handling: DuckDB orders NaN above every number, so a NaN price would silently pass
R1/R2. Those rules therefore only judge finite prices; NaN and NULL prices are R4's, with
the market library's convention that NULL O/H/L/C before the day's first trade is allowed
(lib.rules does the same). Severities come from lib.rules.SEVERITY.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crypto_lake.lib.rules import SEVERITY

# One severity table for the asset checks and QA (lib.rules owns it).
RULE_SEVERITY = dict(SEVERITY)
SEVERITIES = ("critical", "major", "minor")
SPREAD_LIMIT_BPS = 500.0
VIOLATION_SCHEMA = pa.schema(
    [
        ("symbol", pa.string()),
        ("rule", pa.string()),
        ("severity", pa.string()),
        ("ts", pa.timestamp("s", tz="UTC")),
        ("seconds", pa.int32()),  # seconds the row stands for (gaps, R7 minutes)
        ("detail", pa.string()),
    ]
)

_FINITE_OHLC = "isfinite(open) AND isfinite(high) AND isfinite(low) AND isfinite(close)"
_ROW_RULES = f"""
SELECT 'R1' AS rule, ts_s AS ts, 1 AS seconds,
       format('open={{}} high={{}} low={{}} close={{}}', open, high, low, close) AS detail
FROM b WHERE {_FINITE_OHLC}
  AND NOT (low <= open AND low <= close AND open <= high AND close <= high)
UNION ALL
SELECT 'R2', ts_s, 1, format('open={{}} high={{}} low={{}} close={{}}', open, high, low, close)
FROM b WHERE {_FINITE_OHLC} AND least(open, high, low, close) <= 0
UNION ALL
SELECT 'R3', ts_s, 1, format('bid={{}} ask={{}}', bid, ask)
FROM b WHERE isfinite(bid) AND isfinite(ask) AND ask < bid
UNION ALL
SELECT 'R4', ts_s, 1, format('open={{}} high={{}} low={{}} close={{}}', open, high, low, close)
FROM (SELECT *, bool_or(close IS NOT NULL) OVER (ORDER BY ts_s
             ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS seen_price FROM b)
WHERE (open IS NULL OR high IS NULL OR low IS NULL OR close IS NULL
       OR isnan(open) OR isnan(high) OR isnan(low) OR isnan(close))
  -- NULL prices before the day's first trade are how bars_1s says "no price yet"
  AND (coalesce(seen_price, false) OR trade_count > 0
       OR isnan(open) OR isnan(high) OR isnan(low) OR isnan(close))
UNION ALL
SELECT 'R5', ts_s, 1, format('timestamp not on a whole second (+{{}} us)', ts_us % 1000000)
FROM b WHERE ts_us % 1000000 <> 0
UNION ALL
SELECT 'R5', ts_s, 1, format('{{}} rows for this second', count(*))
FROM b GROUP BY ts_s HAVING count(*) > 1
UNION ALL
SELECT 'R5', ts_s - gap + 1, gap - 1, format('{{}} missing seconds', gap - 1)
FROM (SELECT ts_s, ts_s - lag(ts_s) OVER (ORDER BY ts_s) AS gap
      FROM (SELECT DISTINCT ts_s FROM b)) WHERE gap > 1
UNION ALL
SELECT 'R5', ts_s, 1,
       format('{{}} trade ids missing before id {{}}',
              first_trade_id - prev_last - 1, first_trade_id)
FROM (SELECT ts_s, first_trade_id,
             lag(last_trade_id) OVER (ORDER BY ts_s, last_trade_id) AS prev_last
      FROM b WHERE trade_count > 0 AND first_trade_id IS NOT NULL)
WHERE first_trade_id > prev_last + 1
UNION ALL
SELECT 'R6', ts_s, 1, format('spread={{}} spread_bps={{}}', spread, spread_bps)
FROM b WHERE isfinite(spread_bps) AND (spread < 0 OR spread_bps >= {SPREAD_LIMIT_BPS})
"""

_EDGE_GAPS = """
SELECT 'R5' AS rule, lo AS ts, (first_s - lo) AS seconds,
       format('{} missing seconds at the start of the window', first_s - lo) AS detail
FROM (SELECT min(ts_s) AS first_s, $lo AS lo FROM b) WHERE first_s > lo
UNION ALL
SELECT 'R5', last_s + 1, ($hi - last_s - 1),
       format('{} missing seconds at the end of the window', $hi - last_s - 1)
FROM (SELECT max(ts_s) AS last_s FROM b) WHERE last_s < $hi - 1
"""

_R7 = """
WITH m AS (
  SELECT ts_s // 60 * 60 AS minute, arg_min(open, ts_s) AS open, max(high) AS high,
         min(low) AS low, arg_max(close, ts_s) AS close, sum(volume_base) AS volume,
         sum(trade_count) AS trade_count, bool_or(is_outage) AS outage
  FROM b GROUP BY 1)
SELECT 'R7' AS rule, m.minute AS ts, 60 AS seconds,
       format('bars o/h/l/c/v/n={}/{}/{}/{}/{}/{} klines={}/{}/{}/{}/{}/{}', m.open, m.high,
              m.low, m.close, m.volume, m.trade_count, k.open, k.high, k.low, k.close,
              k.volume, k.trade_count) AS detail
FROM m JOIN k ON k.minute = m.minute
-- as in lib/rules.py: a minute the recorder did not watch whole is R5's business, not parity
WHERE NOT m.outage AND (m.open <> k.open OR m.high <> k.high OR m.low <> k.low OR m.close <> k.close
   OR m.trade_count <> k.trade_count
   OR abs(m.volume - k.volume) > 1e-8 * greatest(1.0, abs(k.volume)))
"""


def _with_time_columns(bars: pa.Table) -> pa.Table:
    """Add ts_us/ts_s (int64) whatever the unit of ``window_start``; cast prices to double."""
    ws = bars["window_start"]
    unit = ws.type.unit if pa.types.is_timestamp(ws.type) else "s"
    per_us = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": 0}[unit]
    raw = ws.cast(pa.timestamp(unit)).cast(pa.int64()) if pa.types.is_timestamp(ws.type) else ws
    raw_np = raw.to_numpy(zero_copy_only=False).astype(np.int64)
    ts_us = raw_np // 1000 if unit == "ns" else raw_np * per_us
    out = bars.append_column("ts_us", pa.array(ts_us)).append_column(
        "ts_s", pa.array(np.floor_divide(ts_us, 1_000_000))
    )
    for name in ("open", "high", "low", "close", "bid", "ask", "spread", "spread_bps"):
        if name in out.column_names:
            i = out.schema.get_field_index(name)
            out = out.set_column(i, name, pc.cast(out[name], pa.float64()))
        else:
            out = out.append_column(name, pa.nulls(out.num_rows, pa.float64()))
    for name in ("first_trade_id", "last_trade_id", "trade_count"):
        if name not in out.column_names:
            out = out.append_column(name, pa.nulls(out.num_rows, pa.int64()))
    if "is_outage" not in out.column_names:
        out = out.append_column("is_outage", pa.array(np.zeros(out.num_rows, dtype=bool)))
    if "volume_base" not in out.column_names:
        out = out.append_column("volume_base", pa.nulls(out.num_rows, pa.float64()))
    return out


def _normalise_klines(klines: pa.Table) -> pa.Table:
    """Klines with a minute column in epoch seconds, whatever the source's time column is."""
    time_col = next(c for c in ("window_start", "open_time", "ts") if c in klines.column_names)
    col = klines[time_col]
    if pa.types.is_timestamp(col.type):
        minute = col.cast(pa.timestamp("s", tz="UTC")).cast(pa.int64())
    else:  # Binance REST open times are integers in ms
        minute = pc.divide(col.cast(pa.int64()), 1000)
    volume = "volume" if "volume" in klines.column_names else "volume_base"
    return pa.table(
        {
            "minute": minute,
            **{c: pc.cast(klines[c], pa.float64()) for c in ("open", "high", "low", "close")},
            "volume": pc.cast(klines[volume], pa.float64()),
            "trade_count": pc.cast(klines["trade_count"], pa.int64()),
        }
    )


def find_violations(
    symbol: str,
    bars: pa.Table,
    *,
    window: tuple[int, int] | None = None,
    klines: pa.Table | None = None,
    con: duckdb.DuckDBPyConnection | None = None,
) -> pa.Table:
    """All R1–R7 violation rows of one symbol's bars.

    ``window`` = (start, end) epoch seconds, end exclusive: seconds of the window without a
    bar are R5 gaps (a partition that should be complete). ``klines`` (minute open time +
    open/high/low/close/volume/trade_count) enables R7; without it R7 is not evaluated.
    """
    own = con is None
    con = con or duckdb.connect()
    try:
        con.execute("SET enable_progress_bar = false")
        if bars.num_rows == 0:
            if window is None or window[1] <= window[0]:
                return VIOLATION_SCHEMA.empty_table()
            gap = window[1] - window[0]
            rows = [("R5", window[0], gap, f"{gap} missing seconds (no bars)")]
            return _to_table(symbol, rows)
        con.register("b", _with_time_columns(bars))
        parts = [con.sql(_ROW_RULES).to_arrow_table()]
        if window is not None:
            params = {"lo": window[0], "hi": window[1]}
            parts.append(con.sql(_EDGE_GAPS, params=params).to_arrow_table())
        if klines is not None and klines.num_rows:
            con.register("k", _normalise_klines(klines))
            parts.append(con.sql(_R7).to_arrow_table())
        return _to_table(symbol, parts)
    finally:
        if own:
            con.close()


_PART_SCHEMA = pa.schema(
    [("rule", pa.string()), ("ts", pa.int64()), ("seconds", pa.int32()), ("detail", pa.string())]
)


def _to_table(symbol: str, parts: list[pa.Table] | list[tuple]) -> pa.Table:
    """Rule rows (rule, ts seconds, seconds, detail) -> VIOLATION_SCHEMA, sorted."""
    if parts and isinstance(parts[0], tuple):
        parts = [
            pa.Table.from_pylist([dict(zip(_PART_SCHEMA.names, r, strict=True)) for r in parts])
        ]
    rows = pa.concat_tables(
        [p.rename_columns(_PART_SCHEMA.names).cast(_PART_SCHEMA) for p in parts]
    )
    rows = rows.sort_by([("ts", "ascending"), ("rule", "ascending"), ("detail", "ascending")])
    rules = list(RULE_SEVERITY)
    severity = pa.array([RULE_SEVERITY[r] for r in rules], pa.string())
    return pa.table(
        {
            "symbol": pa.array(np.full(rows.num_rows, symbol, dtype=object), pa.string()),
            "rule": rows["rule"],
            "severity": pc.take(severity, pc.index_in(rows["rule"], pa.array(rules))),
            "ts": rows["ts"].cast(pa.timestamp("s", tz="UTC")),
            "seconds": rows["seconds"],
            "detail": rows["detail"],
        },
        schema=VIOLATION_SCHEMA,
    )
