"""Seeded, vectorised generator of realistic ``bars_1s``-shaped days (SPEC §5 columns).

Used by the QA evaluation and tests, where a full day for 13 symbols (1.1 M rows) must be
produced in seconds; the tick-level exchange simulator is far too slow for that. The model:

* log-price is a Gaussian random walk whose volatility follows an intraday seasonality
  (busier around the US open) times a slow AR(1) log-volatility regime;
* trade counts per second are Poisson with the same activity factor, so quiet symbols have
  many empty seconds (O/H/L/C carry the previous close with zero volume, as SPEC §5 says);
* best bid/ask sit on the instrument's tick grid around the efficient price with a spread of
  one tick plus a Poisson number of extra ticks, so tick-size effects (bid-ask bounce in the
  close, quantised returns) look like the real market;
* trade ids are consecutive across the day.

Same (symbol, day, seed) -> identical table.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import UTC, date, datetime

import numpy as np
import pyarrow as pa

from crypto_lake.lib.core.symbols import validate_day, validate_symbol

SECONDS_PER_DAY = 86_400
# Flag bits of the synthetic bars (the market library owns the real encoding; QA never
# relies on it): a second without trades.
FLAG_EMPTY = 1


@dataclass(frozen=True)
class BarProfile:
    """Market parameters of one synthetic symbol."""

    price: float
    tick: float
    daily_vol: float  # standard deviation of the daily log return
    trades_per_s: float
    mean_qty: float
    extra_spread_ticks: float  # Poisson mean of ticks beyond the one-tick minimum


# Late-2020s magnitudes; what matters is the shape (tick size relative to volatility).
PROFILES: dict[str, BarProfile] = {
    "BTCUSDT": BarProfile(90_000.0, 0.01, 0.025, 25.0, 0.01, 0.3),
    "ETHUSDT": BarProfile(3_000.0, 0.01, 0.035, 12.0, 0.2, 0.5),
    "SOLUSDT": BarProfile(140.0, 0.01, 0.045, 6.0, 3.0, 0.5),
    "BNBUSDT": BarProfile(900.0, 0.01, 0.03, 3.0, 0.5, 0.5),
    "XRPUSDT": BarProfile(2.2, 0.0001, 0.045, 5.0, 800.0, 0.3),
    "DOGEUSDT": BarProfile(0.15, 0.00001, 0.05, 4.0, 3000.0, 0.3),
    "ADAUSDT": BarProfile(0.45, 0.0001, 0.05, 2.5, 1500.0, 0.2),
    "AVAXUSDT": BarProfile(14.0, 0.01, 0.055, 2.0, 10.0, 0.2),
    "LINKUSDT": BarProfile(13.0, 0.01, 0.05, 2.0, 20.0, 0.2),
    "LTCUSDT": BarProfile(85.0, 0.01, 0.04, 1.5, 2.0, 0.3),
    "DOTUSDT": BarProfile(2.5, 0.001, 0.05, 1.5, 50.0, 0.2),
    "SUIUSDT": BarProfile(1.6, 0.0001, 0.06, 3.0, 300.0, 0.3),
    "EURUSDT": BarProfile(1.16, 0.0001, 0.004, 0.5, 500.0, 0.1),
}
_DEFAULT_PROFILE = BarProfile(5.0, 0.001, 0.05, 1.0, 50.0, 0.3)

BARS_1S_SCHEMA = pa.schema(
    [
        ("symbol", pa.string()),
        ("window_start", pa.timestamp("us", tz="UTC")),
        ("open", pa.float64()),
        ("high", pa.float64()),
        ("low", pa.float64()),
        ("close", pa.float64()),
        ("volume_base", pa.float64()),
        ("volume_quote", pa.float64()),
        ("trade_count", pa.int64()),
        ("vwap", pa.float64()),
        ("taker_buy_base", pa.float64()),
        ("first_trade_id", pa.int64()),
        ("last_trade_id", pa.int64()),
        ("bid", pa.float64()),
        ("ask", pa.float64()),
        ("bid_qty", pa.float64()),
        ("ask_qty", pa.float64()),
        ("mid", pa.float64()),
        ("spread", pa.float64()),
        ("spread_bps", pa.float64()),
        ("flags", pa.int32()),
    ]
)


def profile_for(symbol: str) -> BarProfile:
    return PROFILES.get(validate_symbol(symbol), _DEFAULT_PROFILE)


def day_start_us(day: str) -> int:
    """Microseconds since the epoch of ``day`` 00:00 UTC."""
    d = date.fromisoformat(validate_day(day))
    return int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp()) * 1_000_000


def seeded_rng(seed: int, symbol: str, day: str) -> np.random.Generator:
    """A generator fixed by (seed, symbol, day), independent of Python's hash salt."""
    ordinal = date.fromisoformat(validate_day(day)).toordinal()
    return np.random.default_rng([seed, zlib.crc32(symbol.encode()), ordinal])


def _activity(rng: np.random.Generator, n: int) -> np.ndarray:
    """Intraday seasonality x slow AR(1) regime, per second (mean ~1)."""
    hours = np.arange(n) / 3600.0
    season = 0.75 + 0.6 * np.exp(-0.5 * ((hours - 14.5) / 2.5) ** 2)
    minutes = n // 60 + 1
    shocks = rng.normal(0.0, 0.05, minutes)
    regime = np.empty(minutes)
    level = 0.0
    # A 1,440-step recursion is cheap; everything per second below is vectorised.
    for i in range(minutes):
        level = 0.985 * level + shocks[i]
        regime[i] = level
    return season * np.exp(regime)[np.arange(n) // 60]


def _round_to_tick(x: np.ndarray, tick: float) -> np.ndarray:
    decimals = max(0, round(float(-np.log10(tick))))
    return np.round(np.round(x / tick) * tick, decimals)


def _forward_fill(values: np.ndarray, present: np.ndarray, first: float) -> np.ndarray:
    idx = np.where(present, np.arange(len(values)), -1)
    idx = np.maximum.accumulate(idx)
    out = np.where(idx >= 0, values[np.maximum(idx, 0)], first)
    return out


def synthetic_bars_columns(
    symbol: str,
    day: str,
    seed: int = 0,
    seconds: int = SECONDS_PER_DAY,
    start_price: float | None = None,
) -> dict[str, np.ndarray]:
    """One symbol-day of bars as numpy columns (see module docstring for the model).

    ``start_price`` continues a previous day (its last close) so consecutive days join
    without an artificial jump at midnight.
    """
    p = profile_for(symbol)
    rng = seeded_rng(seed, symbol, day)
    n = seconds
    act = _activity(rng, n)
    sigma = p.daily_vol / np.sqrt(SECONDS_PER_DAY) * act
    level = p.price if start_price is None or not np.isfinite(start_price) else start_price
    efficient = level * np.exp(np.cumsum(sigma * rng.standard_normal(n)))
    spread_ticks = 1 + rng.poisson(p.extra_spread_ticks * act)
    bid = _round_to_tick(efficient - spread_ticks * p.tick / 2, p.tick)
    ask = _round_to_tick(bid + spread_ticks * p.tick, p.tick)

    count = rng.poisson(p.trades_per_s * act)
    traded = count > 0
    # Last trade hits the ask (taker buy) or the bid; the first trade of the second hits the
    # book as it stood at the end of the previous second.
    close_raw = np.where(rng.random(n) < 0.5, ask, bid)
    prev_bid, prev_ask = np.roll(bid, 1), np.roll(ask, 1)
    prev_bid[0], prev_ask[0] = bid[0], ask[0]
    open_raw = np.where(count == 1, close_raw, np.where(rng.random(n) < 0.5, prev_ask, prev_bid))
    first_price = float(close_raw[np.argmax(traded)]) if traded.any() else float(bid[0])
    close = _forward_fill(close_raw, traded, first_price)
    prev_close = np.concatenate([[first_price], close[:-1]])
    open_ = np.where(traded, open_raw, prev_close)
    wick = np.where((count >= 3) & (rng.random(n) < 0.2), p.tick, 0.0)
    high = _round_to_tick(np.maximum(open_, close) + wick * (rng.random(n) < 0.5), p.tick)
    low = _round_to_tick(np.minimum(open_, close) - wick * (rng.random(n) < 0.5), p.tick)

    # Fill sizes are roughly lognormal (sigma ~1); a second's sum of n fills then has a log
    # spread shrinking like 1/sqrt(n) (central limit), which this draws directly.
    spread_log = 1.0 / np.sqrt(np.maximum(count, 1))
    volume = p.mean_qty * count * rng.lognormal(-0.5 * spread_log**2, spread_log)
    volume = np.where(traded, volume, 0.0)
    vwap = np.where(traded, low + rng.random(n) * (high - low), np.nan)
    cols: dict[str, np.ndarray] = {
        "open": open_,
        "high": high,
        "low": low,
        "close": close,
        "volume_base": volume,
        "volume_quote": volume * np.nan_to_num(vwap),
        "trade_count": count.astype(np.int64),
        "vwap": vwap,
        "taker_buy_base": volume * rng.beta(2.0, 2.0, n),
        "bid": bid,
        "ask": ask,
        "bid_qty": p.mean_qty * rng.lognormal(1.0, 0.8, n),
        "ask_qty": p.mean_qty * rng.lognormal(1.0, 0.8, n),
    }
    renumber_trade_ids(cols, first_id=1_000_000 + int(rng.integers(0, 1_000_000)))
    recompute_quote_columns(cols)
    return cols


def renumber_trade_ids(cols: dict[str, np.ndarray], first_id: int) -> None:
    """Consecutive trade ids from the trade counts (call after changing counts)."""
    count = cols["trade_count"]
    last = first_id + np.cumsum(count) - 1
    cols["first_trade_id"] = np.where(count > 0, last - count + 1, -1)
    cols["last_trade_id"] = np.where(count > 0, last, -1)
    cols["flags"] = np.where(count > 0, 0, FLAG_EMPTY).astype(np.int32)


def recompute_quote_columns(cols: dict[str, np.ndarray]) -> None:
    """mid, spread and spread_bps from bid/ask (call after changing the book)."""
    bid, ask = cols["bid"], cols["ask"]
    cols["mid"] = (bid + ask) / 2
    cols["spread"] = ask - bid
    with np.errstate(divide="ignore", invalid="ignore"):
        cols["spread_bps"] = cols["spread"] / cols["mid"] * 1e4


def bars_table(symbol: str, day: str, cols: dict[str, np.ndarray]) -> pa.Table:
    """Columns -> an Arrow table in the bars_1s schema (trade ids null on empty seconds)."""
    n = len(cols["close"])
    start = day_start_us(day)
    arrays: dict[str, pa.Array] = {
        "symbol": pa.array([validate_symbol(symbol)] * n, pa.string()),
        "window_start": pa.array(start + np.arange(n, dtype=np.int64) * 1_000_000).cast(
            pa.timestamp("us", tz="UTC")
        ),
    }
    for field in BARS_1S_SCHEMA:
        if field.name in arrays:
            continue
        values = cols[field.name]
        mask = None
        if field.name in ("first_trade_id", "last_trade_id"):
            mask = cols["trade_count"] <= 0
        elif pa.types.is_floating(field.type):
            mask = np.isnan(values)
            # NaN in O/H/L/C is data (R4 tests it), not "missing": keep it as NaN.
            if field.name in ("open", "high", "low", "close"):
                mask = None
        arrays[field.name] = pa.array(values, field.type, mask=mask)
    return pa.table(arrays, schema=BARS_1S_SCHEMA)
