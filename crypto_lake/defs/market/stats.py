"""Turn the lib's TickStats / BarStats into UI metadata, and carry outages from ticks to bars."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import dagster as dg

from crypto_lake.defs.market.metadata import markdown_table
from crypto_lake.lib.core.paths import LakeLayout
from crypto_lake.lib.market.bars import BarStats
from crypto_lake.lib.market.outages import (
    OUTAGE,
    load_outage_intervals,
    save_outage_intervals,
)
from crypto_lake.lib.market.ticks import TickStats

MAX_GAP_ROWS = 20


def us_to_text(us: int | None) -> str | None:
    if us is None:
        return None
    return datetime.fromtimestamp(us / 1e6, tz=UTC).isoformat()


def tick_stats_metadata(stats: TickStats) -> tuple[dict[str, Any], dict[str, Any]]:
    """(trades metadata, quotes metadata) answering "is this complete and correct?"."""
    gaps = list(stats.trade_id_gaps)
    trades: dict[str, Any] = {
        "raw_files": stats.raw_files,
        "raw_lines": stats.raw_lines,
        "duplicates_dropped": stats.trade_duplicates,
        "bad_lines": stats.bad_lines,
        "repaired_trades": stats.repaired_trades,
        # from Binance's public daily file: the ids the raw files lack (source archive), and
        # every trade of the day the file held
        "archive_trades": stats.archive_trades,
        "archive_file_trades": stats.archive_file_trades,
        "trade_id_gaps_open": len(gaps),
        "missing_trade_ids": stats.missing_trade_ids,
        "outages": len(stats.outages),
        "open_gaps": dg.MetadataValue.md(
            markdown_table(
                [{"first_missing": a, "last_missing": b, "count": b - a + 1}
                 for a, b in gaps[:MAX_GAP_ROWS]]
            )
        ),
    }  # fmt: skip
    if stats.trade_kind:
        trades["source_stream"] = dg.MetadataValue.text(stats.trade_kind)
    if stats.first_trade_id is not None:
        trades["first_trade_id"] = stats.first_trade_id
        trades["last_trade_id"] = stats.last_trade_id
    if stats.min_ts_event_us is not None:
        trades["first_ts"] = dg.MetadataValue.text(us_to_text(stats.min_ts_event_us))
        trades["last_ts"] = dg.MetadataValue.text(us_to_text(stats.max_ts_event_us))
    if stats.quarantine_path:
        trades["quarantine"] = dg.MetadataValue.path(stats.quarantine_path)
    # ids received twice with different content: all copies quarantined, partition flagged
    trades["trade_id_conflicts"] = stats.trade_id_conflicts
    if stats.conflicting_trade_ids:
        ids = ", ".join(str(i) for i in stats.conflicting_trade_ids)
        trades["conflicting_trade_ids"] = dg.MetadataValue.text(ids)
    quotes: dict[str, Any] = {
        "raw_files": stats.raw_files,
        "duplicates_dropped": stats.quote_duplicates,
        "bad_lines": stats.bad_lines,
    }
    if stats.max_ts_recv_us is not None:
        quotes["last_recv_ts"] = dg.MetadataValue.text(us_to_text(stats.max_ts_recv_us))
    return trades, quotes


def bar_stats_metadata(stats: BarStats, seconds_per_row: int = 1) -> dict[str, Any]:
    """Completeness numbers of a bars build (1 s or 1 m rows)."""
    expected = 86_400 // seconds_per_row
    meta: dict[str, Any] = {
        # rows the full day grid would have but this build does not (yet) cover
        "missing_rows": max(0, expected - stats.rows),
        "grid_complete": dg.MetadataValue.bool(bool(stats.grid_complete)),
        "trade_count": stats.trade_count,
        "empty_rows": stats.empty_seconds,
        "live_rows": stats.live_seconds,
        "repaired_rows": stats.repaired_seconds,
        "archive_rows": stats.archive_seconds,  # rows with trades from the public daily file
        "outage_rows": stats.outage_seconds,
        "rows_without_quote": stats.seconds_without_quote,
    }
    if stats.first_window_us is not None:
        meta["first_window"] = dg.MetadataValue.text(us_to_text(stats.first_window_us))
        meta["last_window"] = dg.MetadataValue.text(us_to_text(stats.last_window_us))
    if seconds_per_row == 1:
        meta["missing_seconds"] = meta["missing_rows"]
        meta["outage_seconds"] = stats.outage_seconds
    return meta


def save_outages(layout: LakeLayout, symbol: str, day: str, stats: TickStats) -> None:
    """Persist the day's unrecorded intervals, ``[start_us, end_us, kind]`` each (kind
    "outage": the collector ran without a live connection; "unrecorded": it did not run or
    recorded nothing), so the bars step can flag those seconds and coverage can tell them
    apart."""
    kinds = stats.outage_kinds or [OUTAGE] * len(stats.outages)
    intervals = [(a, b, k) for (a, b), k in zip(stats.outages, kinds, strict=True)]
    save_outage_intervals(layout, symbol, day, intervals)


def load_outages(layout: LakeLayout, symbol: str, day: str) -> list[tuple[int, int]]:
    """The saved intervals as ``(start_us, end_us)``, whatever their kind (for the bars)."""
    return [(a, b) for a, b, _ in load_outage_intervals(layout, symbol, day)]
