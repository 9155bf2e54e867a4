"""History from Binance's public daily files (SPEC §8a): trades before the collector ran and
over its outages, and Binance's own 1 s klines for the second-by-second parity check.

- ``binance_trades_archive``: the day's public trades zip (aggTrades when the collector
  records @aggTrade), verified against its ``.CHECKSUM`` and parsed whole before it counts.
  The ``trades`` asset merges it: live trades win, the archive fills every trade id the
  recorder did not get (``source = archive``; ``is_archive`` in the bars; ``seconds_archive``
  in coverage).
- ``binance_klines_1s``: the day's public 1 s klines zip as a Parquet table.
- ``klines_1s_parity`` (a check on bars_1s): every watched second equals Binance's 1 s kline.

A file Binance has not published (a day appears some hours after it ends), or one that fails
verification, fails its partition with the reason; nothing is stored for it, the other
partitions of the run are recorded, and re-running the backfill fetches only what is missing.
``history_import_job`` is the one-backfill path in the UI: select dates and symbols on its
page, and it imports the files; the ``history_rebuild`` sensor then rebuilds trades, bars and
coverage of what was imported, with their checks and the 1 s parity (``history_rebuild_job``).
The ``archive_fill`` sensor launches the import by itself for recent closed days whose
coverage lost seconds, once Binance has published them. The trades build reads an imported
file when there is one; it does not declare the file as an upstream asset, because the file
is optional and Dagster would warn on every market backfill that it is not materialized.
"""

import json
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import pyarrow.compute as pc
import pyarrow.parquet as pq

from crypto_lake.defs.market.assets import GROUP, MARKET_POOL, SINGLE_RUN, partition_file
from crypto_lake.defs.market.automation import block_requests, materialized_since, run_in_flight
from crypto_lake.defs.market.checks import BARS, check_outputs, evaluation, target_of
from crypto_lake.defs.market.emit import materialize_partitions
from crypto_lake.defs.market.metadata import base_metadata, parquet_preview
from crypto_lake.defs.market.partitions import (
    market_partitions,
    partition_pairs,
    run_partition_keys,
)
from crypto_lake.defs.market.quality import CheckRule
from crypto_lake.defs.resources import LakeResource
from crypto_lake.defs.table_schemas import asset_description, table_metadata
from crypto_lake.lib.core.config import Config
from crypto_lake.lib.core.paths import LakeLayout
from crypto_lake.lib.history.importer import (
    Imported,
    ImportFailed,
    import_klines_1s,
    import_trades_archive,
    public_trades_kind,
)
from crypto_lake.lib.qa.parity import DESCRIPTION as PARITY_DESCRIPTION
from crypto_lake.lib.qa.parity import RULE as PARITY_1S
from crypto_lake.lib.qa.parity import evaluate_klines_1s_parity, mismatch_seconds

# BackfillPolicy is beta in Dagster 1.13; relied on as in assets.py (one run per date block).
warnings.filterwarnings("ignore", message=".*backfill_policy.*", category=dg.BetaWarning)

PARITY_1S_RULE = CheckRule(PARITY_1S, PARITY_1S, "bars_1s", False, f"major: {PARITY_DESCRIPTION}")


def _file_metadata(done: Imported) -> dict[str, Any]:
    return {
        **done.metadata(),
        "file_url": dg.MetadataValue.url(done.file.url),
        "file_path": dg.MetadataValue.path(str(done.file.path)),
    }


def _record(context: Any, asset: str, per: dict[str, dict[str, Any]]) -> Iterator[Any]:
    """The partitions imported: each keeps its file's URL and SHA256 in the UI (in its
    observation when the run covers several), and the step's output lets the rebuild of the
    same run go ahead."""
    observed = sorted({k for meta in per.values() for k in meta if k != "preview"})
    yield from materialize_partitions(context, asset, per, ["dagster/row_count"],
                                      observed=observed)  # fmt: skip


def _fail_partitions(context: Any, asset: str, errors: dict[str, str]) -> None:
    """After the built partitions are recorded: fail the step naming each failed file."""
    if not errors:
        return
    for key, why in sorted(errors.items()):
        context.log.error(f"{asset} {key}: {why}")
    lines = "\n".join(f"- {k}: {v}" for k, v in sorted(errors.items()))
    raise dg.Failure(
        description=f"{len(errors)} partition(s) of {asset} not imported; nothing was stored "
        f"for them. Run the backfill again later to fetch only these:\n{lines}",
        metadata={"failed_partitions": dg.MetadataValue.json(sorted(errors))},
    )


@dg.asset(
    partitions_def=market_partitions,
    backfill_policy=SINGLE_RUN,
    group_name=GROUP,
    pool=MARKET_POOL,
    kinds={"binance", "zip"},
    description=(
        "Binance's public daily trades file of the partition (data.binance.vision; aggTrades "
        "when the collector records @aggTrade), SHA256-verified against its .CHECKSUM and "
        "parsed whole, kept under history/binance/. The trades asset fills every trade id the "
        "collector did not record from it (source = archive). A day appears some hours after "
        "it ends: until then its partition fails with 'not published yet'; run it again later."
    ),
)
def binance_trades_archive(context: dg.AssetExecutionContext, lake: LakeResource):
    kind = public_trades_kind(lake.config)
    per: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    for day, symbol in partition_pairs(run_partition_keys(context)):
        key = f"{day}|{symbol}"
        try:
            done = import_trades_archive(lake.layout, lake.config, symbol, day)
        except ImportFailed as exc:
            errors[key] = str(exc)
            continue
        per[key] = _file_metadata(done)
        context.log.info(f"{key}: {kind} {done.rows} rows, sha256 {done.file.sha256[:12]}")
    yield from _record(context, "binance_trades_archive", per)
    _fail_partitions(context, "binance_trades_archive", errors)


@dg.asset(
    partitions_def=market_partitions,
    backfill_policy=SINGLE_RUN,
    group_name=GROUP,
    pool=MARKET_POOL,
    kinds={"parquet", "binance"},
    description=asset_description(
        "klines_1s",
        "From Binance's public daily 1 s klines file (SHA256-verified); the reference of the "
        "klines_1s_parity check on bars_1s.",
    ),
    metadata=table_metadata("klines_1s"),
)
def binance_klines_1s(context: dg.AssetExecutionContext, lake: LakeResource):
    layout = lake.layout
    per: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    for day, symbol in partition_pairs(run_partition_keys(context)):
        key = f"{day}|{symbol}"
        out = partition_file(layout, "klines_1s", symbol, day)
        try:
            done = import_klines_1s(layout, lake.config, symbol, day, out)
        except ImportFailed as exc:
            errors[key] = str(exc)
            continue
        per[key] = {**base_metadata(out, done.rows, "klines_1s"), **_file_metadata(done)}
        per[key]["preview"] = dg.MetadataValue.md(parquet_preview(out))
    yield from _record(context, "binance_klines_1s", per)
    _fail_partitions(context, "binance_klines_1s", errors)


PARITY_1S_SPECS = [
    dg.AssetCheckSpec(
        name=PARITY_1S,
        asset=BARS,
        blocking=False,
        description=PARITY_1S_RULE.description,
        partitions_def=market_partitions,
    )
]


@dg.multi_asset_check(
    specs=PARITY_1S_SPECS,
    can_subset=False,
    description="bars_1s equal Binance's own 1 s klines on every watched or imported second.",
)
def bars_1s_klines_1s_parity(
    context: dg.AssetCheckExecutionContext, lake: LakeResource
) -> Iterator[dg.AssetCheckEvaluation | dg.Output]:
    layout = lake.layout
    for day, symbol in partition_pairs(run_partition_keys(context)):
        key = f"{day}|{symbol}"
        klines = partition_file(layout, "klines_1s", symbol, day)
        bars = partition_file(layout, "bars_1s", symbol, day)
        result, counts = evaluate_klines_1s_parity(bars, klines if klines.exists() else None)
        extra = {
            "seconds_compared_live": counts["live"]["compared"],
            "seconds_compared_archive": counts["archive"]["compared"],
            "mismatches_live": counts["live"]["mismatched"],
            "mismatches_archive": counts["archive"]["mismatched"],
            "mismatch_seconds": dg.MetadataValue.text(
                mismatch_seconds(counts["seconds"]) or "none"
            ),
        }
        target = target_of(context.instance, key)
        yield evaluation(PARITY_1S_RULE, key, result, target, extra=extra)
        context.log.info(f"{key}: klines_1s parity {result.reason or result.violations}")
    yield from check_outputs(PARITY_1S_SPECS)


history_import_job = dg.define_asset_job(
    name="history_import_job",
    selection=dg.AssetSelection.assets("binance_trades_archive", "binance_klines_1s"),
    description="Import Binance's public daily files (trades and 1 s klines, verified) for a "
    "block of days × symbols; the history_rebuild sensor then rebuilds trades, bars and "
    "coverage of the partitions imported, with the 1 s parity check.",
)
history_rebuild_job = dg.define_asset_job(
    name="history_rebuild_job",
    selection=dg.AssetSelection.assets("trades", "quotes", "bars_1s", "bars_1m", "coverage"),
    description="Rebuild trades (the public file filling what was not recorded), quotes, "
    "bars_1s with R1–R7 and the 1 s parity, bars_1m and coverage of imported partitions.",
)
REBUILD_TRIGGER = "history_rebuild"
IMPORTED = (dg.AssetKey("binance_trades_archive"), dg.AssetKey("binance_klines_1s"))


def imported_since(
    instance: dg.DagsterInstance, cursor: dict[str, int]
) -> tuple[dict[str, set[str]], dict[str, int]]:
    """{day: symbols} imported (either file) after the cursor's storage ids, and the new ids."""
    todo: dict[str, set[str]] = {}
    after: dict[str, int] = {}
    for key in IMPORTED:
        name = key.to_user_string()
        touched, after[name] = materialized_since(instance, key, cursor.get(name, 0))
        for day, symbols in touched.items():
            todo.setdefault(day, set()).update(symbols)
    return todo, after


@dg.sensor(
    name="history_rebuild",
    job=history_rebuild_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="After Binance's public files of some partitions were imported (a backfill of "
    "history_import_job, the archive_fill sensor, `crypto-lake history`), rebuilds their "
    "trades, bars and coverage with the archive and runs the 1 s parity check.",
)
def history_rebuild(context: dg.SensorEvaluationContext):
    cursor = json.loads(context.cursor) if context.cursor else {}
    todo, after = imported_since(context.instance, cursor)
    stamp = max(after.values(), default=0)
    requests = block_requests(todo, REBUILD_TRIGGER, stamp, history_rebuild_job.name)
    new_cursor = json.dumps(after)
    if not requests:
        return dg.SensorResult(skip_reason="no public file imported since", cursor=new_cursor)
    context.log.info(f"rebuilding {sorted(todo)} with their public files")
    return dg.SensorResult(run_requests=requests, cursor=new_cursor)


# --- filling outages by itself -----------------------------------------------------------------
FILL_TRIGGER = "archive_fill"
FILL_LOOKBACK_DAYS = 7
PUBLISHED_AFTER_S = 6 * 3600  # Binance publishes a day's files some hours after it ends
FILL_INTERVAL_S = 3600


def lost_seconds(layout: LakeLayout, symbol: str, day: str) -> int:
    """Seconds of the partition's coverage the recorder lost (outage or unrecorded)."""
    path = partition_file(layout, "coverage", symbol, day)
    if not path.exists():
        return 0
    table = pq.read_table(path, columns=["seconds_outage", "seconds_unrecorded"])
    return sum(int(pc.sum(table[c]).as_py() or 0) for c in table.column_names)


def partitions_to_fill(layout: LakeLayout, config: Config, now: datetime) -> dict[str, set[str]]:
    """{day: symbols} of recent closed days, published by now, whose coverage lost seconds
    and whose public trades file is not imported."""
    kind = public_trades_kind(config)
    todo: dict[str, set[str]] = {}
    for back in range(1, FILL_LOOKBACK_DAYS + 1):
        day = (now.date() - timedelta(days=back)).isoformat()
        day_end = datetime.fromisoformat(day).replace(tzinfo=UTC) + timedelta(days=1)
        if (now - day_end).total_seconds() < PUBLISHED_AFTER_S:
            continue
        for symbol in config.symbols:
            if layout.public_file(kind, symbol, day).exists():
                continue
            if lost_seconds(layout, symbol, day):
                todo.setdefault(day, set()).add(symbol)
    return todo


@dg.sensor(
    name="archive_fill",
    job=history_import_job,
    minimum_interval_seconds=FILL_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Every hour: the last 7 closed days whose coverage lost seconds (an outage, the "
    "collector not running) are imported from Binance's public daily files once published "
    f"({PUBLISHED_AFTER_S // 3600} h after the day ends), rebuilding trades, bars and coverage; "
    "a day not published yet is tried again the next hour.",
)
def archive_fill(context: dg.SensorEvaluationContext, lake: LakeResource):
    if run_in_flight(context.instance, history_import_job.name, FILL_TRIGGER):
        return dg.SkipReason("the previous fill is still running")
    now = datetime.now(UTC)
    todo = partitions_to_fill(lake.layout, lake.config, now)
    if not todo:
        return dg.SkipReason("no recent closed day lost seconds without its public file")
    stamp = int(now.timestamp()) // FILL_INTERVAL_S
    requests = block_requests(todo, FILL_TRIGGER, stamp, history_import_job.name)
    context.log.info(f"filling from Binance's public files: {sorted(todo)}")
    return dg.SensorResult(run_requests=requests)
