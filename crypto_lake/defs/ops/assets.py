"""The DuckDB query layer: one database file with views over the hive-partitioned Parquet."""

from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource

from crypto_lake.defs.resources import LakeResource
from crypto_lake.lib.market.views import build_lake_views

# DuckDB allows one writing process per database file: every writer of state/lake.duckdb
# uses this pool. No instance file limits it yet (`dagster instance concurrency set
# lake_duckdb 1` does); the 00:30 schedule is its only automatic writer.
DUCKDB_POOL = "lake_duckdb"


def _view_names(lake_db: DuckDBResource) -> list[str]:
    with lake_db.get_connection() as con:
        rows = con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()
    return sorted(r[0] for r in rows)


@dg.asset(
    deps=["trades", "quotes", "bars_1s", "bars_1m", "binance_klines_1m"],
    group_name="ops",
    kinds={"duckdb"},
    pool=DUCKDB_POOL,
)
def lake_views(
    context: dg.AssetExecutionContext, lake: LakeResource, lake_db: DuckDBResource
) -> dg.MaterializeResult:
    """`state/lake.duckdb`: DuckDB views bars_1s, bars_1m, trades, quotes, klines_1m and
    compare_bars_vs_klines_1m over the lake's Parquet (open it read-only with
    `duckdb state/lake.duckdb`). Built in a temporary file and renamed into place, so readers
    never see a half-built database."""
    final = build_lake_views(lake.layout)  # builds a temp file and renames it into place
    if Path(lake_db.database).resolve() != final.resolve():
        raise dg.Failure(f"lake_db opens {lake_db.database}, not the lake's {final}")
    views = _view_names(lake_db)
    context.log.info(f"{len(views)} views in {final}")
    return dg.MaterializeResult(
        metadata={
            "dagster/uri": dg.MetadataValue.path(str(final)),
            "views": dg.MetadataValue.text(", ".join(views)),
            "view_count": len(views),
        }
    )


lake_views_job = dg.define_asset_job(
    "lake_views_job", selection=[lake_views], description="Rebuild the DuckDB views file."
)


@dg.schedule(
    name="lake_views_daily",
    job=lake_views_job,
    cron_schedule="30 0 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Rebuilds the DuckDB views daily (they read the Parquet globs at query time, "
    "so new partitions appear without a rebuild; this picks up new datasets and schemas).",
)
def lake_views_daily(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    return dg.RunRequest(run_key=None)
