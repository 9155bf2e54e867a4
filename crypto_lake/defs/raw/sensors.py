"""A file-watching sensor turning newly sealed raw files into materializations of the raw asset.

Cheap as the lake grows: ``RawCatalog.refresh()`` remembers what it has seen per symbol/day
folder (persisted under ``state/raw_catalog/``), so a tick only touches folders whose mtime
changed and files it has not catalogued yet. The sensor's own cursor counts what it has
emitted, so the UI shows progress and a restart never re-emits old files.
"""

import json

import dagster as dg

from crypto_lake.defs.market.partitions import CONFIG, market_key
from crypto_lake.defs.resources import LakeResource
from crypto_lake.lib.raw.catalog import RawCatalog, RawFileInfo


def raw_file_event(info: RawFileInfo) -> dg.AssetMaterialization:
    """One sealed raw file as a materialization of its (file day, symbol) partition."""
    metadata: dict[str, dg.RawMetadataValue] = {
        "dagster/uri": dg.MetadataValue.path(str(info.path)),
        "part": info.part,
        "bytes": info.bytes,
        "lines": info.lines,
        "bad_lines": info.bad_lines,
    }
    # Event-time range tells which UTC days the file feeds (a day's last trades can be
    # filed under the next day; replays can deliver old days late).
    if info.min_event_us is not None and info.max_event_us is not None:
        metadata["min_event_us"] = int(info.min_event_us)
        metadata["max_event_us"] = int(info.max_event_us)
    return dg.AssetMaterialization(
        asset_key="raw_market_events",
        partition=market_key(str(info.file_day), info.symbol),
        metadata=metadata,
    )


def _load_cursor(cursor: str | None) -> dict[str, int]:
    try:
        data = json.loads(cursor) if cursor else {}
    except json.JSONDecodeError:
        data = {}
    return {"files": int(data.get("files", 0)), "bytes": int(data.get("bytes", 0))}


@dg.sensor(
    name="raw_file_sensor",
    description="Records each newly sealed raw file as a raw_market_events materialization.",
    minimum_interval_seconds=CONFIG.dagster.raw_sensor_interval_seconds,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def raw_file_sensor(
    context: dg.SensorEvaluationContext, lake: LakeResource
) -> dg.SensorResult | dg.SkipReason:
    new_files = RawCatalog(lake.layout).refresh()
    if not new_files:
        return dg.SkipReason("no newly sealed raw files")
    configured = set(lake.config.symbols)
    events = [raw_file_event(f) for f in new_files if f.symbol in configured]
    cursor = _load_cursor(context.cursor)
    cursor["files"] += len(new_files)
    cursor["bytes"] += sum(int(f.bytes) for f in new_files)
    context.log.info(f"{len(new_files)} newly sealed raw files ({len(events)} for known symbols)")
    return dg.SensorResult(asset_events=events, cursor=json.dumps(cursor, sort_keys=True))
