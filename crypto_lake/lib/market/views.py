"""The query layer (SPEC §10): a DuckDB database file of views over the lake's Parquet.

Views read hive-partitioned Parquet directly, so they always see the current files; the
database only stores the view definitions. Paths come from :class:`LakeLayout` (whose parts
are validated) and are embedded as escaped SQL string literals. A dataset with no files yet
gets an empty view of the right columns, so queries bind on a fresh lake.

The database is built under a temporary name and renamed into place, so a reader never
opens a half-built file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from crypto_lake.lib.core import schema
from crypto_lake.lib.core.duck import connect
from crypto_lake.lib.core.fsutil import make_dirs, set_file_mode
from crypto_lake.lib.core.logs import get_logger
from crypto_lake.lib.core.paths import EXCHANGE, MARKET_DATASETS, LakeLayout
from crypto_lake.lib.market import coverage

log = get_logger("views")

# Columns of each dataset (lib/core/schema.py), for the empty views of a fresh lake; the hive
# columns exchange and date come last (coverage's own date column is that one).
_HIVE = [("exchange", "VARCHAR"), ("date", "DATE")]
SCHEMAS: dict[str, list[tuple[str, str]]] = {
    name: [c for c in schema.dataset(name).duckdb_columns() if c[0] not in dict(_HIVE)]
    for name in MARKET_DATASETS
}
VIEW_DATASETS = tuple(SCHEMAS)

_COMPARE_SQL = """
CREATE OR REPLACE VIEW compare_bars_vs_klines_1m AS
SELECT coalesce(b.symbol, k.symbol) AS symbol, coalesce(b.window_start, k.open_time) AS minute,
    b.open AS bar_open, k.open AS kline_open, b.high AS bar_high, k.high AS kline_high,
    b.low AS bar_low, k.low AS kline_low, b.close AS bar_close, k.close AS kline_close,
    b.volume_base AS bar_volume, k.volume AS kline_volume,
    b.volume_quote AS bar_quote_volume, k.quote_volume AS kline_quote_volume,
    b.trade_count AS bar_trade_count, k.trade_count AS kline_trade_count,
    (b.open = k.open AND b.high = k.high AND b.low = k.low AND b.close = k.close
     AND b.volume_base = k.volume AND b.trade_count = k.trade_count) AS matches
FROM bars_1m b FULL JOIN klines_1m k ON b.symbol = k.symbol AND b.window_start = k.open_time
"""


# "What can I trust for this day across symbols": coverage summed per symbol and date. Files
# of coverage schema v1 have no seconds_archive: a lake holding only those still binds.
_COVERAGE_DAILY_SQL = "CREATE OR REPLACE VIEW coverage_daily AS " + coverage.DAILY_SQL.format(
    source="(SELECT * FROM coverage UNION ALL BY NAME "
    "SELECT NULL::INTEGER AS seconds_archive WHERE false)"
)


# The order book's coverage per symbol and minute: seconds whose rebuilt book is proved right,
# and the others with why not (a sequence gap until the resync, no snapshot yet, ...).
_COVERAGE_BOOK_SQL = """
CREATE OR REPLACE VIEW coverage_book AS
SELECT symbol, date, time_bucket(INTERVAL 1 minute, window_start) AS minute,
    count(*) AS seconds,
    count(*) FILTER (WHERE reliable) AS seconds_reliable,
    count(*) FILTER (WHERE NOT reliable) AS seconds_unreliable,
    list(DISTINCT unreliable_reason) FILTER (WHERE NOT reliable) AS unreliable_reasons
FROM book_1s GROUP BY ALL
"""


def sql_literal(path: Path | str) -> str:
    """A path as a single-quoted SQL string literal."""
    return "'" + str(path).replace("'", "''") + "'"


def dataset_glob(layout: LakeLayout, dataset: str) -> Path:
    return layout.dataset_root(dataset) / f"exchange={EXCHANGE}" / "*" / "*" / "*.parquet"


def dataset_source(layout: LakeLayout, dataset: str) -> str:
    """SELECT over a dataset's partitions (hive columns exchange/date added), or an empty one."""
    glob = dataset_glob(layout, dataset)
    if any(layout.dataset_root(dataset).glob(f"exchange={EXCHANGE}/*/*/*.parquet")):
        return (
            f"SELECT * FROM read_parquet({sql_literal(glob)}, hive_partitioning = true, "
            "union_by_name = true)"
        )
    cols = [*SCHEMAS[dataset], *_HIVE]
    return "SELECT " + ", ".join(f"NULL::{t} AS {n}" for n, t in cols) + " WHERE false"


def view_statements(layout: LakeLayout) -> list[str]:
    """CREATE VIEW statements for the market datasets, the bars-vs-klines comparison, the
    daily coverage summary and the order book's coverage per minute."""
    out = [f"CREATE OR REPLACE VIEW {d} AS {dataset_source(layout, d)}" for d in VIEW_DATASETS]
    return [*out, _COMPARE_SQL, _COVERAGE_DAILY_SQL, _COVERAGE_BOOK_SQL]


def _default_extra(layout: LakeLayout) -> list[str]:
    """Views other domains contribute (macro_minute, ...), when their module is present."""
    try:
        from crypto_lake.lib.macro.store import macro_view_statements
    except ImportError:
        return []
    return macro_view_statements(layout)


def build_lake_views(
    layout: LakeLayout,
    db_path: Path | None = None,
    extra_statements: Iterable[str] | Callable[[LakeLayout], Iterable[str]] | None = None,
) -> Path:
    """(Re)create the views database (default ``state/lake.duckdb``); returns its path.

    ``extra_statements`` adds views of other domains; by default the macro views are added.
    """
    db_path = Path(db_path or layout.duckdb_path)
    make_dirs(db_path.parent)
    if extra_statements is None:
        extra = _default_extra(layout)
    elif callable(extra_statements):
        extra = list(extra_statements(layout))
    else:
        extra = list(extra_statements)
    tmp = db_path.with_name(f".{db_path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        con = connect(tmp)
        try:
            for stmt in [*view_statements(layout), *extra]:
                con.execute(stmt)
            con.execute("CHECKPOINT")
        finally:
            con.close()
        set_file_mode(tmp)  # the lake's file-mode policy (fsutil), whatever DuckDB's umask
        os.replace(tmp, db_path)
    finally:
        tmp.unlink(missing_ok=True)
        Path(f"{tmp}.wal").unlink(missing_ok=True)
    log.info("lake views written to %s", db_path)
    return db_path
