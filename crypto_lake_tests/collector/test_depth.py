"""Issue 20, item 1: the collector records the order book (diff depth stream + snapshots).

First the pure parts: the per-symbol sequence and snapshot bookkeeping (depth.py), the router
on depth messages, the configuration and the Prometheus families. Then a real collector on
the loopback simulator's book: events and a start snapshot, a gap snapshot after dropped
events, verification snapshots, a stale snapshot fetched again, a 429 honoured.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import orjson
import pytest

from collector_daemon.app import Collector
from collector_daemon.depth import DepthTracker, Event
from collector_daemon.health import prometheus_text
from collector_daemon.rest import RestClient
from collector_daemon.router import ConnState, Router
from collector_daemon.snapshots import DepthSnapshotter, snapshot_update_id
from collector_daemon.tracker import IdTracker
from collector_daemon.writer import RawWriter
from crypto_lake.lib.core.config import Config, ConfigError, load_config
from crypto_lake.lib.core.paths import LakeLayout
from crypto_lake_tests.collector.conftest import read_lines, sealed_parts


# the sequence and the snapshots it asks for ------------------------------------------------------
def test_first_event_asks_for_a_start_snapshot_and_in_sequence_events_for_none() -> None:
    t = DepthTracker()
    assert not t.in_sequence and t.take() is None
    assert t.accept(100, 105) is Event.NEXT
    req = t.take()
    assert (req.reason, req.need) == ("start", 99)  # lastUpdateId >= U - 1
    assert t.take() is None  # one in flight at a time
    assert t.accept(106, 110) is Event.NEXT and t.accept(111, 111) is Event.NEXT
    assert t.wanted is None and t.events == 3 and t.gaps == 0
    assert not t.answered(120) and t.fetched == 1 and t.in_sequence


def test_a_break_is_a_gap_with_its_own_snapshot_and_duplicates_are_dropped() -> None:
    t = DepthTracker()
    t.accept(1, 10)
    t.answered(t.take() and 12)
    assert t.accept(11, 20) is Event.NEXT
    assert t.accept(11, 20) is Event.DUPLICATE  # the overlap of two connections
    assert t.accept(31, 40) is Event.GAP and t.gap_after == 20
    assert t.gaps == 1 and t.wanted == "gap" and t.need == 30
    assert t.accept(21, 30) is Event.LATE  # reordered, never seen: kept, no second gap
    assert t.accept(21, 30) is Event.DUPLICATE
    assert t.accept(41, 45) is Event.NEXT
    assert (t.events, t.duplicates, t.late, t.gaps) == (5, 2, 1, 1)
    assert t.take().reason == "gap"


def test_a_reconnect_asks_for_a_reconnect_snapshot_at_the_next_event() -> None:
    t = DepthTracker()
    t.accept(1, 10)
    t.answered(t.take() and 10)
    t.reconnected()
    assert not t.in_sequence and not t.want_verify()
    assert t.accept(5, 10) is Event.DUPLICATE  # still seen before: no restart yet
    assert t.accept(50, 60) is Event.GAP  # events were lost meanwhile: counted too
    assert t.wanted == "reconnect" and t.need == 49 and t.gaps == 1
    t.answered(t.take() and 70)
    t.reconnected()
    assert t.accept(61, 62) is Event.NEXT and t.wanted == "reconnect"  # even without loss


def test_requests_coalesce_and_a_stale_snapshot_is_fetched_again() -> None:
    t = DepthTracker()
    t.accept(100, 110)
    start = t.take()
    t.accept(111, 120)
    t.accept(131, 140)  # a gap while the start snapshot is under way
    t.accept(141, 150)
    t.accept(161, 170)  # and another: one fetch afterwards covers both
    assert t.wanted == "gap" and t.need == 160 and t.take() is None
    assert t.answered(90) and t.stale == 1  # below start's U - 1 = 99: stale
    again = t.take()
    assert (again.reason, again.need) == ("gap", 160)  # merged with what came meanwhile
    assert not t.answered(165) and t.wanted is None
    assert t.fetched_by_reason == {"start": 1, "gap": 1} and start.need == 99

    # a snapshot under way covers a later request if it reaches far enough
    t.want_verify()
    t.take()
    t.accept(180, 190)  # gap during a verify: a verify never stands in for a resync
    assert not t.answered(500) and t.wanted == "gap"
    t.take()
    t.accept(191, 200)
    t.want("gap", 195)
    assert not t.answered(500) and t.wanted is None  # a resync covering the next gap
    t.want_verify()
    t.take()
    t.failed_fetch()
    assert t.failed == 1 and t.wanted == "verify" and t.take().need == 200


def test_verification_only_while_in_sequence() -> None:
    t = DepthTracker()
    assert not t.want_verify()
    t.accept(1, 5)
    assert not t.want_verify()  # the start snapshot is wanted
    t.answered(t.take() and 5)
    assert t.want_verify() and t.take().need == 5  # lastUpdateId >= the newest u
    assert not t.want_verify()  # one at a time


def test_snapshot_answers_must_be_objects_with_an_id_and_two_sides() -> None:
    assert snapshot_update_id(b'{"lastUpdateId":7,"bids":[],"asks":[["1.0","2.0"]]}') == 7
    for bad in (b"[]", b"not json", b'{"lastUpdateId":"7","bids":[],"asks":[]}',
                b'{"lastUpdateId":7.0,"bids":[],"asks":[]}', b'{"lastUpdateId":true,"bids":[],'
                b'"asks":[]}', b'{"lastUpdateId":7,"bids":{},"asks":[]}',
                b'{"lastUpdateId":7,"bids":[]}', b"null"):  # fmt: skip
        assert snapshot_update_id(bad) is None, bad


# the snapshot fetcher and the shared REST client ------------------------------------------------
def test_depth_requests_stay_within_their_share_of_the_weight_budget() -> None:
    async def scenario() -> tuple[bool, bool, int]:
        client = RestClient(rest_url="http://127.0.0.1:9", time_unit="us", budget_per_minute=100)
        while time.time() % 60 > 58:  # the minute must not roll over during the test
            await asyncio.sleep(0.5)
        await client._reserve(50, "depth", 50)
        second_depth = asyncio.ensure_future(client._reserve(50, "depth", 50))
        await asyncio.sleep(0.2)
        blocked = not second_depth.done()  # over the depth share: waits for the next minute
        second_depth.cancel()
        await asyncio.wait_for(client._reserve(25, "repair", None), 0.2)  # the rest is free
        third = asyncio.ensure_future(client._reserve(30, "repair", None))
        await asyncio.sleep(0.2)
        over_budget = not third.done()
        third.cancel()
        return blocked, over_budget, client.stats.used_weight

    assert asyncio.run(scenario()) == (True, True, 75)


def test_failed_and_malformed_snapshots_are_retried_and_quarantined(tmp_path: Path) -> None:
    """A real loopback server answers: not JSON, then HTTP 500, then a snapshot."""
    from aiohttp import web

    answers = [(200, b"not json"), (500, b"{}"), (200, b'{"lastUpdateId":42,"bids":[],"asks":[]}')]
    seen: list[dict] = []

    async def depth(request: web.Request) -> web.Response:
        seen.append({**request.query, "unit": request.headers.get("X-MBX-TIME-UNIT")})
        status, body = answers[min(len(seen), len(answers)) - 1]
        return web.Response(status=status, body=body, content_type="application/json")

    async def scenario() -> DepthTracker:
        app = web.Application()
        app.router.add_get("/api/v3/depth", depth)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        client = RestClient(rest_url=f"http://127.0.0.1:{port}", time_unit="us",
                            budget_per_minute=3000)  # fmt: skip
        tracker = DepthTracker()
        router = Router(writer, trade_stream="trade", time_unit="us",
                        trackers={"BTCUSDT": IdTracker()}, depth={"BTCUSDT": tracker})  # fmt: skip
        snaps = DepthSnapshotter(client=client, writer=writer, router=router,
                                 trackers={"BTCUSDT": tracker}, stream="depth@100ms", limit=500,
                                 verify_seconds=0, weight_cap=1500)  # fmt: skip
        task = asyncio.ensure_future(snaps.run())
        tracker.accept(40, 43)
        snaps.wake("BTCUSDT")
        for _ in range(100):
            await asyncio.sleep(0.05)
            if tracker.fetched:
                break
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()
        await runner.cleanup()
        await writer.close()
        return tracker

    writer = RawWriter(LakeLayout(tmp_path / "lake"))
    tracker = asyncio.run(scenario())
    assert (tracker.fetched, tracker.failed, tracker.last_snapshot_id) == (1, 2, 42)
    assert seen == [{"symbol": "BTCUSDT", "limit": "500", "unit": "MICROSECOND"}] * 3
    lines = [r for p in sealed_parts(tmp_path / "lake") for r in read_lines(p)]
    (quarantined,) = [r for r in lines if "raw" in r]
    assert quarantined["raw"] == "not json" and "lastUpdateId" in quarantined["reason"]
    (snap,) = [r for r in lines if r.get("rest") == "depth"]
    assert snap["data"] == {"lastUpdateId": 42, "bids": [], "asks": []}
    assert (snap["stream"], snap["reason"], snap["limit"]) == ("btcusdt@depth@100ms", "start", 500)


# the router -------------------------------------------------------------------------------------
def _depth_msg(first: int, last: int, *, e: str = "depthUpdate", sym: str = "btcusdt") -> bytes:
    data = {"e": e, "E": 1_700_000_000_000_000, "s": sym.upper(), "U": first, "u": last,
            "b": [["60000.00000000", "1.00000000"]], "a": []}  # fmt: skip
    return orjson.dumps({"stream": f"{sym}@depth@100ms", "data": data})


def test_router_writes_depth_events_verbatim_and_quarantines_malformed(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    writer = RawWriter(LakeLayout(lake))
    asked: list[str] = []
    depth = {"BTCUSDT": DepthTracker()}
    router = Router(writer, trade_stream="trade", time_unit="us",
                    trackers={"BTCUSDT": IdTracker(), "ETHUSDT": IdTracker()}, depth=depth,
                    on_depth_snapshot=asked.append)  # fmt: skip
    streams = router.streams_for(["BTCUSDT", "ETHUSDT"])
    assert sorted(streams) == ["btcusdt@bookTicker", "btcusdt@depth@100ms", "btcusdt@trade",
                               "ethusdt@bookTicker", "ethusdt@trade"]  # fmt: skip
    conn = ConnState("ws-1", ["BTCUSDT", "ETHUSDT"], streams)
    good = [_depth_msg(1, 3), _depth_msg(4, 9), _depth_msg(20, 25)]
    for msg in (good[0], good[1], good[1], good[2]):
        router.on_message(conn, msg)
    malformed = [
        _depth_msg(5, 4),  # U > u
        _depth_msg(1, 2, e="trade"),
        orjson.dumps({"stream": "btcusdt@depth@100ms", "data": {"e": "depthUpdate", "U": 1}}),
        _depth_msg(30, 31).replace(b'"U":30', b'"U":"30"'),
        _depth_msg(30, 31).replace(b'"a":[]', b'"a":{}'),
        _depth_msg(30, 31, sym="ethusdt"),  # a stream this connection never subscribed to
    ]
    for msg in malformed:
        router.on_message(conn, msg)
    router.mark_reconnect(["BTCUSDT"])
    router.on_message(conn, _depth_msg(26, 27))
    asyncio.run(writer.close())
    st = router.stats
    assert (st.messages, st.duplicates, st.quarantined) == (4, 1, len(malformed))
    # nothing fetches here: the gap and the reconnect merge into the start request
    assert asked == ["BTCUSDT"]
    t = depth["BTCUSDT"]
    assert (t.events, t.gaps, t.wanted, t.need) == (4, 1, "start", 25)
    lines = [r for p in sealed_parts(lake) if "_quarantine" not in p.parts for r in read_lines(p)]
    written = [r for r in lines if r.get("stream") == "btcusdt@depth@100ms"]
    assert [orjson.dumps({"stream": r["stream"], "data": r["data"]}) for r in written] == [
        *good, _depth_msg(26, 27)]  # fmt: skip
    assert all(r["unit"] == "us" and r["conn"] == "ws-1" for r in written)
    quarantined = [r for p in sealed_parts(lake) if "_quarantine" in p.parts
                   for r in read_lines(p)]  # fmt: skip
    assert len(quarantined) == len(malformed)


def test_no_depth_symbols_leave_the_streams_unchanged(tmp_path: Path) -> None:
    router = Router(RawWriter(LakeLayout(tmp_path)), trade_stream="aggTrade", time_unit="ms",
                    trackers={"BTCUSDT": IdTracker()})  # fmt: skip
    assert list(router.streams_for(["BTCUSDT"])) == ["btcusdt@aggTrade", "btcusdt@bookTicker"]


# configuration ----------------------------------------------------------------------------------
def _cfg(tmp_path: Path, **env: str) -> Config:
    environ = {"CRYPTO_LAKE_CONFIG": "/dev/null", "LAKE_ROOT": str(tmp_path / "lake")}
    return load_config(environ={**environ, **{f"CRYPTO_LAKE__{k}": v for k, v in env.items()}})


def test_depth_config_defaults_and_validation(tmp_path: Path) -> None:
    d = _cfg(tmp_path).collector.depth
    assert (d.symbols, d.update_speed_ms, d.snapshot_limit) == ([], 100, 1000)
    assert (d.verify_interval_minutes, d.snapshot_weight_share) == (10.0, 0.5)
    d = _cfg(tmp_path, SYMBOLS="[BTCUSDT, ETHUSDT]", COLLECTOR__DEPTH__SYMBOLS="[ETHUSDT]",
             COLLECTOR__DEPTH__UPDATE_SPEED_MS="1000").collector.depth  # fmt: skip
    assert d.symbols == ["ETHUSDT"] and d.update_speed_ms == 1000
    bad = [
        ({"SYMBOLS": "[BTCUSDT]", "COLLECTOR__DEPTH__SYMBOLS": "[BTCUSDT, ETHUSDT]"},
         "collector.depth.symbols: entries [1] are not among the configured symbols"),
        ({"COLLECTOR__DEPTH__SYMBOLS": "[btcusdt]"}, "collector.depth.symbols"),
        ({"COLLECTOR__DEPTH__SYMBOLS": "[BTCUSDT, BTCUSDT]"}, "listed twice"),
        ({"COLLECTOR__DEPTH__UPDATE_SPEED_MS": "250"}, "collector.depth.update_speed_ms"),
        ({"COLLECTOR__DEPTH__SNAPSHOT_LIMIT": "5001"}, "collector.depth.snapshot_limit"),
        ({"COLLECTOR__DEPTH__SYMBOLS": "[BTCUSDT]", "COLLECTOR__DEPTH__SNAPSHOT_LIMIT": "5000",
          "COLLECTOR__REST_WEIGHT_BUDGET_PER_MINUTE": "400"}, "at least one depth snapshot"),
        ({"COLLECTOR__DEPTH__SYMBOLS": "[BTCUSDT]",
          "BINANCE__MAX_STREAMS_PER_CONNECTION": "2"}, "at least 3"),
    ]  # fmt: skip
    for env, message in bad:
        with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
            _cfg(tmp_path, **env)


def test_connections_hold_at_most_the_stream_limit(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, SYMBOLS="[BTCUSDT, ETHUSDT, SOLUSDT, BNBUSDT]",
               COLLECTOR__DEPTH__SYMBOLS="[BTCUSDT, SOLUSDT]",
               BINANCE__MAX_STREAMS_PER_CONNECTION="5")  # fmt: skip
    c = Collector(cfg)
    c._build_groups()
    assert [g.symbols for g in c.groups] == [["BTCUSDT", "ETHUSDT"], ["SOLUSDT", "BNBUSDT"]]
    assert [len(g.streams) for g in c.groups] == [5, 5]
    assert "btcusdt@depth@100ms" in c.groups[0].url and "solusdt@depth@100ms" in c.groups[1].url
    plain = Collector(_cfg(tmp_path, SYMBOLS="[BTCUSDT, ETHUSDT, SOLUSDT]",
                           BINANCE__MAX_STREAMS_PER_CONNECTION="4"))  # fmt: skip
    plain._build_groups()
    assert [g.symbols for g in plain.groups] == [["BTCUSDT", "ETHUSDT"], ["SOLUSDT"]]
    assert plain.snapshots is None and "depth" not in plain.groups[0].url


def test_depth_metrics_per_symbol() -> None:
    t = DepthTracker()
    t.accept(1, 5)
    t.answered(t.take() and 9)
    t.accept(6, 7)
    t.accept(9, 12)
    text = prometheus_text({"status": "running", "depth": {"BTCUSDT": t.summary()}})
    assert 'crypto_lake_collector_depth_events_total{symbol="BTCUSDT"} 3.0' in text
    assert 'crypto_lake_collector_depth_gaps_total{symbol="BTCUSDT"} 1.0' in text
    assert (
        'crypto_lake_collector_depth_snapshots_total{reason="start",symbol="BTCUSDT"} 1.0' in text
    )
    assert 'crypto_lake_collector_depth_snapshot_failures_total{symbol="BTCUSDT"} 0.0' in text
    assert 'crypto_lake_collector_depth_snapshots_stale_total{symbol="BTCUSDT"} 0.0' in text
    assert "depth" not in prometheus_text({"status": "running", "depth": {}})


# a real collector on the simulator's order book -------------------------------------------------
SYMBOLS = ["BTCUSDT", "ETHUSDT"]  # the book for BTCUSDT only
RESYNC = ("start", "reconnect", "gap")


def _depth_records(lake: Path, symbol: str) -> tuple[list[dict], list[dict]]:
    """(diff events, snapshots) of ``symbol`` in the sealed files, in file order."""
    events, snaps = [], []
    for p in sealed_parts(lake):
        if p.parent.parent.name != symbol:
            continue
        for r in read_lines(p):
            if r.get("rest") == "depth":
                snaps.append(r)
            elif str(r.get("stream", "")).endswith("@depth@100ms"):
                events.append(r)
    return events, snaps


def _assert_every_break_is_covered(lake: Path, symbol: str) -> list[tuple[dict, list[dict]]]:
    """Walk the file as a book reader would: after the first event and every break of the
    sequence, a resync snapshot reaching U - 1 follows. Returns each break's event with the
    snapshots written between it and the covering one (that one included)."""
    lines = [r for p in sealed_parts(lake) if p.parent.parent.name == symbol
             for r in read_lines(p)]  # fmt: skip
    breaks: list[tuple[dict, list[dict]]] = []
    prev_u, need = None, None
    for r in lines:
        if r.get("rest") == "depth":
            snap_id = r["data"]["lastUpdateId"]
            assert r["limit"] == 1000 and r["unit"] == "us" and r["conn"] == "rest"
            if need is not None:
                breaks[-1][1].append(r)
                if r["reason"] in RESYNC and snap_id >= need:
                    need = None
        elif r.get("stream") == f"{symbol.lower()}@depth@100ms":
            first, last = r["data"]["U"], r["data"]["u"]
            newer = prev_u is None or last > prev_u  # a late event opens no break
            if newer and (prev_u is None or first != prev_u + 1):
                if need is None:
                    breaks.append((r, []))
                need = first - 1
            prev_u = last if prev_u is None else max(prev_u, last)
    assert need is None, "a break without a covering snapshot"
    return breaks


def _stop_and_check(c, sim) -> dict:
    sim.pause_market()  # nothing more is sent: "sent" is final
    time.sleep(0.7)
    rc, _ = c.terminate()
    assert rc == 0, c.tail_log()
    events, _ = _depth_records(c.lake, "BTCUSDT")
    got = [r["data"]["u"] for r in events]
    assert len(got) == len(set(got)), "duplicate diff events"
    assert set(got) == sim.sent.depth_update_ids("BTCUSDT"), "diff events missing"
    assert _depth_records(c.lake, "ETHUSDT") == ([], [])
    return c.heartbeat()


def _depth(hb: dict) -> dict:
    return hb["depth"]["BTCUSDT"]


def _rebuilt_book_equals_the_simulators(lake: Path, sim, *, breaks: int) -> None:
    """The lake's raw files through the book reconstruction (``crypto_lake.lib.book``): every
    reliable second's top 20 levels equal the simulator's true book at the row's update id, the
    verification snapshots agree, bookTickers agree, and each break left unreliable rows or
    was resynced within its second."""
    from crypto_lake.lib.book.fast import reconstruct_day
    from crypto_lake.lib.book.lines import decimal_units
    from crypto_lake.lib.book.model import (
        LEVELS,
        R_ASK_PX,
        R_ASK_QTY,
        R_BID_PX,
        R_BID_QTY,
        R_STATE,
        R_UPDATE_ID,
        RELIABLE,
    )

    truth = sim.order_book("BTCUSDT")
    files = [p for p in sealed_parts(lake) if p.parent.parent.name == "BTCUSDT"]
    compared = 0
    for day in sorted({p.parent.name for p in files}):
        book = reconstruct_day(files, "BTCUSDT", day)
        assert book.checks.crossed == 0 and book.checks.tickers_mismatched == 0
        assert book.checks.tickers_compared > 0
        assert not any(s.mismatched_levels for s in book.snapshots)
        assert book.checks.breaks_gap + book.checks.breaks_malformed == breaks
        for i in map(int, (book.rows[R_STATE] == RELIABLE).nonzero()[0]):
            # the row holds the book after the last diff event of its second (by event time)
            view = truth.at_update(int(book.rows[R_UPDATE_ID, i]), LEVELS)
            for k in range(LEVELS):
                bid = view.bids[k] if k < len(view.bids) else ("0", "0")
                ask = view.asks[k] if k < len(view.asks) else ("0", "0")
                got = [int(book.rows[r + k, i]) for r in (R_BID_PX, R_BID_QTY, R_ASK_PX, R_ASK_QTY)]
                assert got == [decimal_units(x, "level") for x in (*bid, *ask)], (day, i, k)
            compared += 1
    assert compared >= 1  # a few seconds of recording: the lib's fuzz tests cover whole days


def test_events_start_verify_and_reconnect_snapshots(sim_factory, start_collector) -> None:
    sim = sim_factory(symbols=SYMBOLS, depth_symbols=["BTCUSDT"])
    c = start_collector(sim, depth_symbols="BTCUSDT", depth_verify_minutes=0.03)  # 1.8 s
    hb = c.wait_heartbeat(lambda hb: _depth(hb)["snapshots_by_reason"].get("verify", 0) >= 2)
    d = _depth(hb)
    assert d["snapshots_by_reason"]["start"] == 1 and d["events"] > 20 and d["gaps"] == 0
    assert list(hb["depth"]) == ["BTCUSDT"] and hb["rest"]["requests"] == d["snapshots"]
    sim.faults.drop_connections()
    hb = c.wait_heartbeat(lambda hb: _depth(hb)["snapshots_by_reason"].get("reconnect") == 1)
    assert hb["reconnects"] >= 1
    hb = _stop_and_check(c, sim)
    assert _depth(hb)["snapshots_failed"] == 0 and hb["quarantined"] == 0
    breaks = _assert_every_break_is_covered(c.lake, "BTCUSDT")
    reasons = [snaps[-1]["reason"] for _, snaps in breaks]
    # the reconnect breaks the sequence when diff events went out while it was down
    assert reasons in (["start"], ["start", "reconnect"]), reasons
    _, snaps = _depth_records(c.lake, "BTCUSDT")
    # one every 1.8 s after the previous snapshot while the stream is in sequence
    apart = [(b["recv_ns"] - a["recv_ns"]) / 1e9 for a, b in itertools.pairwise(snaps)
             if b["reason"] == "verify"]  # fmt: skip
    assert len(apart) >= 2 and all(1.7 <= x <= 4.0 for x in apart), apart
    _rebuilt_book_equals_the_simulators(c.lake, sim, breaks=len(breaks) - 1)


def test_gap_stale_snapshot_and_429(sim_factory, start_collector) -> None:
    sim = sim_factory(symbols=SYMBOLS, depth_symbols=["BTCUSDT"])
    c = start_collector(sim, depth_symbols="BTCUSDT")
    c.wait_heartbeat(lambda hb: _depth(hb)["snapshots"] == 1 and _depth(hb)["events"] > 5)
    # dropped events: a gap, logged, with its own snapshot
    sim.faults.depth_drop("BTCUSDT", 3)
    c.wait_heartbeat(lambda hb: _depth(hb)["snapshots_by_reason"].get("gap") == 1)
    assert "BTCUSDT depth gap" in c.log.read_text()
    # a stale answer (older than the event after the gap): written, counted, fetched again
    sim.faults.depth_stale_snapshot("BTCUSDT", 1)
    sim.faults.depth_drop("BTCUSDT", 1)
    hb = c.wait_heartbeat(lambda hb: _depth(hb)["snapshots_by_reason"].get("gap") == 3)
    assert _depth(hb)["snapshots_stale"] == 1 and _depth(hb)["gaps"] == 2
    # reordered delivery: both events kept, the early one opens a gap (a snapshot follows)
    sim.faults.depth_reorder("BTCUSDT")
    hb = c.wait_heartbeat(lambda hb: _depth(hb)["late"] == 1 and _depth(hb)["snapshots"] == 5)
    # a 429 on the depth request: Retry-After waited out, then the snapshot
    sim.faults.rest_429(1, retry_after_s=2)
    sim.faults.depth_drop("BTCUSDT", 1)
    hb = c.wait_heartbeat(lambda hb: _depth(hb)["snapshots"] == 6)
    assert hb["rest"]["http_429"] == 1 and hb["rest"]["last_retry_after"] == 2
    assert hb["rest"]["http_418"] == 0
    time.sleep(1.5)  # a synced second or two after the last resync, for the rebuilt book
    hb = _stop_and_check(c, sim)
    d = _depth(hb)
    assert (d["gaps"], d["late"], d["snapshots_failed"], d["duplicates"]) == (4, 1, 0, 0)
    assert d["snapshots_by_reason"] == {"start": 1, "gap": 5}
    breaks = _assert_every_break_is_covered(c.lake, "BTCUSDT")
    assert [len(snaps) for _, snaps in breaks] == [1, 1, 2, 1, 1]  # the stale one, then its refetch
    stale, fresh = breaks[2][1]
    event = breaks[2][0]
    assert stale["data"]["lastUpdateId"] < event["data"]["U"] - 1 <= fresh["data"]["lastUpdateId"]
    event, (snap,) = breaks[4]
    assert (snap["recv_ns"] - event["recv_ns"]) / 1e9 >= 1.9  # waited Retry-After: 2
    _rebuilt_book_equals_the_simulators(c.lake, sim, breaks=len(breaks) - 1)
