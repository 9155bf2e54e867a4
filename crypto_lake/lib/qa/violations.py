"""R1–R7 violations as QA rows (``qa_violations``, SPEC §7).

The rules have one implementation, ``crypto_lake.lib.qa.rules``: the asset checks on bars_1s
ask it "does the partition pass?" (``evaluate_rules``), QA asks it "which seconds broke which
rule?" (``violation_rows``) over the same files, so QA never reports a violation the checks
do not see, or the other way round. This module only names the symbol and keeps the rows of
the window a QA run covers: one row per offending second, per run of missing seconds, per
trade-id gap and per R7 minute, with the rule's severity.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crypto_lake.lib.core.schema import QA_VIOLATIONS
from crypto_lake.lib.qa.rules import violation_rows

VIOLATION_SCHEMA = QA_VIOLATIONS.arrow_schema()  # lib/core/schema.py


def find_violations(
    symbol: str,
    bars_1s: Path | str,
    *,
    klines_1m: Path | str | None = None,
    trades: Path | str | None = None,
    window: tuple[int, int] | None = None,
) -> pa.Table:
    """The R1–R7 rows of one symbol's bars_1s partition (a file or glob), as VIOLATION_SCHEMA.

    The rules run over the whole partition, exactly as the asset checks do (R5 and R4 need
    the rows before the window); ``window`` = (start, end) epoch seconds, end exclusive, then
    keeps the rows whose second lies inside it. ``klines_1m`` enables R7, ``trades`` makes R5
    read trade-id gaps from the trades file (as the checks do when it exists).
    """
    rows = violation_rows(bars_1s, klines_1m, trades)
    if window is not None:
        ts = rows["ts"].cast(pa.int64())
        rows = rows.filter(pc.and_(pc.greater_equal(ts, window[0]), pc.less(ts, window[1])))
    names = np.full(rows.num_rows, symbol, dtype=object)
    return rows.add_column(0, "symbol", pa.array(names, pa.string())).cast(VIOLATION_SCHEMA)
