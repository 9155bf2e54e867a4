"""pandera contracts of the lake's tables, generated from their definitions (``schema``).

A contract validates a table the way pandas reads our Parquet (``read_frame``): decimals are
object columns of ``Decimal``, timestamps ``datetime64[unit, UTC]`` (a timestamp[s] column
reads back in ms), dates objects of ``datetime.date``, strings objects of ``str``. It checks
the columns (all of them, in order), their dtypes, nullability, the value bounds and row
rules of the definition (each where its columns are not null), the unique key and the sort
order. An integer column that may be null reads back as float64 when it holds a null: the
contract reads it as pandas' nullable integer instead (the values are unchanged).

``validate_file`` also compares the file's Arrow schema with the definition, and returns the
failures as rows for a report (the ``schema_contract`` asset check, the tests).
"""

from __future__ import annotations

import decimal
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pandera
import pyarrow as pa
import pyarrow.parquet as pq
from pandera.engines import pandas_engine

from crypto_lake.lib.core.schema import Column, Dataset, dataset, schema_differences, stored_type

MAX_FAILURES = 50  # failure rows kept in a result


def _dtype(col: Column) -> Any:
    """The pandas dtype of a column as pandas reads it from our Parquet."""
    t = stored_type(col.arrow)
    if pa.types.is_decimal(t):
        return object  # of Decimal: see _is_decimal
    if pa.types.is_timestamp(t):
        return pd.DatetimeTZDtype(t.unit, t.tz) if t.tz else f"datetime64[{t.unit}]"
    if pa.types.is_date(t):
        return pandas_engine.Date()
    if pa.types.is_string(t):
        return str
    if pa.types.is_integer(t) and col.nullable:
        return f"Int{t.bit_width}"  # pandas' nullable integers (coerced from float64)
    return t.to_pandas_dtype()


def _is_decimal(t: pa.DataType) -> pandera.Check:
    """Every value a ``Decimal``. (pandera's own Decimal dtype also checks precision and scale,
    through a string split of every value: 6 s for a day of 1 s bars. The file's Arrow type
    gives both, and ``validate_file`` checks it.)"""
    return pandera.Check(lambda s: s.map(type).eq(decimal.Decimal), name=f"Decimal ({t})")


def _column_checks(col: Column) -> list[pandera.Check]:
    checks = [_is_decimal(col.arrow)] if pa.types.is_decimal(col.arrow) else []
    if col.gt is not None:
        checks.append(pandera.Check.gt(col.gt))
    if col.ge is not None:
        checks.append(pandera.Check.ge(col.ge))
    if col.le is not None:
        checks.append(pandera.Check.le(col.le))
    if col.isin:
        checks.append(pandera.Check.isin(list(col.isin)))
    return checks


def _rule_check(ds: Dataset, rule: str) -> pandera.Check:
    """A row rule (``high >= low``) over the rows where its columns are not null."""
    columns = ds.rule_columns(rule)

    def holds(df: pd.DataFrame) -> pd.Series:
        known = df[columns].notna().all(axis=1).to_numpy()
        ok = np.ones(len(df), dtype=bool)
        if known.any():
            # exact decimal arithmetic: price x qty has up to 38 digits
            with decimal.localcontext() as ctx:
                ctx.prec = 80
                ok[known] = df.loc[known, columns].eval(rule, engine="python").to_numpy(bool)
        return pd.Series(ok, index=df.index)

    # ignore_na=False: ``holds`` passes the rows with a null itself; pandera's own pass would
    # compute isna over the whole frame once per rule (a third of a bars_1s validation)
    return pandera.Check(holds, name=rule, ignore_na=False)


def _sort_check(ds: Dataset) -> pandera.Check:
    keys = list(ds.sort_keys)
    ascending = [k not in ds.descending for k in keys]

    def is_sorted(df: pd.DataFrame) -> bool:
        order = df[keys].sort_values(keys, ascending=ascending, kind="stable").index
        return bool((order == df.index).all())

    return pandera.Check(is_sorted, name="sorted")


@cache
def contract(name: str) -> pandera.DataFrameSchema:
    """The pandera contract of dataset ``name`` (lib/core/schema.py)."""
    ds = dataset(name)
    columns = {
        c.name: pandera.Column(
            _dtype(c),
            checks=_column_checks(c),
            nullable=c.nullable,
            coerce=pa.types.is_integer(c.arrow) and c.nullable,
            description=c.description,
        )
        for c in ds.columns
    }
    return pandera.DataFrameSchema(
        columns,
        checks=[*(_rule_check(ds, r) for r in ds.rules), _sort_check(ds)],
        unique=list(ds.unique) or None,
        strict=True,
        ordered=True,
        name=f"{ds.name} v{ds.version}",
        description=ds.description,
    )


def read_frame(path: Path) -> pd.DataFrame:
    """A lake file as pandas reads it (decimals as Decimal, UTC timestamps)."""
    return pq.read_table(path).to_pandas()


@dataclass
class ContractResult:
    """What validating one file found."""

    dataset: str
    rows: int
    failures: list[dict[str, Any]] = field(default_factory=list)  # the first MAX_FAILURES
    failure_count: int = 0

    @property
    def passed(self) -> bool:
        return self.failure_count == 0


def validate_frame(frame: pd.DataFrame, name: str) -> ContractResult:
    """Validate ``frame`` against the contract of ``name``, collecting every failure."""
    result = ContractResult(name, len(frame))
    try:
        contract(name).validate(frame, lazy=True)
    except pandera.errors.SchemaErrors as exc:
        cases = _one_per_row_and_check(exc.failure_cases)
        result.failure_count = len(cases)
        result.failures = [
            {k: (None if pd.isna(v) else str(v)) for k, v in r.items()}
            for r in cases.head(MAX_FAILURES).to_dict("records")
        ]
    return result


def _one_per_row_and_check(cases: pd.DataFrame) -> pd.DataFrame:
    """pandera's failure cases, a table-level check (a row rule) reported once per failing
    row instead of once per column of it."""
    table = (cases["schema_context"] == "DataFrameSchema") & cases["index"].notna()
    rows = cases[table].drop_duplicates(["check", "index"]).assign(column=None, failure_case=None)
    out = pd.concat([cases[~table], rows]) if table.any() else cases
    return out[["column", "check", "failure_case", "index"]]


def validate_file(path: Path, name: str) -> ContractResult:
    """The file's Arrow schema against the definition, then its rows against the contract."""
    diffs = schema_differences(name, pq.read_schema(path), stored=True)
    if diffs:
        rows = pq.ParquetFile(path).metadata.num_rows
        failures = [{"column": None, "check": "arrow schema", "failure_case": d} for d in diffs]
        return ContractResult(name, rows, failures, len(failures))
    return validate_frame(read_frame(path), name)
