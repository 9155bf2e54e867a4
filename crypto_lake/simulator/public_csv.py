"""CSV rows of Binance's public spot files (data.binance.vision), formatted column-wise.

No header row (a fault can add one); decimals with 8 places as the REST API prints them;
booleans ``True``/``False``; times in milliseconds for dates before 2025-01-01 and in
microseconds from then on (Binance switched its spot files to µs on that date):

* trades: ``id,price,qty,quote_qty,time,is_buyer_maker,is_best_match``
* aggTrades: ``agg_id,price,qty,first_trade_id,last_trade_id,time,is_buyer_maker,is_best_match``
* klines: ``open_time,open,high,low,close,volume,close_time,quote_volume,count,
  taker_buy_base,taker_buy_quote,ignore`` (close_time = open + interval - 1 in the file's unit)

Rows are built with pyarrow (a Python loop would take a minute for a busy day): a decimal is
an integer in units of 1e-8, i.e. a decimal128 with scale 8, which Arrow's CSV writer prints
as ``65000.01000000``. Arrow switches to exponent notation below 1e-6, so columns holding
such values (zero volumes of empty klines) are formatted as strings instead.
"""

from __future__ import annotations

import io
from datetime import date

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from crypto_lake.simulator.instruments import E8, Instrument
from crypto_lake.simulator.ledger import TradeSlice
from crypto_lake.simulator.queries import KlineArrays

MICROS_FROM = date(2025, 1, 1)  # spot files carry µs times from this date on
# Header rows as Binance has written them in files that had one (only ever a fault here).
HEADERS = {
    "trades": b"id,price,qty,quote_qty,time,is_buyer_maker,is_best_match\n",
    "aggTrades": b"agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,"
    b"is_buyer_maker,is_best_match\n",
    "klines": b"open_time,open,high,low,close,volume,close_time,quote_volume,count,"
    b"taker_buy_volume,taker_buy_quote_volume,ignore\n",
}
_BOOLS = pa.array(["False", "True"])
_WRITE = pcsv.WriteOptions(include_header=False, quoting_style="none", batch_size=1 << 16)


def file_time_unit(day: date) -> str:
    """ "us" for files of days from 2025-01-01 on, "ms" before (a monthly file: its 1st)."""
    return "us" if day >= MICROS_FROM else "ms"


def unit_divisor(day: date) -> int:
    """What µs times are divided by in a file of ``day``: 1 (µs) or 1000 (ms)."""
    return 1 if day >= MICROS_FROM else 1000


def decimal_column(values_e8: np.ndarray) -> pa.Array:
    """Integers in units of 1e-8 as a column the CSV writer prints with 8 decimals."""
    v = np.ascontiguousarray(values_e8, dtype=np.int64)
    if len(v) and (v.min() < 100):  # Arrow would print 1E-8 / 0E-8: format as strings
        whole, frac = np.divmod(v, E8)
        return pc.binary_join_element_wise(
            pc.cast(pa.array(whole), pa.string()),
            pc.utf8_lpad(pc.cast(pa.array(frac), pa.string()), 8, "0"),
            ".",
        )
    buf = np.empty((len(v), 2), dtype=np.int64)  # decimal128: little-endian low, high words
    buf[:, 0] = v
    buf[:, 1] = v >> 63
    return pa.Array.from_buffers(pa.decimal128(18, 8), len(v), [None, pa.py_buffer(buf)])


def bool_column(flags: np.ndarray) -> pa.Array:
    return pa.DictionaryArray.from_arrays(pa.array(flags.astype(np.int8)), _BOOLS)


def csv_bytes(columns: list[pa.Array]) -> bytes:
    table = pa.table(columns, names=[f"c{i}" for i in range(len(columns))])
    out = io.BytesIO()
    pcsv.write_csv(table, out, _WRITE)
    return out.getvalue()


def trades_csv(tr: TradeSlice, inst: Instrument, unit_div: int) -> bytes:
    """Trade rows of one piece (ids first_id.. in order)."""
    n = len(tr)
    if n == 0:
        return b""
    return csv_bytes([
        pa.array(np.arange(tr.first_id, tr.first_id + n, dtype=np.int64)),
        decimal_column(tr.ticks * inst.tick_e8),
        decimal_column(tr.lots * inst.lot_e8),
        decimal_column(tr.ticks * tr.lots * inst.notional_e8),
        pa.array(tr.time_us // unit_div),
        bool_column(tr.maker),
        bool_column(np.ones(n, dtype=np.int8)),
    ])  # fmt: skip


def agg_trades_csv(tr: TradeSlice, inst: Instrument, unit_div: int) -> bytes:
    """Aggregate trade rows of one piece of whole aggregates (``tr.agg_starts`` set)."""
    s = tr.agg_starts
    if s is None or len(s) == 0:
        return b""
    ends = np.append(s[1:], len(tr))
    return csv_bytes([
        pa.array(np.arange(tr.first_agg_id, tr.first_agg_id + len(s), dtype=np.int64)),
        decimal_column(tr.ticks[s] * inst.tick_e8),
        decimal_column(np.add.reduceat(tr.lots, s) * inst.lot_e8),
        pa.array(tr.first_id + s),
        pa.array(tr.first_id + ends - 1),
        pa.array(tr.time_us[s] // unit_div),
        bool_column(tr.maker[s]),
        bool_column(np.ones(len(s), dtype=np.int8)),
    ])  # fmt: skip


def klines_csv(k: KlineArrays, step_us: int, inst: Instrument, unit_div: int) -> bytes:
    """Kline rows (open times ``k.opens``) in the file's time unit."""
    if len(k.opens) == 0:
        return b""
    tick, lot, notional = inst.tick_e8, inst.lot_e8, inst.notional_e8
    return csv_bytes([
        pa.array(k.opens // unit_div),
        decimal_column(k.open * tick),
        decimal_column(k.high * tick),
        decimal_column(k.low * tick),
        decimal_column(k.close * tick),
        decimal_column(k.volume * lot),
        pa.array((k.opens + step_us) // unit_div - 1),
        decimal_column(k.quote_volume * notional),
        pa.array(k.count),
        decimal_column(k.taker_buy_base * lot),
        decimal_column(k.taker_buy_quote * notional),
        pa.array(np.zeros(len(k.opens), dtype=np.int64)),
    ])  # fmt: skip
