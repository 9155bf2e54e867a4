"""1-second parity: our bars_1s against Binance's own 1 s klines, second by second.

Binance publishes a 1 s kline for every second of a day (an empty second repeats the previous
close with zero volume), built from the same trades we record. So on every second we watched
whole, our bar must equal Binance's kline exactly: open, high, low, close, base volume and
trade count. Compared are

- ``live`` seconds: the recorder watched the whole second (``NOT is_outage``), whether its
  trades arrived live or were repaired from REST;
- ``archive`` seconds: on a day whose public trades file was imported, every second the
  recorder did not watch (the file holds every trade of the day, so such a second with no
  archive trade had none), which proves the import end to end.

On a day without an imported file, a second the recorder did not watch is not a parity
question (coverage and R5 report it). Neither is a second before the day's first known
price (the bar has no price yet). A compared second with no kline inside the klines' span is
a mismatch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq

from crypto_lake.lib.core.duck import connect
from crypto_lake.lib.qa.rules import RuleResult, _query_dicts

RULE = "klines_1s_parity"
DESCRIPTION = (
    "every watched second of bars_1s equals Binance's 1 s kline: open, high, low, close, "
    "volume and trade count exact"
)
NO_KLINES = (
    "no 1 s klines for this partition (the public daily file is not imported yet: Binance "
    "publishes a day some hours after it ends; materialize binance_klines_1s)"
)
NO_SECONDS = "no second both watched (or imported) and covered by the 1 s klines"
WORST = 20
LISTED = 200  # mismatching seconds named in the result

_SQL = """
WITH day AS (SELECT bool_or({archive}) AS imported FROM read_parquet($bars)),
b AS (
    SELECT window_start, open, high, low, close, volume_base, trade_count,
        CASE WHEN {archive} OR is_outage THEN 'archive' ELSE 'live' END AS source
    FROM read_parquet($bars)
    -- watched whole, or known from the day's public file (it holds every trade of the day,
    -- so an unwatched second without archive trades had none)
    WHERE (NOT is_outage OR (SELECT imported FROM day)) AND open IS NOT NULL
), k AS (SELECT * FROM read_parquet($klines))
SELECT b.window_start AS second, b.source,
    b.open AS bar_open, k.open AS kl_open, b.high AS bar_high, k.high AS kl_high,
    b.low AS bar_low, k.low AS kl_low, b.close AS bar_close, k.close AS kl_close,
    b.volume_base AS bar_volume, k.volume AS kl_volume,
    b.trade_count AS bar_count, k.trade_count AS kl_count,
    (k.open_time IS NULL OR b.open IS DISTINCT FROM k.open OR b.high IS DISTINCT FROM k.high
     OR b.low IS DISTINCT FROM k.low OR b.close IS DISTINCT FROM k.close
     OR b.volume_base IS DISTINCT FROM k.volume
     OR b.trade_count IS DISTINCT FROM k.trade_count) AS bad
FROM b LEFT JOIN k ON b.window_start = k.open_time
WHERE b.window_start BETWEEN (SELECT min(open_time) FROM k) AND (SELECT max(open_time) FROM k)
ORDER BY b.window_start
"""


def evaluate_klines_1s_parity(
    bars_1s_path: Path | str,
    klines_1s_path: Path | str | None,
    *,
    con: duckdb.DuckDBPyConnection | None = None,
    worst: int = WORST,
) -> tuple[RuleResult, dict[str, Any]]:
    """Compare one bars_1s partition with its 1 s klines: the result (``worst_rows`` are the
    first mismatching seconds with both sides' values) and the counts: per source (``live``,
    ``archive``) the seconds compared and mismatched, and ``seconds``, every mismatching row."""
    counts: dict[str, Any] = {s: {"compared": 0, "mismatched": 0} for s in ("live", "archive")}
    counts["seconds"] = []
    if klines_1s_path is None or not Path(klines_1s_path).exists():
        return _result(0, 0, [], skipped=True, reason=NO_KLINES), counts
    con = con or connect()
    # bars_1s v1 files have no is_archive (the footer says so without a scan)
    archive = "is_archive" if "is_archive" in pq.read_schema(bars_1s_path).names else "false"
    rows = _query_dicts(con, _SQL.format(archive=archive),
                        {"bars": str(bars_1s_path), "klines": str(klines_1s_path)})  # fmt: skip
    bad = []
    for r in rows:
        c = counts[r["source"]]
        c["compared"] += 1
        if r.pop("bad"):
            c["mismatched"] += 1
            bad.append(r)
    counts["seconds"] = bad
    if not rows:
        return _result(0, 0, [], skipped=True, reason=NO_SECONDS), counts
    return _result(len(bad), len(rows), bad[:worst]), counts


def mismatch_seconds(rows: list[dict]) -> str:
    """Mismatching seconds as one line for check metadata (the first ``LISTED``)."""
    listed = ", ".join(str(r["second"]) for r in rows[:LISTED])
    more = len(rows) - LISTED
    return listed + (f" and {more} more" if more > 0 else "")


def _result(violations: int, checked: int, rows: list[dict], **kw) -> RuleResult:
    rate = violations / checked if checked else 0.0
    return RuleResult(RULE, "major", violations == 0, violations, rate, rows, DESCRIPTION,
                      checked, **kw)  # fmt: skip
