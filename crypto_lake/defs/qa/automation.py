"""QA automation: hourly over the last 90 minutes, daily over the whole previous day.

Both schedules start RUNNING on a fresh instance. Each tick launches one ranged run covering
every configured symbol of the day(s) concerned (date × symbol range tags, as the market
automation does), so 13 symbols cost one run. The hourly run skips the charted report (it is
a daily product); the daily run builds it.
"""

from datetime import UTC, datetime, timedelta

import dagster as dg

from crypto_lake.defs.market.partitions import CONFIG, market_partitions, range_tags
from crypto_lake.defs.qa.assets import WINDOW_END_TAG, WINDOW_MINUTES_TAG
from crypto_lake.lib.qa.config import qa_config_from

QA_CONFIG = qa_config_from(CONFIG)
TRIGGER_TAG = "crypto_lake/trigger"

qa_hourly_job = dg.define_asset_job(
    name="qa_hourly_job",
    selection=dg.AssetSelection.assets("qa_violations", "qa_anomalies", "qa_verdicts"),
    description="QA of the last minutes for all symbols: violations, anomalies, verdicts.",
)
qa_daily_job = dg.define_asset_job(
    name="qa_daily_job",
    selection=dg.AssetSelection.assets("qa_violations", "qa_anomalies", "qa_verdicts", "qa_report"),
    description="QA of whole days for all symbols, and the charted daily report.",
)


def _valid_days(days: list[str]) -> list[str]:
    keys = set(market_partitions.primary_dimension.partitions_def.get_partition_keys())
    return sorted(d for d in set(days) if d in keys)


def hourly_request(tick: datetime, minutes: int) -> dg.RunRequest | dg.SkipReason:
    """The run for the ``minutes`` before ``tick`` (one or two UTC days)."""
    tick = tick.astimezone(UTC).replace(microsecond=0)
    start = tick - timedelta(minutes=minutes)
    days = _valid_days([start.date().isoformat(), tick.date().isoformat()])
    if not days:
        return dg.SkipReason(f"no partition for {start.date()}..{tick.date()}")
    return dg.RunRequest(
        run_key=f"qa-hourly:{tick.isoformat()}",
        tags={
            **range_tags(days, CONFIG.symbols),
            WINDOW_END_TAG: tick.isoformat(),
            WINDOW_MINUTES_TAG: str(minutes),
            TRIGGER_TAG: "qa_hourly",
        },
    )


def daily_request(tick: datetime) -> dg.RunRequest | dg.SkipReason:
    """The run for the whole UTC day before ``tick``."""
    day = (tick.astimezone(UTC).date() - timedelta(days=1)).isoformat()
    if not _valid_days([day]):
        return dg.SkipReason(f"{day} is before the first partition")
    return dg.RunRequest(
        run_key=f"qa-daily:{day}:{tick.isoformat()}",
        tags={**range_tags([day], CONFIG.symbols), TRIGGER_TAG: "qa_daily"},
    )


@dg.schedule(
    name="qa_hourly",
    job=qa_hourly_job,
    cron_schedule=QA_CONFIG.hourly_cron,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every hour: QA of the last 90 minutes (qa.hourly_window_minutes) for all "
    "symbols; refreshes today's hourly and day-so-far verdicts.",
)
def qa_hourly(context: dg.ScheduleEvaluationContext):
    tick = context.scheduled_execution_time or datetime.now(UTC)
    return hourly_request(tick, QA_CONFIG.hourly_window_minutes)


@dg.schedule(
    name="qa_daily",
    job=qa_daily_job,
    cron_schedule=QA_CONFIG.daily_cron,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every day after yesterday is finalized: QA of the whole previous day for all "
    "symbols, final verdicts and the charted report.",
)
def qa_daily(context: dg.ScheduleEvaluationContext):
    return daily_request(context.scheduled_execution_time or datetime.now(UTC))
