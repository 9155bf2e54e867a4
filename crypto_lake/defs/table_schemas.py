"""The lake's table definitions (``crypto_lake.lib.core.schema``) as Dagster shows them.

``column_schema`` is the table schema of an asset's page (``dagster/column_schema``): every
column's type, meaning and nullability, the value bounds that hold by construction, and the
table's sort order, unique key and row rules. ``asset_description`` starts an asset's
description with its table's own paragraph, so the UI and the registry say the same thing.
"""

from __future__ import annotations

import dagster as dg

from crypto_lake.lib.core.schema import Dataset, dataset

COLUMN_SCHEMA = "dagster/column_schema"


def _table_constraints(ds: Dataset) -> list[str]:
    order = ", ".join(f"{k} desc" if k in ds.descending else k for k in ds.sort_keys)
    out = [f"schema version {ds.version}", f"files: {ds.path}", f"sorted by ({order})"]
    if ds.unique:
        out.append(f"unique by ({', '.join(ds.unique)})")
    return [*out, *(f"{rule} (where not null)" for rule in ds.rules)]


def column_schema(name: str) -> dg.TableSchema:
    """The registered columns of dataset ``name`` as a Dagster table schema."""
    ds = dataset(name)
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=c.name,
                type=str(c.arrow),
                description=c.description,
                constraints=dg.TableColumnConstraints(
                    nullable=c.nullable, unique=ds.unique == (c.name,), other=c.bounds
                ),
            )
            for c in ds.columns
        ],
        constraints=dg.TableConstraints(other=_table_constraints(ds)),
    )


def table_metadata(name: str) -> dict[str, dg.TableSchema]:
    """Definition metadata: the table schema the asset page shows before any materialization."""
    return {COLUMN_SCHEMA: column_schema(name)}


def asset_description(name: str, more: str = "") -> str:
    """The table's paragraph (lib/core/schema.py), then what the asset adds (``more``)."""
    ds = dataset(name)
    text = f"{ds.description} {more}".strip()
    return f"{text}\n\nTable `{ds.name}`, schema version {ds.version}: see its columns below."
