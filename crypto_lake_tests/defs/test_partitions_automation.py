"""Partition sizing, automation defaults, and the refresh sensor's run requests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import dagster as dg

from crypto_lake.defs.market.automation import (
    TRIGGER_TAG,
    finalize_yesterday,
    market_day_job,
    market_refresh_sensor,
)
from crypto_lake.defs.market.partitions import (
    build_market_partitions,
    contiguous_day_blocks,
    market_key,
    market_partitions,
    range_tags,
)
from crypto_lake.defs.resources import LakeResource
from crypto_lake.lib.core.config import DEFAULT_SYMBOLS, load_config
from crypto_lake.lib.core.paths import LakeLayout
from crypto_lake.lib.raw.lines import ws_line
from crypto_lake_tests.defs import rawgen

# Dagster documents 100,000 partitions per asset as the limit beyond which the UI slows down.
DAGSTER_PARTITION_LIMIT = 100_000


def test_five_years_of_13_symbols_stay_far_below_dagsters_limit() -> None:
    cfg = load_config(environ={})
    start = datetime.now(UTC).date() - timedelta(days=5 * 365 + 1)
    cfg = cfg.model_copy(
        update={"dagster": cfg.dagster.model_copy(update={"partitions_start": start})}
    )
    parts = build_market_partitions(cfg)
    keys = parts.get_partition_keys()
    assert len(DEFAULT_SYMBOLS) == 13
    assert 5 * 365 * 13 <= len(keys) <= (5 * 365 + 3) * 13
    assert len(keys) < DAGSTER_PARTITION_LIMIT / 4  # 23.7k: a quarter of the documented limit
    # today's partition exists (intraday refresh target)
    today = datetime.now(UTC).date().isoformat()
    assert str(market_key(today, "BTCUSDT")) in set(keys)


def test_range_tags_cover_exactly_one_block_of_days_for_all_symbols() -> None:
    symbols = load_config().symbols
    tags = range_tags(["2024-01-03", "2024-01-02"], symbols)
    rng = dg.PartitionKeyRange(
        tags["dagster/asset_partition_range_start"], tags["dagster/asset_partition_range_end"]
    )
    keys = market_partitions.get_partition_keys_in_range(rng)
    assert len(keys) == 2 * len(symbols)
    assert {k.split("|")[0] for k in keys} == {"2024-01-02", "2024-01-03"}
    assert contiguous_day_blocks(["2024-01-05", "2024-01-02", "2024-01-03"]) == [
        ["2024-01-02", "2024-01-03"],
        ["2024-01-05"],
    ]


def test_schedules_and_sensors_run_by_default() -> None:
    from crypto_lake.defs.ops.assets import lake_views_daily

    assert market_refresh_sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert finalize_yesterday.default_status == dg.DefaultScheduleStatus.RUNNING
    assert lake_views_daily.default_status == dg.DefaultScheduleStatus.RUNNING


def _seal_raw_file(root: Path, day: str, symbol: str, event_us: int) -> None:
    """A sealed part in ``day``'s folder holding one trade at ``event_us``."""
    trade = rawgen.Trade(1, event_us, Decimal("100"), Decimal("1"), False)
    line = ws_line(event_us * 1000 + 2_000_000, "ws-1", "us", rawgen.trade_message(symbol, trade))
    rawgen.append_part(LakeLayout(root), symbol, day, [line])


def _tick(instance: dg.DagsterInstance, root: Path, cursor: str | None = None):
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"lake": LakeResource(lake_root=str(root))}
    ) as ctx:
        return market_refresh_sensor(ctx)


def test_refresh_sensor_launches_one_ranged_run_per_block_and_keeps_a_cursor(
    tmp_path: Path,
) -> None:
    symbols = load_config().symbols
    with dg.instance_for_test() as instance:
        first = _tick(instance, tmp_path)
        assert not first.run_requests
        today = datetime.now(UTC).date()
        t0 = int(datetime(today.year, today.month, today.day, tzinfo=UTC).timestamp()) * 10**6
        # Today's files for two symbols, and a file in today's folder holding trades of
        # yesterday (the day's last trades, or a late repair).
        _seal_raw_file(tmp_path, today.isoformat(), symbols[1], t0 + 10**6)
        _seal_raw_file(tmp_path, today.isoformat(), symbols[3], t0 - 10**6)
        result = _tick(instance, tmp_path, first.cursor)
        assert len(result.run_requests) == 1  # yesterday + today are one contiguous block
        tags = result.run_requests[0].tags
        yesterday = (today - timedelta(days=1)).isoformat()
        assert tags["dagster/asset_partition_range_start"] == f"{yesterday}|{symbols[1]}"
        assert tags["dagster/asset_partition_range_end"] == f"{today.isoformat()}|{symbols[3]}"
        assert tags[TRIGGER_TAG] == "refresh"
        assert len(result.asset_events) == 2  # one per partition that got files
        # Nothing new: no run.
        assert not _tick(instance, tmp_path, result.cursor).run_requests


def test_finalize_schedule_targets_yesterday_for_all_symbols() -> None:
    symbols = load_config().symbols
    when = datetime(2024, 5, 2, 0, 10, tzinfo=UTC)
    ctx = dg.build_schedule_context(scheduled_execution_time=when)
    request = finalize_yesterday(ctx)
    assert request.tags["dagster/asset_partition_range_start"] == f"2024-05-01|{symbols[0]}"
    assert request.tags["dagster/asset_partition_range_end"] == f"2024-05-01|{symbols[-1]}"
    assert finalize_yesterday.execution_timezone == "UTC"
    assert market_day_job.name == "market_day_job"


def test_refresh_sensor_waits_while_a_refresh_run_is_in_flight(tmp_path: Path) -> None:
    """Bounded runs: no new refresh run while the previous one is queued or running; the
    files sealed meanwhile are recorded at once and their partitions wait in the cursor."""
    from dagster._core.test_utils import create_run_for_test

    symbols = load_config().symbols
    today = datetime.now(UTC).date()
    t0 = int(datetime(today.year, today.month, today.day, tzinfo=UTC).timestamp()) * 10**6
    with dg.instance_for_test() as instance:
        run = create_run_for_test(
            instance,
            job_name=market_day_job.name,
            status=dg.DagsterRunStatus.STARTED,
            tags={TRIGGER_TAG: "refresh"},
        )
        _seal_raw_file(tmp_path, today.isoformat(), symbols[0], t0 + 10**6)
        busy = _tick(instance, tmp_path)
        assert not busy.run_requests and "in progress" in busy.skip_reason.skip_message
        assert len(busy.asset_events) == 1  # recorded while the run goes on
        instance.report_run_failed(run)  # the run ends: the waiting partition goes next
        later = _tick(instance, tmp_path, busy.cursor)
        assert len(later.run_requests) == 1 and not later.asset_events
        assert later.run_requests[0].tags["dagster/asset_partition_range_start"] == (
            f"{today.isoformat()}|{symbols[0]}"
        )
