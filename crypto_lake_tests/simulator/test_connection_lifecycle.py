"""Binance connection semantics: ping/pong, the forced disconnect, the serverShutdown notice."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import orjson

from crypto_lake.simulator import SimConfig
from crypto_lake_tests.simulator.helpers import aio, sim_client, stream_url
from crypto_lake_tests.simulator.test_faults import receive_for

TRADES = ["btcusdt@trade"]


@aio
async def test_answered_pings_keep_the_connection() -> None:
    cfg = SimConfig(symbols=["BTCUSDT"], ping_interval_s=0.1, ping_timeout_s=0.3)
    async with sim_client(cfg) as (sim, session):
        ws = await session.ws_connect(stream_url(sim, TRADES), autoping=False)
        pings = 0
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            msg = await ws.receive(timeout=1.0)
            if msg.type == aiohttp.WSMsgType.PING:
                pings += 1
                await ws.pong(msg.data)  # Binance expects the payload echoed
            assert msg.type in (aiohttp.WSMsgType.PING, aiohttp.WSMsgType.TEXT), msg
        assert pings >= 5 and not ws.closed
        assert len(sim.connections) == 1
        await ws.close()


@aio
async def test_unanswered_pings_drop_the_connection() -> None:
    cfg = SimConfig(symbols=["BTCUSDT"], ping_interval_s=0.1, ping_timeout_s=0.4)
    async with sim_client(cfg) as (sim, session):
        ws = await session.ws_connect(stream_url(sim, TRADES), autoping=False)
        opened = time.monotonic()
        msgs = await receive_for(ws, 3.0)
        ended = msgs[-1][0] - opened
        assert any(m.type == aiohttp.WSMsgType.PING for _, m in msgs)
        assert msgs[-1][1].type == aiohttp.WSMsgType.CLOSED
        assert 0.4 <= ended <= 1.5, ended
        await asyncio.sleep(0.05)
        assert sim.connections == {}


@aio
async def test_unsolicited_pongs_do_not_keep_the_connection() -> None:
    cfg = SimConfig(symbols=["BTCUSDT"], ping_interval_s=0.1, ping_timeout_s=0.4)
    async with sim_client(cfg) as (sim, session):
        ws = await session.ws_connect(stream_url(sim, TRADES), autoping=False)
        opened = time.monotonic()
        closed_at = None
        while time.monotonic() - opened < 3.0:
            await ws.pong(b"")  # allowed by Binance, but not an answer to its pings
            try:
                msg = await ws.receive(timeout=0.05)
            except TimeoutError:
                continue
            if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                closed_at = time.monotonic() - opened
                break
        assert closed_at is not None and closed_at <= 1.5


@aio
async def test_forced_disconnect_after_max_age() -> None:
    cfg = SimConfig(symbols=["BTCUSDT"], max_connection_age_s=1.0)
    async with sim_client(cfg) as (sim, session):
        ws = await session.ws_connect(stream_url(sim, TRADES))
        opened = time.monotonic()
        msgs = await receive_for(ws, 3.0)
        closes = [(t, m) for t, m in msgs if m.type == aiohttp.WSMsgType.CLOSE]
        assert closes and 0.9 <= closes[0][0] - opened <= 1.6
        assert ws.close_code == 1000
        texts = [orjson.loads(m.data) for _, m in msgs if m.type == aiohttp.WSMsgType.TEXT]
        assert all("stream" in t for t in texts)  # no notice unless asked for


@aio
async def test_server_shutdown_notice_precedes_the_disconnect() -> None:
    cfg = SimConfig(
        symbols=["BTCUSDT"],
        max_connection_age_s=1.5,
        server_shutdown_notice=True,
        shutdown_notice_lead_s=0.5,
    )
    async with sim_client(cfg) as (sim, session):
        ws = await session.ws_connect(stream_url(sim, TRADES))
        opened = time.monotonic()
        msgs = await receive_for(ws, 3.0)
        notices = [
            (t, orjson.loads(m.data))
            for t, m in msgs
            if m.type == aiohttp.WSMsgType.TEXT and b"serverShutdown" in m.data.encode()
        ]
        close_t = next(t for t, m in msgs if m.type == aiohttp.WSMsgType.CLOSE)
        assert len(notices) == 1
        t_notice, notice = notices[0]
        assert list(notice) == ["e", "E"] and notice["e"] == "serverShutdown"
        assert isinstance(notice["E"], int) and 10**12 < notice["E"] < 10**13
        assert 0.8 <= t_notice - opened <= 1.3 and close_t - t_notice >= 0.3
