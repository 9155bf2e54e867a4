"""History retention deletes replaced runs only: every partition and check reads the same."""

from datetime import UTC, datetime, timedelta

import dagster as dg
from dagster._core.event_api import PartitionKeyFilter

from crypto_lake.defs.ops.history import history_retention_job, prune_history

PARTS = dg.StaticPartitionsDefinition(["a", "b"])


class TableConfig(dg.Config):
    fail: bool = False


@dg.asset(partitions_def=PARTS, check_specs=[dg.AssetCheckSpec("sane", asset="table")])
def table(context: dg.AssetExecutionContext, config: TableConfig):
    if config.fail:
        raise dg.Failure("source down")
    yield dg.MaterializeResult(metadata={"value": context.partition_key})
    yield dg.AssetCheckResult(check_name="sane", passed=True)


def materialize(instance: dg.DagsterInstance, partition: str, fail: bool = False) -> str:
    result = dg.materialize(
        [table], instance=instance, partition_key=partition, raise_on_error=False,
        run_config={"ops": {"table": {"config": {"fail": fail}}}},
    )  # fmt: skip
    return result.run_id


def run_ids(instance: dg.DagsterInstance) -> set[str]:
    return {r.dagster_run.run_id for r in instance.get_run_records()}


def latest_state(instance: dg.DagsterInstance) -> dict:
    """What the UI shows: the materialized partitions, and each one's latest record and check."""
    key = dg.AssetKey("table")
    state = {"materialized": instance.get_materialized_partitions(key)}
    storage = instance.event_log_storage
    for p in PARTS.get_partition_keys():
        rec = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=[p]), limit=1
        ).records
        state[p] = rec[0].storage_id if rec else None
        checks = storage.get_asset_check_execution_history(
            dg.AssetCheckKey(key, "sane"), limit=1,
            partition_filter=PartitionKeyFilter(key=p),
        )  # fmt: skip
        state[f"check {p}"] = checks[0].id if checks else None
    return state


def test_prunes_replaced_and_empty_runs_and_keeps_every_current_record() -> None:
    with dg.DagsterInstance.ephemeral() as instance:
        first = materialize(instance, "a")
        b_only = materialize(instance, "b")
        second = materialize(instance, "a")  # replaces `first` entirely
        failed = materialize(instance, "b", fail=True)  # recorded nothing
        before = latest_state(instance)
        later = datetime.now(UTC) + timedelta(days=31)
        assert prune_history(instance, 30, now=datetime.now(UTC)).deleted == 0  # all too new
        result = prune_history(instance, 30, now=later)
        assert run_ids(instance) == {b_only, second}
        assert (result.examined, result.deleted, result.kept_current) == (4, 2, 2)
        assert first not in run_ids(instance) and failed not in run_ids(instance)
        assert latest_state(instance) == before
        # the check-execution index keeps no row of a deleted run (the checks page reads it)
        history = instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(dg.AssetKey("table"), "sane"), limit=100
        )
        assert {r.run_id for r in history} == {b_only, second}
        assert before["materialized"] == {"a", "b"}
        # once b is materialized again, its old run is history too
        newest_b = materialize(instance, "b")
        prune_history(instance, 30, now=later)
        assert run_ids(instance) == {second, newest_b}
        assert latest_state(instance)["materialized"] == {"a", "b"}


def test_history_job_runs_in_the_code_location() -> None:
    with dg.DagsterInstance.ephemeral() as instance:
        materialize(instance, "a")
        result = history_retention_job.execute_in_process(instance=instance)
        assert result.success
        (output,) = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
        metadata = output.event_specific_data.metadata
        assert metadata["runs_deleted"].value == 0  # nothing is 7 days old
        assert metadata["history_days"].value == 7
