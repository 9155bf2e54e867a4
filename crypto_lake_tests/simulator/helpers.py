"""Shared helpers for simulator tests: run async bodies, connect real loopback clients."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from crypto_lake.simulator import ExchangeSimulator, SimConfig

SAMPLE_COPY = Path(__file__).parent / "data" / "binance_ws_sample_2021-10-12.txt"


def aio(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
    """Run an ``async def`` test body on a fresh event loop (no pytest-asyncio needed)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return asyncio.run(fn(*args, **kwargs))

    return wrapper


@asynccontextmanager
async def running(cfg: SimConfig, *, paused: bool = False) -> AsyncIterator[ExchangeSimulator]:
    sim = ExchangeSimulator(cfg)
    if paused:
        sim.pause_market()
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


_ENDED = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)


@asynccontextmanager
async def sim_client(
    cfg: SimConfig, *, paused: bool = False
) -> AsyncIterator[tuple[ExchangeSimulator, aiohttp.ClientSession]]:
    """A running simulator and an HTTP/WebSocket client session."""
    async with running(cfg, paused=paused) as sim, aiohttp.ClientSession() as session:
        yield sim, session


def stream_url(sim: ExchangeSimulator, streams: list[str], micro: bool = False) -> str:
    url = f"{sim.ws_url}/stream?streams={'/'.join(streams)}"
    return url + "&timeUnit=MICROSECOND" if micro else url


async def collect(
    session: aiohttp.ClientSession,
    url: str,
    seconds: float,
    *,
    on_open: Callable[[], Any] | None = None,
    **ws_kwargs: Any,
) -> tuple[list[str], aiohttp.ClientWebSocketResponse]:
    """Every text frame received on ``url`` for ``seconds`` (or until the server closes)."""
    frames: list[str] = []
    ws = await session.ws_connect(url, **ws_kwargs)
    if on_open is not None:
        on_open()
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            msg = await ws.receive(timeout=left)
        except TimeoutError:
            break
        if msg.type == aiohttp.WSMsgType.TEXT:
            frames.append(msg.data)
        elif msg.type in _ENDED:
            break
    return frames, ws


async def drain(ws: aiohttp.ClientWebSocketResponse, quiet_s: float = 0.3) -> list[str]:
    """Text frames still arriving until the connection has been quiet for ``quiet_s``."""
    frames: list[str] = []
    while True:
        try:
            msg = await ws.receive(timeout=quiet_s)
        except TimeoutError:
            return frames
        if msg.type == aiohttp.WSMsgType.TEXT:
            frames.append(msg.data)
        elif msg.type in _ENDED:
            return frames


def parse_frames(frames: list[str]) -> list[dict]:
    return [orjson.loads(f) for f in frames]


def data_of(frames: list[str], kind: str) -> list[dict]:
    """Payloads of one stream kind (``trade``, ``aggTrade``, ``bookTicker``)."""
    return [m["data"] for m in parse_frames(frames) if m["stream"].endswith("@" + kind)]


async def get_json(session: aiohttp.ClientSession, url: str, **kwargs: Any) -> Any:
    async with session.get(url, **kwargs) as resp:
        resp.raise_for_status()
        return await resp.json()


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()
