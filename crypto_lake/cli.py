"""``crypto-lake``: the lake's command line.

``crypto-lake history --symbols BTCUSDT,ETHUSDT --start 2025-01-01 --end 2025-01-31
[--kinds trades,klines_1s,klines_1m]`` imports history with the assets' own code: a few runs
per day (every symbol of it), executed in this process against the Dagster instance of
``DAGSTER_HOME``, so the UI lists the runs and their materializations and check results as
if a backfill had made them. Kinds:

- ``trades``: Binance's public daily trades file, verified, then a second run rebuilds trades,
  quotes, bars_1s (with its checks), bars_1m and coverage with the archive filling what was
  not recorded (what the ``history_rebuild`` sensor does after a UI import);
- ``klines_1s``: the public 1 s klines file, and the 1 s parity check of bars_1s;
- ``klines_1m``: 1 m klines from REST (``binance_klines_1m``) within the weight limits, and R7.

Exit status: 0 every partition imported; 1 some failed (each is listed: rerun the same
command later to fetch only what is missing); 2 bad arguments or configuration.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import date, timedelta

from tqdm import tqdm

KINDS = ("trades", "klines_1s", "klines_1m")
REBUILD = ("trades", "quotes", "bars_1s", "bars_1m", "coverage")  # history_rebuild_job's assets
PARITY_1S = ("bars_1s", "klines_1s_parity")
R7 = ("bars_1s", "r7_klines_parity")
CLI_TAG = "crypto_lake/trigger"


def _days(start: str, end: str) -> list[str]:
    first, last = date.fromisoformat(start), date.fromisoformat(end)
    if last < first:
        raise ValueError(f"--end {end} is before --start {start}")
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crypto-lake", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    h = sub.add_parser("history", help="import history from Binance's public files and REST")
    h.add_argument("--symbols", help="comma-separated; default: every configured symbol")
    h.add_argument("--start", required=True, help="first UTC day, YYYY-MM-DD")
    h.add_argument("--end", required=True, help="last UTC day (included), YYYY-MM-DD")
    h.add_argument("--kinds", default="trades,klines_1s,klines_1m",
                   help=f"comma-separated, of {', '.join(KINDS)}")  # fmt: skip
    h.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        plan = _plan(args)
    except ValueError as exc:
        print(f"crypto-lake history: {exc}", file=sys.stderr)
        return 2
    return _run(*plan, progress=not args.no_progress)


def _plan(args: argparse.Namespace) -> tuple[list[str], list[str], list[str]]:
    from crypto_lake.defs.market.partitions import CONFIG, market_partitions

    kinds = [k for k in args.kinds.split(",") if k]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ValueError(f"unknown kind(s) {unknown}; known: {', '.join(KINDS)}")
    symbols = [s for s in (args.symbols or ",".join(CONFIG.symbols)).split(",") if s]
    missing = [s for s in symbols if s not in CONFIG.symbols]
    if missing:
        raise ValueError(f"symbol(s) {missing} are not configured (symbols in the config: "
                         f"{', '.join(CONFIG.symbols)})")  # fmt: skip
    days = _days(args.start, args.end)
    date_dim = market_partitions.get_partitions_def_for_dimension("date")
    known = set(date_dim.get_partition_keys())
    outside = [d for d in days if d not in known]
    if outside:
        raise ValueError(
            f"{len(outside)} day(s) are outside the market partitions ({outside[0]} ..); they "
            f"start at dagster.partitions_start = {CONFIG.dagster.partitions_start} and end today"
        )
    return symbols, days, kinds


def _run(symbols: list[str], days: list[str], kinds: list[str], progress: bool) -> int:
    import dagster as dg

    from crypto_lake.definitions import defs
    from crypto_lake.defs.market.partitions import range_tags

    job = defs().resolve_implicit_global_asset_job_def()
    if os.environ.get("DAGSTER_HOME"):
        instance = dg.DagsterInstance.get()
    else:
        print(
            "crypto-lake history: DAGSTER_HOME is not set; the runs are not recorded in any "
            "Dagster instance (the lake files are written all the same)",
            file=sys.stderr,
        )
        instance = dg.DagsterInstance.ephemeral()
    failures: list[str] = []
    steps = [(day, run) for day in days for run in _runs(kinds)]
    bar = tqdm(steps, desc="history", unit="run", disable=not progress, file=sys.stderr)
    with instance:
        for day, (name, assets, checks) in bar:
            bar.set_postfix_str(f"{day} {name}")
            subset = job.get_subset(
                asset_selection={dg.AssetKey(a) for a in assets},
                asset_check_selection=None if checks is None else
                {dg.AssetCheckKey(dg.AssetKey(a), c) for a, c in checks},
            )  # fmt: skip
            result = subset.execute_in_process(
                instance=instance, raise_on_error=False,
                tags={**range_tags([day], symbols), CLI_TAG: "history_cli"},
            )  # fmt: skip
            if not result.success:
                failures += [f"{day} {name}: {_failure(ev)}" for ev in result.all_events
                             if ev.is_step_failure]  # fmt: skip
    for line in failures:
        print(f"FAILED {line}", file=sys.stderr)
    print(f"crypto-lake history: {len(steps) - len(failures)} of {len(steps)} runs succeeded"
          + ("; rerun the same command later to fetch only what is missing" if failures else ""),
          file=sys.stderr)  # fmt: skip
    return 1 if failures else 0


Run = tuple[str, tuple[str, ...], tuple[tuple[str, str], ...] | None]


def _runs(kinds: list[str]) -> list[Run]:
    """The runs of one day, in order: (name, assets, checks; None = all of the assets')."""
    runs: list[Run] = []
    if "klines_1s" in kinds:
        runs.append(("klines_1s", ("binance_klines_1s",), ()))
    if "trades" in kinds:  # the import, then the rebuild with it (and the 1 s parity)
        runs += [("trades", ("binance_trades_archive",), ()), ("rebuild", REBUILD, None)]
    elif "klines_1s" in kinds:
        runs.append(("parity", (), (PARITY_1S,)))
    if "klines_1m" in kinds:
        runs.append(("klines_1m", ("binance_klines_1m",), (R7,)))
    return runs


def _failure(event) -> str:
    error = event.step_failure_data.error
    return (error.message if error else "failed").strip().replace("\n", " | ")


if __name__ == "__main__":
    sys.exit(main())
