"""Fixtures for the QA tests: short seeded synthetic days with labelled anomalies, and real
bars_1s days built from raw lines by the market library."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pytest

from crypto_lake.lib.raw.lines import session_line
from crypto_lake.simulator.anomalies import AnomalyPlan, inject_bar_anomalies
from crypto_lake.simulator.synthetic_bars import (
    bars_table,
    day_start_us,
    seeded_rng,
    synthetic_bars_columns,
)
from crypto_lake_tests.lib import rawgen

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


def sparse_day_lines(start_ms: int, minutes: int, seed: int = 5) -> list[tuple[int, bytes]]:
    """Raw lines of a day the recorder watched only ``minutes`` from ``start_ms`` (rawgen.DAY):
    disconnected from just after midnight until then, and for good afterwards. The market
    traded all day; the lake holds only what was received while connected."""
    rng = random.Random(seed)
    end = start_ms + minutes * 60_000
    trades: list[rawgen.Trade] = []
    quotes: list[rawgen.Quote] = []
    t, px = start_ms, 6_000_000_000_000  # price in 1e-8 units; the book sits 0.005 around it
    while (t := t + rng.choice([50, 100, 200, 400, 900])) < end:
        if rng.random() < 0.6:
            px += rng.choice([0, 0, 1, -1, 3, -3]) * 1_000_000
            qty = rawgen._dec(rng.randint(1, 10**8))
            trades.append(rawgen.Trade(10_000 + len(trades), t, rawgen._dec(px), qty,
                                       rng.random() < 0.5))  # fmt: skip
        else:
            bid, ask = rawgen._dec(px - 500_000), rawgen._dec(px + 500_000)
            quotes.append(rawgen.Quote(900_000 + 7 * len(quotes), t, bid, "1.00000000", ask,
                                       "1.00000000"))  # fmt: skip
    lines = rawgen.clean_lines(trades, quotes)
    lines += rawgen.disconnect_lines(rawgen.DAY_START_MS + 500, start_ms - 1000)
    lines.append((end + 10, session_line((end + 10) * 1_000_000, "ws-9", "disconnect")))
    return sorted(lines, key=lambda x: x[0])
