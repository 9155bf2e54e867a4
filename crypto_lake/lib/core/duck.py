"""The one way the lake opens DuckDB: UTC, no progress bar, optional threads and memory limit.

UTC because TIMESTAMPTZ values render, truncate and bucket in the session time zone: hours,
minutes and days of the lake are UTC ones whatever the machine's zone is.
"""

from __future__ import annotations

from pathlib import Path

import duckdb


def connect(
    database: str | Path = ":memory:",
    *,
    read_only: bool = False,
    threads: int | None = None,
    memory_limit: str | None = None,
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection (in memory unless ``database`` names a file) set up for batch
    jobs: UTC, no progress bar."""
    con = duckdb.connect(str(database), read_only=read_only)
    con.execute("SET enable_progress_bar = false")
    con.execute("SET GLOBAL TimeZone = 'UTC'")  # GLOBAL: its cursors (per-thread use) too
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    if memory_limit:
        con.execute("SET memory_limit = ?", [memory_limit])
    return con
