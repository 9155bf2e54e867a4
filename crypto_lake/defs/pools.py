"""Run-level pools: the instance admits one run of each pool at a time.

`dagster.yaml` sets ``concurrency.pools`` to ``granularity: run`` with ``default_limit: 1``, so
the run queue holds back any run (scheduled, UI backfill, launchpad) whose assets share a pool
with a run in progress: one Yahoo-bound run, one writer of ``state/lake.duckdb``, one run
that writes market partitions, one order book rebuild.

Dagster 1.13 writes a pool's default limit into the instance only when its run queue first
meets the pool, after it has read the known limits for that pass; on a new instance that first
pass admits every queued run of the pool. ``python -m crypto_lake.defs.pools`` writes the limits
up front; the demo, the deploy units and the tests run it before the daemon starts.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from crypto_lake.defs.macro.assets import YAHOO_POOL
from crypto_lake.defs.market.assets import MARKET_POOL
from crypto_lake.defs.market.book import BOOK_POOL
from crypto_lake.defs.ops.assets import DUCKDB_POOL

POOLS = (YAHOO_POOL, DUCKDB_POOL, MARKET_POOL, BOOK_POOL)


def prepare_pools(instance: dg.DagsterInstance) -> dict[str, int]:
    """Write each pool's default limit (from dagster.yaml) into ``instance``, as the run queue
    would, leaving limits set by hand (UI or ``dagster instance concurrency set``) alone;
    returns the limits now in force."""
    storage = instance.event_log_storage
    default = instance.global_op_concurrency_default_limit
    known = {limit.name: limit for limit in storage.get_pool_limits()}
    for pool in POOLS:
        limit = known.get(pool)
        if limit is None or (limit.from_default and limit.limit != default):
            storage.initialize_concurrency_limit_to_default(pool)
    return {limit.name: limit.limit for limit in storage.get_pool_limits() if limit.name in POOLS}


def prepare_home(home: Path) -> dict[str, int]:
    """``prepare_pools`` on the instance whose dagster.yaml is in ``home``."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        return prepare_pools(instance)


def main() -> int:
    with dg.DagsterInstance.get() as instance:
        limits = prepare_pools(instance)
    missing = [p for p in POOLS if p not in limits]
    if missing:
        print(f"no default pool limit for {missing}: set concurrency.pools.default_limit")
        return 1
    print("pool limits: " + ", ".join(f"{p}={n}" for p, n in sorted(limits.items())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
