"""``crypto-lake-collector`` / ``python -m collector_daemon``: run the collector daemon.

Configuration comes from the crypto_lake config file and ``CRYPTO_LAKE__*`` variables
(crypto_lake.lib.core.config); the flags below override single keys for a run.

Exit codes (``collector_daemon/exits.py``): 0 clean stop, 1 unexpected error (a bug, with a
traceback), 2 bad command-line flag, 73 lake root not writable, 74 write failed (disk full,
file too large, I/O error), 75 another collector holds the lake's lock, 78 invalid
configuration. A failed start logs exactly one line: what failed, where, what to do.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

from pydantic import ValidationError

from collector_daemon.app import Collector, Tuning, one_line
from collector_daemon.exits import (
    EXIT_CONFIG,
    EXIT_SOFTWARE,
    EXIT_TEMPFAIL,
    StartupError,
)
from collector_daemon.lock import LockHeld
from crypto_lake.lib.core.config import Config, ConfigError, describe_validation_error, load_config
from crypto_lake.lib.core.logs import setup_logging

# flag -> (config section or None for top level, key, type)
_OVERRIDES: dict[str, tuple[str | None, str, Any]] = {
    "lake_root": (None, "lake_root", str),
    "ws_url": ("binance", "ws_base_url", str),
    "rest_url": ("binance", "rest_base_url", str),
    "trade_stream": ("binance", "trade_stream", str),
    "time_unit": ("binance", "time_unit", str),
    "max_streams_per_connection": ("binance", "max_streams_per_connection", int),
    "rotate_seconds": ("collector", "rotate_seconds", float),
    "compression": ("collector", "compression", str),
    "heartbeat_seconds": ("collector", "heartbeat_seconds", float),
    "silence_timeout": ("collector", "silence_timeout_seconds", float),
    "max_connection_age": ("collector", "max_connection_age_seconds", float),
    "backoff_base": ("collector", "backoff_base_seconds", float),
    "backoff_cap": ("collector", "backoff_cap_seconds", float),
    "rest_weight_budget": ("collector", "rest_weight_budget_per_minute", int),
    "metrics_host": ("collector", "metrics_host", str),
    "metrics_port": ("collector", "metrics_port", int),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="crypto-lake-collector",
        description="Record Binance trades, best bid/ask and order book depth into rotating raw "
        "JSONL files.",
    )
    p.add_argument(
        "--config", help="config file (default: $CRYPTO_LAKE_CONFIG or ./crypto_lake.yaml)"
    )
    p.add_argument("--lake-root", help="lake root directory")
    p.add_argument("--symbols", help="comma-separated symbols, e.g. BTCUSDT,ETHUSDT")
    p.add_argument("--ws-url", help="WebSocket base URL (e.g. ws://127.0.0.1:9000)")
    p.add_argument("--rest-url", help="REST base URL used for gap repair")
    p.add_argument("--trade-stream", choices=["trade", "aggTrade"])
    p.add_argument("--time-unit", choices=["ms", "us"])
    p.add_argument("--max-streams-per-connection", type=int)
    p.add_argument("--rotate-seconds", type=float)
    p.add_argument("--compression", choices=["none", "gzip", "zstd"])
    p.add_argument("--heartbeat-seconds", type=float)
    p.add_argument("--silence-timeout", type=float, help="seconds without a message -> reconnect")
    p.add_argument("--max-connection-age", type=float, help="replace connections after (s)")
    p.add_argument("--backoff-base", type=float)
    p.add_argument("--backoff-cap", type=float)
    p.add_argument("--rest-weight-budget", type=int, help="REST weight per minute for repairs")
    p.add_argument("--metrics-host")
    p.add_argument("--metrics-port", type=int, help="Prometheus endpoint port (0 disables)")
    p.add_argument(
        "--depth-symbols", help="comma-separated symbols whose order book (diff depth) is recorded"
    )
    p.add_argument(
        "--depth-verify-minutes", type=float, help="minutes between verification snapshots"
    )
    p.add_argument("--no-repair", action="store_true", help="record gaps but do not repair them")
    p.add_argument("--no-fsync", action="store_true", help="skip fsync (tests/benchmarks only)")
    p.add_argument(
        "--fsync-interval",
        type=float,
        default=Tuning.fsync_interval,
        help="seconds between fsyncs of open files (default %(default)s)",
    )
    p.add_argument(
        "--reorder-grace",
        type=float,
        default=Tuning.reorder_grace,
        help="seconds a late trade id may still arrive before it is a gap",
    )
    p.add_argument("--log-level", default=None)
    return p


def config_from_args(args: argparse.Namespace) -> Config:
    """Load the config file/env, then apply the command-line overrides."""
    cfg = load_config(args.config)
    data = cfg.model_dump()
    for flag, (section, key, _type) in _OVERRIDES.items():
        value = getattr(args, flag, None)
        if value is not None:
            (data[section] if section else data)[key] = value
    if args.symbols:
        data["symbols"] = [s.strip().upper() for s in args.symbols.split(",") if s.strip()]
    depth = data["collector"]["depth"]
    if args.depth_symbols is not None:
        depth["symbols"] = [s.strip().upper() for s in args.depth_symbols.split(",") if s.strip()]
    if args.depth_verify_minutes is not None:
        depth["verify_interval_minutes"] = args.depth_verify_minutes
    if args.no_repair:
        data["collector"]["repair_gaps"] = False
    if args.no_fsync:
        data["collector"]["fsync"] = False
    try:
        return Config.model_validate(data)
    except ValidationError as exc:  # the message names the keys, never their values
        raise ConfigError(f"invalid option: {describe_validation_error(exc)}") from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log = setup_logging(args.log_level)
    # A file over RLIMIT_FSIZE must give EFBIG (handled: clean stop), not kill the process.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        cfg = config_from_args(args)
    except ConfigError as exc:
        log.error("cannot start: %s (fix the configuration; see crypto_lake.example.yaml)", exc)
        return EXIT_CONFIG
    tuning = Tuning(fsync_interval=args.fsync_interval, reorder_grace=args.reorder_grace)
    try:
        return asyncio.run(Collector(cfg, tuning).run())
    except LockHeld as exc:
        log.error("cannot start: %s", exc)
        return EXIT_TEMPFAIL
    except StartupError as exc:
        log.error("%s", exc)
        return exc.exit_code
    except Exception as exc:  # a bug: the one line, then the traceback to report
        log.error("collector failed unexpectedly: %s (a bug: please report it with this log)",
                  one_line(exc), exc_info=True)  # fmt: skip
        return EXIT_SOFTWARE


if __name__ == "__main__":
    sys.exit(main())
