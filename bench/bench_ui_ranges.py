"""Benchmark: the webserver's partition status ranges of the checks of ``bars_1s`` at a year,
Dagster's ``build_multi_partition_ranges_generic`` against the same function with keys read
by a split (``crypto_lake/ui_partition_keys.py``), in the same run.

    ./dev bench bench_ui_ranges [--days 365] [--checks 9] [--repeats 5]

The market's partitions definition with the 13 configured symbols, ``--days`` days up to
today; each of ``--checks`` checks has results for the last ``--days`` x 13 minus a few
hundred partitions (``bench_history``'s year: 4,218 keys for each of 9 checks), most passed,
some failed, one day in progress. Prints the median time of one checks query's ranges (every
check) for both and their ratio, then the time of the page's second query of the same states
(its answers given again), and checks that all give the same ranges.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--checks", type=int, default=9)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    import dagster as dg
    import dagster_graphql.schema  # noqa: F401 - loads the implementation modules in order
    from dagster._core.storage.asset_check_execution_record import (
        AssetCheckExecutionResolvedStatus as Status,
    )
    from dagster_graphql.implementation.partition_status_utils import (
        build_multi_partition_ranges_generic as dagster_ranges,
    )

    from crypto_lake.defs.market.partitions import market_partitions as pdef
    from crypto_lake.ui_partition_keys import split_keys_ranges

    symbols = len(pdef.secondary_dimension.partitions_def.get_partition_keys())
    keys = pdef.get_partition_keys()[-(args.days + 1) * symbols : -2 * symbols]
    rng = random.Random(3)
    checks = []
    for _ in range(args.checks):
        have = [k for k in keys if rng.random() > 0.09]
        failed = set(rng.sample(have, len(have) // 50))
        running = have[-symbols:]
        checks.append({
            Status.SUCCEEDED: [k for k in have if k not in failed and k not in running],
            Status.FAILED: sorted(failed), Status.IN_PROGRESS: running,
        })  # fmt: skip
    subsets = [{s: pdef.empty_subset().with_partition_keys(ks) for s, ks in c.items()}
               for c in checks]  # fmt: skip
    store = dg.DagsterInstance.ephemeral()

    def secondary(by_status) -> tuple:
        return tuple(sorted((s.value, tuple(sorted(sub.get_partition_keys())))
                            for s, sub in by_status.items()))  # fmt: skip

    def query(ranges) -> tuple[float, list]:
        t0 = time.perf_counter()
        out = [ranges(s, pdef, store, secondary) for s in subsets]
        return time.perf_counter() - t0, out

    names = ("dagster", "split keys", "page's second query")
    times: dict[str, list[float]] = {n: [] for n in names}
    answers = {}
    for _ in range(args.repeats):  # interleaved, so all see the machine alike
        faster = split_keys_ranges(dagster_ranges)  # a fresh one: nothing recent yet
        for name, ranges in zip(names, (dagster_ranges, faster, faster), strict=True):
            took, answers[name] = query(ranges)
            times[name].append(took)
    if not answers["dagster"] == answers["split keys"] == answers["page's second query"]:
        raise SystemExit("the ranges differ")
    base, ours, again = (statistics.median(times[n]) for n in names)
    n_keys = sum(len(ks) for c in checks for ks in c.values())
    print(f"{args.checks} checks, {n_keys:,} partition keys with a status "
          f"({n_keys // args.checks:,} a check), {len(keys):,} partitions")  # fmt: skip
    print(f"Dagster's ranges: {base:.3f} s a query (median of {args.repeats})")
    print(f"keys read by a split: {ours:.3f} s; {base / ours:.1f}x; the same ranges")
    print(f"the page's second query (the same subset objects): {again:.4f} s; the same ranges")


if __name__ == "__main__":
    main()
