"""Acceptance 2 and 8 (issue 3): kill -9 at random moments, and a disk that refuses writes."""

from __future__ import annotations

import hashlib
import random
import resource
import time
from collections import defaultdict
from pathlib import Path

import pytest

from crypto_lake.lib.core.paths import parse_part_name
from crypto_lake_tests.collector.conftest import (
    open_parts,
    read_lines,
    sealed_parts,
    trade_ids_in_lake,
)

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]


def _check_sealed(lake: Path, seen: dict[Path, str]) -> None:
    """Every sealed file is whole lines; a sealed file never changes; no number twice."""
    numbers: dict[Path, list[int]] = defaultdict(list)
    for p in sealed_parts(lake):
        data = p.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if p in seen:
            assert seen[p] == digest, f"sealed file {p} was rewritten"
        else:
            read_lines(p)  # raises on a torn or partial line
            seen[p] = digest
        numbers[p.parent].append(parse_part_name(p.name).number)
    for d, nums in numbers.items():
        assert len(nums) == len(set(nums)), f"{d}: a part number was sealed twice"
    for p in seen:
        assert p.exists(), f"sealed file {p} disappeared"


def _assert_ids_complete(lake: Path, sim) -> None:
    for sym in SYMBOLS:
        ids = set(trade_ids_in_lake(lake, sym))
        assert ids, sym
        lo, hi = min(ids), max(ids)
        missing = set(range(lo, hi + 1)) - ids
        assert not missing, f"{sym}: {len(missing)} ids missing, e.g. {sorted(missing)[:5]}"
        truth = {t["id"] for t in sim.trades(sym) if lo <= t["id"] <= hi}
        assert ids == truth


def _kill_cycles(n: int, seed: int, sim_factory, start_collector, tmp_path: Path) -> None:
    rng = random.Random(seed)
    sim = sim_factory(symbols=SYMBOLS, rate_scale=4, seed=seed)
    lake = tmp_path / "lake"
    seen: dict[Path, str] = {}
    for _ in range(n):
        c = start_collector(
            sim,
            lake=lake,
            rotate_seconds=rng.choice([0.2, 0.5, 1.5]),
            compression=rng.choice(["none", "gzip", "zstd"]),
            fsync_interval=0.2,
        )
        if rng.random() < 0.25:
            time.sleep(rng.uniform(0.2, 2.0))  # during interpreter start or recovery
        else:
            c.wait_heartbeat(lambda hb: hb["status"] == "running", timeout=30)
            time.sleep(rng.uniform(0.0, 1.5))  # while connecting, writing or sealing
        c.kill9()
        _check_sealed(lake, seen)
    c = start_collector(sim, lake=lake, rotate_seconds=1.0)
    c.wait_heartbeat(lambda hb: hb["status"] == "running" and hb["messages_total"] > 50)
    hb = c.wait_heartbeat(
        lambda hb: (
            hb["gaps"]["open"] == 0
            and hb["gaps"]["repaired"] >= 1
            and all(s["pending_holes"] == 0 for s in hb["symbols"].values())
        ),
        timeout=60,
    )
    sim.pause_market()
    time.sleep(1.0)
    rc, _ = c.terminate()
    assert rc == 0, c.tail_log()
    assert not open_parts(lake)
    _check_sealed(lake, seen)
    _assert_ids_complete(lake, sim)
    assert hb["rest"]["trades_repaired"] > 0


def test_kill9_twenty_times(sim_factory, start_collector, tmp_path) -> None:
    """Acceptance 2 (CI): 20 kill -9 at random moments, then every missed id is repaired."""
    _kill_cycles(20, 3, sim_factory, start_collector, tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_kill9_two_hundred_times(sim_factory, start_collector, tmp_path) -> None:
    _kill_cycles(200, 4, sim_factory, start_collector, tmp_path)


def _limit_file_size(nbytes: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))

    return apply


@pytest.mark.parametrize("compression", ["none", "zstd"])
def test_disk_full_stops_cleanly(compression, sim_factory, start_collector, tmp_path) -> None:
    """Acceptance 8: a file-size limit (EFBIG, like a full disk) mid-run: clean stop."""
    sim = sim_factory(symbols=SYMBOLS, rate_scale=10)
    lake = tmp_path / "lake"
    first = start_collector(sim, lake=lake, rotate_seconds=0.5, compression=compression)
    first.wait_heartbeat(lambda hb: hb["parts_sealed"] >= 6)
    assert first.terminate()[0] == 0
    seen: dict[Path, str] = {}
    _check_sealed(lake, seen)
    before = set(seen)

    limited = start_collector(
        sim,
        lake=lake,
        rotate_seconds=30,
        compression=compression,
        popen={"preexec_fn": _limit_file_size(64 * 1024)},
    )
    rc = limited.wait(30)
    assert rc == 74, limited.tail_log()
    log = limited.tail_log()
    assert "write failed" in log and "File too large" in log
    hb = limited.heartbeat()
    assert hb["status"] == "failed" and "File too large" in hb["error"]
    assert hb["exit_code"] == 74 and "\n" not in hb["error"]  # issue 18: the heartbeat says so
    _check_sealed(lake, seen)  # earlier sealed files intact, nothing partial under a sealed name
    leftovers = open_parts(lake)
    assert leftovers and all(p.read_bytes().endswith(b"\n") for p in leftovers)

    # Space is back: the next start seals the leftovers and carries on.
    again = start_collector(sim, lake=lake, rotate_seconds=0.5, compression=compression)
    again.wait_heartbeat(lambda hb: hb["status"] == "running" and hb["messages_total"] > 10)
    assert again.terminate()[0] == 0
    _check_sealed(lake, seen)
    assert not open_parts(lake) and len(seen) > len(before)
    assert all(read_lines(p) for p in sealed_parts(lake))
