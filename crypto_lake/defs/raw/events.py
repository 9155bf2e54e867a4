"""Newly sealed raw files as materializations of ``raw_market_events``, a partition at a time.

The market refresh sensor (``crypto_lake/defs/market/automation.py``) catalogues the lake's
newly sealed files each pass and records them here: one materialization per (date, symbol)
partition per pass, however many files sealed since the last one (about five per symbol at
the default 5-minute cadence), with the pass's file count, part range, bytes, lines and event
time range. The per-file detail stays in the raw catalog (``state/raw_catalog/``). One event
per file was 18,720 a day for 13 symbols, never deleted (they belong to no run); this is
3,744, and the refresh needs no separate sensor reading them back.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from crypto_lake.defs.market.partitions import market_key
from crypto_lake.lib.raw.catalog import RawFileInfo


def event_days(info: RawFileInfo) -> set[str]:
    """Days a sealed raw file feeds: its folder day plus the days its trades happened on (a
    day's last trades sit in the next day's first file; a replay or repair can bring old
    days)."""
    days = {str(info.file_day)}
    for us in (info.min_event_us, info.max_event_us):
        if us is not None:
            days.add(datetime.fromtimestamp(int(us) / 1e6, tz=UTC).date().isoformat())
    return days


@dataclass
class RawBatch:
    """A pass's new files: their events, and the {day: symbols} they touch."""

    events: list[dg.AssetMaterialization] = field(default_factory=list)
    touched: dict[str, set[str]] = field(default_factory=dict)
    files: int = 0
    bytes: int = 0


def raw_batch(files: list[RawFileInfo], symbols: set[str]) -> RawBatch:
    """One materialization per (file day, symbol) of ``files`` whose symbol is configured."""
    batch = RawBatch(files=len(files), bytes=sum(int(f.bytes) for f in files))
    groups: dict[tuple[str, str], list[RawFileInfo]] = {}
    for info in files:
        if info.symbol in symbols:
            groups.setdefault((str(info.file_day), info.symbol), []).append(info)
    for (day, symbol), infos in sorted(groups.items()):
        days: set[str] = set()
        for info in infos:
            days |= event_days(info)
        for d in days:
            batch.touched.setdefault(d, set()).add(symbol)
        batch.events.append(partition_event(day, symbol, infos, days))
    return batch


def partition_event(
    day: str, symbol: str, infos: list[RawFileInfo], days: set[str]
) -> dg.AssetMaterialization:
    parts = sorted(int(i.part) for i in infos)
    metadata: dict[str, dg.RawMetadataValue] = {
        "dagster/uri": dg.MetadataValue.path(str(Path(infos[0].path).parent)),
        "files": len(infos),
        "first_part": parts[0],
        "last_part": parts[-1],
        "bytes": sum(int(i.bytes) for i in infos),
        "lines": sum(int(i.lines) for i in infos),
        "bad_lines": sum(int(i.bad_lines) for i in infos),
        "event_days": ", ".join(sorted(days)),
    }
    mins = [int(i.min_event_us) for i in infos if i.min_event_us is not None]
    maxs = [int(i.max_event_us) for i in infos if i.max_event_us is not None]
    if mins and maxs:
        metadata["min_event_us"] = min(mins)
        metadata["max_event_us"] = max(maxs)
    return dg.AssetMaterialization(
        asset_key="raw_market_events", partition=market_key(day, symbol), metadata=metadata
    )
