"""The `coverage` asset: per symbol and minute, what the lake observed live, repaired, filled from
Binance's public daily file, lost.

The definitions (which second counts as what) live in :mod:`crypto_lake.lib.market.coverage`; this
module runs them per partition and turns the result into what the UI shows: percentages,
counts, a Markdown day summary and an hourly chart.
"""

from datetime import UTC, datetime
from typing import Any

import dagster as dg

from crypto_lake.defs.market.assets import GROUP, MARKET_POOL, SINGLE_RUN, partition_file
from crypto_lake.defs.market.emit import materialize_partitions
from crypto_lake.defs.market.metadata import base_metadata, markdown_table
from crypto_lake.defs.market.partitions import (
    market_partitions,
    partition_pairs,
    run_partition_keys,
)
from crypto_lake.defs.market.stats import load_outage_intervals
from crypto_lake.defs.resources import LakeResource
from crypto_lake.defs.table_schemas import asset_description, table_metadata
from crypto_lake.lib.core.charts import png_data_uri
from crypto_lake.lib.market.coverage import (
    STATES,
    CoverageStats,
    build_coverage,
    render_hourly_chart,
)

PCT_KEYS = ["pct_live", "pct_repaired", "pct_archive", "pct_outage", "pct_unrecorded",
            "pct_minutes_with_quotes"]  # fmt: skip
STAT_COUNTS = ["seconds_live", "seconds_repaired", "seconds_archive", "seconds_outage",
               "seconds_unrecorded", "seconds_pending", "minutes_with_quotes", "trade_count",
               "quote_count"]  # fmt: skip
COUNT_KEYS = ["dagster/row_count", *STAT_COUNTS, "lost_stretches"]


@dg.asset(
    deps=["bars_1s"],
    partitions_def=market_partitions,
    backfill_policy=SINGLE_RUN,
    group_name=GROUP,
    pool=MARKET_POOL,
    kinds={"parquet", "duckdb"},
    description=asset_description(
        "coverage",
        "The metadata gives the day's percentages and an hourly chart; the DuckDB views "
        "`coverage` and `coverage_daily` answer it across symbols.",
    ),
    metadata=table_metadata("coverage"),
)
def coverage(context: dg.AssetExecutionContext, lake: LakeResource):
    layout = lake.layout
    per: dict[str, dict[str, Any]] = {}
    for day, symbol in partition_pairs(run_partition_keys(context)):
        out = partition_file(layout, "coverage", symbol, day)
        stats = build_coverage(
            partition_file(layout, "bars_1s", symbol, day),
            partition_file(layout, "quotes", symbol, day),
            symbol,
            day,
            out,
            load_outage_intervals(layout, symbol, day),
        )
        key = f"{day}|{symbol}"
        per[key] = {**base_metadata(out, stats.minutes, "coverage"), **coverage_metadata(stats)}
        context.log.info(f"{key}: {stats.pct_live} % live, {stats.stretch_count} lost stretches")
    yield from materialize_partitions(
        context, "coverage", per, COUNT_KEYS,
        observed={*PCT_KEYS, *COUNT_KEYS, "complete", "summary"}, run_totals=_run_percentages,
    )  # fmt: skip


def coverage_metadata(stats: CoverageStats) -> dict[str, Any]:
    """Percentages (None while nothing has elapsed), counts and the day summary."""
    meta: dict[str, Any] = {k: getattr(stats, k) for k in PCT_KEYS if getattr(stats, k) is not None}
    meta.update({k: getattr(stats, k) for k in STAT_COUNTS})
    meta["lost_stretches"] = stats.stretch_count
    meta["complete"] = dg.MetadataValue.bool(stats.complete)
    meta["summary"] = dg.MetadataValue.md(summary_markdown(stats))
    return meta


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f} %"


def _hm(us: int, *, end: bool = False) -> str:
    if end and us % 86_400_000_000 == 0:
        return "24:00"  # a stretch that lasts until midnight
    return datetime.fromtimestamp(us / 1e6, tz=UTC).strftime("%H:%M")


def summary_markdown(stats: CoverageStats) -> str:
    """Headline, seconds by state, lost stretches and the hourly chart, as one Markdown text."""
    verdict = (
        "complete: every second live, repaired or from Binance's public daily file"
        if stats.complete
        else "not complete"
    )
    states = [
        {"state": state, "seconds": getattr(stats, f"seconds_{state}"),
         "share": _pct(getattr(stats, f"pct_{state}"))}
        for state in STATES
    ]  # fmt: skip
    states.append({"state": "pending", "seconds": stats.seconds_pending, "share": "not yet due"})
    stretches = [
        {"from": _hm(s.start_us), "to": _hm(s.end_us, end=True), "outage_s": s.seconds_outage,
         "unrecorded_s": s.seconds_unrecorded}
        for s in stats.stretches
    ]  # fmt: skip
    chart = png_data_uri(render_hourly_chart(stats))
    return "\n".join(
        [
            f"**{stats.symbol} {stats.day}**: {verdict}; best bid/ask recorded in "
            f"{stats.minutes_with_quotes} of {stats.minutes} minutes "
            f"({_pct(stats.pct_minutes_with_quotes)}).",
            "",
            markdown_table(states),
            "",
            f"Lost stretches (minutes with outage or unrecorded seconds): {stats.stretch_count}",
            "",
            markdown_table(stretches),
            "",
            f"![coverage per hour]({chart})",
        ]
    )


def _run_percentages(totals: dict[str, Any]) -> dict[str, Any]:
    """Percentages of the run's summed seconds (a ranged run's result)."""
    elapsed = sum(totals[f"run_seconds_{s}"] for s in STATES)
    if not elapsed:
        return {}
    return {f"run_pct_{s}": round(100 * totals[f"run_seconds_{s}"] / elapsed, 3) for s in STATES}
