"""Runs that write the same market partitions never overlap, whichever launched them.

A refresh run (the sensor) and a finalize run (the schedule) of the same day, queued together
on an instance made from the shipped dagster.yaml: Dagster's own run-queue counter admits one
and holds the other back while the first is in progress; a UI backfill run of the same
assets waits the same way. Macro runs are not held back by market runs.
"""

from pathlib import Path

import dagster as dg

from crypto_lake.defs.market.assets import MARKET_POOL
from crypto_lake.defs.market.automation import TRIGGER_TAG
from crypto_lake.defs.market.partitions import CONFIG, range_tags
from crypto_lake.defs.pools import prepare_pools
from crypto_lake_tests.run_queue import pool_counter

ROOT = Path(__file__).resolve().parents[2]
DAY = "2024-03-01"


def blocked(instance: dg.DagsterInstance, queued: list, in_progress: list) -> list[bool]:
    """For each queued run, whether the run queue would hold it back (Dagster's counter, fed
    as the queue daemon feeds it)."""
    counter = pool_counter(instance, queued, in_progress)
    out = []
    for run in queued:
        out.append(counter.is_blocked(run))
        if not out[-1]:
            counter.update_counters_with_launched_item(run)
    return out


def test_refresh_and_finalize_of_the_same_day_never_run_together(tmp_path: Path) -> None:
    from crypto_lake.definitions import defs

    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    loaded = defs()
    market = loaded.resolve_job_def("market_day_job")
    ui_job = loaded.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection={dg.AssetKey("bars_1s")}
    )
    macro = loaded.resolve_job_def("macro_minute_job")
    tags = range_tags([DAY], CONFIG.symbols)
    with dg.DagsterInstance.from_config(str(home)) as inst:
        assert prepare_pools(inst)[MARKET_POOL] == 1
        refresh = inst.create_run_for_job(market, tags={**tags, TRIGGER_TAG: "refresh"})
        finalize = inst.create_run_for_job(market, tags={**tags, TRIGGER_TAG: "finalize"})
        backfill = inst.create_run_for_job(
            ui_job, tags=tags, asset_selection={dg.AssetKey("bars_1s")}
        )
        macro_run = inst.create_run_for_job(macro, tags=macro.tags)
        for run in (refresh, finalize, backfill):
            assert MARKET_POOL in run.run_op_concurrency.all_pools
        # Queued together: the refresh starts, the finalize and the backfill wait.
        assert blocked(inst, [refresh, finalize, backfill, macro_run], []) == [
            False, True, True, False,
        ]  # fmt: skip
        # While the refresh is in progress, the next pass still holds the finalize back.
        running = inst.create_run_for_job(
            market, tags={**tags, TRIGGER_TAG: "refresh"}, status=dg.DagsterRunStatus.STARTED
        )
        started = inst.get_run_records(dg.RunsFilter(run_ids=[running.run_id]))
        assert blocked(inst, [finalize, backfill, macro_run], started) == [True, True, False]
        # Once it is done, the finalize goes.
        inst.report_run_canceled(running)
        done = inst.get_run_records(dg.RunsFilter(run_ids=[running.run_id]))
        assert blocked(inst, [finalize, backfill], done) == [False, True]
