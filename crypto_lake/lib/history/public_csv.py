"""Binance's public CSV files (inside the zips ``public_files`` stores) -> exact Arrow tables.

pyarrow's multi-threaded CSV reader reads the zip's CSV as a stream (``zip_member``
inflates it with ISA-L and checks its CRC at the end) and parses prices and quantities
straight into decimal128, so no Python code runs per row. quote_qty is computed, not read:
the exact product price x qty as DECIMAL(38,16) (the file's value is rounded to 8 places;
it is only checked against ours).

Times: Binance's spot files give milliseconds for dates before 2025-01-01 and microseconds
from then on. The unit is chosen by the file's date, and every time must lie inside the
file's day (or month) in that unit: a file whose times do not is rejected
(:class:`WrongTimeUnits`) rather than shifted by a factor of 1000.

A header row naming the expected columns is skipped; any other problem (column count, a
value that does not parse or is out of range, a duplicate id) raises
:class:`UnexpectedCsv` naming the file.
"""

from __future__ import annotations

import io
import re
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from crypto_lake.lib.core.logs import get_logger
from crypto_lake.lib.core.paths import PUBLIC_KLINE_INTERVALS, public_period
from crypto_lake.lib.core.schema import KLINES_1M, PRICE, QTY, QUOTE_VOLUME, TS, VOLUME
from crypto_lake.lib.core.symbols import validate_symbol
from crypto_lake.lib.history.public_files import (
    CSV_COLUMNS,
    CorruptZip,
    UnexpectedCsv,
    WrongTimeUnits,
    csv_member,
    has_header,
)
from crypto_lake.lib.history.zip_member import open_member

log = get_logger("history.public_csv")

MICROSECONDS_FROM = date(2025, 1, 1)  # spot files in µs from this date on, ms before
US_PER = {"ms": 1000, "us": 1}
UNIT_NAMES = {"ms": "milliseconds", "us": "microseconds"}
INTERVAL_SECONDS = {"1s": 1, "1m": 60, "3m": 180, "5m": 300, "15m": 900, "30m": 1800,
                    "1h": 3600, "2h": 7200, "4h": 14_400, "6h": 21_600, "8h": 28_800,
                    "12h": 43_200, "1d": 86_400}  # fmt: skip
assert tuple(INTERVAL_SECONDS) == PUBLIC_KLINE_INTERVALS
BLOCK_SIZE = 4 << 20  # CSV bytes per parse task: as fast as larger ones here, less memory
HEAD_BYTES = 1 << 20  # the rows whose quote_qty read_trades checks
PRICE_LIMIT = Decimal(10) ** 10  # prices are DECIMAL(18,8): below 10^10
# Binance keeps quantities as 64-bit integers of 1e-8 (so do the tick builder's rows)
QTY_LIMIT = Decimal(2**63).scaleb(-8)
_QTY_FOR_PRODUCT = pa.decimal128(19, 8)  # 18 + 19 + 1 digits: the product fits 38 exactly
_I64, _BOOL, _F64 = pa.int64(), pa.bool_(), pa.float64()
_NAME_RE = re.compile(r"^([A-Z0-9]+)-(\w+)-(\d{4}-\d{2}(?:-\d{2})?)\.zip$")


def public_time_unit(day: str | date) -> str:
    """The unit of the times in the public spot file of ``day`` (or month): "ms" or "us"."""
    return "us" if _period_start(day) >= MICROSECONDS_FROM else "ms"


def period_bounds_us(day: str | date) -> tuple[int, int]:
    """[start, end) in µs since the epoch of a UTC day, or of a month given as YYYY-MM."""
    start = _period_start(day)
    if public_period(day)[0] == "monthly":
        end = date(start.year + start.month // 12, start.month % 12 + 1, 1)
    else:
        end = start + timedelta(days=1)
    return _epoch_us(start), _epoch_us(end)


def _period_start(day: str | date) -> date:
    frequency, text = public_period(day)
    return date.fromisoformat(text + "-01" if frequency == "monthly" else text)


def _epoch_us(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp()) * 1_000_000


# --- reading ------------------------------------------------------------------------------------
def symbol_of(zip_path: Path, day: str | date, name: str) -> str | None:
    """The symbol in a public zip's file name (None for a name of another form), after
    checking that the name is of ``day``'s period and ``name`` (trades, aggTrades or the
    kline interval)."""
    m = _NAME_RE.fullmatch(Path(zip_path).name)
    if m is None:
        return None
    if m.group(3) != public_period(day)[1]:
        raise ValueError(f"{zip_path} is the file of {m.group(3)}, not of {day}")
    if m.group(2) != name:
        raise ValueError(f"{zip_path} is a {m.group(2)} file, not {name}")
    return m.group(1)


def _read_csv(zip_path: Path, kind: str, types: dict[str, pa.DataType], *,
              head_bytes: int | None = None) -> pa.Table:  # fmt: skip
    """The columns ``types`` of the CSV inside a public zip, parsed by pyarrow; only the rows
    in its first ``head_bytes`` bytes when given."""
    where, name = str(zip_path), Path(zip_path).name
    if not name.endswith(".zip"):
        raise ValueError(f"{zip_path}: not a public zip (expected a .zip name)")
    columns = list(CSV_COLUMNS[kind])
    convert = pcsv.ConvertOptions(column_types=types, include_columns=list(types),
                                  null_values=[], strings_can_be_null=False,
                                  quoted_strings_can_be_null=False)  # fmt: skip
    try:
        with zipfile.ZipFile(zip_path) as zf:
            info = csv_member(zf, name[: -len(".zip")] + ".csv", where)
        with open_member(zip_path, info) as stream:
            skip = 1 if has_header(stream, kind, where) else 0
        read = pcsv.ReadOptions(column_names=columns, skip_rows=skip, block_size=BLOCK_SIZE)
        with open_member(zip_path, info) as stream:
            source = stream if head_bytes is None else _head(stream, head_bytes)
            return pcsv.read_csv(source, read_options=read, convert_options=convert)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise CorruptZip(
            f"{where}: corrupt or truncated zip ({exc}); fetch it again (fetch_public_file "
            "replaces a stored copy that no longer matches Binance's checksum)",
            where,
        ) from None
    except pa.ArrowInvalid as exc:
        raise UnexpectedCsv(
            f"{where}: not the {kind} CSV this reader expects ({','.join(columns)}): {exc}. "
            "If the file matches Binance's checksum, Binance's format changed: update "
            "crypto_lake/lib/history/public_files.py (CSV_COLUMNS)",
            where,
        ) from None


def _head(stream: BinaryIO, nbytes: int) -> io.BytesIO:
    """The whole rows in the first ``nbytes`` bytes of a CSV stream."""
    head = stream.read(nbytes)
    return io.BytesIO(head if len(head) < nbytes else head[: head.rfind(b"\n") + 1])


def _times_us(values: pa.ChunkedArray, day: str | date, where: str, column: str,
              ) -> pa.ChunkedArray:  # fmt: skip
    """A time column in µs (int64), after checking that every value lies inside ``day`` (or
    the month) in the unit Binance uses for that date."""
    unit = public_time_unit(day)
    start, end = period_bounds_us(day)
    if not len(values):
        return values
    mm = pc.min_max(values)
    lo, hi = mm["min"].as_py(), mm["max"].as_py()
    if start <= lo * US_PER[unit] and hi * US_PER[unit] < end:
        return pc.multiply(values, US_PER[unit]) if unit == "ms" else values
    other = "ms" if unit == "us" else "us"
    if start <= lo * US_PER[other] and hi * US_PER[other] < end:
        hint = (f"they fit it in {UNIT_NAMES[other]}: the file is not in the unit Binance "
                "uses for its date")  # fmt: skip
    else:
        hint = "they fit it in neither unit: the file is not of that period"
    raise WrongTimeUnits(
        f"{where}: wrong units: {column} runs from {lo} to {hi}, not inside "
        f"{public_period(day)[1]} in {UNIT_NAMES[unit]} (Binance's unit for spot files "
        f"{'from' if unit == 'us' else 'before'} {MICROSECONDS_FROM}); {hint}. Check that the "
        "file is the one named, and the cut-over date (MICROSECONDS_FROM)",
        where,
    )


def _check_range(values: pa.ChunkedArray, column: str, where: str, *, low: Decimal | int,
                 high: Decimal | int | None = None, low_open: bool = False) -> None:  # fmt: skip
    """Every value ≥ ``low`` (> when ``low_open``) and < ``high``."""
    if not len(values):
        return
    mm = pc.min_max(values)
    lo, hi = mm["min"].as_py(), mm["max"].as_py()
    if (lo <= low if low_open else lo < low) or (high is not None and hi >= high):
        bound = f"{'>' if low_open else '>='} {low}" + (f" and < {high}" if high else "")
        raise UnexpectedCsv(
            f"{where}: {column} runs from {lo} to {hi}, outside Binance's range ({bound}); the "
            "file is damaged or not the format this reader expects",
            where,
        )


def _order(ids: pa.ChunkedArray, times: pa.ChunkedArray, id_column: str, where: str,
           ) -> np.ndarray | None:  # fmt: skip
    """None when the rows are sorted by (time, id) with unique ids (Binance writes them so),
    else the permutation that sorts them. Raises UnexpectedCsv on a duplicate id."""
    if _rising(ids, times):
        return None
    ids_np, times_np = ids.to_numpy(), times.to_numpy()
    ordered = np.sort(ids_np)
    dup = ordered[1:][ordered[1:] == ordered[:-1]]
    if len(dup):
        raise UnexpectedCsv(
            f"{where}: {id_column} {dup[0]} appears more than once ({len(dup)} duplicate rows); "
            "Binance's files have unique ids: the file is damaged, fetch it again",
            where,
        )
    return np.lexsort((ids_np, times_np))


def _rising(ids: pa.ChunkedArray, times: pa.ChunkedArray) -> bool:
    """Whether ids rise strictly and times never fall, row after row: checked batch by batch
    over the Arrow buffers (a copy of a day's columns costs more than the check)."""
    last: tuple[int, int] | None = None
    for batch in pa.table({"i": ids, "t": times}).to_batches():
        i, t = _values(batch.column(0)), _values(batch.column(1))
        if not len(i):
            continue
        if last is not None and (i[0] <= last[0] or t[0] < last[1]):
            return False
        if not ((i[1:] > i[:-1]).all() and (t[1:] >= t[:-1]).all()):
            return False
        last = (i[-1], t[-1])
    return True


def _values(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The values of an int64 or float64 array without nulls, a view of its buffer when it
    is one chunk. ``to_numpy`` would first import pandas: a third of a second of the first
    file a process reads."""
    if isinstance(values, pa.ChunkedArray):
        if values.num_chunks != 1:
            return np.concatenate([_values(c) for c in values.chunks] or [np.empty(0)])
        values = values.chunk(0)
    dtype = np.float64 if pa.types.is_floating(values.type) else np.int64
    return np.frombuffer(values.buffers()[1], dtype=dtype)[values.offset : values.offset
                                                           + len(values)]  # fmt: skip


def _sorted(table: pa.Table, order: np.ndarray | None) -> pa.Table:
    return table if order is None else table.take(order)


# --- trades -------------------------------------------------------------------------------------
def exact_quote_qty(price: pa.ChunkedArray, qty: pa.ChunkedArray, where: str) -> pa.ChunkedArray:
    """price x qty exactly, as DECIMAL(38,16) (schema.QUOTE_VOLUME), after checking that
    prices lie in (0, 10^10) and quantities in [0, 2^63 x 1e-8): Arrow multiplies the
    unscaled 128-bit integers, and 18 + 19 + 1 digits always fit 38."""
    check_prices_and_quantities(price, qty, where)

    def product(b: pa.RecordBatch) -> pa.Array:  # batch by batch: small temporaries
        return pc.multiply(b.column(0), b.column(1).cast(_QTY_FOR_PRODUCT))

    with ThreadPoolExecutor(pa.cpu_count()) as pool:  # Arrow compute releases the GIL
        parts = list(pool.map(product, pa.table({"p": price, "q": qty}).to_batches()))
    return pa.chunked_array(parts, type=QUOTE_VOLUME)


def check_prices_and_quantities(price: pa.ChunkedArray, qty: pa.ChunkedArray, where: str,
                                ) -> None:  # fmt: skip
    """Prices in (0, 10^10) and quantities in [0, 2^63 x 1e-8) (UnexpectedCsv otherwise)."""
    _check_range(price, "price", where, low=0, low_open=True, high=PRICE_LIMIT)
    _check_range(qty, "qty", where, low=0, high=QTY_LIMIT)


def _quote_column(price: pa.ChunkedArray, qty: pa.ChunkedArray, where: str, exact: bool,
                  ) -> dict[str, pa.ChunkedArray]:  # fmt: skip
    """``{"quote_qty": price x qty}`` (``exact_quote_qty``), or ``{}`` after the same checks
    when the caller does not want the product."""
    if exact:
        return {"quote_qty": exact_quote_qty(price, qty, where)}
    check_prices_and_quantities(price, qty, where)
    return {}


def _check_file_quote(exact: pa.ChunkedArray, in_file: pa.ChunkedArray, ids: pa.ChunkedArray,
                      where: str) -> None:  # fmt: skip
    """The file's quote_qty agrees with price x qty to 8 places (as doubles: the tolerance is
    1e-8 plus the doubles' rounding); a disagreement means columns in another order."""
    if not len(exact):
        return
    # in numpy (a megabyte of rows): Arrow compute with a Python number would import pandas
    ours, theirs = _values(pc.cast(exact, _F64)), _values(in_file)
    bad = np.abs(ours - theirs) > np.abs(theirs) * 4e-16 + 1e-8
    if bad.any():
        i = int(np.argmax(bad))
        raise UnexpectedCsv(
            f"{where}: quote_qty {in_file[i]} of id {ids[i]} differs from price x qty "
            f"({exact[i]}) beyond the 8th decimal: the columns are not the ones this reader "
            "expects; Binance's format may have changed",
            where,
        )


_TRADE_TYPES = {"id": _I64, "price": PRICE, "qty": QTY, "time": _I64, "is_buyer_maker": _BOOL}


def check_file_quote(zip_path: Path) -> None:
    """The quote_qty column of a trades zip agrees with price x qty to 8 places on the rows
    of its first ``HEAD_BYTES`` (UnexpectedCsv otherwise)."""
    head = _read_csv(zip_path, "trades", {**_TRADE_TYPES, "quote_qty": _F64},
                     head_bytes=HEAD_BYTES)  # fmt: skip
    _check_file_quote(exact_quote_qty(head["price"], head["qty"], str(zip_path)),
                      head["quote_qty"], head["id"], str(zip_path))  # fmt: skip


def read_trades(zip_path: Path, day: str | date, *, check_quote_qty: bool = True,
                quote_qty: bool = True) -> pa.Table:  # fmt: skip
    """A public trades zip (``day``: its UTC day, or a YYYY-MM month) as a table: trade_id,
    ts_event (µs, UTC), price, qty, quote_qty (exact price x qty), is_buyer_maker; sorted by
    (ts_event, trade_id). ``check_quote_qty`` checks that the file's own (rounded) quote_qty
    agrees with ours to 8 places on the rows of its first megabyte: a check of the columns'
    meaning that costs nothing (over the whole file it would add a sixth to the parse).
    ``quote_qty=False`` leaves the quote_qty column out (same checks otherwise): the trades
    build computes it again from its own rows (a busy day's products take 0.2 s of both
    cores)."""
    where = str(zip_path)
    symbol_of(zip_path, day, "trades")
    if check_quote_qty:
        check_file_quote(Path(zip_path))
    t = _read_csv(Path(zip_path), "trades", _TRADE_TYPES)
    times = _times_us(t["time"], day, where, "time")
    quote = _quote_column(t["price"], t["qty"], where, quote_qty)
    order = _order(t["id"], times, "id", where)
    table = pa.table({
        "trade_id": t["id"], "ts_event": times.cast(TS), "price": t["price"],
        "qty": t["qty"], **quote, "is_buyer_maker": t["is_buyer_maker"],
    })  # fmt: skip
    return _sorted(table, order)


def read_agg_trades(zip_path: Path, day: str | date, *, quote_qty: bool = True) -> pa.Table:
    """A public aggTrades zip as a table: trade_id (the aggregate id), ts_event, price, qty,
    quote_qty (exact; left out when ``quote_qty`` is False, as in ``read_trades``),
    is_buyer_maker, first_trade_id, last_trade_id; sorted by (ts_event, trade_id).
    Invalidated aggregates (first = last = -1) are left out, as the live path does."""
    where = str(zip_path)
    symbol_of(zip_path, day, "aggTrades")
    t = _read_csv(Path(zip_path), "aggTrades", {
        "agg_id": _I64, "price": PRICE, "qty": QTY, "first_trade_id": _I64,
        "last_trade_id": _I64, "time": _I64, "is_buyer_maker": _BOOL,
    })  # fmt: skip
    invalid = pc.and_(pc.equal(t["first_trade_id"], -1), pc.equal(t["last_trade_id"], -1))
    n_invalid = pc.sum(invalid).as_py() or 0
    if n_invalid:
        log.info("%s: %d invalidated aggregates left out", where, n_invalid)
        t = t.filter(pc.invert(invalid))
    times = _times_us(t["time"], day, where, "time")
    quote = _quote_column(t["price"], t["qty"], where, quote_qty)
    span = pc.subtract(t["last_trade_id"], t["first_trade_id"])
    _check_range(span, "last_trade_id - first_trade_id", where, low=0)
    _check_range(t["first_trade_id"], "first_trade_id", where, low=0)
    order = _order(t["agg_id"], times, "agg_id", where)
    table = pa.table({
        "trade_id": t["agg_id"], "ts_event": times.cast(TS), "price": t["price"],
        "qty": t["qty"], **quote, "is_buyer_maker": t["is_buyer_maker"],
        "first_trade_id": t["first_trade_id"], "last_trade_id": t["last_trade_id"],
    })  # fmt: skip
    return _sorted(table, order)


# --- klines -------------------------------------------------------------------------------------
KLINES_SCHEMA = KLINES_1M.arrow_schema()  # lib/core/schema.py
_KLINE_TYPES = {
    "open_time": _I64, "open": PRICE, "high": PRICE, "low": PRICE, "close": PRICE,
    "volume": VOLUME, "close_time": _I64, "quote_volume": VOLUME, "count": _I64,
    "taker_buy_base": VOLUME, "taker_buy_quote": VOLUME,
}  # fmt: skip


def read_klines(zip_path: Path, day: str | date, interval: str, symbol: str | None = None,
                ) -> pa.Table:  # fmt: skip
    """A public klines zip as a table in the klines_1m schema (open_time and close_time as
    µs UTC timestamps), sorted by open_time. ``symbol`` defaults to the one in the file's
    name. Every open time must be a multiple of the interval and its close time the
    interval's last millisecond (microsecond) after it."""
    where = str(zip_path)
    if interval not in INTERVAL_SECONDS:
        raise ValueError(f"unsupported interval {interval!r}; known: {list(INTERVAL_SECONDS)}")
    symbol = symbol or symbol_of(zip_path, day, interval)
    if symbol is None:
        raise ValueError(f"{zip_path}: not a public file name; pass the symbol")
    symbol = validate_symbol(symbol)
    t = _read_csv(Path(zip_path), "klines", _KLINE_TYPES)
    opens = _times_us(t["open_time"], day, where, "open_time")
    closes = _times_us(t["close_time"], day, where, "close_time")
    step = INTERVAL_SECONDS[interval] * 1_000_000
    last = step - US_PER[public_time_unit(day)]  # the interval's last unit after its open
    opens_np, closes_np = opens.to_numpy(), closes.to_numpy()  # a day has 86,400 at most
    bad = np.flatnonzero((opens_np % step != 0) | (closes_np - opens_np != last))
    if len(bad):
        i = int(bad[0])
        raise UnexpectedCsv(
            f"{where}: kline {i} (open_time {t['open_time'][i]}, close_time "
            f"{t['close_time'][i]}) is not a {interval} interval; check that the file is the "
            f"{interval} klines named",
            where,
        )
    for column in ("open", "high", "low", "close"):
        _check_range(t[column], column, where, low=0, low_open=True, high=PRICE_LIMIT)
    for column in ("volume", "quote_volume", "count", "taker_buy_base", "taker_buy_quote"):
        _check_range(t[column], column, where, low=0)
    order = _order(opens, opens, "open_time", where)
    cols = {name: t[name] for name in _KLINE_TYPES if name in KLINES_SCHEMA.names}
    cols |= {"symbol": pa.repeat(symbol, t.num_rows), "trade_count": t["count"],
             "open_time": opens.cast(TS), "close_time": closes.cast(TS)}  # fmt: skip
    table = pa.table([cols[f.name] for f in KLINES_SCHEMA], schema=KLINES_SCHEMA)
    return _sorted(table, order)
