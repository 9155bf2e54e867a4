"""Acceptance 1, 5 and 9 (issue 3): lossless capture, 24 h replacement, clean stop and lock."""

from __future__ import annotations

import signal
import socket
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

import pytest

from crypto_lake.lib.core.config import DEFAULT_SYMBOLS
from crypto_lake.lib.core.paths import parse_part_name
from crypto_lake_tests.collector.conftest import (
    book_ids_in_lake,
    free_port,
    open_parts,
    read_lines,
    sealed_parts,
    sessions,
    symbol_lines,
    trade_ids_in_lake,
)


def _assert_exactly_once(lake: Path, sim, symbols: list[str]) -> None:
    for sym in symbols:
        ids = trade_ids_in_lake(lake, sym)
        sent = sim.sent.trade_ids(sym)
        assert len(ids) == len(set(ids)), f"{sym}: duplicate trade lines"
        assert set(ids) == sent, f"{sym}: {len(sent - set(ids))} sent trades missing"
        book = book_ids_in_lake(lake, sym)
        assert len(book) == len(set(book)), f"{sym}: duplicate bookTicker lines"
        assert set(book) == sim.sent.update_ids(sym), f"{sym}: bookTicker lines differ"


def _assert_parts_in_order(lake: Path, rotate: float) -> dict[str, int]:
    """Per symbol-day: numbers strictly increase with time; each part spans <= rotate."""
    by_dir: dict[Path, list[tuple[int, list[dict]]]] = defaultdict(list)
    for p in sealed_parts(lake):
        by_dir[p.parent].append((parse_part_name(p.name).number, read_lines(p)))
    counts = {}
    for d, parts in by_dir.items():
        parts.sort(key=lambda x: x[0])
        numbers = [n for n, _ in parts]
        assert numbers == sorted(set(numbers)), f"{d}: part numbers reused"
        prev_last = 0
        for n, lines in parts:
            first, last = lines[0]["recv_ns"], lines[-1]["recv_ns"]
            assert first >= prev_last, f"{d}: part {n} starts before the previous one ended"
            assert (last - first) / 1e9 <= rotate + 0.5, f"{d}: part {n} sealed late"
            prev_last = last
        counts[d.parent.name] = len(parts)
    return counts


def test_13_symbols_every_message_exactly_once(sim_factory, start_collector, tmp_path) -> None:
    """Acceptance 1 (CI length): 13 symbols at realistic rates, rotate every 5 s."""
    duration, rotate = 40.0, 5.0
    sim = sim_factory(symbols=DEFAULT_SYMBOLS, seed=7)
    port = free_port()
    c = start_collector(sim, rotate_seconds=rotate, metrics_port=port)
    c.wait_heartbeat(lambda hb: hb["status"] == "running" and hb["connections"])
    time.sleep(duration / 2)
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    assert b"crypto_lake_collector_messages_total" in metrics
    assert b'crypto_lake_collector_last_message_age_seconds{symbol="EURUSDT"}' in metrics
    time.sleep(duration / 2)
    hb = c.heartbeat()
    assert hb["messages_per_second"] > 50 and hb["latency_ms"]["p50"] < 1000
    assert set(hb["symbols"]) == set(DEFAULT_SYMBOLS)
    sim.pause_market()  # nothing more is sent, so "sent" is final
    time.sleep(1.0)
    rc, _ = c.terminate()
    assert rc == 0, c.tail_log()
    assert not open_parts(c.lake)
    _assert_exactly_once(c.lake, sim, DEFAULT_SYMBOLS)
    counts = _assert_parts_in_order(c.lake, rotate)
    assert counts["BTCUSDT"] >= duration / rotate - 1
    assert sim.sent.count() > 5_000
    final = c.heartbeat()
    assert final["status"] == "stopped" and final["gaps"]["open"] == 0
    assert final["duplicates_dropped"] == 0 and final["quarantined"] == 0


@pytest.mark.slow
def test_13_symbols_five_minutes(sim_factory, start_collector) -> None:
    """Acceptance 1 (long): five minutes, default 60 s rotation shortened to 20 s, zstd."""
    sim = sim_factory(symbols=DEFAULT_SYMBOLS, seed=11)
    c = start_collector(sim, rotate_seconds=20, compression="zstd")
    c.wait_heartbeat(lambda hb: hb["status"] == "running" and hb["connections"])
    time.sleep(300)
    sim.pause_market()
    time.sleep(1.0)
    rc, _ = c.terminate()
    assert rc == 0, c.tail_log()
    _assert_exactly_once(c.lake, sim, DEFAULT_SYMBOLS)
    _assert_parts_in_order(c.lake, 20)


@pytest.mark.parametrize("mode", ["max_age", "shutdown_notice"])
def test_24h_disconnect_leaves_no_gap(mode, sim_factory, start_collector) -> None:
    """Acceptance 5: forced disconnects (shortened 24 h) with REST repair off: zero loss."""
    symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    if mode == "max_age":
        sim = sim_factory(symbols=symbols, max_connection_age_s=4.0, rate_scale=3)
        c = start_collector(sim, max_connection_age=2.5, no_repair=True)
    else:
        sim = sim_factory(
            symbols=symbols,
            max_connection_age_s=5.0,
            rate_scale=3,
            server_shutdown_notice=True,
            shutdown_notice_lead_s=2.5,
        )
        c = start_collector(sim, max_connection_age=1e6, no_repair=True)
    c.wait_heartbeat(lambda hb: hb["status"] == "running" and hb["connections"])
    hb = c.wait_heartbeat(lambda hb: hb["replacements"] >= 3, timeout=30)
    if mode == "shutdown_notice":
        assert hb["server_shutdown_notices"] >= 3
    sim.pause_market()
    time.sleep(1.0)
    rc, _ = c.terminate()
    assert rc == 0, c.tail_log()
    for sym in symbols:
        ids = trade_ids_in_lake(c.lake, sym)
        assert ids and sorted(set(ids)) == list(range(min(ids), max(ids) + 1)), sym
        assert len(ids) == len(set(ids))
        repaired = [r for r in symbol_lines(c.lake, sym) if r.get("conn") == "rest" or "rest" in r]
        assert not repaired, f"{sym}: {len(repaired)} REST-repaired lines with repair off"
    _assert_exactly_once(c.lake, sim, symbols)
    events = [s["session"] for s in sessions(c.lake, "BTCUSDT")]
    assert events.count("replaced") >= 3
    if mode == "shutdown_notice":
        assert events.count("server_shutdown") >= 3
    assert c.heartbeat()["gaps"]["open"] == 0


def test_sigterm_seals_and_second_instance_refuses(sim_factory, start_collector, tmp_path):
    """Acceptance 9: SIGTERM seals within 10 s and exits 0; a second collector refuses."""
    sim = sim_factory(symbols=["BTCUSDT", "ETHUSDT"], rate_scale=5)
    c = start_collector(sim, rotate_seconds=60, compression="gzip")
    c.wait_heartbeat(lambda hb: hb["status"] == "running" and hb["messages_total"] > 100)
    assert open_parts(c.lake)
    second = start_collector(sim, lake=c.lake)
    assert second.wait(20) == 75  # EX_TEMPFAIL (collector_daemon/exits.py)
    assert "refusing to start" in second.tail_log() and f"pid {c.pid}" in second.tail_log()
    assert c.proc.poll() is None  # the first one is unaffected
    rc, took = c.terminate()
    assert rc == 0 and took < 10.0, (rc, took, c.tail_log())
    assert not open_parts(c.lake)
    assert {p.name.endswith(".gz") for p in sealed_parts(c.lake)} == {True}
    lines = read_lines(sealed_parts(c.lake)[-1])
    assert lines[-1]["session"] == "collector_stop"
    hb = c.heartbeat()
    assert hb["status"] == "stopped" and hb["exit_code"] == 0 and hb["pid"] == c.pid


def test_systemd_notify_protocol(sim_factory, start_collector, tmp_path) -> None:
    """Type=notify: READY=1 after start-up, WATCHDOG=1 while alive, STOPPING=1 on SIGTERM."""
    addr = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as srv:
        srv.bind(addr)
        srv.settimeout(20)
        sim = sim_factory(symbols=["BTCUSDT"])
        env = {"NOTIFY_SOCKET": addr, "WATCHDOG_USEC": "1000000"}
        c = start_collector(sim, env=env, heartbeat_seconds=5)
        assert srv.recv(64) == b"READY=1"
        assert c.heartbeat()["status"] == "running"  # ready means recovered and running
        assert [srv.recv(64) for _ in range(3)] == [b"WATCHDOG=1"] * 3  # every 0.5 s
        c.proc.send_signal(signal.SIGTERM)
        while (msg := srv.recv(64)) == b"WATCHDOG=1":
            pass
        assert msg == b"STOPPING=1"
        assert c.wait(15) == 0
