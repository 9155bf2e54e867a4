"""Benchmark: 180 days of 1 m klines for 13 symbols from REST, fetched as one UI backfill does.

    ./dev bench bench_klines_backfill [--days 180] [--symbols 13] [--weight-limit 6000]
                                      [--share 0.5] [--history-rate-scale 0.05] [--workdir DIR]

The exchange simulator serves ``--days`` days of deep history (``SimConfig.history_days``) for
the configured symbols, with Binance's request-weight limit (6000 per minute and IP). The
backfill is what ``binance_klines_1m`` does in a UI backfill, in-process (a run per date
here; Dagster itself cuts 180 dates × 13 symbols into a run per symbol, see ``--ui``): per
date a fresh ``KlinesClient`` with the production budget
(``--share`` of the limit, paced by X-MBX-USED-WEIGHT-1M), each partition fetched with
``fetch_day`` and written with ``write_klines_day`` into a temporary lake, skipped when its
stored file is already complete. On the real clock: the pacing waits are real.

Measured in the same run:

* the backfill: partitions, rows, requests, weight, 429s, the IP's peak weight in a minute as
  the simulator counted it, time spent waiting for the next minute, wall time;
* baseline 1, the budget bound: the least time the weight budget allows, the weight spent
  beyond one minute's budget divided by the budget per minute;
* baseline 2, the server bound: the same client, unpaced, against a second simulator without
  a weight limit, over ``--probe-days`` days: seconds per request, projected to the backfill;
* the re-run: the same backfill again, every partition already complete (no request).

Prints the ratio of the wall time to the larger bound (1.0 = as fast as the budget or the
server allows).

``--ui`` also launches the backfill as a user does, through a real ``dagster dev`` (webserver,
daemon, the queued run coordinator and the ``lake_market`` pool of ``dagster.yaml``): one
``launchPartitionBackfill`` of ``binance_klines_1m`` over every (date, symbol), as the asset
page's "Materialize" of the selected partitions sends it, against a fresh simulator; timed
from the launch until the backfill is complete, with its runs, their statuses and the rows
stored. Dagster's own costs (a run process per date, the daemon's ticks) are in that figure.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def backfill(url: str, days: list[str], symbols: list[str], root: Path, args) -> dict:
    """Every (date, symbol) partition as the asset builds it; one client per date's run."""
    from crypto_lake.lib.core.paths import LakeLayout
    from crypto_lake.lib.market.klines import KlinesClient, stored_klines, write_klines_day

    layout = LakeLayout(root)
    totals = dict.fromkeys(["partitions", "skipped", "complete", "rows", "requests", "weight",
                            "http_429", "max_used_weight"], 0)  # fmt: skip
    totals["waited_s"] = 0.0
    start = time.perf_counter()
    for day in days:
        client = KlinesClient(url, weight_limit=args.weight_limit, budget_share=args.share,
                              ban_file=layout.state_dir / "binance_rest_ban.json")  # fmt: skip
        for symbol in sorted(symbols):
            out = layout.market_file("klines_1m", symbol, day)
            totals["partitions"] += 1
            stored = stored_klines(out, symbol, day)
            if stored is None or not stored.complete:
                stored = write_klines_day(client.fetch_day(symbol, day), out)
            else:
                totals["skipped"] += 1
            totals["rows"] += stored.rows
            totals["complete"] += stored.complete
        u = client.usage
        totals["requests"] += u.requests
        totals["weight"] += u.weight
        totals["http_429"] += u.http_429
        totals["waited_s"] += u.waited_s
        totals["max_used_weight"] = max(totals["max_used_weight"], u.max_used_weight)
    totals["wall_s"] = time.perf_counter() - start
    return totals


def ui_backfill(url: str, days: list[str], symbols: list[str], work: Path, args) -> dict:
    """The same backfill launched through a real ``dagster dev`` as the UI launches it."""
    from crypto_lake.lib.core.paths import LakeLayout
    from crypto_lake.lib.market.klines import stored_klines
    from crypto_lake_tests.e2e.dagster_harness import LAUNCH_BACKFILL, DagsterDev

    layout = LakeLayout(work / "ui_lake")
    env = {
        "LAKE_ROOT": str(layout.root),
        "CRYPTO_LAKE__BINANCE__REST_BASE_URL": url,
        "CRYPTO_LAKE__BINANCE__REST_WEIGHT_LIMIT_PER_MINUTE": str(args.weight_limit),
        "CRYPTO_LAKE__BINANCE__REST_WEIGHT_BUDGET_SHARE": str(args.share),
        "CRYPTO_LAKE__SYMBOLS": "[" + ",".join(symbols) + "]",
        "CRYPTO_LAKE__DAGSTER__PARTITIONS_START": days[0],
        "CRYPTO_LAKE__DAGSTER__FINALIZE_CRON": "0 0 1 1 *",  # no scheduled run in the count
        "CRYPTO_LAKE_CONFIG": None,
    }
    dev = DagsterDev(work / "dagster_home", env, work / "dagster_dev.log")
    dev.start()
    try:
        params = {
            "assetSelection": [{"path": ["binance_klines_1m"]}],
            "fromFailure": False,
            "partitionNames": [f"{d}|{s}" for d in days for s in symbols],
            "tags": [],
        }
        start = time.perf_counter()
        launched = dev.graphql(LAUNCH_BACKFILL, {"backfillParams": params})
        launched = launched["launchPartitionBackfill"]
        if launched["__typename"] != "LaunchBackfillSuccess":
            raise SystemExit(f"backfill not launched: {launched}")
        data = dev.wait_backfill(launched["backfillId"], timeout=3600, poll=5)
        wall = time.perf_counter() - start
    finally:
        dev.stop()
    statuses = Counter(r["status"] for r in data["runs"])
    stored = [stored_klines(layout.market_file("klines_1m", s, d), s, d)
              for d in days for s in symbols]  # fmt: skip
    return {
        "wall_s": wall,
        "status": data["status"],
        "runs": dict(statuses),
        "rows": sum(k.rows for k in stored if k is not None),
        "complete": sum(1 for k in stored if k is not None and k.complete),
    }


def simulator(symbols: list[str], days: int, args, weight_limit: int):
    from crypto_lake.simulator import SimConfig, SimulatorThread

    cfg = SimConfig(symbols=symbols, seed=11, rate_scale=0.05, history_days=days,
                    history_rate_scale=args.history_rate_scale, rest_weight_limit=weight_limit,
                    record_sent_ids=False)  # fmt: skip
    return SimulatorThread(cfg)


def main() -> None:
    from crypto_lake.lib.core.config import DEFAULT_SYMBOLS

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--days", type=int, default=180)
    p.add_argument("--symbols", type=int, default=len(DEFAULT_SYMBOLS))
    p.add_argument("--weight-limit", type=int, default=6000)
    p.add_argument("--share", type=float, default=0.5)
    p.add_argument("--history-rate-scale", type=float, default=0.05)
    p.add_argument("--probe-days", type=int, default=5)
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--ui", action="store_true", help="also launch it through dagster dev")
    args = p.parse_args()
    symbols = list(DEFAULT_SYMBOLS[: args.symbols])
    today = datetime.now(UTC).date()
    days = [(today - timedelta(days=n)).isoformat() for n in range(args.days, 0, -1)]
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_klines_"))
    shutil.rmtree(work / "lake", ignore_errors=True)
    shutil.rmtree(work / "probe", ignore_errors=True)

    # Baseline 2: the server bound, unpaced (no weight limit on that simulator).
    with simulator(symbols, args.probe_days, args, 10**12) as sim:
        probe_args = argparse.Namespace(**{**vars(args), "weight_limit": 10**12, "share": 1.0})
        probe = backfill(sim.rest_url, days[-args.probe_days :], symbols, work / "probe",
                         probe_args)  # fmt: skip
    s_per_request = probe["wall_s"] / max(1, probe["requests"])

    with simulator(symbols, args.days, args, args.weight_limit) as sim:
        run = backfill(sim.rest_url, days, symbols, work / "lake", args)
        again = backfill(sim.rest_url, days, symbols, work / "lake", args)

    budget = int(args.weight_limit * args.share)
    budget_bound_s = max(0.0, run["weight"] - budget) / budget * 60
    server_bound_s = s_per_request * run["requests"]
    bound = max(budget_bound_s, server_bound_s)
    print(f"klines backfill: {args.days} days x {len(symbols)} symbols, weight limit "
          f"{args.weight_limit}/min, budget {budget}/min (share {args.share}), simulator "
          f"history rate x{args.history_rate_scale}")  # fmt: skip
    print(f"  partitions {run['partitions']} (complete {run['complete']}), rows {run['rows']:,}")
    print(
        f"  requests {run['requests']:,}, weight {run['weight']:,}, 429s {run['http_429']}, "
        f"peak IP weight in a minute {run['max_used_weight']} (limit {args.weight_limit})"
    )
    print(
        f"  wall {run['wall_s']:.1f} s, of which waiting for the next minute "
        f"{run['waited_s']:.1f} s; {run['requests'] / run['wall_s']:.1f} requests/s"
    )
    print(
        f"  baseline budget bound {budget_bound_s:.1f} s; server bound (unpaced, "
        f"{s_per_request * 1000:.1f} ms/request over {probe['requests']} requests) "
        f"{server_bound_s:.1f} s"
    )
    print(f"  ratio wall / max(bounds) = {run['wall_s'] / bound:.2f}" if bound else "")
    print(
        f"  re-run (all complete): {again['skipped']} of {again['partitions']} skipped, "
        f"{again['requests']} requests, {again['wall_s']:.2f} s"
    )
    if args.ui:
        with simulator(symbols, args.days, args, args.weight_limit) as sim:
            ui = ui_backfill(sim.rest_url, days, symbols, work, args)
        print(
            f"  UI backfill (dagster dev, launched as the asset page does): {ui['status']} in "
            f"{ui['wall_s']:.0f} s, runs {ui['runs']}, {ui['complete']} of "
            f"{len(days) * len(symbols)} partitions complete, rows {ui['rows']:,} (in-process: "
            f"{run['rows']:,})"
        )
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
