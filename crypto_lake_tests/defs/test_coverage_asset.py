"""The coverage asset materialized for real after ticks and bars: raw files with a recorder
outage whose trades were repaired from REST, a ranged run, its metadata and the DuckDB views;
and an outage filled from Binance's public daily file instead, as the UI reports it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import dagster as dg
import duckdb
import pytest

from crypto_lake.defs.market.assets import bars_1s, partition_file, ticks
from crypto_lake.defs.market.coverage import coverage
from crypto_lake.defs.market.partitions import market_key, range_tags
from crypto_lake.lib.market.views import build_lake_views
from crypto_lake.lib.raw.lines import session_line
from crypto_lake_tests.defs import rawgen
from crypto_lake_tests.defs.conftest import DAYS, SYMBOLS, Lake, make_lake

US = rawgen.US
DAY = DAYS[0]
DOWN, UP = 180, 270  # BTCUSDT's connection is down over [00:03:00, 00:04:30) of DAY
ASSETS = [ticks, bars_1s, coverage]


@dataclass
class Built:
    lake: Lake
    ranged: dg.ExecuteInProcessResult
    repaired_seconds: set[int]  # seconds since midnight with repaired BTCUSDT trades


def outage_events(
    sd: rawgen.SymbolDay, repair: bool = True
) -> tuple[list[tuple[int, bytes]], set[int]]:
    """BTCUSDT recorded with a disconnect over [DOWN, UP): nothing received meanwhile, and the
    missed trades repaired from REST right after the reconnect (if ``repair``)."""
    start = rawgen.day_start_us(DAY)
    lo, hi = start + DOWN * US, start + UP * US
    missed = [t for t in sd.trades if lo <= t.ts_us < hi]
    assert missed, "the generated day has trades in the outage window"
    heard = replace(sd, quotes=[q for q in sd.quotes if not lo <= q[0] < hi])
    events = list(rawgen.raw_lines(heard, skip_ids={t.trade_id for t in missed}))
    events += [(lo * 1000, session_line(lo * 1000, "ws-1", "disconnect", reason="test")),
               (hi * 1000, session_line(hi * 1000, "ws-1", "connect"))]  # fmt: skip
    repair_ns = (hi + 5 * US) * 1000
    events += [(repair_ns, line) for line in
               rawgen.repair_lines(sd, {t.trade_id for t in missed}, repair_ns)
               if repair]  # fmt: skip
    events.sort(key=lambda e: e[0])
    return events, {(t.ts_us - start) // US for t in missed}


def observations(result: dg.ExecuteInProcessResult) -> dict[str, dict]:
    return {
        e.event_specific_data.asset_observation.partition: (
            e.event_specific_data.asset_observation.metadata
        )
        for e in result.all_events
        if e.event_type_value == "ASSET_OBSERVATION"
        and e.event_specific_data.asset_observation.asset_key.to_user_string() == "coverage"
    }


def coverage_materialization(result: dg.ExecuteInProcessResult, key: str) -> dict:
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        if mat.asset_key.to_user_string() == "coverage" and mat.partition == key:
            return mat.metadata
    raise AssertionError(f"no coverage materialization for {key}")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Iterator[Built]:
    generated = {s: rawgen.generate(s, DAYS) for s in SYMBOLS}
    lake = make_lake(tmp_path_factory.mktemp("lake"), "", {SYMBOLS[1]: generated[SYMBOLS[1]]})
    events, repaired = outage_events(generated[SYMBOLS[0]])
    rawgen.write_raw(lake.layout, SYMBOLS[0], iter(events))
    lake.catalog()
    with dg.instance_for_test() as instance:
        ranged = dg.materialize(ASSETS, resources={"lake": lake.resource}, instance=instance,
                                tags=range_tags([DAY], SYMBOLS))  # fmt: skip
    yield Built(lake, ranged, repaired)


def test_ranged_run_records_each_partitions_coverage(built: Built) -> None:
    assert built.ranged.success
    seen = observations(built.ranged)
    assert set(seen) == {f"{DAY}|{s}" for s in SYMBOLS}
    btc = {k: getattr(v, "value", v) for k, v in seen[f"{DAY}|{SYMBOLS[0]}"].items()}
    n_repaired = len(built.repaired_seconds)
    assert (btc["seconds_repaired"], btc["seconds_outage"]) == (n_repaired, 90 - n_repaired)
    assert btc["dagster/row_count"] == 1440 and btc["seconds_pending"] == 0
    assert btc["seconds_live"] + btc["seconds_unrecorded"] == 86_400 - 90
    assert btc["pct_outage"] == round(100 * (90 - n_repaired) / 86_400, 3)
    assert btc["pct_repaired"] == round(100 * n_repaired / 86_400, 3)
    assert btc["pct_live"] == round(100 * btc["seconds_live"] / 86_400, 3)
    assert btc["complete"] is False and btc["lost_stretches"] == 1
    assert "data:image/png;base64," in btc["summary"] and "00:03 | 00:05" in btc["summary"]
    eth = {k: getattr(v, "value", v) for k, v in seen[f"{DAY}|{SYMBOLS[1]}"].items()}
    assert eth["seconds_outage"] == eth["seconds_repaired"] == 0
    assert eth["pct_live"] + eth["pct_unrecorded"] == 100.0
    run = coverage_materialization(built.ranged, f"{DAY}|{SYMBOLS[1]}")
    assert run["run_partitions"].value == 2
    assert run["run_seconds_repaired"].value == n_repaired
    assert run["run_row_count"].value == 2 * 1440


def test_minutes_in_the_lake_match_the_outage(built: Built) -> None:
    path = partition_file(built.lake.layout, "coverage", SYMBOLS[0], DAY)
    rows = duckdb.sql(
        f"SELECT minute, seconds_repaired, seconds_outage FROM '{path}' "
        "WHERE seconds_repaired + seconds_outage > 0 ORDER BY minute"
    ).fetchall()
    # Minute 3 entirely and the first half of minute 4 were down.
    assert [(r[0].hour, r[0].minute) for r in rows] == [(0, 3), (0, 4)]
    assert [r[1] + r[2] for r in rows] == [60, 30]
    per_minute = {m: sum(1 for s in built.repaired_seconds if s // 60 == m) for m in (3, 4)}
    assert [r[1] for r in rows] == [per_minute[3], per_minute[4]]


def test_views_answer_the_day_across_symbols(built: Built) -> None:
    db = build_lake_views(built.lake.layout, extra_statements=[])
    con = duckdb.connect(str(db), read_only=True)
    daily = con.execute(
        "SELECT symbol, minutes, seconds_outage, seconds_repaired, pct_live, complete "
        "FROM coverage_daily WHERE date = ? ORDER BY symbol",
        [DAY],
    ).fetchall()
    seen = observations(built.ranged)
    want = [
        (s, 1440, seen[f"{DAY}|{s}"]["seconds_outage"].value,
         seen[f"{DAY}|{s}"]["seconds_repaired"].value, seen[f"{DAY}|{s}"]["pct_live"].value,
         seen[f"{DAY}|{s}"]["complete"].value)
        for s in sorted(SYMBOLS)
    ]  # fmt: skip
    assert daily == want
    assert con.execute("SELECT count(*), count(DISTINCT symbol) FROM coverage").fetchall() == [
        (2 * 1440, 2)
    ]


def test_single_partition_run_gives_its_own_metadata(built: Built) -> None:
    key = f"{DAY}|{SYMBOLS[0]}"
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [coverage],
            resources={"lake": built.lake.resource},
            instance=instance,
            partition_key=str(market_key(DAY, SYMBOLS[0])),
        )
    assert result.success
    meta = coverage_materialization(result, key)
    first = observations(built.ranged)[key]
    for name in ("pct_live", "pct_outage", "pct_minutes_with_quotes", "seconds_repaired"):
        assert meta[name].value == first[name].value
    assert meta["dagster/row_count"].value == 1440 and "dagster/column_schema" in meta


def test_job_page_backfill_run_records_every_partition_built(built: Built) -> None:
    """A backfill launched from a job page tags its run with the range *and* the first
    partition's dimensions; Dagster then records only that partition, so coverage records the
    others itself, each with its own numbers."""
    tags = {**range_tags([DAY], SYMBOLS), "dagster/partition/date": DAY,
            "dagster/partition/symbol": SYMBOLS[0]}  # fmt: skip
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [coverage], resources={"lake": built.lake.resource}, instance=instance, tags=tags
        )
    assert result.success
    first = observations(built.ranged)
    for symbol in SYMBOLS:
        key = f"{DAY}|{symbol}"
        meta = coverage_materialization(result, key)
        assert meta["pct_live"].value == first[key]["pct_live"].value
        assert meta["seconds_outage"].value == first[key]["seconds_outage"].value


def test_an_outage_filled_from_the_public_file_is_reported_as_archive(tmp_path) -> None:
    """The ticks step given the day's public trades file (as the ticks asset passes it when a
    verified file exists); bars_1s and coverage then say how much of the partition came from
    it, and the trades metadata how many trades."""
    from crypto_lake.defs.market.stats import save_outages, tick_stats_metadata
    from crypto_lake.lib.market.dedup import trade_conflicts_path
    from crypto_lake.lib.market.ticks import build_ticks
    from crypto_lake.lib.raw.catalog import RawCatalog
    from crypto_lake_tests.lib.rawgen import archive_table

    symbol = SYMBOLS[0]
    sd = rawgen.generate(symbol, DAYS)
    lake = make_lake(tmp_path, "", {})
    events, filled = outage_events(sd, repair=False)
    rawgen.write_raw(lake.layout, symbol, iter(events))
    lake.catalog()
    layout, start = lake.layout, rawgen.day_start_us(DAY)
    day = [t for t in sd.trades if start <= t.ts_us < start + 86_400 * US]
    public = archive_table([(t.trade_id, t.ts_us, t.price, t.qty, t.buyer_maker) for t in day])
    stats = build_ticks(RawCatalog(layout).files_for(symbol, DAY), symbol, DAY,
                        partition_file(layout, "trades", symbol, DAY),
                        partition_file(layout, "quotes", symbol, DAY),
                        layout.quarantine_root / symbol / DAY,
                        seconds_out=layout.tick_seconds_path(symbol, DAY),
                        conflicts_out=trade_conflicts_path(layout, symbol, DAY),
                        archive=public)  # fmt: skip
    save_outages(layout, symbol, DAY, stats)
    trades_meta, _ = tick_stats_metadata(stats)
    missed = sum(1 for t in sd.trades if start + DOWN * US <= t.ts_us < start + UP * US)
    assert (trades_meta["archive_trades"], trades_meta["missing_trade_ids"]) == (missed, 0)
    assert trades_meta["archive_file_trades"] == public.num_rows
    with dg.instance_for_test() as instance:
        result = dg.materialize([bars_1s, coverage], resources={"lake": lake.resource},
                                instance=instance,
                                partition_key=str(market_key(DAY, symbol)))  # fmt: skip
    assert result.success
    mats = {e.event_specific_data.materialization.asset_key.to_user_string():
            e.event_specific_data.materialization.metadata
            for e in result.get_asset_materialization_events()}  # fmt: skip
    assert mats["bars_1s"]["archive_rows"].value == len(filled)
    assert mats["bars_1s"]["outage_rows"].value == 90  # the recorder was down all the same
    cov = mats["coverage"]
    # the file filled the day: the outage's quiet seconds are known empty, archive as well
    assert cov["seconds_archive"].value == 90 > len(filled)
    assert cov["seconds_outage"].value == 0
    assert cov["seconds_repaired"].value == 0
    assert cov["pct_archive"].value == round(100 * 90 / 86_400, 3)
    assert "| archive | " in cov["summary"].value
