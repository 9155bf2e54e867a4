"""The raw capture as an external asset: Dagster does not compute it, the collector writes it."""

from __future__ import annotations

import dagster as dg

from crypto_lake.defs.market.partitions import market_partitions

raw_market_events = dg.AssetSpec(
    key="raw_market_events",
    description=(
        "Sealed raw JSONL part files written by the collector daemon "
        "(`raw/binance/{SYMBOL}/{YYYY-MM-DD}/part-NNNNNN.jsonl[.gz|.zst]`): every WebSocket "
        "message verbatim with its local receive time, plus REST-repaired trades and session "
        "records. The files sealed since the last pass of `market_refresh_sensor` are "
        "recorded as one materialization per (date, symbol) partition, with their count, part "
        "range, bytes, lines and event time range (per-file detail: `state/raw_catalog/`)."
    ),
    partitions_def=market_partitions,
    group_name="market",
    kinds={"json", "file"},
    owners=[],
)
