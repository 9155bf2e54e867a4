"""Trades from Binance's public daily files ("archive" trades) complete the recorded trades:
every trade id the raw files lack is filled in, flagged ``source = archive`` in trades,
``is_archive`` in bars_1s and bars_1m and ``seconds_archive`` in coverage; a live copy wins
over a REST repair, which wins over the archive, and an archive copy that disagrees with the
recorded one is a trade id conflict."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crypto_lake.lib.core.contracts import validate_file
from crypto_lake.lib.core.duck import connect
from crypto_lake.lib.core.paths import LakeLayout
from crypto_lake.lib.market.archive_trades import ArchiveKindMismatch
from crypto_lake.lib.market.bars import build_bars_1m, build_bars_1s
from crypto_lake.lib.market.coverage import build_coverage
from crypto_lake.lib.market.dedup import load_trade_conflicts, trade_conflicts_path
from crypto_lake.lib.market.ticks import TickStats, build_ticks
from crypto_lake.lib.raw.catalog import RawCatalog, day_bounds_us
from crypto_lake.lib.raw.lines import session_line, ws_line
from crypto_lake_tests.lib import rawgen

DAY, SYMBOL = rawgen.DAY, "BTCUSDT"
START_US, END_US = day_bounds_us(DAY)
US = 1_000_000
TRADES = rawgen.make_trades(3000)
DAY_TRADES = [t for t in TRADES if rawgen.DAY_START_MS <= t.t_ms < rawgen.DAY_END_MS]
QUOTES = rawgen.make_quotes(2000)
# The recorder's connection is down from a trade in the middle of a burst (other trades of
# that second were received live) for a few hundred trades.
DOWN_MS, UP_MS = DAY_TRADES[1000].t_ms, DAY_TRADES[1300].t_ms + 1
MISSED = {t.id for t in TRADES if DOWN_MS <= t.t_ms + 5 < UP_MS}  # received 5 ms later
# values that do not depend on how a trade was received
TRADE_VALUES = ["trade_id", "ts_event", "price", "qty", "quote_qty", "is_buyer_maker",
                "first_trade_id", "last_trade_id", "trade_count"]  # fmt: skip
BAR_VALUES = ["window_start", "open", "high", "low", "close", "volume_base", "volume_quote",
              "trade_count", "vwap", "taker_buy_base", "first_trade_id", "last_trade_id",
              "is_empty"]  # fmt: skip


@dataclass
class Built:
    stats: TickStats
    trades: Path
    quotes: Path
    summary: Path
    bars: Path
    bars_1m: Path
    coverage: Path
    layout: LakeLayout

    def table(self, name: str) -> pa.Table:
        return pq.read_table(getattr(self, name))


def build(root: Path, lines: list[tuple[int, bytes]], archive: pa.Table | None = None) -> Built:
    """Raw lines (+ a public file) -> trades, quotes, bars_1s, bars_1m, coverage of DAY."""
    layout = LakeLayout(root)
    files: list[Path] = []
    if lines:
        rawgen.write_raw(layout, lines)
        catalog = RawCatalog(layout)
        catalog.refresh()
        files = catalog.files_for(SYMBOL, DAY)
    out = root / "out"
    con = connect(threads=2)
    t, q, s = out / "t.parquet", out / "q.parquet", out / "s.parquet"
    stats = build_ticks(files, SYMBOL, DAY, t, q, root / "quarantine", con=con, seconds_out=s,
                        conflicts_out=trade_conflicts_path(layout, SYMBOL, DAY),
                        archive=archive)  # fmt: skip
    build_bars_1s(t, q, SYMBOL, DAY, out / "b.parquet", stats.outages, con=con, seconds=s)
    build_bars_1m(out / "b.parquet", out / "m.parquet", con=con)
    intervals = [(a, b, k) for (a, b), k in zip(stats.outages, stats.outage_kinds, strict=True)]
    build_coverage(out / "b.parquet", q, SYMBOL, DAY, out / "c.parquet", intervals,
                   now_us=END_US, con=con)  # fmt: skip
    return Built(stats, t, q, s, out / "b.parquet", out / "m.parquet", out / "c.parquet",
                 layout)  # fmt: skip


def live_lines(trades=TRADES, skip: set[int] = frozenset()) -> list[tuple[int, bytes]]:
    """Each trade received 5 ms after it happened (but ``skip``), and the quotes."""
    lines = [(t.t_ms + 5, rawgen.trade_line(t, t.t_ms + 5)) for t in trades if t.id not in skip]
    return lines + [(q.recv_ms, rawgen.quote_line(q)) for q in QUOTES]


def outage_lines() -> list[tuple[int, bytes]]:
    """The day recorded with the connection down over [DOWN_MS, UP_MS): no trade or quote
    received meanwhile."""
    lines = [x for x in live_lines(skip=MISSED) if not DOWN_MS <= x[0] < UP_MS]
    return lines + rawgen.disconnect_lines(DOWN_MS, UP_MS)


def seconds_of(ids: set[int], trades=TRADES) -> set[int]:
    """Seconds (epoch) of the day with a trade of ``ids``."""
    return {t.t_ms // 1000 for t in trades if t.id in ids and START_US <= t.t_ms * 1000 < END_US}


def flagged(table: pa.Table, column: str) -> set[int]:
    """Seconds (epoch) of the bars rows with ``column`` true."""
    starts = table.filter(table[column])["window_start"].cast(pa.int64()).to_numpy()
    return set((starts // US).tolist())


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Built:
    return build(tmp_path_factory.mktemp("clean"), live_lines())


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Built:
    return build(tmp_path_factory.mktemp("recorded"), outage_lines())


@pytest.fixture(scope="module")
def filled(tmp_path_factory) -> Built:
    return build(tmp_path_factory.mktemp("filled"), outage_lines(), rawgen.trades_archive(TRADES))


def test_the_archive_fills_an_outage_completely_and_consecutively(clean, recorded, filled):
    # without the archive: the outage's trades are missing
    assert recorded.stats.missing_trade_ids == len(MISSED)
    assert recorded.stats.trade_id_gaps == [(min(MISSED), max(MISSED))]
    stats = filled.stats
    assert (stats.trade_id_gaps, stats.missing_trade_ids) == ([], 0)
    assert stats.trade_rows == len(DAY_TRADES) == clean.stats.trade_rows
    assert (stats.archive_file_trades, stats.archive_trades) == (len(DAY_TRADES), len(MISSED))
    assert (stats.trade_duplicates, stats.trade_id_conflicts, stats.repaired_trades) == (0, 0, 0)
    trades = filled.table("trades")
    ids = trades["trade_id"].to_pylist()
    assert sorted(ids) == list(range(ids[0], ids[0] + len(ids)))  # consecutive
    assert trades.select(TRADE_VALUES).equals(clean.table("trades").select(TRADE_VALUES))
    rows = trades.select(["trade_id", "ts_recv", "repaired", "source"]).to_pylist()
    assert {r["trade_id"] for r in rows if r["source"] == "archive"} == MISSED
    assert {r["source"] for r in rows if r["trade_id"] not in MISSED} == {"live"}
    assert all((r["ts_recv"] is None) == (r["source"] == "archive") for r in rows)
    assert not any(r["repaired"] for r in rows)
    # the recording is unchanged: its outage, its receive times
    assert stats.outages == recorded.stats.outages == [(DOWN_MS * 1000, UP_MS * 1000)]
    assert stats.outage_kinds == recorded.stats.outage_kinds == ["outage"]
    assert stats.max_ts_recv_us == recorded.stats.max_ts_recv_us
    assert validate_file(filled.trades, "trades").passed


def test_bars_of_a_filled_outage_equal_the_whole_recording_and_say_archive(clean, recorded,
                                                                           filled):  # fmt: skip
    bars, whole = filled.table("bars"), clean.table("bars")
    assert bars.select(BAR_VALUES).equals(whole.select(BAR_VALUES))
    archive = seconds_of(MISSED)
    assert flagged(bars, "is_archive") == archive
    assert flagged(bars, "is_outage") == flagged(recorded.table("bars"), "is_outage")
    assert archive <= flagged(bars, "is_outage")  # the recorder was down: still an outage
    assert flagged(bars, "is_live") == seconds_of({t.id for t in TRADES} - MISSED)
    assert not flagged(bars, "is_repaired") and not flagged(recorded.table("bars"), "is_archive")
    minutes = filled.table("bars_1m")
    assert flagged(minutes, "is_archive") == {s // 60 * 60 for s in archive}
    assert minutes["trade_count"].equals(clean.table("bars_1m")["trade_count"])
    assert validate_file(filled.bars, "bars_1s").passed
    assert validate_file(filled.bars_1m, "bars_1m").passed


def test_coverage_counts_filled_seconds_as_archive(recorded, filled):
    bars = filled.table("bars").select(["window_start", "is_archive", "is_outage"]).to_pylist()
    expected: dict[int, dict[str, int]] = {}
    # The public file filled this day, so every second the recorder lost is archive: those
    # with archive trades, and the quiet ones the file shows had none. Else live.
    assert any(r["is_archive"] for r in bars)
    for r in bars:
        state = "archive" if r["is_archive"] or r["is_outage"] else "live"
        m = expected.setdefault(int(r["window_start"].timestamp()) // 60 * 60, {})
        m[state] = m.get(state, 0) + 1
    states = ("live", "repaired", "archive", "outage", "unrecorded", "pending")
    before = {int(r["minute"].timestamp()): r for r in recorded.table("coverage").to_pylist()}
    rows = filled.table("coverage").to_pylist()
    assert len(rows) == 1440
    for r in rows:
        minute = int(r["minute"].timestamp())
        assert {s: r[f"seconds_{s}"] for s in states if r[f"seconds_{s}"]} == expected[minute]
        assert sum(r[f"seconds_{s}"] for s in states) == 60
        was = before[minute]  # the outage's seconds moved to archive
        assert r["seconds_outage"] == 0
        assert r["seconds_archive"] == was["seconds_outage"] + was["seconds_unrecorded"]
        assert was["seconds_archive"] == 0
    n = len(seconds_of(MISSED))
    assert sum(r["seconds_archive"] for r in rows) >= n > 50
    assert validate_file(filled.coverage, "coverage").passed


def test_fast_saved_and_sql_bars_are_byte_identical_with_archive_trades(filled, tmp_path):
    built = {}
    for name, extra in {"fast": {}, "saved": {"seconds": filled.summary},
                        "sql": {"fast": False}}.items():  # fmt: skip
        out = tmp_path / f"{name}.parquet"
        stats = build_bars_1s(filled.trades, filled.quotes, SYMBOL, DAY, out,
                              filled.stats.outages, **extra)  # fmt: skip
        built[name] = (stats, out.read_bytes())
    assert built["fast"] == built["sql"] == built["saved"]
    assert built["sql"][0].archive_seconds == len(seconds_of(MISSED))
    assert built["sql"][1] == filled.bars.read_bytes()


def test_live_copies_win_over_the_archive(clean, tmp_path):
    """Every trade recorded live and in the archive: the archive adds nothing and the tables
    are those of the recording alone."""
    both = build(tmp_path, live_lines(), rawgen.trades_archive(TRADES))
    assert both.stats.archive_file_trades == len(DAY_TRADES)
    assert (both.stats.archive_trades, both.stats.trade_duplicates) == (0, 0)
    assert both.stats.trade_id_conflicts == 0
    assert both.table("trades").equals(clean.table("trades"))
    assert set(both.table("trades")["source"].to_pylist()) == {"live"}
    for name in ("bars", "bars_1m", "coverage"):
        assert getattr(both, name).read_bytes() == getattr(clean, name).read_bytes(), name


def test_a_repair_wins_over_the_archive_which_fills_the_rest(tmp_path):
    gap = [t for t in DAY_TRADES[500:540]]
    repaired = {t.id for t in gap[::2]}
    lines = live_lines(skip={t.id for t in gap})
    lines += [(t.t_ms + 60_000, rawgen.rest_line(t, t.t_ms + 60_000)) for t in gap[::2]]
    twice = DAY_TRADES[800]  # live and repaired: the live copy wins
    lines.append((twice.t_ms + 60_000, rawgen.rest_line(twice, twice.t_ms + 60_000)))
    built = build(tmp_path, lines, rawgen.trades_archive(TRADES))
    stats = built.stats
    archived = {t.id for t in gap} - repaired
    assert (stats.trade_id_gaps, stats.repaired_trades) == ([], len(repaired))
    assert (stats.archive_trades, stats.trade_duplicates) == (len(archived), 1)
    rows = built.table("trades").to_pylist()
    source = {r["trade_id"]: r["source"] for r in rows}
    assert {i for i, s in source.items() if s == "repair"} == repaired
    assert {i for i, s in source.items() if s == "archive"} == archived
    assert source[twice.id] == "live"
    assert all(r["repaired"] == (r["source"] == "repair") for r in rows)
    bars = built.table("bars")
    assert flagged(bars, "is_repaired") == seconds_of(repaired)
    assert flagged(bars, "is_archive") == seconds_of(archived)
    cov = built.table("coverage").to_pylist()  # a second with archive trades counts as archive
    assert sum(r["seconds_archive"] for r in cov) == len(seconds_of(archived))
    assert sum(r["seconds_repaired"] for r in cov) == len(seconds_of(repaired)
                                                          - seconds_of(archived))  # fmt: skip


def _us_line(t: rawgen.Trade, t_us: int, recv_ms: int) -> bytes:
    """A live @trade line in µs with a sub-millisecond trade time."""
    data = {**t.ws_payload("us", SYMBOL), "T": t_us, "E": t_us + 1}
    msg = orjson.dumps({"stream": "btcusdt@trade", "data": data})
    return ws_line(recv_ms * 1_000_000, "ws-1", "us", msg)


def test_an_archive_copy_that_disagrees_is_a_conflict(tmp_path):
    t0 = rawgen.DAY_START_MS + 60_000
    trs = [rawgen.Trade(i, t0 + 10 * i, "100.00000000", "1.00000000", i % 2 == 0)
           for i in range(1, 9)]  # fmt: skip
    lines = [(t.t_ms + 1, rawgen.trade_line(t, t.t_ms + 1)) for t in trs[:6]]
    sub_ms = trs[5].t_ms * 1000 + 417  # live in µs, the archive in ms: the same trade
    lines[5] = (trs[5].t_ms + 1, _us_line(trs[5], sub_ms, trs[5].t_ms + 1))
    archive = [dataclasses.replace(trs[1], price="100.50000000"),  # id 2: another price
               dataclasses.replace(trs[2], m=not trs[2].m),  # id 3: the other side
               *trs[3:]]  # fmt: skip
    built = build(tmp_path, lines, rawgen.trades_archive(archive))
    stats = built.stats
    assert (stats.trade_id_conflicts, stats.conflicting_trade_ids) == (2, [2, 3])
    assert (stats.trade_rows, stats.archive_trades, stats.trade_duplicates) == (8, 2, 0)
    kept = built.table("trades").to_pylist()
    assert [(r["trade_id"], str(r["price"]), r["is_buyer_maker"], r["source"])
            for r in kept[1:3]] == [(2, "100.00000000", trs[1].m, "live"),
                                    (3, "100.00000000", trs[2].m, "live")]  # fmt: skip
    assert [r["source"] for r in kept] == ["live"] * 6 + ["archive"] * 2
    records = [orjson.loads(x) for x in Path(stats.quarantine_path).read_bytes().splitlines()]
    assert [(r["trade_id"], r["kept"], r["source"], r["recv_us"] is None) for r in records] == [
        (2, True, "live", False), (2, False, "archive", True),
        (3, True, "live", False), (3, False, "archive", True),
    ]  # fmt: skip
    assert records[1]["price"] == "100.50000000"
    saved = load_trade_conflicts(built.layout, SYMBOL, DAY)
    assert [(c["trade_id"], [x["source"] for x in c["copies"]]) for c in saved] == [
        (2, ["live", "archive"]), (3, ["live", "archive"])]  # fmt: skip


def test_a_day_without_raw_files_is_the_archive(clean, tmp_path):
    built = build(tmp_path, [], rawgen.trades_archive(TRADES))
    stats = built.stats
    assert (stats.raw_files, stats.trade_rows, stats.quote_rows) == (0, len(DAY_TRADES), 0)
    assert (stats.trade_kind, stats.trade_id_gaps) == ("trade", [])
    assert stats.archive_trades == len(DAY_TRADES)
    assert stats.max_ts_recv_us is None  # nothing was received
    assert (stats.outages, stats.outage_kinds) == ([(START_US, END_US)], ["unrecorded"])
    trades = built.table("trades")
    assert trades.select(TRADE_VALUES).equals(clean.table("trades").select(TRADE_VALUES))
    assert set(trades["source"].to_pylist()) == {"archive"}
    assert trades["ts_recv"].null_count == trades.num_rows
    assert validate_file(built.trades, "trades").passed
    bars = built.table("bars")
    assert bars.select(BAR_VALUES).equals(clean.table("bars").select(BAR_VALUES))
    trade_seconds = seconds_of({t.id for t in TRADES})
    assert flagged(bars, "is_archive") == trade_seconds
    assert len(flagged(bars, "is_outage")) == 86_400 and not flagged(bars, "is_live")
    cov = built.table("coverage").to_pylist()
    # every second is known from the file: with its trades, or quiet
    assert sum(r["seconds_archive"] for r in cov) == 86_400 > len(trade_seconds)
    assert sum(r["seconds_unrecorded"] + r["seconds_outage"] for r in cov) == 0
    assert not any(r["quotes_recorded"] for r in cov)


def test_the_archive_changes_no_outage_of_the_recording(tmp_path):
    """A collector started at noon after dying without a stop, nothing else recorded: it was
    down from its last line received, and the archive's trades were never received."""
    noon_ns = (START_US + 43_200 * US) * 1000
    up_ns = noon_ns + 5 * 10**6
    lines = [(noon_ns // 10**6, session_line(noon_ns, "collector", "collector_start")),
             (up_ns // 10**6, session_line(up_ns, "ws-1", "connect"))]  # fmt: skip
    without = build(tmp_path / "without", lines)
    with_archive = build(tmp_path / "with", lines, rawgen.trades_archive(TRADES))
    assert with_archive.stats.outages == without.stats.outages
    assert with_archive.stats.outage_kinds == without.stats.outage_kinds
    assert with_archive.stats.max_ts_recv_us is None


def test_an_agg_trade_day_is_filled_from_the_agg_trades_file(tmp_path):
    aggs = rawgen.aggregate(TRADES)
    missed = {a["a"] for a in aggs if DOWN_MS <= a["T"] < UP_MS}
    lines = [(a["T"] + 3, rawgen.agg_line(a, a["T"] + 3)) for a in aggs if a["a"] not in missed]
    lines += [(q.recv_ms, rawgen.quote_line(q)) for q in QUOTES]
    whole = build(tmp_path / "whole", [*lines, *((a["T"] + 3, rawgen.agg_line(a, a["T"] + 3))
                                                 for a in aggs if a["a"] in missed)])  # fmt: skip
    built = build(tmp_path / "filled", lines + rawgen.disconnect_lines(DOWN_MS, UP_MS),
                  rawgen.agg_archive(aggs))  # fmt: skip
    stats = built.stats
    assert (stats.trade_kind, stats.trade_id_gaps) == ("aggTrade", [])
    assert stats.archive_trades == len(missed)
    trades = built.table("trades")
    assert trades.select(TRADE_VALUES).equals(whole.table("trades").select(TRADE_VALUES))
    source = dict(zip(trades["trade_id"].to_pylist(), trades["source"].to_pylist(), strict=True))
    assert {i for i, s in source.items() if s == "archive"} == missed
    assert sum(trades["trade_count"].to_pylist()) == len(DAY_TRADES)
    bars = built.table("bars")
    assert bars.select(BAR_VALUES).equals(whole.table("bars").select(BAR_VALUES))
    assert flagged(bars, "is_archive") == {a["T"] // 1000 for a in aggs if a["a"] in missed}


@pytest.mark.parametrize("raw_kind", ["trade", "aggTrade"])
def test_an_archive_of_the_other_kind_is_refused(tmp_path, raw_kind):
    aggs = rawgen.aggregate(TRADES[:200])
    if raw_kind == "trade":
        lines, archive = live_lines(TRADES[:200]), rawgen.agg_archive(aggs)
    else:
        lines = [(a["T"] + 3, rawgen.agg_line(a, a["T"] + 3)) for a in aggs]
        archive = rawgen.trades_archive(TRADES[:200])
    with pytest.raises(ArchiveKindMismatch, match=f"raw trades are {raw_kind}s"):
        build(tmp_path, lines, archive)
    assert not (tmp_path / "out" / "t.parquet").exists()


def test_a_malformed_or_foreign_archive_table_is_refused(tmp_path):
    table = rawgen.trades_archive(TRADES)
    with pytest.raises(ValueError, match="columns do not match"):
        build(tmp_path, [], table.drop_columns(["qty"]))
    with pytest.raises(ValueError, match="columns do not match"):
        build(tmp_path, [], table.set_column(3, "qty", table["qty"].cast(pa.decimal128(38, 8))))
    late = rawgen.archive_table([(1, END_US, "1", "1", True)])  # the next day's first µs
    with pytest.raises(ValueError, match="outside the day"):
        build(tmp_path, [], late)
    assert not (tmp_path / "out" / "t.parquet").exists()


def test_archive_rows_of_a_full_day_keep_the_tables_sorted_and_unique(filled):
    trades = filled.table("trades").select(["ts_event", "trade_id"]).to_pylist()
    keys = [(r["ts_event"], r["trade_id"]) for r in trades]
    assert keys == sorted(keys) and len({k[1] for k in keys}) == len(keys)
    recv = filled.table("trades")["ts_recv"]
    assert recv.null_count == len(MISSED)
    live = np.array([v is not None for v in recv.to_pylist()])
    assert int(live.sum()) == len(DAY_TRADES) - len(MISSED)


def test_the_general_path_merges_the_archive_alike(filled, tmp_path):
    """Every raw line through the general DuckDB path (``fast=False``): the same trades."""
    layout = LakeLayout(tmp_path)
    rawgen.write_raw(layout, outage_lines())
    catalog = RawCatalog(layout)
    catalog.refresh()
    out = tmp_path / "out"
    stats = build_ticks(catalog.files_for(SYMBOL, DAY), SYMBOL, DAY, out / "t.parquet",
                        out / "q.parquet", tmp_path / "quarantine", fast=False,
                        archive=rawgen.trades_archive(TRADES))  # fmt: skip
    assert (out / "t.parquet").read_bytes() == filled.trades.read_bytes()
    assert dataclasses.asdict(stats) == dataclasses.asdict(filled.stats)
