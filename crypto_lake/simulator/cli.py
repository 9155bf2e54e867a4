"""Command line: ``python -m crypto_lake.simulator --symbols BTCUSDT,ETHUSDT --port 0``.

Prints the WebSocket and REST base URLs (the REST URL is also the public-file base URL),
optionally writes the bound port to ``--port-file``
(atomically, so a launcher polling for it never reads half a number), and runs until SIGINT
or SIGTERM. ``--outage AT:SECONDS`` injects an exchange outage (the demo uses it, so a
newcomer sees one in coverage and in the bars' flags).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from crypto_lake.lib.core.fsutil import atomic_write_bytes
from crypto_lake.lib.core.logs import setup_logging
from crypto_lake.lib.core.symbols import InvalidNameError
from crypto_lake.simulator.config import SimConfig
from crypto_lake.simulator.server import ExchangeSimulator

log = setup_logging().getChild("simulator")


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
        "--outage",
        type=_outage_spec,
        action="append",
        default=[],
        metavar="AT:SECONDS",
        help="AT seconds after start, drop every connection and refuse new ones for SECONDS "
        "(an exchange outage; repeatable)",
    )
    p.add_argument(
        "--history-hours",
        type=float,
        default=26.0,
        help="REST serves live trades/klines this far back (bounded memory; default: a UTC day+)",
    )
    p.add_argument(
        "--history-days",
        type=int,
        default=0,
        help="generate this many whole UTC days of history before today (plus today up to the "
        "start), served by REST and as public files under /data/spot/ (default: none)",
    )
    p.add_argument(
        "--history-rate-scale",
        type=float,
        default=1.0,
        help="trade rate of the history relative to realistic rates (e.g. 0.05 makes long "
        "backfills cheap)",
    )
    p.add_argument(
        "--depth-symbols",
        default="",
        help="comma-separated symbols (among --symbols) with an order book behind "
        "<symbol>@depth@100ms, <symbol>@depth and /api/v3/depth (default: none)",
    )
    p.add_argument("--depth-levels", type=int, default=200, help="book levels per side")
    p.add_argument(
        "--depth-changes-per-s",
        type=float,
        default=100.0,
        help="background book updates per second per symbol, deeper than the touch",
    )
    p.add_argument(
        "--depth-history-minutes",
        type=float,
        default=15.0,
        help="book ground truth kept this long (it changes hundreds of times a second)",
    )
    p.add_argument(
        "--public-files-include-today",
        action="store_true",
        help="serve today's public files too (trades up to now); Binance publishes a day after",
    )
    return p


def _outage_spec(text: str) -> tuple[float, float]:
    try:
        at, seconds = (float(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected AT:SECONDS, got {text!r}") from None
    if at < 0 or seconds <= 0:
        raise argparse.ArgumentTypeError(f"AT must be >= 0 and SECONDS > 0, got {text!r}")
    return at, seconds


async def _outage(sim: ExchangeSimulator, at: float, seconds: float) -> None:
    """Drop every connection at ``at`` s and refuse new ones for ``seconds`` (the trades of
    that time stay in REST, as on the real exchange)."""
    await asyncio.sleep(at)
    log.warning("outage: dropping all connections, refusing new ones for %.0f s", seconds)
    sim.faults.refuse_connections = True
    sim.faults.drop_connections()
    await asyncio.sleep(seconds)
    sim.faults.refuse_connections = False
    log.warning("outage over: accepting connections again")


async def serve(
    cfg: SimConfig,
    host: str,
    port: int,
    port_file: Path | None,
    outages: list[tuple[float, float]] = (),
) -> None:
    sim = ExchangeSimulator(cfg)
    await sim.start(host, port)
    faults = [asyncio.create_task(_outage(sim, at, seconds)) for at, seconds in outages]
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
        for task in faults:
            task.cancel()
        await sim.stop()


def config_from_args(args: argparse.Namespace) -> SimConfig:
    """The simulator settings of parsed command-line arguments (raises on invalid ones)."""
    return SimConfig(
        symbols=[s.strip().upper() for s in args.symbols.split(",") if s.strip()],
        seed=args.seed,
        rate_scale=args.rate_scale,
        max_connection_age_s=args.max_connection_age,
        server_shutdown_notice=args.server_shutdown_notice,
        replay_path=args.replay,
        replay_speed=args.speed,
        record_sent_ids=False,  # nobody can query it from outside; keep memory flat
        history_s=args.history_hours * 3600,
        history_days=args.history_days,
        history_rate_scale=args.history_rate_scale,
        public_files_include_today=args.public_files_include_today,
        depth_symbols=[s.strip().upper() for s in args.depth_symbols.split(",") if s.strip()],
        depth_levels=args.depth_levels,
        depth_changes_per_s=args.depth_changes_per_s,
        depth_history_s=args.depth_history_minutes * 60,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        cfg = config_from_args(args)
    except (InvalidNameError, ValueError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    asyncio.run(serve(cfg, args.host, args.port, args.port_file, args.outage))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
