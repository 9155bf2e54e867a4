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
random status subsets). And the checks page's two queries build the same ranges from the
same subset objects (the storage gives a check's state object again while nothing changed):
the second gets the first's answer (``_Recent``), so a page builds each check's ranges once.

Installed by ``crypto_lake.storage`` when the webserver prepares the instance's storage
(``optimize_for_webserver``: that process only), and only on the dagster-graphql version it
was checked against; on any other the UI keeps Dagster's own function.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
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


class _Recent:
    """The last ``size`` answers, each kept with the very subset objects it was built from.

    Dagster's partition subsets are immutable values, and the storage gives the same check
    state objects again while nothing changed (``crypto_lake.storage``'s memo): the checks
    page's two queries, and its reloads, ask for the ranges of the same subset objects. An
    answer is given again only for those same objects (held here, so no other object can
    take their ids), an equal definition and the same secondary builder."""

    def __init__(self, size: int = 64) -> None:
        self._size = size
        self._entries: OrderedDict[tuple, tuple[Any, Any, list]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0

    @staticmethod
    def key(subsets: Mapping, build_secondary_dim: Callable) -> tuple:
        code = getattr(build_secondary_dim, "__code__", build_secondary_dim)
        return (code, *((status, id(subset)) for status, subset in subsets.items()))

    def get(self, key: tuple, partitions_def: Any) -> list | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[1] != partitions_def:
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return list(entry[2])

    def put(self, key: tuple, subsets: Mapping, partitions_def: Any, ranges: list) -> None:
        with self._lock:
            self._entries[key] = (list(subsets.values()), partitions_def, list(ranges))
            self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)


def split_keys_ranges(original: Callable) -> Callable:
    """``build_multi_partition_ranges_generic`` with the definition wrapped in ``SplitKeys``,
    and its recent answers given again for the same subset objects (``_Recent``)."""

    from dagster import MultiPartitionsDefinition

    recent = _Recent()

    def ranges(subsets, partitions_def, dynamic_partitions_store, build_secondary_dim):
        if not isinstance(partitions_def, MultiPartitionsDefinition):
            return original(subsets, partitions_def, dynamic_partitions_store,
                            build_secondary_dim)  # fmt: skip
        key = recent.key(subsets, build_secondary_dim)
        found = recent.get(key, partitions_def)
        if found is not None:
            return found
        out = original(subsets, SplitKeys(partitions_def), dynamic_partitions_store,
                       build_secondary_dim)  # fmt: skip
        recent.put(key, subsets, partitions_def, out)
        return out

    ranges.original = original  # type: ignore[attr-defined]
    ranges.recent = recent  # type: ignore[attr-defined]
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
