"""Simulated messages have exactly the field names, order and JSON types of real Binance ones."""

from __future__ import annotations

import re

import orjson

from crypto_lake.simulator import SimConfig
from crypto_lake_tests.simulator.helpers import (
    SAMPLE_COPY,
    aio,
    collect,
    data_of,
    parse_frames,
    sim_client,
    stream_url,
)

# FACTS.md: the @trade payload since 2024 (order ids b/a removed); not in the 2021 sample.
TRADE_SHAPE = [
    ("e", str), ("E", int), ("s", str), ("t", int), ("p", str), ("q", str),
    ("T", int), ("m", bool), ("M", bool),
]  # fmt: skip
DECIMAL_8 = re.compile(r"^\d+\.\d{8}$")


def _shape(obj: dict) -> list[tuple[str, type]]:
    return [(k, type(v)) for k, v in obj.items()]


def real_shapes() -> dict[str, list[tuple[str, type]]]:
    """Field names and JSON types per stream kind, parsed from the recorded Binance sample."""
    shapes: dict[str, list[tuple[str, type]]] = {}
    lines = SAMPLE_COPY.read_text().splitlines()[1:]  # first line is the subscribed URL
    for line in filter(str.strip, lines):
        _, _, text = line.partition(": ")
        msg = orjson.loads(text)
        assert list(msg) == ["stream", "data"]
        kind = msg["stream"].split("@", 1)[1]
        shape = _shape(msg["data"])
        assert shapes.setdefault(kind, shape) == shape, f"sample itself is inconsistent: {kind}"
    return shapes


def test_sample_has_the_expected_streams() -> None:
    shapes = real_shapes()
    assert {"aggTrade", "bookTicker"} <= set(shapes)
    assert "E" not in dict(shapes["bookTicker"])  # bookTicker carries no event time


@aio
async def test_every_stream_matches_the_real_wire_format() -> None:
    real = real_shapes()
    streams = ["btcusdt@trade", "btcusdt@aggTrade", "btcusdt@bookTicker", "ethusdt@aggTrade"]
    async with sim_client(SimConfig(symbols=["BTCUSDT", "ETHUSDT"], rate_scale=3)) as (
        sim,
        session,
    ):
        frames, ws = await collect(session, stream_url(sim, streams), 1.5)
        await ws.close()
    for msg in parse_frames(frames):
        assert list(msg) == ["stream", "data"]
        assert msg["stream"] in streams
    trades, aggs, books = (data_of(frames, k) for k in ("trade", "aggTrade", "bookTicker"))
    assert len(trades) > 10 and len(aggs) > 5 and len(books) > 10
    for d in trades:
        assert _shape(d) == TRADE_SHAPE
        assert d["e"] == "trade" and d["s"] == "BTCUSDT"
    for d in aggs:
        assert _shape(d) == real["aggTrade"]
        assert d["l"] - d["f"] + 1 >= 1
    for d in books:
        assert _shape(d) == real["bookTicker"]
        assert float(d["b"]) < float(d["a"])
    for d in trades + aggs:
        assert DECIMAL_8.match(d["p"]) and DECIMAL_8.match(d["q"])
        assert 10**12 < d["T"] < 10**13 and d["E"] >= d["T"]  # milliseconds
    for d in books:
        assert all(DECIMAL_8.match(d[k]) for k in "bBaA")


@aio
async def test_microsecond_time_unit_switches_every_time_field() -> None:
    streams = ["btcusdt@trade", "btcusdt@aggTrade", "btcusdt@bookTicker"]
    async with sim_client(SimConfig(symbols=["BTCUSDT"], rate_scale=3)) as (sim, session):
        frames, ws = await collect(session, stream_url(sim, streams, micro=True), 1.0)
        await ws.close()
        # REST honours the header version of the same switch.
        async with session.get(
            f"{sim.rest_url}/api/v3/time", headers={"X-MBX-TIME-UNIT": "MICROSECOND"}
        ) as resp:
            assert 10**15 < (await resp.json())["serverTime"] < 10**16
    trades = data_of(frames, "trade") + data_of(frames, "aggTrade")
    assert trades
    for d in trades:
        assert 10**15 < d["T"] < 10**16 and 10**15 < d["E"] < 10**16
    assert all("E" not in d for d in data_of(frames, "bookTicker"))
