"""QA automation: hourly over the last 90 minutes, daily over the whole previous day, and
again for a past day whenever its bars_1s are rebuilt.

All three start RUNNING on a fresh instance. Each tick launches one ranged run covering the
symbols of the day(s) concerned (date × symbol range tags, as the market automation does), so
13 symbols cost one run. The hourly run skips the charted report (it is a daily product); the
daily run and the re-run after a refresh build it.

Why the sensor: QA judges the bars that exist when it runs. When a past day's bars change
afterwards (the finalization after midnight, a late REST repair, a backfill), the QA files and
the report of that day would describe bars that are gone; ``qa_after_bars_refresh`` re-runs
the day's QA after every new bars_1s materialization of a past day. Today's partition is
refreshed every few minutes and is the hourly run's job.
"""

import json
from datetime import UTC, datetime, timedelta

import dagster as dg

from crypto_lake.defs.market.automation import (
    TRIGGER_TAG,
    block_requests,
    materialized_since,
    run_in_flight,
    valid_days,
)
from crypto_lake.defs.market.partitions import CONFIG, range_tags
from crypto_lake.defs.qa.assets import WINDOW_END_TAG, WINDOW_MINUTES_TAG
from crypto_lake.lib.qa.config import qa_config_from

QA_CONFIG = qa_config_from(CONFIG)

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


def hourly_request(tick: datetime, minutes: int) -> dg.RunRequest | dg.SkipReason:
    """The run for the ``minutes`` before ``tick`` (one or two UTC days)."""
    tick = tick.astimezone(UTC).replace(microsecond=0)
    start = tick - timedelta(minutes=minutes)
    days = valid_days([start.date().isoformat(), tick.date().isoformat()])
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
    if not valid_days([day]):
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


BARS_KEY = dg.AssetKey("bars_1s")
REFRESH_TRIGGER = "bars_refresh"


def refreshed_bars(
    instance: dg.DagsterInstance, after_storage_id: int
) -> tuple[dict[str, set[str]], int]:
    """{day: symbols} of the bars_1s partitions materialized after ``after_storage_id``, and
    the storage id to continue from."""
    return materialized_since(instance, BARS_KEY, after_storage_id)


def refresh_requests(touched: dict[str, set[str]], today: str, last: int) -> list[dg.RunRequest]:
    """One whole-day QA run per block of consecutive past days whose bars were rebuilt,
    over the declared symbols from the first to the last rebuilt one (a contiguous range)."""
    past = {day: symbols for day, symbols in touched.items() if day < today}
    return block_requests(past, REFRESH_TRIGGER, last)


@dg.sensor(
    name="qa_after_bars_refresh",
    job=qa_daily_job,
    minimum_interval_seconds=CONFIG.dagster.refresh_interval_seconds,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Re-runs the whole-day QA (and the report) of past days whose bars_1s were "
    "rebuilt since, so QA files and reports never describe bars that are gone.",
)
def qa_after_bars_refresh(context: dg.SensorEvaluationContext):
    after = int(json.loads(context.cursor)["storage_id"]) if context.cursor else 0
    if run_in_flight(context.instance, qa_daily_job.name, REFRESH_TRIGGER):
        # its bars may be rebuilt again meanwhile: wait, then take all at once
        return dg.SkipReason("previous QA re-run still in progress")
    touched, last = refreshed_bars(context.instance, after)
    cursor = json.dumps({"storage_id": last})
    requests = refresh_requests(touched, datetime.now(UTC).date().isoformat(), last)
    if not requests:
        return dg.SensorResult(skip_reason="no past day's bars_1s rebuilt", cursor=cursor)
    return dg.SensorResult(run_requests=requests, cursor=cursor)
