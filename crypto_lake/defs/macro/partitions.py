"""Macro partitions: UTC day × ticker for the bars, UTC day for the synthetic DXY.

Why this shape: a user backfills "these days for one ticker or for all", which the date ×
ticker grid expresses directly in the UI, and a failing ticker shows as one red cell instead
of failing a whole day. One partition is one Yahoo request (one UTC day, well inside Yahoo's
~7 days per request for 1-minute bars). The daily dimension starts at ``macro.start_date``
because Yahoo serves 1-minute history for only ~30 days: older partitions can never be filled.
"""

from __future__ import annotations

import dagster as dg

from crypto_lake.lib.core.config import Config, load_config
from crypto_lake.lib.macro.store import partition_tickers

DATE_DIM = "date"
TICKER_DIM = "ticker"


def build_daily(config: Config) -> dg.DailyPartitionsDefinition:
    return dg.DailyPartitionsDefinition(
        start_date=config.macro.start_date.isoformat(),
        timezone="UTC",
        end_offset=1,  # today's partition exists, so the 15-minute refresh has a target
    )


def build_macro_partitions(config: Config) -> dg.MultiPartitionsDefinition:
    tickers = partition_tickers(config.macro_tickers, config.macro.fetch_dxy_inputs)
    return dg.MultiPartitionsDefinition(
        {DATE_DIM: build_daily(config), TICKER_DIM: dg.StaticPartitionsDefinition(tickers)}
    )


# The code location reads its configuration once, at load time.
CONFIG = load_config()
macro_partitions = build_macro_partitions(CONFIG)
dxy_partitions = build_daily(CONFIG)
MACRO_TICKERS = partition_tickers(CONFIG.macro_tickers, CONFIG.macro.fetch_dxy_inputs)


def macro_key(day: str, ticker: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({DATE_DIM: day, TICKER_DIM: ticker})


def split_macro_key(key: str) -> tuple[str, str]:
    """``"2026-11-20|ES=F"`` -> ``("2026-11-20", "ES=F")`` (dimensions sort by name)."""
    day, ticker = str(key).split("|", 1)
    return day, ticker


def day_range_tags(day: str, tickers: list[str]) -> dict[str, str]:
    """Tags making one run cover every ticker of ``day`` (keys sort by date, then ticker order)."""
    return {
        "dagster/asset_partition_range_start": f"{day}|{tickers[0]}",
        "dagster/asset_partition_range_end": f"{day}|{tickers[-1]}",
    }
