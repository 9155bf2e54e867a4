"""``archive_intact``: whether each (date, symbol) archive still matches its sidecars.

One result per partition, like R1–R7 (``crypto_lake.defs.market.checks``): passed when every
file is present and matches its sidecar (the compacted raw file re-read: line count and
content SHA256), failed naming each missing, truncated or altered file, skipped (a WARN,
never a pass) for a partition that was never archived. It runs with every ``archive_job``
run, and weekly over the last weeks by ``archive_verify_weekly``, so damage done after
archiving shows in the UI; retention re-verifies on its own before deleting anything.
"""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import dagster as dg

from crypto_lake.defs.market.automation import TRIGGER_TAG
from crypto_lake.defs.market.checks import check_outputs, target_of
from crypto_lake.defs.market.partitions import (
    CONFIG,
    market_partitions,
    partition_pairs,
    range_tags,
    run_partition_keys,
)
from crypto_lake.defs.resources import LakeResource
from crypto_lake.lib.archive.day import archive_status, read_sidecar
from crypto_lake.lib.core.paths import RAW_ARCHIVE

ARCHIVE = dg.AssetKey("daily_archive")
INTACT = dg.AssetCheckSpec(
    name="archive_intact",
    asset=ARCHIVE,
    description="Every archive file of the partition is present and matches its sidecar (size, "
    "SHA256; the raw lines re-read). One result per (date, symbol).",
    partitions_def=market_partitions,
)
VERIFY_DAYS = 28


@dg.multi_asset_check(name="daily_archive_intact", specs=[INTACT], can_subset=False,
                      description="archive_intact, one result per partition.")  # fmt: skip
def archive_intact(
    context: dg.AssetCheckExecutionContext, lake: LakeResource
) -> Iterator[dg.AssetCheckEvaluation | dg.Output]:
    layout = lake.layout
    for day, symbol in partition_pairs(run_partition_keys(context)):
        key = f"{day}|{symbol}"
        if read_sidecar(layout.archive_sidecar(RAW_ARCHIVE, symbol, day)) is None:
            passed, severity = False, dg.AssetCheckSeverity.WARN
            description = "Skipped: this partition has not been archived"
            meta = {"skipped": dg.MetadataValue.bool(True)}
        else:
            status = archive_status(layout, symbol, day, deep=True)
            passed, severity = status.complete, dg.AssetCheckSeverity.ERROR
            description = ("every file matches its sidecar" if passed else
                           "damaged: " + "; ".join(status.problems)[:1000] +
                           " (run archive_job for the partition while its raw files exist, or "
                           "restore it from the bucket)")  # fmt: skip
            meta = {"skipped": dg.MetadataValue.bool(False), "problems": len(status.problems),
                    "files_ok": len(status.sidecars)}  # fmt: skip
        yield dg.AssetCheckEvaluation(
            asset_key=ARCHIVE, check_name=INTACT.name, passed=passed, severity=severity,
            description=description, partition=key, blocking=False, metadata=meta,
            target_materialization_data=target_of(context.instance, key, ARCHIVE),
        )  # fmt: skip
    yield from check_outputs([INTACT])


archive_verify_job = dg.define_asset_job(
    "archive_verify_job", selection=dg.AssetSelection.checks(archive_intact),
    description="Re-verify archived partitions against their sidecars (archive_intact).",
)  # fmt: skip


@dg.schedule(
    name="archive_verify_weekly",
    job=archive_verify_job,
    cron_schedule="0 4 * * 0",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description=f"Sundays 04:00 UTC: archive_intact over the last {VERIFY_DAYS} days, all symbols.",
)
def archive_verify_weekly(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    tick = context.scheduled_execution_time or datetime.now(UTC)
    last = tick.astimezone(UTC).date() - timedelta(days=1)
    first = max(last - timedelta(days=VERIFY_DAYS - 1), CONFIG.dagster.partitions_start)
    days = [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]
    return dg.RunRequest(
        run_key=f"archive_verify:{last}:{tick.isoformat()}",
        tags={**range_tags(days, CONFIG.symbols), TRIGGER_TAG: "archive_verify"},
    )
