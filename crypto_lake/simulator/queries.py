"""REST answers computed from the ledger, in Binance's JSON shapes (``lib/raw/binance.py``).

Klines are aggregated with numpy over integer ticks/lots, so volumes are exact. Kline rules
(documented because Binance's are only partly documented):

* a kline exists for every interval from the one holding the symbol's first trade up to the
  interval holding "now" (the last one is still open); empty intervals repeat the previous
  close as O/H/L/C with zero volume and zero trades, as Binance's 1s and 1m klines do;
* ``startTime``/``endTime`` select klines by open time (open >= startTime, open <= endTime);
  with neither, the most recent ``limit`` klines; with only endTime, the last ``limit`` up to it.
"""

from __future__ import annotations

import numpy as np

from crypto_lake.lib.raw.binance import AGG_TRADES, HISTORICAL_TRADES, KLINES
from crypto_lake.simulator.instruments import format_e8
from crypto_lake.simulator.ledger import SymbolLedger

INTERVALS_S = {
    "1s": 1, "1m": 60, "3m": 180, "5m": 300, "15m": 900, "30m": 1800,
    "1h": 3600, "2h": 7200, "4h": 14400, "6h": 21600, "8h": 28800, "12h": 43200, "1d": 86400,
}  # fmt: skip


def _kline_open_range(
    ledger: SymbolLedger, step: int, now_us: int, start: int | None, end: int | None, limit: int
) -> tuple[int, int] | None:
    """First and last kline open time (µs) to answer, or None when there is none."""
    first = ledger.first_time()
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


def klines(
    ledger: SymbolLedger,
    interval_s: int,
    now_us: int,
    start_us: int | None,
    end_us: int | None,
    limit: int,
    unit_div: int,
) -> list[list]:
    """Binance kline rows; times are divided by ``unit_div`` (1000 for ms, 1 for µs)."""
    step = interval_s * 1_000_000
    bounds = _kline_open_range(ledger, step, now_us, start_us, end_us, limit)
    if bounds is None:
        return []
    lo, hi = bounds
    opens = np.arange(lo, hi + step, step, dtype=np.int64)
    i0 = ledger.index_at_time(lo)
    trades = ledger.slice(i0, ledger.index_at_time(hi + step))
    starts = np.searchsorted(trades.time_us, opens, side="left")
    ends = np.append(starts[1:], len(trades.time_us))
    counts = ends - starts
    full = counts > 0
    stats = _bucket_sums(trades, starts[full])
    inst = ledger.instrument
    prev = ledger.last_price_before(lo)
    rows: list[list] = []
    k = 0
    for j, open_us in enumerate(opens.tolist()):
        if full[j]:
            o, h, low, c, vol, quote, tb, tbq = (int(x[k]) for x in stats)
            prev, k = c, k + 1
        else:
            o = h = low = c = prev if prev is not None else 0
            vol = quote = tb = tbq = 0
        rows.append(
            KLINES.element(
                open_time=open_us // unit_div,
                open=format_e8(o * inst.tick_e8),
                high=format_e8(h * inst.tick_e8),
                low=format_e8(low * inst.tick_e8),
                close=format_e8(c * inst.tick_e8),
                volume=format_e8(vol * inst.lot_e8),
                close_time=(open_us + step) // unit_div - 1,
                quote_volume=format_e8(quote * inst.notional_e8),
                trade_count=int(counts[j]),
                taker_buy_base=format_e8(tb * inst.lot_e8),
                taker_buy_quote=format_e8(tbq * inst.notional_e8),
                unused="0",
            )
        )
    return rows


def _bucket_sums(trades, starts: np.ndarray) -> list[np.ndarray]:
    """Per non-empty bucket: open, high, low, close, volume, quote volume, taker-buy both."""
    if len(starts) == 0:
        return [np.empty(0, dtype=np.int64)] * 8
    ticks, lots = trades.ticks, trades.lots
    notional = ticks * lots
    taker_buy = trades.maker == 0  # buyer was the taker
    lasts = np.append(starts[1:], len(ticks)) - 1
    return [
        ticks[starts],
        np.maximum.reduceat(ticks, starts),
        np.minimum.reduceat(ticks, starts),
        ticks[lasts],
        np.add.reduceat(lots, starts),
        np.add.reduceat(notional, starts),
        np.add.reduceat(np.where(taker_buy, lots, 0), starts),
        np.add.reduceat(np.where(taker_buy, notional, 0), starts),
    ]


def historical_trades(ledger: SymbolLedger, from_id: int | None, limit: int, unit_div: int):
    """``/historicalTrades`` (and ``/trades`` when from_id is None): oldest first."""
    n = ledger.trade_count
    lo = max(0, n - limit) if from_id is None else max(0, from_id - ledger.first_trade_id)
    tr = ledger.slice(lo, lo + limit)
    inst = ledger.instrument
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
        for i, (t, q, tm, m) in enumerate(
            zip(
                tr.ticks.tolist(), tr.lots.tolist(), tr.time_us.tolist(), tr.maker.tolist(),
                strict=True,
            )
        )
    ]  # fmt: skip


def agg_trades(
    ledger: SymbolLedger,
    from_id: int | None,
    start_us: int | None,
    end_us: int | None,
    limit: int,
    unit_div: int,
) -> list[dict]:
    """``/aggTrades`` by fromId, by time window, or the most recent ones."""
    n = ledger.agg_count()
    if from_id is not None:
        lo = max(0, from_id - ledger.first_agg_id)
        hi = lo + limit
    elif start_us is not None:
        lo = ledger.agg_index_at_time(start_us)
        hi = lo + limit
        if end_us is not None:
            hi = min(hi, ledger.agg_index_at_time(end_us, right=True))
    elif end_us is not None:
        hi = ledger.agg_index_at_time(end_us, right=True)
        lo = max(0, hi - limit)
    else:
        lo, hi = max(0, n - limit), n
    if lo >= n or hi <= lo:
        return []
    agg_lo, starts, ends = ledger.agg_bounds(lo, hi)
    if not starts:
        return []
    tr = ledger.slice(starts[0], ends[-1])
    base = starts[0]
    inst = ledger.instrument
    s = np.asarray(starts, dtype=np.int64) - base
    qty = np.add.reduceat(tr.lots, s).tolist() if len(tr.lots) else []
    out = []
    for k, (a, b) in enumerate(zip(starts, ends, strict=True)):
        i = a - base
        out.append(
            AGG_TRADES.element(
                trade_id=ledger.first_agg_id + agg_lo + k,
                price=format_e8(int(tr.ticks[i]) * inst.tick_e8),
                qty=format_e8(qty[k] * inst.lot_e8),
                first_trade_id=ledger.first_trade_id + a,
                last_trade_id=ledger.first_trade_id + b - 1,
                ts_event=int(tr.time_us[i]) // unit_div,
                is_buyer_maker=bool(tr.maker[i]),
                is_best_match=True,
            )
        )
    return out
