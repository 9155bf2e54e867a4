"""The QA assets, blocking check and schedules, run from the real Definitions."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from crypto_lake.defs.market.partitions import CONFIG, market_key, range_tags
from crypto_lake.defs.qa.assets import WINDOW_END_TAG, WINDOW_MINUTES_TAG
from crypto_lake.defs.qa.automation import (
    REFRESH_TRIGGER,
    TRIGGER_TAG,
    daily_request,
    hourly_request,
    qa_after_bars_refresh,
)
from crypto_lake.defs.resources import LakeResource
from crypto_lake.lib.core.fsutil import atomic_path
from crypto_lake.lib.core.paths import LakeLayout
from crypto_lake.lib.qa.pipeline import qa_file, read_qa
from crypto_lake.simulator.anomalies import AnomalyPlan, inject_bar_anomalies
from crypto_lake.simulator.synthetic_bars import (
    bars_table,
    day_start_us,
    seeded_rng,
    synthetic_bars_columns,
)

DAY = "2024-03-01"
SYMBOLS = CONFIG.symbols[:2]  # a contiguous range of the partitions (BTCUSDT, ETHUSDT)
HOURS = 3


def _write(layout: LakeLayout, symbol: str, plan: AnomalyPlan | None) -> None:
    cols = synthetic_bars_columns(symbol, DAY, 5, seconds=HOURS * 3600)
    if plan is not None:
        inject_bar_anomalies(
            symbol, cols, plan, seeded_rng(6, symbol, DAY), day_start_us(DAY) // 10**6
        )
    path = layout.market_partition_dir("bars_1s", symbol, DAY) / "part-0.parquet"
    with atomic_path(path, durable=False) as tmp:
        pq.write_table(bars_table(symbol, DAY, cols), tmp)


@pytest.fixture(scope="module")
def ran(tmp_path_factory) -> tuple[LakeLayout, dg.ExecuteInProcessResult]:
    from crypto_lake.definitions import defs

    root = tmp_path_factory.mktemp("lake")
    layout = LakeLayout(root)
    _write(layout, SYMBOLS[0], AnomalyPlan.market(jumps=2, blowouts=1, spikes=1, stale=0))
    _write(layout, SYMBOLS[1], AnomalyPlan({"price_jump": 1, "r2_nonpositive_price": 1}))
    end = datetime.fromtimestamp(day_start_us(DAY) // 10**6 + HOURS * 3600, tz=UTC)
    job = defs().resolve_job_def("qa_daily_job")
    tags = {**range_tags([DAY], SYMBOLS), WINDOW_END_TAG: end.isoformat(),
            WINDOW_MINUTES_TAG: str(HOURS * 60)}  # fmt: skip
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(
            instance=instance,
            tags=tags,
            resources={"lake": LakeResource(lake_root=str(root))},
            raise_on_error=False,
        )
    return layout, result


def test_all_qa_assets_materialize_and_write_their_files(ran):
    layout, result = ran
    keys = {e.event_specific_data.materialization.asset_key.to_user_string()
            for e in result.get_asset_materialization_events()}  # fmt: skip
    assert keys == {"qa_violations", "qa_anomalies", "qa_verdicts", "qa_report"}
    for kind in ("violations", "anomalies", "verdicts"):
        for symbol in SYMBOLS:
            assert qa_file(layout, kind, DAY, symbol).exists()
    violations = read_qa(layout, "violations", DAY)
    assert set(violations["symbol"].to_pylist()) == {SYMBOLS[1]}  # only the R2 break
    verdicts = read_qa(layout, "verdicts", DAY)
    day = {r["symbol"]: r["verdict"] for r in verdicts.to_pylist() if r["scope"] == "day"}
    assert day == {SYMBOLS[0]: "PASS", SYMBOLS[1]: "FAIL"}
    assert Path(layout.qa_report_path(DAY)).exists()


def test_fail_verdict_fails_the_blocking_check_of_its_partition_only(ran):
    _, result = ran
    checks = {c.partition: c for c in result.get_asset_check_evaluations()}
    assert set(checks) == {f"{DAY}|{s}" for s in SYMBOLS}
    assert all(c.check_name == "no_fail_verdict" for c in checks.values())
    failing, passing = checks[f"{DAY}|{SYMBOLS[1]}"], checks[f"{DAY}|{SYMBOLS[0]}"]
    assert not failing.passed and failing.severity == dg.AssetCheckSeverity.ERROR
    assert failing.metadata["verdict"].value == "FAIL"
    assert passing.passed and passing.metadata["verdict"].value == "PASS"


def test_report_metadata_carries_the_charts(ran):
    _, result = ran
    mats = [
        e.event_specific_data.materialization for e in result.get_asset_materialization_events()
    ]
    reports = [m for m in mats if m.asset_key.path == ["qa_report"]]
    # A ranged run records one materialization per partition, all with the day's report.
    assert sorted(m.partition for m in reports) == sorted(f"{DAY}|{s}" for s in SYMBOLS)
    report = reports[0]
    markdown = report.metadata["report"].value
    assert markdown.count("](data:image/png;base64,") == 2
    assert f"| {SYMBOLS[1]} | **FAIL** |" in markdown  # written although the gate fails


def test_schedules_start_running_and_request_the_right_windows():
    from crypto_lake.definitions import defs

    d = defs()
    for name in ("qa_hourly", "qa_daily"):
        assert d.resolve_schedule_def(name).default_status == dg.DefaultScheduleStatus.RUNNING
    sensor = d.resolve_sensor_def("qa_after_bars_refresh")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    tick = datetime(2024, 3, 2, 0, 10, tzinfo=UTC)
    hourly = hourly_request(tick, 90)
    assert hourly.tags[WINDOW_END_TAG] == tick.isoformat()
    assert hourly.tags[WINDOW_MINUTES_TAG] == "90"
    # 22:40 -> 00:10 spans two days: one run over both, all symbols.
    assert hourly.tags["dagster/asset_partition_range_start"] == f"2024-03-01|{CONFIG.symbols[0]}"
    assert hourly.tags["dagster/asset_partition_range_end"] == f"2024-03-02|{CONFIG.symbols[-1]}"
    daily = daily_request(tick)
    assert WINDOW_END_TAG not in daily.tags
    assert daily.tags["dagster/asset_partition_range_start"] == f"2024-03-01|{CONFIG.symbols[0]}"
    assert daily.tags["dagster/asset_partition_range_end"] == f"2024-03-01|{CONFIG.symbols[-1]}"
    assert isinstance(daily_request(datetime(2023, 6, 1, tzinfo=UTC)), dg.SkipReason)


def _report_bars(instance: dg.DagsterInstance, day: str, symbol: str) -> None:
    instance.report_runless_asset_event(
        dg.AssetMaterialization("bars_1s", partition=market_key(day, symbol))
    )


def test_bars_refresh_sensor_reruns_past_days_and_keeps_a_cursor():
    symbols = CONFIG.symbols
    today = datetime.now(UTC).date()
    yesterday = (today - timedelta(days=1)).isoformat()
    with dg.instance_for_test() as instance:
        first = qa_after_bars_refresh(dg.build_sensor_context(instance=instance))
        assert not first.run_requests
        _report_bars(instance, DAY, symbols[1])
        _report_bars(instance, yesterday, symbols[2])
        _report_bars(instance, yesterday, symbols[0])
        _report_bars(instance, today.isoformat(), symbols[3])  # today: the hourly run's job
        result = qa_after_bars_refresh(
            dg.build_sensor_context(instance=instance, cursor=first.cursor)
        )
        ranges = sorted(
            (
                r.tags["dagster/asset_partition_range_start"],
                r.tags["dagster/asset_partition_range_end"],
            )
            for r in result.run_requests
        )
        assert ranges == [
            (f"{DAY}|{symbols[1]}", f"{DAY}|{symbols[1]}"),
            (f"{yesterday}|{symbols[0]}", f"{yesterday}|{symbols[2]}"),
        ]
        assert all(WINDOW_END_TAG not in r.tags for r in result.run_requests)  # whole days
        again = qa_after_bars_refresh(
            dg.build_sensor_context(instance=instance, cursor=result.cursor)
        )
        assert not again.run_requests


def test_bars_refresh_sensor_waits_while_a_rerun_is_in_flight():
    from dagster._core.test_utils import create_run_for_test

    with dg.instance_for_test() as instance:
        run = create_run_for_test(
            instance,
            job_name="qa_daily_job",
            status=dg.DagsterRunStatus.STARTED,
            tags={TRIGGER_TAG: REFRESH_TRIGGER},
        )
        _report_bars(instance, DAY, SYMBOLS[0])
        busy = qa_after_bars_refresh(dg.build_sensor_context(instance=instance))
        assert isinstance(busy, dg.SkipReason) and "in progress" in busy.skip_message
        instance.report_run_failed(run)
        later = qa_after_bars_refresh(dg.build_sensor_context(instance=instance))
        assert len(later.run_requests) == 1


def test_qa_before_the_bars_then_after_their_refresh(tmp_path):
    """The hourly run comes before a symbol's bars exist: that symbol is not evaluated (no
    REVIEW, no file). Its bars are built; the sensor re-runs the day and the report shows
    its verdict, with no trace of the earlier run."""
    from crypto_lake.definitions import defs

    layout = LakeLayout(tmp_path)
    resources = {"lake": LakeResource(lake_root=str(tmp_path))}
    d = defs()
    _write(layout, SYMBOLS[0], None)
    tick = datetime.fromtimestamp(day_start_us(DAY) // 10**6 + HOURS * 3600, tz=UTC)
    with dg.instance_for_test() as instance:
        hourly = d.resolve_job_def("qa_hourly_job").execute_in_process(
            instance=instance, tags=hourly_request(tick, 90).tags, resources=resources
        )
        mats = {
            e.event_specific_data.materialization.asset_key.to_user_string(): e
            for e in hourly.get_asset_materialization_events()
        }
        skipped = mats["qa_verdicts"].event_specific_data.materialization.metadata
        assert f"{DAY}|{SYMBOLS[1]}: not evaluated (no bars yet)" in (
            skipped["not_evaluated_partitions"].value
        )
        assert not qa_file(layout, "violations", DAY, SYMBOLS[1]).exists()
        assert qa_file(layout, "verdicts", DAY, SYMBOLS[0]).exists()

        _write(layout, SYMBOLS[1], None)
        _report_bars(instance, DAY, SYMBOLS[1])
        (request,) = qa_after_bars_refresh(dg.build_sensor_context(instance=instance)).run_requests
        rerun = d.resolve_job_def("qa_daily_job").execute_in_process(
            instance=instance, tags=request.tags, resources=resources
        )
    assert rerun.success
    report = Path(layout.qa_report_path(DAY)).read_text(encoding="utf-8")
    assert f"| {SYMBOLS[0]} | **PASS** |" in report
    assert f"| {SYMBOLS[1]} | **PASS** |" in report
    assert f"| {SYMBOLS[1]} | not evaluated" not in report
    assert f"| {CONFIG.symbols[5]} | not evaluated (no bars yet) |" in report
    assert "REVIEW 0, FAIL 0" in report


def test_a_job_page_run_records_every_partition_it_wrote(tmp_path):
    """A job-page backfill's run carries the range tags and the dimension tags of one
    partition, and Dagster records a whole-run result for that one only: every partition the
    QA assets wrote must still show as materialized, once."""
    from crypto_lake.definitions import defs

    layout = LakeLayout(tmp_path / "lake")
    for symbol in SYMBOLS:
        _write(layout, symbol, None)
    tagged = market_key(DAY, SYMBOLS[1])
    dims = {f"dagster/partition/{d}": k for d, k in tagged.keys_by_dimension.items()}
    job = defs().resolve_job_def("qa_daily_job")
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(
            instance=instance, tags={**range_tags([DAY], SYMBOLS), **dims},
            resources={"lake": LakeResource(lake_root=str(layout.root))},
        )  # fmt: skip
        assert result.success
        for asset in ("qa_violations", "qa_anomalies", "qa_verdicts", "qa_report"):
            records = instance.fetch_materializations(dg.AssetKey(asset), limit=100).records
            assert sorted(r.partition_key for r in records) == [f"{DAY}|{s}" for s in SYMBOLS]
    for symbol in SYMBOLS:
        assert qa_file(layout, "verdicts", DAY, symbol).exists()
