"""REST answers computed from the ledger, in Binance's JSON shapes (``lib/raw/binance.py``).

Klines are aggregated with numpy over integer ticks/lots, so volumes are exact. Kline rules
(documented because Binance's are only partly documented):

* a kline exists for every interval from the one holding the symbol's first trade up to the
  interval holding "now" (the last one is still open); empty intervals repeat the previous
  close as O/H/L/C with zero volume and zero trades, as Binance's 1s and 1m klines do;
* ``startTime``/``endTime`` select klines by open time (open >= startTime, open <= endTime);
  with neither, the most recent ``limit`` klines; with only endTime, the last ``limit`` up to it.

Every function takes a trade source (``ledger.TradeSource``): the live ledger, or a ``Tape``
(history then live) when the simulator has history; both give the same answers for live
times. Kline statistics are computed per piece of the source and merged, so a kline spanning
history and live (or two history days) is exact.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from crypto_lake.lib.raw.binance import AGG_TRADES, HISTORICAL_TRADES, KLINES
from crypto_lake.simulator.instruments import format_e8, format_e8_list
from crypto_lake.simulator.ledger import TradeSlice, TradeSource

# Kline rows are built positionally (a page at once): the order must be the Binance map's.
_KLINE_ORDER = (
    "open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume",
    "trade_count", "taker_buy_base", "taker_buy_quote", "unused",
)  # fmt: skip
if tuple(f.column for f in KLINES.fields) != _KLINE_ORDER or KLINES.keys != tuple(range(12)):
    raise ImportError(f"the klines row is {[f.column for f in KLINES.fields]}")

INTERVALS_S = {
    "1s": 1, "1m": 60, "3m": 180, "5m": 300, "15m": 900, "30m": 1800,
    "1h": 3600, "2h": 7200, "4h": 14400, "6h": 21600, "8h": 28800, "12h": 43200, "1d": 86400,
}  # fmt: skip


def kline_open_range(
    source: TradeSource, step: int, now_us: int, start: int | None, end: int | None, limit: int
) -> tuple[int, int] | None:
    """First and last kline open time (µs) to answer, or None when there is none."""
    first = source.first_time()
    if first is None:
        return None
    first_open = first - first % step
    last_open = now_us - now_us % step
    if end is not None:
        last_open = min(last_open, end - end % step)
    if start is not None:
        lo = max(first_open, -(-start // step) * step)  # first open time >= startTime
        hi = min(last_open, lo + (limit - 1) * step)
    else:
        hi = last_open
        lo = max(first_open, hi - (limit - 1) * step)
    return (lo, hi) if lo <= hi else None


@dataclass(frozen=True)
class KlineArrays:
    """Klines with open times ``opens`` (µs) as integer columns (ticks, lots, tick x lot)."""

    opens: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    quote_volume: np.ndarray
    count: np.ndarray
    taker_buy_base: np.ndarray
    taker_buy_quote: np.ndarray


def kline_arrays(source: TradeSource, step: int, lo: int, hi: int) -> KlineArrays:
    """Every kline of ``step`` µs with open time lo..hi (inclusive), exact integer sums.

    Empty intervals repeat the previous close (0 before any trade) with zero volume/count.
    """
    opens = np.arange(lo, hi + step, step, dtype=np.int64)
    parts = [_piece_buckets(c, lo, step) for c in source.time_chunks(lo, hi + step) if len(c)]
    n = len(opens)
    cols = [np.zeros(n, dtype=np.int64) for _ in range(9)]  # o h l c vol quote count tb tbq
    prev = source.last_price_before(lo)
    if parts:
        bucket = np.concatenate([p[0] for p in parts])
        stats = [np.concatenate([p[1][i] for p in parts]) for i in range(9)]
        # A bucket split between pieces (history/live, two days) appears twice: merge.
        first = np.flatnonzero(np.diff(bucket, prepend=-1))
        last = np.append(first[1:], len(bucket)) - 1
        merged = [
            stats[0][first],
            np.maximum.reduceat(stats[1], first),
            np.minimum.reduceat(stats[2], first),
            stats[3][last],
            *(np.add.reduceat(stats[i], first) for i in range(4, 9)),
        ]
        for col, values in zip(cols, merged, strict=True):
            col[bucket[first]] = values
        full = np.zeros(n, dtype=bool)
        full[bucket[first]] = True
    else:
        full = np.zeros(n, dtype=bool)
    # Carry the last close into empty intervals.
    last_full = np.maximum.accumulate(np.where(full, np.arange(n), -1))
    carried = np.where(last_full >= 0, cols[3][np.maximum(last_full, 0)], prev or 0)
    for i in range(4):
        cols[i] = np.where(full, cols[i], carried)
    o, h, low, c, vol, quote, count, tb, tbq = cols
    return KlineArrays(opens, o, h, low, c, vol, quote, count, tb, tbq)


def _piece_buckets(trades: TradeSlice, lo: int, step: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """(bucket index of each non-empty bucket, its 9 statistics) within one piece."""
    bucket = (trades.time_us - lo) // step
    starts = np.flatnonzero(np.diff(bucket, prepend=-1))
    ticks, lots = trades.ticks, trades.lots
    notional = ticks * lots
    taker_buy = trades.maker == 0  # buyer was the taker
    lasts = np.append(starts[1:], len(ticks)) - 1
    return bucket[starts], [
        ticks[starts],
        np.maximum.reduceat(ticks, starts),
        np.minimum.reduceat(ticks, starts),
        ticks[lasts],
        np.add.reduceat(lots, starts),
        np.add.reduceat(notional, starts),
        np.diff(np.append(starts, len(ticks))),
        np.add.reduceat(np.where(taker_buy, lots, 0), starts),
        np.add.reduceat(np.where(taker_buy, notional, 0), starts),
    ]


def klines(
    source: TradeSource,
    interval_s: int,
    now_us: int,
    start_us: int | None,
    end_us: int | None,
    limit: int,
    unit_div: int,
) -> list[list]:
    """Binance kline rows; times are divided by ``unit_div`` (1000 for ms, 1 for µs)."""
    step = interval_s * 1_000_000
    bounds = kline_open_range(source, step, now_us, start_us, end_us, limit)
    if bounds is None:
        return []
    k = kline_arrays(source, step, *bounds)
    inst = source.instrument
    tick, lot, notional = inst.tick_e8, inst.lot_e8, inst.notional_e8
    return [
        list(row)
        for row in zip(
            (k.opens // unit_div).tolist(),
            format_e8_list(k.open * tick),
            format_e8_list(k.high * tick),
            format_e8_list(k.low * tick),
            format_e8_list(k.close * tick),
            format_e8_list(k.volume * lot),
            ((k.opens + step) // unit_div - 1).tolist(),
            format_e8_list(k.quote_volume * notional),
            k.count.tolist(),
            format_e8_list(k.taker_buy_base * lot),
            format_e8_list(k.taker_buy_quote * notional),
            itertools.repeat("0"),
        )
    ]


def historical_trades(source: TradeSource, from_id: int | None, limit: int, unit_div: int):
    """``/historicalTrades`` (and ``/trades`` when from_id is None): oldest first."""
    n = source.trade_count
    lo = max(0, n - limit) if from_id is None else source.trade_index_of(from_id)
    inst = source.instrument
    return [
        HISTORICAL_TRADES.element(
            trade_id=tr.first_id + i,
            price=format_e8(t * inst.tick_e8),
            qty=format_e8(q * inst.lot_e8),
            quote_qty=format_e8(t * q * inst.notional_e8),
            ts_event=tm // unit_div,
            is_buyer_maker=bool(m),
            is_best_match=True,
        )
        for tr in source.chunks(lo, lo + limit)
        for i, (t, q, tm, m) in enumerate(
            zip(
                tr.ticks.tolist(), tr.lots.tolist(), tr.time_us.tolist(), tr.maker.tolist(),
                strict=True,
            )
        )
    ]  # fmt: skip


def agg_trades(
    source: TradeSource,
    from_id: int | None,
    start_us: int | None,
    end_us: int | None,
    limit: int,
    unit_div: int,
) -> list[dict]:
    """``/aggTrades`` by fromId, by time window, or the most recent ones."""
    n = source.agg_count()
    if from_id is not None:
        lo = source.agg_index_of(from_id)
        hi = lo + limit
    elif start_us is not None:
        lo = source.agg_index_at_time(start_us)
        hi = lo + limit
        if end_us is not None:
            hi = min(hi, source.agg_index_at_time(end_us, right=True))
    elif end_us is not None:
        hi = source.agg_index_at_time(end_us, right=True)
        lo = max(0, hi - limit)
    else:
        lo, hi = max(0, n - limit), n
    if lo >= n or hi <= lo:
        return []
    inst = source.instrument
    out = []
    for tr in source.agg_chunks(lo, hi):
        s = tr.agg_starts
        qty = np.add.reduceat(tr.lots, s).tolist()
        ends = np.append(s[1:], len(tr)).tolist()
        for k, (a, b) in enumerate(zip(s.tolist(), ends, strict=True)):
            out.append(
                AGG_TRADES.element(
                    trade_id=tr.first_agg_id + k,
                    price=format_e8(int(tr.ticks[a]) * inst.tick_e8),
                    qty=format_e8(qty[k] * inst.lot_e8),
                    first_trade_id=tr.first_id + a,
                    last_trade_id=tr.first_id + b - 1,
                    ts_event=int(tr.time_us[a]) // unit_div,
                    is_buyer_maker=bool(tr.maker[a]),
                    is_best_match=True,
                )
            )
    return out
