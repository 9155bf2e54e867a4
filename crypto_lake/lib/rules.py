"""Data-quality rules R1-R7 over one bars_1s partition (SPEC §6), and their Markdown report.

The bars file is read once into a DuckDB temp table; one aggregate pass over it counts the
violations of R1-R6, and small follow-up queries fetch the worst rows of the rules that
fired. R5 also checks trade-id continuity (from the trades file when given, else from the
first/last trade ids of consecutive non-empty seconds); R7 rolls the seconds up to minutes
and compares them with official klines.

CLI: ``python -m crypto_lake.lib.rules --lake LAKE_ROOT --symbol BTCUSDT --date 2024-03-01``
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

from crypto_lake.lib.bars import BARS_1M_SELECT
from crypto_lake.lib.fsutil import atomic_write_bytes
from crypto_lake.lib.logs import setup_logging
from crypto_lake.lib.paths import LakeLayout
from crypto_lake.lib.symbols import validate_day, validate_symbol
from crypto_lake.lib.ticks import connect

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
    (low > open OR low > close OR high < open OR high < close OR low > high) AS r1,
    (open <= 0 OR high <= 0 OR low <= 0 OR close <= 0) AS r2,
    (bid IS NOT NULL AND ask IS NOT NULL AND ask < bid) AS r3,
    ((open IS NULL OR high IS NULL OR low IS NULL OR close IS NULL)
     AND (coalesce(seen_price, false) OR trade_count > 0)) AS r4,
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
            ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS seen_price
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
            """SELECT ts_event AS window_start, prev_last + 1 AS first_missing,
                      first_trade_id - 1 AS last_missing, 'trade ids' AS problem
               FROM (SELECT ts_event, first_trade_id,
                            lag(last_trade_id) OVER (ORDER BY first_trade_id) AS prev_last
                     FROM read_parquet($t))
               WHERE first_trade_id > prev_last + 1 ORDER BY first_trade_id""",
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
      -- disconnect and the reconnect) is not a parity question: R5 checks its trade ids
      AND NOT coalesce(b.is_outage, false)
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
