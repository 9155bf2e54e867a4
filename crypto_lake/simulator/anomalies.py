"""Labelled anomaly injection, with a ground-truth file, for evaluating the QA pipeline.

Two targets:

* ``bars_1s``-shaped columns (``inject_bar_anomalies``): price jumps, spread blowouts, volume
  spikes, stale quotes, crossed book, and the critical rule breaks R1 (low/high not bracketing
  open/close), R2 (non-positive price) and R4 (NaN in O/H/L/C);
* trade/quote streams as Arrow tables (``inject_trade_quote_anomalies``): price jumps, volume
  spikes (a burst of extra trades), crossed book and stale quotes, so the same anomalies can be
  pushed through the tick -> bar path.

Every injected event is one ground-truth row: symbol, kind, start/end second (inclusive,
epoch seconds), magnitude, and the severity of the rule it breaks (``critical``/``major`` or
``none`` for market anomalies that break no rule). Placement and sizes come from a seeded
generator, so the same plan and seed give the same labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from crypto_lake.lib.core.fsutil import atomic_path
from crypto_lake.simulator.synthetic_bars import (
    recompute_quote_columns,
    renumber_trade_ids,
)

MARKET_KINDS = ("price_jump", "spread_blowout", "volume_spike", "stale_quotes", "crossed_book")
CRITICAL_KINDS = ("r1_ohlc_order", "r2_nonpositive_price", "r4_nan_ohlc")
SEVERITY = {"crossed_book": "major", **dict.fromkeys(CRITICAL_KINDS, "critical")}
# (min, max) duration in seconds of each kind.
DURATION = {
    "price_jump": (1, 1),
    "spread_blowout": (5, 60),
    "volume_spike": (1, 5),
    "stale_quotes": (300, 900),
    "crossed_book": (1, 5),
    "r1_ohlc_order": (1, 3),
    "r2_nonpositive_price": (1, 2),
    "r4_nan_ohlc": (1, 3),
}
GROUND_TRUTH_SCHEMA = pa.schema(
    [
        ("symbol", pa.string()),
        ("kind", pa.string()),
        ("start", pa.int64()),  # epoch seconds, inclusive
        ("end", pa.int64()),  # epoch seconds, inclusive
        ("magnitude", pa.float64()),
        ("severity", pa.string()),
    ]
)


@dataclass(frozen=True)
class AnomalyPlan:
    """How many events of each kind to inject into one symbol-day."""

    counts: dict[str, int] = field(default_factory=dict)
    # Sizes: jumps in multiples of the trailing 10-minute return std; the others as factors.
    jump_sigmas: tuple[float, float] = (8.0, 20.0)
    spread_factor: tuple[float, float] = (10.0, 40.0)
    volume_factor: tuple[float, float] = (100.0, 1000.0)
    # No event starts before this second: the detectors' trailing windows need history.
    warmup_seconds: int = 1800

    @staticmethod
    def market(jumps: int = 10, blowouts: int = 4, spikes: int = 6, stale: int = 3) -> AnomalyPlan:
        return AnomalyPlan(
            {
                "price_jump": jumps,
                "spread_blowout": blowouts,
                "volume_spike": spikes,
                "stale_quotes": stale,
            }
        )

    def with_counts(self, **extra: int) -> AnomalyPlan:
        return AnomalyPlan(
            {**self.counts, **extra},
            self.jump_sigmas,
            self.spread_factor,
            self.volume_factor,
            self.warmup_seconds,
        )


def _place(rng: np.random.Generator, plan: AnomalyPlan, n: int) -> list[tuple[str, int, int]]:
    """Non-overlapping (kind, start, end) slots: one per equal segment of the day, so events
    sit at least a few minutes apart and each detector sees clean history before an event."""
    kinds = [k for k, c in sorted(plan.counts.items()) for _ in range(c)]
    rng.shuffle(kinds)
    if not kinds:
        return []
    seg = (n - plan.warmup_seconds) // len(kinds)
    slots = []
    for i, kind in enumerate(kinds):
        lo_d, hi_d = DURATION[kind]
        dur = int(rng.integers(lo_d, hi_d + 1))
        margin = min(120, seg // 4)
        lo = plan.warmup_seconds + i * seg + margin
        hi = plan.warmup_seconds + (i + 1) * seg - dur - margin
        start = int(rng.integers(lo, max(lo + 1, hi)))
        slots.append((kind, start, start + dur - 1))
    return slots


def _trailing_return_std(close: np.ndarray, t: int, window: int = 600) -> float:
    seg = close[max(0, t - window) : t]
    seg = seg[np.isfinite(seg) & (seg > 0)]
    r = np.diff(np.log(seg))
    return float(r.std()) if len(r) > 10 and r.std() > 0 else 1e-4


def _price_jump(cols: dict, rng: np.random.Generator, plan: AnomalyPlan, t: int) -> float:
    sigmas = rng.uniform(*plan.jump_sigmas)
    size = sigmas * _trailing_return_std(cols["close"], t) * rng.choice([-1.0, 1.0])
    factor = float(np.exp(size))
    for name in ("open", "high", "low", "close", "vwap", "bid", "ask"):
        cols[name][t + (name == "open") :] *= factor
    # The jump second trades from the old level to the new one, in a burst of trades.
    o, c = cols["open"][t], cols["close"][t]
    cols["high"][t], cols["low"][t] = max(o, c), min(o, c)
    cols["vwap"][t] = (o + c) / 2
    burst = max(int(cols["trade_count"][t]), 5) + int(rng.poisson(10))
    scale = burst / max(int(cols["trade_count"][t]), 1)
    cols["trade_count"][t] = burst
    for name in ("volume_base", "taker_buy_base"):
        cols[name][t] = (cols[name][t] or 1e-3) * scale
    cols["volume_quote"][t] = cols["volume_base"][t] * cols["vwap"][t]
    return float(sigmas)


def _inject_one(
    cols: dict, rng: np.random.Generator, plan: AnomalyPlan, kind: str, t0: int, t1: int
) -> float:
    """Apply one event in place; returns its magnitude."""
    s = slice(t0, t1 + 1)
    if kind == "price_jump":
        return _price_jump(cols, rng, plan, t0)
    if kind == "spread_blowout":
        f = rng.uniform(*plan.spread_factor)
        mid, half = (cols["bid"][s] + cols["ask"][s]) / 2, (cols["ask"][s] - cols["bid"][s]) / 2
        cols["bid"][s], cols["ask"][s] = mid - half * f, mid + half * f
        return float(f)
    if kind == "volume_spike":
        f = rng.uniform(*plan.volume_factor)
        count = np.maximum(cols["trade_count"][s], 1)
        cols["trade_count"][s] = np.ceil(count * np.sqrt(f)).astype(np.int64)
        base = np.where(cols["volume_base"][s] > 0, cols["volume_base"][s], 1e-3)
        price = np.where(np.isfinite(cols["vwap"][s]), cols["vwap"][s], cols["close"][s])
        cols["vwap"][s] = price
        cols["volume_base"][s] = base * f
        cols["taker_buy_base"][s] = base * f * 0.5
        cols["volume_quote"][s] = base * f * price
        return float(f)
    if kind == "stale_quotes":
        for name in ("bid", "ask", "bid_qty", "ask_qty"):
            cols[name][s] = cols[name][t0 - 1]
        return float(t1 - t0 + 1)
    if kind == "crossed_book":
        ticks = int(rng.integers(1, 4))
        width = np.maximum(cols["ask"][s] - cols["bid"][s], 1e-12)
        cols["ask"][s] = cols["bid"][s] - ticks * width
        return float(ticks)
    if kind == "r1_ohlc_order":
        cols["high"][s] = np.minimum(cols["open"][s], cols["close"][s]) * (1 - 1e-4)
        return 1.0
    if kind == "r2_nonpositive_price":
        cols["close"][s] = 0.0
        cols["low"][s] = 0.0
        return 0.0
    if kind == "r4_nan_ohlc":
        cols["open"][s] = np.nan
        cols["close"][s] = np.nan
        return 1.0
    raise ValueError(f"unknown anomaly kind {kind!r}; known: {MARKET_KINDS + CRITICAL_KINDS}")


def inject_bar_anomalies(
    symbol: str,
    cols: dict[str, np.ndarray],
    plan: AnomalyPlan,
    rng: np.random.Generator,
    day_start_s: int,
) -> pa.Table:
    """Inject ``plan`` into bars_1s columns in place; return the ground truth rows."""
    n = len(cols["close"])
    rows = []
    # Rule breaks go last so a later price jump cannot rescale a zero or NaN away.
    slots = _place(rng, plan, n)
    slots.sort(key=lambda slot: slot[0] in CRITICAL_KINDS)
    for kind, t0, t1 in slots:
        magnitude = _inject_one(cols, rng, plan, kind, t0, t1)
        rows.append(
            (
                symbol,
                kind,
                day_start_s + t0,
                day_start_s + t1,
                magnitude,
                SEVERITY.get(kind, "none"),
            )
        )
    first_ids = cols["first_trade_id"][cols["trade_count"] > 0]
    renumber_trade_ids(cols, int(first_ids[0]) if len(first_ids) else 1)
    recompute_quote_columns(cols)
    rows.sort(key=lambda r: r[2])
    return ground_truth_table(rows)


def ground_truth_table(rows: list[tuple]) -> pa.Table:
    names = GROUND_TRUTH_SCHEMA.names
    return pa.Table.from_pylist(
        [dict(zip(names, r, strict=True)) for r in rows], GROUND_TRUTH_SCHEMA
    )


def write_ground_truth(path: Path, truth: pa.Table) -> Path:
    """Write the labels as Parquet (atomically) next to the data they describe."""
    with atomic_path(Path(path)) as tmp:
        pq.write_table(truth.cast(GROUND_TRUTH_SCHEMA), tmp)
    return Path(path)


def read_ground_truth(path: Path) -> pa.Table:
    return pq.read_table(path, schema=GROUND_TRUTH_SCHEMA)


# --------------------------------------------------------------------------- trade/quote streams
def _shift_after(
    table: pa.Table, time_col: str, t_ns: int, cols: tuple[str, ...], f: float
) -> pa.Table:
    after = pc.greater_equal(table[time_col], pa.scalar(t_ns, table.schema.field(time_col).type))
    for name in cols:
        i = table.schema.get_field_index(name)
        scaled = pc.if_else(after, pc.multiply(table[name], f), table[name])
        table = table.set_column(i, name, scaled.cast(table.schema.field(name).type))
    return table


def inject_trade_quote_anomalies(
    symbol: str,
    trades: pa.Table,
    quotes: pa.Table,
    events: list[tuple[str, int, int, float]],
) -> tuple[pa.Table, pa.Table, pa.Table]:
    """Inject ``(kind, start_ns, end_ns, magnitude)`` events into trades/quotes tables.

    Expects the SPEC §5 columns (trades: ts_event, price, qty, quote_qty; quotes: ts_recv,
    bid, ask) with float prices. ``price_jump`` multiplies every later price by
    ``1 + magnitude``; ``volume_spike`` multiplies quantities inside the window by
    ``magnitude``; ``crossed_book`` puts the ask ``magnitude`` below the bid; ``stale_quotes``
    drops quote updates inside the window. Returns (trades, quotes, ground truth).
    """
    rows = []
    for kind, t0, t1, mag in sorted(events, key=lambda e: e[1]):
        if kind == "price_jump":
            trades = _shift_after(trades, "ts_event", t0, ("price", "quote_qty"), 1 + mag)
            quotes = _shift_after(quotes, "ts_recv", t0, ("bid", "ask"), 1 + mag)
        elif kind == "volume_spike":
            ts = trades["ts_event"].cast(pa.int64())
            inside = pc.and_(pc.greater_equal(ts, t0), pc.less_equal(ts, t1))
            for name in ("qty", "quote_qty"):
                i = trades.schema.get_field_index(name)
                col = pc.if_else(inside, pc.multiply(trades[name], mag), trades[name])
                trades = trades.set_column(i, name, col.cast(trades.schema.field(name).type))
        elif kind in ("crossed_book", "stale_quotes"):
            ts = quotes["ts_recv"].cast(pa.int64())
            inside = pc.and_(pc.greater_equal(ts, t0), pc.less_equal(ts, t1))
            if kind == "stale_quotes":
                quotes = quotes.filter(pc.invert(inside))
            else:
                i = quotes.schema.get_field_index("ask")
                crossed = pc.if_else(inside, pc.subtract(quotes["bid"], mag), quotes["ask"])
                quotes = quotes.set_column(i, "ask", crossed.cast(quotes.schema.field("ask").type))
        else:
            raise ValueError(f"kind {kind!r} is not injectable into trade/quote streams")
        rows.append(
            (
                symbol,
                kind,
                t0 // 1_000_000_000,
                t1 // 1_000_000_000,
                float(mag),
                SEVERITY.get(kind, "none"),
            )
        )
    return trades, quotes, ground_truth_table(rows)
