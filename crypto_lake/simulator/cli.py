"""Command line: ``python -m crypto_lake.simulator --symbols BTCUSDT,ETHUSDT --port 0``.

Prints the WebSocket and REST base URLs, optionally writes the bound port to ``--port-file``
(atomically, so a launcher polling for it never reads half a number), and runs until SIGINT
or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from crypto_lake.lib.fsutil import atomic_write_bytes
from crypto_lake.lib.logs import setup_logging
from crypto_lake.lib.symbols import InvalidNameError
from crypto_lake.simulator.config import SimConfig
from crypto_lake.simulator.server import ExchangeSimulator


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="crypto-lake-sim", description="Loopback Binance simulator")
    p.add_argument("--symbols", default="BTCUSDT,ETHUSDT", help="comma-separated symbols")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--rate-scale", type=float, default=1.0)
    p.add_argument("--replay", type=Path, default=None, help="raw file to replay")
    p.add_argument("--speed", type=float, default=1.0, help="replay speed factor")
    p.add_argument("--max-connection-age", type=float, default=86400.0, help="seconds")
    p.add_argument("--server-shutdown-notice", action="store_true")
    p.add_argument("--port-file", type=Path, default=None, help="write the bound port here")
    p.add_argument(
        "--history-hours",
        type=float,
        default=26.0,
        help="REST serves trades/klines this far back (bounded memory; default: a UTC day+)",
    )
    return p


async def serve(cfg: SimConfig, host: str, port: int, port_file: Path | None) -> None:
    sim = ExchangeSimulator(cfg)
    await sim.start(host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if port_file is not None:
        atomic_write_bytes(port_file, f"{sim.port}\n".encode(), durable=False)
    # The URLs are the CLI's output (what a user or launcher reads), hence stdout.
    sys.stdout.write(f"ws_url={sim.ws_url}\nrest_url={sim.rest_url}\n")
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        await sim.stop()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        cfg = SimConfig(
            symbols=[s.strip().upper() for s in args.symbols.split(",") if s.strip()],
            seed=args.seed,
            rate_scale=args.rate_scale,
            max_connection_age_s=args.max_connection_age,
            server_shutdown_notice=args.server_shutdown_notice,
            replay_path=args.replay,
            replay_speed=args.speed,
            record_sent_ids=False,  # nobody can query it from outside; keep memory flat
            history_s=args.history_hours * 3600,
        )
    except (InvalidNameError, ValueError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    asyncio.run(serve(cfg, args.host, args.port, args.port_file))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
