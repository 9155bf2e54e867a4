"""The restore as a Dagster job: the CLI's work (``crypto_lake.lib.archive.restore``), launched
from the UI's launchpad with a day and symbols, reported in the run's metadata."""

import dagster as dg
from pydantic import Field

from crypto_lake.defs.archive.assets import archive_bucket, copy_options
from crypto_lake.defs.resources import LakeResource
from crypto_lake.lib.archive.restore import RestoreReport, render_report, restore_day
from crypto_lake.lib.core.symbols import validate_day, validate_symbol


class RestoreConfig(dg.Config):
    day: str  # YYYY-MM-DD (UTC)
    symbols: list[str] = Field(default_factory=list)  # default: the configured symbols
    force: bool = False  # replace local table files that hold other bytes


@dg.op(
    description="Downloads a day's archive from the bucket, verifies every hash, rebuilds "
    "trades, quotes, bars and coverage from the raw lines and proves them byte-identical to "
    "the archived ones; fails naming every problem."
)
def restore_from_bucket(
    context: dg.OpExecutionContext, config: RestoreConfig, lake: LakeResource
) -> dg.Output[int]:
    cfg = lake.config.archive
    bucket = archive_bucket(lake)
    if bucket is None:
        raise dg.Failure("archive.bucket is not configured: there is nothing to restore from")
    day = validate_day(config.day)
    symbols = [validate_symbol(s) for s in config.symbols] or lake.config.symbols
    reports: list[RestoreReport] = []
    for symbol in symbols:
        report = restore_day(lake.layout, bucket, cfg.prefix, symbol, day, force=config.force,
                             log=context.log, **copy_options(lake))  # fmt: skip
        context.log.info(render_report(report))
        reports.append(report)
    failed = [r for r in reports if not r.ok]
    text = "\n\n".join(render_report(r) for r in reports)
    metadata = {
        "day": day,
        "restored_ok": len(reports) - len(failed),
        "failed": len(failed),
        "report": dg.MetadataValue.md(f"```\n{text}\n```"),
    }
    if failed:
        problems = "\n".join(f"- {r.symbol}: {p}" for r in failed for p in r.problems)
        raise dg.Failure(
            description=f"restore of {day}: {len(failed)} of {len(reports)} symbol-day(s) "
            f"failed:\n{problems}",
            metadata=metadata,
        )
    return dg.Output(len(reports), metadata=metadata)


@dg.job(description="Restore a day from the GCS archive (config: day, symbols, force).")
def restore_job():
    restore_from_bucket()
