"""Archive automation: yesterday archived (and copied) daily, raw retention, disk headroom.

``archive_yesterday`` runs after ``finalize_yesterday`` and covers every symbol of yesterday
in one ranged run; partitions that may not be archived yet are listed in the failed run (see
``crypto_lake.defs.archive.assets``) and archived by a later run or a UI backfill once they
may. ``archive_copies`` copies what was archived in runs of its own: a refused partition fails
its archive run, which would skip a copy step in the same run for every other partition.
``raw_retention_job`` deletes sealed raw minute files only when their day's archive is whole
and re-verified (and copied, when a bucket is configured): ``crypto_lake.lib.archive.retention``.
"""

import json
from datetime import UTC, datetime, timedelta

import dagster as dg

from crypto_lake.defs.archive.assets import archive_bucket, daily_archive, gcs_archive_copy
from crypto_lake.defs.market.automation import TRIGGER_TAG, block_requests, run_in_flight
from crypto_lake.defs.market.partitions import CONFIG, range_tags, split_key
from crypto_lake.defs.resources import LakeResource
from crypto_lake.lib.archive import gcs, retention
from crypto_lake.lib.archive.day import object_name

archive_job = dg.define_asset_job(
    name="archive_job",
    selection=[daily_archive],
    description="Archive closed, checked days under archive/, for a block of days × symbols "
    "in one run (the archive_copies sensor then copies them to the bucket).",
)
copy_job = dg.define_asset_job(
    name="gcs_copy_job",
    selection=[gcs_archive_copy],
    description="Copy archived partitions to the bucket, verified.",
)
COPY_TRIGGER = "copy"
COPY_RETRY_SECONDS = 3600
ARCHIVE, COPY = dg.AssetKey("daily_archive"), dg.AssetKey("gcs_archive_copy")


def uncopied(instance: dg.DagsterInstance) -> dict[str, set[str]]:
    """{day: symbols} archived since their last verified copy (or never copied)."""
    event = dg.DagsterEventType.ASSET_MATERIALIZATION
    archived = instance.get_latest_storage_id_by_partition(ARCHIVE, event)
    copied = instance.get_latest_storage_id_by_partition(COPY, event)
    todo: dict[str, set[str]] = {}
    for partition, storage_id in archived.items():
        if copied.get(partition, -1) < storage_id:
            day, symbol = split_key(partition)
            todo.setdefault(day, set()).add(symbol)
    return todo


@dg.sensor(
    name="archive_copies",
    job=copy_job,
    minimum_interval_seconds=CONFIG.dagster.refresh_interval_seconds,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Copies every archived partition to the bucket once archived (or archived "
    "again), in its own run, so one partition the archive refuses holds back no copy; copies "
    "that failed are tried again every hour. Idle without archive.bucket.",
)
def archive_copies(context: dg.SensorEvaluationContext, lake: LakeResource):
    if not lake.config.archive.bucket:
        return dg.SkipReason("archive.bucket is not set: the archive stays local")
    state = json.loads(context.cursor) if context.cursor else {}
    if run_in_flight(context.instance, copy_job.name, COPY_TRIGGER):
        return dg.SkipReason("previous copy run still in progress")
    event = dg.DagsterEventType.ASSET_MATERIALIZATION
    newest = max(context.instance.get_latest_storage_id_by_partition(ARCHIVE, event).values(),
                 default=0)  # fmt: skip
    now = datetime.now(UTC).timestamp()
    if newest <= state.get("archive_id", 0) and now < state.get("retry_at", 0):
        return dg.SkipReason("no new archive; failed copies are tried again hourly")
    todo = uncopied(context.instance)
    cursor = json.dumps({"archive_id": newest, "retry_at": now + COPY_RETRY_SECONDS})
    requests = block_requests(todo, COPY_TRIGGER, newest, copy_job.name)
    if not requests:
        return dg.SensorResult(skip_reason="every archived partition is copied", cursor=cursor)
    context.log.info(f"copying {sum(len(s) for s in todo.values())} archived partitions")
    return dg.SensorResult(run_requests=requests, cursor=cursor)


@dg.schedule(
    name="archive_yesterday",
    job=archive_job,
    cron_schedule=CONFIG.archive.archive_cron,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Archives yesterday (UTC) for all symbols after it was finalized.",
)
def archive_yesterday(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    tick = context.scheduled_execution_time or datetime.now(UTC)
    day = (tick.astimezone(UTC).date() - timedelta(days=1)).isoformat()
    return dg.RunRequest(
        run_key=f"archive:{day}:{tick.isoformat()}",
        tags={**range_tags([day], CONFIG.symbols), TRIGGER_TAG: "archive"},
    )


def _copy_verifier(lake: LakeResource):
    """With a bucket configured: whether a lake file's object there has the same bytes."""
    cfg, bucket = lake.config.archive, archive_bucket(lake)
    if bucket is None:
        return None
    return lambda path: gcs.verify_copy(bucket, object_name(cfg.prefix, lake.layout, path), path)


@dg.op(
    description="Deletes sealed raw minute files of days older than archive.retention_days whose "
    "archive is whole and re-verified by hash (and copied to the bucket when one is configured)."
)
def delete_archived_raw(context: dg.OpExecutionContext, lake: LakeResource) -> dg.Output[int]:
    cfg = lake.config.archive
    plan = retention.plan_retention(
        lake.layout, today=datetime.now(UTC).date(), retention_days=cfg.retention_days,
        copy_verified=_copy_verifier(lake),
    )  # fmt: skip
    for key, reason in sorted(plan.kept.items()):
        if "younger than" not in reason:
            context.log.warning(f"raw {key} kept: {reason}")
    result = retention.apply_retention(lake.layout, plan)
    for error in result.errors:
        context.log.error(error)
    context.log.info(f"deleted {len(result.deleted)} raw files ({result.bytes_freed} bytes) of "
                     f"{len({p.parent for p in result.deleted})} archived day folders")  # fmt: skip
    kept = "\n".join(f"- {k}: {r}" for k, r in sorted(plan.kept.items())) or "_none_"
    return dg.Output(
        len(result.deleted),
        metadata={
            "deleted_files": len(result.deleted),
            "bytes_freed": result.bytes_freed,
            "folders_deleted": len({p.parent for p in result.deleted}),
            "folders_kept": len(plan.kept),
            "kept": dg.MetadataValue.md(kept),
            "errors": len(result.errors),
        },
    )


@dg.job(description="Raw retention: see the delete_archived_raw op.")
def raw_retention_job():
    delete_archived_raw()


@dg.schedule(
    name="raw_retention_daily",
    job=raw_retention_job,
    cron_schedule=CONFIG.archive.retention_cron,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Deletes sealed raw minute files once their day is safely archived.",
)
def raw_retention_daily(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    return dg.RunRequest(run_key=None)


@dg.asset_check(
    asset="raw_market_events",
    name="disk_headroom",
    description="The lake's disk: warns at archive.disk_warn_fraction used (80 %), fails at "
    "archive.disk_fail_fraction (90 %).",
)
def disk_headroom(lake: LakeResource) -> dg.AssetCheckResult:
    cfg = lake.config.archive
    usage = retention.disk_usage(lake.layout.root)
    verdict = retention.disk_verdict(usage.fraction, cfg.disk_warn_fraction, cfg.disk_fail_fraction)
    return dg.AssetCheckResult(
        passed=verdict == "ok",
        severity=dg.AssetCheckSeverity.ERROR if verdict == "fail" else dg.AssetCheckSeverity.WARN,
        description=f"{usage.fraction:.1%} of the lake's disk used ({verdict})",
        metadata={
            "used_fraction": round(usage.fraction, 4),
            "free_bytes": usage.free,
            "total_bytes": usage.total,
            "path": str(lake.layout.root),
        },
    )


disk_headroom_job = dg.define_asset_job(
    "disk_headroom_job", selection=dg.AssetSelection.checks(disk_headroom),
    description="Evaluate the disk_headroom check.",
)  # fmt: skip


@dg.schedule(
    name="disk_headroom_every_10_minutes",
    job=disk_headroom_job,
    cron_schedule="*/10 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Checks the lake's disk headroom every ten minutes.",
)
def disk_headroom_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    return dg.RunRequest(run_key=None)
