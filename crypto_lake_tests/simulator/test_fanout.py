"""One market shared by every connection, as on Binance."""

from __future__ import annotations

import asyncio

from crypto_lake.simulator import SimConfig
from crypto_lake_tests.simulator.helpers import aio, data_of, drain, sim_client, stream_url


@aio
async def test_two_connections_see_the_same_trades() -> None:
    cfg = SimConfig(symbols=["BTCUSDT", "ETHUSDT"], rate_scale=4)
    async with sim_client(cfg, paused=True) as (sim, session):
        a = await session.ws_connect(stream_url(sim, ["btcusdt@trade", "ethusdt@trade"]))
        b = await session.ws_connect(stream_url(sim, ["btcusdt@trade"], micro=True))
        sim.resume_market()
        await asyncio.sleep(1.5)
        sim.pause_market()
        frames_a, frames_b = await asyncio.gather(drain(a), drain(b))
        await a.close()
        await b.close()
        btc_a = [d for d in data_of(frames_a, "trade") if d["s"] == "BTCUSDT"]
        btc_b = data_of(frames_b, "trade")
        assert [d["t"] for d in btc_a] == [d["t"] for d in btc_b] != []
        # same trades, each in the unit its connection asked for
        for x, y in zip(btc_a, btc_b, strict=True):
            assert (x["p"], x["q"], x["m"]) == (y["p"], y["q"], y["m"])
            assert y["T"] // 1000 == x["T"]
        assert {d["s"] for d in data_of(frames_a, "trade")} == {"BTCUSDT", "ETHUSDT"}
        assert sim.sent.trade_ids("BTCUSDT") == {d["t"] for d in btc_a}
