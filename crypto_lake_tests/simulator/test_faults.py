"""Every fault knob does what it says."""

from __future__ import annotations

import asyncio
import itertools
import time

import aiohttp
import orjson
import pytest

from crypto_lake.lib.core.symbols import InvalidNameError
from crypto_lake.simulator import SimConfig
from crypto_lake_tests.simulator.helpers import (
    aio,
    collect,
    data_of,
    drain,
    get_json,
    sim_client,
    stream_url,
)

BTC = SimConfig(symbols=["BTCUSDT"], rate_scale=4)
TRADES = ["btcusdt@trade"]


async def receive_for(ws: aiohttp.ClientWebSocketResponse, seconds: float) -> list:
    """(arrival time, message) pairs, including control messages, for ``seconds``."""
    out = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            msg = await ws.receive(timeout=left)
        except TimeoutError:
            break
        out.append((time.monotonic(), msg))
        if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
            break
    return out


@aio
async def test_drop_connections_closes_abruptly() -> None:
    async with sim_client(BTC) as (sim, session):
        ws = await session.ws_connect(stream_url(sim, TRADES))
        first = await receive_for(ws, 0.5)
        assert len(sim.connections) == 1
        sim.faults.drop_connections()
        msgs = await receive_for(ws, 2.0)
        assert msgs and msgs[-1][1].type == aiohttp.WSMsgType.CLOSED
        assert not any(m.type == aiohttp.WSMsgType.CLOSE for _, m in msgs)  # no close frame
        assert ws.close_code in (None, 1006)
        await asyncio.sleep(0.1)
        assert sim.connections == {}
        # SentLog never claims a frame the client could not have read
        got = {orjson.loads(m.data)["data"]["t"] for _, m in first + msgs if m.type == 1}
        assert got and sim.sent.trade_ids("BTCUSDT") <= got


@aio
async def test_stall_goes_silent_then_resumes_and_loses_the_stalled_messages() -> None:
    cfg = SimConfig(symbols=["BTCUSDT"], rate_scale=4, ping_interval_s=0.1, ping_timeout_s=5)
    async with sim_client(cfg) as (sim, session):
        ws = await session.ws_connect(stream_url(sim, TRADES), autoping=False)
        await asyncio.sleep(0.3)
        sim.faults.stall_connections(1.0)
        stalled_at = time.monotonic()
        msgs = await receive_for(ws, 2.0)
        during = [m for t, m in msgs if stalled_at + 0.05 < t < stalled_at + 0.95]
        after = [m for t, m in msgs if t > stalled_at + 1.05]
        assert during == []  # neither data nor pings while stalled
        assert any(m.type == aiohttp.WSMsgType.TEXT for m in after)
        assert any(m.type == aiohttp.WSMsgType.PING for m in after)
        await ws.close()
        ids = sorted(orjson.loads(m.data)["data"]["t"] for _, m in msgs if m.type == 1)
        truth = [t["id"] for t in sim.trades("BTCUSDT")]
        lost = set(range(ids[0], ids[-1] + 1)) - set(ids)
        assert lost and lost <= set(truth)  # trades during the stall never reached the client
        assert not (lost & sim.sent.trade_ids("BTCUSDT"))  # and SentLog knows it


@aio
async def test_skip_trade_ids_leaves_a_gap_that_rest_fills() -> None:
    streams = ["btcusdt@trade", "btcusdt@aggTrade"]
    async with sim_client(BTC) as (sim, session):
        frames, ws = await collect(session, stream_url(sim, streams), 0.5)
        sim.faults.skip_trade_ids("BTCUSDT", 7)
        await asyncio.sleep(1.5)
        sim.pause_market()
        frames += await drain(ws)
        await ws.close()
        ids = [d["t"] for d in data_of(frames, "trade")]
        gaps = [(a, b) for a, b in itertools.pairwise(ids) if b != a + 1]
        assert len(gaps) == 1 and gaps[0][1] - gaps[0][0] - 1 == 7
        missing = list(range(gaps[0][0] + 1, gaps[0][1]))
        assert not set(missing) & sim.sent.trade_ids("BTCUSDT")
        assert set(missing) <= {t["id"] for t in sim.trades("BTCUSDT")}
        rest = await get_json(
            session,
            f"{sim.rest_url}/api/v3/historicalTrades",
            params={"symbol": "BTCUSDT", "fromId": str(missing[0]), "limit": "7"},
        )
        assert [r["id"] for r in rest] == missing
        # aggregates holding a skipped trade are withheld too, so the agg id gap is visible
        aggs = data_of(frames, "aggTrade")
        covered = {i for a in aggs for i in range(a["f"], a["l"] + 1)}
        assert not covered & set(missing)
    with pytest.raises(InvalidNameError):
        sim.faults.skip_trade_ids("btc/../usdt", 1)


@aio
async def test_duplicates_reorders_and_malformed_frames() -> None:
    async with sim_client(BTC) as (sim, session):
        sim.faults.duplicate_prob = 0.3
        sim.faults.reorder_prob = 0.3
        sim.faults.malformed_prob = 0.2
        frames, ws = await collect(session, stream_url(sim, TRADES), 2.0)
        sim.pause_market()
        frames += await drain(ws)
        await ws.close()
    good, bad = [], 0
    for f in frames:
        try:
            good.append(orjson.loads(f)["data"]["t"])
        except orjson.JSONDecodeError:
            bad += 1
    assert bad > 0 and bad == sim.sent.malformed
    assert len(good) > len(set(good))  # duplicates
    assert any(b < a for a, b in itertools.pairwise(good))  # out of order
    unique = sorted(set(good))
    assert unique == list(range(unique[0], unique[-1] + 1))  # nothing lost despite the faults
    assert sim.sent.trade_ids("BTCUSDT") == set(good)
    assert sim.sent.count() == len(good)


@aio
async def test_refused_connections_get_503_then_recover() -> None:
    async with sim_client(BTC) as (sim, session):
        sim.faults.refuse_connections = True
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await session.ws_connect(stream_url(sim, TRADES))
        assert err.value.status == 503
        sim.faults.refuse_connections = False
        frames, ws = await collect(session, stream_url(sim, TRADES), 0.5)
        await ws.close()
        assert frames


async def _status(session: aiohttp.ClientSession, url: str) -> tuple[int, dict]:
    async with session.get(url) as resp:
        await resp.read()
        return resp.status, dict(resp.headers)


@aio
async def test_rest_429_with_retry_after_then_recovers() -> None:
    async with sim_client(BTC) as (sim, session):
        url = f"{sim.rest_url}/api/v3/ping"
        sim.faults.rest_429(2, retry_after_s=1)
        status, headers = await _status(session, url)
        assert status == 429 and headers["Retry-After"] == "1"
        assert (await _status(session, url))[0] == 429  # still banned: not honouring Retry-After
        await asyncio.sleep(1.05)
        assert (await _status(session, url))[0] == 429  # the second forced 429
        await asyncio.sleep(1.05)
        status, headers = await _status(session, url)
        assert status == 200 and int(headers["X-MBX-USED-WEIGHT-1M"]) >= 1


@aio
async def test_ignoring_429_escalates_to_418() -> None:
    async with sim_client(BTC) as (sim, session):
        url = f"{sim.rest_url}/api/v3/time"
        sim.faults.rest_418_after_ignored = 2
        sim.faults.ban_418_s = 1.0
        sim.faults.rest_429(1, retry_after_s=5)
        assert (await _status(session, url))[0] == 429
        assert (await _status(session, url))[0] == 429  # ignored once
        status, headers = await _status(session, url)  # ignored twice -> banned
        assert status == 418 and int(headers["Retry-After"]) >= 1
        assert (await _status(session, url))[0] == 418
        await asyncio.sleep(1.1)
        # the 418 ban is over but the 429 window (5 s) is not: still refused, not yet served
        assert (await _status(session, url))[0] in (418, 429)


@aio
async def test_request_weight_budget() -> None:
    cfg = SimConfig(symbols=["BTCUSDT"], rest_weight_limit=60)
    async with sim_client(cfg) as (sim, session):
        url = f"{sim.rest_url}/api/v3/historicalTrades?symbol=BTCUSDT&limit=1"
        to_next_minute = 60 - time.time() % 60
        if to_next_minute < 2:  # weight windows are calendar minutes: do not straddle one
            await asyncio.sleep(to_next_minute + 0.05)
        s1, h1 = await _status(session, url)
        s2, h2 = await _status(session, url)
        s3, h3 = await _status(session, url)
        assert (s1, s2, s3) == (200, 200, 429)
        assert (h1["X-MBX-USED-WEIGHT-1M"], h2["X-MBX-USED-WEIGHT-1M"]) == ("25", "50")
        assert 1 <= int(h3["Retry-After"]) <= 60
        s4, _ = await _status(session, f"{sim.rest_url}/api/v3/klines?symbol=BTCUSDT&interval=1s")
        assert s4 == 429  # banned until the window resets
