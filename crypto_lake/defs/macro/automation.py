"""Macro automation: today every 15 minutes, a capped catch-up, nothing while Yahoo is down.

``macro_minute_sensor`` (evaluated every minute, RUNNING by default) requests runs of
``macro_minute_job``, one per day covering every ticker:

- today (and yesterday during the first hour of the UTC day, so its last minutes land), once
  ``macro.refresh_interval_seconds`` (15 min) after the previous request; on a fresh
  deployment at once, so the first macro minutes come within a minute of the start;
- each of the last ``macro.catchup_days`` days on which some ticker was never materialized
  (the catch-up of a fresh lake), newest first, again at most hourly while it stays
  incomplete (e.g. after Yahoo rate-limited it).

Caps: no day is requested while a run covering it is queued or in progress, and no more than
``macro.max_runs_in_flight`` (2) macro runs are queued or in progress at once, counting UI
backfills and launchpad runs of ``macro_minute``: a catch-up of 7 days, or a dead Yahoo, never
fills the run queue. Circuit breaker (lib/macro/source_health.py): after
``macro.breaker_failures`` (3) Yahoo fetches in a row failed at the source, the sensor queues
nothing and says why ("Yahoo unreachable since ..., last error ..., next probe at ...");
every ``macro.breaker_cooldown_seconds`` (10 min) it lets one probe run (today) through, and
the first answer from Yahoo closes the breaker.

``dxy_synthetic_minute_sensor`` (every minute) recomputes, in one run, every recent day
(today included) whose FX input files are newer than its DXY file: the DXY follows each macro
refresh within a minute, and costs nothing while no FX input changed.
"""

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import dagster as dg

from crypto_lake.defs.macro.assets import dxy_synthetic_minute, macro_minute
from crypto_lake.defs.macro.partitions import CONFIG, MACRO_TICKERS, day_range_tags
from crypto_lake.defs.resources import LakeResource
from crypto_lake.lib.core.config import MacroConfig
from crypto_lake.lib.core.paths import LakeLayout
from crypto_lake.lib.macro.source_health import (
    Breaker,
    SourceHealth,
    open_breaker_reason,
    read_source_health,
)
from crypto_lake.lib.macro.store import DXY_WEIGHTS, bar_path, dxy_path

REASON_TAG = "crypto_lake/macro_reason"  # recent | catchup | probe
DAY_TAG = "crypto_lake/macro_day"
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
SENSOR_INTERVAL_SECONDS = 60
POLICY = CONFIG.macro  # cadence, run cap and breaker: the macro config section
IN_FLIGHT = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED,
             dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]  # fmt: skip
# The run queue lets one run of the `yahoo` pool at a time through (concurrency.pools in
# dagster.yaml): while Yahoo is slow, down or rate-limiting, macro runs never hold every run
# slot, so the market runs behind them still start.
macro_minute_job = dg.define_asset_job("macro_minute_job", selection=[macro_minute])
dxy_synthetic_minute_job = dg.define_asset_job(
    "dxy_synthetic_minute_job", selection=[dxy_synthetic_minute]
)


@dataclass(frozen=True)
class PlannedRun:
    day: str
    reason: str  # recent | catchup | probe


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
    """The days a refresh could cover, in order of importance: the recent ones, then the
    catch-up days with some ticker never materialized, newest first."""
    recent = recent_days(now, first_day)
    today = now.astimezone(UTC).date()
    runs = [PlannedRun(d, "recent") for d in reversed(recent)]
    for back in range(1, catchup_days + 1):
        day = (today - timedelta(days=back)).isoformat()
        if day < first_day.isoformat() or day in recent:
            continue
        if any(f"{day}|{t}" not in materialized for t in tickers):
            runs.append(PlannedRun(day, "catchup"))
    return runs


def _due(run: PlannedRun, last: datetime | None, now: datetime, policy: MacroConfig) -> bool:
    """Whether ``run``'s day was last requested long enough ago (or never)."""
    if last is None:
        return True
    recent = run.reason == "recent"
    wait = policy.refresh_interval_seconds if recent else policy.catchup_retry_seconds
    return (now - last).total_seconds() >= wait


def select_macro_runs(
    plan: list[PlannedRun],
    now: datetime,
    in_flight_days: set[str],
    runs_in_flight: int,
    last_requested: dict[str, datetime],
    health: SourceHealth | None,
    policy: MacroConfig,
) -> list[PlannedRun] | str:
    """The runs one sensor tick requests, or why it requests none (a skip reason).

    ``in_flight_days``/``runs_in_flight``: the days covered by, and the number of, macro runs
    queued or in progress; ``last_requested``: when the sensor last requested each day.
    """
    breaker = Breaker.of(policy)
    if health is not None and breaker.is_open(health):
        reason = open_breaker_reason(health, breaker)
        if not breaker.probe_due(health, int(now.timestamp() * 1e9)):
            return reason
        if runs_in_flight:
            return f"{reason}; probe due, waiting for the {runs_in_flight} macro run(s) in flight"
        return [PlannedRun(plan[0].day, "probe")] if plan else reason
    due = [
        r
        for r in plan
        if r.day not in in_flight_days and _due(r, last_requested.get(r.day), now, policy)
    ]
    room = policy.max_runs_in_flight - runs_in_flight
    if due and room <= 0:
        days = ", ".join(r.day for r in due)
        return (
            f"{runs_in_flight} macro runs already queued or in progress (at most "
            f"{policy.max_runs_in_flight}); waiting before requesting {days}"
        )
    if not due:
        return _nothing_due(plan, now, in_flight_days, last_requested, policy)
    return due[:room]


def _nothing_due(
    plan: list[PlannedRun],
    now: datetime,
    in_flight_days: set[str],
    last_requested: dict[str, datetime],
    policy: MacroConfig,
) -> str:
    """The skip reason of a tick with nothing to request."""
    today = now.astimezone(UTC).date().isoformat()
    if today in in_flight_days:
        return f"today's refresh ({today}) is queued or in progress"
    last = last_requested.get(today)
    if last is None:
        return "no macro partition to refresh"
    nxt = last + timedelta(seconds=policy.refresh_interval_seconds)
    catchup = [r.day for r in plan if r.reason == "catchup"]
    waiting = f"; incomplete past days retried hourly: {', '.join(catchup)}" if catchup else ""
    return (
        f"today's refresh last requested at {last:%H:%M:%S} UTC, next at {nxt:%H:%M:%S} UTC"
        f"{waiting}"
        if nxt > now
        else f"today's refresh is waiting{waiting}"
    )


def macro_runs_in_flight(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    """Queued or running runs that materialize macro_minute, however they were launched."""
    runs = instance.get_runs(dg.RunsFilter(statuses=IN_FLIGHT), limit=500)  # the cap is ~2
    return [
        r
        for r in runs
        if r.job_name == macro_minute_job.name
        or (r.asset_selection is not None and macro_minute.key in r.asset_selection)
    ]


def run_days(run: dg.DagsterRun) -> set[str]:
    """The UTC days a macro run covers, from its tags (ours, a range, or one partition)."""
    tags = run.tags
    if DAY_TAG in tags:
        return {tags[DAY_TAG]}
    try:
        if RANGE_START in tags and RANGE_END in tags:
            first = date.fromisoformat(tags[RANGE_START].split("|")[0])
            last = date.fromisoformat(tags[RANGE_END].split("|")[0])
            return {(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)}
        if "dagster/partition" in tags:
            return {date.fromisoformat(tags["dagster/partition"].split("|")[0]).isoformat()}
    except ValueError:
        pass  # not a macro partition key: the run still counts against the cap
    return set()


def last_requested(instance: dg.DagsterInstance, days: list[str]) -> dict[str, datetime]:
    """When the sensor last requested each of ``days`` (its newest run of the day)."""
    out = {}
    for day in days:
        records = instance.get_run_records(
            dg.RunsFilter(job_name=macro_minute_job.name, tags={DAY_TAG: day}), limit=1
        )
        if records:
            out[day] = records[0].create_timestamp.astimezone(UTC)
    return out


def macro_tick(
    instance: dg.DagsterInstance, layout: LakeLayout, now: datetime, policy: MacroConfig = POLICY
) -> dg.SensorResult:
    """One evaluation of macro_minute_sensor at ``now`` (tests pass their own clock)."""
    materialized = set(instance.get_materialized_partitions(macro_minute.key))
    plan = plan_macro_runs(
        now, MACRO_TICKERS, materialized, CONFIG.macro.catchup_days, CONFIG.macro.start_date
    )
    in_flight = macro_runs_in_flight(instance)
    chosen = select_macro_runs(
        plan,
        now,
        set().union(*(run_days(r) for r in in_flight)),
        len(in_flight),
        last_requested(instance, [r.day for r in plan]),
        read_source_health(layout),
        policy,
    )
    if isinstance(chosen, str):
        return dg.SensorResult(skip_reason=chosen)
    stamp = now.strftime("%Y%m%dT%H%M%S")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"{r.reason}:{r.day}:{stamp}",
                tags={**day_range_tags(r.day, MACRO_TICKERS), REASON_TAG: r.reason, DAY_TAG: r.day},
            )
            for r in chosen
        ]
    )


@dg.sensor(
    job=macro_minute_job,
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Today's macro minutes every 15 minutes and a catch-up of recent days never "
    "fetched, at most 2 macro runs queued at a time; queues nothing while Yahoo is unreachable "
    "(circuit breaker, one probe run every 10 minutes).",
)
def macro_minute_sensor(context: dg.SensorEvaluationContext, lake: LakeResource):
    return macro_tick(context.instance, lake.layout, datetime.now(UTC))


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


def dxy_tick(instance: dg.DagsterInstance, layout: LakeLayout, now: datetime) -> dg.SensorResult:
    """One evaluation of dxy_synthetic_minute_sensor at ``now``."""
    running = instance.get_run_records(
        dg.RunsFilter(job_name=dxy_synthetic_minute_job.name, statuses=IN_FLIGHT), limit=1
    )
    if running:
        return dg.SensorResult(skip_reason="previous DXY run still queued or in progress")
    today, first = now.astimezone(UTC).date(), CONFIG.macro.start_date
    window = [
        (today - timedelta(days=b)).isoformat()
        for b in range(CONFIG.macro.catchup_days, -1, -1)
        if today - timedelta(days=b) >= first
    ]
    stale = stale_dxy_days(layout, window)
    if not stale:
        return dg.SensorResult(skip_reason="no FX input changed since the DXY was computed")
    days = [d for d, _ in stale]
    newest_input = max(m for _, m in stale)
    # One run from the oldest stale day to the newest: recomputing a fresh day in between is
    # cheap. Keyed by the newest input, so a failing run is not repeated until inputs change.
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"dxy:{days[0]}:{days[-1]}:{newest_input}",
                tags={RANGE_START: days[0], RANGE_END: days[-1]},
            )
        ]
    )


@dg.sensor(
    job=dxy_synthetic_minute_job,
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Recomputes the synthetic DXY of every recent day (today included) whose FX "
    "minute bars changed since, in one run.",
)
def dxy_synthetic_minute_sensor(context: dg.SensorEvaluationContext, lake: LakeResource):
    return dxy_tick(context.instance, lake.layout, datetime.now(UTC))
