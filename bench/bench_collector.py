"""Collector throughput and receive-to-durable latency on loopback (issue 3, acceptance 10).

    ./dev bench bench_collector [--seconds 20] [--fsync-intervals 1.0,0.2] [--compression none]
                                [--sim-rate-scale 175]

Target: >= 50,000 msgs/s sustained into sealed files = 10x the peak of 13 busy symbols (real
Binance load is ~300 msgs/s on average and a few thousand at peaks; 5,000 msgs/s is taken as
the peak), with nothing lost.

Feed 1, firehose: a WebSocket server (this script with ``--serve``, its own process) that sends
Binance combined-stream frames (``@trade`` with consecutive ids + ``@bookTicker``, 13
symbols, µs times) as fast as the socket takes them. Same run, same feed:
1. baseline: a bare aiohttp WebSocket client (the collector's library) that only counts
   frames = the feed's own ceiling on this machine (plus the ``websockets`` library's, for
   comparison);
2. the collector (``python -m collector_daemon``, real files, fsync on) for the same time.

Feed 2, the exchange simulator (crypto_lake.simulator, in a thread of this process): 13
symbols, trade + bookTicker, every rate multiplied by ``--sim-rate-scale``, REST repair off.
The market is paused until the collector is connected, so every frame the simulator sends
(its SentLog count) must be a line in the sealed files. Its realistic model costs CPU per
message, so on a small machine it may not be able to offer the target rate; the offered rate
is printed next to what the collector sealed.

Throughput = market lines found in the *sealed* files after SIGTERM divided by the span of
their receive times (so it counts what reached sealed files, not what was read).
Durable = the line's bytes are covered by a completed ``fsync()`` of its file (the periodic
fsync of the ``.open`` file, or the one at sealing). Receive-to-durable latency is measured
inside the collector per written chunk, from the receive time of the chunk's *oldest* line to
the fsync's return, weighted by the chunk's lines: an upper bound for every line.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from collector_daemon.resume import read_part_lines  # noqa: E402
from crypto_lake.lib.core.config import DEFAULT_SYMBOLS  # noqa: E402
from crypto_lake.lib.core.paths import parse_part_name  # noqa: E402

BATCH = 512
PEAK_13_SYMBOLS = 5_000  # msgs/s at peaks for 13 busy symbols (real load: ~300 average)
TARGET = 10 * PEAK_13_SYMBOLS


# the firehose feed ---------------------------------------------------------------------------
def _frames(symbols: list[str]):
    """Endless pre-rendered frames: per symbol one trade and one bookTicker, round robin."""
    trade_id = dict.fromkeys(symbols, 1_000_000)
    update_id = dict.fromkeys(symbols, 5_000_000)
    trade_t = (
        b'{"stream":"%s@trade","data":{"e":"trade","E":%d,"s":"%s","t":%d,'
        b'"p":"65000.10000000","q":"0.00120000","T":%d,"m":true,"M":true}}'
    )
    book_t = (
        b'{"stream":"%s@bookTicker","data":{"u":%d,"s":"%s","b":"65000.10000000",'
        b'"B":"1.20000000","a":"65000.11000000","A":"0.50000000"}}'
    )
    names = [(s.lower().encode(), s.encode(), s) for s in symbols]
    while True:
        now_us = time.time_ns() // 1000
        batch = []
        for low, up, s in names:
            trade_id[s] += 1
            update_id[s] += 1
            batch.append(trade_t % (low, now_us, up, trade_id[s], now_us))
            batch.append(book_t % (low, update_id[s], up))
        yield batch


def _ws_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """An unmasked server frame (RFC 6455 5.2) with FIN set."""
    n = len(payload)
    if n < 126:
        return bytes((0x80 | opcode, n)) + payload
    if n < 1 << 16:
        return bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big") + payload


async def _answer_pings(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read the client's (masked) frames; answer pings so keepalive never trips."""
    while True:
        b0, b1 = await reader.readexactly(2)
        n = b1 & 0x7F
        if n == 126:
            n = int.from_bytes(await reader.readexactly(2), "big")
        elif n == 127:
            n = int.from_bytes(await reader.readexactly(8), "big")
        mask = await reader.readexactly(4) if b1 & 0x80 else b"\0\0\0\0"
        data = bytes(c ^ mask[i % 4] for i, c in enumerate(await reader.readexactly(n)))
        if b0 & 0x0F == 0x9:
            writer.write(_ws_frame(data, 0xA))
        elif b0 & 0x0F == 0x8:
            writer.close()
            return


async def _serve(port_file: Path) -> None:
    """A minimal WebSocket server writing pre-framed batches straight to the socket.

    The per-message cost of a Python WebSocket *sender* would cap the feed below what the
    collector can take; framing by hand keeps the feed's own ceiling well above it.
    """
    guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        path = head[0].split(" ")[1]
        key = next(
            h.split(":", 1)[1].strip() for h in head if h.lower().startswith("sec-websocket-key")
        )
        accept = base64.b64encode(hashlib.sha1((key + guid).encode()).digest()).decode()
        writer.write(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode()
        )
        query = path.split("streams=", 1)[-1].split("&", 1)[0]
        symbols = sorted({s.split("@")[0].upper() for s in query.split("/") if s})
        gen = _frames(symbols)
        pings = asyncio.ensure_future(_answer_pings(reader, writer))
        try:
            while not pings.done():
                chunk = b"".join(
                    _ws_frame(f) for _ in range(BATCH // (2 * len(symbols)) + 1) for f in next(gen)
                )
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            pings.cancel()
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port_file.write_text(str(server.sockets[0].getsockname()[1]))
    async with server:
        await server.serve_forever()


# measurements --------------------------------------------------------------------------------
def _url(port: int, symbols: list[str]) -> str:
    streams = "/".join(f"{s.lower()}@trade/{s.lower()}@bookTicker" for s in symbols)
    return f"ws://127.0.0.1:{port}/stream?streams={streams}&timeUnit=MICROSECOND"


async def _bare_aiohttp(url: str, seconds: float) -> float:
    """Frames/s a bare aiohttp client (the collector's WebSocket library) reads and drops."""
    import aiohttp

    n = 0
    async with aiohttp.ClientSession() as session, session.ws_connect(url, compress=0) as ws:
        for _ in range(2000):  # warm-up
            await ws.receive()
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            await ws.receive()
            n += 1
        return n / (time.monotonic() - t0)


async def _bare_websockets(url: str, seconds: float) -> float:
    """Same with the ``websockets`` library, for comparison."""
    import websockets

    n = 0
    async with websockets.connect(url, compression=None, max_queue=4096, max_size=1 << 22) as ws:
        for _ in range(2000):
            await ws.recv(decode=False)
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            await ws.recv(decode=False)
            n += 1
        return n / (time.monotonic() - t0)


def _sealed_market_lines(lake: Path) -> tuple[int, int, int, int]:
    """(market lines, session lines, first recv_ns, last recv_ns) over all sealed files."""
    n = sessions = 0
    first, last = 1 << 63, 0
    for p in (lake / "raw").rglob("part-*"):
        parsed = parse_part_name(p.name)
        if parsed is None or parsed.is_open:
            continue
        for line in read_part_lines(p):
            rec = orjson.loads(line)
            if "session" in rec:
                sessions += 1
                continue
            n += 1
            first, last = min(first, rec["recv_ns"]), max(last, rec["recv_ns"])
    return n, sessions, first, last


class _FirehoseFeed:
    """The firehose: data flows as soon as the collector connects and never stops."""

    def __init__(self, port: int) -> None:
        self.ws_url = f"ws://127.0.0.1:{port}"

    def ready(self, hb: dict) -> bool:
        return hb.get("messages_total", 0) > 0

    def start(self) -> None:
        pass

    def stop(self) -> dict:
        return {}


class _SimulatorFeed:
    """The exchange simulator; its market is paused until the collector is connected."""

    def __init__(self, symbols: list[str], rate_scale: float) -> None:
        from crypto_lake.simulator import SimConfig, SimulatorThread

        cfg = SimConfig(symbols=symbols, rate_scale=rate_scale, record_sent_ids=False)
        self.sim = SimulatorThread(cfg).start()
        self.sim.pause_market()
        self.ws_url = self.sim.ws_url
        self._t0 = 0.0
        self._generated0 = 0

    def _generated_subscribed(self) -> int:
        """Model events on the subscribed streams (everything but aggTrade) so far."""
        market = self.sim.market
        return market.events_generated - sum(m.ledger.agg_count() for m in market.symbols.values())

    def ready(self, hb: dict) -> bool:
        return bool(hb.get("connections")) and bool(self.sim.connections)

    def start(self) -> None:
        self.sim.resume_market()
        self._t0, self._generated0 = time.monotonic(), self._generated_subscribed()

    def stop(self) -> dict:
        self.sim.pause_market()
        elapsed = time.monotonic() - self._t0
        generated = self._generated_subscribed() - self._generated0
        time.sleep(1.0)  # the last frames reach the collector and are counted as sent
        sent = self.sim.sent.count()
        return {
            "sim_seconds": round(elapsed, 2),
            "sim_offered_msgs_per_s": generated / elapsed,
            "sim_sent_msgs_per_s": sent / elapsed,
            "sim_sent": sent,
            "sim_connections_total": self.sim.connections_total,
        }

    def close(self) -> None:
        self.sim.stop()


def _run_collector(
    feed: _FirehoseFeed | _SimulatorFeed,
    symbols: list[str],
    seconds: float,
    fsync_interval: float,
    compression: str,
) -> dict:
    lake = Path(tempfile.mkdtemp(prefix="bench-collector-"))
    cmd = [
        sys.executable,
        "-m",
        "collector_daemon",
        "--lake-root",
        str(lake),
        "--symbols",
        ",".join(symbols),
        "--ws-url",
        feed.ws_url,
        "--rest-url",
        "http://127.0.0.1:9",
        "--no-repair",
        "--metrics-port",
        "0",
        "--rotate-seconds",
        "5",
        "--heartbeat-seconds",
        "1",
        "--compression",
        compression,
        "--fsync-interval",
        str(fsync_interval),
        "--log-level",
        "WARNING",
    ]
    env = {**os.environ, "CRYPTO_LAKE_CONFIG": os.devnull}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env)
    hb_path = lake / "state" / "heartbeat.json"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if feed.ready(orjson.loads(hb_path.read_bytes())):
                    break
            except (OSError, orjson.JSONDecodeError):
                pass
            time.sleep(0.2)
        feed.start()
        time.sleep(seconds)
        feed_stats = feed.stop()
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
        stop_s = time.monotonic() - t0
        hb = orjson.loads(hb_path.read_bytes())
        n, sessions, first, last = _sealed_market_lines(lake)
        span = (last - first) / 1e9
        return {
            "fsync_interval_s": fsync_interval,
            "exit_code": rc,
            "stop_seconds": round(stop_s, 2),
            "sealed_market_lines": n,
            "session_lines": sessions,
            "span_s": round(span, 2),
            "msgs_per_s": n / span if span else 0.0,
            "heartbeat_messages": hb["messages_total"],
            "durable_latency_ms": hb["durable_latency_ms"],
            "receive_latency_ms": hb["latency_ms"],
            "open_files_left": len(list((lake / "raw").rglob("*.open"))),
            "gaps_open": hb["gaps"]["open"],
            "duplicates": hb["duplicates_dropped"],
            "reconnects": hb["reconnects"],
            **feed_stats,
        }
    finally:
        if proc.poll() is None:
            proc.kill()
        shutil.rmtree(lake, ignore_errors=True)


def _latency(r: dict) -> str:
    dl = r["durable_latency_ms"] or {}
    nan = float("nan")
    return (
        f"receive-to-durable p50 {dl.get('p50', nan):.0f} ms, p99 {dl.get('p99', nan):.0f} ms, "
        f"max {dl.get('max', nan):.0f} ms; SIGTERM->exit {r['stop_seconds']} s "
        f"(rc {r['exit_code']})"
    )


def _firehose_runs(port: int, symbols: list[str], args: argparse.Namespace) -> tuple[float, list]:
    """The feed's ceiling, then the collector on the firehose once per fsync interval."""
    ceiling = asyncio.run(_bare_aiohttp(_url(port, symbols), args.seconds))
    print(
        f"baseline = feed ceiling (bare aiohttp client, no parsing, no writing): "
        f"{ceiling:,.0f} msgs/s"
    )
    ws_rate = asyncio.run(_bare_websockets(_url(port, symbols), args.seconds / 2))
    print(
        f"for comparison, bare websockets client: {ws_rate:,.0f} msgs/s ({ws_rate / ceiling:.2f} x)"
    )
    results = []
    for interval in args.intervals:
        r = _run_collector(_FirehoseFeed(port), symbols, args.seconds, interval, args.compression)
        results.append(r)
        print(
            f"collector on firehose (fsync every {interval:g} s, compression "
            f"{args.compression}): {r['msgs_per_s']:,.0f} msgs/s into sealed files "
            f"= {r['msgs_per_s'] / ceiling:.2f} x feed ceiling; {_latency(r)}; "
            f"lines {r['sealed_market_lines']:,} sealed vs {r['heartbeat_messages']:,} counted"
        )
    return ceiling, results


def _simulator_run(symbols: list[str], args: argparse.Namespace) -> dict:
    """The collector fed by the exchange simulator at ``--sim-rate-scale``."""
    feed = _SimulatorFeed(symbols, args.sim_rate_scale)
    try:
        r = _run_collector(feed, symbols, args.seconds, args.intervals[0], args.compression)
    finally:
        feed.close()
    r["lossless"] = r["sealed_market_lines"] == r["sim_sent"] and r["sim_connections_total"] == 1
    print(
        f"collector on simulator (rate_scale {args.sim_rate_scale:g}, fsync every "
        f"{args.intervals[0]:g} s): simulator offered {r['sim_offered_msgs_per_s']:,.0f} "
        f"msgs/s (sent {r['sim_sent_msgs_per_s']:,.0f}), collector sealed "
        f"{r['msgs_per_s']:,.0f} msgs/s; {_latency(r)}; lines {r['sealed_market_lines']:,} "
        f"sealed vs {r['sim_sent']:,} sent by the simulator "
        f"({'nothing lost' if r['lossless'] else 'MISMATCH'}; "
        f"{r['sim_connections_total']} connection(s), {r['reconnects']} reconnects)"
    )
    return r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--fsync-intervals", default="1.0,0.2")
    ap.add_argument("--compression", default="none", choices=["none", "gzip", "zstd"])
    ap.add_argument("--sim-rate-scale", type=float, default=175.0)
    ap.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        asyncio.run(_serve(args.serve))
        return 0
    args.intervals = [float(x) for x in args.fsync_intervals.split(",")]
    symbols = list(DEFAULT_SYMBOLS)
    print(
        f"target: >= {TARGET:,} msgs/s = 10 x {PEAK_13_SYMBOLS:,} msgs/s, the peak taken for "
        f"{len(symbols)} busy symbols (real Binance load ~300 msgs/s average, a few thousand at "
        f"peaks); {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    port_file = Path(tempfile.mkdtemp(prefix="bench-feed-")) / "port"
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port_file)], cwd=REPO)
    try:
        while not port_file.exists() or not port_file.read_text():
            time.sleep(0.05)
        port = int(port_file.read_text())
        print(f"feed: firehose on 127.0.0.1:{port}, {len(symbols)} symbols x (trade + bookTicker)")
        ceiling, results = _firehose_runs(port, symbols, args)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(10)
    sim = _simulator_run(symbols, args)
    print(
        orjson.dumps(
            {
                "feed_ceiling_msgs_per_s": ceiling,
                "runs": results,
                "simulator_run": sim,
                "load_avg": os.getloadavg(),
            }
        ).decode()
    )
    checks = {
        f"collector on firehose >= {TARGET:,} msgs/s": all(
            r["msgs_per_s"] >= TARGET for r in results
        ),
        f"simulator offers >= {TARGET:,} msgs/s": sim["sim_offered_msgs_per_s"] >= TARGET,
        f"collector on simulator >= {TARGET:,} msgs/s": sim["msgs_per_s"] >= TARGET,
        "simulator run: lines sealed == lines sent": sim["lossless"],
        "every collector exited 0": all(r["exit_code"] == 0 for r in [*results, sim]),
    }
    for name, ok in checks.items():
        print(f"{'MET    ' if ok else 'NOT MET'} {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
