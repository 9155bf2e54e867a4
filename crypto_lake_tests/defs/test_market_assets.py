"""The market chain materialized for real: temp lake, real DuckDB, real Parquet, loopback REST.

One module-scoped lake is built once and shared (runs are the slow part); each test uses its
own (day, symbol) partition when it changes files.
"""

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from crypto_lake.defs.market.assets import (
    bars_1m,
    bars_1s,
    binance_klines_1m,
    partition_file,
    ticks,
)
from crypto_lake.defs.market.checks import (
    SCHEMA_CONTRACT,
    bars_1m_schema_contract,
    bars_1s_klines_parity,
    bars_1s_rules,
    bars_1s_schema_contract,
    trades_conflicts,
)
from crypto_lake.defs.market.partitions import market_key, range_tags
from crypto_lake.defs.market.quality import BAR_RULES, CONFLICT_RULE, PARITY_RULE
from crypto_lake_tests.defs import rawgen
from crypto_lake_tests.defs.conftest import DAYS, SYMBOLS, Lake, make_lake

CHAIN = [
    ticks,
    binance_klines_1m,
    bars_1s,
    bars_1m,
    bars_1s_rules,
    bars_1s_klines_parity,
    trades_conflicts,
    bars_1s_schema_contract,
    bars_1m_schema_contract,
]
RULE_NAMES = {r.rule: r.name for r in [*BAR_RULES, PARITY_RULE, CONFLICT_RULE]}
DATASETS = ("trades", "quotes", "bars_1s", "bars_1m", "klines_1m")


def run_chain(lake: Lake, day: str, symbol: str) -> dg.ExecuteInProcessResult:
    with dg.instance_for_test() as instance:
        return dg.materialize(
            CHAIN, partition_key=str(market_key(day, symbol)), resources={"lake": lake.resource},
            instance=instance, raise_on_error=False,
        )  # fmt: skip


def run_market_day_job(day: str) -> dg.ExecuteInProcessResult:
    """The job the refresh sensor and the finalize schedule launch, with their range tags
    (here over the test symbols, which lead the configured list), from the real Definitions."""
    from crypto_lake.definitions import defs
    from crypto_lake.defs.market.partitions import CONFIG

    assert CONFIG.symbols[: len(SYMBOLS)] == SYMBOLS  # a contiguous range of the partitions
    job = defs().resolve_job_def("market_day_job")
    with dg.instance_for_test() as instance:
        return job.execute_in_process(
            instance=instance, tags=range_tags([day], SYMBOLS), raise_on_error=False
        )


def digests(lake: Lake, day: str, symbol: str) -> dict[str, str]:
    return {
        ds: hashlib.sha256(partition_file(lake.layout, ds, symbol, day).read_bytes()).hexdigest()
        for ds in DATASETS
    }


def checks_of(
    result: dg.ExecuteInProcessResult, partition: str | None = None
) -> dict[str, dg.AssetCheckEvaluation]:
    """The run's check results for one partition (each result belongs to one partition)."""
    evaluations = result.get_asset_check_evaluations()
    assert all(e.partition is not None for e in evaluations)
    return {e.check_name: e for e in evaluations if partition is None or e.partition == partition}


def materialized(result: dg.ExecuteInProcessResult) -> dict[tuple[str, str | None], dict]:
    out = {}
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        out[(mat.asset_key.to_user_string(), mat.partition)] = mat.metadata
    return out


@dataclass
class Built:
    lake: Lake
    generated: dict[str, rawgen.SymbolDay]
    klines_url: str
    ranged: dg.ExecuteInProcessResult
    digests: dict[str, str]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Iterator[Built]:
    generated = {s: rawgen.generate(s, DAYS) for s in SYMBOLS}
    klines = {s: rawgen.reference_klines_1m(sd) for s, sd in generated.items()}
    with rawgen.KlinesServer(klines) as server, pytest.MonkeyPatch.context() as mp:
        mp.setenv("CRYPTO_LAKE__BINANCE__REST_BASE_URL", server.url)
        lake = make_lake(tmp_path_factory.mktemp("lake"), server.url, generated)
        lake.catalog()
        mp.setenv("LAKE_ROOT", str(lake.layout.root))
        ranged = run_market_day_job(DAYS[0])
        yield Built(lake, generated, server.url, ranged, digests(lake, DAYS[0], SYMBOLS[0]))


def test_ranged_run_builds_every_partition_and_all_checks_pass(built: Built) -> None:
    result, lake, day = built.ranged, built.lake, DAYS[0]
    assert result.success
    # R1-R7, the conflict check, and the schema contracts of bars_1s and bars_1m
    assert len(result.get_asset_check_evaluations()) == (len(RULE_NAMES) + 2) * len(SYMBOLS)
    mats = materialized(result)
    for symbol in SYMBOLS:
        key = f"{day}|{symbol}"
        checks = checks_of(result, key)  # one result per rule and partition
        assert set(checks) == {*RULE_NAMES.values(), SCHEMA_CONTRACT}
        failed = {n: c.metadata for n, c in checks.items() if not c.passed}
        assert not failed, failed
        assert checks["r7_klines_parity"].metadata["rows_checked"].value > 0  # R7 compared
        assert checks["r1_ohlc_order"].metadata["rows_checked"].value == 86_400
        assets_built = {a for a, p in mats if p == key}
        assert assets_built == {*DATASETS[:4], "binance_klines_1m", "coverage"} - {"klines_1m"}
        # Trades: the generated ones of that UTC day, exactly once each, in id order.
        start = rawgen.day_start_us(day)
        expected = [t.trade_id for t in built.generated[symbol].trades
                    if start <= t.ts_us < start + 86_400 * rawgen.US]  # fmt: skip
        trades = partition_file(lake.layout, "trades", symbol, day)
        ids = duckdb.sql(f"SELECT trade_id FROM '{trades}' ORDER BY trade_id").fetchall()
        assert [r[0] for r in ids] == expected
        bars = partition_file(lake.layout, "bars_1s", symbol, day)
        assert duckdb.sql(f"SELECT count(*) FROM '{bars}'").fetchall()[0][0] == 86_400
    # A ranged run records run totals plus one exact observation per partition.
    trades_meta = mats[("trades", f"{day}|{SYMBOLS[0]}")]
    assert trades_meta["run_partitions"].value == len(SYMBOLS)
    assert trades_meta["run_row_count"].value == sum(
        1 for s in SYMBOLS for t in built.generated[s].trades
        if rawgen.day_start_us(day) <= t.ts_us < rawgen.day_start_us(day) + 86_400 * rawgen.US
    )  # fmt: skip
    observed = {
        (e.asset_key.to_user_string(), e.partition): e.metadata
        for e in (
            ev.event_specific_data.asset_observation
            for ev in result.all_events
            if ev.event_type_value == "ASSET_OBSERVATION"
        )
    }
    assert observed[("bars_1s", f"{day}|{SYMBOLS[1]}")]["dagster/row_count"].value == 86_400


def test_materializing_twice_is_byte_identical(built: Built) -> None:
    lake, day, symbol = built.lake, DAYS[0], SYMBOLS[0]
    result = run_chain(lake, day, symbol)  # same partition again, now as a single-key run
    assert result.success
    assert digests(lake, day, symbol) == built.digests
    meta = materialized(result)[("trades", f"{day}|{symbol}")]
    assert meta["dagster/row_count"].value > 0
    assert "dagster/column_schema" in meta and "preview" in meta
    assert meta["trade_id_gaps_open"].value == 0
    trades = partition_file(lake.layout, "trades", symbol, day)
    dup = duckdb.sql(f"SELECT count(*) - count(DISTINCT trade_id) FROM '{trades}'").fetchall()
    assert dup[0][0] == 0
    for ds in DATASETS:  # one Parquet file per partition, no temp leftovers
        folder = partition_file(lake.layout, ds, symbol, day).parent
        assert sorted(p.name for p in folder.iterdir()) == ["part-0.parquet"]


def test_duplicates_and_repaired_gap_give_the_clean_result(built: Built, tmp_path: Path) -> None:
    day, symbol = DAYS[0], SYMBOLS[0]
    sd = built.generated[symbol]
    # Same market, recorded with duplicates (overlapping connections) and a gap that the
    # collector repaired from REST later (filed under the next day, as a late delivery).
    gap = {t.trade_id for t in sd.trades[10:15]}
    messy = make_lake(tmp_path / "messy", built.klines_url, {})
    rawgen.write_raw(messy.layout, symbol, rawgen.raw_lines(sd, skip_ids=gap, duplicate_every=3))
    late_ns = (rawgen.day_start_us(rawgen.next_day(day)) + 5 * rawgen.US) * 1000
    rawgen.append_part(messy.layout, symbol, rawgen.next_day(day),
                       rawgen.repair_lines(sd, gap, late_ns))  # fmt: skip
    messy.catalog()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CRYPTO_LAKE__BINANCE__REST_BASE_URL", built.klines_url)
        result = run_chain(messy, day, symbol)
    assert result.success
    assert all(c.passed for c in checks_of(result).values())
    meta = materialized(result)[("trades", f"{day}|{symbol}")]
    assert meta["duplicates_dropped"].value > 0
    assert meta["repaired_trades"].value == len(gap)
    assert meta["trade_id_gaps_open"].value == 0
    query = "SELECT * EXCLUDE (is_live, is_repaired) FROM '{}' ORDER BY window_start"
    got = duckdb.sql(query.format(partition_file(messy.layout, "bars_1s", symbol, day)))
    want = duckdb.sql(query.format(partition_file(built.lake.layout, "bars_1s", symbol, day)))
    assert got.fetchall() == want.fetchall()
    clean_1m = partition_file(built.lake.layout, "bars_1m", symbol, day).read_bytes()
    messy_1m = duckdb.sql(
        f"SELECT sum(trade_count) FROM '{partition_file(messy.layout, 'bars_1m', symbol, day)}'"
    ).fetchall()[0][0]
    assert messy_1m == len([t for t in sd.trades if t.ts_us < rawgen.day_start_us(DAYS[1])])
    assert clean_1m


def test_malformed_lines_are_quarantined_not_fatal(built: Built) -> None:
    lake, day, symbol = built.lake, DAYS[1], SYMBOLS[1]
    rawgen.append_part(lake.layout, symbol, day, [b'{"recv_ns": 1, "stream": \n', b"garbage\n"])
    lake.catalog()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CRYPTO_LAKE__BINANCE__REST_BASE_URL", built.klines_url)
        result = run_chain(lake, day, symbol)
    assert result.success
    meta = materialized(result)[("trades", f"{day}|{symbol}")]
    assert meta["bad_lines"].value == 2
    assert any(p.is_file() for p in lake.layout.quarantine_root.rglob("*"))


def test_blocking_checks_stop_bars_1m(built: Built, monkeypatch) -> None:
    """R1, R2 and R4 violations fail their blocking checks; bars_1m is not built in that run."""
    import crypto_lake.defs.market.assets as assets_mod

    real = assets_mod.build_bars_1s
    bad = {"R1": ("high", "low - 1", 0), "R2": ("open", "-1", 1), "R4": ("close", "NULL", 2)}

    def corrupted(trades, quotes, symbol, day, out, **kw):
        stats = real(trades, quotes, symbol, day, out, **kw)
        _corrupt(out, bad)
        return stats

    monkeypatch.setattr(assets_mod, "build_bars_1s", corrupted)
    monkeypatch.setenv("CRYPTO_LAKE__BINANCE__REST_BASE_URL", built.klines_url)
    lake, day, symbol = built.lake, DAYS[1], SYMBOLS[0]
    result = run_chain(lake, day, symbol)
    assert not result.success  # a failed blocking check fails the run
    checks = checks_of(result)
    for rule in bad:
        check = checks[RULE_NAMES[rule]]
        assert not check.passed, rule
        assert check.severity == dg.AssetCheckSeverity.ERROR
        assert check.metadata["violations"].value >= 1
        worst = check.metadata["worst_rows"].value
        assert "window_start" in worst  # names the bad seconds
        assert check.partition == f"{day}|{symbol}"
    assert checks["r3_ask_ge_bid"].passed
    contract = checks[SCHEMA_CONTRACT]  # bars_1s's (bars_1m was not built): a warning
    assert contract.asset_key == dg.AssetKey("bars_1s") and not contract.passed
    assert contract.severity == dg.AssetCheckSeverity.WARN
    assert contract.metadata["failures"].value >= 1
    assert ("bars_1s", f"{day}|{symbol}") in materialized(result)
    assert ("bars_1m", f"{day}|{symbol}") not in materialized(result)
    assert not partition_file(lake.layout, "bars_1m", symbol, day).exists()


def _corrupt(out: Path, bad: dict[str, tuple[str, str, int]]) -> None:
    """Corrupt the n-th traded second of a bars_1s file (what a bar-building bug would do)."""
    con = duckdb.connect()
    con.execute(f"CREATE TABLE b AS SELECT * FROM '{out}'")
    for column, value, nth in bad.values():
        second = (
            "(SELECT window_start FROM b WHERE trade_count > 0 ORDER BY window_start "
            f"LIMIT 1 OFFSET {nth})"
        )
        con.execute(f"UPDATE b SET {column} = {value} WHERE window_start = {second}")
    tmp = out.with_name(".corrupt.tmp")
    con.execute(f"COPY (SELECT * FROM b ORDER BY window_start) TO '{tmp}' (FORMAT parquet)")
    tmp.replace(out)


def test_lake_views_query_the_built_partitions(built: Built) -> None:
    from crypto_lake.defs.ops.assets import lake_views
    from crypto_lake.defs.resources import lake_database

    resources = {"lake": built.lake.resource, "lake_db": lake_database(built.lake.layout)}
    with dg.instance_for_test() as instance:
        result = dg.materialize([lake_views], resources=resources, instance=instance)
    assert result.success
    meta = result.asset_materializations_for_node("lake_views")[0].metadata
    assert {"bars_1s", "bars_1m", "trades", "quotes", "klines_1m",
            "compare_bars_vs_klines_1m"} <= set(meta["views"].value.split(", "))  # fmt: skip
    db = built.lake.layout.duckdb_path
    with duckdb.connect(str(db), read_only=True) as con:
        n = con.execute(
            "SELECT count(*) FROM bars_1s WHERE symbol = ? AND date = ?", [SYMBOLS[0], DAYS[0]]
        ).fetchall()[0][0]
        assert n == 86_400
        minutes = con.execute("SELECT count(*) FROM compare_bars_vs_klines_1m").fetchall()[0][0]
        assert minutes > 0
    assert not [p for p in db.parent.iterdir() if p.name.endswith(".tmp")]


def test_bars_1s_equal_an_independent_reference(built: Built) -> None:
    """Every traded second: O/H/L/C, volumes, count, VWAP and the last quote, from the
    generated trades and quotes in plain Python (no DuckDB, no lib code)."""
    day, symbol = DAYS[0], SYMBOLS[1]
    sd = built.generated[symbol]
    start = rawgen.day_start_us(day)
    ref: dict[int, list[rawgen.Trade]] = {}
    for t in sd.trades:
        if start <= t.ts_us < start + 86_400 * rawgen.US:
            ref.setdefault(t.ts_us // rawgen.US, []).append(t)
    bars = partition_file(built.lake.layout, "bars_1s", symbol, day)
    rows = duckdb.sql(
        "SELECT epoch(window_start)::BIGINT, open, high, low, close, volume_base, volume_quote, "
        f"trade_count, vwap, bid, ask FROM '{bars}' WHERE trade_count > 0 ORDER BY 1"
    ).fetchall()
    assert [r[0] for r in rows] == sorted(ref)
    for sec, o, h, lo, c, vol, qvol, n, vwap, bid, ask in rows:
        ts = sorted(ref[sec], key=lambda t: t.trade_id)
        want_q = sum(t.price * t.qty for t in ts)
        assert (o, h, lo, c) == (ts[0].price, max(t.price for t in ts),
                                 min(t.price for t in ts), ts[-1].price)  # fmt: skip
        assert (vol, qvol, n) == (sum(t.qty for t in ts), want_q, len(ts))
        assert vwap == pytest.approx(float(want_q / sum(t.qty for t in ts)), rel=1e-12)
        end_us = (sec + 1) * rawgen.US
        last_quote = max((q for q in sd.quotes if q[0] < end_us), key=lambda q: q[1])
        assert (bid, ask) == (last_quote[2], last_quote[4])
