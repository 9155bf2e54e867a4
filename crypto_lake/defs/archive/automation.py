"""Archive automation: yesterday archived (and copied) daily, raw retention, disk headroom.

``archive_yesterday`` runs after ``finalize_yesterday`` and covers every symbol of yesterday
in one ranged run; partitions that may not be archived yet are listed in the failed run (see
``crypto_lake.defs.archive.assets``) and archived by a later run or a UI backfill once they
may. ``raw_retention`` deletes sealed raw minute files only when their day's archive is whole
and re-verified (and copied, when a bucket is configured): ``crypto_lake.lib.archive.retention``.
"""

from datetime import UTC, datetime, timedelta

import dagster as dg

from crypto_lake.defs.archive.assets import archive_bucket, daily_archive, gcs_archive_copy
from crypto_lake.defs.market.automation import TRIGGER_TAG
from crypto_lake.defs.market.partitions import CONFIG, range_tags
from crypto_lake.defs.resources import LakeResource
from crypto_lake.lib.archive import gcs, retention
from crypto_lake.lib.archive.day import object_name

archive_job = dg.define_asset_job(
    name="archive_job",
    selection=[daily_archive, gcs_archive_copy],
    description="Archive closed, checked days under archive/ and copy them to the bucket "
    "(when archive.bucket is set), for a block of days × symbols in one run.",
)


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
