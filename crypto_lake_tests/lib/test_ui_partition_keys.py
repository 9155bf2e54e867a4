"""The webserver's partition status ranges with keys read by a split
(``crypto_lake.ui_partition_keys``) are Dagster's own: compared on random status subsets of
two-dimensional definitions, and installed when the webserver prepares our storage."""

from __future__ import annotations

import random
from pathlib import Path

import dagster as dg
import dagster_graphql.schema  # noqa: F401 - first, as the webserver loads them
import pytest
from dagster._core.storage.asset_check_execution_record import (
    AssetCheckExecutionResolvedStatus as Status,
)
from dagster_graphql.implementation import fetch_asset_checks, fetch_assets
from dagster_graphql.implementation import partition_status_utils as utils

from crypto_lake import ui_partition_keys
from crypto_lake.defs.market.partitions import build_market_partitions
from crypto_lake.lib.core.config import load_config

ORIGINAL = utils.build_multi_partition_ranges_generic  # never replaced in its own module
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"]
OTHER = {"venue": dg.StaticPartitionsDefinition(["a", "b", "c"]),
         "book": dg.StaticPartitionsDefinition(["x", "y"])}  # fmt: skip
DEFINITIONS = {
    "market": build_market_partitions(load_config(environ={}), SYMBOLS),
    "static x static": dg.MultiPartitionsDefinition(OTHER),
}


def secondary(subsets) -> tuple:
    """What a range holds, comparable: each status's secondary keys."""
    return tuple(sorted((s.value, tuple(sorted(sub.get_partition_keys())))
                        for s, sub in subsets.items()))  # fmt: skip


def random_subsets(pdef: dg.MultiPartitionsDefinition, rng: random.Random) -> dict:
    keys = list(pdef.get_partition_keys())
    keys = keys[-min(len(keys), 40 * len(SYMBOLS)) :]  # the last 40 days of the market's
    out = {}
    for status in rng.sample(list(Status), rng.randint(1, len(Status))):
        chosen = rng.sample(keys, rng.randint(0, len(keys)))
        if rng.random() < 0.3:  # a run of whole days, as checks of one refresh give
            a = rng.randrange(len(keys))
            chosen += keys[a : a + rng.randint(1, 60)]
        if rng.random() < 0.2:
            chosen += ["not-a-multi-key", "a|b|c"]
        out[status] = (
            None if rng.random() < 0.1 else pdef.empty_subset().with_partition_keys(chosen)
        )
    return out


@pytest.mark.parametrize("name", sorted(DEFINITIONS))
def test_split_keys_give_dagsters_ranges(name):
    pdef = DEFINITIONS[name]
    store = dg.DagsterInstance.ephemeral()
    faster = ui_partition_keys.split_keys_ranges(ORIGINAL)
    rng = random.Random(7)
    for _ in range(60):
        subsets = random_subsets(pdef, rng)
        assert faster(subsets, pdef, store, secondary) == ORIGINAL(subsets, pdef, store, secondary)


def test_an_answer_is_given_again_only_for_the_same_subset_objects():
    pdef = DEFINITIONS["market"]
    store = dg.DagsterInstance.ephemeral()
    calls = []

    def counted(*args):
        calls.append(args)
        return ORIGINAL(*args)

    faster = ui_partition_keys.split_keys_ranges(counted)
    subsets = random_subsets(pdef, random.Random(3))
    assert any(v for v in subsets.values())
    truth = ORIGINAL(subsets, pdef, store, secondary)
    first = faster(subsets, pdef, store, secondary)
    # the page's other query: a new mapping of the same subset objects, the same definition
    # rebuilt from its snapshot (equal, not the same object)
    rebuilt = build_market_partitions(load_config(environ={}), SYMBOLS)
    assert rebuilt is not pdef and rebuilt == pdef
    assert faster(dict(subsets), rebuilt, store, secondary) == first == truth
    assert len(calls) == 1 and faster.recent.hits == 1
    first.clear()  # a caller changing its list changes no later answer
    assert faster(subsets, pdef, store, secondary) == truth and len(calls) == 1
    # equal contents in new objects, another definition or another builder: built again
    copies = {s: None if v is None else pdef.empty_subset().with_partition_keys(
        list(v.get_partition_keys())) for s, v in subsets.items()}  # fmt: skip
    assert faster(copies, pdef, store, secondary) == truth and len(calls) == 2
    fewer = build_market_partitions(load_config(environ={}), SYMBOLS[:3])
    assert faster(subsets, fewer, store, secondary) == ORIGINAL(subsets, fewer, store, secondary)
    assert len(calls) == 3
    assert faster(subsets, pdef, store, lambda s: secondary(s)) == truth and len(calls) == 4


def test_a_wrong_key_is_refused_as_dagster_refuses_it():
    pdef = DEFINITIONS["market"]
    split = ui_partition_keys.SplitKeys(pdef)
    assert not split.is_valid_key_format("2024-01-01") and not pdef.is_valid_key_format("2024")
    assert split.is_valid_key_format("2024-01-01|BTCUSDT")
    key = split.get_partition_key_from_str("2024-01-01|BTCUSDT")
    assert key.keys_by_dimension == pdef.get_partition_key_from_str(
        "2024-01-01|BTCUSDT").keys_by_dimension  # fmt: skip
    with pytest.raises(ValueError):
        split.get_partition_key_from_str("2024-01-01")


def test_the_webserver_set_up_of_our_storage_installs_it(tmp_path: Path, monkeypatch):
    for module in (fetch_asset_checks, fetch_assets):  # as a fresh webserver process has them
        monkeypatch.setattr(module, "build_multi_partition_ranges_generic", ORIGINAL)
    root = Path(__file__).resolve().parents[2]
    (tmp_path / "dagster.yaml").write_text((root / "dagster.yaml").read_text())
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        instance.optimize_for_webserver(statement_timeout=0, pool_recycle=-1, max_overflow=0)
    for module in (fetch_asset_checks, fetch_assets):
        installed = module.build_multi_partition_ranges_generic
        assert installed.original is ORIGINAL
    assert ui_partition_keys.install()  # once more: not wrapped twice
    assert fetch_asset_checks.build_multi_partition_ranges_generic.original is ORIGINAL
