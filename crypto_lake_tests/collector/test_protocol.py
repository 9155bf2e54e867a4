"""Binance wire-protocol details of the collector: ping/pong, time unit, no Dagster import."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from crypto_lake_tests.collector.conftest import REPO, sessions, symbol_lines

US_THRESHOLD = 10**14  # µs epoch times are ~1.7e15, ms ones ~1.7e12


def test_pongs_keep_the_connection(sim_factory, start_collector) -> None:
    """The simulator cuts a connection that leaves a ping unanswered for ``ping_timeout_s``.

    With a ping every 0.5 s and a 1 s pong timeout, 6 s without a reconnect means every ping
    was answered (a silent client would be cut after ~1.5 s).
    """
    interval, timeout = 0.5, 1.0
    sim = sim_factory(symbols=["BTCUSDT"], ping_interval_s=interval, ping_timeout_s=timeout)
    c = start_collector(sim)
    c.wait_heartbeat(lambda hb: hb["status"] == "running" and hb["connections"])
    time.sleep(6.0)
    hb = c.heartbeat()
    assert hb["reconnects"] == 0 and hb["connect_failures"] == 0, hb
    assert hb["connections"][0]["age_seconds"] > 4 * (interval + timeout)
    assert sim.connections_total == 1 and len(sim.connections) == 1
    rc, _ = c.terminate()
    assert rc == 0, c.tail_log()
    reasons = [s.get("reason") for s in sessions(c.lake, "BTCUSDT") if s["session"] == "disconnect"]
    assert reasons in ([], ["collector stopping"]), reasons  # only the stop closes it


@pytest.mark.parametrize(("flag", "unit"), [(None, "us"), ("ms", "ms")])
def test_time_unit_of_market_lines(flag, unit, sim_factory, start_collector) -> None:
    """Default: ``timeUnit=MICROSECOND``, lines say "us" and trade times are µs-sized."""
    symbols = ["BTCUSDT", "ETHUSDT"]
    sim = sim_factory(symbols=symbols, rate_scale=3)
    c = start_collector(sim, time_unit=flag, rotate_seconds=1)
    c.wait_heartbeat(lambda hb: hb["messages_total"] > 300)
    rc, _ = c.terminate()
    assert rc == 0, c.tail_log()
    for sym in symbols:
        lines = symbol_lines(c.lake, sym)
        urls = [r["url"] for r in lines if r.get("session") == "connect"]
        assert urls and all(("timeUnit=MICROSECOND" in u) == (unit == "us") for u in urls)
        market = [r for r in lines if "stream" in r]
        trades = [r["data"] for r in market if r["stream"].endswith("@trade")]
        assert trades and len(trades) < len(market)  # bookTicker lines too
        assert {r["unit"] for r in market} == {unit}
        for t in trades:
            for key in ("T", "E"):
                assert (t[key] > US_THRESHOLD) == (unit == "us"), (sym, key, t[key])
                assert t[key] > 10**12  # a real epoch time either way


def test_collector_daemon_imports_no_dagster() -> None:
    """The collector runs without Dagster installed: none of its modules imports it."""
    code = (
        "import importlib, pkgutil, sys, collector_daemon\n"
        "names = [m.name for m in pkgutil.iter_modules(collector_daemon.__path__)]\n"
        "for name in names:\n"
        "    if name != '__main__':\n"  # importing __main__ would run the daemon
        "        importlib.import_module('collector_daemon.' + name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0].startswith('dagster'))\n"
        "assert not bad, bad\n"
        "print(len(names))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) >= 14  # every module was found (app, cli, connection, ...)
