"""Faster partition health bars in the Dagster UI for our two-dimensional (date × symbol)
partitions: the webserver's status ranges read each partition key by a split.

Why: the checks page of ``bars_1s`` asks for every check's status per partition twice (the
asset's live data and its checks list), and the partitions page for the asset's. Dagster's
``build_multi_partition_ranges_generic`` (dagster-graphql 1.13) turns every partition key of
every status into a ``MultiPartitionKey`` first, with argument checks: at a year of 13
symbols, 9 checks x 4,218 keys took 0.50 s of the webserver's one Python thread per query,
0.19 s of it after this change (the rest is Dagster's run-length encoding, unchanged).

How: the function gets the same arguments except the partitions definition, wrapped so that
``is_valid_key_format`` and ``get_partition_key_from_str`` split the key on Dagster's
delimiter and name its parts in the definition's dimension order, exactly what Dagster's own
methods do without building the key objects; everything else is the definition itself. The
result is the same (``crypto_lake_tests/lib/test_ui_partition_keys.py`` compares the two on
random status subsets). Installed by ``crypto_lake.storage`` when the webserver prepares the
instance's storage (``optimize_for_webserver``: that process only), and only on the
dagster-graphql version it was checked against; on any other the UI keeps Dagster's own
function.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

CHECKED_VERSION = "1.13."  # the dagster-graphql releases this was compared against
_PARAMS = ["subsets", "partitions_def", "dynamic_partitions_store", "build_secondary_dim"]


class _Key:
    """What the ranges read of a parsed key: its part per dimension."""

    __slots__ = ("keys_by_dimension",)

    def __init__(self, keys_by_dimension: dict[str, str]) -> None:
        self.keys_by_dimension = keys_by_dimension


class SplitKeys:
    """A multi-dimensional partitions definition whose keys are read by a split."""

    def __init__(self, partitions_def: Any) -> None:
        from dagster._core.definitions.partitions.utils.multi import (
            MULTIPARTITION_KEY_DELIMITER,
        )

        self._def = partitions_def
        self._names = [dim.name for dim in partitions_def.partitions_defs]
        self._delimiter = MULTIPARTITION_KEY_DELIMITER

    def __getattr__(self, name: str) -> Any:
        return getattr(self._def, name)

    def is_valid_key_format(self, partition_key: str) -> bool:
        return partition_key.count(self._delimiter) == len(self._names) - 1

    def get_partition_key_from_str(self, partition_key_str: str) -> _Key:
        parts = partition_key_str.split(self._delimiter)
        if len(parts) != len(self._names):  # as Dagster's check.invariant
            raise ValueError(f"{partition_key_str!r} is not a key of {len(self._names)} parts")
        return _Key(dict(zip(self._names, parts, strict=True)))


def split_keys_ranges(original: Callable) -> Callable:
    """``build_multi_partition_ranges_generic`` with the definition wrapped in ``SplitKeys``."""

    from dagster import MultiPartitionsDefinition

    def ranges(subsets, partitions_def, dynamic_partitions_store, build_secondary_dim):
        if isinstance(partitions_def, MultiPartitionsDefinition):
            partitions_def = SplitKeys(partitions_def)
        return original(subsets, partitions_def, dynamic_partitions_store, build_secondary_dim)

    ranges.original = original  # type: ignore[attr-defined]
    return ranges


def install() -> bool:
    """Put ``split_keys_ranges`` in the webserver's modules that build status ranges; False
    (Dagster's own function kept) on a dagster-graphql version it was not checked against."""
    import dagster_graphql
    import dagster_graphql.schema  # first: its modules import each other in turn
    from dagster_graphql.implementation import fetch_asset_checks, fetch_assets
    from dagster_graphql.implementation import partition_status_utils as utils

    original = utils.build_multi_partition_ranges_generic
    if not dagster_graphql.__version__.startswith(CHECKED_VERSION) or (
        list(inspect.signature(original).parameters) != _PARAMS
    ):
        log.info("dagster-graphql %s: partition status ranges left to Dagster's own code",
                 dagster_graphql.__version__)  # fmt: skip
        return False
    for module in (fetch_asset_checks, fetch_assets):
        current = module.build_multi_partition_ranges_generic
        if getattr(current, "original", None) is None:
            module.build_multi_partition_ranges_generic = split_keys_ranges(original)
    return True
