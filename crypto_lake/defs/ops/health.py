"""The collector's health in the Dagster UI: the asset ``collector`` and its check
``collector_recording``.

The collector is not run by Dagster, so ``collector`` is an external asset whose observations
the ``collector_health`` sensor records from the heartbeat (``state/heartbeat.json``, read by
``crypto_lake.lib.raw.heartbeat.collector_health``): the state (running, stopped, failed,
stale, crashed, missing) and why, each connection group's connection and last-message age,
the open gaps with their age, the disk use. The check turns the same reading into a badge:
passed while recording everything, a warning while a group is down or a gap is old, an error
while nothing is recorded.

Why a sensor with runless observations rather than an observable source asset run on a
schedule: no run is launched (a run per minute would cost a process, a run slot of the
two-core VM and a dozen events each), and an observation is recorded only when something
changed, or every ``CONFIRM_SECONDS`` otherwise, so the event log stays small (item 5 of
issue 18) while the latest observation is always the current state to within a minute.
"""

import json
import time
from typing import Any

import dagster as dg

from crypto_lake.defs.resources import LakeResource
from crypto_lake.lib.ops.alerts import iso
from crypto_lake.lib.raw.heartbeat import CollectorHealth, collector_health

COLLECTOR = dg.AssetKey("collector")
CHECK_NAME = "collector_recording"
CONFIRM_SECONDS = 600  # an unchanged state is observed again this often
INTERVAL_SECONDS = 60

collector = dg.AssetSpec(
    COLLECTOR,
    group_name="ops",
    kinds={"python"},
    description="The collector daemon (collector_daemon/), as its heartbeat shows it: state "
    "(running / stopped / failed / stale / crashed / missing) and why, each connection group's "
    "connection and last-message age, open data gaps and their age, lake disk use. Observed "
    "by the collector_health sensor within a minute of a change, and every 10 minutes when "
    "nothing changes: the latest observation is the current state.",
)


def health_metadata(h: CollectorHealth) -> dict[str, Any]:
    """The observation's metadata: numbers the UI plots, tables for groups and gaps."""
    ages = [g.last_message_age_s for g in h.groups if g.last_message_age_s is not None]
    gap_ages = [g.age_s for g in h.open_gaps if g.age_s is not None]
    meta: dict[str, Any] = {
        "state": h.state,
        "reason": h.reason,
        "recording": dg.MetadataValue.bool(h.recording),
        "heartbeat_updated_at": iso(h.updated_ns) or "never",
        "groups_connected": sum(g.connected for g in h.groups),
        "groups_total": len(h.groups),
        "groups": dg.MetadataValue.md(_groups_table(h)),
        "max_last_message_age_seconds": round(max(ages), 1) if ages else 0.0,
        "open_gaps": len(h.open_gaps),
        "oldest_open_gap_minutes": round(max(gap_ages) / 60, 1) if gap_ages else 0.0,
    }
    if h.age_s is not None:
        meta["heartbeat_age_seconds"] = round(h.age_s, 1)
    if h.open_gaps:
        meta["open_gap_list"] = dg.MetadataValue.md(_gaps_table(h))
    if h.unconnected_symbols:
        meta["symbols_not_connected"] = ", ".join(h.unconnected_symbols)
    if h.disk_used_fraction is not None:
        meta["disk_used_pct"] = round(100 * h.disk_used_fraction, 1)
    for name, value in (("pid", h.pid), ("hostname", h.hostname), ("exit_code", h.exit_code),
                        ("error", h.error), ("started_at", h.started_at)):  # fmt: skip
        if value is not None:
            meta[name] = value
    if h.process_alive is not None:
        meta["process_alive"] = dg.MetadataValue.bool(h.process_alive)
    return meta


def _groups_table(h: CollectorHealth) -> str:
    if not h.groups:
        return "_no connection group in the heartbeat_"
    rows = ["| group | symbols | connected | since | last message age (s) |",
            "|---|---|---|---|---|"]  # fmt: skip
    for g in h.groups:
        since = iso(g.up_since_ns if g.connected else g.down_since_ns) or "-"
        age = "-" if g.last_message_age_s is None else f"{g.last_message_age_s:.1f}"
        state = "yes" if g.connected else "**no**"
        rows.append(f"| {g.group} | {', '.join(g.symbols)} | {state} | {since} | {age} |")
    return "\n".join(rows)


def _gaps_table(h: CollectorHealth) -> str:
    rows = ["| symbol | trade ids | missing | cause | open for (min) |", "|---|---|---|---|---|"]
    for g in h.open_gaps[:20]:
        age = "-" if g.age_s is None else f"{g.age_s / 60:.1f}"
        rows.append(f"| {g.symbol} | {g.first_id}–{g.last_id} | {g.missing} | {g.cause} | {age} |")
    return "\n".join(rows)


def recording_check(h: CollectorHealth, gap_s: float, down_s: float) -> dg.AssetCheckEvaluation:
    """Passed while everything is recorded; WARN while a group is down or a gap is older than
    the alert thresholds; ERROR while the collector records nothing."""
    down = [g.group for g in h.groups
            if not g.connected and (g.down_seconds or 0) >= down_s]  # fmt: skip
    old_gaps = [g for g in h.open_gaps if (g.age_s or 0) >= gap_s]
    problems = []
    if down:
        problems.append(f"connection group(s) {', '.join(map(str, down))} down")
    if old_gaps:
        problems.append(f"{len(old_gaps)} data gap(s) open over {gap_s / 60:.0f} min")
    if not h.recording:
        passed, severity, text = False, dg.AssetCheckSeverity.ERROR, h.reason
    elif problems:
        passed, severity, text = False, dg.AssetCheckSeverity.WARN, "; ".join(problems)
    else:
        passed, severity, text = True, dg.AssetCheckSeverity.WARN, h.reason
    return dg.AssetCheckEvaluation(
        asset_key=COLLECTOR, check_name=CHECK_NAME, passed=passed, severity=severity,
        description=text, metadata={"state": h.state, "groups_down": len(down),
                                    "old_open_gaps": len(old_gaps)},
    )  # fmt: skip


def _evaluate(lake: LakeResource, now_ns: int | None = None) -> tuple[CollectorHealth, Any]:
    cfg = lake.config.alerts
    h = collector_health(lake.layout.heartbeat_path, now_ns=now_ns)
    return h, recording_check(h, cfg.open_gap_seconds, cfg.connection_down_seconds)


@dg.asset_check(
    asset=COLLECTOR,
    name=CHECK_NAME,
    description="Is the collector recording every symbol? Fails (error) while it is not "
    "running; warns while a connection group is down over a minute or a data gap is open over "
    "5 minutes. Evaluated by the collector_health sensor; executing it reads the heartbeat now.",
)
def collector_recording(lake: LakeResource) -> dg.AssetCheckResult:
    _, evaluation = _evaluate(lake)
    return dg.AssetCheckResult(
        passed=evaluation.passed, severity=evaluation.severity,
        description=evaluation.description, metadata=evaluation.metadata,
    )  # fmt: skip


def fingerprint(h: CollectorHealth, evaluation: dg.AssetCheckEvaluation) -> str:
    """What must change for a new observation before ``CONFIRM_SECONDS``."""
    disk = None if h.disk_used_fraction is None else round(h.disk_used_fraction * 100)
    parts = [h.state, [g.connected for g in h.groups], len(h.open_gaps), disk,
             evaluation.passed, str(evaluation.severity), list(h.unconnected_symbols)]  # fmt: skip
    return json.dumps(parts)


def health_tick(lake: LakeResource, cursor: str | None, *, now_ns: int | None = None):
    """The sensor's work: a SensorResult with the observation and the check evaluation when
    the state changed (or is due for confirmation), else a SkipReason."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    h, evaluation = _evaluate(lake, now_ns)
    state = json.loads(cursor) if cursor else {}
    mark = fingerprint(h, evaluation)
    fresh = now_ns / 1e9 - state.get("at", 0) < CONFIRM_SECONDS
    if state.get("mark") == mark and fresh:
        return dg.SkipReason(f"unchanged: {h.state}; {h.reason}")
    observation = dg.AssetObservation(asset_key=COLLECTOR, metadata=health_metadata(h))
    return dg.SensorResult(
        asset_events=[observation, evaluation],
        cursor=json.dumps({"mark": mark, "at": now_ns / 1e9}),
    )


@dg.sensor(
    name="collector_health",
    minimum_interval_seconds=INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Reads the collector's heartbeat every minute and records an observation of "
    "the `collector` asset (and its collector_recording check) when its state, a group's "
    "connection, the open gaps or the disk use changed, and every 10 minutes otherwise.",
)
def collector_health_sensor(context: dg.SensorEvaluationContext, lake: LakeResource):
    return health_tick(lake, context.cursor)
