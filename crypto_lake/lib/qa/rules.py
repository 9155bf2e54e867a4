"""Data-quality rules R1-R7 over one bars_1s partition (SPEC §6), and their Markdown report.

The bars file is read once into a DuckDB temp table; one aggregate pass over it counts the
violations of R1-R6, and small follow-up queries fetch the worst rows of the rules that
fired. R5 also checks trade-id continuity (from the trades file when given, else from the
first/last trade ids of consecutive non-empty seconds); R7 rolls the seconds up to minutes
and compares them with official klines.

This is the one implementation of R1-R7: the asset checks and the CLI use ``evaluate_rules``
(counts, pass/fail, worst rows); QA's ``qa_violations`` uses ``violation_rows``, every
offending row behind the same flags with its severity.

CLI: ``python -m crypto_lake.lib.qa.rules --lake LAKE_ROOT --symbol BTCUSDT --date 2024-03-01``
prints the report; exit status 1 when a critical rule fails, else 0.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from crypto_lake.lib.core.duck import connect
from crypto_lake.lib.core.fsutil import atomic_write_bytes
from crypto_lake.lib.core.logs import setup_logging
from crypto_lake.lib.core.paths import LakeLayout
from crypto_lake.lib.core.schema import QA_VIOLATIONS
from crypto_lake.lib.core.symbols import validate_day, validate_symbol
from crypto_lake.lib.market.bars import BARS_1M_SELECT

SEVERITY = {"R1": "critical", "R2": "critical", "R3": "major", "R4": "critical",
            "R5": "major", "R6": "minor", "R7": "major"}  # fmt: skip
DESCRIPTION = {
    "R1": "low <= open, close <= high",
    "R2": "open, high, low, close > 0",
    "R3": "ask >= bid where both present",
    "R4": "no NaN/NULL in O/H/L/C (allowed only before the day's first price)",
    "R5": "timestamps continuous at 1 s, unique, aligned; no missing trade ids",
    "R6": "spread >= 0 and spread_bps < 500 for > 99.9 % of quoted rows",
    "R7": "1-minute rollup equals official klines (O/H/L/C, volume, trade count exact)",
}
R6_MAX_RATE = 0.001
NO_KLINES = (
    "no official klines for this partition (not fetched yet, or the fetch failed): "
    "R7 runs when binance_klines_1m is materialized"
)
NO_MINUTES = "no complete recorded minute to compare with the official klines"
NOT_RECORDED = "nothing recorded: every second of this partition is an outage or unrecorded"
WORST_ROWS = 10
US = 1_000_000


@dataclass
class RuleResult:
    """One rule's outcome; ``worst_rows`` are JSON-ready dicts for metadata and reports."""

    rule: str
    severity: str
    passed: bool
    violations: int
    rate: float
    worst_rows: list[dict] = field(default_factory=list)
    description: str = ""
    checked: int = 0  # rows (or minutes, for R7) the rule looked at
    # Nothing to judge (a wholly unrecorded partition; R7 without klines or comparable
    # minutes): never a pass, whatever ``passed`` says; ``reason`` says why.
    skipped: bool = False
    reason: str = ""


# Per-row violation flags, computed once over the bars in one pass.
_FLAGS_SQL = """
CREATE OR REPLACE TEMP TABLE rule_rows AS
SELECT *,
    -- NaN sorts above every number in DuckDB, so R1/R2 judge only non-NaN prices: a NaN
    -- price is R4's (SPEC: no NaN in O/H/L/C)
    (NOT nan_ohlc AND (low > open OR low > close OR high < open OR high < close
                       OR low > high)) AS r1,
    (NOT nan_ohlc AND (open <= 0 OR high <= 0 OR low <= 0 OR close <= 0)) AS r2,
    (bid IS NOT NULL AND ask IS NOT NULL AND ask < bid) AS r3,
    ((open IS NULL OR high IS NULL OR low IS NULL OR close IS NULL OR nan_ohlc)
     AND (coalesce(seen_price, false) OR trade_count > 0 OR nan_ohlc)) AS r4,
    (epoch_us(window_start) % 1000000 <> 0
     OR (prev_ws IS NOT NULL AND window_start - prev_ws <> INTERVAL 1 second)) AS r5_grid,
    (first_trade_id IS NOT NULL AND prev_last_id IS NOT NULL
     AND first_trade_id <> prev_last_id + 1) AS r5_ids,
    (bid IS NOT NULL AND ask IS NOT NULL AND (spread < 0 OR spread_bps >= 500)) AS r6
FROM (
    SELECT *,
        lag(window_start) OVER (ORDER BY window_start) AS prev_ws,
        lag(last_trade_id IGNORE NULLS) OVER (ORDER BY window_start) AS prev_last_id,
        bool_or(close IS NOT NULL) OVER (ORDER BY window_start
            ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS seen_price,
        -- NaN (or infinite). Not isnan(): DuckDB folds it to false when the Parquet min/max
        -- statistics, which skip NaN, are finite.
        coalesce(NOT isfinite(open::DOUBLE) OR NOT isfinite(high::DOUBLE)
                 OR NOT isfinite(low::DOUBLE) OR NOT isfinite(close::DOUBLE), false) AS nan_ohlc
    FROM read_parquet($bars)
)
"""

_COUNTS_SQL = """
SELECT count(*), count(*) FILTER (WHERE r1), count(*) FILTER (WHERE r2),
       count(*) FILTER (WHERE r3), count(*) FILTER (WHERE r4),
       count(*) FILTER (WHERE r5_grid), count(*) FILTER (WHERE r5_ids),
       count(*) FILTER (WHERE r6), count(*) FILTER (WHERE bid IS NOT NULL AND ask IS NOT NULL),
       count(DISTINCT window_start), count(*) FILTER (WHERE NOT coalesce(is_outage, false))
FROM rule_rows
"""

_WORST_ORDER = {"R1": "window_start", "R2": "window_start", "R3": "bid - ask DESC",
                "R4": "window_start", "R6": "spread_bps DESC NULLS FIRST"}  # fmt: skip
_BASE_COLS = "window_start, open, high, low, close, trade_count, bid, ask, spread_bps"


def _jsonable(row: dict) -> dict:
    out = {}
    for k, v in row.items():
        if isinstance(v, Decimal):
            v = str(v)
        elif isinstance(v, datetime):
            v = v.isoformat()
        out[k] = v
    return out


def _query_dicts(con: duckdb.DuckDBPyConnection, sql: str, params=None) -> list[dict]:
    rel = con.execute(sql, params or {})
    names = [d[0] for d in rel.description]
    return [_jsonable(dict(zip(names, r, strict=True))) for r in rel.fetchall()]


def _result(rule: str, violations: int, checked: int, worst: list[dict], **kw) -> RuleResult:
    rate = violations / checked if checked else 0.0
    passed = rate <= R6_MAX_RATE if rule == "R6" else violations == 0
    return RuleResult(rule, SEVERITY[rule], passed, violations, rate, worst, DESCRIPTION[rule],
                      checked, **kw)  # fmt: skip


def evaluate_rules(
    bars_1s_path: Path | str,
    klines_1m_path: Path | str | None = None,
    trades_path: Path | str | None = None,
    *,
    con: duckdb.DuckDBPyConnection | None = None,
    worst: int = WORST_ROWS,
) -> dict[str, RuleResult]:
    """Evaluate R1-R7 on a bars_1s file (paths may be globs); results keyed "R1".."R7"."""
    con = con or connect()
    con.execute(_FLAGS_SQL, {"bars": str(bars_1s_path)})
    counts = con.execute(_COUNTS_SQL).fetchall()[0]
    n, c1, c2, c3, c4, c5g, c5i, c6, quoted, distinct, recorded = counts
    results: dict[str, RuleResult] = {}
    for rule, count in (("R1", c1), ("R2", c2), ("R3", c3), ("R4", c4)):
        rows = _worst(con, rule, worst) if count else []
        results[rule] = _result(rule, count, n, rows)
    results["R5"] = _rule_r5(con, n, c5g + (n - distinct), c5i, trades_path, worst)
    results["R6"] = _result("R6", c6, quoted, _worst(con, "R6", worst) if c6 else [])
    results["R7"] = _rule_r7(con, bars_1s_path, klines_1m_path, worst)
    con.execute("DROP TABLE IF EXISTS rule_rows")
    if not recorded:  # every second is an outage: the recorder saw nothing to judge
        for r in results.values():
            r.skipped, r.reason = True, NOT_RECORDED
    return results


def evaluate_r7(
    bars_1s_path: Path | str,
    klines_1m_path: Path | str | None,
    *,
    con: duckdb.DuckDBPyConnection | None = None,
    worst: int = WORST_ROWS,
) -> RuleResult:
    """R7 alone (the klines parity), for a caller that runs it apart from R1-R6."""
    return _rule_r7(con or connect(), bars_1s_path, klines_1m_path, worst)


def _worst(con: duckdb.DuckDBPyConnection, rule: str, limit: int) -> list[dict]:
    col = rule.lower()
    return _query_dicts(
        con,
        f"SELECT {_BASE_COLS} FROM rule_rows WHERE {col} ORDER BY {_WORST_ORDER[rule]}, "
        f"window_start LIMIT {int(limit)}",
    )


# Missing trade ids between consecutive trades of a trades file; each gap once.
_TRADE_GAPS_SQL = """
SELECT ts_event, prev_last + 1 AS first_missing, first_trade_id - 1 AS last_missing
FROM (SELECT ts_event, first_trade_id,
             lag(last_trade_id) OVER (ORDER BY first_trade_id) AS prev_last
      FROM read_parquet($t))
WHERE first_trade_id > prev_last + 1
"""


def _rule_r5(con, n: int, grid_bad: int, ids_bad: int, trades_path, limit: int) -> RuleResult:
    """Grid errors plus missing trade ids (each gap counts once)."""
    rows = []
    if grid_bad:
        rows += _query_dicts(
            con,
            "SELECT window_start, prev_ws AS previous_window, 'grid' AS problem FROM rule_rows "
            f"WHERE r5_grid ORDER BY window_start LIMIT {int(limit)}",
        )
    if trades_path is not None:
        gaps = _query_dicts(
            con,
            "SELECT ts_event AS window_start, first_missing, last_missing, "
            f"'trade ids' AS problem FROM ({_TRADE_GAPS_SQL}) ORDER BY last_missing",
            {"t": str(trades_path)},
        )
        ids_bad = len(gaps)
    else:
        gaps = _query_dicts(
            con,
            "SELECT window_start, prev_last_id + 1 AS first_missing, "
            "first_trade_id - 1 AS last_missing, 'trade ids' AS problem FROM rule_rows "
            "WHERE r5_ids ORDER BY window_start",
        )
    rows += gaps[: max(0, limit - len(rows))]
    result = _result("R5", grid_bad + ids_bad, n, rows)
    result.description += f" ({grid_bad} grid errors, {ids_bad} trade-id gaps)"
    return result


_R7_SQL = f"""
WITH b AS ({BARS_1M_SELECT}),
k AS (SELECT * FROM read_parquet($klines)),
j AS (
    SELECT coalesce(b.window_start, k.open_time) AS minute,
        b.open AS bar_open, k.open AS kl_open, b.high AS bar_high, k.high AS kl_high,
        b.low AS bar_low, k.low AS kl_low, b.close AS bar_close, k.close AS kl_close,
        b.volume_base AS bar_volume, k.volume AS kl_volume,
        b.trade_count AS bar_count, k.trade_count AS kl_count,
        b.volume_quote AS bar_quote_volume, k.quote_volume AS kl_quote_volume,
        b.taker_buy_base AS bar_taker_buy, k.taker_buy_base AS kl_taker_buy
    FROM b FULL JOIN k ON b.window_start = k.open_time
    WHERE coalesce(b.window_start, k.open_time) BETWEEN (SELECT min(window_start) FROM b)
                                                    AND (SELECT max(window_start) FROM b)
      -- today's last minute is still open on our side: compare complete minutes only,
      -- and only up to the last kline that was closed when it was fetched
      AND coalesce(b.seconds, 60) = 60
      AND coalesce(b.window_start, k.open_time) <= (SELECT max(open_time) FROM k)
      -- no kline and no trade: nothing happened on either side (before a symbol's first
      -- trade the exchange has no kline, and our bars have no price yet)
      AND NOT (k.open_time IS NULL AND coalesce(b.trade_count, 0) = 0)
      -- a minute the recorder did not watch whole (before its first connect, between a
      -- disconnect and the reconnect) is not a parity question: R5 checks its trade ids;
      -- unless Binance's public daily file filled the day (it holds every trade of the day)
      AND (NOT coalesce(b.is_outage, false)
           OR coalesce((SELECT bool_or(is_archive) FROM b), false))
)
SELECT *, (
    bar_open IS DISTINCT FROM kl_open OR bar_high IS DISTINCT FROM kl_high
    OR bar_low IS DISTINCT FROM kl_low OR bar_close IS DISTINCT FROM kl_close
    OR bar_volume IS DISTINCT FROM kl_volume OR bar_count IS DISTINCT FROM kl_count
    OR bar_taker_buy IS DISTINCT FROM kl_taker_buy
    OR abs(bar_quote_volume::DOUBLE - kl_quote_volume::DOUBLE)
       > greatest(1e-8 * coalesce(kl_count, 0), 1e-9 * abs(kl_quote_volume::DOUBLE))
    OR bar_quote_volume IS NULL OR kl_quote_volume IS NULL
) AS bad
FROM j ORDER BY minute
"""


def _rule_r7(con, bars_path, klines_path, limit: int) -> RuleResult:
    if klines_path is None or not _has_files(klines_path):
        return _result("R7", 0, 0, [], skipped=True, reason=NO_KLINES)
    rows = _query_dicts(con, _R7_SQL, {"bars": str(bars_path), "klines": str(klines_path)})
    bad = [r for r in rows if r.pop("bad")]
    bad.sort(key=lambda r: r["minute"])
    if not rows:
        return _result("R7", 0, 0, [], skipped=True, reason=NO_MINUTES)
    return _result("R7", len(bad), len(rows), bad[:limit])


def _has_files(path: Path | str) -> bool:
    p = str(path)
    if any(ch in p for ch in "*?["):
        parent = Path(p).parent
        return parent.is_dir() and any(parent.glob(Path(p).name))
    return Path(p).exists()


# Row-level results: the seconds (gaps, minutes) behind each rule's count, from the same
# flags as evaluate_rules. ts is epoch seconds; seconds is how many seconds the row stands for.
_ROWS_SQL = f"""
WITH r AS (
    SELECT *, epoch_us(window_start) AS us, epoch_us(prev_ws) AS prev_us,
        format('open={{}} high={{}} low={{}} close={{}}', open, high, low, close) AS ohlc
    FROM rule_rows
), grid AS (
    SELECT *, (us % {US} = 0 AND prev_us % {US} = 0 AND us - prev_us > {US}) AS gap
    FROM r WHERE r5_grid
)
SELECT 'R1' AS rule, us // {US} AS ts, 1 AS seconds, ohlc AS detail FROM r WHERE r1
UNION ALL SELECT 'R2', us // {US}, 1, ohlc FROM r WHERE r2
UNION ALL SELECT 'R3', us // {US}, 1, format('bid={{}} ask={{}}', bid, ask) FROM r WHERE r3
UNION ALL SELECT 'R4', us // {US}, 1, ohlc FROM r WHERE r4
UNION ALL SELECT 'R5',
    CASE WHEN gap THEN prev_us // {US} + 1 ELSE us // {US} END,
    CASE WHEN gap THEN (us - prev_us) // {US} - 1 ELSE 1 END,
    CASE WHEN us % {US} <> 0 THEN format('timestamp not on a whole second (+{{}} us)', us % {US})
         WHEN us = prev_us THEN 'duplicate row for this second'
         WHEN gap THEN format('{{}} missing seconds', (us - prev_us) // {US} - 1)
         ELSE format('{{}} us after the previous row', us - prev_us) END
FROM grid
UNION ALL SELECT 'R5', us // {US}, 1,
    CASE WHEN first_trade_id > prev_last_id + 1
         THEN format('{{}} trade ids missing before id {{}}',
                     first_trade_id - prev_last_id - 1, first_trade_id)
         ELSE format('trade id {{}} does not follow id {{}}', first_trade_id, prev_last_id) END
FROM r WHERE r5_ids AND $bar_trade_ids
UNION ALL SELECT 'R6', us // {US}, 1, format('spread={{}} spread_bps={{}}', spread, spread_bps)
FROM r WHERE r6
"""
_TRADE_GAP_ROWS_SQL = f"""
SELECT 'R5' AS rule, epoch_us(ts_event) // {US} AS ts, 1 AS seconds,
    format('{{}} trade ids missing before id {{}}', last_missing - first_missing + 1,
           last_missing + 1) AS detail
FROM ({_TRADE_GAPS_SQL})
"""
_R7_ROWS_SQL = f"""
SELECT 'R7' AS rule, epoch_us(minute) // {US} AS ts, 60 AS seconds,
    format('bars o/h/l/c={{}}/{{}}/{{}}/{{}} v={{}} n={{}} quote={{}} taker_buy={{}}; '
           || 'klines o/h/l/c={{}}/{{}}/{{}}/{{}} v={{}} n={{}} quote={{}} taker_buy={{}}',
           bar_open, bar_high, bar_low, bar_close, bar_volume, bar_count, bar_quote_volume,
           bar_taker_buy, kl_open, kl_high, kl_low, kl_close, kl_volume, kl_count,
           kl_quote_volume, kl_taker_buy) AS detail
FROM ({_R7_SQL}) WHERE bad
"""
# qa_violations without the symbol (lib/core/schema.py)
VIOLATION_ROWS_SCHEMA = pa.schema([f for f in QA_VIOLATIONS.arrow_schema() if f.name != "symbol"])


def violation_rows(
    bars_1s_path: Path | str,
    klines_1m_path: Path | str | None = None,
    trades_path: Path | str | None = None,
    *,
    con: duckdb.DuckDBPyConnection | None = None,
) -> pa.Table:
    """Every offending row behind ``evaluate_rules`` (same inputs, same flags), one per bad
    second, per run of missing seconds, per trade-id gap and per R7 minute, with its severity;
    sorted by (ts, rule, detail). This is what QA stores as ``qa_violations``.

    R6 rows are listed whenever a quoted second breaks the spread limit, although the rule
    only fails above a rate of R6_MAX_RATE. R7 rows need klines (none without them)."""
    own = con is None
    con = con or connect()
    try:
        con.execute(_FLAGS_SQL, {"bars": str(bars_1s_path)})
        params = {"bar_trade_ids": trades_path is None}
        parts = [con.sql(_ROWS_SQL, params=params).to_arrow_table()]
        if trades_path is not None:
            parts.append(con.sql(_TRADE_GAP_ROWS_SQL, params={"t": str(trades_path)})
                         .to_arrow_table())  # fmt: skip
        if klines_1m_path is not None and _has_files(klines_1m_path):
            klines = {"bars": str(bars_1s_path), "klines": str(klines_1m_path)}
            parts.append(con.sql(_R7_ROWS_SQL, params=klines).to_arrow_table())
        con.execute("DROP TABLE IF EXISTS rule_rows")
    finally:
        if own:
            con.close()
    return _with_severity(pa.concat_tables([_as_row_parts(p) for p in parts]))


def _as_row_parts(table: pa.Table) -> pa.Table:
    names = ["rule", "ts", "seconds", "detail"]
    types = [pa.string(), pa.int64(), pa.int32(), pa.string()]
    return table.rename_columns(names).cast(pa.schema(list(zip(names, types, strict=True))))


def _with_severity(rows: pa.Table) -> pa.Table:
    rows = rows.sort_by([("ts", "ascending"), ("rule", "ascending"), ("detail", "ascending")])
    rules = pa.array(list(SEVERITY))
    severity = pa.array(list(SEVERITY.values()))
    return pa.table(
        {
            "rule": rows["rule"],
            "severity": pc.take(severity, pc.index_in(rows["rule"], rules)),
            "ts": rows["ts"].cast(pa.timestamp("s", tz="UTC")),
            "seconds": rows["seconds"],
            "detail": rows["detail"],
        },
        schema=VIOLATION_ROWS_SCHEMA,
    )


def overall_verdict(results: dict[str, RuleResult]) -> str:
    """FAIL on any failed critical rule, INVESTIGATE on any other failure or any rule that
    had nothing to judge (skipped is never a pass), else PASS."""
    failed = [r for r in results.values() if not r.passed and not r.skipped]
    if any(r.severity == "critical" for r in failed):
        return "FAIL"
    return "INVESTIGATE" if failed or any(r.skipped for r in results.values()) else "PASS"


def render_rules_report(results: dict[str, RuleResult], title: str) -> str:
    """Markdown: verdict, summary table, then the worst rows of every rule that fired."""
    lines = [f"# {title}", "", f"**Overall: {overall_verdict(results)}**", ""]
    lines += ["| rule | severity | check | result | violations | rate | checked |",
              "| --- | --- | --- | --- | ---: | ---: | ---: |"]  # fmt: skip
    for r in results.values():
        status = f"skipped: {r.reason}" if r.skipped else ("pass" if r.passed else "**FAIL**")
        lines.append(f"| {r.rule} | {r.severity} | {r.description} | {status} | "
                     f"{r.violations} | {r.rate:.4%} | {r.checked} |")  # fmt: skip
    for r in results.values():
        if not r.worst_rows:
            continue
        lines += ["", f"## {r.rule}: top offending rows", ""]
        cols = list(r.worst_rows[0])
        lines += ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
        for row in r.worst_rows:
            lines.append("| " + " | ".join("" if row.get(c) is None else str(row.get(c))
                                           for c in cols) + " |")  # fmt: skip
    return "\n".join(lines) + "\n"


def _partition_glob(layout: LakeLayout, dataset: str, symbol: str, day: str) -> str:
    return str(layout.market_partition_dir(dataset, symbol, day) / "*.parquet")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="R1-R7 data-quality report for one partition")
    parser.add_argument("--lake", required=True, help="lake root directory")
    parser.add_argument("--symbol", required=True)
    parser.add_argument("--date", required=True, help="UTC day, YYYY-MM-DD")
    parser.add_argument("--out", help="write the Markdown here instead of stdout")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        symbol, day = validate_symbol(args.symbol), validate_day(args.date)
    except ValueError as exc:
        parser.error(str(exc))
    layout = LakeLayout(Path(args.lake))
    bars = _partition_glob(layout, "bars_1s", symbol, day)
    if not _has_files(bars):
        print(f"no bars_1s data for {symbol} {day} under {args.lake}", file=sys.stderr)
        return 2
    trades = _partition_glob(layout, "trades", symbol, day)
    klines = _partition_glob(layout, "klines_1m", symbol, day)
    results = evaluate_rules(bars, klines, trades if _has_files(trades) else None)
    report = render_rules_report(results, f"Data quality {symbol} {day}")
    if args.out:
        atomic_write_bytes(Path(args.out), report.encode(), durable=False)
    else:
        sys.stdout.write(report)
    return 1 if overall_verdict(results) == "FAIL" else 0


if __name__ == "__main__":
    raise SystemExit(main())
