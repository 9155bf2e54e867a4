"""Fixtures for the QA tests: short seeded synthetic days with labelled anomalies."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from crypto_lake.simulator.anomalies import AnomalyPlan, inject_bar_anomalies
from crypto_lake.simulator.synthetic_bars import (
    bars_table,
    day_start_us,
    seeded_rng,
    synthetic_bars_columns,
)

DAY = "2026-11-20"
HOURS = 6  # long enough for the 1 h z-score window, short enough to keep tests fast


def make_day(
    symbol: str, plan: AnomalyPlan | None, *, seed: int = 3, seconds: int = HOURS * 3600
) -> tuple[pa.Table, pa.Table | None]:
    """(bars, ground truth) of a synthetic day prefix with ``plan`` injected."""
    cols = synthetic_bars_columns(symbol, DAY, seed, seconds=seconds)
    truth = None
    if plan is not None:
        rng = seeded_rng(seed + 100, symbol, DAY)
        truth = inject_bar_anomalies(symbol, cols, plan, rng, day_start_us(DAY) // 1_000_000)
    return bars_table(symbol, DAY, cols), truth


def window_of(bars: pa.Table) -> tuple[int, int]:
    start = day_start_us(DAY) // 1_000_000
    return start, start + bars.num_rows


def overlaps(events: pa.Table, start: int, end: int, tol: int = 5) -> bool:
    es = events["start"].cast(pa.int64()).to_numpy()
    ee = events["end"].cast(pa.int64()).to_numpy()
    return bool(np.any((es <= end + tol) & (ee >= start - tol)))


@pytest.fixture(scope="session")
def anomalous_day() -> tuple[pa.Table, pa.Table]:
    plan = AnomalyPlan.market(jumps=6, blowouts=2, spikes=3, stale=2)
    return make_day("SOLUSDT", plan)
