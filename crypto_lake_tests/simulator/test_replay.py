"""Replay mode streams a lake raw file at its recorded pace times the speed factor."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest
import zstandard

from crypto_lake.lib.raw.lines import repaired_line, session_line, ws_line
from crypto_lake.simulator import SimConfig
from crypto_lake_tests.simulator.helpers import aio, drain, parse_frames, sim_client, stream_url

T0 = 1_800_000_000_000_000_000  # ns


def market_messages(n: int) -> list[dict]:
    out = []
    for i in range(n):
        if i % 3 == 2:
            out.append({"stream": "ethusdt@bookTicker", "data": {"u": 1000 + i, "s": "ETHUSDT",
                        "b": "3200.00000000", "B": "1.00000000", "a": "3200.01000000",
                        "A": "2.00000000"}})  # fmt: skip
        else:
            out.append({"stream": "btcusdt@trade", "data": {"e": "trade", "E": 1_800_000_000_000
                        + i, "s": "BTCUSDT", "t": 500 + i, "p": "65000.10000000",
                        "q": "0.00100000", "T": 1_800_000_000_000 + i, "m": i % 2 == 0,
                        "M": True}})  # fmt: skip
    return out


def write_raw(path: Path, messages: list[dict], spacing_ns: int) -> bytes:
    lines = [session_line(T0, "ws-1", "connect")]
    for i, msg in enumerate(messages):
        lines.append(ws_line(T0 + i * spacing_ns, "ws-1", "ms", orjson.dumps(msg)))
        if i == 3:
            lines.append(b"{not json at all\n")  # a torn line: skipped and counted
            bad = {"stream": "../../etc@trade", "data": {"t": 1}}  # never becomes a symbol
            lines.append(ws_line(T0, "ws-1", "ms", orjson.dumps(bad)))
            lines.append(repaired_line(T0, "btcusdt@trade", "ms", "historicalTrades", {"id": 1}))
    lines.append(session_line(T0 + len(messages) * spacing_ns, "ws-1", "disconnect", reason="x"))
    data = b"".join(lines)
    path.write_bytes(data if path.suffix != ".zst" else zstandard.compress(data))
    return data


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.zst"])
@aio
async def test_replay_streams_market_lines_at_speed(tmp_path: Path, suffix: str) -> None:
    messages = market_messages(30)
    raw = tmp_path / f"part-000001{suffix}"
    write_raw(raw, messages, spacing_ns=40_000_000)  # 30 lines over 1.16 s recorded
    cfg = SimConfig(symbols=["BTCUSDT", "ETHUSDT"], replay_path=raw, replay_speed=2.0)
    async with sim_client(cfg) as (sim, session):
        url = stream_url(sim, ["btcusdt@trade", "ethusdt@bookTicker"])
        ws = await session.ws_connect(url)
        # The replay starts with the server; a client connected later misses the first lines,
        # exactly as on a live exchange, so this test connects at once and checks the tail.
        started = time.monotonic()
        frames = await drain(ws, quiet_s=0.5)
        took = time.monotonic() - started - 0.5
        await ws.close()
        assert sim.replay_finished.is_set()
    got = parse_frames(frames)
    assert got == messages[-len(got) :] and len(got) >= 25
    assert 0.3 <= took <= 1.2, took  # 1.16 s recorded / speed 2 = 0.58 s


@aio
async def test_replay_only_sends_subscribed_streams(tmp_path: Path) -> None:
    messages = market_messages(12)
    raw = tmp_path / "part-000002.jsonl"
    write_raw(raw, messages, spacing_ns=20_000_000)
    cfg = SimConfig(symbols=["BTCUSDT"], replay_path=raw, replay_speed=1.0)
    async with sim_client(cfg) as (sim, session):
        ws = await session.ws_connect(stream_url(sim, ["ethusdt@bookTicker"]))  # from the file
        frames = await drain(ws, quiet_s=0.5)
        await ws.close()
    got = parse_frames(frames)
    assert got and all(m["stream"] == "ethusdt@bookTicker" for m in got)
    assert sim.sent.update_ids("ETHUSDT") == {m["data"]["u"] for m in got}
