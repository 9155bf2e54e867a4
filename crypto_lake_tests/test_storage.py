"""The instance storage's checkpointed check status (crypto_lake/storage.py).

A real SQLite instance made from the shipped dagster.yaml, real runs of a date x symbol asset
with a check: after every change (pass, fail, a failed run, a newer materialization, a run
deleted, the asset wiped, the partitions redefined) the status the storage returns from its
checkpoint equals Dagster's own computation from nothing.
"""

import logging
import shutil
import sqlite3
import threading
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.storage.asset_check_execution_record import (
    AssetCheckExecutionResolvedStatus as Resolved,
)
from dagster._core.storage.asset_check_state import AssetCheckState, bulk_update_asset_check_state
from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage

from crypto_lake import storage as lake_storage
from crypto_lake.defs.market.checks import target_of
from crypto_lake.defs.ops.check_status import check_status_checkpoint

ROOT = Path(__file__).resolve().parents[1]
DAYS = ["2024-03-01", "2024-03-02", "2024-03-03"]
FAIL: set[str] = set()  # partitions whose check fails
RAISE: set[str] = set()  # partitions whose asset raises
HOLD: dict[str, tuple[threading.Event, threading.Event]] = {}  # (started, release)


def partitions(symbols=("BTCUSDT", "ETHUSDT")) -> dg.MultiPartitionsDefinition:
    return dg.MultiPartitionsDefinition({
        "date": dg.DailyPartitionsDefinition(start_date=DAYS[0], end_offset=1),
        "symbol": dg.StaticPartitionsDefinition(list(symbols)),
    })  # fmt: skip


BARS = dg.AssetKey("bars")
CHECK = dg.AssetCheckKey(BARS, "ohlc")
HEADROOM = dg.AssetCheckKey(BARS, "headroom")
RANGE = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")


def make_asset(pdef: dg.MultiPartitionsDefinition) -> dg.Definitions:
    """The asset ``bars`` and its check ``ohlc``, partitioned by ``pdef``, built as the market
    jobs build them: a run names its partition by range tags, and the check reports each
    partition's result itself (jobs ``all`` and ``check_only``)."""

    @dg.asset(name="bars", partitions_def=pdef)
    def bars(context: dg.AssetExecutionContext) -> None:
        if context.run.tags[RANGE[0]] in RAISE:
            raise RuntimeError("source unavailable")

    spec = dg.AssetCheckSpec("ohlc", asset="bars", blocking=True, partitions_def=pdef)

    @dg.multi_asset_check(specs=[spec], can_subset=False)
    def ohlc(context: dg.AssetCheckExecutionContext):
        key = context.run.tags[RANGE[0]]
        if key in HOLD:
            started, release = HOLD[key]
            started.set()
            assert release.wait(60)
        yield dg.AssetCheckEvaluation(
            asset_key=dg.AssetKey("bars"), check_name="ohlc", passed=key not in FAIL,
            partition=key, target_materialization_data=target_of(context.instance, key, BARS),
        )  # fmt: skip
        yield dg.Output(None, output_name=spec.get_python_identifier())

    @dg.asset_check(asset=bars, name="headroom")  # unpartitioned, on the partitioned asset
    def headroom() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed="headroom" not in FAIL)

    check_only = dg.AssetSelection.checks(CHECK)
    jobs = [
        dg.define_asset_job("all", selection=dg.AssetSelection.assets(BARS) | check_only),
        dg.define_asset_job("check_only", selection=check_only),
        dg.define_asset_job("headroom", selection=dg.AssetSelection.checks(HEADROOM)),
    ]
    return dg.Definitions(assets=[bars], asset_checks=[ohlc, headroom], jobs=jobs,
                          sensors=[check_status_checkpoint])  # fmt: skip


@pytest.fixture(autouse=True)
def no_lag(monkeypatch):
    """No re-read window: each update must find what changed by itself (the window only
    covers late commits, which these single-writer tests do not make)."""
    monkeypatch.setattr(lake_storage, "LAG_IDS", 0)


@pytest.fixture
def instance(tmp_path: Path):
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    FAIL.clear()
    RAISE.clear()
    HOLD.clear()
    with dg.DagsterInstance.from_config(str(home)) as inst:
        yield inst


def run(instance, defs: dg.Definitions, day: str, symbol: str, check_only: bool = False) -> str:
    key = f"{day}|{symbol}"
    job = defs.resolve_job_def("check_only" if check_only else "all")
    result = job.execute_in_process(instance=instance, tags=dict.fromkeys(RANGE, key),
                                    raise_on_error=False)  # fmt: skip
    return result.run_id


def status(instance, pdef) -> dict[str, set[str]]:
    """{status: partitions} as the storage returns it (from its checkpoint), after asserting
    that it equals Dagster's computation from an empty state."""
    got = instance.event_log_storage.get_asset_check_state([(CHECK, pdef)])[CHECK]
    ref = bulk_update_asset_check_state(instance, [(CHECK, pdef)], {CHECK: AssetCheckState.empty()})
    ref = ref[CHECK]
    assert got.subsets == ref.subsets
    assert got.in_progress_runs == ref.in_progress_runs
    return {s.value: set(sub.subset_value.get_partition_keys()) for s, sub in got.subsets.items()
            if not sub.is_empty}  # fmt: skip


def test_an_unpartitioned_check_on_a_partitioned_asset(instance) -> None:
    pdef = partitions()
    defs = make_asset(pdef)
    run(instance, defs, DAYS[0], "BTCUSDT")
    keys = [(CHECK, pdef), (HEADROOM, None)]
    for failing in (False, True):
        if failing:
            FAIL.add("headroom")
        defs.resolve_job_def("headroom").execute_in_process(instance=instance, raise_on_error=False)
        got = instance.event_log_storage.get_asset_check_state(keys)
        empty = {key: AssetCheckState.empty() for key, _ in keys}
        ref = bulk_update_asset_check_state(instance, keys, empty)
        for key, _ in keys:
            assert (got[key].subsets, got[key].in_progress_runs) == (
                ref[key].subsets, ref[key].in_progress_runs)  # fmt: skip
        expected = Resolved.FAILED if failing else Resolved.SUCCEEDED
        assert not got[HEADROOM].subsets[expected].is_empty


def saved(instance) -> dict[str, str]:
    name = lake_storage.KV_PREFIX + CHECK.to_user_string()
    return {k: v for k, v in instance.run_storage.get_cursor_values({name}).items() if v}


def test_shipped_instance_uses_the_checkpointing_storage(instance) -> None:
    assert type(instance).__name__ == "LakeInstance"
    assert isinstance(instance.event_log_storage, lake_storage.CheckStateCheckpoints)
    # run workers rebuild the instance from its ref: the same classes
    ref = instance.get_ref()
    rebuilt = dg.DagsterInstance.from_ref(ref)
    assert isinstance(rebuilt.event_log_storage, lake_storage.LakeSqliteEventLogStorage)
    assert rebuilt.event_log_storage._base_dir == instance.event_log_storage._base_dir


def test_checkpointed_status_equals_a_full_computation(instance) -> None:
    pdef = partitions()
    bars = make_asset(pdef)
    FAIL.add("2024-03-02|BTCUSDT")
    first = run(instance, bars, DAYS[0], "BTCUSDT")
    run(instance, bars, DAYS[1], "BTCUSDT")
    assert status(instance, pdef) == {"SUCCEEDED": {"2024-03-01|BTCUSDT"},
                                      "FAILED": {"2024-03-02|BTCUSDT"}}  # fmt: skip
    assert saved(instance), "no checkpoint stored"

    # each change below is applied to the stored checkpoint, not computed from nothing
    FAIL.add("2024-03-01|BTCUSDT")
    run(instance, bars, DAYS[0], "BTCUSDT")  # now fails
    RAISE.add("2024-03-03|ETHUSDT")
    run(instance, bars, DAYS[2], "ETHUSDT")  # the run fails: the check never ran
    assert status(instance, pdef) == {
        "FAILED": {"2024-03-01|BTCUSDT", "2024-03-02|BTCUSDT"},
        "EXECUTION_FAILED": {"2024-03-03|ETHUSDT"},
    }
    # a newer materialization without a check: the check's result is no longer current
    instance.report_runless_asset_event(
        dg.AssetMaterialization("bars", partition="2024-03-02|BTCUSDT")
    )
    assert status(instance, pdef) == {"FAILED": {"2024-03-01|BTCUSDT"},
                                      "EXECUTION_FAILED": {"2024-03-03|ETHUSDT"}}  # fmt: skip
    # a run deleted (its checkpoint is dropped and computed again)
    instance.delete_run(first)
    assert saved(instance) == {}, "a deletion must drop the checkpoints"
    assert status(instance, pdef)["FAILED"] == {"2024-03-01|BTCUSDT"}
    instance.wipe_assets([dg.AssetKey("bars")])
    assert saved(instance) == {}
    assert status(instance, pdef) == {}


def test_a_check_in_progress_gets_its_result(instance) -> None:
    """A planned check record gets its result in place (its row id stays older than the
    checkpoint): the checkpoint saw the run in progress, so it reads that run's partitions."""
    pdef = partitions()
    bars = make_asset(pdef)
    run(instance, bars, DAYS[0], "BTCUSDT")
    run(instance, bars, DAYS[1], "ETHUSDT")
    FAIL.add("2024-03-02|ETHUSDT")  # the check alone, again (no new materialization): it fails
    started, release = HOLD.setdefault("2024-03-02|ETHUSDT", (threading.Event(), threading.Event()))
    worker = threading.Thread(target=run, args=(instance, bars, DAYS[1], "ETHUSDT", True))
    worker.start()
    try:
        assert started.wait(60)
        assert status(instance, pdef) == {"SUCCEEDED": {"2024-03-01|BTCUSDT"},
                                          "IN_PROGRESS": {"2024-03-02|ETHUSDT"}}  # fmt: skip
    finally:
        release.set()
        worker.join(60)
    assert status(instance, pdef) == {"SUCCEEDED": {"2024-03-01|BTCUSDT"},
                                      "FAILED": {"2024-03-02|ETHUSDT"}}  # fmt: skip


def test_a_changed_partitions_definition_starts_again(instance) -> None:
    two = partitions()
    run(instance, make_asset(two), DAYS[0], "BTCUSDT")
    assert status(instance, two) == {"SUCCEEDED": {"2024-03-01|BTCUSDT"}}
    three = partitions(("BTCUSDT", "ETHUSDT", "SOLUSDT"))
    run(instance, make_asset(three), DAYS[0], "SOLUSDT")
    assert status(instance, three) == {"SUCCEEDED": {"2024-03-01|BTCUSDT", "2024-03-01|SOLUSDT"}}
    # and back: a symbol dropped from the configuration no longer shows
    assert status(instance, two) == {"SUCCEEDED": {"2024-03-01|BTCUSDT"}}


def test_an_unreadable_checkpoint_is_recomputed(instance, caplog) -> None:
    pdef = partitions()
    run(instance, make_asset(pdef), DAYS[0], "BTCUSDT")
    status(instance, pdef)
    name = lake_storage.KV_PREFIX + CHECK.to_user_string()
    instance.run_storage.set_cursor_values({name: '{"format": 2, "partitions": "x"'})
    with caplog.at_level(logging.WARNING):
        assert status(instance, pdef) == {"SUCCEEDED": {"2024-03-01|BTCUSDT"}}
    assert "unreadable" in caplog.text
    assert saved(instance)[name].startswith('{"format"')


def test_a_checkpoint_that_cannot_be_stored_still_answers(instance, caplog) -> None:
    """The key-value store fails the write (a trigger that errors, as a locked or read-only
    database would; a trigger's RAISE would look like a key conflict, which Dagster turns
    into an update): the status is still returned, and a warning says why."""
    pdef = partitions()
    run(instance, make_asset(pdef), DAYS[0], "BTCUSDT")
    with sqlite3.connect(Path(instance.root_directory) / "history" / "runs.db") as con:
        for op in ("INSERT", "UPDATE"):
            con.execute(f"CREATE TRIGGER refuse_{op} BEFORE {op} ON kvs "
                        "WHEN NEW.key LIKE 'crypto_lake/check_state/%' "
                        "BEGIN INSERT INTO no_such_table VALUES (1); END")  # fmt: skip
    with caplog.at_level(logging.WARNING):
        assert status(instance, pdef) == {"SUCCEEDED": {"2024-03-01|BTCUSDT"}}
    assert "could not store 1 check status checkpoints" in caplog.text
    assert saved(instance) == {}


def test_sensor_keeps_every_check_current(instance) -> None:
    pdef = partitions()
    bars = make_asset(pdef)
    run(instance, bars, DAYS[0], "BTCUSDT")
    context = dg.build_sensor_context(instance=instance, definitions=bars)
    result = check_status_checkpoint(context)
    assert "status of 2 checks current" in str(result.skip_message)
    state = lake_storage.decode(saved(instance)[lake_storage.KV_PREFIX + CHECK.to_user_string()],
                                lake_storage.partitions_digest(pdef))  # fmt: skip
    assert state is not None
    assert not state.state.subsets[Resolved.SUCCEEDED].is_empty


def test_the_latest_execution_is_given_again_only_while_nothing_changed(
    instance, monkeypatch
) -> None:
    """Each check's latest execution (every checks query asks): a second ask with nothing
    recorded in between is the first's answer; a new record, a deletion or the age make it
    ask again, and every answer is Dagster's own."""
    pdef = partitions()
    bars = make_asset(pdef)
    storage = instance.event_log_storage

    def latest() -> dict:
        got = storage.get_latest_asset_check_execution_by_key([CHECK])
        dagsters = SqlEventLogStorage.get_latest_asset_check_execution_by_key(storage, [CHECK])
        assert got == dagsters
        return got[CHECK]

    run(instance, bars, DAYS[0], "BTCUSDT")
    first = latest()
    hits = getattr(storage, "latest_memo_hits", 0)
    assert latest() is first and storage.latest_memo_hits == hits + 1
    second_run = run(instance, bars, DAYS[1], "ETHUSDT")
    newer = latest()  # a new record: asked again
    assert newer.id > first.id and newer.run_id == second_run
    assert storage.latest_memo_hits == hits + 1
    instance.delete_run(second_run)  # a deletion in this process forgets every answer
    after = latest()
    assert storage.latest_memo_hits == hits + 1
    assert latest() is after and storage.latest_memo_hits == hits + 2
    monkeypatch.setattr(lake_storage, "MEMO_SECONDS", 0.0)
    assert latest() == after and storage.latest_memo_hits == hits + 2


def test_a_state_is_given_again_only_while_nothing_changed(instance, monkeypatch) -> None:
    """The same process asks twice with nothing recorded in between (a page's two queries, a
    reload): the second read is the first's state. New records, a checkpoint dropped by
    another process (a deletion there) or the memo's age make it compute again."""
    pdef = partitions()
    bars = make_asset(pdef)
    run(instance, bars, DAYS[0], "BTCUSDT")
    storage = instance.event_log_storage
    passed = {"SUCCEEDED": {"2024-03-01|BTCUSDT"}}
    assert status(instance, pdef) == passed
    hits = storage.check_state_memo_hits
    assert status(instance, pdef) == passed
    assert storage.check_state_memo_hits == hits + 1

    FAIL.add("2024-03-01|BTCUSDT")
    run(instance, bars, DAYS[0], "BTCUSDT")
    assert status(instance, pdef) == {"FAILED": {"2024-03-01|BTCUSDT"}}
    assert storage.check_state_memo_hits == hits + 1  # computed: new records

    name = lake_storage.KV_PREFIX + CHECK.to_user_string()
    instance.run_storage.set_cursor_values({name: ""})  # another process's deletion
    assert status(instance, pdef) == {"FAILED": {"2024-03-01|BTCUSDT"}}
    assert storage.check_state_memo_hits == hits + 1
    monkeypatch.setattr(lake_storage, "MEMO_SECONDS", 0.0)
    assert status(instance, pdef) == {"FAILED": {"2024-03-01|BTCUSDT"}}
    assert storage.check_state_memo_hits == hits + 1
