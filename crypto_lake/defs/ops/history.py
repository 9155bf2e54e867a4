"""Run and event history retention: keep what the UI's answers rest on, drop what was replaced.

Every 5-minute refresh of today's partitions is a run with its materializations, check
evaluations and step events; by the next day all but the last are history nobody reads, yet
they stay in the instance's event log for ever. ``prune_history`` deletes a finished run
older than ``dagster.history_days`` (default 7) only when nothing it recorded is still the
latest of its kind: every materialization and observation it wrote has a newer one for the
same asset partition, and every check evaluation a newer one for the same check and
partition. So each partition page, check status and archive gate reads exactly what it read
before, and the runs that produced the current state of every partition stay, with their
logs. Runs that recorded nothing (a failed fetch, a refused archive) go once old enough.
Schedule and sensor ticks have their own purge in dagster.yaml (``retention``).
"""

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
from dagster._core.event_api import PartitionKeyFilter
from dagster._core.storage.asset_check_execution_record import (
    AssetCheckExecutionRecordStatus as Status,
)
from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable
from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage

from crypto_lake.defs.market.partitions import CONFIG

FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE,
            dg.DagsterRunStatus.CANCELED]  # fmt: skip
KINDS = {dg.DagsterEventType.ASSET_MATERIALIZATION, dg.DagsterEventType.ASSET_OBSERVATION,
         dg.DagsterEventType.ASSET_CHECK_EVALUATION}  # fmt: skip
COMPLETED = {Status.SUCCEEDED, Status.FAILED}


@dataclass
class Pruned:
    """What one pass looked at and deleted."""

    examined: int = 0
    deleted: int = 0
    kept_current: int = 0  # runs still holding the latest record of some partition or check
    kept_by_reason: dict[str, int] = field(default_factory=dict)


class _Latest:
    """The storage id / run id of the latest record of each (kind, key, partition), looked up
    once per pass."""

    def __init__(self, instance: dg.DagsterInstance) -> None:
        self.instance = instance
        self._memo: dict[tuple, Any] = {}

    def materialization(self, key: dg.AssetKey, partition: str | None) -> int | None:
        return self._record("mat", key, partition)

    def observation(self, key: dg.AssetKey, partition: str | None) -> int | None:
        return self._record("obs", key, partition)

    def _record(self, kind: str, key: dg.AssetKey, partition: str | None) -> int | None:
        memo_key = (kind, key, partition)
        if memo_key not in self._memo:
            flt = dg.AssetRecordsFilter(
                asset_key=key, asset_partitions=[partition] if partition else None
            )
            fetch = (self.instance.fetch_materializations if kind == "mat"
                     else self.instance.fetch_observations)  # fmt: skip
            records = fetch(flt, limit=1).records
            self._memo[memo_key] = records[0].storage_id if records else None
        return self._memo[memo_key]

    def check_runs(self, check: dg.AssetCheckKey, partition: str | None) -> set[str]:
        """The runs of the latest evaluation of ``check`` on ``partition``, of any status and
        of a completed one (what the archive gates read): a run holding either is current."""
        memo_key = ("check", check, partition)
        if memo_key not in self._memo:
            storage = self.instance.event_log_storage
            pf = PartitionKeyFilter(key=partition) if partition else None
            runs = set()
            for statuses in (None, COMPLETED):
                history = storage.get_asset_check_execution_history(
                    check, limit=1, status=statuses, partition_filter=pf
                )
                runs.update(r.run_id for r in history)
            self._memo[memo_key] = runs
        return self._memo[memo_key]


def _records(instance: dg.DagsterInstance, run_id: str) -> Iterator[dg.EventLogRecord]:
    cursor = None
    while True:
        conn = instance.get_records_for_run(run_id, cursor=cursor, of_type=KINDS, limit=1000)
        yield from conn.records
        if not conn.has_more:
            return
        cursor = conn.cursor


def still_current(instance: dg.DagsterInstance, run_id: str, latest: _Latest) -> str | None:
    """Why ``run_id`` must stay (the first record of it that is still the latest), or None."""
    for record in _records(instance, run_id):
        event = record.event_log_entry.dagster_event
        if event is None:
            continue
        kind = event.event_type
        if kind == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            evaluation = event.event_specific_data
            check = dg.AssetCheckKey(evaluation.asset_key, evaluation.check_name)
            if run_id in latest.check_runs(check, evaluation.partition):
                return f"latest {check.name} of {evaluation.partition or 'its asset'}"
            continue
        lookup = (latest.materialization if kind == dg.DagsterEventType.ASSET_MATERIALIZATION
                  else latest.observation)  # fmt: skip
        if lookup(event.asset_key, event.partition) == record.storage_id:
            return f"latest {kind.value.lower()} of {event.asset_key.to_user_string()}"
    return None


def delete_run(instance: dg.DagsterInstance, run_id: str) -> None:
    """``instance.delete_run`` plus the run's rows in the check-execution index, which Dagster
    1.13 leaves behind (the checks page reads that table, so it would grow for ever). Those
    rows go first: ``delete_run`` then drops the check status checkpoints
    (``crypto_lake/storage.py``) after every row is gone."""
    storage = instance.event_log_storage
    if isinstance(storage, SqlEventLogStorage):  # SQLite and Postgres alike
        table = AssetCheckExecutionsTable
        with storage.index_connection() as conn:
            conn.execute(table.delete().where(table.c.run_id == run_id))
    instance.delete_run(run_id)


def prune_history(
    instance: dg.DagsterInstance,
    days: int,
    *,
    now: datetime | None = None,
    max_runs: int = 5000,
) -> Pruned:
    """Delete finished runs older than ``days`` that hold no latest record (module
    docstring); at most ``max_runs`` examined per pass, oldest first."""
    cutoff = (now or datetime.now(UTC)) - timedelta(days=days)
    filters = dg.RunsFilter(statuses=FINISHED, updated_before=cutoff)
    latest = _Latest(instance)
    result = Pruned()
    for record in instance.get_run_records(filters, limit=max_runs, ascending=True):
        result.examined += 1
        reason = still_current(instance, record.dagster_run.run_id, latest)
        if reason is None:
            delete_run(instance, record.dagster_run.run_id)
            result.deleted += 1
        else:
            result.kept_current += 1
            kind = reason.split(" of ")[0]
            result.kept_by_reason[kind] = result.kept_by_reason.get(kind, 0) + 1
    return result


@dg.op(description="Deletes finished runs older than dagster.history_days whose every "
       "record has been replaced by a newer one (crypto_lake/defs/ops/history.py).")  # fmt: skip
def prune_run_history(context: dg.OpExecutionContext) -> dg.Output:
    days = CONFIG.dagster.history_days
    started = time.monotonic()
    result = prune_history(context.instance, days)
    context.log.info(
        f"history older than {days} days: {result.examined} runs examined, "
        f"{result.deleted} deleted, {result.kept_current} kept (still the latest of something)"
    )
    return dg.Output(
        None,
        metadata={
            "history_days": days,
            "runs_examined": result.examined,
            "runs_deleted": result.deleted,
            "runs_kept_current": result.kept_current,
            "kept_by_reason": dg.MetadataValue.json(result.kept_by_reason),
            "seconds": round(time.monotonic() - started, 1),
        },
    )


@dg.job(description="Run and event history retention: see the prune_run_history op.")
def history_retention_job():
    prune_run_history()


@dg.schedule(
    name="history_retention_daily",
    job=history_retention_job,
    cron_schedule="50 2 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Deletes old runs whose records have all been replaced by newer ones.",
)
def history_retention_daily(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    return dg.RunRequest(run_key=None)
