"""Follow-up runs that keep a partition true after what it depended on changes later.

- ``bars_after_previous_day``: the seconds of day D before its first trade carry day D-1's
  last trade price. When D-1's trades are built or rebuilt after D's bars (a backfill whose
  runs ran in another order, a finalization that added late trades), D's bars_1s started
  from a price that is no longer D-1's last one (or none, NULL prices until the first
  trade). The sensor compares and rebuilds D's bars_1s, its checks and bars_1m.
- ``klines_parity_catchup``: R7 needs Binance's klines. When their fetch failed after its
  retries, R1–R6 still gated and R7 was not evaluated. Every hour the sensor fetches the
  klines again for closed days whose bars exist without klines, with R7 in the same run;
  and klines materialized in a run without R7 (e.g. from the asset page) get R7 evaluated.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import dagster as dg
import pyarrow.parquet as pq
from dagster._core.event_api import PartitionKeyFilter
from dagster._core.storage.asset_check_execution_record import (
    AssetCheckExecutionRecordStatus as Status,
)

from crypto_lake.defs.market.assets import partition_file
from crypto_lake.defs.market.automation import (
    block_requests,
    materialized_since,
    records_after,
    run_in_flight,
    valid_days,
)
from crypto_lake.defs.market.partitions import CONFIG, shift_day, split_key
from crypto_lake.defs.market.quality import PARITY_1S_CHECK, PARITY_RULE
from crypto_lake.defs.resources import LakeResource
from crypto_lake.lib.core.paths import LakeLayout
from crypto_lake.lib.market.bars import last_trade_price

BARS = dg.AssetKey("bars_1s")
TRADES = dg.AssetKey("trades")
KLINES = dg.AssetKey("binance_klines_1m")
R7 = dg.AssetCheckKey(BARS, PARITY_RULE.name)
PREVIOUS_DAY_TRIGGER = "previous_day"
KLINES_TRIGGER = "klines_catchup"
PARITY_TRIGGER = "parity_catchup"
KLINES_RETRY_SECONDS = 3600

bars_job = dg.define_asset_job(
    name="bars_job",
    selection=dg.AssetSelection.assets("bars_1s", "bars_1m")
    - dg.AssetSelection.checks(PARITY_1S_CHECK),
    description="Rebuild bars_1s (+ R1–R7) and bars_1m from the trades and quotes already built.",
)
klines_parity_job = dg.define_asset_job(
    name="klines_parity_job",
    selection=dg.AssetSelection.assets("binance_klines_1m") | dg.AssetSelection.checks(R7),
    description="Fetch Binance's 1 m klines and evaluate R7 against the bars already built.",
)
parity_job = dg.define_asset_job(
    name="parity_job",
    selection=dg.AssetSelection.checks(R7),
    description="Evaluate R7 against the klines and bars already built.",
)


def starts_from_stale_close(layout: LakeLayout, symbol: str, day: str) -> bool:
    """Whether ``day``'s bars_1s open with empty seconds carrying another price than the
    previous day's last trade (as its trades file says now)."""
    bars = partition_file(layout, "bars_1s", symbol, day)
    if not bars.exists():
        return False
    file = pq.ParquetFile(bars)
    if file.metadata.num_rows == 0:
        return False
    # sorted by window_start: row 0 is the day's first second
    first = file.read_row_group(0, columns=["close", "trade_count"]).slice(0, 1).to_pylist()
    if first[0]["trade_count"] > 0:  # it opens with a trade: nothing was carried
        return False
    expected = last_trade_price(partition_file(layout, "trades", symbol, shift_day(day, -1)))
    return first[0]["close"] != expected


def stale_next_days(
    instance: dg.DagsterInstance, layout: LakeLayout, after_storage_id: int
) -> tuple[dict[str, set[str]], int]:
    """{day: symbols} whose bars_1s start from a previous close that trades materialized
    after ``after_storage_id`` changed, and the storage id to continue from."""
    touched, last = materialized_since(instance, TRADES, after_storage_id)
    next_days = {shift_day(d, 1): s for d, s in touched.items()}
    stale: dict[str, set[str]] = {}
    for day in valid_days(next_days):
        for symbol in sorted(next_days[day]):
            if starts_from_stale_close(layout, symbol, day):
                stale.setdefault(day, set()).add(symbol)
    return stale, last


@dg.sensor(
    name="bars_after_previous_day",
    job=bars_job,
    minimum_interval_seconds=CONFIG.dagster.refresh_interval_seconds,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Rebuilds a day's bars_1s (+ checks) and bars_1m when the previous day's "
    "trades were built after them and its last price is not the one the day's first "
    "seconds carry.",
)
def bars_after_previous_day(context: dg.SensorEvaluationContext, lake: LakeResource):
    after = int(json.loads(context.cursor)["storage_id"]) if context.cursor else 0
    if run_in_flight(context.instance, bars_job.name, PREVIOUS_DAY_TRIGGER):
        return dg.SkipReason("previous rebuild still in progress")
    stale, last = stale_next_days(context.instance, lake.layout, after)
    cursor = json.dumps({"storage_id": last})
    requests = block_requests(stale, PREVIOUS_DAY_TRIGGER, last, bars_job.name)
    if not requests:
        return dg.SensorResult(skip_reason="no bars start from a stale previous close",
                               cursor=cursor)  # fmt: skip
    context.log.info(f"rebuilding bars of {sorted(stale)} from their previous day's close")
    return dg.SensorResult(run_requests=requests, cursor=cursor)


def parity_current(instance: dg.DagsterInstance, partition: str, klines_at: float) -> bool:
    """Whether R7 of ``partition`` was evaluated after klines materialized at ``klines_at``
    (or is planned in a run still going)."""
    records = instance.event_log_storage.get_asset_check_execution_history(
        R7, limit=1, partition_filter=PartitionKeyFilter(key=partition)
    )
    if not records:
        return False
    record = records[0]
    if record.status == Status.PLANNED:
        run = instance.get_run_by_id(record.run_id)
        return run is not None and not run.is_finished
    return record.event is not None and record.event.timestamp >= klines_at


def klines_without_parity(
    instance: dg.DagsterInstance, after_storage_id: int
) -> tuple[dict[str, set[str]], int]:
    """{day: symbols} with klines materialized after ``after_storage_id`` (in finished runs)
    that have bars_1s but no R7 evaluated since, and the storage id to continue from (before
    the first klines of a run still going)."""
    bars = instance.get_materialized_partitions(BARS)
    todo: dict[str, set[str]] = {}
    last = after_storage_id
    for record in records_after(instance, KLINES, after_storage_id):
        run = instance.get_run_by_id(record.run_id)
        if run is not None and not run.is_finished:
            break  # its own R7 may still come: look again next time
        last = record.storage_id
        partition = record.partition_key
        if partition in bars and not parity_current(instance, partition, record.timestamp):
            day, symbol = split_key(partition)
            todo.setdefault(day, set()).add(symbol)
    return todo, last


def bars_without_klines(instance: dg.DagsterInstance, today: str) -> dict[str, set[str]]:
    """{day: symbols} of closed days whose bars_1s exist and whose klines never materialized."""
    missing = instance.get_materialized_partitions(BARS) - instance.get_materialized_partitions(
        KLINES
    )
    todo: dict[str, set[str]] = {}
    for partition in missing:
        day, symbol = split_key(partition)
        if day < today:
            todo.setdefault(day, set()).add(symbol)
    return todo


@dg.sensor(
    name="klines_parity_catchup",
    jobs=[klines_parity_job, parity_job],
    minimum_interval_seconds=CONFIG.dagster.refresh_interval_seconds,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="R7 for every partition once klines can be had: evaluates R7 where klines "
    "arrived without it, and every hour fetches again the klines of closed days that have "
    "bars but no klines (their fetch failed), with R7 in the same run.",
)
def klines_parity_catchup(context: dg.SensorEvaluationContext):
    state = json.loads(context.cursor) if context.cursor else {}
    instance, now = context.instance, datetime.now(UTC)
    todo, last = klines_without_parity(instance, int(state.get("storage_id", 0)))
    requests = block_requests(todo, PARITY_TRIGGER, last, parity_job.name)
    retry_at = state.get("retry_at")
    if retry_at is None or now.timestamp() >= retry_at:
        missing = bars_without_klines(instance, now.date().isoformat())
        if missing and not run_in_flight(instance, klines_parity_job.name, KLINES_TRIGGER):
            stamp = int(now.timestamp())
            requests += block_requests(missing, KLINES_TRIGGER, stamp, klines_parity_job.name)
            context.log.info(f"fetching klines again for {sorted(missing)}")
        retry_at = now.timestamp() + KLINES_RETRY_SECONDS
    cursor = json.dumps({"storage_id": last, "retry_at": retry_at})
    if not requests:
        return dg.SensorResult(skip_reason="R7 is current wherever klines exist", cursor=cursor)
    return dg.SensorResult(run_requests=requests, cursor=cursor)
