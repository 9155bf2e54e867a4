"""Trade ids received twice with different content: kept once as before, but every copy is
quarantined, counted and saved per partition for the blocking check. Copies that agree on
what the exchange said (a live line and its REST repair, the same message on two
connections) stay ordinary duplicates."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import duckdb
import orjson
import pytest

from crypto_lake.lib.core.paths import LakeLayout, part_file_name
from crypto_lake.lib.market.dedup import load_trade_conflicts, trade_conflicts_path
from crypto_lake.lib.market.ticks import build_ticks
from crypto_lake.lib.raw.lines import repaired_line, ws_line
from crypto_lake_tests.lib import rawgen

T0 = rawgen.DAY_START_MS + 60_000


def _write(layout: LakeLayout, part: int, lines: list[bytes]) -> Path:
    d = layout.raw_day_dir("BTCUSDT", rawgen.DAY)
    d.mkdir(parents=True, exist_ok=True)
    path = d / part_file_name(part)
    path.write_bytes(b"".join(lines))
    return path


def _build(layout: LakeLayout, files: list[Path], fast: bool = True):
    out = layout.root / f"out-{fast}"
    state = trade_conflicts_path(layout, "BTCUSDT", rawgen.DAY)
    stats = build_ticks(files, "BTCUSDT", rawgen.DAY, out / "t.parquet", out / "q.parquet",
                        layout.quarantine_root / f"q-{fast}", fast=fast,
                        conflicts_out=state)  # fmt: skip
    return stats, out / "t.parquet"


def _records(stats) -> list[dict]:
    if stats.quarantine_path is None:
        return []
    return [orjson.loads(x) for x in Path(stats.quarantine_path).read_bytes().splitlines()]


def _trade_line_us(tr: rawgen.Trade, t_us: int, recv_ms: int, conn: str = "ws-1") -> bytes:
    """A live @trade line in µs with a sub-millisecond trade time."""
    data = {**tr.ws_payload("us", "BTCUSDT"), "T": t_us, "E": t_us + 1}
    msg = orjson.dumps({"stream": "btcusdt@trade", "data": data})
    return ws_line(recv_ms * 1_000_000, conn, "us", msg)


def _rest_line_us(tr: rawgen.Trade, t_us: int, recv_ms: int) -> bytes:
    return repaired_line(recv_ms * 1_000_000, "btcusdt@trade", "us", "historicalTrades",
                         {**tr.rest_payload(), "time": t_us})  # fmt: skip


@pytest.mark.parametrize("fast", [True, False])
def test_conflicting_copies_are_quarantined_counted_and_saved(tmp_path, fast):
    layout = LakeLayout(tmp_path)
    trs = [rawgen.Trade(i, T0 + 10 * i, "100.00000000", "1.00000000", i % 2 == 0)
           for i in range(1, 11)]  # fmt: skip
    lines = [rawgen.trade_line(t, t.t_ms + 1) for t in trs]
    other_price = dataclasses.replace(trs[4], price="100.50000000")  # id 5, another price
    other_side = dataclasses.replace(trs[5], m=not trs[5].m)  # id 6, the other maker side
    p1 = _write(layout, 1, lines)
    p2 = _write(layout, 2, [
        rawgen.trade_line(other_price, T0 + 5_000, conn="ws-2"),
        rawgen.trade_line(other_side, T0 + 5_001, conn="ws-2"),
        rawgen.rest_line(trs[6], T0 + 5_002),  # id 7 repaired: the same trade
        rawgen.trade_line(trs[7], T0 + 5_003, conn="ws-2"),  # id 8 again: the same trade
    ])  # fmt: skip
    state = trade_conflicts_path(layout, "BTCUSDT", rawgen.DAY)

    stats, trades = _build(layout, [p1, p2], fast)

    assert stats.trade_rows == 10
    assert (stats.trade_id_conflicts, stats.conflicting_trade_ids) == (2, [5, 6])
    assert stats.trade_duplicates == 2  # ids 7 and 8 only
    # the kept copy is the one the dedup always chose (earliest received live copy)
    kept = duckdb.sql(f"SELECT price::VARCHAR, is_buyer_maker FROM '{trades}' "
                      f"WHERE trade_id IN (5, 6) ORDER BY trade_id").fetchall()  # fmt: skip
    assert kept == [("100.00000000", trs[4].m), ("100.00000000", trs[5].m)]
    records = _records(stats)
    assert [(r["trade_id"], r["kept"], r["price"], r["is_buyer_maker"]) for r in records] == [
        (5, True, "100.00000000", trs[4].m), (5, False, "100.50000000", trs[4].m),
        (6, True, "100.00000000", trs[5].m), (6, False, "100.00000000", not trs[5].m),
    ]  # fmt: skip
    assert {r["reason"] for r in records} == {"trade id conflict"}
    saved = load_trade_conflicts(layout, "BTCUSDT", rawgen.DAY)
    assert [(c["trade_id"], len(c["copies"])) for c in saved] == [(5, 2), (6, 2)]
    assert saved[0]["copies"][1]["recv_us"] == (T0 + 5_000) * 1000

    # The bad copies are gone from the input: the rebuild clears the partition's flag.
    p2.write_bytes(rawgen.rest_line(trs[6], T0 + 5_002))
    stats, _ = _build(layout, [p1, p2], fast)
    assert (stats.trade_id_conflicts, stats.conflicting_trade_ids) == (0, [])
    assert stats.quarantine_path is None and stats.trade_duplicates == 1
    assert load_trade_conflicts(layout, "BTCUSDT", rawgen.DAY) == []
    assert orjson.loads(state.read_bytes())["conflicts"] == []


def test_fast_and_general_paths_agree_on_conflicts(tmp_path):
    layout = LakeLayout(tmp_path)
    trs = [rawgen.Trade(i, T0 + 10 * i, "5.00000000", "2.00000000", False) for i in (1, 2, 3)]
    path = _write(layout, 1, [
        *(rawgen.trade_line(t, t.t_ms + 1) for t in trs),
        rawgen.trade_line(dataclasses.replace(trs[1], qty="2.10000000"), T0 + 900),
        rawgen.trade_line(dataclasses.replace(trs[1], t_ms=trs[1].t_ms + 1), T0 + 901),
    ])  # fmt: skip
    fast, fast_trades = _build(layout, [path], True)
    slow, slow_trades = _build(layout, [path], False)
    assert fast_trades.read_bytes() == slow_trades.read_bytes()
    f, s = dataclasses.asdict(fast), dataclasses.asdict(slow)
    assert f.pop("quarantine_path") != s.pop("quarantine_path")
    assert f == s and fast.trade_id_conflicts == 1 and fast.trade_duplicates == 0
    assert Path(fast.quarantine_path).read_bytes() == Path(slow.quarantine_path).read_bytes()
    assert [r["qty"] for r in _records(fast)] == ["2.00000000", "2.10000000", "2.00000000"]


def test_repairs_in_another_time_unit_are_the_same_trade(tmp_path):
    """A µs stream repaired from REST in ms: the trade times agree to the millisecond."""
    layout = LakeLayout(tmp_path)
    same = rawgen.Trade(1, T0, "1.00000000", "1.00000000", True)
    moved = rawgen.Trade(2, T0 + 5, "1.00000000", "1.00000000", True)
    path = _write(layout, 1, [
        _trade_line_us(same, T0 * 1000 + 417, T0 + 1),
        rawgen.rest_line(same, T0 + 50),  # ms: T0, the same trade
        _trade_line_us(moved, (T0 + 5) * 1000 + 417, T0 + 6),
        _rest_line_us(moved, (T0 + 5) * 1000 + 418, T0 + 60),  # µs, 1 µs apart: a conflict
    ])  # fmt: skip
    stats, _ = _build(layout, [path])
    assert stats.trade_duplicates == 1 and stats.conflicting_trade_ids == [2]
    assert [(r["ts_event_us"], r["repaired"]) for r in _records(stats)] == [
        ((T0 + 5) * 1000 + 417, False), ((T0 + 5) * 1000 + 418, True)]  # fmt: skip


def test_aggregate_ids_conflict_on_content_too(tmp_path):
    layout = LakeLayout(tmp_path)
    agg = {"a": 700, "p": "3.00000000", "q": "1.00000000", "f": 10, "l": 11, "T": T0, "m": True}
    path = _write(layout, 1, [
        rawgen.agg_line(agg, T0 + 1),
        rawgen.agg_line({**agg, "q": "2.00000000", "l": 12}, T0 + 2),
        rawgen.agg_line({**agg, "a": 701, "f": 12, "l": 12}, T0 + 3),
        rawgen.agg_line({**agg, "a": 701, "f": 12, "l": 12}, T0 + 4),
    ])  # fmt: skip
    stats, _ = _build(layout, [path])
    assert stats.trade_kind == "aggTrade" and stats.trade_rows == 2
    assert (stats.conflicting_trade_ids, stats.trade_duplicates) == ([700], 1)
