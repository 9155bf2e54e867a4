"""Automation for the market chain: today's refresh as raw files seal, yesterday's finalization.

The refresh sensor also records the newly sealed raw files (``crypto_lake.defs.raw.events``):
the files it finds are the ones its runs rebuild, so no second sensor and no read-back of
events stands between a sealed file and its refresh.

Runs per hour are bounded: the refresh sensor launches at most one run per contiguous block
of touched days per pass, passes are ``dagster.refresh_interval_seconds`` apart (default 300 s,
so ≤ 12 runs/hour for today; the demo sets 60 s), and a pass is skipped while a previous
refresh run is still queued or running. Each run covers every touched symbol of its days in
one ranged run (date × symbol range tags), so 13 symbols cost one run, not 13.
Critical checks gate inside the run: `bars_1m` is not built when R1/R2/R4 fail.
"""

import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta

import dagster as dg

from crypto_lake.defs.market.partitions import (
    CONFIG,
    contiguous_day_blocks,
    market_partitions,
    range_tags,
    split_key,
)
from crypto_lake.defs.market.quality import PARITY_1S_CHECK
from crypto_lake.defs.raw.events import raw_batch
from crypto_lake.defs.resources import LakeResource
from crypto_lake.lib.raw.catalog import RawCatalog

TRIGGER_TAG = "crypto_lake/trigger"
PAGE = 1000

market_day_job = dg.define_asset_job(
    name="market_day_job",
    selection=dg.AssetSelection.assets(
        "trades", "quotes", "binance_klines_1m", "bars_1s", "bars_1m", "coverage"
    )
    - dg.AssetSelection.checks(PARITY_1S_CHECK),
    description="Build trades, quotes, klines, bars_1s (+ R1–R7 checks), bars_1m and coverage "
    "for a block of days × symbols in one run.",
)


def records_after(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, after_storage_id: int
) -> Iterator[dg.EventLogRecord]:
    """The materialization records of ``asset_key`` after ``after_storage_id``, oldest
    first, fetched a page at a time."""
    last = after_storage_id
    while True:
        result = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=asset_key, after_storage_id=last),
            limit=PAGE,
            ascending=True,
        )
        yield from result.records
        if len(result.records) < PAGE:
            return
        last = result.records[-1].storage_id


def materialized_since(
    instance: dg.DagsterInstance,
    asset_key: dg.AssetKey,
    after_storage_id: int,
) -> tuple[dict[str, set[str]], int]:
    """{day: symbols} of the partitions of ``asset_key`` materialized after
    ``after_storage_id``, and the storage id to continue from."""
    touched: dict[str, set[str]] = {}
    last = after_storage_id
    for record in records_after(instance, asset_key, after_storage_id):
        last = max(last, record.storage_id)
        mat = record.asset_materialization
        if mat is None or mat.partition is None:
            continue
        day, symbol = split_key(mat.partition)
        touched.setdefault(day, set()).add(symbol)
    return touched, last


def run_in_flight(instance: dg.DagsterInstance, job_name: str, trigger: str) -> bool:
    """Whether a run of ``job_name`` launched by ``trigger`` is queued or running."""
    active = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED,
              dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]  # fmt: skip
    filters = dg.RunsFilter(job_name=job_name, tags={TRIGGER_TAG: trigger}, statuses=active)
    return bool(instance.get_run_records(filters, limit=1))


def symbol_span(symbols: set[str], order: Sequence[str] | None = None) -> list[str]:
    """The declared symbols (``order``: the partitions' symbols, default every configured
    one) from the first to the last touched one (a contiguous range)."""
    order = list(CONFIG.symbols if order is None else order)
    touched = [s for s in order if s in symbols]
    first, last = order.index(touched[0]), order.index(touched[-1])
    return order[first : last + 1]


def valid_days(days: Iterable[str]) -> list[str]:
    """The days that are date partitions, sorted and once each."""
    keys = set(market_partitions.primary_dimension.partitions_def.get_partition_keys())
    return sorted({d for d in days if d in keys})


def block_requests(
    touched: dict[str, set[str]],
    trigger: str,
    last: int,
    job_name: str | None = None,
    order: Sequence[str] | None = None,
) -> list[dg.RunRequest]:
    """One ranged run per block of consecutive touched days, over the declared symbols
    (``order``, see ``symbol_span``) from the first to the last touched one of the block;
    run keys unique per cursor ``last``."""
    requests = []
    for block in contiguous_day_blocks(valid_days(touched)):
        symbols = symbol_span(set().union(*(touched[d] for d in block)), order)
        requests.append(
            dg.RunRequest(
                run_key=f"{trigger}:{block[0]}:{block[-1]}:{last}",
                job_name=job_name,
                tags={**range_tags(block, symbols), TRIGGER_TAG: trigger},
            )
        )
    return requests


def _load_cursor(text: str | None) -> dict:
    """The refresh sensor's cursor: files and bytes recorded so far, passes that requested
    runs (run keys), and the {day: symbols} still waiting for a run. A cursor of the older
    raw-event sensor pair (``storage_id``) starts afresh: the catalog knows what is new."""
    try:
        data = json.loads(text) if text else {}
    except json.JSONDecodeError:
        data = {}
    return {
        "files": int(data.get("files", 0)),
        "bytes": int(data.get("bytes", 0)),
        "passes": int(data.get("passes", 0)),
        "pending": {d: set(s) for d, s in (data.get("pending") or {}).items()},
    }


def _dump_cursor(cursor: dict) -> str:
    pending = {d: sorted(s) for d, s in sorted(cursor["pending"].items())}
    return json.dumps({**cursor, "pending": pending}, sort_keys=True)


@dg.sensor(
    name="market_refresh_sensor",
    job=market_day_job,
    minimum_interval_seconds=CONFIG.dagster.refresh_interval_seconds,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Records newly sealed raw files (one raw_market_events materialization per "
    "partition per pass) and rebuilds the partitions they feed (today, and older days when a "
    "replay or REST repair delivers late data): one ranged run per block of days.",
)
def market_refresh_sensor(context: dg.SensorEvaluationContext, lake: LakeResource):
    cursor = _load_cursor(context.cursor)
    batch = raw_batch(RawCatalog(lake.layout).refresh(), set(lake.config.symbols))
    cursor["files"] += batch.files
    cursor["bytes"] += batch.bytes
    for day, symbols in batch.touched.items():
        cursor["pending"].setdefault(day, set()).update(symbols)
    if batch.files:
        context.log.info(f"{batch.files} newly sealed raw files, {len(batch.events)} partitions")
    if run_in_flight(context.instance, market_day_job.name, "refresh"):
        waiting = len(cursor["pending"])
        return dg.SensorResult(
            asset_events=batch.events,
            skip_reason=f"previous refresh run still in progress ({waiting} days waiting)",
            cursor=_dump_cursor(cursor),
        )
    requests = block_requests(cursor["pending"], "refresh", cursor["passes"] + 1)
    cursor["pending"] = {}
    if not requests:
        return dg.SensorResult(
            asset_events=batch.events,
            skip_reason="no newly sealed raw files",
            cursor=_dump_cursor(cursor),
        )
    cursor["passes"] += 1
    return dg.SensorResult(
        asset_events=batch.events, run_requests=requests, cursor=_dump_cursor(cursor)
    )


@dg.schedule(
    name="finalize_yesterday",
    job=market_day_job,
    cron_schedule=CONFIG.dagster.finalize_cron,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Finalizes yesterday (UTC) for all symbols shortly after midnight, once the "
    "new day's first raw files (holding the last trades of yesterday) have sealed.",
)
def finalize_yesterday(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    tick = context.scheduled_execution_time or datetime.now(UTC)
    day = (tick.astimezone(UTC).date() - timedelta(days=1)).isoformat()
    return dg.RunRequest(
        run_key=f"finalize:{day}:{tick.isoformat()}",
        tags={**range_tags([day], CONFIG.symbols), TRIGGER_TAG: "finalize"},
    )
