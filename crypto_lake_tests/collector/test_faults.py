"""Acceptance 3, 4, 6 and 7 (issue 3): drops, stalls, REST limits and hostile messages."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector_daemon.router import ConnState, Router
from collector_daemon.tracker import IdTracker
from collector_daemon.writer import RawWriter
from crypto_lake.lib.core.paths import LakeLayout
from crypto_lake_tests.collector.conftest import (
    book_ids_in_lake,
    read_lines,
    sealed_parts,
    sessions,
    trade_ids_in_lake,
)

SYMBOLS = ["BTCUSDT", "ETHUSDT"]


def _reconnect_seconds(lake: Path, symbol: str) -> list[float]:
    """From each unplanned disconnect to the next 'subscribed' record, from the raw files."""
    out, down = [], None
    for rec in sessions(lake, symbol):
        if rec["session"] == "disconnect" and rec["reason"] != "collector stopping":
            down = down or rec["recv_ns"]
        elif rec["session"] == "subscribed" and down is not None:
            out.append((rec["recv_ns"] - down) / 1e9)
            down = None
    return out


def _assert_complete(lake: Path, sim, symbols: list[str]) -> None:
    for sym in symbols:
        ids = set(trade_ids_in_lake(lake, sym))
        lo, hi = min(ids), max(ids)
        assert ids == set(range(lo, hi + 1)), f"{sym}: ids not consecutive"
        assert ids == {t["id"] for t in sim.trades(sym) if lo <= t["id"] <= hi}


def _settled(hb: dict) -> bool:
    """No gap open and no hole waiting for REST repair, on every symbol."""
    return hb["gaps"]["open"] == 0 and all(s["pending_holes"] == 0 for s in hb["symbols"].values())


def _drops(n: int, every: float, sim_factory, start_collector) -> None:
    sim = sim_factory(symbols=SYMBOLS, rate_scale=3)
    # two streams per connection: each symbol gets its own connection
    c = start_collector(sim, backoff_base=0.5, backoff_cap=4, max_streams_per_connection=2)
    hb = c.wait_heartbeat(lambda hb: hb["status"] == "running" and len(hb["connections"]) == 2)
    assert sorted(len(x["symbols"]) for x in hb["connections"]) == [1, 1]
    for _ in range(n):
        time.sleep(every)
        sim.faults.drop_connections()
    c.wait_heartbeat(lambda hb: hb["reconnects"] >= 2 * n and len(hb["connections"]) == 2, 30)
    c.wait_heartbeat(_settled, timeout=30)
    sim.pause_market()
    time.sleep(1.0)
    hb = c.heartbeat()
    assert c.terminate()[0] == 0
    waits = sorted(_reconnect_seconds(c.lake, "BTCUSDT"))
    assert len(waits) >= n
    p99 = waits[min(len(waits) - 1, int(0.99 * len(waits)))]
    assert p99 <= 5.0, waits
    assert hb["max_backoff_seconds"] <= 4.0
    assert hb["gaps"]["repaired"] >= 1 and hb["rest"]["trades_repaired"] > 0
    _assert_complete(c.lake, sim, SYMBOLS)
    reasons = {r["reason"] for r in sessions(c.lake, "ETHUSDT") if r["session"] == "disconnect"}
    assert any("no close frame" in r or "closed by server" in r for r in reasons), reasons


def test_connection_dropped_repeatedly(sim_factory, start_collector) -> None:
    """Acceptance 3 (CI): five drops 3 s apart: quick reconnects, every gap repaired."""
    _drops(5, 3.0, sim_factory, start_collector)


@pytest.mark.slow
def test_connection_dropped_every_30s(sim_factory, start_collector) -> None:
    """Acceptance 3 (long): a drop every 30 s for five minutes."""
    _drops(10, 30.0, sim_factory, start_collector)


def test_aggtrade_stream_gaps_repaired_from_agg_trades(sim_factory, start_collector) -> None:
    """@aggTrade mode: aggregate-id gaps are detected and repaired from /api/v3/aggTrades."""
    sim = sim_factory(symbols=SYMBOLS, rate_scale=3)
    c = start_collector(sim, trade_stream="aggTrade")
    c.wait_heartbeat(lambda hb: hb["status"] == "running" and hb["messages_total"] > 20)
    sim.faults.skip_trade_ids("BTCUSDT", 30)
    time.sleep(1.0)
    # Down for a second, so aggregates are surely missed and a reconnect gap opens.
    sim.faults.refuse_connections = True
    sim.faults.drop_connections()
    time.sleep(1.0)
    sim.faults.refuse_connections = False
    c.wait_heartbeat(lambda hb: hb["reconnects"] >= 1 and hb["gaps"]["repaired"] >= 2)
    sim.pause_market()
    time.sleep(1.0)
    # Under load a reconnect hole can still be queued for REST when the count first reaches 2.
    hb = c.wait_heartbeat(_settled, timeout=30)
    assert c.terminate()[0] == 0
    assert hb["rest"]["trades_repaired"] > 0
    for sym in SYMBOLS:
        lines = [r for r in _lines(c.lake, sym) if r.get("stream") == f"{sym.lower()}@aggTrade"]
        ids = [r["data"]["a"] for r in lines]
        assert len(ids) == len(set(ids)) and set(ids) == set(range(min(ids), max(ids) + 1))
        live = {r["data"]["a"] for r in lines if "rest" not in r}
        assert live == sim.sent.agg_ids(sym)
        assert all(r["rest"] == "aggTrades" for r in lines if r["conn"] == "rest")
        assert all(r["data"]["f"] <= r["data"]["l"] for r in lines)  # first/last trade ids kept
    causes = {g["cause"] for g in orjson.loads(c.layout.gaps_path.read_bytes())["gaps"]}
    assert {"in-stream", "reconnect"} <= causes


def test_backoff_capped_while_refused(sim_factory, start_collector) -> None:
    """Refused reconnects back off with full jitter but never longer than the cap."""
    sim = sim_factory(symbols=SYMBOLS)
    c = start_collector(sim, backoff_base=0.2, backoff_cap=1.0)
    c.wait_heartbeat(lambda hb: hb["status"] == "running" and hb["connections"])
    sim.faults.refuse_connections = True
    sim.faults.drop_connections()
    time.sleep(6.0)
    hb = c.heartbeat()
    assert hb["connect_failures"] >= 4 and not hb["connections"]
    sim.faults.refuse_connections = False
    t0 = time.monotonic()
    c.wait_heartbeat(lambda hb: bool(hb["connections"]), timeout=10)
    assert time.monotonic() - t0 <= 1.0 + 1.5  # cap + a heartbeat period and a connect
    hb = c.heartbeat()
    assert 0.5 < hb["max_backoff_seconds"] <= 1.0
    assert c.terminate()[0] == 0


def test_silent_stall_detected(sim_factory, start_collector) -> None:
    """Acceptance 4: a stalled connection (no data, no pings) is replaced within the timeout."""
    sim = sim_factory(symbols=SYMBOLS, rate_scale=2)
    timeout = 2.0
    c = start_collector(sim, silence_timeout=timeout, backoff_base=0.2)
    c.wait_heartbeat(lambda hb: hb["status"] == "running" and hb["messages_total"] > 20)
    stalled_at = time.time_ns()
    sim.faults.stall_connections(30)
    hb = c.wait_heartbeat(lambda hb: hb["reconnects"] >= 1 and hb["connections"], timeout=15)
    assert c.terminate()[0] == 0
    recs = sessions(c.lake, "BTCUSDT")
    (silent,) = [r for r in recs if r["session"] == "disconnect" and "silent" in r["reason"]]
    back = next(
        r for r in recs if r["session"] == "subscribed" and r["recv_ns"] > silent["recv_ns"]
    )
    assert (silent["recv_ns"] - stalled_at) / 1e9 <= timeout + 0.5
    assert (back["recv_ns"] - stalled_at) / 1e9 <= timeout + 0.2 + 1.5
    assert hb["gaps"]["open"] == 0 or hb["rest"]["requests"] > 0


def _rest_get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_rest_429_then_418(sim_factory, start_collector) -> None:
    """Acceptance 6: Retry-After honoured on 429; repair stops on 418, the gap stays open."""
    sim = sim_factory(symbols=SYMBOLS, rate_scale=3)
    c = start_collector(sim)
    c.wait_heartbeat(lambda hb: hb["status"] == "running" and hb["messages_total"] > 20)
    # 429 with Retry-After: 3 -> the repair waits, then succeeds.
    sim.faults.rest_429(1, retry_after_s=3)
    sim.faults.skip_trade_ids("BTCUSDT", 5)
    hb = c.wait_heartbeat(lambda hb: hb["gaps"]["repaired"] >= 1, timeout=20)
    assert hb["rest"]["http_429"] == 1 and hb["rest"]["last_retry_after"] == 3
    gaps = orjson.loads(c.layout.gaps_path.read_bytes())["gaps"]
    (gap,) = [g for g in gaps if g["symbol"] == "BTCUSDT"]
    assert (gap["closed_ns"] - gap["detected_ns"]) / 1e9 >= 3.0  # waited Retry-After
    assert gap["repaired"] == 5 and gap["cause"] == "in-stream"

    # Someone else on this IP ignores a 429 ban -> the IP gets 418; our repair must stop.
    sim.faults.rest_418_after_ignored = 2
    sim.faults.ban_418_s = 120
    sim.faults.rest_429(1, retry_after_s=60)
    statuses = [_rest_get(f"{sim.rest_url}/api/v3/ping") for _ in range(3)]
    assert statuses == [429, 429, 418]
    sim.faults.skip_trade_ids("ETHUSDT", 7)
    hb = c.wait_heartbeat(lambda hb: hb["rest"]["http_418"] == 1, timeout=20)
    requests = hb["rest"]["requests"]
    time.sleep(3.0)
    hb = c.heartbeat()
    assert hb["rest"]["requests"] == requests  # stopped, no hammering during the ban
    assert hb["rest"]["banned_until"] > time.time() + 60
    (open_gap,) = hb["gaps"]["open_list"]
    assert open_gap["symbol"] == "ETHUSDT" and open_gap["missing"] == 7
    assert "418" in open_gap["note"] and hb["gaps"]["open"] == 1
    assert c.terminate()[0] == 0
    saved = orjson.loads(c.layout.gaps_path.read_bytes())["gaps"]
    assert [g["status"] for g in saved if g["symbol"] == "ETHUSDT"] == ["open"]


def test_simulator_noise_is_quarantined_and_deduplicated(sim_factory, start_collector) -> None:
    """Acceptance 7 (loopback): malformed, duplicated and reordered frames from the wire."""
    sim = sim_factory(symbols=SYMBOLS, rate_scale=3)
    sim.faults.malformed_prob = 0.05
    sim.faults.duplicate_prob = 0.05
    sim.faults.reorder_prob = 0.05
    c = start_collector(sim, reorder_grace=1.0)
    c.wait_heartbeat(lambda hb: hb["messages_total"] > 1000, timeout=30)
    sim.pause_market()
    time.sleep(1.5)
    hb = c.heartbeat()
    assert c.terminate()[0] == 0
    assert hb["quarantined"] > 0 and hb["duplicates_dropped"] > 0
    assert hb["gaps"]["open"] == 0 and hb["rest"]["requests"] == 0  # reorders are no gaps
    for sym in SYMBOLS:
        ids = trade_ids_in_lake(c.lake, sym)
        assert len(ids) == len(set(ids)) and set(ids) == sim.sent.trade_ids(sym)
        assert set(book_ids_in_lake(c.lake, sym)) == sim.sent.update_ids(sym)
    quarantine = [p for p in sealed_parts(c.lake) if "_quarantine" in p.parts]
    assert sum(len(read_lines(p)) for p in quarantine) == hb["quarantined"]


# fuzzing -------------------------------------------------------------------------------------
_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False),
    st.text(max_size=12),
)
_json = st.recursive(
    _scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=12,
)
_streams = st.one_of(
    st.sampled_from(
        [
            "btcusdt@trade",
            "btcusdt@bookTicker",
            "ethusdt@trade",
            "../../etc@trade",
            "btcusdt@trade/../../x",
            "BTCUSDT@trade",
            "btcusdt@depth",
            "",
            "@",
            "/tmp/x@trade",
        ]
    ),
    st.text(max_size=30),
)
_payload = st.dictionaries(
    st.sampled_from(["e", "E", "s", "t", "p", "q", "T", "m", "u", "b", "a", "B", "A"]),
    _scalar,
    max_size=9,
)
_hostile = st.one_of(
    st.binary(max_size=200),
    _json.map(orjson.dumps),
    st.builds(lambda s, d: orjson.dumps({"stream": s, "data": d}), _streams, _payload),
    st.builds(lambda s, d: orjson.dumps({"stream": s, "data": d}), _streams, _json),
    st.builds(lambda n: _good(n, 0)[: n % 60], st.integers(0, 10**6)),  # truncated frames
)


def _good(i: int, kind: int) -> bytes:
    if kind == 0:
        data = {
            "e": "trade",
            "E": 1_700_000_000_000_000 + i,
            "s": "BTCUSDT",
            "t": 10**12 + i,
            "p": "1.0",
            "q": "2.0",
            "T": 1,
            "m": True,
            "M": True,
        }
        return orjson.dumps({"stream": "btcusdt@trade", "data": data})
    data = {"u": 10**12 + i, "s": "BTCUSDT", "b": "1", "B": "1", "a": "2", "A": "1"}
    return orjson.dumps({"stream": "btcusdt@bookTicker", "data": data})


@settings(
    max_examples=120, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(st.lists(_hostile, min_size=1, max_size=25))
def test_fuzzed_messages_never_crash_and_stay_in_the_lake(hostile: list[bytes]) -> None:
    """Acceptance 7: hostile frames between good ones: quarantined or kept, never a crash."""
    with tempfile.TemporaryDirectory() as tmp:
        lake = Path(tmp) / "lake"
        writer = RawWriter(LakeLayout(lake))
        router = Router(
            writer, trade_stream="trade", time_unit="us", trackers={"BTCUSDT": IdTracker()}
        )
        conn = ConnState("ws-f", ["BTCUSDT"], router.streams_for(["BTCUSDT"]))
        for i, bad in enumerate(hostile):
            router.on_message(conn, _good(i, 0))
            router.on_message(conn, bad)
            router.on_message(conn, _good(i, 1))
        asyncio.run(writer.close())
        st_ = router.stats
        assert (
            st_.messages + st_.quarantined + st_.duplicates + st_.shutdown_notices
            == len(hostile) * 3
        )
        ids = [
            r["data"].get("t")
            for r in _lines(lake, "BTCUSDT")
            if r.get("stream") == "btcusdt@trade"
        ]
        assert {10**12 + i for i in range(len(hostile))} <= set(ids)
        books = [
            r["data"]["u"]
            for r in _lines(lake, "BTCUSDT")
            if r.get("stream") == "btcusdt@bookTicker"
        ]
        assert {10**12 + i for i in range(len(hostile))} <= set(books)
        quarantined = [
            r for p in sealed_parts(lake) if "_quarantine" in p.parts for r in read_lines(p)
        ]
        assert len(quarantined) == st_.quarantined
        assert all("reason" in r and ("raw" in r or "raw_b64" in r) for r in quarantined)
        for dirpath, _dirs, files in os.walk(tmp):  # nothing outside the lake
            assert not files or Path(dirpath).is_relative_to(lake), (dirpath, files)


def _lines(lake: Path, symbol: str) -> list[dict]:
    return [r for p in sealed_parts(lake) if p.parent.parent.name == symbol for r in read_lines(p)]


@pytest.mark.slow
def test_repair_paced_by_used_weight(sim_factory, start_collector) -> None:
    """Repair requests stop when the reported weight would exceed the budget, until the
    next minute (budget 60 = two historicalTrades pages of weight 25 per minute)."""
    sim = sim_factory(symbols=["BTCUSDT"], rate_scale=10)
    c = start_collector(sim, rest_weight_budget=60)
    c.wait_heartbeat(lambda hb: hb["status"] == "running" and hb["messages_total"] > 20)
    while not 2 <= time.time() % 60 <= 25:  # leave room before the minute rolls over
        time.sleep(0.5)
    minute = int(time.time() // 60)
    sim.faults.skip_trade_ids("BTCUSDT", 2500)  # three pages of 1000
    hb = c.wait_heartbeat(lambda hb: hb["rest"]["requests"] >= 2, timeout=30)
    if int(time.time() // 60) == minute:
        time.sleep(max(0.0, 58 - time.time() % 60))
        hb = c.heartbeat()
        assert hb["rest"]["requests"] == 2 and hb["gaps"]["open"] == 1
        assert hb["rest"]["used_weight"] == 50 and hb["rest"]["http_429"] == 0
    hb = c.wait_heartbeat(lambda hb: hb["gaps"]["open"] == 0, timeout=90)
    assert hb["rest"]["requests"] == 3 and hb["rest"]["http_429"] == 0
    assert c.terminate()[0] == 0
    _assert_complete(c.lake, sim, ["BTCUSDT"])
