"""Issue 19: history from Binance's public daily files, end to end with real parts.

The exchange simulator serves its deep history and the public file site on loopback
(``binance.public_data_url`` points at it by configuration); ``history_import_job`` from the
real Definitions imports and rebuilds on a real Dagster instance. Checked:

* a day before the collector ran: every trade of the public file lands in trades with
  ``source = archive``, bars_1s and coverage say so, and the bars equal Binance's 1 s klines
  on every second (``klines_1s_parity``);
* faults of the public site (a day not published yet, a bad checksum, a truncated zip, a
  header row): a clear error per file, nothing stored for it, the other partitions recorded,
  and a later run imports what was missing;
* a live recording with an outage (collector killed, REST repair off): the archive fills
  exactly the trade ids the recorder missed, live trades stay live, and the live seconds equal
  Binance's 1 s klines.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from crypto_lake.defs.market.assets import partition_file
from crypto_lake.defs.market.partitions import CONFIG, range_tags
from crypto_lake.lib.core.paths import LakeLayout
from crypto_lake.lib.history.public_csv import read_trades
from crypto_lake.simulator import SimConfig, SimulatorThread
from crypto_lake_tests.collector.conftest import CollectorProc, collector_args
from crypto_lake_tests.defs.conftest import SYMBOLS

PARITY = "klines_1s_parity"


def _day(offset: int) -> str:
    return (datetime.now(UTC).date() + timedelta(days=offset)).isoformat()


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorThread]:
    cfg = SimConfig(symbols=SYMBOLS, history_days=2, history_rate_scale=0.02,
                    public_files_include_today=True, rate_scale=2.0)  # fmt: skip
    with SimulatorThread(cfg) as th:
        yield th


@pytest.fixture
def lake(sim: SimulatorThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LakeLayout:
    assert CONFIG.symbols[: len(SYMBOLS)] == SYMBOLS
    monkeypatch.setenv("LAKE_ROOT", str(tmp_path / "lake"))
    monkeypatch.setenv("CRYPTO_LAKE__BINANCE__PUBLIC_DATA_URL", sim.rest_url)
    monkeypatch.setenv("CRYPTO_LAKE__BINANCE__REST_BASE_URL", sim.rest_url)
    return LakeLayout(tmp_path / "lake")


def run(instance: dg.DagsterInstance, day: str, job_name: str = "history_import_job"):
    from crypto_lake.definitions import defs

    job = defs().resolve_job_def(job_name)
    return job.execute_in_process(instance=instance, tags=range_tags([day], SYMBOLS),
                                  raise_on_error=False)  # fmt: skip


def import_and_rebuild(instance: dg.DagsterInstance, day: str):
    """A UI backfill of history_import_job, then the run the history_rebuild sensor asks for
    (executed here as the daemon would launch it)."""
    from crypto_lake.definitions import defs
    from crypto_lake.defs.market.history import history_rebuild

    imported = run(instance, day)
    with dg.build_sensor_context(instance=instance) as context:
        result = history_rebuild(context)
    (request,) = result.run_requests
    assert request.job_name == "history_rebuild_job"
    assert request.tags == {**range_tags([day], SYMBOLS), "crypto_lake/trigger": "history_rebuild"}
    rebuilt = (
        defs()
        .resolve_job_def("history_rebuild_job")
        .execute_in_process(instance=instance, tags=request.tags, raise_on_error=False)
    )
    return imported, rebuilt


def materialized(instance: dg.DagsterInstance, asset: str) -> set[str]:
    records = instance.fetch_materializations(dg.AssetKey(asset), limit=1000).records
    return {r.partition_key for r in records}


def parity_results(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.partition: e for e in result.get_asset_check_evaluations() if e.check_name == PARITY}


def _query(sql: str, **params) -> list[tuple]:
    return duckdb.connect().execute(sql, {k: str(v) for k, v in params.items()}).fetchall()


def test_a_day_before_the_collector_ran_is_imported_whole_and_equals_the_1s_klines(
    lake: LakeLayout,
) -> None:
    day = _day(-1)
    with dg.instance_for_test() as instance:
        imported, result = import_and_rebuild(instance, day)
        assert imported.success and result.success, [
            e.message for r in (imported, result) for e in r.all_events if e.is_failure
        ]
        for asset in ("binance_trades_archive", "trades", "bars_1s", "coverage",
                      "binance_klines_1s"):  # fmt: skip
            assert materialized(instance, asset) == {f"{day}|{s}" for s in SYMBOLS}, asset
        parity = parity_results(result)
    for symbol in SYMBOLS:
        trades = partition_file(lake, "trades", symbol, day)
        zip_path = lake.public_file("trades", symbol, day)
        expected = read_trades(zip_path, day)
        ((n, lo, hi, sources, null_recv),) = _query(
            "SELECT count(*), min(trade_id), max(trade_id), list(DISTINCT source), "
            "count(*) FILTER (WHERE ts_recv IS NULL) FROM read_parquet($t)",
            t=trades,
        )
        assert n == expected.num_rows > 1000 and hi - lo + 1 == n
        assert sources == ["archive"] and null_recv == n
        bars = partition_file(lake, "bars_1s", symbol, day)
        ((count, archive_seconds, traded_seconds),) = _query(
            "SELECT sum(trade_count), count(*) FILTER (WHERE is_archive), "
            "count(*) FILTER (WHERE trade_count > 0) FROM read_parquet($b)",
            b=bars,
        )
        assert count == n and archive_seconds == traded_seconds > 0
        cov = partition_file(lake, "coverage", symbol, day)
        ((seconds_archive,),) = _query("SELECT sum(seconds_archive) FROM read_parquet($c)", c=cov)
        # the whole day: seconds with archive trades, and the quiet ones the file proves empty
        assert seconds_archive == 86_400
        ev = parity[f"{day}|{symbol}"]
        assert ev.passed, ev.metadata
        # every second from the first trade on, the empty ones too (a carried close)
        ((priced,),) = _query(
            "SELECT count(*) FROM read_parquet($b) WHERE open IS NOT NULL", b=bars
        )
        assert ev.metadata["seconds_compared_archive"].value == priced > traded_seconds
        assert ev.metadata["mismatches_archive"].value == 0


def test_public_site_faults_fail_their_partition_clearly_and_a_later_run_imports_it(
    lake: LakeLayout, sim: SimulatorThread
) -> None:
    day = _day(-2)
    btc, eth = SYMBOLS
    faults = sim.faults
    faults.public_file_missing("trades", eth, day, 1)
    faults.public_file_header_row("trades", btc, day)
    faults.public_file_bad_checksum("klines", btc, day)
    faults.public_file_truncated("klines", eth, day)
    try:
        with dg.instance_for_test() as instance:
            first = run(instance, day)
            assert not first.success
            errors = " ".join(
                str(e.event_specific_data.error.message)
                for e in first.all_events
                if e.is_step_failure
            )
            assert f"{day}|{eth}: not published yet: " in errors and "(HTTP 404)" in errors
            # a bad .CHECKSUM and a truncated zip: the SHA256 differs, nothing is stored
            for symbol in SYMBOLS:
                assert f"{day}|{symbol}: http" in errors
            assert errors.count("differs from its .CHECKSUM") == 2
            # the header row is tolerated; the 404 partition failed and stored nothing
            assert materialized(instance, "binance_trades_archive") == {f"{day}|{btc}"}
            assert not lake.public_file("trades", eth, day).exists()
            assert materialized(instance, "binance_klines_1s") == set()
            for symbol in SYMBOLS:
                assert not lake.public_file("klines", symbol, day, "1s").exists()
                assert not partition_file(lake, "klines_1s", symbol, day).exists()
            faults.clear_public_file_faults()
            second = run(instance, day)
            assert second.success
            assert materialized(instance, "binance_trades_archive") == {
                f"{day}|{s}" for s in SYMBOLS
            }
            assert materialized(instance, "binance_klines_1s") == {f"{day}|{s}" for s in SYMBOLS}
    finally:
        faults.clear_public_file_faults()


def test_the_archive_fills_a_recorded_outage_and_live_seconds_equal_the_1s_klines(
    lake: LakeLayout, sim: SimulatorThread, tmp_path: Path
) -> None:
    day = _day(0)
    env = {"CRYPTO_LAKE__COLLECTOR__REPAIR_GAPS": "false"}
    args = collector_args(symbols=",".join(SYMBOLS))

    def collect(seconds: float) -> None:
        proc = CollectorProc(lake.root, sim, args, tmp_path / "collector.log", env)
        try:
            proc.wait_heartbeat(
                lambda hb: hb["status"] == "running" and hb["connections"], timeout=30
            )
            time.sleep(seconds)
        finally:
            proc.terminate()

    collect(8)
    time.sleep(6)  # the outage: trades the recorder never sees
    collect(8)
    sim.pause_market()  # nothing after the recording, so today's file ends where we stopped
    try:
        with dg.instance_for_test() as instance:
            live = run(instance, day, "history_rebuild_job")  # what was recorded
            assert live.success
            gaps = {}
            for symbol in SYMBOLS:
                trades = partition_file(lake, "trades", symbol, day)
                ((n, lo, hi),) = _query(
                    "SELECT count(*), min(trade_id), max(trade_id) FROM read_parquet($t)", t=trades
                )
                gaps[symbol] = (hi - lo + 1) - n
            assert any(g > 0 for g in gaps.values()), "the outage lost no trade"
            imported, result = import_and_rebuild(instance, day)
            assert imported.success and result.success
            parity = parity_results(result)
    finally:
        sim.resume_market()
    for symbol in SYMBOLS:
        trades = partition_file(lake, "trades", symbol, day)
        rows = _query(
            "SELECT source, count(*), min(trade_id), max(trade_id) FROM read_parquet($t) "
            "GROUP BY source ORDER BY source",
            t=trades,
        )
        by_source = {r[0]: r[1] for r in rows}
        ((n, lo, hi),) = _query(
            "SELECT count(*), min(trade_id), max(trade_id) FROM read_parquet($t)", t=trades
        )
        assert hi - lo + 1 == n, "the archive left trade ids missing"
        cov = partition_file(lake, "coverage", symbol, day)
        ((lost, archive_seconds),) = _query(
            "SELECT sum(seconds_outage + seconds_unrecorded), sum(seconds_archive) "
            "FROM read_parquet($c)",
            c=cov,
        )
        assert lost == 0 and archive_seconds > 0
        assert by_source.get("live", 0) > 0
        # the ids the recorder missed (the outage, and the day before it started) are archive
        assert by_source.get("archive", 0) >= gaps[symbol]
        ev = parity[f"{day}|{symbol}"]
        assert ev.passed, ev.metadata
        assert ev.metadata["seconds_compared_live"].value > 0
        assert ev.metadata["mismatches_live"].value == 0


def test_the_history_command_imports_with_the_assets_code_and_records_the_runs(
    lake: LakeLayout, sim: SimulatorThread, tmp_path: Path
) -> None:
    """``crypto-lake history`` runs the same assets in this process against DAGSTER_HOME's
    instance: the lake files are written and the UI lists the runs and materializations; a
    file Binance has not published fails its run with exit status 1 and the reason."""
    day = _day(-1)
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    sim.faults.public_file_missing("klines", SYMBOLS[1], day, 1)
    cmd = [sys.executable, "-m", "crypto_lake.cli", "history", "--symbols", ",".join(SYMBOLS),
           "--start", day, "--end", day, "--kinds", "trades,klines_1s",
           "--no-progress"]  # fmt: skip
    try:
        first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    finally:
        sim.faults.clear_public_file_faults()
    assert first.returncode == 1, first.stderr
    assert f"FAILED {day} klines_1s" in first.stderr and "not published yet" in first.stderr
    assert "2 of 3 runs succeeded" in first.stderr  # klines_1s, trades, rebuild
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    for symbol in SYMBOLS:
        assert partition_file(lake, "trades", symbol, day).exists()
        assert partition_file(lake, "klines_1s", symbol, day).exists()
    from dagster._core.instance.ref import InstanceRef

    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        runs = instance.get_runs(dg.RunsFilter(tags={"crypto_lake/trigger": "history_cli"}))
        assert len(runs) == 6
        assert materialized(instance, "trades") == {f"{day}|{s}" for s in SYMBOLS}
        assert materialized(instance, "binance_klines_1s") == {f"{day}|{s}" for s in SYMBOLS}


def test_the_history_command_refuses_days_outside_the_partitions() -> None:
    bad = subprocess.run(
        [sys.executable, "-m", "crypto_lake.cli", "history", "--start", "1999-01-01",
         "--end", "1999-01-02", "--no-progress"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and "outside the market partitions" in bad.stderr


def test_archive_fill_requests_the_import_of_recent_days_that_lost_seconds(
    lake: LakeLayout,
) -> None:
    """The sensor asks for history_import_job over closed days whose coverage lost seconds,
    once published, until their public file is imported."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from crypto_lake.defs.market.history import archive_fill
    from crypto_lake.defs.resources import LakeResource

    day, quiet = _day(-3), _day(-4)
    for d, lost in ((day, 17), (quiet, 0)):
        for symbol in SYMBOLS:
            path = partition_file(lake, "coverage", symbol, d)
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(
                pa.table({"seconds_outage": [lost, 0], "seconds_unrecorded": [0, 3 * (lost > 0)]}),
                path,
            )

    def tick():
        with (
            dg.instance_for_test() as instance,
            dg.build_sensor_context(
                instance=instance, resources={"lake": LakeResource(lake_root=str(lake.root))}
            ) as context,
        ):
            return archive_fill(context)

    result = tick()
    assert isinstance(result, dg.SensorResult), result
    (request,) = result.run_requests
    assert request.job_name == "history_import_job"
    assert request.tags == {**range_tags([day], SYMBOLS), "crypto_lake/trigger": "archive_fill"}
    for symbol in SYMBOLS:  # imported: nothing left to fill
        zipped = lake.public_file("trades", symbol, day)
        zipped.parent.mkdir(parents=True, exist_ok=True)
        zipped.write_bytes(b"")
    assert isinstance(tick(), dg.SkipReason)
