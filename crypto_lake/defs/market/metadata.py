"""Metadata helpers: what the UI shows for every materialization of a market table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow.parquet as pq

from crypto_lake.defs.table_schemas import COLUMN_SCHEMA, column_schema

PREVIEW_ROWS = 5


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|")


def markdown_table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    """A small Markdown table; an empty list renders as '_none_'."""
    if not rows:
        return "_none_"
    columns = columns or list(rows[0].keys())
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def parquet_preview(path: Path, rows: int = PREVIEW_ROWS) -> str:
    """The first rows of a Parquet file as Markdown (reads one row group at most)."""
    if not path.exists():
        return "_no file_"
    pf = pq.ParquetFile(path)
    if pf.metadata.num_rows == 0:
        return "_empty_"
    head = pf.read_row_group(0).slice(0, rows).to_pylist()
    return markdown_table(head)


def base_metadata(path: Path, rows: int, dataset: str) -> dict[str, dg.RawMetadataValue]:
    """Standard metadata every market table records; the column schema is the registered one
    of ``dataset`` (lib/core/schema.py), which its writer checked the file against."""
    meta: dict[str, dg.RawMetadataValue] = {
        "dagster/row_count": rows,
        "dagster/uri": dg.MetadataValue.path(str(path)),
    }
    if path.exists():
        meta[COLUMN_SCHEMA] = column_schema(dataset)
        meta["bytes"] = path.stat().st_size
    return meta


def combine_runs(
    per_partition: dict[str, dict[str, Any]], numeric_keys: list[str]
) -> dict[str, Any]:
    """Metadata for a run covering several partitions: run totals plus a per-partition table.

    Dagster attaches one MaterializeResult to every partition of a ranged run, so only
    run-level numbers (prefixed ``run_``) go here; each partition's exact numbers are in the
    table and in one AssetObservation per partition.
    """
    totals: dict[str, Any] = {f"run_{k.split('/')[-1]}": 0 for k in numeric_keys}
    rows = []
    for key, meta in sorted(per_partition.items()):
        for k in numeric_keys:
            totals[f"run_{k.split('/')[-1]}"] += int(meta.get(k, 0) or 0)
        rows.append({"partition": key, **{k.split("/")[-1]: meta.get(k, 0) for k in numeric_keys}})
    totals["run_partitions"] = len(per_partition)
    totals["per_partition"] = dg.MetadataValue.md(markdown_table(rows))
    return totals
