"""``collector_health`` tells running, stopped, failed, stale and crashed apart, from real
heartbeat files in the current and the older format."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from crypto_lake.lib.raw.heartbeat import collector_health, recording_until
from crypto_lake_tests.ops import heartbeats as hb
from crypto_lake_tests.ops.heartbeats import NOW_NS, S


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "heartbeat.json"


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return int(proc.stdout)


def test_missing_and_unreadable(path: Path) -> None:
    h = collector_health(path, now_ns=NOW_NS)
    assert h.state == "missing" and not h.recording and "missing" in h.reason
    path.parent.mkdir(parents=True)
    path.write_text("{torn")
    h = collector_health(path, now_ns=NOW_NS)
    assert h.state == "missing" and "unreadable" in h.reason


def test_running_with_groups_gaps_and_disk(path: Path) -> None:
    groups = [hb.group(0, ["BTCUSDT"], last_age_s=2.0), hb.group(1, ["ETHUSDT"], down_for_s=90)]
    hb.write(path, hb.heartbeat(updated_ns=NOW_NS - 2 * S, groups=groups,
                                gaps=[hb.open_gap("BTCUSDT", 400)], disk=(1000, 150)))  # fmt: skip
    h = collector_health(path, now_ns=NOW_NS)
    assert (h.state, h.recording, h.process_alive) == ("running", True, None)  # other host
    assert h.age_s == pytest.approx(2.0)
    g0, g1 = h.groups
    assert (g0.connected, g0.down_seconds, g0.last_message_age_s) == (True, None, 2.0)
    assert (g1.connected, g1.symbols, g1.down_seconds) == (False, ("ETHUSDT",), 90.0)
    assert h.unconnected_symbols == ("ETHUSDT",)
    (gap,) = h.open_gaps
    assert (gap.symbol, gap.first_id, gap.missing, gap.age_s) == ("BTCUSDT", 100, 10, 400.0)
    assert h.disk_used_fraction == pytest.approx(0.85)


def test_old_format_derives_groups_from_live_connections(path: Path) -> None:
    """An older collector's heartbeat: its live connections are the groups, connected."""
    hb.write(path, hb.old_format(hb.heartbeat()))
    h = collector_health(path, now_ns=NOW_NS)
    assert h.state == "running"
    assert [(g.group, g.symbols, g.connected) for g in h.groups] == [
        (0, ("BTCUSDT", "ETHUSDT"), True), (1, ("SOLUSDT",), True)]  # fmt: skip
    assert h.groups[0].last_message_age_s == pytest.approx(0.5)  # from the symbols' entries
    assert h.groups[0].up_since_ns == NOW_NS - 600 * S
    assert h.disk_used_fraction is None and h.hostname is None and h.process_alive is None


def test_stopped_and_failed(path: Path) -> None:
    hb.write(path, hb.heartbeat(status="stopped", updated_ns=NOW_NS - 3600 * S, exit_code=0))
    h = collector_health(path, now_ns=NOW_NS)
    assert h.state == "stopped" and not h.recording and "stopped cleanly" in h.reason
    hb.write(path, hb.heartbeat(status="failed", error="lake not writable: read-only\nmore",
                                exit_code=74))  # fmt: skip
    h = collector_health(path, now_ns=NOW_NS)
    assert (h.state, h.exit_code, h.error) == ("failed", 74, "lake not writable: read-only")
    assert "exit code 74" in h.reason


def test_stale_when_not_written_for_three_intervals(path: Path) -> None:
    """SIGKILL or a full disk leaves "running" with an old write time: stale."""
    hb.write(path, hb.heartbeat(updated_ns=NOW_NS - 14 * S))
    assert collector_health(path, now_ns=NOW_NS).state == "running"
    hb.write(path, hb.heartbeat(updated_ns=NOW_NS - 16 * S))
    h = collector_health(path, now_ns=NOW_NS)
    assert h.state == "stale" and not h.recording and "16 s old" in h.reason
    hb.write(path, hb.old_format(hb.heartbeat(updated_ns=NOW_NS - 60 * S)))
    assert collector_health(path, now_ns=NOW_NS).state == "stale"


def test_crashed_when_its_process_is_gone_on_this_host(path: Path) -> None:
    """Same host and boot: a dead pid is a crash, even before the heartbeat goes stale."""
    hb.write(path, hb.this_host(hb.heartbeat(pid=dead_pid(), updated_ns=NOW_NS - 2 * S)))
    h = collector_health(path, now_ns=NOW_NS)
    assert (h.state, h.process_alive) == ("crashed", False) and "is gone" in h.reason
    # not checked on request, or from another host, or after a reboot: only staleness counts
    assert collector_health(path, now_ns=NOW_NS, same_host_check=False).state == "running"
    hb.write(path, hb.heartbeat(pid=dead_pid(), updated_ns=NOW_NS - 2 * S))
    assert collector_health(path, now_ns=NOW_NS).state == "running"
    rebooted = {**hb.this_host(hb.heartbeat(pid=dead_pid())), "boot_id": "another-boot"}
    hb.write(path, rebooted)
    assert collector_health(path, now_ns=NOW_NS).process_alive is None


def test_alive_process_on_this_host_is_running_or_stale(path: Path) -> None:
    hb.write(path, hb.this_host(hb.heartbeat(pid=os.getpid(), updated_ns=NOW_NS - 1 * S)))
    h = collector_health(path, now_ns=NOW_NS)
    assert (h.state, h.process_alive) == ("running", True)
    hb.write(path, hb.this_host(hb.heartbeat(pid=os.getpid(), updated_ns=NOW_NS - 60 * S)))
    assert collector_health(path, now_ns=NOW_NS).state == "stale"  # alive but hung


def test_recording_until_ignores_disconnected_entries(path: Path) -> None:
    """recording_until reads the live connections; an entry marked not connected (should a
    collector ever list one) vouches for nothing."""
    data = hb.heartbeat()
    hb.write(path, data)
    assert recording_until(path, "BTCUSDT", now_us=NOW_NS // 1000) is not None
    data["connections"][0]["connected"] = False
    hb.write(path, data)
    assert recording_until(path, "BTCUSDT", now_us=NOW_NS // 1000) is None
    assert recording_until(path, "SOLUSDT", now_us=NOW_NS // 1000) is not None
