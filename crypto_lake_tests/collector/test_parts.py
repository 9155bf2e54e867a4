"""Building blocks of the collector, on real files: tracker, writer, sealing, recovery, lock."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from collector_daemon.connection import backoff_delay
from collector_daemon.gaps import GapBook
from collector_daemon.health import prometheus_text, quantiles, sd_notify
from collector_daemon.lock import LakeLock, LockHeld
from collector_daemon.recovery import RecoveryReport, recover_lake, recover_open_file
from collector_daemon.resume import load_checkpoint, recent_ids, restore_tracker, save_checkpoint
from collector_daemon.sealing import SealError, seal_file
from collector_daemon.tracker import IdTracker, RecentIds
from collector_daemon.writer import NS_PER_DAY, RawWriter
from crypto_lake.lib.core.paths import LakeLayout
from crypto_lake.lib.raw.lines import session_line, ws_line
from crypto_lake_tests.collector.conftest import read_lines, sealed_parts


# tracker -------------------------------------------------------------------------------------
def test_tracker_drops_duplicates_and_opens_holes() -> None:
    t = IdTracker()
    assert [t.accept(i, 0.0) for i in (10, 11, 11, 12)] == [True, True, False, True]
    assert t.accept(16, 0.0)  # 13..15 missing
    assert [(h.first, h.last) for h in t.holes] == [(13, 15)]
    assert t.accept(14, 0.0)  # late (reordered) message fills the middle
    assert [(h.first, h.last) for h in t.holes] == [(13, 13), (15, 15)]
    assert not t.accept(14, 0.0)  # ... and is a duplicate the second time
    assert not t.accept(10, 0.0)  # the first id again
    assert t.missing_in(10, 20) == 2
    assert t.due(0.4, grace=0.5) == []
    due = t.due(0.6, grace=0.5)
    assert [(h.first, h.last) for h in due] == [(13, 13), (15, 15)]
    assert t.due(5.0, grace=0.5) == []  # declared only once
    assert t.fill(13) and t.fill(15) and t.holes == []


def test_tracker_without_history_keeps_late_ids_below_the_first() -> None:
    """A fresh start may see 101 before a reordered 100: 100 is new, its repeat is not."""
    t = IdTracker()
    assert t.accept(101, 0.0) and t.accept(100, 0.0) and not t.accept(100, 0.0)
    assert t.holes == [] and t.next_id == 102
    t2 = IdTracker(next_id=102)  # history known (checkpoint): below is a duplicate
    assert not t2.accept(100, 0.0)


def test_tracker_add_hole_skips_known_ranges() -> None:
    t = IdTracker(next_id=100)
    t.add_hole(50, 60, 0.0, "restart", declared=True)
    t.add_hole(55, 70, 0.0, "file-hole", declared=False)
    assert [(h.first, h.last, h.cause) for h in t.holes] == [
        (50, 60, "restart"),
        (61, 70, "file-hole"),
    ]
    t.add_hole(150, 160, 0.0, "restart", declared=True)
    assert t.next_id == 161


def test_recent_ids_window() -> None:
    r = RecentIds(size=3)
    assert [r.accept(i) for i in (5, 7, 5, 6, 9, 10)] == [True, True, False, True, True, True]
    assert r.accept(5)  # fell out of the window: accepted again (bounded memory)


def test_backoff_full_jitter_is_capped() -> None:
    rng = random.Random(1)
    delays = [backoff_delay(a, 0.5, 4.0, rng) for a in range(50)]
    assert all(0.0 <= d <= 4.0 for d in delays)
    assert max(delays[:1]) <= 0.5
    assert max(delays[10:]) > 2.0  # grows to the cap


# writer --------------------------------------------------------------------------------------
def _trade(sym: str, t: int) -> bytes:
    return orjson.dumps({"stream": f"{sym.lower()}@trade", "data": {"e": "trade", "t": t}})


def test_writer_rotates_seals_and_continues_numbers(tmp_path: Path) -> None:
    layout = LakeLayout(tmp_path)

    async def run() -> RawWriter:
        w = RawWriter(layout, rotate_seconds=0.2, compression="zstd")
        now = time.time_ns()
        for i in range(5):
            w.write("BTCUSDT", now, ws_line(now, "ws-1", "us", _trade("BTCUSDT", i)))
        w.flush()
        await asyncio.sleep(0.25)
        w.rotate()
        w.write("BTCUSDT", now, ws_line(now, "ws-1", "us", _trade("BTCUSDT", 5)))
        await w.sync()
        await w.close()
        return w

    w = asyncio.run(run())
    parts = sealed_parts(tmp_path)
    assert [p.name for p in parts] == ["part-000000.jsonl.zst", "part-000001.jsonl.zst"]
    assert [r["data"]["t"] for p in parts for r in read_lines(p)] == list(range(6))
    assert w.parts_sealed == 2 and w.durable.quantiles() is not None

    async def again() -> None:  # a restarted writer never reuses a number
        w2 = RawWriter(layout)
        now = time.time_ns()
        w2.write("BTCUSDT", now, ws_line(now, "ws-2", "us", _trade("BTCUSDT", 6)))
        await w2.close()

    asyncio.run(again())
    assert sealed_parts(tmp_path)[-1].name == "part-000002.jsonl"


def test_writer_splits_at_utc_midnight(tmp_path: Path) -> None:
    day = 20_000 * NS_PER_DAY  # 2024-10-04

    async def run() -> None:
        w = RawWriter(LakeLayout(tmp_path))
        for ns in (day - 1, day, day + 1):
            w.write("ETHUSDT", ns, session_line(ns, "ws-1", "connect"))
        await w.close()

    asyncio.run(run())
    days = sorted(p.parent.name for p in sealed_parts(tmp_path))
    assert days == ["2024-10-03", "2024-10-04"]


def test_writer_failure_cuts_to_whole_lines(tmp_path: Path) -> None:
    failures: list[BaseException] = []

    async def run() -> RawWriter:
        w = RawWriter(LakeLayout(tmp_path), on_failure=failures.append)
        now = time.time_ns()
        w.write("BTCUSDT", now, session_line(now, "ws-1", "connect"))
        w.flush()
        part = w.parts["BTCUSDT"]
        os.write(part.fd, b'{"torn')  # what a short write leaves behind
        os.close(part.fd)
        part.fd = os.open(part.path, os.O_RDONLY)  # next write fails with EBADF
        w.write("BTCUSDT", now, session_line(now, "ws-1", "subscribed"))
        w.flush()
        return w

    w = asyncio.run(run())
    assert w.failed is not None and failures
    (leftover,) = list((tmp_path / "raw").rglob("*.open"))
    assert leftover.read_bytes().endswith(b"}\n")
    assert not sealed_parts(tmp_path)  # nothing sealed after a failure


# sealing and recovery ------------------------------------------------------------------------
def test_recovery_cuts_torn_tail_and_seals(tmp_path: Path) -> None:
    d = LakeLayout(tmp_path).raw_day_dir("BTCUSDT", "2026-01-02")
    d.mkdir(parents=True)
    good = b"".join(session_line(i, "ws-1", "connect") for i in range(3))
    (d / "part-000004.jsonl.open").write_bytes(good + b'{"recv_ns":3,"conn":"ws-1","se')
    (d / "part-000005.jsonl.open").write_bytes(good + b"\x00" * 100)  # power loss zeros
    (d / "part-000006.jsonl.open").write_bytes(b'{"torn')  # nothing whole: removed
    (d / ".part-000003.jsonl.zst.abc.tmp").write_bytes(b"junk")
    report = recover_lake(LakeLayout(tmp_path), "gzip")
    assert report.torn_lines == 3
    assert sorted(p.name for p in d.iterdir()) == ["part-000004.jsonl.gz", "part-000005.jsonl.gz"]
    for p in sealed_parts(tmp_path):
        assert len(read_lines(p)) == 3


def test_recovery_removes_stale_open_beside_sealed_copy(tmp_path: Path) -> None:
    d = tmp_path / "raw" / "binance" / "BTCUSDT" / "2026-01-02"
    d.mkdir(parents=True)
    (d / "part-000001.jsonl.zst").write_bytes(b"sealed")
    (d / "part-000001.jsonl.open").write_bytes(b"{}\n")
    report = RecoveryReport()
    recover_open_file(d / "part-000001.jsonl.open", "zstd", report)
    assert [p.name for p in d.iterdir()] == ["part-000001.jsonl.zst"]
    assert (d / "part-000001.jsonl.zst").read_bytes() == b"sealed"


def test_seal_refuses_to_overwrite(tmp_path: Path) -> None:
    (tmp_path / "part-000001.jsonl").write_bytes(b"old\n")
    (tmp_path / "part-000001.jsonl.open").write_bytes(b"new\n")
    with pytest.raises(SealError):
        seal_file(tmp_path / "part-000001.jsonl.open", "none")
    assert (tmp_path / "part-000001.jsonl").read_bytes() == b"old\n"


def test_recent_ids_read_live_and_repaired_lines(tmp_path: Path) -> None:
    d = LakeLayout(tmp_path).raw_day_dir("BTCUSDT", "2026-01-02")
    d.mkdir(parents=True)
    lines = [ws_line(1, "ws-1", "us", _trade("BTCUSDT", i)) for i in (1, 2, 5)]
    rest = {
        "recv_ns": 2,
        "conn": "rest",
        "unit": "us",
        "stream": "btcusdt@trade",
        "rest": "historicalTrades",
        "data": {"id": 3, "time": 7},
    }
    lines.append(orjson.dumps(rest) + b"\n")
    (d / "part-000000.jsonl").write_bytes(b"".join(lines))
    ids = recent_ids(LakeLayout(tmp_path), "BTCUSDT", "btcusdt@trade", None)
    assert [i for i, _ in ids] == [1, 2, 3, 5]
    t = IdTracker()
    restore_tracker(t, None, ids)
    assert t.next_id == 6 and [(h.first, h.last) for h in t.holes] == [(4, 4)]


def test_restore_replays_files_over_the_checkpoint() -> None:
    """Checkpoint said next=10 with 4..5 missing; the crashed run then wrote 5, 14, 15."""
    t = IdTracker()
    cp = {"next_id": 10, "last_time": 1, "holes": [[4, 5, "in-stream", True]]}
    restore_tracker(t, cp, [(5, 2), (14, 3), (15, 4)])
    assert [(h.first, h.last, h.cause) for h in t.holes] == [
        (4, 4, "in-stream"),
        (10, 13, "restart"),  # written by nobody: the restart gap survives the crash
    ]
    assert t.next_id == 16 and t.holes[1].time_before == 1


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    layout = LakeLayout(tmp_path)
    t = IdTracker()
    t.accept(1, 0.0), t.accept(4, 0.0)
    save_checkpoint(layout, "trade", {"BTCUSDT": t, "ETHUSDT": IdTracker()})
    assert load_checkpoint(layout, "aggTrade") == {}
    cp = load_checkpoint(layout, "trade")
    assert cp == {
        "BTCUSDT": {"next_id": 5, "last_time": None, "holes": [[2, 3, "in-stream", False]]}
    }


def test_gap_book_round_trip(tmp_path: Path) -> None:
    t = IdTracker()
    t.accept(1, 0.0)
    t.accept(5, 0.0)
    book = GapBook(tmp_path / "gaps.json")
    (hole,) = t.due(10.0, 0.5)
    book.declare("BTCUSDT", "btcusdt@trade", hole)
    book.save()
    assert [g.first_id for g in GapBook(tmp_path / "gaps.json").load()] == [2]
    t.fill(2), t.fill(3), t.fill(4)
    book.reconcile({"BTCUSDT": t})
    assert book.counts()["repaired"] == 1 and book.counts()["open"] == 0


# lock, health --------------------------------------------------------------------------------
def test_lock_refuses_second_holder_and_frees_on_death(tmp_path: Path) -> None:
    path = tmp_path / "state" / "collector.lock"
    code = (
        "import sys,time; from collector_daemon.lock import LakeLock; "
        f"LakeLock(__import__('pathlib').Path({str(path)!r})).acquire(); "
        "print('locked', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
        with pytest.raises(LockHeld, match=f"pid {holder.pid}"):
            LakeLock(path).acquire()
    finally:
        holder.kill()
        holder.wait()
    lock = LakeLock(path)
    lock.acquire()  # the kernel released the dead holder's lock
    lock.release()


def test_sd_notify_sends_datagram(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    addr = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as srv:
        srv.bind(addr)
        monkeypatch.setenv("NOTIFY_SOCKET", addr)
        assert sd_notify("READY=1")
        assert srv.recv(100) == b"READY=1"
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert not sd_notify("READY=1")


def test_prometheus_text() -> None:
    hb = {
        "status": "running",
        "messages_total": 10,
        "duplicates_dropped": 1,
        "quarantined": 2,
        "bytes_written": 999,
        "reconnects": 3,
        "gaps": {"open": 1, "repaired": 4},
        "disk_free_bytes": 123,
        "latency_ms": quantiles([1e6, 2e6, 3e6], 1e6),
        "symbols": {"BTCUSDT": {"age_seconds": 0.5}},
    }
    text = prometheus_text(hb)
    assert "crypto_lake_collector_messages_total 10.0\n" in text
    assert 'crypto_lake_collector_receive_latency_ms{quantile="max"} 3.0' in text
    assert 'crypto_lake_collector_last_message_age_seconds{symbol="BTCUSDT"} 0.5' in text
    assert text.count("# TYPE crypto_lake_collector_receive_latency_ms") == 1
    # an older heartbeat without "connections"/"groups": running, but nothing connected
    assert "crypto_lake_collector_up 0.0\n" in text
    assert "crypto_lake_collector_running 1.0\n" in text
