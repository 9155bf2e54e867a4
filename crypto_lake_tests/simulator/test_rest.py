"""REST answers come from the same ground truth as the streams."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import aiohttp

from crypto_lake.simulator import SimConfig
from crypto_lake_tests.simulator.helpers import (
    aio,
    collect,
    data_of,
    drain,
    get_json,
    running,
    sim_client,
    stream_url,
)

E8 = Decimal("0.00000001")


def klines_from_trades(trades: list[dict], interval_ms: int, last_open: int) -> list[list]:
    """Binance-style klines computed independently with Decimal from streamed @trade payloads.

    Every interval from the first trade's to ``last_open`` is present; empty ones repeat the
    previous close with zero volume and zero trades.
    """
    buckets: dict[int, list[dict]] = {}
    for t in trades:
        buckets.setdefault(t["T"] - t["T"] % interval_ms, []).append(t)
    first = min(buckets)
    rows, close = [], None
    for open_ms in range(first, last_open + 1, interval_ms):
        group = buckets.get(open_ms, [])
        if group:
            prices = [Decimal(t["p"]) for t in group]
            o, h, low, close = prices[0], max(prices), min(prices), prices[-1]
        else:
            o = h = low = close
        vol = sum((Decimal(t["q"]) for t in group), Decimal(0))
        quote = sum((Decimal(t["p"]) * Decimal(t["q"]) for t in group), Decimal(0))
        buys = [t for t in group if not t["m"]]  # buyer was the taker
        tb = sum((Decimal(t["q"]) for t in buys), Decimal(0))
        tbq = sum((Decimal(t["p"]) * Decimal(t["q"]) for t in buys), Decimal(0))
        rows.append(
            [open_ms, o, h, low, close, vol, open_ms + interval_ms - 1, quote, len(group), tb, tbq]
        )
    return rows


def as_decimal(row: list) -> list:
    return [Decimal(x) if isinstance(x, str) else x for x in row[:11]]


@aio
async def test_rest_klines_equal_klines_rebuilt_from_streamed_trades() -> None:
    cfg = SimConfig(symbols=["BTCUSDT", "ETHUSDT"], rate_scale=4)
    async with running(cfg, paused=True) as sim, aiohttp.ClientSession() as session:
        url = stream_url(sim, ["btcusdt@trade", "ethusdt@trade"])
        # Connect while the market is closed, so the client sees every trade ever made.
        frames, ws = await collect(session, url, 3.0, on_open=sim.resume_market)
        sim.pause_market()
        frames += await drain(ws)  # the last published frames reach the client
        await ws.close()
        for symbol in ("BTCUSDT", "ETHUSDT"):
            trades = [t for t in data_of(frames, "trade") if t["s"] == symbol]
            ids = [t["t"] for t in trades]
            truth = sim.trades(symbol)
            assert ids == [t["id"] for t in truth]  # the stream saw every trade, in order
            for interval, ms in (("1s", 1000), ("1m", 60_000)):
                rest = await get_json(
                    session,
                    f"{sim.rest_url}/api/v3/klines",
                    params={"symbol": symbol, "interval": interval, "limit": "1000"},
                )
                assert all(len(row) == 12 and row[11] == "0" for row in rest)
                assert all(isinstance(row[1], str) and isinstance(row[8], int) for row in rest)
                mine = klines_from_trades(trades, ms, rest[-1][0])
                assert [as_decimal(r) for r in rest] == mine, (symbol, interval)
            assert len(mine) >= 1 and sum(r[8] for r in mine) == len(trades)


@aio
async def test_klines_time_window_and_limit() -> None:
    async with running(SimConfig(symbols=["BTCUSDT"], rate_scale=4)) as sim:
        await asyncio.sleep(2.5)
        async with aiohttp.ClientSession() as session:
            url = f"{sim.rest_url}/api/v3/klines"
            rows = await get_json(session, url, params={"symbol": "BTCUSDT", "interval": "1s"})
            assert len(rows) >= 2
            opens = [r[0] for r in rows]
            assert opens == list(range(opens[0], opens[-1] + 1, 1000))
            second = await get_json(
                session,
                url,
                params={"symbol": "BTCUSDT", "interval": "1s", "startTime": str(opens[1]),
                        "limit": "1"},
            )  # fmt: skip
            assert second == [rows[1]]
            upto = await get_json(
                session,
                url,
                params={"symbol": "BTCUSDT", "interval": "1s", "endTime": str(opens[0])},
            )
            assert upto == [rows[0]]


@aio
async def test_agg_and_historical_trades_match_ground_truth() -> None:
    async with running(SimConfig(symbols=["BTCUSDT"], rate_scale=4)) as sim:
        await asyncio.sleep(1.5)
        sim.pause_market()
        truth = sim.trades("BTCUSDT")
        first = truth[0]["id"]
        async with aiohttp.ClientSession() as session:
            base = f"{sim.rest_url}/api/v3"
            hist = await get_json(
                session,
                f"{base}/historicalTrades",
                params={"symbol": "BTCUSDT", "fromId": str(first + 3), "limit": "5"},
            )
            assert [h["id"] for h in hist] == list(range(first + 3, first + 8))
            for h, t in zip(hist, truth[3:8], strict=True):
                assert list(h) == ["id", "price", "qty", "quoteQty", "time", "isBuyerMaker",
                                   "isBestMatch"]  # fmt: skip
                assert (h["price"], h["qty"], h["time"], h["isBuyerMaker"]) == (
                    t["price"], t["qty"], t["time_ms"], t["is_buyer_maker"]
                )  # fmt: skip
                assert Decimal(h["quoteQty"]) == Decimal(h["price"]) * Decimal(h["qty"])
            first_agg = truth[0]["agg_id"]
            aggs = await get_json(
                session,
                f"{base}/aggTrades",
                params={"symbol": "BTCUSDT", "fromId": str(first_agg), "limit": "1000"},
            )
            assert [a["a"] for a in aggs] == list(range(first_agg, first_agg + len(aggs)))
            assert aggs[0]["f"] == first and aggs[-1]["l"] == truth[-1]["id"]
            for a in aggs:
                members = [t for t in truth if t["agg_id"] == a["a"]]
                assert [t["id"] for t in members] == list(range(a["f"], a["l"] + 1))
                assert Decimal(a["q"]) == sum(Decimal(t["qty"]) for t in members)
            by_time = await get_json(
                session,
                f"{base}/aggTrades",
                params={"symbol": "BTCUSDT", "startTime": str(aggs[2]["T"]),
                        "endTime": str(aggs[2]["T"])},
            )  # fmt: skip
            assert aggs[2] in by_time and all(a["T"] == aggs[2]["T"] for a in by_time)
            recent = await get_json(session, f"{base}/trades", params={"symbol": "BTCUSDT",
                                                                        "limit": "3"})  # fmt: skip
            assert [r["id"] for r in recent] == [t["id"] for t in truth[-3:]]


@aio
async def test_exchange_info_ping_time_and_errors() -> None:
    async with sim_client(SimConfig(symbols=["BTCUSDT", "EURUSDT"])) as (sim, session):
        base = f"{sim.rest_url}/api/v3"
        assert await get_json(session, f"{base}/ping") == {}
        info = await get_json(session, f"{base}/exchangeInfo")
        syms = {s["symbol"]: s for s in info["symbols"]}
        assert set(syms) == {"BTCUSDT", "EURUSDT"}
        filters = {f["filterType"]: f for f in syms["BTCUSDT"]["filters"]}
        assert filters["PRICE_FILTER"]["tickSize"] == "0.01000000"
        assert filters["LOT_SIZE"]["stepSize"] == "0.00001000"
        for params, code in (
            ({"symbol": "../etc", "interval": "1s"}, -1121),
            ({"symbol": "DOGEUSDT", "interval": "1s"}, -1121),
            ({"symbol": "BTCUSDT", "interval": "7s"}, -1120),
            ({"symbol": "BTCUSDT"}, -1102),
            ({"symbol": "BTCUSDT", "interval": "1s", "limit": "5000"}, -1130),
            ({"symbol": "BTCUSDT", "interval": "1s", "startTime": "abc"}, -1100),
        ):
            async with session.get(f"{base}/klines", params=params) as resp:
                assert resp.status == 400
                assert (await resp.json())["code"] == code
