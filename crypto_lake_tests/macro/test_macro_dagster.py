"""Through Dagster: the capped 7-day catch-up of a fresh lake, metadata in the UI, failing runs."""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import yaml

from crypto_lake.defs.macro.assets import COVERAGE_CHECK, dxy_synthetic_minute, macro_minute
from crypto_lake.defs.macro.automation import (
    DAY_TAG,
    REASON_TAG,
    PlannedRun,
    dxy_synthetic_minute_sensor,
    dxy_tick,
    macro_minute_job,
    macro_minute_sensor,
    macro_tick,
    plan_macro_runs,
)
from crypto_lake.defs.macro.partitions import MACRO_TICKERS, day_range_tags, macro_key
from crypto_lake.defs.pools import POOLS, prepare_pools
from crypto_lake.defs.resources import LakeResource
from crypto_lake.lib.core.config import DEFAULT_MACRO_TICKERS
from crypto_lake.lib.macro.calendar import session_minutes_utc
from crypto_lake.lib.macro.store import bar_path
from crypto_lake.simulator.yahoo import YahooServer
from crypto_lake_tests.run_queue import pool_counter


@pytest.fixture
def lake(yahoo: YahooServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LakeResource:
    # Configuration, not patching: the client reads the Yahoo base URL from the lake config.
    monkeypatch.setenv("CRYPTO_LAKE__MACRO__YAHOO_BASE_URL", yahoo.url)
    monkeypatch.setenv("CRYPTO_LAKE__MACRO__MAX_ATTEMPTS", "2")
    monkeypatch.setenv("CRYPTO_LAKE__MACRO__BACKOFF_BASE_SECONDS", "0.01")
    monkeypatch.setenv("CRYPTO_LAKE__MACRO__BACKOFF_CAP_SECONDS", "0.02")
    return LakeResource(lake_root=str(tmp_path / "lake"))


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        yield inst


def _latest_metadata(instance: dg.DagsterInstance, asset: dg.AssetKey) -> dict[str, dict]:
    records = instance.fetch_materializations(asset, limit=1000).records
    out: dict[str, dict] = {}
    for rec in sorted(records, key=lambda r: r.storage_id):
        mat = rec.asset_materialization
        assert mat is not None and mat.partition is not None
        out[mat.partition] = {k: v.value for k, v in mat.metadata.items()}
    return out


def test_sensors_run_by_default_every_minute() -> None:
    for sensor in (macro_minute_sensor, dxy_synthetic_minute_sensor):
        assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
        assert sensor.minimum_interval_seconds == 60
    assert macro_minute.backfill_policy == dg.BackfillPolicy.single_run()


ROOT = Path(__file__).resolve().parents[2]


def _dequeue(instance: dg.DagsterInstance, queued: list[dg.DagsterRun]) -> list[dg.DagsterRun]:
    """One pass of Dagster's run queue over an instance with nothing in progress: oldest first,
    skipping runs that a pool limit blocks, until the run slots are full (the daemon's loop
    around Dagster's own counter)."""
    config = instance.get_concurrency_config()
    counter = pool_counter(instance, queued)
    launched: list[dg.DagsterRun] = []
    for run in queued:
        if len(launched) == config.run_queue_config.max_concurrent_runs:
            break
        if not counter.is_blocked(run):
            counter.update_counters_with_launched_item(run)
            launched.append(run)
    return launched


def test_retrying_yahoo_runs_never_take_every_run_slot(tmp_path: Path) -> None:
    """A fresh lake's catch-up queues macro runs (2, the cap), and a user may launch a macro
    backfill from the UI beside them; while Yahoo is slow each one retries. The market refresh
    queued behind them still gets a slot on the next pass, because the `yahoo` pool admits one
    run at a time however the run was launched."""
    from crypto_lake.definitions import defs

    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    loaded = defs()
    macro_job = loaded.resolve_job_def("macro_minute_job")
    market_job = loaded.resolve_job_def("market_day_job")
    # What a UI backfill of macro_minute launches: the implicit asset job, no job tags.
    ui_job = loaded.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection={macro_minute.key}
    )
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    with dg.DagsterInstance.from_config(str(home)) as inst:
        assert prepare_pools(inst) == {
            "yahoo": 1,
            "lake_duckdb": 1,
            "lake_market": 1,
            "lake_book": 1,
        }
        requests = macro_tick(inst, LakeResource(lake_root=str(tmp_path)).layout, now).run_requests
        assert requests is not None and len(requests) == 2  # today + newest catch-up day, capped
        ui_tags = {
            "dagster/backfill": "abcdefgh",
            "dagster/asset_partition_range_start": f"2026-11-01|{MACRO_TICKERS[0]}",
            "dagster/asset_partition_range_end": f"2026-11-07|{MACRO_TICKERS[-1]}",
        }
        queued = [inst.create_run_for_job(ui_job, tags=ui_tags, asset_selection={macro_minute.key})]
        queued += [
            inst.create_run_for_job(macro_job, tags={**macro_job.tags, **r.tags}) for r in requests
        ]
        queued.append(inst.create_run_for_job(market_job, tags=market_job.tags))
        assert all(run.run_op_concurrency for run in queued[:-1])  # macro runs carry the pool
        launched = _dequeue(inst, queued)
    assert [r.job_name for r in launched] == [ui_job.name, "market_day_job"]
    # The production instance file sets the same pool rule.
    deploy = yaml.safe_load((ROOT / "deploy" / "dagster.yaml").read_text())
    assert deploy["concurrency"]["pools"] == {"granularity": "run", "default_limit": 1}
    helm = yaml.safe_load((ROOT / "deploy" / "k8s" / "values.yaml").read_text())
    assert helm["concurrency"]["pools"] == {"granularity": "run", "defaultLimit": 1}


def test_every_pool_of_the_definitions_is_prepared() -> None:
    from crypto_lake.definitions import defs

    graph = defs().resolve_asset_graph()
    pools = {a.op.pool for a in graph.assets_defs if a.is_executable and a.op.pool}
    assert pools == set(POOLS)


def test_plan_requests_today_and_only_incomplete_catchup_days() -> None:
    now = datetime(2026, 11, 23, 0, 30, tzinfo=UTC)
    done = {f"2026-11-18|{t}" for t in ("SPY", "ES=F")} | {"2026-11-19|SPY"}
    plan = plan_macro_runs(now, ["SPY", "ES=F"], done, 7, now.date())
    assert plan == [PlannedRun("2026-11-23", "recent")]  # nothing before the first day
    plan = plan_macro_runs(now, ["SPY", "ES=F"], done, 7, datetime(2026, 11, 1).date())
    recent = [r.day for r in plan if r.reason == "recent"]
    assert recent == ["2026-11-23", "2026-11-22"]  # first hour: yesterday gets finalized
    catchup = [r.day for r in plan if r.reason == "catchup"]  # newest first
    assert catchup == ["2026-11-21", "2026-11-20", "2026-11-19", "2026-11-17", "2026-11-16"]


def _run(
    instance: dg.DagsterInstance, lake: LakeResource, tags: dict, **kw
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [macro_minute], instance=instance, resources={"lake": lake}, tags=tags, **kw
    )


def skip_message(result: dg.SensorResult) -> str:
    return result.skip_reason.skip_message or "" if result.skip_reason else ""


def run_requested(
    instance: dg.DagsterInstance, lake: LakeResource, request: dg.RunRequest
) -> dg.ExecuteInProcessResult:
    """Execute a sensor's request as the daemon would: a run of macro_minute_job with its tags
    (so the sensor sees it in the run history), in this process."""
    job = dg.Definitions(
        assets=[macro_minute], jobs=[macro_minute_job], resources={"lake": lake}
    ).resolve_job_def(macro_minute_job.name)
    return job.execute_in_process(instance=instance, tags=request.tags)


def test_seven_day_catchup_for_default_tickers_through_dagster(
    yahoo: YahooServer, lake: LakeResource, instance: dg.DagsterInstance
) -> None:
    assert set(DEFAULT_MACRO_TICKERS) <= set(MACRO_TICKERS)  # 8 defaults + USDSEK=X for DXY
    now = datetime.now(UTC)
    today = now.date()
    days = [today - timedelta(days=b) for b in range(7, 0, -1)]
    # UUP misses three in-session minutes on every trading day.
    for d in days:
        yahoo.state.drop["UUP"] |= {
            int(t) for t in session_minutes_utc("UUP", d)[:3].astype("int64")
        }

    # The sensor ticks every minute; each tick requests at most 2 runs (today first, then the
    # catch-up newest day first), and today only once per refresh interval.
    requested: list[dg.RunRequest] = []
    for minute in range(6):
        tick = macro_tick(instance, lake.layout, now + timedelta(minutes=minute))
        assert len(tick.run_requests or []) <= 2, tick.run_requests
        for req in tick.run_requests or []:
            requested.append(req)
            result = run_requested(instance, lake, req)
            assert result.success
            (check,) = result.get_asset_check_evaluations()
            assert check.check_name == COVERAGE_CHECK
            assert check.metadata["partitions_checked"].value == len(MACRO_TICKERS)
    expected = [today.isoformat()] + [d.isoformat() for d in reversed(days)]
    assert [r.tags[DAY_TAG] for r in requested] == expected  # each day once, newest first
    catchup = [r for r in requested if r.tags[REASON_TAG] == "catchup"]
    yesterday_is_recent = now.hour == 0  # first hour of the UTC day
    assert len(catchup) == len(days) - yesterday_is_recent
    assert "next at" in skip_message(tick)  # nothing left to do

    meta = _latest_metadata(instance, macro_minute.key)
    for d in days:
        for ticker in MACRO_TICKERS:
            md = meta[str(macro_key(d.isoformat(), ticker))]
            session = session_minutes_utc(ticker, d).size
            dropped = 3 if ticker == "UUP" and session else 0
            assert md["in_session_minutes"] == session
            assert md["missing_in_session_minutes"] == dropped
            assert md["dagster/row_count"] == session - dropped
            assert md["got_nothing"] is (session == 0)
            assert md["status"] == ("ok" if session else "empty")

    # Once the refresh interval has passed, today is requested again, and only today (and
    # yesterday, still a recent day during the first UTC hour).
    later = now + timedelta(minutes=16)
    again = macro_tick(instance, lake.layout, later).run_requests or []
    recent = [today] + ([today - timedelta(days=1)] if later.hour == 0 else [])
    assert [(r.tags[DAY_TAG], r.tags[REASON_TAG]) for r in again] == [
        (d.isoformat(), "recent") for d in recent
    ]

    # The DXY sensor picks up, in one run, every day whose FX inputs are newer than its DXY.
    with dg.build_sensor_context(instance, resources={"lake": lake}) as ctx:
        dxy = dxy_synthetic_minute_sensor(ctx)
    assert isinstance(dxy, dg.SensorResult) and len(dxy.run_requests or []) == 1
    # days with FX minutes so far (today's session may not have opened yet: a Sunday morning)
    until = np.datetime64(now.replace(tzinfo=None), "s")
    fx_days = {d.isoformat() for d in [*days, today]
               if (session_minutes_utc("EURUSD=X", d) < until).any()}  # fmt: skip
    (req,) = dxy.run_requests or []
    assert req.tags["dagster/asset_partition_range_start"] == min(fx_days)
    assert req.tags["dagster/asset_partition_range_end"] == max(fx_days)
    assert dg.materialize(
        [dxy_synthetic_minute], instance=instance, resources={"lake": lake}, tags=req.tags
    ).success
    dxy_meta = _latest_metadata(instance, dxy_synthetic_minute.key)
    for day in fx_days - {today.isoformat()}:  # today: the minutes so far
        fx_minutes = session_minutes_utc("EURUSD=X", datetime.fromisoformat(day).date()).size
        assert dxy_meta[day]["dagster/row_count"] == fx_minutes
        assert dxy_meta[day]["missing_inputs"] == []
    # Nothing is stale any more: the next tick requests nothing, and says why.
    idle = dxy_tick(instance, lake.layout, later)
    assert not idle.run_requests and "no FX input changed" in skip_message(idle)


def test_catchup_never_queues_more_than_the_cap(
    lake: LakeResource, instance: dg.DagsterInstance
) -> None:
    """Runs in flight (queued or started) count against the cap, whoever launched them, and a
    day with a run in flight is not requested again."""
    now = datetime.now(UTC)
    job = dg.Definitions(
        assets=[macro_minute], jobs=[macro_minute_job], resources={"lake": lake}
    ).resolve_job_def(macro_minute_job.name)
    today = now.date().isoformat()
    queued = instance.create_run_for_job(
        job, tags={**day_range_tags(today, MACRO_TICKERS), DAY_TAG: today},
        status=dg.DagsterRunStatus.STARTED,
    )  # fmt: skip
    first = macro_tick(instance, lake.layout, now).run_requests or []
    assert len(first) == 1 and first[0].tags[DAY_TAG] != today  # room for one more, not today
    # A UI backfill of older days is in flight too: the cap is reached, nothing is requested.
    ui_job = dg.Definitions(
        assets=[macro_minute], resources={"lake": lake}
    ).resolve_implicit_global_asset_job_def()
    yesterday = (now.date() - timedelta(days=1)).isoformat()
    instance.create_run_for_job(
        ui_job.get_subset(asset_selection={macro_minute.key}),
        asset_selection={macro_minute.key},
        tags={"dagster/backfill": "abc", **day_range_tags(yesterday, MACRO_TICKERS)},
        status=dg.DagsterRunStatus.STARTED,
    )
    capped = macro_tick(instance, lake.layout, now)
    assert not capped.run_requests
    assert "2 macro runs already queued or in progress (at most 2)" in skip_message(capped)
    instance.report_run_canceled(queued)
    # Today's run is gone: room for one run beside the backfill, which still covers yesterday;
    # today is due again once the refresh interval since its last request has passed.
    (older,) = macro_tick(instance, lake.layout, now).run_requests or []
    assert older.tags[DAY_TAG] < yesterday
    after = macro_tick(instance, lake.layout, now + timedelta(minutes=16)).run_requests or []
    assert [r.tags[DAY_TAG] for r in after] == [today]


def test_failed_ticker_fails_the_run_but_keeps_stored_bars(
    yahoo: YahooServer, lake: LakeResource, instance: dg.DagsterInstance
) -> None:
    day = (datetime.now(UTC) - timedelta(days=3)).date().isoformat()
    tags = day_range_tags(day, MACRO_TICKERS)
    assert _run(instance, lake, tags).success
    paths = {t: bar_path(lake.layout, t, day) for t in MACRO_TICKERS}
    before = {t: p.read_bytes() for t, p in paths.items() if p.exists()}
    yahoo.state.rate_limit["ES=F"] = 1000
    yahoo.state.empty.add("SPY")
    result = _run(instance, lake, tags, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.event_specific_data.error.message  # type: ignore[union-attr]
    assert "1 of 9" in message and f"{day}|ES=F" in message
    after = {t: p.read_bytes() for t, p in paths.items() if p.exists()}
    assert after == before  # neither the failure nor the empty answer changed a byte
    # Single-cell materialization (one ticker, one day) from the UI works the same way.
    single = dg.materialize(
        [macro_minute], partition_key=str(macro_key(day, "UUP")), instance=instance,
        resources={"lake": lake},
    )  # fmt: skip
    assert single.success
    (mat,) = single.asset_materializations_for_node("macro_minute")
    assert mat.partition == f"{day}|UUP" and mat.metadata["file_changed"].value is False
