"""The CLI starts, serves and stops on SIGINT; SimulatorThread serves synchronous callers."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import aiohttp
import orjson
import pytest

from crypto_lake.lib.core.symbols import InvalidNameError
from crypto_lake.simulator import SimConfig, SimulatorThread
from crypto_lake_tests.simulator.helpers import aio, sim_client, wait_until

REPO = Path(__file__).resolve().parents[2]


def test_cli_starts_serves_and_stops_on_sigint(tmp_path: Path) -> None:
    port_file = tmp_path / "sim.port"
    proc = subprocess.Popen(
        [sys.executable, "-m", "crypto_lake.simulator", "--symbols", "BTCUSDT,ETHUSDT",
         "--port", "0", "--port-file", str(port_file)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert wait_until(port_file.exists, timeout=30), "no port file"
        port = int(port_file.read_text())
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v3/ping", timeout=5) as r:
            assert orjson.loads(r.read()) == {}
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert f"ws_url=ws://127.0.0.1:{port}" in out.decode()
    assert f"rest_url=http://127.0.0.1:{port}" in out.decode()


def test_cli_rejects_an_invalid_symbol_before_starting(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "crypto_lake.simulator", "--symbols", "BTCUSDT,../../ETC"],
        cwd=REPO, capture_output=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2
    assert b"invalid symbol" in result.stderr


def test_config_validates_symbols() -> None:
    with pytest.raises(InvalidNameError):
        SimConfig(symbols=["BTCUSDT", "btc/usdt"])
    with pytest.raises(ValueError):
        SimConfig(symbols=["BTCUSDT", "BTCUSDT"])
    assert SimConfig(symbols="BTCUSDT,ETHUSDT").symbols == ["BTCUSDT", "ETHUSDT"]


@pytest.mark.parametrize(
    "query",
    [
        "streams=BTCUSDT@trade",  # symbols are lower-case in stream names
        "streams=btcusdt@depth",  # unsupported stream kind
        "streams=dogeusdt@trade",  # not a simulated symbol
        "streams=..%2F..%2Fetc@trade",  # path-like junk never becomes a symbol
        "streams=",
        "streams=btcusdt@trade&timeUnit=NANOSECOND",
    ],
)
@aio
async def test_bad_stream_urls_are_rejected_before_the_upgrade(query: str) -> None:
    async with sim_client(SimConfig(symbols=["BTCUSDT"])) as (sim, session):
        async with session.get(f"{sim.rest_url}/stream?{query}") as resp:
            assert resp.status == 400
            body = await resp.json()
            assert body["code"] == -1121 and body["msg"]
        assert sim.connections_total == 0


def test_simulator_thread_serves_sync_callers() -> None:
    cfg = SimConfig(symbols=["BTCUSDT"], rate_scale=4)
    with SimulatorThread(cfg) as sim:
        assert sim.ws_url.startswith("ws://127.0.0.1:")

        async def client() -> list[int]:
            ids: list[int] = []
            async with aiohttp.ClientSession() as session:
                ws = await session.ws_connect(f"{sim.ws_url}/stream?streams=btcusdt@trade")
                deadline = time.monotonic() + 1.0
                while time.monotonic() < deadline:
                    msg = await ws.receive(timeout=1.0)
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        break
                    ids.append(orjson.loads(msg.data)["data"]["t"])
                    if len(ids) == 5:
                        sim.faults.drop_connections()  # applied on the simulator's loop
                assert (await ws.receive(timeout=2)).type == aiohttp.WSMsgType.CLOSED
            return ids

        ids = asyncio.run(client())
        assert len(ids) >= 5
        assert wait_until(lambda: not sim.connections, 2)
        assert set(ids) <= sim.sent.trade_ids("BTCUSDT")
        sim.pause_market()
        truth = sim.trades("BTCUSDT")
        assert {t["id"] for t in truth} >= set(ids)


def test_cli_outage_drops_connections_then_refuses_then_recovers(tmp_path: Path) -> None:
    """``--outage AT:SECONDS`` (the demo's injected fault): at AT the open connection is
    dropped, new ones are refused for SECONDS, then accepted again."""
    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import connect

    port_file = tmp_path / "sim.port"
    proc = subprocess.Popen(
        [sys.executable, "-m", "crypto_lake.simulator", "--symbols", "BTCUSDT", "--port", "0",
         "--port-file", str(port_file), "--outage", "3:4"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert wait_until(port_file.exists, timeout=30), "no port file"
        url = f"ws://127.0.0.1:{int(port_file.read_text())}/stream?streams=btcusdt@bookTicker"
        start = time.monotonic()
        with connect(url) as ws, pytest.raises(ConnectionClosed):
            while time.monotonic() - start < 10:
                ws.recv(timeout=10)  # quotes flow until the outage drops the connection
        dropped = time.monotonic() - start
        assert 1 < dropped < 6, dropped
        with pytest.raises(InvalidStatus) as refused:
            connect(url, open_timeout=5)
        assert refused.value.response.status_code == 503
        assert wait_until(lambda: _accepts(url), timeout=10), "not accepting after the outage"
        assert time.monotonic() - start >= 3 + 4 - 0.5
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=10)


def _accepts(url: str) -> bool:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    try:
        with connect(url, open_timeout=5) as ws:
            ws.recv(timeout=5)
        return True
    except InvalidStatus:
        time.sleep(0.2)
        return False
