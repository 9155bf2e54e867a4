"""Order book lines in the raw files change nothing downstream of the raw catalog.

The collector writes diff depth events (``<symbol>@depth@100ms``) and REST depth snapshots
(``"rest": "depth"``) into the same files as trades and quotes. A day recorded with them must
give exactly the trades, quotes and bars of the same day recorded without them, through the
compiled reader and the general path alike, with no bad line in the tick build or in the
raw catalog; they only count as ignored (other-stream) lines of their own day.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import orjson

from crypto_lake.lib.core.duck import connect
from crypto_lake.lib.market.ticks import build_ticks
from crypto_lake.lib.raw.catalog import day_bounds_us, scan_raw_files
from crypto_lake.lib.raw.lines import depth_snapshot_line, ws_line
from crypto_lake_tests.lib.rawgen import (
    DAY,
    DAY_END_MS,
    DAY_START_MS,
    build_partition,
    clean_lines,
    make_quotes,
    make_trades,
)

STREAM = "btcusdt@depth@100ms"


def _levels(rng: random.Random, best: int, side: int) -> list[list[str]]:
    """Changed levels of one side, price steps away from ``best`` (1e-8 units); qty 0 = gone."""
    out = []
    for _ in range(rng.randint(0, 40)):
        px = best + side * rng.randint(0, 5_000) * 1_000_000
        qty = rng.choice([0, rng.randint(1, 10**10)])
        out.append([f"{px // 10**8}.{px % 10**8:08d}", f"{qty // 10**8}.{qty % 10**8:08d}"])
    return out


def depth_lines(seed: int = 3) -> list[tuple[int, bytes]]:
    """(recv_ms, line) of diff events across the day and both midnights (a burst every few
    seconds, gaps now and then) and snapshots: start, gaps, verification, after midnight."""
    rng = random.Random(seed)
    out: list[tuple[int, bytes]] = []
    u = 7_000_000
    t = DAY_START_MS - 50_000
    while t < DAY_END_MS + 50_000:
        t += rng.choice([100] * 20 + [200, 60_000, 900_000])
        first = u + 1 + (rng.randint(5, 50) if rng.random() < 0.01 else 0)  # a gap
        u = first + rng.randint(0, 60)
        data = {"e": "depthUpdate", "E": t * 1000 - 800, "s": "BTCUSDT", "U": first, "u": u,
                "b": _levels(rng, 5_999_900_000_000, -1),
                "a": _levels(rng, 6_000_100_000_000, 1)}  # fmt: skip
        msg = orjson.dumps({"stream": STREAM, "data": data})
        out.append((t, ws_line(t * 1_000_000 + 77, "ws-1", "us", msg)))
        if first != u and rng.random() < 0.02:
            reason = rng.choice(["start", "gap", "reconnect", "verify"])
            body = orjson.dumps({"lastUpdateId": u, "bids": _levels(rng, 5_999_900_000_000, -1),
                                 "asks": _levels(rng, 6_000_100_000_000, 1)})  # fmt: skip
            line = depth_snapshot_line(t * 1_000_000 + 90, STREAM, reason, 1000, body, "us")
            out.append((t, line))
    return out


def _ticks(files: list[Path], out: Path, fast: bool) -> tuple[dict, bytes, bytes]:
    stats = build_ticks(files, "BTCUSDT", DAY, out / "t.parquet", out / "q.parquet",
                        out / "quarantine", con=connect(), fast=fast)  # fmt: skip
    return (dataclasses.asdict(stats), (out / "t.parquet").read_bytes(),
            (out / "q.parquet").read_bytes())  # fmt: skip


def test_depth_lines_change_no_trade_quote_or_bar(tmp_path: Path) -> None:
    trades, quotes = make_trades(3000), make_quotes(2000)
    plain = clean_lines(trades, quotes)
    depth = depth_lines()
    snapshots = sum(b'"rest":"depth"' in line for _, line in depth)
    assert len(depth) > 1000 and snapshots >= 5
    mixed = sorted(plain + depth, key=lambda x: x[0])
    a = build_partition(tmp_path / "plain", plain)
    b = build_partition(tmp_path / "mixed", mixed)

    for name in ("trades", "quotes", "bars", "bars_1m"):
        assert getattr(a, name).read_bytes() == getattr(b, name).read_bytes(), name
    sa, sb = dataclasses.asdict(a.stats), dataclasses.asdict(b.stats)
    assert sa["bad_lines"] == sb["bad_lines"] == 0 and sb["quarantine_path"] is None
    start_ms, end_ms = (x // 1000 for x in day_bounds_us(DAY))
    own_day = sum(start_ms <= t < end_ms for t, _ in depth)
    assert sb["ignored_lines"] - sa["ignored_lines"] == own_day
    assert sb["raw_lines"] - sa["raw_lines"] == own_day
    for key in ("raw_lines", "ignored_lines", "raw_files", "quarantine_path"):
        sa.pop(key), sb.pop(key)
    assert sa == sb

    # the general path reads the mixed day the same, line for line
    fast = _ticks(b.files, tmp_path / "fast", True)
    slow = _ticks(b.files, tmp_path / "slow", False)
    assert fast[1:] == slow[1:] == (b.trades.read_bytes(), b.quotes.read_bytes())
    fast[0].pop("quarantine_path"), slow[0].pop("quarantine_path")
    assert fast[0] == slow[0]

    # the raw catalog: no bad line, the same trade-time ranges, the depth lines counted
    scans = {
        name: scan_raw_files(sorted((tmp_path / name / "raw").rglob("part-*")))
        for name in ("plain", "mixed")
    }
    for name, scan in scans.items():
        assert sum(v[1] for v in scan.values()) == 0, name
    lines = {n: sum(v[0] for v in s.values()) for n, s in scans.items()}
    assert lines["mixed"] - lines["plain"] == len(depth)
    for k in (2, 3):  # min and max exchange time of the trades
        agg = min if k == 2 else max
        values = {n: agg(v[k] for v in s.values() if v[k] is not None) for n, s in scans.items()}
        assert values["plain"] == values["mixed"]
