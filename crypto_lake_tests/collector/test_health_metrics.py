"""Issue 18, item 2 (collector side): truthful health signals.

A real collector process on the loopback simulator, its /metrics scraped over HTTP and parsed
with prometheus_client's own parser, and its heartbeat file read as any reader would:
per-group ``connected`` goes to 0 within seconds of the exchange refusing connections (and
``up`` with it: "recording", not merely "process alive"), back to 1 when it accepts them again;
a clean stop says "stopped" with exit code 0; a SIGKILL leaves "running" with a pid that is
gone on this host and boot, which is how a reader calls it crashed.
"""

from __future__ import annotations

import os
import signal
import socket
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from crypto_lake_tests.collector.conftest import CollectorProc, free_port

SYMBOLS = ["BTCUSDT", "ETHUSDT"]


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics as {(name, sorted labels): value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=")
        text = resp.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def wait_metrics(
    port: int, pred: Callable[[dict], bool], c: CollectorProc, timeout: float = 15.0
) -> tuple[dict, float]:
    """Scrape until ``pred`` holds; (samples, seconds it took)."""
    t0 = time.monotonic()
    samples: dict = {}
    while time.monotonic() - t0 < timeout:
        try:
            samples = scrape(port)
        except OSError:
            samples = {}
        if samples and pred(samples):
            return samples, time.monotonic() - t0
        time.sleep(0.1)
    raise AssertionError(f"metrics condition not met; last={samples}\n{c.tail_log()}")


def connected(samples: dict) -> dict[str, float]:
    """{symbols label: connected value} of every group."""
    return {
        dict(labels)["symbols"]: v
        for (name, labels), v in samples.items()
        if name == "crypto_lake_collector_connected"
    }


def group_ages(samples: dict) -> dict[tuple[str, str], float]:
    """{(group, symbols): seconds since the group's newest message}."""
    return {
        (dict(labels)["group"], dict(labels)["symbols"]): v
        for (name, labels), v in samples.items()
        if name == "crypto_lake_collector_group_last_message_age_seconds"
    }


def g(samples: dict, name: str) -> float | None:
    return samples.get((f"crypto_lake_collector_{name}", ()))


def test_connected_per_group_follows_the_exchange(sim_factory, start_collector) -> None:
    """Refused from the start: every group 0 and down since the process start; accepted: 1;
    then dropped and refused again: 0 within a few seconds, while ``running`` stays 1."""
    sim = sim_factory(symbols=SYMBOLS, rate_scale=3)
    sim.faults.refuse_connections = True
    port = free_port()
    t_start = time.time_ns()
    # two streams per connection: one group per symbol
    c = start_collector(sim, metrics_port=port, max_streams_per_connection=2,
                        backoff_base=0.2, backoff_cap=1.0)  # fmt: skip
    samples, _ = wait_metrics(port, lambda s: g(s, "running") == 1.0, c)
    assert connected(samples) == {"BTCUSDT": 0.0, "ETHUSDT": 0.0}
    assert g(samples, "up") == 0.0 and g(samples, "connected_groups") == 0.0
    assert g(samples, "groups") == 2.0
    hb = c.wait_heartbeat(lambda hb: hb["status"] == "running")
    assert [x["group"] for x in hb["groups"]] == [0, 1] and hb["connections"] == []
    for grp in hb["groups"]:
        assert grp["connected"] is False and grp["up_since_ns"] is None
        assert t_start <= grp["down_since_ns"] <= hb["updated_ns"]  # the process start
        assert grp["last_message_ns"] is None

    sim.faults.refuse_connections = False
    samples, _ = wait_metrics(port, lambda s: g(s, "connected_groups") == 2.0, c)
    assert connected(samples) == {"BTCUSDT": 1.0, "ETHUSDT": 1.0}
    assert g(samples, "up") == 1.0
    samples, _ = wait_metrics(port, lambda s: len(group_ages(s)) == 2, c)
    assert set(group_ages(samples)) == {("0", "BTCUSDT"), ("1", "ETHUSDT")}
    hb = c.wait_heartbeat(lambda hb: all(x["last_message_ns"] for x in hb["groups"]))
    assert all(x["connected"] and x["up_since_ns"] and x["down_since_ns"] is None
               for x in hb["groups"])  # fmt: skip
    assert len(hb["connections"]) == 2

    # The exchange drops everyone and refuses new connections (an outage).
    sim.faults.refuse_connections = True
    sim.faults.drop_connections()
    t_drop = time.time_ns()
    samples, took = wait_metrics(port, lambda s: g(s, "connected_groups") == 0.0, c)
    assert took < 3.0, took
    assert connected(samples) == {"BTCUSDT": 0.0, "ETHUSDT": 0.0}
    assert g(samples, "up") == 0.0 and g(samples, "running") == 1.0
    time.sleep(1.5)
    samples = scrape(port)
    downs = [v for (n, _), v in samples.items() if n.endswith("group_down_seconds")]
    assert len(downs) == 2 and all(v >= 1.0 for v in downs), downs
    ages = group_ages(samples)
    assert len(ages) == 2 and all(v >= 1.0 for v in ages.values()), ages
    hb = c.wait_heartbeat(lambda hb: not any(x["connected"] for x in hb["groups"]))
    assert hb["connections"] == [] and hb["status"] == "running"
    assert all(t_drop - 2e9 <= x["down_since_ns"] <= hb["updated_ns"] for x in hb["groups"])

    sim.faults.refuse_connections = False
    wait_metrics(port, lambda s: g(s, "up") == 1.0 and g(s, "connected_groups") == 2.0, c)
    rc, _ = c.terminate()
    assert rc == 0, c.tail_log()
    hb = c.heartbeat()
    assert hb["status"] == "stopped" and hb["exit_code"] == 0 and hb["error"] is None


def test_heartbeat_tells_running_stopped_and_crashed(sim_factory, start_collector) -> None:
    """The contract's new fields: hostname, boot_id and pid identify the process, so a
    heartbeat still saying "running" after a SIGKILL is recognisably a dead process's."""
    sim = sim_factory(symbols=SYMBOLS[:1], rate_scale=3)
    c = start_collector(sim)
    hb = c.wait_heartbeat(lambda hb: hb["status"] == "running" and hb["messages_total"] > 5)
    assert hb["hostname"] == socket.gethostname()
    assert hb["boot_id"] == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert hb["disk_total_bytes"] >= hb["disk_free_bytes"] > 0
    assert hb["exit_code"] is None
    assert hb["groups"][0]["symbols"] == SYMBOLS[:1] and hb["groups"][0]["connected"]
    c.proc.send_signal(signal.SIGKILL)
    c.wait(10)
    time.sleep(1.2)  # a couple of heartbeat intervals (0.5 s)
    hb = c.heartbeat()
    assert hb["status"] == "running" and hb["pid"] == c.pid
    assert time.time_ns() - hb["updated_ns"] > 2 * hb["heartbeat_seconds"] * 1e9  # stale
    try:  # the same host and boot, and the pid is gone: crashed, not merely slow
        os.kill(hb["pid"], 0)
        alive = True
    except ProcessLookupError:
        alive = False
    assert not alive
