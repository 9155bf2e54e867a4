"""Simulator throughput: messages/s pushed to ONE local WebSocket client.

Run: ``./dev bench bench_simulator [--seconds 10] [--rate-scale 100] [--symbols 13]``.

Every measurement uses the same client: a separate, stdlib-only process that parses frame
headers straight off the socket and only counts text frames (it can count well over 10^6
frames/s, so the figures measure the server). Measured in the same run:

1. baseline-send_frame -- a bare aiohttp handler sending one pre-built frame per
   ``send_frame`` call in a tight loop (aiohttp's ordinary per-message API);
2. baseline-batched -- the same pre-built frames written in batches straight to the transport,
   the way the simulator writes: the transport ceiling of the simulator's write path;
3. simulator -- ExchangeSimulator generating the market live (all three streams of every
   symbol, rates multiplied by ``--rate-scale``), fanning it out to the client, with SentLog.
   The market is paused until the client is connected, so its whole output goes to it.

Prints absolute msgs/s, the simulator / baseline ratios and the server CPU per message
(robust when other work shares the machine). Target: >= 20,000 msgs/s to one client.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

# The client process imports only the stdlib (fast start); the servers import the rest lazily.
REPO = Path(__file__).resolve().parents[1]
DEFAULT_SYMBOLS = [
    *("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT", "DOGEUSDT", "ADAUSDT"),
    *("AVAXUSDT", "LINKUSDT", "LTCUSDT", "DOTUSDT", "SUIUSDT", "EURUSDT"),
]
TARGET = 20_000
PAYLOAD = (
    b'{"stream":"btcusdt@trade","data":{"e":"trade","E":1800000000000,"s":"BTCUSDT",'
    b'"t":4000000000,"p":"65000.01000000","q":"0.00449000","T":1800000000000,"m":false,"M":true}}'
)


# -- client (runs in its own process) ----------------------------------------------------------
def count_frames(url: str, seconds: float, warmup: float) -> dict:
    """Count text frames for ``seconds`` after ``warmup``; report count, bytes and duration.

    A minimal blocking RFC 6455 client: it parses frame headers straight from the socket
    buffer, so it can count far more frames per second than any server here can send and the
    figure measures the server, not the client.
    """
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += sock.recv(65536)
    head, _, buf = buf.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(f"handshake failed: {head[:80]!r}")
    t_start = time.monotonic() + warmup
    t_end = t_start + seconds
    n = nbytes = 0
    counting = False
    pos = 0
    while True:
        now = time.monotonic()
        if now >= t_end:
            break
        counting = now >= t_start
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        buf = buf[pos:] + chunk
        pos = 0
        end = len(buf)
        while pos + 2 <= end:
            length = buf[pos + 1] & 0x7F
            hdr = 2
            if length == 126:
                if pos + 4 > end:
                    break
                length, hdr = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if pos + 10 > end:
                    break
                length, hdr = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            if pos + hdr + length > end:
                break
            if counting and buf[pos] & 0x0F == 1:  # text frame
                n += 1
                nbytes += length
            pos += hdr + length
    sock.close()  # abrupt: the server is still sending
    return {"frames": n, "bytes": nbytes, "seconds": seconds}


async def run_client(url: str, seconds: float, warmup: float) -> dict:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--client", url, "--seconds", str(seconds),
        "--warmup", str(warmup), stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), seconds + warmup + 120)
    if proc.returncode != 0:
        raise RuntimeError("benchmark client failed")
    return json.loads(out)


# -- baselines ---------------------------------------------------------------------------------
async def serve_baseline(seconds: float, warmup: float, batched: bool) -> dict:
    """A bare aiohttp WebSocket endpoint flooding pre-built frames; returns the client count."""
    from aiohttp import WSMsgType, web

    from crypto_lake.simulator.connection import HIGH_WATER, LOW_WATER
    from crypto_lake.simulator.wire import ws_text_frame

    framed = ws_text_frame(PAYLOAD) * 256

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        transport = request.transport
        try:
            while transport is not None and not transport.is_closing():
                if batched:
                    transport.write(framed)
                    while transport.get_write_buffer_size() > LOW_WATER:
                        await asyncio.sleep(0.002)
                        if transport.is_closing():
                            break
                    await asyncio.sleep(0)
                else:
                    for _ in range(256):
                        await ws.send_frame(PAYLOAD, WSMsgType.TEXT)
                    await asyncio.sleep(0)
        except (ConnectionError, RuntimeError):
            pass
        return ws

    assert HIGH_WATER > LOW_WATER
    app = web.Application()
    app.add_routes([web.get("/stream", handler)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        return await run_client(f"ws://127.0.0.1:{port}/stream", seconds, warmup)
    finally:
        await runner.cleanup()


# -- simulator ---------------------------------------------------------------------------------
async def serve_simulator(seconds: float, warmup: float, symbols: list[str], scale: float) -> dict:
    from crypto_lake.simulator import ExchangeSimulator, SimConfig

    sim = ExchangeSimulator(SimConfig(symbols=symbols, rate_scale=scale))
    sim.pause_market()
    await sim.start()
    streams = "/".join(
        f"{s.lower()}@{k}" for s in symbols for k in ("trade", "aggTrade", "bookTicker")
    )
    cpu: dict[str, float] = {}

    async def resume_on_connect() -> None:
        while not sim.connections:
            await asyncio.sleep(0.005)
        sim.resume_market()
        cpu["t0"], cpu["c0"] = time.monotonic(), time.process_time()
        cpu["e0"] = sim.market.events_generated

    watcher = asyncio.create_task(resume_on_connect())
    try:
        result = await run_client(f"{sim.ws_url}/stream?streams={streams}", seconds, warmup)
        elapsed = time.monotonic() - cpu["t0"]
        cpu_s = time.process_time() - cpu["c0"]
        sim.pause_market()
        generated = sum(m.ledger.trade_count for m in sim.market.symbols.values())
        result["generated_trades_per_s"] = generated / elapsed
        # Every generated event is on a subscribed stream, so this is the offered load.
        result["offered_per_s"] = (sim.market.events_generated - cpu["e0"]) / elapsed
        result["sent"] = sim.sent.count()
        result["server_cpu_share"] = cpu_s / elapsed
        # CPU per delivered message: the capacity figure that does not depend on how much of
        # the (shared) machine the server got during the run.
        rate = result["frames"] / result["seconds"]
        result["server_cpu_us_per_msg"] = result["server_cpu_share"] / max(rate, 1.0) * 1e6
    finally:
        watcher.cancel()
        await sim.stop()
    return result


async def main_async(args: argparse.Namespace) -> int:
    symbols = DEFAULT_SYMBOLS[: args.symbols]
    print(
        f"simulator benchmark: {args.seconds:g} s per measurement, one counting client process, "
        f"{len(symbols)} symbols x 3 streams, rate_scale {args.rate_scale:g}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    rates = {}
    for name, batched in (("baseline-send_frame", False), ("baseline-batched", True)):
        res = await serve_baseline(args.seconds, args.warmup, batched)
        rates[name] = res["frames"] / res["seconds"]
        print(f"{name:<20} {rates[name]:>10,.0f} msgs/s  (pre-built frames, no model)")
    sim = await serve_simulator(args.seconds, args.warmup, symbols, args.rate_scale)
    rate = sim["frames"] / sim["seconds"]
    mbps = sim["bytes"] / sim["seconds"] / 1e6
    print(
        f"{'simulator':<20} {rate:>10,.0f} msgs/s  ({mbps:.1f} MB/s; offered "
        f"{sim['offered_per_s']:,.0f} msgs/s incl. {sim['generated_trades_per_s']:,.0f} "
        "trades/s; server CPU "
        f"{sim['server_cpu_us_per_msg']:.1f} us/msg, {sim['server_cpu_share']:.0%} of one core)"
    )
    for name, base in rates.items():
        print(f"ratio simulator / {name}: {rate / base:.2f}")
    ok = rate >= TARGET
    print(f"target >= {TARGET:,} msgs/s to one client: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--rate-scale", type=float, default=100.0)
    p.add_argument("--symbols", type=int, default=13)
    p.add_argument("--client", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.client:
        print(json.dumps(count_frames(args.client, args.seconds, args.warmup)))
        return 0
    sys.path.insert(0, str(REPO))
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    raise SystemExit(main())
