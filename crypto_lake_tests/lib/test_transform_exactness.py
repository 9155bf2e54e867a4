"""bars_1s and bars_1m against an independent Decimal reference, clean and perturbed input."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from crypto_lake.lib.core.duck import connect
from crypto_lake.lib.core.paths import LakeLayout
from crypto_lake.lib.market.bars import build_bars_1m, build_bars_1s
from crypto_lake.lib.market.ticks import TickStats, build_ticks
from crypto_lake.lib.raw.catalog import RawCatalog, day_bounds_us
from crypto_lake_tests.lib import rawgen
from crypto_lake_tests.lib.reference import (
    reference_bars,
    reference_klines_1m,
    reference_ticks,
)

DAY = rawgen.DAY
DAY_MS = 86_400_000
N_TRADES, N_QUOTES = 4000, 3000
VALUE_COLUMNS = [
    "window_start", "open", "high", "low", "close", "volume_base", "volume_quote",
    "trade_count", "vwap", "taker_buy_base", "first_trade_id", "last_trade_id", "bid", "ask",
    "bid_qty", "ask_qty", "mid", "spread", "spread_bps", "is_empty", "is_outage",
]  # fmt: skip
GAP = range(10_500, 10_531)  # trade ids lost live and repaired from REST later
LATE_GAP = range(13_900, 13_910)  # last burst (around midnight), repaired the next day


@dataclass
class Built:
    root: Path
    files: list[Path]
    stats: TickStats
    bars: Path
    bars_1m: Path
    trades: Path
    quotes: Path


def _build(root: Path, lines: list[tuple[int, bytes]], shuffle_seed=None, threads=None,
           archive=None) -> Built:  # fmt: skip
    layout = LakeLayout(root)
    rawgen.write_raw(layout, lines, shuffle_seed=shuffle_seed)
    catalog = RawCatalog(layout)
    catalog.refresh()
    files = catalog.files_for("BTCUSDT", DAY)
    con = connect(threads=threads)
    out = root / "out"
    stats = build_ticks(files, "BTCUSDT", DAY, out / "t.parquet", out / "q.parquet",
                        root / "quarantine", con=con, archive=archive)  # fmt: skip
    build_bars_1s(out / "t.parquet", out / "q.parquet", "BTCUSDT", DAY, out / "b.parquet",
                  stats.outages, con=con)  # fmt: skip
    build_bars_1m(out / "b.parquet", out / "m.parquet", con=con)
    return Built(root, files, stats, out / "b.parquet", out / "m.parquet", out / "t.parquet",
                 out / "q.parquet")  # fmt: skip


@pytest.fixture(scope="module")
def data():
    return rawgen.make_trades(N_TRADES), rawgen.make_quotes(N_QUOTES)


@pytest.fixture(scope="module")
def clean(tmp_path_factory, data) -> Built:
    trades, quotes = data
    return _build(tmp_path_factory.mktemp("clean"), rawgen.clean_lines(trades, quotes))


def _perturbed_lines(trades, quotes, repair_gap: bool = True) -> list[tuple[int, bytes]]:
    """Duplicates from a second connection, mixed ms/µs units, two gaps repaired later (GAP
    left open unless ``repair_gap``)."""
    rng = random.Random(3)
    lines = []
    for tr in trades:
        recv = tr.t_ms + rng.randint(1, 40)
        if tr.id in GAP or tr.id in LATE_GAP:
            continue
        lines.append((recv, rawgen.trade_line(tr, recv, unit=rng.choice(["ms", "us"]))))
        if rng.random() < 0.15:  # overlap of a replacement connection
            lines.append((recv + 7, rawgen.trade_line(tr, recv + 7, conn="ws-2")))
    for tr in trades:
        if tr.id in GAP and repair_gap:  # repaired 3 minutes later, plus a duplicate repair
            lines.append((tr.t_ms + 180_000, rawgen.rest_line(tr, tr.t_ms + 180_000)))
            lines.append((tr.t_ms + 181_000, rawgen.rest_line(tr, tr.t_ms + 181_000)))
        if tr.id in LATE_GAP:  # delivered two days late
            lines.append((tr.t_ms + 2 * DAY_MS, rawgen.rest_line(tr, tr.t_ms + 2 * DAY_MS)))
    for q in quotes:
        lines.append((q.recv_ms, rawgen.quote_line(q)))
        if rng.random() < 0.2:
            dup = rawgen.Quote(q.u, q.recv_ms + 3, q.bid, q.bid_qty, q.ask, q.ask_qty)
            lines.append((dup.recv_ms, rawgen.quote_line(dup, conn="ws-2")))
    return lines


@pytest.fixture(scope="module")
def perturbed(tmp_path_factory, data) -> Built:
    trades, quotes = data
    lines = _perturbed_lines(trades, quotes)
    return _build(tmp_path_factory.mktemp("perturbed"), lines, shuffle_seed=11)


@pytest.fixture(scope="module")
def agg_input(tmp_path_factory, data) -> Built:
    trades, quotes = data
    aggs = rawgen.aggregate(trades)
    lines = [(a["T"] + 3, rawgen.agg_line(a, a["T"] + 3)) for a in aggs]
    lines += [(q.recv_ms, rawgen.quote_line(q)) for q in quotes]
    return _build(tmp_path_factory.mktemp("agg"), lines)


@pytest.fixture(scope="module")
def archived(tmp_path_factory, data) -> Built:
    """The perturbed input with GAP never repaired, and the day's public trades file."""
    trades, quotes = data
    lines = _perturbed_lines(trades, quotes, repair_gap=False)
    return _build(tmp_path_factory.mktemp("archived"), lines, shuffle_seed=11,
                  archive=rawgen.trades_archive(trades))  # fmt: skip


def _rows(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def _assert_matches_reference(built: Built) -> None:
    start_us, end_us = day_bounds_us(DAY)
    trades, quotes = reference_ticks(built.files, "BTCUSDT", start_us, end_us)
    ref = reference_bars(trades, quotes, start_us, end_us)
    got = _rows(built.bars)
    assert len(got) == len(ref) == 86_400
    keys = ["open", "high", "low", "close", "volume_base", "volume_quote", "trade_count",
            "taker_buy_base", "first_trade_id", "last_trade_id", "bid", "ask", "bid_qty",
            "ask_qty"]  # fmt: skip
    for r, g in zip(ref, got, strict=True):
        assert int(g["window_start"].timestamp()) == r["sec"]
        for k in keys:
            assert g[k] == r[k], (r["sec"], k, g[k], r[k])
        if r["vwap"] is None:
            assert g["vwap"] is None
        else:
            assert g["vwap"] == pytest.approx(r["vwap"], rel=1e-14)
        if r["bid"] is not None:
            assert g["spread"] == r["ask"] - r["bid"]
    assert sum(r["trade_count"] for r in got) == sum(t["l"] - t["f"] + 1 for t in trades.values())


def test_clean_run_matches_reference(clean):
    _assert_matches_reference(clean)
    assert clean.stats.trade_id_gaps == []
    assert clean.stats.duplicates_dropped == 0
    assert clean.stats.bad_lines == 0


def test_perturbed_run_matches_reference(perturbed):
    _assert_matches_reference(perturbed)


def test_perturbed_equals_clean(clean, perturbed):
    """Duplicates, reordering, ms/µs units and repaired gaps change nothing but the flags."""
    a = pq.read_table(clean.bars).select(VALUE_COLUMNS)
    b = pq.read_table(perturbed.bars).select(VALUE_COLUMNS)
    assert a.equals(b)
    assert perturbed.stats.trade_duplicates > 100
    assert perturbed.stats.quote_duplicates > 100
    assert perturbed.stats.repaired_trades == len(GAP) + len(LATE_GAP)
    assert perturbed.stats.trade_id_gaps == []  # every gap was repaired
    flags = pq.read_table(perturbed.bars, columns=["is_repaired"]).column(0).to_pylist()
    assert 0 < sum(flags) <= len(GAP) + len(LATE_GAP)
    # The late repair sits two folders away and was still found by the catalog.
    assert any(p.parent.name == "2024-03-03" for p in perturbed.files)


def test_agg_trade_input_equals_trade_input(clean, agg_input):
    """From @aggTrade, counts count underlying trades and every value is unchanged."""
    cols = [c for c in VALUE_COLUMNS if c not in ("bid", "ask", "bid_qty", "ask_qty")]
    a = pq.read_table(clean.bars).select(cols)
    b = pq.read_table(agg_input.bars).select(cols)
    assert a.equals(b)
    assert agg_input.stats.trade_kind == "aggTrade"
    assert agg_input.stats.trade_rows < clean.stats.trade_rows
    _assert_matches_reference(agg_input)


def test_bars_1m_equal_klines_from_trades(perturbed):
    start_us, end_us = day_bounds_us(DAY)
    trades, _ = reference_ticks(perturbed.files, "BTCUSDT", start_us, end_us)
    klines = reference_klines_1m(trades)
    got = _rows(perturbed.bars_1m)
    assert len(got) == 1440
    for g in got:
        minute = int(g["window_start"].timestamp()) // 60
        k = klines.get(minute)
        if k is None:
            assert g["trade_count"] == 0 and g["is_empty"]
            continue
        for key, value in k.items():
            assert g[key] == value, (minute, key)


def test_midnight_trades_come_from_next_days_folder(clean):
    """The day's last trades were received after midnight and filed under the next day."""
    next_day = [p for p in clean.files if p.parent.name == "2024-03-02"]
    assert next_day
    t = pq.read_table(clean.trades, columns=["ts_event", "ts_recv"]).to_pylist()
    assert any(r["ts_recv"].date().isoformat() == "2024-03-02" for r in t)
    assert all(r["ts_event"].date().isoformat() == DAY for r in t)


def test_rebuild_is_byte_identical(tmp_path, data, clean):
    """Same input, different thread count and file order -> the same bytes."""
    trades, quotes = data
    again = _build(tmp_path, rawgen.clean_lines(trades, quotes), threads=1)
    for a, b in [(clean.trades, again.trades), (clean.quotes, again.quotes),
                 (clean.bars, again.bars), (clean.bars_1m, again.bars_1m)]:  # fmt: skip
        assert a.read_bytes() == b.read_bytes(), a.name


def test_a_gap_filled_from_the_public_file_equals_clean(clean, archived):
    """GAP never received nor repaired, filled from the day's public trades file: the bars are
    those of the whole recording, the filled seconds flagged is_archive."""
    for bars in ("bars", "bars_1m"):
        a = pq.read_table(getattr(clean, bars)).select(VALUE_COLUMNS)
        b = pq.read_table(getattr(archived, bars)).select(VALUE_COLUMNS)
        assert a.equals(b), bars
    stats = archived.stats
    assert (stats.trade_id_gaps, stats.archive_trades) == ([], len(GAP))
    assert stats.repaired_trades == len(LATE_GAP)  # a repair still wins over the archive
    assert stats.trade_duplicates > 100 and stats.trade_id_conflicts == 0
    t = pq.read_table(archived.trades, columns=["trade_id", "source"]).to_pylist()
    assert {r["trade_id"] for r in t if r["source"] == "archive"} == set(GAP)
    assert {r["trade_id"] for r in t if r["source"] == "repair"} == set(LATE_GAP)
    flags = pq.read_table(archived.bars, columns=["is_archive"]).column(0).to_pylist()
    assert 0 < sum(flags) <= len(GAP)
