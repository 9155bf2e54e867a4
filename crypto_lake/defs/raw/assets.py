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
        "records. Each sealed file is recorded as a materialization of its (date, symbol) "
        "partition by the `raw_file_sensor`, with its path, size and line count."
    ),
    partitions_def=market_partitions,
    group_name="market",
    kinds={"json", "file"},
    owners=[],
)
