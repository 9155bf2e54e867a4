"""Raw input the catalog and the tick build must take in their stride: lines longer than
DuckDB's maximum JSON object size (its reader fails a whole scan on them), damaged
compressed files, and sealed files the raw sensor has not catalogued yet."""

from __future__ import annotations

import dataclasses
import gzip
from pathlib import Path

import orjson
import pytest

from crypto_lake.lib.core.paths import LakeLayout, part_file_name
from crypto_lake.lib.market.ticks import build_ticks
from crypto_lake.lib.raw.catalog import MAX_LINE_BYTES, RawCatalog
from crypto_lake_tests.lib import rawgen

T0 = rawgen.DAY_START_MS + 60_000
NEXT_DAY = "2024-03-02"


def _write(layout: LakeLayout, symbol: str, day: str, part: int, lines: list[bytes],
           compression: str = "none") -> Path:  # fmt: skip
    d = layout.raw_day_dir(symbol, day)
    d.mkdir(parents=True, exist_ok=True)
    path = d / part_file_name(part, compression=compression)
    data = b"".join(lines)
    path.write_bytes(gzip.compress(data, 1) if compression == "gzip" else data)
    return path


def _trade_line(symbol: str, tr: rawgen.Trade, recv_ms: int) -> bytes:
    return (
        rawgen.trade_line(tr, recv_ms)
        .replace(b"btcusdt", symbol.lower().encode())
        .replace(b"BTCUSDT", symbol.encode())
    )


def _long_line(size: int) -> bytes:
    """A raw line of ``size`` bytes (and its newline), well formed except for its size."""
    head = b'{"recv_ns":%d,"conn":"ws-1","unit":"us","stream":"btcusdt@trade","data":{"x":"' % (
        (T0 + 7) * 1_000_000
    )
    return head + b"a" * (size - len(head) - 3) + b'"}}\n'


def _trades(ids, t0_ms=T0) -> list[rawgen.Trade]:
    return [rawgen.Trade(i, t0_ms + 10 * i, "100.00000000", "1.00000000", False) for i in ids]


MB = 1 << 20


def test_catalog_sets_aside_a_line_too_long_and_catalogues_everything_else(tmp_path):
    layout = LakeLayout(tmp_path)
    btc, eth = _trades(range(1, 7)), _trades(range(100, 104))
    good = [_trade_line("BTCUSDT", t, t.t_ms + 1) for t in btc]
    big = _write(layout, "BTCUSDT", rawgen.DAY, 1, [*good[:3], _long_line(20 * MB),
                                                    _long_line(40 * MB), *good[3:]])  # fmt: skip
    plain = _write(layout, "BTCUSDT", rawgen.DAY, 2, good[:1])
    other = _write(layout, "ETHUSDT", rawgen.DAY, 1,
                   [_trade_line("ETHUSDT", t, t.t_ms + 1) for t in eth])  # fmt: skip
    # a damaged compressed file: its stream ends early
    sol = [_trade_line("SOLUSDT", t, t.t_ms + 1) for t in _trades(range(1000, 1400))]
    whole = gzip.compress(b"".join(sol), 1)
    torn = _write(layout, "SOLUSDT", rawgen.DAY, 1, [], compression="gzip")
    torn.write_bytes(whole[: len(whole) // 2])

    new = {Path(i.path): i for i in RawCatalog(layout).refresh()}

    assert set(new) == {big, plain, other, torn}
    info = new[big]
    assert (info.lines, info.bad_lines) == (8, 2)
    assert info.min_event_us == btc[0].t_ms * 1000 and info.max_event_us == btc[-1].t_ms * 1000
    assert (new[other].lines, new[other].bad_lines) == (4, 0)
    assert (new[plain].lines, new[plain].bad_lines) == (1, 0)
    records = [orjson.loads(x) for x in (layout.quarantine_root / "BTCUSDT" / rawgen.DAY /
               "part-000001.catalog.jsonl").read_bytes().splitlines()]  # fmt: skip
    assert [(r["line_no"], r["bytes"]) for r in records] == [(4, 20 * MB), (5, 40 * MB)]
    assert records[1]["line"].startswith('{"recv_ns":') and records[0]["file"] == str(big)
    assert new[torn].bad_lines >= 1 and new[torn].lines > 100  # the lines before the damage
    (damaged,) = (layout.quarantine_root / "SOLUSDT" / rawgen.DAY).iterdir()
    assert orjson.loads(damaged.read_bytes())["reason"].startswith("unreadable after byte")
    assert RawCatalog(layout).refresh() == []
    assert RawCatalog(layout).files_for("ETHUSDT", rawgen.DAY) == [other]


@pytest.mark.parametrize("fast", [True, False])
def test_ticks_quarantine_a_line_too_long_and_keep_the_good_lines(tmp_path, fast):
    layout = LakeLayout(tmp_path)
    btc = _trades(range(1, 7))
    late = rawgen.Trade(9, rawgen.DAY_END_MS - 5, "101.00000000", "2.00000000", True)
    good = [_trade_line("BTCUSDT", t, t.t_ms + 1) for t in btc]
    own = _write(layout, "BTCUSDT", rawgen.DAY, 1, [
        *good[:2], _long_line(MAX_LINE_BYTES + 1), good[2], _long_line(40 * MB), b"{torn\n",
        *good[3:]])  # fmt: skip
    # the next day's folder: the day's last trade, and a long line that is not this day's
    spill = _write(layout, "BTCUSDT", NEXT_DAY, 2, [
        _trade_line("BTCUSDT", late, rawgen.DAY_END_MS + 3), _long_line(40 * MB)],
        compression="gzip")  # fmt: skip
    eth_lines = [_trade_line("ETHUSDT", t, t.t_ms + 1) for t in _trades(range(50, 53))]
    eth = _write(layout, "ETHUSDT", rawgen.DAY, 1, eth_lines)
    RawCatalog(layout).refresh()
    files = RawCatalog(layout).files_for("BTCUSDT", rawgen.DAY, refresh=False)
    assert files == [own, spill]
    out, qdir = tmp_path / "out", tmp_path / "quarantine"

    stats = build_ticks(files, "BTCUSDT", rawgen.DAY, out / "t.pq", out / "q.pq", qdir, fast=fast)

    assert stats.trade_rows == 7 and stats.last_trade_id == 9
    assert (stats.bad_lines, stats.raw_lines) == (3, 10)
    records = [orjson.loads(x) for x in Path(stats.quarantine_path).read_bytes().splitlines()]
    assert [(r["line_no"], r.get("bytes")) for r in records] == [
        (6, None), (3, MAX_LINE_BYTES + 1), (5, 40 * MB)]  # fmt: skip
    assert {r["file"] for r in records} == {str(own)}
    eth_stats = build_ticks([eth], "ETHUSDT", rawgen.DAY, out / "et.pq", out / "eq.pq", qdir)
    assert (eth_stats.trade_rows, eth_stats.bad_lines) == (3, 0)


def test_fast_and_general_paths_agree_on_long_lines(tmp_path):
    layout = LakeLayout(tmp_path)
    good = [_trade_line("BTCUSDT", t, t.t_ms + 1) for t in _trades(range(1, 4))]
    path = _write(layout, "BTCUSDT", rawgen.DAY, 1,
                  [good[0], _long_line(MAX_LINE_BYTES + 1), *good[1:], b"[1]\n",
                   _long_line(MAX_LINE_BYTES)])  # fmt: skip
    got = {}
    for fast in (True, False):
        d = tmp_path / str(fast)
        stats = build_ticks([path], "BTCUSDT", rawgen.DAY, d / "t.pq", d / "q.pq", d, fast=fast)
        got[fast] = (dataclasses.asdict(stats), (d / "t.pq").read_bytes(),
                     Path(stats.quarantine_path).read_bytes())  # fmt: skip
        got[fast][0].pop("quarantine_path")
    assert got[True] == got[False]
    assert got[True][0]["bad_lines"] == 3  # the line of exactly MAX_LINE_BYTES is read
    reasons = [orjson.loads(x)["reason"] for x in got[True][2].splitlines()]
    assert reasons == ["invalid field", "raw line must be an object with an integer recv_ns",
                       f"line longer than {MAX_LINE_BYTES} bytes"]  # fmt: skip


def test_files_for_sees_sealed_files_the_sensor_has_not_catalogued(tmp_path):
    layout = LakeLayout(tmp_path)
    trs = _trades(range(1, 4))
    late = rawgen.Trade(9, rawgen.DAY_END_MS - 5, "1.00000000", "1.00000000", True)
    own = _write(layout, "BTCUSDT", rawgen.DAY, 1, [rawgen.trade_line(t, t.t_ms + 1) for t in trs])
    spill = _write(layout, "BTCUSDT", NEXT_DAY, 2, [rawgen.trade_line(late, late.t_ms + 20)])
    unrelated = _write(layout, "BTCUSDT", NEXT_DAY, 3, [rawgen.trade_line(
        dataclasses.replace(late, id=10, t_ms=rawgen.DAY_END_MS + 60_000),
        rawgen.DAY_END_MS + 60_001)])  # fmt: skip
    catalog = RawCatalog(layout)  # the raw sensor has never run

    assert catalog.files_for("BTCUSDT", rawgen.DAY) == [own, spill]
    # a file sealed after the first answer is in the next one, from any catalog object
    more = _write(layout, "BTCUSDT", rawgen.DAY, 4, [rawgen.trade_line(trs[0], T0 + 900)])
    assert catalog.files_for("BTCUSDT", rawgen.DAY) == [own, more, spill]
    assert RawCatalog(layout).files_for("BTCUSDT", NEXT_DAY) == [spill, unrelated]
    # the raw sensor still announces each of them, once
    announced = [Path(i.path) for i in RawCatalog(layout).refresh()]
    assert sorted(announced) == sorted([own, more, spill, unrelated])
    assert RawCatalog(layout).refresh() == []
    # without refresh, only what is catalogued
    newest = _write(layout, "BTCUSDT", rawgen.DAY, 5, [rawgen.trade_line(trs[1], T0 + 950)])
    assert newest not in RawCatalog(layout).files_for("BTCUSDT", rawgen.DAY, refresh=False)
    assert newest in RawCatalog(layout).files_for("BTCUSDT", rawgen.DAY)
