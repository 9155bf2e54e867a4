"""The order book per second (``book_1s``), its checks, and the runs that keep it current.

Only the symbols the collector records depth for (``collector.depth.symbols``) have book
partitions: date × those symbols, so every partition the UI lists is one whose book was
recorded, and a backfill that succeeds built every partition it names. The book is rebuilt
from the day's raw files (diff events, REST snapshots, bookTickers) by
``crypto_lake.lib.book`` following Binance's procedure for a local order book; what the
rebuild found (crossings, bookTicker and snapshot comparisons, gaps) is saved beside the
lake's state and judged by four checks, one result per partition:

- ``book_not_crossed``: the best bid stayed below the best ask after every applied event;
- ``book_matches_book_ticker``: every bookTicker whose update id ends an applied diff event
  equals the book's best bid/ask there;
- ``book_matches_snapshots``: every verification snapshot equals the rebuilt levels (within
  its depth), with the largest mid deviation;
- ``book_continuous``: no span of the recorded day is unreliable (a sequence gap, a
  malformed event, a failed verification until the next usable snapshot); the spans are
  listed, and those seconds are ``reliable = false`` in the table.

A rule with nothing to judge (no applied event, no comparable bookTicker, no verification
snapshot) is reported as skipped: failed with severity WARN and the reason, never a pass.

``book_refresh_sensor`` rebuilds the partitions whose raw files changed (recorded by the
market refresh sensor as ``raw_market_events``) at most every ``BOOK_REFRESH_S``, one ranged
run per block of days, never while the previous one is running; yesterday is rebuilt
whole once its last files seal after midnight.
"""

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg

from crypto_lake.defs.market.assets import GROUP, SINGLE_RUN, partition_file
from crypto_lake.defs.market.automation import (
    block_requests,
    materialized_since,
    run_in_flight,
)
from crypto_lake.defs.market.checks import MAX_WORST_ROWS, check_outputs, target_of
from crypto_lake.defs.market.emit import materialize_partitions
from crypto_lake.defs.market.metadata import base_metadata, markdown_table, parquet_preview
from crypto_lake.defs.market.partitions import (
    CONFIG,
    build_market_partitions,
    partition_pairs,
    run_partition_keys,
)
from crypto_lake.defs.resources import LakeResource
from crypto_lake.defs.table_schemas import asset_description, table_metadata
from crypto_lake.lib.archive.day import with_compacted
from crypto_lake.lib.book.report import (
    BOOK_CHECKS,
    book_chart_png,
    build_book_day,
    judge_book,
    load_book_report,
    utc_time,
)
from crypto_lake.lib.core.charts import png_data_uri
from crypto_lake.lib.core.paths import LakeLayout, parse_part_name
from crypto_lake.lib.core.symbols import shift_day
from crypto_lake.lib.raw.catalog import RawCatalog

BOOK_POOL = "lake_book"  # one book rebuild at a time (a busy day is ~40 s of one core)
BOOK_REFRESH_S = max(CONFIG.dagster.refresh_interval_seconds, 60) * 3
BOOK_ASSET = dg.AssetKey("book_1s")
# the configured order, so a range of book partitions is a rectangle (range_tags)
DEPTH_SYMBOLS = [s for s in CONFIG.symbols if s in CONFIG.collector.depth.symbols]
book_partitions = build_market_partitions(CONFIG, DEPTH_SYMBOLS)

BOOK_NUMERIC = ["dagster/row_count", "reliable_seconds", "unreliable_seconds", "gaps",
                "events_applied", "level_updates_applied", "snapshots_verified",
                "snapshots_mismatched", "crossed", "tickers_compared", "tickers_mismatched",
                "quarantined", "raw_files"]  # fmt: skip


@dg.asset(
    deps=[dg.AssetDep("raw_market_events", partition_mapping=dg.IdentityPartitionMapping())],
    partitions_def=book_partitions,
    backfill_policy=SINGLE_RUN,
    group_name=GROUP,
    pool=BOOK_POOL,
    kinds={"parquet", "duckdb"},
    description=asset_description(
        "book_1s",
        "Partitions exist for the symbols in collector.depth.symbols. The metadata gives the "
        "day's reliable seconds, gaps, verified snapshots (largest mid deviation) and a chart "
        "of spread and depth over the day; four checks judge the rebuild. Each partition also "
        "writes its seconds by state per minute (table coverage_book), which the coverage "
        "view shows beside the trades' coverage of every minute.",
    ),
    metadata=table_metadata("book_1s"),
)
def book_1s(context: dg.AssetExecutionContext, lake: LakeResource):
    layout = lake.layout
    catalog = RawCatalog(layout)
    per: dict[str, dict[str, Any]] = {}
    for day, symbol in partition_pairs(run_partition_keys(context, book_partitions)):
        key = f"{day}|{symbol}"
        files = with_compacted(layout, symbol, day, catalog.files_for(symbol, day))
        files += first_part_after(layout, symbol, day, files)
        out = partition_file(layout, "book_1s", symbol, day)
        started = datetime.now(UTC)
        report = build_book_day(files, symbol, day, out, layout.book_checks_path(symbol, day),
                                layout.quarantine_root / symbol / day,
                                partition_file(layout, "coverage_book", symbol, day))  # fmt: skip
        seconds = (datetime.now(UTC) - started).total_seconds()
        per[key] = {**base_metadata(out, report["rows"], "book_1s"),
                    **book_metadata(report, out)}  # fmt: skip
        per[key]["raw_files"] = len(files)
        per[key]["rebuild_seconds"] = round(seconds, 2)
        context.log.info(
            f"{key}: {report['rows']} seconds ({report['reliable_seconds']} reliable), "
            f"{report['level_updates_applied']:,} level updates in {seconds:.1f} s, "
            f"{len(report['gaps'])} gap(s)"
        )
    # a ranged run's partitions keep their numbers, gaps and chart in their observations
    observed = [*BOOK_NUMERIC, "max_mid_deviation_bps", "rebuild_seconds", "summary"]
    yield from materialize_partitions(context, "book_1s", per, BOOK_NUMERIC, observed=observed)


def first_part_after(layout: LakeLayout, symbol: str, day: str, files: list[Path]) -> list[Path]:
    """The next day's first sealed part file, unless ``files`` has it: its first diff event
    closes the day's last second (a row needs an event after its second)."""
    folder = layout.raw_day_dir(symbol, shift_day(day, 1))
    sealed = sorted(p for p in folder.glob("part-*") if (n := parse_part_name(p.name)) is not None
                    and not n.is_open) if folder.is_dir() else []  # fmt: skip
    return sealed[:1] if sealed and sealed[0] not in files else []


def book_metadata(report: dict[str, Any], out: Path) -> dict[str, Any]:
    """One partition's numbers, its gaps and snapshots, and the day's chart."""
    snaps = report["snapshots"]
    verified = [s for s in snaps if s["outcome"] in ("exact", "straddle")]
    meta: dict[str, Any] = {
        "reliable_seconds": report["reliable_seconds"],
        "unreliable_seconds": report["unreliable_seconds"],
        "gaps": len(report["gaps"]),
        "events_applied": report["events_applied"],
        "level_updates_applied": report["level_updates_applied"],
        "snapshots_verified": len(verified),
        "snapshots_mismatched": sum(1 for s in verified if s["mismatched_levels"]),
        "crossed": report["crossed"],
        "tickers_compared": report["tickers_compared"],
        "tickers_mismatched": report["tickers_mismatched"],
        "quarantined": report["quarantined"],
    }
    if report["max_mid_deviation_bps"] is not None:
        meta["max_mid_deviation_bps"] = float(report["max_mid_deviation_bps"])
    gaps = [{"from": utc_time(g["start_us"])[:8], "to": utc_time(g["end_us"])[:8],
             "reason": g["reason"]} for g in report["gaps"]]  # fmt: skip
    chart = book_chart_png(out)
    lines = [
        f"**{report['symbol']} {report['day']}**: {report['reliable_seconds']} reliable "
        f"seconds of {report['rows']} rows; {len(verified)} verification snapshot(s), "
        f"{meta['snapshots_mismatched']} with a mismatched level.",
        "",
        "Unreliable spans (no book, a gap until the resync, levels beyond a snapshot's depth):",
        "",
        markdown_table(gaps[:50]),
    ]
    if chart is not None:
        lines += ["", f"![spread and depth over the day]({png_data_uri(chart)})"]
    meta["summary"] = dg.MetadataValue.md("\n".join(lines))
    meta["preview"] = dg.MetadataValue.md(parquet_preview(out))
    return meta


# --- checks -----------------------------------------------------------------------------------
def _spec(name: str, description: str) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        name=name,
        asset=BOOK_ASSET,
        blocking=False,
        description=description,
        partitions_def=book_partitions,
    )


BOOK_SPECS = [_spec(name, text) for name, text in BOOK_CHECKS.items()]


@dg.multi_asset_check(
    specs=BOOK_SPECS,
    can_subset=False,
    description="What the order book rebuild found, judged per partition.",
)
def book_1s_checks(
    context: dg.AssetCheckExecutionContext, lake: LakeResource
) -> Iterator[dg.AssetCheckEvaluation | dg.Output]:
    for day, symbol in partition_pairs(run_partition_keys(context, book_partitions)):
        key = f"{day}|{symbol}"
        report = load_book_report(lake.layout.book_checks_path(symbol, day))
        target = target_of(context.instance, key, BOOK_ASSET)
        for verdict in judge_book(report):
            yield dg.AssetCheckEvaluation(
                asset_key=BOOK_ASSET,
                check_name=verdict.name,
                passed=verdict.passed,
                severity=dg.AssetCheckSeverity.WARN
                if verdict.skipped
                else dg.AssetCheckSeverity.ERROR,
                description=("Skipped: " if verdict.skipped else "") + verdict.reason,
                partition=key,
                target_materialization_data=target,
                blocking=False,
                metadata={
                    **verdict.metadata,
                    "skipped": dg.MetadataValue.bool(verdict.skipped),
                    "details": dg.MetadataValue.md(markdown_table(verdict.rows[:MAX_WORST_ROWS])),
                },
            )
    yield from check_outputs(BOOK_SPECS)


# --- automation -------------------------------------------------------------------------------
book_job = dg.define_asset_job(
    name="book_job",
    selection=dg.AssetSelection.assets("book_1s"),
    description="Rebuild the order book per second (book_1s + its checks) for a block of days.",
)
BOOK_TRIGGER = "book_refresh"


@dg.sensor(
    name="book_refresh_sensor",
    job=book_job,
    minimum_interval_seconds=BOOK_REFRESH_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Rebuilds the book_1s partitions whose raw files changed since its last pass "
    "(today's as it records, yesterday's once its last files seal): one ranged run per "
    "block of days, never beside a book run still in progress.",
)
def book_refresh_sensor(context: dg.SensorEvaluationContext):
    if not DEPTH_SYMBOLS:
        return dg.SkipReason("no symbol records depth (collector.depth.symbols is empty)")
    cursor = json.loads(context.cursor) if context.cursor else {"after": 0, "pending": {}}
    touched, last = materialized_since(
        context.instance, dg.AssetKey("raw_market_events"), cursor["after"]
    )
    pending = {d: set(s) for d, s in cursor["pending"].items()}
    for day, symbols in touched.items():
        mine = symbols & set(DEPTH_SYMBOLS)
        if mine:
            pending.setdefault(day, set()).update(mine)
    cursor["after"] = last
    if not pending:
        cursor["pending"] = {}
        context.update_cursor(json.dumps(cursor))
        return dg.SkipReason("no new raw files of a depth symbol")
    if run_in_flight(context.instance, book_job.name, BOOK_TRIGGER):
        cursor["pending"] = {d: sorted(s) for d, s in pending.items()}
        context.update_cursor(json.dumps(cursor))
        return dg.SkipReason(f"previous book run still in progress ({len(pending)} days waiting)")
    cursor["pending"] = {}
    context.update_cursor(json.dumps(cursor))
    return block_requests(pending, BOOK_TRIGGER, last, book_job.name, DEPTH_SYMBOLS)
