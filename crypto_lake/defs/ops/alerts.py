"""Alerts to a webhook (SPEC §10): the ``alerts`` sensor evaluates every condition each
minute, ``alert_on_run_failure`` reports failed runs as they happen.

Conditions (thresholds in the ``alerts`` config section, ``crypto_lake.lib.ops.config``):
the collector down (heartbeat missing, stale, crashed, failed; a clean stop as a warning),
a connection group down over 60 s, a data gap open over 5 min, the lake disk above 80 %, a
run failure (resolved when a later run of the same job succeeds), a blocking check failure
(R1, R2, R4, conflicting trade ids) and a QA FAIL verdict per partition (resolved when the
partition's latest result passes), archive copies missing over 6 h after their archive, the
macro source down over 1 h. Deduplication, repeats and "resolved" messages:
``crypto_lake.lib.ops.alerts``; delivery (the URL never shown): ``crypto_lake.lib.ops.webhook``.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg
from dagster._core.storage.asset_check_execution_record import (
    AssetCheckExecutionRecordStatus as Status,
)
from pydantic import SecretStr

from crypto_lake.defs.archive.automation import ARCHIVE, uncopied
from crypto_lake.defs.market.partitions import CONFIG
from crypto_lake.defs.market.quality import GATES, latest_check
from crypto_lake.defs.resources import LakeResource
from crypto_lake.lib.archive.retention import disk_usage
from crypto_lake.lib.core.config import Config, ConfigError
from crypto_lake.lib.macro.source_health import read_source_health
from crypto_lake.lib.ops import conditions
from crypto_lake.lib.ops.alerts import Alert, AlertBook, Sent, deliver, iso, open_book
from crypto_lake.lib.ops.config import AlertsConfig
from crypto_lake.lib.ops.webhook import redact
from crypto_lake.lib.raw.heartbeat import CollectorHealth, collector_health

QA_CHECK = ("qa_verdicts", "no_fail_verdict")
PARTITION_TAGS = ("dagster/partition", "dagster/asset_partition_range_start",
                  "dagster/asset_partition_range_end")  # fmt: skip


@dataclass(frozen=True)
class TickReport:
    """What one evaluation did: the keys firing after it, what was sent, what could not be
    judged (a condition whose evaluation raised)."""

    firing: list[str]
    sent: list[Sent]
    errors: list[str]

    def text(self) -> str:
        ok = [f"{s.state} {s.key}" for s in self.sent if s.error is None]
        failed = sorted({s.error for s in self.sent if s.error})
        parts = [f"{len(self.firing)} firing" + (f" ({', '.join(self.firing)})" if self.firing
                                                 else "")]  # fmt: skip
        if ok:
            parts.append("sent: " + ", ".join(ok))
        if failed:
            parts.append(f"{len(self.sent) - len(ok)} not delivered ({'; '.join(failed)}): "
                         "tried again next tick")  # fmt: skip
        if self.errors:
            parts.append("not evaluated: " + "; ".join(self.errors))
        return "; ".join(parts)


def alert_tick(
    instance: dg.DagsterInstance, lake: LakeResource, *, now_ns: int | None = None
) -> TickReport:
    """Evaluate every condition at ``now_ns`` (default: now), update the alert state and send
    what is due. Never raises for a condition or a delivery that fails."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    cfg, layout = lake.config, lake.layout
    acfg = cfg.alerts
    health = collector_health(layout.heartbeat_path, now_ns=now_ns)
    errors: list[str] = []

    def judge(condition: str, evaluate: Callable[[], list[Alert] | None], book: AlertBook):
        try:
            active = evaluate()
        except Exception as exc:  # one broken condition must not silence the others
            errors.append(f"{condition}: {type(exc).__name__}: {str(exc)[:200]}")
            return
        if active is not None:
            book.sync(condition, active, now_ns)

    with open_book(layout.state_dir, acfg, lake=str(layout.root), now_ns=now_ns) as book:
        judge("collector_down", lambda: conditions.collector_alerts(health, acfg), book)
        judge("connection_down", lambda: conditions.connection_alerts(health, acfg), book)
        judge("open_gap", lambda: conditions.gap_alerts(health, acfg), book)
        threshold = acfg.disk_fraction or cfg.archive.disk_warn_fraction
        judge("disk", lambda: conditions.disk_alerts(
            _disk_fraction(lake, health), threshold, str(layout.root)), book)  # fmt: skip
        judge("macro_source_down", lambda: conditions.macro_alerts(
            read_source_health(layout), now_ns, acfg), book)  # fmt: skip
        for condition, checks in (("blocking_check", [(r.asset, r.name) for r in GATES]),
                                  ("qa_fail", [QA_CHECK])):  # fmt: skip
            judge(condition, lambda c=condition, k=checks: check_alerts(
                instance, book, c, k, acfg), book)  # fmt: skip
        judge("archive_copy", lambda: archive_copy_alerts(instance, lake, now_ns, acfg), book)
        try:
            book.resolve(recovered_jobs(instance, book), now_ns)
        except Exception as exc:
            errors.append(f"run_failure: {type(exc).__name__}")
        url, problem = webhook_url(cfg)
        sent = deliver(book, url, now_ns, unavailable=problem)
        firing = sorted(book.firing())
    return TickReport(firing, sent, errors)


def webhook_url(cfg: Config) -> tuple[SecretStr | None, str | None]:
    """The webhook URL, or why it cannot be had (both variables set, an unreadable secret
    file: ``ConfigError`` words it without the value)."""
    try:
        return cfg.webhook_url, None
    except ConfigError as exc:
        return None, f"webhook not usable: {exc}"


def _disk_fraction(lake: LakeResource, health: CollectorHealth) -> float | None:
    """The lake file system's used fraction: measured here when the lake is mounted here,
    else as the collector's heartbeat reports it."""
    root = lake.layout.root
    if root.exists():
        return disk_usage(root).fraction
    return health.disk_used_fraction


def check_alerts(
    instance: dg.DagsterInstance, book: AlertBook, condition: str,
    checks: list[tuple[str, str]], acfg: AlertsConfig,
) -> list[Alert]:  # fmt: skip
    """One alert per partition whose latest result of one of ``checks`` failed (ERROR
    severity: a skipped check is a WARN and does not alert). Looks at the latest
    ``check_lookback`` results of each check, plus the partitions already firing."""
    firing = {(e["details"].get("check"), e["details"].get("partition"))
              for e in book.firing(condition).values()}  # fmt: skip
    out = []
    for asset, check in checks:
        key = dg.AssetCheckKey(dg.AssetKey(asset), check)
        latest: dict[str, tuple] = {}
        records = instance.event_log_storage.get_asset_check_execution_history(
            key, limit=acfg.check_lookback, status={Status.SUCCEEDED, Status.FAILED}
        )
        for r in records:  # newest first
            if r.partition and r.partition not in latest and r.event is not None:
                evaluation = r.event.dagster_event.event_specific_data
                latest[r.partition] = (evaluation, r.run_id, r.event.timestamp)
        for c, partition in firing:
            if c == check and partition not in latest:
                found = latest_check(instance, asset, check, partition)
                if found is not None:
                    latest[partition] = found
        for partition, (evaluation, run_id, at) in sorted(latest.items()):
            if evaluation.passed or evaluation.severity != dg.AssetCheckSeverity.ERROR:
                continue
            out.append(_check_alert(condition, asset, check, partition, evaluation, run_id, at))
    return out


def _check_alert(condition: str, asset: str, check: str, partition: str,
                 evaluation: dg.AssetCheckEvaluation, run_id: str, at: float) -> Alert:  # fmt: skip
    description = (evaluation.description or "failed").splitlines()[0][:300]
    if condition == "qa_fail":
        summary = f"QA verdict FAIL for {partition}: {description}; the day will not be archived"
    else:
        summary = (f"blocking check {check} failed for {partition}: {description}; the "
                   "partition's downstream assets are held back")  # fmt: skip
    details = {"asset": asset, "check": check, "partition": partition, "run_id": run_id,
               "evaluated_at": iso(int(at * 1e9)), "description": description}  # fmt: skip
    return Alert(condition, f"{check}:{partition}", "critical", summary, details)


def archive_copy_alerts(
    instance: dg.DagsterInstance, lake: LakeResource, now_ns: int, acfg: AlertsConfig
) -> list[Alert]:
    """``archive_copy`` when partitions archived over ``archive_copy_seconds`` ago still have
    no verified copy in the bucket (copies failing, or not running); none without a bucket."""
    if not lake.config.archive.bucket:
        return []
    late = []
    for day, symbols in sorted(uncopied(instance).items()):
        for symbol in sorted(symbols):
            key = f"{day}|{symbol}"
            result = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=ARCHIVE, asset_partitions=[key]), limit=1
            )
            if not result.records:
                continue
            age_s = now_ns / 1e9 - result.records[0].timestamp
            if age_s >= acfg.archive_copy_seconds:
                late.append((key, age_s))
    if not late:
        return []
    oldest = max(age for _, age in late) / 3600
    summary = (f"{len(late)} archived partition(s) not copied to the bucket for up to "
               f"{oldest:.1f} h: see the gcs_copy_job runs")  # fmt: skip
    details = {"partitions": [k for k, _ in late[:50]], "count": len(late),
               "oldest_hours": round(oldest, 2)}  # fmt: skip
    return [Alert("archive_copy", "", "warning", summary, details)]


def recovered_jobs(instance: dg.DagsterInstance, book: AlertBook) -> list[str]:
    """Firing ``run_failure`` keys whose job's latest finished run succeeded."""
    done = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE,
            dg.DagsterRunStatus.CANCELED]  # fmt: skip
    out = []
    for key, entry in book.firing("run_failure").items():
        job = entry.get("subject") or ""
        records = instance.get_run_records(dg.RunsFilter(job_name=job, statuses=done), limit=1)
        if records and records[0].dagster_run.status == dg.DagsterRunStatus.SUCCESS:
            out.append(key)
    return out


def run_failure_alert(
    run: dg.DagsterRun, errors: list[str], url_text: Callable[[str], str]
) -> Alert:
    """The alert for one failed run: job, run id, partition tags, the error's first line."""
    first = next((e for e in errors if e and e.strip()), "no error message")
    first = url_text(first.strip().splitlines()[0])[:300]
    tags = {k: v for k, v in run.tags.items() if k in PARTITION_TAGS}
    where = " ".join(f"{k.split('/')[-1]}={v}" for k, v in tags.items())
    summary = f"run of {run.job_name} failed ({run.run_id[:8]}{', ' + where if where else ''})"
    details = {"job": run.job_name, "run_id": run.run_id, "partition_tags": tags,
               "error": first}  # fmt: skip
    return Alert("run_failure", run.job_name, "critical", f"{summary}: {first}", details)


def _root_cause(error) -> str:
    """The innermost error's text ("RuntimeError: disk full"): Dagster wraps what the op
    raised in an "Error occurred while executing op" error."""
    while getattr(error, "cause", None) is not None:
        error = error.cause
    return error.message or ""


@dg.sensor(
    name="alerts",
    minimum_interval_seconds=CONFIG.alerts.sensor_interval_seconds,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Evaluates the alert conditions every minute and posts to the webhook "
    "(CRYPTO_LAKE_WEBHOOK_URL): collector down, connection down > 60 s, gap open > 5 min, "
    "disk > 80 %, blocking check or QA FAIL per partition, archive copies missing > 6 h, "
    "macro source down > 1 h; run failures are resolved here once their job succeeds again. "
    "At most one message per condition per hour, and one when it clears. The tick's text "
    "lists what is firing.",
)
def alerts_sensor(context: dg.SensorEvaluationContext, lake: LakeResource) -> dg.SkipReason:
    report = alert_tick(context.instance, lake)
    for s in report.sent:
        if s.error is None:
            context.log.info(f"alert sent: {s.state} {s.key}")
        else:
            context.log.warning(f"alert {s.state} {s.key} not delivered: {s.error}; "
                                "tried again next tick")  # fmt: skip
    return dg.SkipReason(report.text())


@dg.run_failure_sensor(
    name="alert_on_run_failure",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Posts a failed run (job, run id, partitions, the error's first line) to the "
    "webhook, at most once per job and hour; the alerts sensor sends 'resolved' once a later "
    "run of the job succeeds.",
)
def alert_on_run_failure(context: dg.RunFailureSensorContext, lake: LakeResource) -> None:
    url, problem = webhook_url(lake.config)
    errors = [_root_cause(e.step_failure_data.error) for e in context.get_step_failure_events()
              if e.step_failure_data and e.step_failure_data.error]  # fmt: skip
    errors.append(context.failure_event.message or "")
    alert = run_failure_alert(context.dagster_run, errors, lambda t: redact(t, url))
    now_ns = time.time_ns()
    layout = lake.layout
    with open_book(layout.state_dir, lake.config.alerts, lake=str(layout.root),
                   now_ns=now_ns) as book:  # fmt: skip
        book.fire([alert], now_ns)
        sent = deliver(book, url, now_ns, unavailable=problem)
    for s in sent:
        if s.error is None:
            context.log.info(f"alert sent: {s.state} {s.key}")
        else:
            context.log.warning(f"alert {s.state} {s.key} not delivered: {s.error}; the "
                                "alerts sensor tries again")  # fmt: skip
