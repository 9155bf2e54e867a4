"""Green means true, per partition: a run builds and records exactly the partitions it claims,
check results belong to one partition, and a failed blocking check holds back only its own
partition's bars_1m, in that run and in any later one.

Real runs of the real job (``market_day_job`` from the Definitions) on one Dagster instance
per test, a generated lake and a loopback klines server.
"""

import http.server
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from crypto_lake.defs.market.assets import partition_file
from crypto_lake.defs.market.partitions import CONFIG, market_key, range_tags
from crypto_lake_tests.defs import rawgen
from crypto_lake_tests.defs.conftest import DAYS, SYMBOLS, Lake, make_lake

DAY = DAYS[0]
TABLES = ("trades", "quotes", "binance_klines_1m", "bars_1s", "bars_1m")
RULES = {"r1_ohlc_order", "r2_positive_prices", "r3_ask_ge_bid", "r4_no_nan_ohlc",
         "r5_continuity", "r6_spread_sane", "r7_klines_parity",
         "no_conflicting_trade_ids", "schema_contract"}  # fmt: skip


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Iterator[Lake]:
    generated = {s: rawgen.generate(s, DAYS, per_day=120) for s in SYMBOLS}
    klines = {s: rawgen.reference_klines_1m(sd) for s, sd in generated.items()}
    with rawgen.KlinesServer(klines) as server:
        lake = make_lake(tmp_path_factory.mktemp("lake"), server.url, generated)
        lake.catalog()
        yield lake


@pytest.fixture
def env(lake: Lake, monkeypatch: pytest.MonkeyPatch) -> Lake:
    monkeypatch.setenv("CRYPTO_LAKE__BINANCE__REST_BASE_URL", lake.klines_url)
    monkeypatch.setenv("LAKE_ROOT", str(lake.layout.root))
    assert CONFIG.symbols[: len(SYMBOLS)] == SYMBOLS
    return lake


def run_job(instance: dg.DagsterInstance, tags: dict[str, str], selection=None):
    from crypto_lake.definitions import defs

    job = defs().resolve_job_def("market_day_job")
    return job.execute_in_process(
        instance=instance, tags=tags, raise_on_error=False, asset_selection=selection
    )


def materializations(instance: dg.DagsterInstance, asset: str) -> dict[str, int]:
    """Partition -> number of materializations recorded for it."""
    records = instance.fetch_materializations(dg.AssetKey(asset), limit=1000).records
    out: dict[str, int] = {}
    for record in records:
        out[record.partition_key] = out.get(record.partition_key, 0) + 1
    return out


def evaluations(
    result: dg.ExecuteInProcessResult,
) -> dict[tuple[str, str], dg.AssetCheckEvaluation]:
    return {(e.check_name, e.partition): e for e in result.get_asset_check_evaluations()}


def corrupt_bars_of(monkeypatch: pytest.MonkeyPatch, symbol: str) -> None:
    """bars_1s of ``symbol`` comes out with high < low in its first traded second (what a
    bar-building bug would do): R1, a blocking rule, fails for that partition only."""
    import crypto_lake.defs.market.assets as assets_mod

    real = assets_mod.build_bars_1s

    def build(trades, quotes, sym, day, out, **kw):
        stats = real(trades, quotes, sym, day, out, **kw)
        if sym == symbol:
            con = duckdb.connect()
            con.execute(f"CREATE TABLE b AS SELECT * FROM '{out}'")
            con.execute("UPDATE b SET high = low - 1 WHERE window_start = (SELECT min("
                        "window_start) FROM b WHERE trade_count > 0)")  # fmt: skip
            tmp = out.with_name(".corrupt.tmp")
            con.execute(f"COPY (SELECT * FROM b ORDER BY window_start) TO '{tmp}' (FORMAT parquet)")
            tmp.replace(out)
        return stats

    monkeypatch.setattr(assets_mod, "build_bars_1s", build)


def test_job_page_backfill_runs_build_and_record_every_partition(env: Lake) -> None:
    """A backfill from the job page gives each run the range tags and the dimension tags of
    one partition (measured: the same ones on every run of the backfill, so possibly outside
    the run's range); Dagster's step context then reports that one partition. Every partition
    of the range must still be built and recorded once, and the tagged one, which Dagster
    records as materialized by this run, must really be built by it."""
    tagged = market_key(DAYS[1], SYMBOLS[0])
    dims = {f"dagster/partition/{d}": k for d, k in tagged.keys_by_dimension.items()}
    tags = {**range_tags([DAY], SYMBOLS), **dims}
    expected = {f"{DAY}|{s}" for s in SYMBOLS} | {str(tagged)}
    with dg.instance_for_test() as instance:
        result = run_job(instance, tags)
        assert result.success
        for table in TABLES:
            assert materializations(instance, table) == dict.fromkeys(expected, 1), table
        checks = evaluations(result)
        assert {(n, k) for n in RULES for k in expected} == set(checks)
        assert all(c.passed for c in checks.values())
    for symbol in SYMBOLS:
        trades = partition_file(env.layout, "trades", symbol, DAY)
        assert duckdb.sql(f"SELECT count(*) FROM '{trades}'").fetchall()[0][0] > 0
        assert partition_file(env.layout, "bars_1m", symbol, DAY).exists()


def test_a_failing_partition_blocks_only_its_own_bars_1m_in_any_run(
    env: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad, good = SYMBOLS
    bad_key, good_key = f"{DAYS[1]}|{bad}", f"{DAYS[1]}|{good}"
    corrupt_bars_of(monkeypatch, bad)
    for symbol in SYMBOLS:  # (another test of this module may have built them)
        partition_file(env.layout, "bars_1m", symbol, DAYS[1]).unlink(missing_ok=True)
    with dg.instance_for_test() as instance:
        result = run_job(instance, range_tags([DAYS[1]], SYMBOLS))
        # The run fails (truthfully: one partition was not built) ...
        assert not result.success
        checks = evaluations(result)
        assert not checks[("r1_ohlc_order", bad_key)].passed
        assert checks[("r1_ohlc_order", bad_key)].severity == dg.AssetCheckSeverity.ERROR
        assert checks[("r1_ohlc_order", good_key)].passed
        # ... but the other partition of the run got its bars_1m, and only it.
        assert materializations(instance, "bars_1m") == {good_key: 1}
        assert partition_file(env.layout, "bars_1m", good, DAYS[1]).exists()
        assert not partition_file(env.layout, "bars_1m", bad, DAYS[1]).exists()
        failure = result.failure_data_for_node("bars_1m").error.message
        assert bad_key in failure and "r1_ohlc_order" in failure and "materialize" in failure
        # A later, separate run of bars_1m alone (as from the UI) refuses that partition too.
        later = dg.materialize(
            [_asset("bars_1m")], partition_key=bad_key, instance=instance,
            resources={"lake": env.resource}, raise_on_error=False,
        )  # fmt: skip
        assert not later.success
        assert "r1_ohlc_order" in later.failure_data_for_node("bars_1m").error.message
        assert not partition_file(env.layout, "bars_1m", bad, DAYS[1]).exists()
        assert materializations(instance, "bars_1m") == {good_key: 1}
        # Fixed input, bars_1s and its checks again: the gate opens.
        monkeypatch.undo()
        monkeypatch.setenv("CRYPTO_LAKE__BINANCE__REST_BASE_URL", env.klines_url)
        fixed = run_job(instance, {**range_tags([DAYS[1]], [bad])})
        assert fixed.success
        assert materializations(instance, "bars_1m") == {good_key: 1, bad_key: 1}


def _asset(name: str) -> dg.AssetsDefinition:
    import crypto_lake.defs.market.assets as assets_mod

    return getattr(assets_mod, name)


class _NotFound(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_error(404, "no klines here")

    def log_message(self, *args) -> None:
        pass


def test_rules_gate_when_klines_cannot_be_fetched(
    env: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Binance REST down: the klines step fails (visibly, after its retries), R1–R6 still run
    per partition and gate bars_1m; R7 reports nothing rather than a pass. Once Binance
    answers again, the catch-up sensor fetches the klines with R7 in the same run; klines
    materialized later without R7 (from the asset page) get R7 evaluated too."""
    from crypto_lake.defs.market.followups import klines_parity_catchup

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv(
        "CRYPTO_LAKE__BINANCE__REST_BASE_URL", f"http://127.0.0.1:{server.server_port}"
    )
    keys = {f"{DAY}|{symbol}" for symbol in SYMBOLS}
    for symbol in SYMBOLS:  # complete klines (another test's) would not be fetched again
        partition_file(env.layout, "klines_1m", symbol, DAY).unlink(missing_ok=True)
    with dg.instance_for_test() as instance:
        try:
            result = run_job(instance, range_tags([DAY], SYMBOLS))
        finally:
            server.shutdown()
        assert not result.success
        assert result.failure_data_for_node("binance_klines_1m") is not None
        checks = evaluations(result)
        for symbol in SYMBOLS:
            key = f"{DAY}|{symbol}"
            for name in RULES - {"r7_klines_parity"}:
                assert checks[(name, key)].passed, (name, key)
            assert ("r7_klines_parity", key) not in checks
            assert partition_file(env.layout, "bars_1m", symbol, DAY).exists()

        # Binance is back: the sensor's first pass fetches the klines again, with R7.
        monkeypatch.setenv("CRYPTO_LAKE__BINANCE__REST_BASE_URL", env.klines_url)
        (request,), cursor = sense(klines_parity_catchup, instance, None)
        assert request.job_name == "klines_parity_job"
        caught_up = run_named_job(instance, request)
        assert caught_up.success
        r7 = {k: e for (n, k), e in evaluations(caught_up).items() if n == "r7_klines_parity"}
        assert set(r7) == keys and all(e.passed for e in r7.values())
        # A second pass finds nothing to do (R7 is current, the retry hour has not come).
        requests, cursor = sense(klines_parity_catchup, instance, cursor)
        assert not requests

        # Klines fetched alone (as from the asset page): R7 follows in a run of its own.
        alone = run_job(instance, range_tags([DAY], SYMBOLS), [dg.AssetKey("binance_klines_1m")])
        assert alone.success and not alone.get_asset_check_evaluations()
        (request,), cursor = sense(klines_parity_catchup, instance, cursor)
        assert request.job_name == "parity_job"
        parity = run_named_job(instance, request)
        assert parity.success
        assert {k for (n, k) in evaluations(parity) if n == "r7_klines_parity"} == keys
        assert not parity.get_asset_materialization_events()  # only the check ran


def sense(sensor, instance: dg.DagsterInstance, cursor: str | None, **resources):
    """One evaluation of ``sensor``: its run requests and its new cursor."""
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as ctx:
        result = sensor(ctx)
    return result.run_requests, result.cursor


def run_named_job(instance: dg.DagsterInstance, request: dg.RunRequest):
    """Execute a sensor's run request in process, as the daemon would launch it."""
    from crypto_lake.definitions import defs

    job = defs().resolve_job_def(request.job_name)
    return job.execute_in_process(instance=instance, tags=request.tags, raise_on_error=False)


def first_bar(layout, symbol: str, day: str) -> tuple:
    bars = partition_file(layout, "bars_1s", symbol, day)
    return duckdb.sql(
        f"SELECT close, trade_count FROM '{bars}' ORDER BY window_start LIMIT 1"
    ).fetchall()[0]


def test_bars_are_rebuilt_when_the_previous_day_is_built_after_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backfill's runs may build day D before day D-1: D's first seconds (before its first
    trade) had no previous close to carry, so their prices are NULL (R7 fails where Binance
    has klines for them). Once D-1's trades exist, the sensor rebuilds D's bars, checks and
    bars_1m from D-1's last price; a rebuild of D-1 that keeps its last price changes nothing."""
    from crypto_lake.defs.market.followups import bars_after_previous_day
    from crypto_lake.lib.market.bars import last_trade_price

    generated = {s: rawgen.generate(s, DAYS, per_day=60) for s in SYMBOLS}
    klines = {s: rawgen.reference_klines_1m(sd) for s, sd in generated.items()}
    d0, d1 = DAYS
    keys = {f"{d1}|{s}" for s in SYMBOLS}
    with rawgen.KlinesServer(klines) as server, dg.instance_for_test() as instance:
        lake = make_lake(tmp_path / "lake", server.url, generated)
        monkeypatch.setenv("CRYPTO_LAKE__BINANCE__REST_BASE_URL", server.url)
        monkeypatch.setenv("LAKE_ROOT", str(lake.layout.root))
        later_day_first = run_job(instance, range_tags([d1], SYMBOLS))
        assert later_day_first.success
        for symbol in SYMBOLS:
            assert first_bar(lake.layout, symbol, d1) == (None, 0)  # nothing to carry yet
        requests, cursor = sense(bars_after_previous_day, instance, None, lake=lake.resource)
        assert not requests  # D-1 not built yet

        assert run_job(instance, range_tags([d0], SYMBOLS)).success
        (request,), cursor = sense(bars_after_previous_day, instance, cursor, lake=lake.resource)
        rebuilt = run_named_job(instance, request)
        assert rebuilt.success
        for symbol in SYMBOLS:
            previous = last_trade_price(partition_file(lake.layout, "trades", symbol, d0))
            assert first_bar(lake.layout, symbol, d1) == (previous, 0)
        r7 = {k: e for (n, k), e in evaluations(rebuilt).items() if n == "r7_klines_parity"}
        assert set(r7) == keys and all(e.passed for e in r7.values())
        earlier = {f"{d0}|{s}" for s in SYMBOLS}
        assert materializations(instance, "bars_1m") == {**dict.fromkeys(earlier, 1),
                                                         **dict.fromkeys(keys, 2)}  # fmt: skip
        # D-1 rebuilt with the same trades: D's bars already carry its last price.
        assert run_job(instance, range_tags([d0], SYMBOLS)).success
        requests, cursor = sense(bars_after_previous_day, instance, cursor, lake=lake.resource)
        assert not requests


def test_r7_without_comparable_minutes_is_skipped_not_passed(tmp_path: Path) -> None:
    from crypto_lake.defs.market.checks import evaluation
    from crypto_lake.defs.market.quality import PARITY_RULE
    from crypto_lake.lib.qa.rules import evaluate_r7

    sd = rawgen.generate(SYMBOLS[0], [DAY], per_day=20)
    lake = make_lake(tmp_path / "lake", "http://127.0.0.1:9", {SYMBOLS[0]: sd})
    from crypto_lake.lib.market.bars import build_bars_1s
    from crypto_lake.lib.market.ticks import build_ticks
    from crypto_lake.lib.raw.catalog import RawCatalog

    files = RawCatalog(lake.layout).files_for(SYMBOLS[0], DAY)
    trades, quotes, bars = (partition_file(lake.layout, t, SYMBOLS[0], DAY)
                            for t in ("trades", "quotes", "bars_1s"))  # fmt: skip
    build_ticks(files, SYMBOLS[0], DAY, trades, quotes, tmp_path / "q")
    build_bars_1s(trades, quotes, SYMBOLS[0], DAY, bars)
    klines = partition_file(lake.layout, "klines_1m", SYMBOLS[0], DAY)
    klines.parent.mkdir(parents=True)
    duckdb.sql(  # a kline of another day only: no minute to compare
        "COPY (SELECT TIMESTAMPTZ '2024-02-29 23:59:00+00' AS open_time, 1.0 AS open, "
        "1.0 AS high, 1.0 AS low, 1.0 AS close, 0.0 AS volume, 0 AS trade_count, "
        f"0.0 AS quote_volume, 0.0 AS taker_buy_base) TO '{klines}'"
    )
    res = evaluate_r7(bars, klines)
    assert res.skipped and res.checked == 0 and "no complete recorded minute" in res.reason
    event = evaluation(PARITY_RULE, f"{DAY}|{SYMBOLS[0]}", res, None)
    assert not event.passed and event.severity == dg.AssetCheckSeverity.WARN
    assert event.description.startswith("Skipped:")
    assert evaluate_r7(bars, None).skipped


def test_conflicting_trade_copies_fail_a_blocking_check_of_their_partition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A trade id received twice with different prices: both copies quarantined, the
    partition's blocking check fails and its bars_1m is held back; the other symbol's not."""
    import dataclasses

    generated = {s: rawgen.generate(s, [DAY], per_day=60) for s in SYMBOLS}
    klines = {s: rawgen.reference_klines_1m(sd) for s, sd in generated.items()}
    with rawgen.KlinesServer(klines) as server:
        lake = make_lake(tmp_path / "lake", server.url, generated)
        bad = generated[SYMBOLS[0]]
        t = bad.trades[5]
        other = dataclasses.replace(t, price=t.price + Decimal("0.01"))
        recv_ns = (t.ts_us + 50_000) * 1000
        line = rawgen.ws_line(recv_ns, "ws-2", "us", rawgen.trade_message(bad.symbol, other))
        rawgen.append_part(lake.layout, bad.symbol, DAY, [line])
        monkeypatch.setenv("CRYPTO_LAKE__BINANCE__REST_BASE_URL", server.url)
        monkeypatch.setenv("LAKE_ROOT", str(lake.layout.root))
        with dg.instance_for_test() as instance:
            result = run_job(instance, range_tags([DAY], SYMBOLS))
            checks = evaluations(result)
            bad_key, good_key = f"{DAY}|{SYMBOLS[0]}", f"{DAY}|{SYMBOLS[1]}"
            conflict = checks[("no_conflicting_trade_ids", bad_key)]
            assert not conflict.passed and conflict.severity == dg.AssetCheckSeverity.ERROR
            assert conflict.asset_key == dg.AssetKey("trades")
            assert str(t.trade_id) in conflict.metadata["worst_rows"].value
            assert checks[("no_conflicting_trade_ids", good_key)].passed
            assert not result.success
            assert materializations(instance, "bars_1m") == {good_key: 1}
    quarantined = b"".join(p.read_bytes() for p in lake.layout.quarantine_root.rglob("*.*"))
    assert quarantined.count(b"trade id conflict") >= 2
