"""Macro schedules: refresh today every 15 minutes, catch up the last days on a fresh lake.

``macro_minute_schedule`` (every 15 min, RUNNING by default) requests one run per day covering
every ticker: today (and yesterday during the first hour of the UTC day, so its last minutes
land), plus each of the last ``macro.catchup_days`` days on which some ticker was never
materialized: that is the start-up catch-up of a fresh lake (re-requested at most hourly
while a day stays incomplete, e.g. after Yahoo rate-limited it).

``dxy_synthetic_minute_schedule`` (every 15 min, 5 minutes later) recomputes, in one run, today's
DXY and every recent day whose FX input files are newer than its DXY file.
"""

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import dagster as dg

from crypto_lake.defs.macro.assets import dxy_synthetic_minute, macro_minute
from crypto_lake.defs.macro.partitions import (
    CONFIG,
    MACRO_TICKERS,
    day_range_tags,
)
from crypto_lake.defs.resources import LakeResource
from crypto_lake.lib.core.paths import LakeLayout
from crypto_lake.lib.macro.store import DXY_WEIGHTS, bar_path, dxy_path

REASON_TAG = "crypto_lake/macro_reason"
# The run queue lets one run of the `yahoo` pool at a time through (concurrency.pools in
# dagster.yaml): while Yahoo is slow, down or rate-limiting, retrying macro runs never hold
# every run slot, so the market runs behind them still start.
macro_minute_job = dg.define_asset_job("macro_minute_job", selection=[macro_minute])
dxy_synthetic_minute_job = dg.define_asset_job(
    "dxy_synthetic_minute_job", selection=[dxy_synthetic_minute]
)


@dataclass(frozen=True)
class PlannedRun:
    day: str
    reason: str  # recent | catchup


def recent_days(now: datetime, first_day: date) -> list[str]:
    """Today, plus yesterday during the first hour of the UTC day."""
    today = now.astimezone(UTC).date()
    days = [today]
    if now.astimezone(UTC).hour == 0:
        days.insert(0, today - timedelta(days=1))
    return [d.isoformat() for d in days if d >= first_day]


def plan_macro_runs(
    now: datetime,
    tickers: list[str],
    materialized: set[str],
    catchup_days: int,
    first_day: date,
) -> list[PlannedRun]:
    """Which days a schedule tick should refresh, all tickers at once (see module docstring)."""
    recent = recent_days(now, first_day)
    today = now.astimezone(UTC).date()
    runs = [PlannedRun(d, "recent") for d in recent]
    for back in range(catchup_days, 0, -1):
        day = (today - timedelta(days=back)).isoformat()
        if day < first_day.isoformat() or day in recent:
            continue
        if any(f"{day}|{t}" not in materialized for t in tickers):
            runs.append(PlannedRun(day, "catchup"))
    return runs


def stale_dxy_days(layout: LakeLayout, days: list[str]) -> list[tuple[str, int]]:
    """Days whose newest FX input file is newer than the DXY file (with that input mtime)."""
    out = []
    for day in days:
        inputs = [bar_path(layout, t, day) for t in DXY_WEIGHTS]
        mtimes = [p.stat().st_mtime_ns for p in inputs if p.exists()]
        if not mtimes:
            continue
        target = dxy_path(layout, day)
        if not target.exists() or target.stat().st_mtime_ns < max(mtimes):
            out.append((day, max(mtimes)))
    return out


def _tick(context: dg.ScheduleEvaluationContext) -> datetime:
    return context.scheduled_execution_time or datetime.now(UTC)


@dg.schedule(
    job=macro_minute_job,
    cron_schedule="*/15 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def macro_minute_schedule(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
    """Refresh today's macro minute bars for every ticker; catch up recent days never fetched."""
    now = _tick(context)
    materialized = set(context.instance.get_materialized_partitions(macro_minute.key))
    plan = plan_macro_runs(
        now, MACRO_TICKERS, materialized, CONFIG.macro.catchup_days, CONFIG.macro.start_date
    )
    stamp = now.strftime("%Y%m%dT%H%M")
    return [
        dg.RunRequest(
            # Recent days once per tick; an incomplete past day at most once per hour.
            run_key=f"recent:{r.day}:{stamp}"
            if r.reason == "recent"
            else f"catchup:{r.day}:{stamp[:11]}",
            tags={**day_range_tags(r.day, MACRO_TICKERS), REASON_TAG: r.reason},
        )
        for r in plan
    ]


@dg.schedule(
    job=dxy_synthetic_minute_job,
    cron_schedule="5-59/15 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def dxy_synthetic_minute_schedule(
    context: dg.ScheduleEvaluationContext, lake: LakeResource
) -> list[dg.RunRequest]:
    """Recompute today's synthetic DXY, and any recent day whose FX bars changed since."""
    now = _tick(context)
    today = now.astimezone(UTC).date()
    first = CONFIG.macro.start_date
    recent = recent_days(now, first)
    window = [
        (today - timedelta(days=b)).isoformat()
        for b in range(CONFIG.macro.catchup_days, 0, -1)
        if today - timedelta(days=b) >= first
    ]
    stale = [d for d, _ in stale_dxy_days(lake.layout, [d for d in window if d not in recent])]
    days = sorted({*stale, *recent})
    if not days:
        return []
    # One run from the oldest stale day to today: recomputing a fresh day in between is cheap.
    return [
        dg.RunRequest(
            run_key=f"dxy:{now.strftime('%Y%m%dT%H%M')}",
            tags={
                "dagster/asset_partition_range_start": days[0],
                "dagster/asset_partition_range_end": days[-1],
            },
        )
    ]
