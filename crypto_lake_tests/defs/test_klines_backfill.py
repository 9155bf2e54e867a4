"""binance_klines_1m as a UI backfill runs it: a run per date over every configured symbol,
against the exchange simulator with a small weight limit on a fake clock (``klines_sim``).

Paced under the budget without a 429; an IP ban (418) mid-run stops at once with the
partitions done recorded as materialized and a failure that says when the ban ends; a run
during the ban sends nothing; after it, a re-run fetches only what is missing, and the lake
equals the one an uninterrupted backfill wrote.
"""

import functools
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
import pytest

import crypto_lake.defs.market.assets as assets_mod
from crypto_lake.defs.market.assets import binance_klines_1m, partition_file
from crypto_lake.defs.market.partitions import CONFIG, market_partitions, range_tags
from crypto_lake.defs.resources import LakeResource
from crypto_lake.lib.core.paths import LakeLayout
from crypto_lake.lib.market.klines import DAY_MINUTES, KlinesClient, utc_text
from crypto_lake_tests.lib import klines_sim
from crypto_lake_tests.lib.klines_sim import US, day_start_us, utc_day

SYMBOLS = list(CONFIG.symbols)  # a UI backfill's run covers every symbol of its date
DAY = utc_day(2)
LIMIT = 40  # the simulator's weight per minute; the default share 0.5 leaves 20: 10 requests
ASSET = dg.AssetKey("binance_klines_1m")
JOB = dg.define_asset_job("klines_backfill", selection=[binance_klines_1m])


@dataclass
class Backfill:
    ex: klines_sim.Exchange
    root: Path

    def run(self, instance: dg.DagsterInstance, lake: str, day: str):
        """One run of the backfill: ``day`` for every symbol, as Dagster launches it."""
        resources = {"lake": LakeResource(lake_root=str(self.root / lake))}
        job = dg.Definitions(assets=[binance_klines_1m], jobs=[JOB], resources=resources)
        return job.resolve_job_def(JOB.name).execute_in_process(
            instance=instance, tags=range_tags([day], SYMBOLS), raise_on_error=False
        )


@pytest.fixture
def backfill(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Backfill]:
    history = dict.fromkeys(SYMBOLS, day_start_us(DAY) - 3600 * US)
    with klines_sim.exchange(monkeypatch, history, weight_limit=LIMIT) as ex:
        monkeypatch.setenv("CRYPTO_LAKE__BINANCE__REST_BASE_URL", ex.url)
        monkeypatch.setenv("CRYPTO_LAKE__BINANCE__REST_WEIGHT_LIMIT_PER_MINUTE", str(LIMIT))
        clocked = functools.partial(KlinesClient, clock=ex.clock.time, sleep=ex.clock.sleep)
        monkeypatch.setattr(assets_mod, "KlinesClient", clocked)
        yield Backfill(ex, tmp_path)


def keys(day: str, symbols: list[str] = SYMBOLS) -> list[str]:
    return [f"{day}|{s}" for s in symbols]


def partition_metadata(instance: dg.DagsterInstance, run_id: str) -> dict[str, dict]:
    """Each partition's own numbers as the run recorded them: its observation in a ranged
    run's result, else its materialization (a failed step's too)."""
    kinds = {dg.DagsterEventType.ASSET_MATERIALIZATION, dg.DagsterEventType.ASSET_OBSERVATION}
    out: dict[str, dict] = {}
    for entry in instance.all_logs(run_id, of_type=kinds):
        data = entry.dagster_event.event_specific_data
        record = getattr(data, "asset_observation", None) or data.materialization
        meta = {k: v.value for k, v in record.metadata.items()}
        out.setdefault(record.partition, {}).update(meta)
    return out


def ui_status(instance: dg.DagsterInstance) -> tuple[set[str], set[str]]:
    """(materialized, failed) partitions as the UI's partition bar shows them."""
    from dagster._core.storage.partition_status_cache import (
        get_and_update_asset_status_cache_value,
    )

    value = get_and_update_asset_status_cache_value(instance, ASSET, market_partitions)
    assert value is not None
    done = value.deserialize_materialized_partition_subsets(market_partitions)
    failed = value.deserialize_failed_partition_subsets(market_partitions)
    return {str(k) for k in done.get_partition_keys()}, {
        str(k) for k in failed.get_partition_keys()
    }


def digests(layout: LakeLayout) -> dict[str, str]:
    files = {s: partition_file(layout, "klines_1m", s, DAY) for s in SYMBOLS}
    return {s: hashlib.sha256(f.read_bytes()).hexdigest() for s, f in files.items()}


def test_a_banned_backfill_records_what_it_did_and_resumes_where_it_stopped(
    backfill: Backfill,
) -> None:
    ex = backfill.ex
    # Uninterrupted: paced under the budget (10 requests a minute), never a 429.
    with dg.instance_for_test() as instance:
        result = backfill.run(instance, "whole", DAY)
        assert result.success
        meta = partition_metadata(instance, result.run_id)
        for key in keys(DAY):
            m = meta[key]
            assert (m["dagster/row_count"], m["minutes_expected"]) == (DAY_MINUTES,) * 2
            assert m["complete"] and m["fetched"] and m["missing_minutes"] == 0
            assert (m["requests"], m["weight_used"], m["http_429"]) == (2, 4, 0)
        totals = result.asset_materializations_for_node("binance_klines_1m")[0].metadata
        assert totals["run_requests"].value == 2 * len(SYMBOLS)
        assert totals["run_weight_used"].value == 4 * len(SYMBOLS)
        assert totals["run_partitions_complete"].value == len(SYMBOLS)
        assert totals["run_max_used_weight_1m"].value == LIMIT // 2
    assert set(ex.statuses()) == {200} and max(v.used for v in ex.verdicts) == LIMIT // 2
    assert len(ex.clock.sleeps) == 2  # 26 requests: 10 + 10 + 6 over three minutes
    whole = digests(LakeLayout(backfill.root / "whole"))

    # The same backfill where another client on our IP gets it banned at the first minute's
    # end: five partitions are done (10 requests), the sixth meets the 418.
    ex.clock.now = (ex.clock.now // 60 + 1) * 60  # a fresh minute: nothing used yet
    ex.clock.on_sleep = lambda _: ex.provoke_ban(300) if ex.clock.on_sleep else None
    layout = LakeLayout(backfill.root / "cut")
    order = sorted(SYMBOLS)  # a run fetches its partitions in (date, symbol) order
    done, left = keys(DAY, order[:5]), keys(DAY, order[5:])
    with dg.instance_for_test() as instance:
        n = len(ex.verdicts)
        result = backfill.run(instance, "cut", DAY)
        ex.clock.on_sleep = None
        assert not result.success
        statuses = ex.statuses(n)
        assert statuses.count(200) == 10 and statuses.count(418) == 2  # the other's, ours
        assert statuses[-1] == 418  # and nothing after it: no retry of the step either
        message = result.failure_data_for_node("binance_klines_1m").error.message
        ban_end = utc_text(ex.ban_until)
        assert "HTTP 418" in message and f"until {ban_end}" in message
        assert "after the ban ends" in message and all(k in message for k in left)
        assert ui_status(instance) == (set(done), set(left))  # what the partition bar shows
        for key in done:
            assert partition_file(layout, "klines_1m", key.split("|")[1], DAY).exists()

        # Launched again during the ban: the done partitions are recorded again from their
        # files, and not one request goes out.
        n = len(ex.verdicts)
        again = backfill.run(instance, "cut", DAY)
        assert not again.success and len(ex.verdicts) == n
        assert f"until {ban_end}" in again.failure_data_for_node("binance_klines_1m").error.message
        meta = partition_metadata(instance, again.run_id)
        assert set(meta) == set(done) and not any(m["fetched"] for m in meta.values())

        # After the ban: only the missing partitions are fetched.
        ex.clock.now = ex.ban_until + 1
        n = len(ex.verdicts)
        resumed = backfill.run(instance, "cut", DAY)
        assert resumed.success
        meta = partition_metadata(instance, resumed.run_id)
        assert {k for k, m in meta.items() if m["fetched"]} == set(left)
        assert all(meta[k]["requests"] == 0 and meta[k]["complete"] for k in done)
        assert ex.statuses(n) == [200] * 2 * len(left)
        assert ui_status(instance) == (set(keys(DAY)), set())

    assert digests(layout) == whole  # the same files as the uninterrupted backfill
    for symbol in SYMBOLS:
        path = partition_file(layout, "klines_1m", symbol, DAY)
        assert [p.name for p in path.parent.iterdir()] == ["part-0.parquet"]
        rows, distinct = duckdb.sql(
            f"SELECT count(*), count(DISTINCT open_time) FROM '{path}'"
        ).fetchall()[0]
        assert rows == distinct == DAY_MINUTES
