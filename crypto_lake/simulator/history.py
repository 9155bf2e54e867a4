"""Deep history before the live market's start: seeded, vectorised, one UTC day at a time.

The live model (market.py) makes trades one by one in wall-clock time; a year of history that
way would take hours. History is instead generated a whole day at a time with numpy:

* **plan** (cheap, every day up front): each day's activity, return, trade count and
  aggregate count are drawn from a generator seeded by (seed, symbol, UTC day). Knowing every
  count first lets trade and aggregate ids run consecutively across days and end exactly
  one before the live ledger's first ids, whatever the days look like;
* **prices**: daily closes are a seeded random walk run *backward* from the live start price,
  so the last history trade sits where the live market opens; inside a day the log price is a
  Brownian bridge from the day's open (the previous close) to its close, on the tick grid;
  takers buy at the ask (bid + 1 tick) and sell at the bid;
* **days** (on demand, cached): given its counts, a day's aggregate boundaries, times
  (intraday seasonality x per-minute activity), prices, lots and maker flags are drawn from a
  second generator seeded by (seed, symbol, day); several fills of one taker order share one
  price and time, like the live model's aggregates.

A ``SymbolHistory`` answers the trade-source queries of ledger.py over its own index space
(index 0 = the first history trade). Days are generated only when asked for and kept in a
small shared LRU (:class:`DayCache`), so serving 180 days of 1 m klines touches each day once.
"""

from __future__ import annotations

import math
import threading
import zlib
from collections import OrderedDict
from datetime import UTC, date, datetime, timedelta

import numpy as np

from crypto_lake.simulator.instruments import Instrument
from crypto_lake.simulator.ledger import TradeSlice

DAY_US = 86_400_000_000
MINUTE_US = 60_000_000
FILL_P = 0.45  # the live model: another fill follows with this probability (up to max_fills)
DAILY_VOL = 0.03  # std of a day's log return (crypto); FX pairs use FX_DAILY_VOL
FX_DAILY_VOL = 0.004
ACTIVITY_VOL = 0.35  # std of a day's log activity (trade count multiplier)
CACHE_TRADES = 16_000_000  # trades kept in generated days (about 530 MB at most)
CACHE_DAYS = 32


def mean_fills(max_fills: int) -> float:
    """Mean fills per taker order of the live model (1 + P + P^2 ... up to max_fills)."""
    return sum(FILL_P**k for k in range(max_fills))


def day_start_us(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * 1_000_000


def day_of_us(time_us: int) -> date:
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=time_us)).date()


def _rng(seed: int, symbol: str, day: date, stream: int) -> np.random.Generator:
    key = [seed & 0xFFFF_FFFF_FFFF_FFFF, zlib.crc32(symbol.encode()), day.toordinal(), stream]
    return np.random.default_rng(key)


def _daily_vol(inst: Instrument) -> float:
    return FX_DAILY_VOL if inst.symbol.startswith(("EUR", "GBP", "AUD")) else DAILY_VOL


class DayCache:
    """A small LRU of generated days shared by every symbol, bounded by trades held."""

    def __init__(self, max_trades: int = CACHE_TRADES, max_days: int = CACHE_DAYS) -> None:
        self.max_trades, self.max_days = max_trades, max_days
        self._days: OrderedDict[tuple[str, int], TradeSlice] = OrderedDict()
        self._held = 0
        self._lock = threading.Lock()
        self.generated = 0  # days generated (cache misses), for tests and benchmarks

    def get(self, key: tuple[str, int]) -> TradeSlice | None:
        with self._lock:
            day = self._days.get(key)
            if day is not None:
                self._days.move_to_end(key)
            return day

    def put(self, key: tuple[str, int], day: TradeSlice) -> None:
        with self._lock:
            self.generated += 1
            if key in self._days:
                return
            self._days[key] = day
            self._held += len(day)
            while len(self._days) > 1 and (
                self._held > self.max_trades or len(self._days) > self.max_days
            ):
                _, old = self._days.popitem(last=False)
                self._held -= len(old)


class SymbolHistory:
    """The generated past of one symbol: consecutive UTC days, the last one maybe partial.

    ``day_ends`` holds each day's end (µs): midnight, except for the last day, which ends at
    the live start instant. Trade ids are ``first_trade_id + index``; :meth:`end_ids_at` places
    them so the last history trade is the one before the live ledger's first.
    """

    def __init__(
        self,
        inst: Instrument,
        seed: int,
        first_day: date,
        day_ends: np.ndarray,
        n_trades: np.ndarray,
        n_aggs: np.ndarray,
        log_close: np.ndarray,
        log_open0: float,
        cache: DayCache | None = None,
    ) -> None:
        self.instrument = inst
        self.symbol = inst.symbol
        self.seed = seed
        self.first_day = first_day
        self.day_starts = day_start_us(first_day) + DAY_US * np.arange(len(day_ends))
        self.day_ends = np.asarray(day_ends, dtype=np.int64)
        self.n_trades = np.asarray(n_trades, dtype=np.int64)
        self.n_aggs = np.asarray(n_aggs, dtype=np.int64)
        self.trade_off = np.concatenate([[0], np.cumsum(self.n_trades)])
        self.agg_off = np.concatenate([[0], np.cumsum(self.n_aggs)])
        self.log_close = np.asarray(log_close, dtype=np.float64)
        self.log_open = np.concatenate([[log_open0], self.log_close[:-1]])
        self.cache = cache if cache is not None else DayCache()
        self.first_trade_id = 1
        self.first_agg_id = 1
        self.retained_from_us = 0  # history is never forgotten (days are regenerated)

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def before_live(
        cls,
        inst: Instrument,
        seed: int,
        live_start_us: int,
        days: int,
        rate_scale: float,
        live_ticks: int,
        cache: DayCache | None = None,
    ) -> SymbolHistory:
        """``days`` whole UTC days before the live start's day, plus that day up to the start."""
        start_day = day_of_us(live_start_us)
        first_day = start_day - timedelta(days=days)
        ends = day_start_us(first_day) + DAY_US * np.arange(1, days + 2, dtype=np.int64)
        ends[-1] = live_start_us
        per_day = inst.orders_per_s * mean_fills(inst.max_fills) * 86_400 * rate_scale
        sigma = _daily_vol(inst)
        n_tr, n_ag, rets = [], [], []
        for k in range(days + 1):
            frac = (ends[k] - day_start_us(first_day) - k * DAY_US) / DAY_US
            n, a, r = _plan_day(inst, seed, first_day + timedelta(days=k), per_day * frac)
            n_tr.append(n)
            n_ag.append(a)
            rets.append(r * sigma * math.sqrt(frac))
        # Walk backward from the live price: close[k-1] = close[k] - return of day k.
        rets_arr = np.asarray(rets)
        log_close = math.log(max(live_ticks, 1)) - np.concatenate(
            [np.cumsum(rets_arr[::-1])[::-1][1:], [0.0]]
        )
        floor = math.log(10.0)  # keep prices at least ten ticks
        log_close = np.maximum(log_close, floor)
        log_open0 = max(float(log_close[0] - rets_arr[0]), floor)
        return cls(inst, seed, first_day, ends, n_tr, n_ag, log_close, log_open0, cache)

    @classmethod
    def one_day(
        cls, inst: Instrument, seed: int, day: date, n_trades: int, first_trade_id: int = 1
    ) -> SymbolHistory:
        """A history of exactly one whole day with exactly ``n_trades`` trades (benchmarks)."""
        n, a, r = _plan_day(inst, seed, day, float(n_trades), n_trades)
        price = math.log(max(1.0, inst.price * 10**inst.tick_decimals))
        hist = cls(
            inst, seed, day, np.array([day_start_us(day) + DAY_US]), [n], [a],
            [price + r * _daily_vol(inst)], price, DayCache(max_days=2),
        )  # fmt: skip
        hist.first_trade_id = first_trade_id
        return hist

    def end_ids_at(self, next_trade_id: int, next_agg_id: int) -> None:
        """Number trades and aggregates so the last history ones precede these ids."""
        if next_trade_id <= self.trade_count or next_agg_id <= self.agg_count():
            raise ValueError("the live ids leave no room for the history before them")
        self.first_trade_id = next_trade_id - self.trade_count
        self.first_agg_id = next_agg_id - self.agg_count()

    # -- days -------------------------------------------------------------------------------
    @property
    def end_us(self) -> int:
        return int(self.day_ends[-1])

    @property
    def start_us(self) -> int:
        return int(self.day_starts[0])

    def day_index(self, day: date) -> int | None:
        k = (day - self.first_day).days
        return k if 0 <= k < len(self.day_ends) else None

    def day(self, k: int) -> TradeSlice:
        """Day ``k`` (0 = first_day) as one piece with ids and aggregate starts."""
        key = (self.symbol, k)
        got = self.cache.get(key)
        if got is None:
            got = generate_day(
                self.instrument, self.seed, self.first_day + timedelta(days=k),
                int(self.day_starts[k]), int(self.day_ends[k]), int(self.n_trades[k]),
                int(self.n_aggs[k]), float(self.log_open[k]), float(self.log_close[k]),
            )  # fmt: skip
            self.cache.put(key, got)
        return TradeSlice(
            self.first_trade_id + int(self.trade_off[k]), got.time_us, got.ticks, got.lots,
            got.maker, got.agg_starts, self.first_agg_id + int(self.agg_off[k]),
        )  # fmt: skip

    def _day_at(self, time_us: int) -> int:
        """Index of the day holding ``time_us`` (-1 before the first, len after the last)."""
        if time_us < self.day_starts[0]:
            return -1
        if time_us >= self.end_us:
            return len(self.day_ends)
        return int((time_us - self.day_starts[0]) // DAY_US)

    # -- trade-source queries (see ledger.py) -----------------------------------------------
    @property
    def trade_count(self) -> int:
        return int(self.trade_off[-1])

    def agg_count(self) -> int:
        return int(self.agg_off[-1])

    def trade_index_of(self, trade_id: int) -> int:
        return max(0, trade_id - self.first_trade_id)

    def agg_index_of(self, agg_id: int) -> int:
        return max(0, agg_id - self.first_agg_id)

    def chunks(self, lo: int, hi: int) -> list[TradeSlice]:
        lo, hi = max(lo, 0), min(hi, self.trade_count)
        out = []
        k = int(np.searchsorted(self.trade_off, lo, side="right")) - 1
        while lo < hi:
            off = int(self.trade_off[k])
            end = min(hi, int(self.trade_off[k + 1]))
            if end > lo:
                out.append(self.day(k).part(lo - off, end - off))
            lo, k = max(lo, end), k + 1
        return out

    def agg_chunks(self, lo: int, hi: int) -> list[TradeSlice]:
        lo, hi = max(lo, 0), min(hi, self.agg_count())
        out = []
        k = int(np.searchsorted(self.agg_off, lo, side="right")) - 1
        while lo < hi:
            off = int(self.agg_off[k])
            end = min(hi, int(self.agg_off[k + 1]))
            if end > lo:
                day = self.day(k)
                starts = day.agg_starts
                t1 = int(starts[end - off]) if end - off < len(starts) else len(day)
                out.append(day.part(int(starts[lo - off]), t1))
            lo, k = max(lo, end), k + 1
        return out

    def time_chunks(self, t0_us: int, t1_us: int, aggs: bool = False) -> list[TradeSlice]:
        out = []
        k0 = max(0, self._day_at(t0_us))
        k1 = min(len(self.day_ends) - 1, self._day_at(t1_us - 1))
        for k in range(k0, k1 + 1):
            if self.n_trades[k] == 0:
                continue
            day = self.day(k)
            lo, hi = np.searchsorted(day.time_us, [t0_us, t1_us])
            if hi > lo:
                out.append(day.part(int(lo), int(hi)))
        return out

    def index_at_time(self, time_us: int, right: bool = False) -> int:
        k = self._day_at(time_us)
        if k < 0:
            return 0
        if k >= len(self.day_ends):
            return self.trade_count
        if self.n_trades[k] == 0:
            return int(self.trade_off[k])
        side = "right" if right else "left"
        return int(self.trade_off[k] + np.searchsorted(self.day(k).time_us, time_us, side))

    def agg_index_at_time(self, time_us: int, right: bool = False) -> int:
        k = self._day_at(time_us)
        if k < 0:
            return 0
        if k >= len(self.day_ends):
            return self.agg_count()
        if self.n_trades[k] == 0:
            return int(self.agg_off[k])
        day = self.day(k)
        side = "right" if right else "left"
        i = int(np.searchsorted(day.time_us, time_us, side))  # trades of one aggregate share
        return int(self.agg_off[k] + np.searchsorted(day.agg_starts, i, "left"))  # a time

    def last_price_before(self, time_us: int) -> int | None:
        """Ticks of the last history trade strictly before ``time_us``."""
        k = min(self._day_at(time_us), len(self.day_ends) - 1)
        while k >= 0:
            if self.n_trades[k]:
                day = self.day(k)
                i = int(np.searchsorted(day.time_us, time_us, "left"))
                if i > 0:
                    return int(day.ticks[i - 1])
            k -= 1
        return None

    def first_time(self) -> int | None:
        nonzero = np.flatnonzero(self.n_trades)
        return int(self.day(int(nonzero[0])).time_us[0]) if len(nonzero) else None


def _plan_day(
    inst: Instrument, seed: int, day: date, mean_trades: float, exact: int | None = None
) -> tuple[int, int, float]:
    """(trades, aggregates, standard-normal return) of one day, cheap scalar draws."""
    rng = _rng(seed, inst.symbol, day, 0)
    activity = math.exp(ACTIVITY_VOL * rng.standard_normal() - ACTIVITY_VOL**2 / 2)
    ret = float(rng.standard_normal())
    n = int(rng.poisson(mean_trades * activity)) if exact is None else exact
    q = 1.0 / mean_fills(inst.max_fills)  # a trade starts a new aggregate with this chance
    aggs = 1 + int(rng.binomial(n - 1, q)) if n > 0 else 0
    return n, aggs, ret


def generate_day(
    inst: Instrument,
    seed: int,
    day: date,
    start_us: int,
    end_us: int,
    n: int,
    n_aggs: int,
    log_open: float,
    log_close: float,
) -> TradeSlice:
    """Every trade of one day (ids from 0), given its counts, open and close, vectorised."""
    rng = _rng(seed, inst.symbol, day, 1)
    if n == 0:
        empty = np.empty(0, dtype=np.int64)
        return TradeSlice(0, empty, empty, empty, np.empty(0, np.int8), empty, 0)
    agg_starts = _aggregate_starts(rng, n, n_aggs)
    agg_time = _order_times(rng, start_us, end_us, n_aggs)
    # Brownian bridge in log ticks from the open (at the day's start) to the close (last order).
    steps = rng.standard_normal(n_aggs)
    walk = np.cumsum(steps)
    frac = np.arange(1, n_aggs + 1) / n_aggs
    vol = _daily_vol(inst) / math.sqrt(n_aggs)  # mid-day the bridge strays half a day's vol
    log_px = log_open + frac * (log_close - log_open) + vol * (walk - frac * walk[-1])
    bid = np.maximum(np.rint(np.exp(log_px)), 1).astype(np.int64)
    sells = rng.random(n_aggs) < 0.5  # the buyer was the maker: the taker sold at the bid
    agg_ticks = np.where(sells, bid, bid + 1)
    fills = np.diff(np.append(agg_starts, n))
    mean_lots = max(1.0, inst.mean_qty * 10**inst.lot_decimals)
    lots = np.maximum(rng.standard_exponential(n, np.float32) * mean_lots, 1).astype(np.int64)
    return TradeSlice(
        0, np.repeat(agg_time, fills), np.repeat(agg_ticks, fills), lots,
        np.repeat(sells.astype(np.int8), fills), agg_starts, 0,
    )  # fmt: skip


def _aggregate_starts(rng: np.random.Generator, n: int, n_aggs: int) -> np.ndarray:
    """Index of each aggregate's first trade: n_aggs - 1 boundaries uniformly among n - 1.

    Bernoulli draws give about the right count; a few uniformly chosen boundaries are then
    added or removed, which keeps the choice uniform among all sets of exactly that size.
    """
    gaps, want = n - 1, n_aggs - 1
    if want <= 0 or gaps <= 0:
        return np.zeros(1, dtype=np.int64)
    mask = rng.random(gaps) < want / gaps
    have = int(mask.sum())
    if have != want:
        pool = np.flatnonzero(mask if have > want else ~mask)
        mask[rng.choice(pool, abs(have - want), replace=False)] = have < want
    return np.concatenate([[0], np.flatnonzero(mask) + 1]).astype(np.int64)


def _order_times(rng: np.random.Generator, start_us: int, end_us: int, k: int) -> np.ndarray:
    """``k`` sorted order times in [start, end): uniform order statistics warped by activity.

    Activity is a UTC intraday seasonality (busier around the European and US opens) times
    a gamma-distributed factor per minute (bursts and lulls).
    """
    gaps = rng.standard_exponential(k + 1)
    u = np.cumsum(gaps)[:-1] / gaps.sum()  # sorted uniforms on (0, 1), no sort needed
    minutes = max(1, -(-(end_us - start_us) // MINUTE_US))
    edges = np.minimum(start_us + MINUTE_US * np.arange(minutes + 1), end_us).astype(np.float64)
    hour = ((edges[:-1] - start_us) / 3.6e9 + (start_us % DAY_US) / 3.6e9) % 24
    season = (
        1 + 0.8 * np.exp(-(((hour - 14.5) / 2.5) ** 2)) + 0.4 * np.exp(-(((hour - 8) / 2) ** 2))
    )
    weight = season * rng.gamma(4.0, 0.25, minutes) * np.diff(edges)
    cum = np.concatenate([[0.0], np.cumsum(weight)])
    times = np.floor(np.interp(u * cum[-1], cum, edges)).astype(np.int64)
    return np.clip(times, start_us, end_us - 1)
