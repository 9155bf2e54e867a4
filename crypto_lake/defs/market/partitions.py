"""Market partitions: UTC day × symbol.

Why this shape: a user backfills "these dates for one symbol or for all symbols", which a
date × symbol grid expresses directly in the UI. The count stays comfortable: 5 years of
13 symbols is 1,826 × 13 = 23,738 keys per asset, a quarter of the 100,000 partitions per
asset that Dagster documents as its limit (asserted in the tests). The symbol list is
static (from config) because adding a symbol is a deliberate config change, and static
keys keep backfill and UI queries cheap compared with dynamic partitions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import dagster as dg

from crypto_lake.lib.core.config import Config, load_config
from crypto_lake.lib.core.symbols import shift_day

DATE_DIM = "date"
SYMBOL_DIM = "symbol"


def build_market_partitions(
    config: Config, symbols: Sequence[str] | None = None
) -> dg.MultiPartitionsDefinition:
    """Daily partitions from ``dagster.partitions_start`` (today included) × configured symbols
    (or ``symbols``, a subset in the same order)."""
    return dg.MultiPartitionsDefinition(
        {
            DATE_DIM: dg.DailyPartitionsDefinition(
                start_date=config.dagster.partitions_start.isoformat(),
                timezone="UTC",
                end_offset=1,  # today's partition exists, so intraday refreshes have a target
            ),
            SYMBOL_DIM: dg.StaticPartitionsDefinition(
                list(config.symbols if symbols is None else symbols)
            ),
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


RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


class PartitionScopeError(dg.Failure):
    """A run whose tags do not name a set of market partitions we can build exactly."""


def run_partition_keys(
    context: Any, partitions_def: dg.MultiPartitionsDefinition | None = None
) -> list[str]:
    """The market partitions a run claims, whatever launched it.

    A backfill launched from a job's page gives each run the range tags *and* the dimension
    tags of the range's first partition (``dagster/partition/date``, ``.../symbol``); Dagster's
    step context then prefers the dimension tags and reports one partition, while the backfill
    counts the whole range as built. The range is what the run claims, so it is built, plus
    the partition of the dimension tags when it lies outside the range; the caller records
    the partitions Dagster does not (see ``crypto_lake.defs.market.emit``).
    Fails before anything is written when the range is not one of ours.
    """
    op_context = getattr(context, "op_execution_context", context)
    tags = op_context.run.tags
    start, end = tags.get(RANGE_START_TAG), tags.get(RANGE_END_TAG)
    if start and end:
        try:
            keys = (partitions_def or market_partitions).get_partition_keys_in_range(
                dg.PartitionKeyRange(start, end)
            )
        except Exception as exc:
            raise PartitionScopeError(
                f"run tags name the partition range {start} .. {end}, which is not a range of "
                f"market partitions ({exc}); launch it again from the asset or job page"
            ) from exc
        if not keys:
            raise PartitionScopeError(f"partition range {start} .. {end} is empty")
        keys = [str(k) for k in keys]
        # Dagster records the step's outputs for the partition its dimension tags name, which
        # a job-page backfill may take from outside this run's range (every run of such a
        # backfill carries the same ones): that partition is built too, so every partition
        # recorded as materialized by this run was built by it.
        extra = [k for k in dagster_partition_keys(context) if k not in keys]
        if extra:
            op_context.log.warning(
                f"run tags name partition {extra} besides the range {start} .. {end} "
                "(a backfill launched from a job page); building it as well"
            )
        return keys + extra
    try:
        return [str(k) for k in context.partition_keys]
    except Exception:  # an unpartitioned run
        return []


def dagster_partition_keys(context: Any) -> list[str]:
    """The partitions Dagster itself records for the step's outputs (may be fewer than the run
    claims, see ``run_partition_keys``)."""
    try:
        return [str(k) for k in context.partition_keys]
    except Exception:
        return []


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
    blocks: list[list[str]] = []
    for d in sorted(set(days)):
        if blocks and shift_day(blocks[-1][-1], 1) == d:
            blocks[-1].append(d)
        else:
            blocks.append([d])
    return blocks
