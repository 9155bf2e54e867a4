"""Market partitions: UTC day × symbol.

Why this shape: a user backfills "these dates for one symbol or for all symbols", which a
date × symbol grid expresses directly in the UI. The count stays comfortable: 5 years of
13 symbols is 1,826 × 13 = 23,738 keys per asset, a quarter of the 100,000 partitions per
asset that Dagster documents as its limit (asserted in the tests). The symbol list is
static (from config) because adding a symbol is a deliberate config change, and static
keys keep backfill and UI queries cheap compared with dynamic partitions.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

import dagster as dg

from crypto_lake.lib.config import Config, load_config

DATE_DIM = "date"
SYMBOL_DIM = "symbol"


def build_market_partitions(config: Config) -> dg.MultiPartitionsDefinition:
    """Daily partitions from ``dagster.partitions_start`` (today included) × configured symbols."""
    return dg.MultiPartitionsDefinition(
        {
            DATE_DIM: dg.DailyPartitionsDefinition(
                start_date=config.dagster.partitions_start.isoformat(),
                timezone="UTC",
                end_offset=1,  # today's partition exists, so intraday refreshes have a target
            ),
            SYMBOL_DIM: dg.StaticPartitionsDefinition(list(config.symbols)),
        }
    )


# The code location reads its configuration once, at load time.
CONFIG = load_config()
market_partitions = build_market_partitions(CONFIG)


def split_key(key: str | dg.MultiPartitionKey) -> tuple[str, str]:
    """``"2024-05-01|BTCUSDT"`` -> ``("2024-05-01", "BTCUSDT")``."""
    if isinstance(key, dg.MultiPartitionKey):
        dims = key.keys_by_dimension
        return dims[DATE_DIM], dims[SYMBOL_DIM]
    day, symbol = str(key).split("|", 1)
    return day, symbol


def market_key(day: str, symbol: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({DATE_DIM: day, SYMBOL_DIM: symbol})


def partition_pairs(keys: Sequence[str]) -> list[tuple[str, str]]:
    """The (day, symbol) pairs of a run's partition keys, in a fixed order."""
    return sorted(split_key(k) for k in keys)


def range_tags(days: Iterable[str], symbols: Sequence[str]) -> dict[str, str]:
    """Tags that make one run cover every symbol of a contiguous block of days.

    Multi-partition keys sort by date then by the declared symbol order, so the range from
    (first day, first symbol) to (last day, last symbol) is exactly that rectangle.
    """
    ordered = sorted(days)
    return {
        "dagster/asset_partition_range_start": f"{ordered[0]}|{symbols[0]}",
        "dagster/asset_partition_range_end": f"{ordered[-1]}|{symbols[-1]}",
    }


def contiguous_day_blocks(days: Iterable[str]) -> list[list[str]]:
    """Group ISO days into runs of consecutive days (one run per block)."""
    from datetime import date, timedelta

    blocks: list[list[str]] = []
    for d in sorted(set(days)):
        if blocks and date.fromisoformat(blocks[-1][-1]) + timedelta(days=1) == date.fromisoformat(
            d
        ):
            blocks[-1].append(d)
        else:
            blocks.append([d])
    return blocks


def group_by_day(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for day, symbol in pairs:
        out[day].append(symbol)
    return dict(out)
