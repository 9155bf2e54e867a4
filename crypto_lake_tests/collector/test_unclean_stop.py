"""A collector killed with SIGKILL writes no ``collector_stop``: its downtime must still be
unrecorded in the bars, whether the next start is minutes or days later; and a quiet symbol's
bars for today run to the collector's heartbeat. Real collector processes, the simulator on
loopback, then the Dagster-side lib functions over the raw files."""

from __future__ import annotations

import itertools
import random
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest

from crypto_lake.lib.core.paths import LakeLayout, part_file_name
from crypto_lake.lib.market.bars import build_bars_1s
from crypto_lake.lib.market.ticks import build_ticks
from crypto_lake.lib.raw.catalog import RawCatalog, day_bounds_us
from crypto_lake.lib.raw.heartbeat import recording_until
from crypto_lake.lib.raw.lines import session_line
from crypto_lake_tests.collector.conftest import part_bytes, sealed_parts, symbol_lines
from crypto_lake_tests.lib import rawgen

US = 1_000_000
SYMBOL = "BTCUSDT"


def _day_of(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).date().isoformat()


def _build(files: list[Path], day: str, out: Path, **bars_kw):
    """build_ticks + build_bars_1s; (stats, [(second_us, is_outage, trade_count)])."""
    stats = build_ticks(files, SYMBOL, day, out / "t.pq", out / "q.pq", out / "quarantine")
    build_bars_1s(out / "t.pq", out / "q.pq", SYMBOL, day, out / "b.pq", stats.outages,
                  **bars_kw)  # fmt: skip
    rows = pq.read_table(out / "b.pq", columns=["window_start", "is_outage", "trade_count"])
    bars = [(round(r["window_start"].timestamp() * US), r["is_outage"], r["trade_count"])
            for r in rows.to_pylist()]  # fmt: skip
    return stats, bars


def _skip_near_midnight(margin_s: float) -> None:
    now = time.time()
    if now % 86_400 < 120 or 86_400 - now % 86_400 < margin_s:
        pytest.skip("too close to midnight UTC: the run would span two days")


def test_sigkill_downtime_is_unrecorded_in_the_bars(sim_factory, start_collector, tmp_path):
    _skip_near_midnight(120)
    sim = sim_factory(symbols=[SYMBOL], rate_scale=3)
    lake = tmp_path / "lake"
    first = start_collector(sim, lake=lake, rotate_seconds=0.5, compression="zstd")
    first.wait_heartbeat(lambda hb: hb["status"] == "running" and hb["messages_total"] > 100)
    first.kill9()
    time.sleep(3.0)  # the downtime
    second = start_collector(sim, lake=lake, rotate_seconds=0.5)
    second.wait_heartbeat(lambda hb: hb["status"] == "running" and hb["messages_total"] > 100)
    rc, _ = second.terminate()
    assert rc == 0, second.tail_log()

    lines = sorted(symbol_lines(lake, SYMBOL), key=lambda r: r["recv_ns"])
    restart = [r for r in lines if r.get("session") == "collector_start"][1]
    connect = next(r for r in lines if r.get("session") == "connect"
                   and r["recv_ns"] > restart["recv_ns"])  # fmt: skip
    last = max(r["recv_ns"] for r in lines if "stream" in r and r["recv_ns"] < restart["recv_ns"])
    start_ns, end_ns = lines[0]["recv_ns"], lines[-1]["recv_ns"]
    day = _day_of(start_ns)
    assert _day_of(end_ns) == day
    catalog = RawCatalog(LakeLayout(lake))
    catalog.refresh()
    stats, bars = _build(catalog.files_for(SYMBOL, day), day, tmp_path / "out")

    # Every second the collector was dead (last line -> the next run's connect) is flagged.
    down_from, down_to = last // 1000, connect["recv_ns"] // 1000
    dead = [(s, flag) for s, flag, _ in bars if s >= down_from and s + US <= down_to]
    assert len(dead) >= 2 and all(flag for _, flag in dead), dead
    kinds = dict(zip(stats.outages, stats.outage_kinds, strict=True))
    assert kinds[(down_from, down_to)] == "unrecorded"
    # Every pause of over 1 s between market lines starts inside an outage.
    recv = [r["recv_ns"] // 1000 for r in lines if "stream" in r]
    pauses = [p for p, n in itertools.pairwise(recv) if n - p > US]
    assert pauses and all(any(a <= p < b for a, b in stats.outages) for p in pauses)

    # The second start wrote the stop the first run never did, dated at its last line.
    (stop,) = [r for r in lines if r.get("session") == "collector_stop" and r.get("unclean")]
    assert stop["recv_ns"] == last == restart["last_recv_ns"] and restart["unclean"]
    assert stop["noted_ns"] > last
    # From the raw lines alone (no such stop, as an older collector wrote them): the same.
    plain = tmp_path / "plain"
    plain.mkdir()
    copies = []
    for i, p in enumerate(p for p in sealed_parts(lake) if p.parent.parent.name == SYMBOL):
        kept = [x for x in part_bytes(p).splitlines(keepends=True) if b'"unclean":true' not in x
                or b'"collector_start"' in x]  # fmt: skip
        copies.append(plain / f"{i:04d}.jsonl")
        copies[-1].write_bytes(b"".join(kept))
    stats2, bars2 = _build(copies, day, tmp_path / "out2")
    assert stats2.outages == stats.outages and bars2 == bars


def test_kill_loop_leaves_no_data_gap_outside_an_outage(sim_factory, start_collector, tmp_path):
    """SIGKILL at random moments (during start-up, connecting, streaming): every pause of
    over 1 s between market lines starts inside an outage, and the flagged seconds cover it
    up to the next connect."""
    _skip_near_midnight(180)
    rng = random.Random(5)
    sim = sim_factory(symbols=[SYMBOL], rate_scale=3)
    lake = tmp_path / "lake"
    for _ in range(5):
        c = start_collector(sim, lake=lake, rotate_seconds=rng.choice([0.3, 1.0]))
        if rng.random() < 0.4:
            time.sleep(rng.uniform(0.2, 1.5))  # during interpreter start or recovery
        else:
            c.wait_heartbeat(lambda hb: hb["status"] == "running", timeout=30)
            time.sleep(rng.uniform(0.0, 1.5))
        c.kill9()
        time.sleep(rng.uniform(0.5, 2.0))
    c = start_collector(sim, lake=lake, rotate_seconds=0.5)
    c.wait_heartbeat(lambda hb: hb["status"] == "running" and hb["messages_total"] > 100)
    rc, _ = c.terminate()
    assert rc == 0, c.tail_log()

    lines = sorted(symbol_lines(lake, SYMBOL), key=lambda r: r["recv_ns"])
    day = _day_of(lines[0]["recv_ns"])
    assert _day_of(lines[-1]["recv_ns"]) == day
    catalog = RawCatalog(LakeLayout(lake))
    catalog.refresh()
    stats, bars = _build(catalog.files_for(SYMBOL, day), day, tmp_path / "out")
    flagged = {s for s, flag, _ in bars if flag}
    connects = [r["recv_ns"] // 1000 for r in lines if r.get("session") == "connect"]
    recv = [r["recv_ns"] // 1000 for r in lines if "stream" in r]
    pauses = [(p, n) for p, n in itertools.pairwise(recv) if n - p > US]
    assert pauses
    for p, n in pauses:
        assert any(a <= p < b for a, b in stats.outages), (p, n, stats.outages)
        up = min((t for t in connects if t > p), default=n)  # connected again
        inside = range(-(-p // US) * US, min(n, up) - US + 1, US)  # whole seconds in [p, up)
        assert set(inside) <= flagged, (p, n, sorted(set(inside) - flagged)[:5])


def test_a_restart_days_later_ends_the_dead_days_recording(sim_factory, start_collector, tmp_path):
    """Killed on 2024-03-01 at 10:00:59 and started again only today: the restart files the
    missing stop into 2024-03-01's folder, so that day is unrecorded from 10:00:59 on."""
    lake = tmp_path / "lake"
    layout = LakeLayout(lake)
    t0 = rawgen.DAY_START_MS + 10 * 3_600_000
    lines = [session_line(t0 * 10**6, "collector", "collector_start"),
             session_line((t0 + 5) * 10**6, "ws-old-0.1", "connect")]  # fmt: skip
    for k in range(60):
        q = rawgen.Quote(1000 + k, t0 + 1000 * k + 10, "10.0", "1.0", "10.1", "1.0")
        lines.append(rawgen.quote_line(q, conn="ws-old-0.1"))
    folder = layout.raw_day_dir(SYMBOL, rawgen.DAY)
    folder.mkdir(parents=True)
    (folder / part_file_name(0)).write_bytes(b"".join(lines))
    last_ns = (t0 + 59_010) * 10**6 + 456

    sim = sim_factory(symbols=[SYMBOL])
    c = start_collector(sim, lake=lake, rotate_seconds=0.5, no_repair=True)
    c.wait_heartbeat(lambda hb: hb["status"] == "running" and hb["messages_total"] > 10)
    rc, _ = c.terminate()
    assert rc == 0, c.tail_log()

    catalog = RawCatalog(layout)
    catalog.refresh(full=True)
    stats, bars = _build(catalog.files_for(SYMBOL, rawgen.DAY), rawgen.DAY, tmp_path / "out")
    flagged = [s for s, flag, _ in bars if flag]
    after = [s for s, _, _ in bars if s >= last_ns // 1000 // US * US]
    assert len(after) > 50_000 and set(after) <= set(flagged)
    assert (t0 + 30_000) * 1000 // US * US not in flagged  # it was recording at 10:00:30
    day_end = day_bounds_us(rawgen.DAY)[1]
    assert stats.outages[-1] == (last_ns // 1000, day_end)
    assert stats.outage_kinds[-1] == "unrecorded"
    added = [p for p in sealed_parts(lake) if p.parent == folder and p.name != part_file_name(0)]
    (stop,) = [orjson.loads(x) for p in added for x in part_bytes(p).splitlines()]
    assert stop["session"] == "collector_stop" and stop["unclean"] and stop["recv_ns"] == last_ns


def test_a_quiet_symbols_bars_run_to_the_heartbeat(sim_factory, start_collector, tmp_path):
    """Today's bars of a symbol that went quiet while connected end at the collector's
    heartbeat, not at its last message; the seconds in between are quiet, not outages."""
    _skip_near_midnight(60)
    sim = sim_factory(symbols=[SYMBOL], rate_scale=2)
    lake = tmp_path / "lake"
    c = start_collector(sim, lake=lake, rotate_seconds=0.3, heartbeat_seconds=0.5)
    c.wait_heartbeat(lambda hb: hb["status"] == "running" and hb["messages_total"] > 50)
    time.sleep(2.0)
    sim.pause_market()
    c.wait_heartbeat(lambda hb: hb["symbols"][SYMBOL]["age_seconds"] > 4.0, timeout=20)
    time.sleep(0.5)  # the last parts sealed
    layout = LakeLayout(lake)
    rec = recording_until(layout.heartbeat_path, SYMBOL)
    assert rec is not None and rec.until_us - rec.last_message_us > 4 * US
    day = _day_of(rec.until_us * 1000)
    catalog = RawCatalog(layout)
    catalog.refresh()
    files = catalog.files_for(SYMBOL, day)
    _, plain = _build(files, day, tmp_path / "plain")
    assert plain[-1][0] + US == rec.last_message_us // US * US  # stops at the last message
    _, bars = _build(files, day, tmp_path / "out", recording=rec)
    assert bars[-1][0] + US == rec.until_us // US * US
    quiet = bars[len(plain) + 1 :]  # after the last message's second
    assert len(quiet) >= 3 and all(not flag and n == 0 for _, flag, n in quiet), quiet
    assert bars[: len(plain)] == plain
    rc, _ = c.terminate()
    assert rc == 0, c.tail_log()
