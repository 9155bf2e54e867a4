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


# The book's coverage joined to each minute of `coverage` (NULL where no book was rebuilt for
# the minute: a symbol without depth, or a book not rebuilt yet): seconds proved right, the
# others before the book's end (pending excluded), and why they are not.
BOOK_COLUMNS = ("book_seconds_reliable", "book_seconds_unreliable", "book_unreliable_reasons")
# why a second is not proved: every coverage_book count but reliable and pending
_BOOK_REASONS = tuple(c.removeprefix("seconds_") for c in schema.COVERAGE_BOOK.names
                      if c.startswith("seconds_")
                      and c not in ("seconds_reliable", "seconds_pending"))  # fmt: skip
_COVERAGE_SQL = """
CREATE OR REPLACE VIEW coverage AS
SELECT c.*, b.seconds_reliable AS book_seconds_reliable,
    ({unreliable})::INTEGER AS book_seconds_unreliable,
    CASE WHEN b.minute IS NOT NULL THEN list_filter([{reasons}], lambda r: r IS NOT NULL) END
        AS book_unreliable_reasons
FROM ({coverage}) c
LEFT JOIN ({book}) b ON b.symbol = c.symbol AND b.date = c.date AND b.minute = c.minute
"""
# coverage_daily with the book's seconds of the day, where it was rebuilt
_BOOK_DAILY_SQL = """
SELECT symbol, date, sum(seconds_reliable)::BIGINT AS book_seconds_reliable,
    sum({unreliable})::BIGINT AS book_seconds_unreliable,
    round(100.0 * sum(seconds_reliable) / nullif(sum(60 - seconds_pending), 0), 3)
        AS book_pct_reliable
FROM coverage_book GROUP BY symbol, date
"""


def _coverage_views(layout: LakeLayout) -> list[str]:
    """The views ``coverage`` (the table, with the book's seconds per minute) and
    ``coverage_daily`` (summed per day). Files of coverage schema v1 have no seconds_archive:
    a lake holding only those still binds."""
    unreliable = " + ".join(f"b.seconds_{r}" for r in _BOOK_REASONS)
    reasons = ", ".join(f"CASE WHEN b.seconds_{r} > 0 THEN '{r}' END" for r in _BOOK_REASONS)
    table = dataset_source(layout, "coverage")
    coverage_sql = _COVERAGE_SQL.format(
        unreliable=unreliable, reasons=reasons, book=dataset_source(layout, "coverage_book"),
        coverage=f"{table} UNION ALL BY NAME SELECT NULL::INTEGER AS seconds_archive WHERE false",
    )  # fmt: skip
    daily = coverage.DAILY_SQL.format(source="coverage")
    book = _BOOK_DAILY_SQL.format(unreliable=" + ".join(f"seconds_{r}" for r in _BOOK_REASONS))
    return [
        coverage_sql,
        f"CREATE OR REPLACE VIEW coverage_daily AS SELECT d.*, b.book_seconds_reliable, "
        f"b.book_seconds_unreliable, b.book_pct_reliable FROM ({daily}) d "
        f"LEFT JOIN ({book}) b ON b.symbol = d.symbol AND b.date = d.date",
    ]


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
    """CREATE VIEW statements for the market datasets (``coverage`` with the book's seconds
    joined), the bars-vs-klines comparison and the daily coverage summary."""
    out = [f"CREATE OR REPLACE VIEW {d} AS {dataset_source(layout, d)}" for d in VIEW_DATASETS
           if d != "coverage"]  # fmt: skip
    return [*out, *_coverage_views(layout), _COMPARE_SQL]


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
