"""The integer core of the 1-second bars, in one compiled pass over the tick tables.

``crypto_lake.lib.market.bars`` defines the bars in SQL: a per-second aggregation of the trades, the
as-of quote, the continuous grid with carried closes and the outage flags make a *core*
relation; a final projection turns the core into the output columns (the doubles among them).
This module computes the same core without SQL: every value in it is an integer (prices and
quantities in 1e-8, sums in 128 bits), so the result is exact and does not depend on the
order of the rows. The final projection stays the SQL one for both paths, so the doubles are
computed by the same expressions from the same decimals. ``test_fastbars.py`` checks that
both paths write byte-identical Parquet.
"""

from __future__ import annotations

import hashlib
import sys
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import numba
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from crypto_lake.lib.core.parquet_out import write_parquet
from crypto_lake.lib.market import columns

US = 1_000_000
_I64_MIN = np.iinfo(np.int64).min

# rows of the per-second int64 accumulator
(_N, _OPEN_ID, _OPEN, _CLOSE_ID, _CLOSE, _HIGH, _LOW, _COUNT, _FIRST, _LAST, _LIVE, _REP,
 _ARCH, _N_TAKER, _VB_HI, _VQ_HI, _TB_HI) = range(17)  # fmt: skip
_N_ACC = 17
# rows of the per-second uint64 accumulator (low words of the 128-bit sums)
_VB_LO, _VQ_LO, _TB_LO = range(3)
# rows of the per-second quote state
_Q_U, _Q_BID, _Q_BQ, _Q_ASK, _Q_AQ = range(5)

# volume_quote is DECIMAL(38,16) (the SQL definition's sum type too): in 1e-16 units a sum
# must stay below 10^38. High word limits of the 128-bit sums, checked as they grow.
_VQ_MAX = 10**38 - 1
_VQ_HI_MAX = _VQ_MAX >> 64

_TRADE_COLUMNS = ["trade_id", "ts_event", "price", "qty", "is_buyer_maker", "repaired",
                  "first_trade_id", "last_trade_id"]  # fmt: skip
_SOURCE = "source"  # trades v2: "archive" rows (trades v1 files have none, and no column)
# the trade flags the core reads (as ``fastparse``'s flags row): maker side, repaired, archive
_IBM, _REPAIRED, _ARCHIVE = 1, 2, 4
_QUOTE_COLUMNS = ["update_id", "ts_recv", "bid", "bid_qty", "ask", "ask_qty"]


@numba.njit(cache=True, nogil=True)
def _add128(lo, hi, i, x_lo, x_hi):
    """(lo[i], hi) += (x_lo, x_hi) with carry; returns the new high word."""
    s = lo[i] + x_lo
    carry = 1 if s < lo[i] else 0
    lo[i] = s
    return hi + x_hi + carry


@numba.njit(cache=True, nogil=True)
def _trades_pass(start_sec, ts, tid, px, qty, flags, fid, lid, acc, acc_u):
    """Per second of trade time: open/close by trade id, high, low, 128-bit sums of qty,
    price * qty (quote_qty, exact) and taker-buy qty, underlying trade count, id range, and
    whether a trade was live, repaired or from the archive.
    Returns the first second whose quote sum left DECIMAL(38,16)'s range (may have wrapped),
    else -1."""
    nsec = acc.shape[1]
    overflow = -1
    for k in range(len(ts)):
        s = ts[k] // US - start_sec
        if s < 0 or s >= nsec:
            continue
        if acc[_N, s] == 0:
            acc[_OPEN_ID, s] = tid[k]
            acc[_OPEN, s] = px[k]
            acc[_CLOSE_ID, s] = tid[k]
            acc[_CLOSE, s] = px[k]
            acc[_HIGH, s] = px[k]
            acc[_LOW, s] = px[k]
            acc[_FIRST, s] = fid[k]
            acc[_LAST, s] = lid[k]
        else:
            if tid[k] < acc[_OPEN_ID, s]:
                acc[_OPEN_ID, s] = tid[k]
                acc[_OPEN, s] = px[k]
            if tid[k] > acc[_CLOSE_ID, s]:
                acc[_CLOSE_ID, s] = tid[k]
                acc[_CLOSE, s] = px[k]
            acc[_HIGH, s] = max(acc[_HIGH, s], px[k])
            acc[_LOW, s] = min(acc[_LOW, s], px[k])
            acc[_FIRST, s] = min(acc[_FIRST, s], fid[k])
            acc[_LAST, s] = max(acc[_LAST, s], lid[k])
        acc[_N, s] += 1
        acc[_COUNT, s] += lid[k] - fid[k] + 1
        q = qty[k]
        q_lo, q_hi = numba.uint64(q), q >> 63
        acc[_VB_HI, s] = _add128(acc_u[_VB_LO], acc[_VB_HI, s], s, q_lo, q_hi)
        p_lo, p_hi = columns.product128(px[k], q)
        acc[_VQ_HI, s] = _add128(acc_u[_VQ_LO], acc[_VQ_HI, s], s, p_lo, numba.int64(p_hi))
        if overflow < 0 and (acc[_VQ_HI, s] < 0 or acc[_VQ_HI, s] > _VQ_HI_MAX):
            overflow = s
        if not flags[k] & _IBM:
            acc[_N_TAKER, s] += 1
            acc[_TB_HI, s] = _add128(acc_u[_TB_LO], acc[_TB_HI, s], s, q_lo, q_hi)
        if flags[k] & _ARCHIVE:
            acc[_ARCH, s] = 1
        elif flags[k] & _REPAIRED:
            acc[_REP, s] = 1
        else:
            acc[_LIVE, s] = 1
    return overflow


@numba.njit(cache=True, nogil=True)
def _quotes_pass(start_sec, recv, u, bid, bq, ask, aq, qs):
    """The quote with the highest update id per second of receive time."""
    nsec = qs.shape[1]
    for k in range(len(recv)):
        s = recv[k] // US - start_sec
        if s < 0 or s >= nsec or u[k] <= qs[_Q_U, s]:
            continue
        qs[_Q_U, s] = u[k]
        qs[_Q_BID, s] = bid[k]
        qs[_Q_BQ, s] = bq[k]
        qs[_Q_ASK, s] = ask[k]
        qs[_Q_AQ, s] = aq[k]


@numba.njit(cache=True, nogil=True)
def _carry(acc, qs, c, c_valid, q_valid):
    """Carried close (the last close so far; none before the day's first trade) and the as-of
    quote (the highest update id received so far), second by second; ``qs`` is rewritten in
    place to the as-of quote."""
    last, has_last = 0, False
    best = -1
    for s in range(acc.shape[1]):
        if acc[_N, s] > 0:
            last, has_last = acc[_CLOSE, s], True
        c[s] = last
        c_valid[s] = has_last
        if qs[_Q_U, s] != _I64_MIN and (best < 0 or qs[_Q_U, s] > qs[_Q_U, best]):
            best = s
        q_valid[s] = best >= 0
        if best >= 0 and best != s:
            for r in range(5):
                qs[r, s] = qs[r, best]
            best = s  # same quote, now held at s


def _ints(arr: pa.Array) -> np.ndarray:
    """int64 values of an int64/timestamp array, or the low words of a decimal array (tick
    decimals are 64-bit integers of 1e-8 by construction)."""
    if pa.types.is_decimal(arr.type):
        words = np.frombuffer(arr.buffers()[1], dtype=np.int64)
        return words[2 * arr.offset : 2 * (arr.offset + len(arr)) : 2]
    return np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset : arr.offset + len(arr)]


def _unpack(arr: pa.Array, buffer: int) -> np.ndarray:
    """Buffer ``buffer`` of ``arr`` (0: validity, 1: values of a boolean array), one bool per
    value."""
    bits = np.unpackbits(np.frombuffer(arr.buffers()[buffer], dtype=np.uint8), bitorder="little")
    return bits[arr.offset : arr.offset + len(arr)].view(np.bool_)


def _bools(arr: pa.Array) -> np.ndarray:
    """The values of a boolean array without nulls."""
    return _unpack(arr, 1)


def _is_archive(arr: pa.Array) -> np.ndarray:
    """Whether each value of the trades' ``source`` column (read as a dictionary) is
    "archive"."""
    if not pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_encode()
    codes = [i for i, v in enumerate(arr.dictionary.to_pylist()) if v == "archive"]
    return np.isin(arr.indices.to_numpy(zero_copy_only=False), codes)


def _valid(arr: pa.Array) -> np.ndarray:
    return _unpack(arr, 0) if arr.null_count else np.ones(len(arr), dtype=np.bool_)


def _units(units: np.ndarray, valid: np.ndarray | None, dtype: pa.DataType) -> pa.Array:
    return columns.units(None, "", units, dtype, valid)


def _wide(lo: np.ndarray, hi: np.ndarray, valid: np.ndarray, dtype: pa.DataType) -> pa.Array:
    words = np.empty(2 * len(lo), dtype=np.int64)
    words[0::2], words[1::2] = lo.view(np.int64), hi
    return columns.decimal(words, dtype, valid)


def _int64(values: np.ndarray, valid: np.ndarray | None) -> pa.Array:
    return columns.int64(values, valid=valid)


class BarRangeError(ValueError):
    """A bar value outside its column's decimal type: the ticks cannot be Binance's."""


def _check_quote_sums(overflow: int, start_sec: int) -> None:
    if overflow >= 0:
        raise BarRangeError(
            f"the quote volume (sum of price x qty) of second {start_sec + overflow} (epoch) "
            "exceeds DECIMAL(38,16), the type of volume_quote: prices or quantities far "
            "outside Binance's ranges; check the raw input of this partition"
        )


def _seconds(acc, acc_u, qs, start_sec: int) -> pa.Table:
    nsec = acc.shape[1]
    hi, lo = acc[_VQ_HI], acc_u[_VQ_LO]
    over = np.flatnonzero((hi == _VQ_HI_MAX) & (lo > np.uint64(_VQ_MAX & (2**64 - 1))))
    _check_quote_sums(int(over[0]) if len(over) else -1, start_sec)
    carried = np.empty(nsec, dtype=np.int64)
    c_valid = np.empty(nsec, dtype=np.bool_)
    q_valid = np.empty(nsec, dtype=np.bool_)
    _carry(acc, qs, carried, c_valid, q_valid)
    has = acc[_N] > 0
    taker = acc[_N_TAKER] > 0
    return pa.table({
        "sec": _int64(np.arange(start_sec, start_sec + nsec, dtype=np.int64), None),
        "open": _units(acc[_OPEN], has, columns.PRICE),
        "high": _units(acc[_HIGH], has, columns.PRICE),
        "low": _units(acc[_LOW], has, columns.PRICE),
        "close": _units(acc[_CLOSE], has, columns.PRICE),
        "volume_base": _wide(acc_u[_VB_LO], acc[_VB_HI], has, pa.decimal128(38, 8)),
        "volume_quote": _wide(acc_u[_VQ_LO], acc[_VQ_HI], has, pa.decimal128(38, 16)),
        "trade_count": _int64(acc[_COUNT], has),
        "taker_buy_base": _wide(acc_u[_TB_LO], acc[_TB_HI], taker, pa.decimal128(38, 8)),
        "first_trade_id": _int64(acc[_FIRST], has),
        "last_trade_id": _int64(acc[_LAST], has),
        "has_live": columns.booleans(acc[_LIVE] > 0, has),
        "has_repaired": columns.booleans(acc[_REP] > 0, has),
        "has_archive": columns.booleans(acc[_ARCH] > 0, has),
        "carried_close": _units(carried, c_valid, columns.PRICE),
        "bid": _units(qs[_Q_BID], q_valid, columns.PRICE),
        "ask": _units(qs[_Q_ASK], q_valid, columns.PRICE),
        "bid_qty": _units(qs[_Q_BQ], q_valid, columns.QTY),
        "ask_qty": _units(qs[_Q_AQ], q_valid, columns.QTY),
    })  # fmt: skip


def _state(nsec: int):
    qs = np.zeros((5, nsec), dtype=np.int64)
    qs[_Q_U] = _I64_MIN
    return np.zeros((_N_ACC, nsec), dtype=np.int64), np.zeros((3, nsec), dtype=np.uint64), qs


def seconds_from_rows(trades: np.ndarray, quotes: np.ndarray, start_sec: int,
                      nsec: int = 86_400) -> pa.Table:  # fmt: skip
    """The per-second summary of a day from the tick builder's matrices (rows as in
    fastparse.TRADE_COLUMNS / QUOTE_COLUMNS): what the bars need of the ticks, for every
    second of the day, before the grid end, previous close and outages are applied."""
    acc, acc_u, qs = _state(nsec)
    over = _trades_pass(start_sec, trades[5], trades[2], trades[6], trades[7], trades[8],
                        trades[3], trades[4], acc, acc_u)  # fmt: skip
    _check_quote_sums(over, start_sec)
    _quotes_pass(start_sec, quotes[0], quotes[1], quotes[2], quotes[3], quotes[4], quotes[5], qs)
    return _seconds(acc, acc_u, qs, start_sec)


def seconds_from_parquet(trades_path: Path, quotes_path: Path, start_sec: int,
                         nsec: int = 86_400) -> pa.Table:  # fmt: skip
    """``seconds_from_rows`` of the trades and quotes tables. quote_qty and trade_count are
    not read: the tick builder writes them as price * qty and last - first + 1."""
    acc, acc_u, qs = _state(nsec)
    sources = [_SOURCE] if _SOURCE in pq.read_schema(trades_path).names else []
    pf = pq.ParquetFile(trades_path, read_dictionary=sources)
    for batch in pf.iter_batches(columns=[*_TRADE_COLUMNS, *sources], batch_size=1 << 20):
        c = dict(zip(batch.schema.names, batch.columns, strict=True))
        flags = _bools(c["is_buyer_maker"]).astype(np.int64) | (
            _bools(c["repaired"]).astype(np.int64) << 1
        )
        if _SOURCE in c:
            flags |= _is_archive(c[_SOURCE]).astype(np.int64) << 2
        over = _trades_pass(start_sec, _ints(c["ts_event"]), _ints(c["trade_id"]),
                            _ints(c["price"]), _ints(c["qty"]), flags, _ints(c["first_trade_id"]),
                            _ints(c["last_trade_id"]), acc, acc_u)  # fmt: skip
        _check_quote_sums(over, start_sec)
    for batch in pq.ParquetFile(quotes_path).iter_batches(columns=_QUOTE_COLUMNS,
                                                          batch_size=1 << 20):  # fmt: skip
        c = dict(zip(batch.schema.names, batch.columns, strict=True))
        _quotes_pass(start_sec, _ints(c["ts_recv"]), _ints(c["update_id"]), _ints(c["bid"]),
                     _ints(c["bid_qty"]), _ints(c["ask"]), _ints(c["ask_qty"]), qs)  # fmt: skip
    return _seconds(acc, acc_u, qs, start_sec)


_STAMP = b"crypto_lake.tick_files"


# The code that computes a summary: this module and the column conversions it uses. A saved
# summary made by other code (an older release, a fix to the bar logic) is not reused.
CODE_VERSION = hashlib.sha256(
    b"".join(Path(m.__file__).read_bytes() for m in (sys.modules[__name__], columns))
).hexdigest()[:16]


def _fingerprint(trades: Path, quotes: Path) -> bytes:
    """What identifies a summary: the code version, and the size and modification time of
    each tick file it was computed from."""
    files = [[p.stat().st_size, p.stat().st_mtime_ns] for p in (Path(trades), Path(quotes))]
    return orjson.dumps({"code": CODE_VERSION, "files": files})


def save_seconds(summary: pa.Table, out: Path, trades: Path, quotes: Path) -> None:
    """Save a day's per-second summary, stamped with the tick files it was computed from."""
    stamped = summary.replace_schema_metadata({_STAMP: _fingerprint(trades, quotes)})
    write_parquet(stamped, out)


def load_seconds(path: Path, trades: Path, quotes: Path) -> pa.Table | None:
    """The summary saved at ``path`` if it was computed from exactly these tick files (else,
    or when missing or unreadable, None)."""
    try:
        saved = pq.ParquetFile(path).read()  # (read_table would import pyarrow.dataset)
        current = _fingerprint(trades, quotes)
    except (OSError, pa.ArrowException):
        return None
    return saved if (saved.schema.metadata or {}).get(_STAMP) == current else None


def core_table(
    seconds: pa.Table, start_sec: int, end_sec: int, outages: list[tuple[int, int]],
    previous_close: Decimal | str | None,
) -> pa.Table:  # fmt: skip
    """The bars core (the columns and types of ``bars._CORE_SQL``) for seconds
    [start_sec, end_sec), from a day's per-second summary starting at ``start_sec``. Every
    summary value of a second depends on that second and the ones before it only, so the
    grid end just cuts it."""
    nsec = max(0, min(end_sec, start_sec + seconds.num_rows) - start_sec)
    seconds = seconds.slice(0, nsec).combine_chunks()
    if nsec:
        carried = seconds.column("carried_close").chunk(0)
        values, valid = _ints(carried), _valid(carried)
    else:
        values, valid = np.empty(0, dtype=np.int64), np.empty(0, dtype=np.bool_)
    if previous_close is not None:  # as ::DECIMAL(18,8) reads it: rounded half away from 0
        prev = int(Decimal(str(previous_close)).scaleb(8).to_integral_value(ROUND_HALF_UP))
        if not -(10**18) < prev < 10**18:
            raise BarRangeError(f"previous close {previous_close} does not fit DECIMAL(18,8)")
        values, valid = np.where(valid, values, prev), None
    c = _units(np.ascontiguousarray(values), valid, columns.PRICE)
    outage = np.zeros(nsec, dtype=np.bool_)
    for a, b in outages:  # seconds s with s*US < b and (s+1)*US > a
        lo, hi = max(a // US, start_sec) - start_sec, min((b - 1) // US + 1, end_sec) - start_sec
        if hi > lo:
            outage[lo:hi] = True
    names = [n for n in seconds.column_names if n != "carried_close"]
    at = names.index("bid")
    cols = [seconds.column(n) for n in names]
    cols.insert(at, c)
    names.insert(at, "c")
    return pa.table([*cols, columns.booleans(outage)], names=[*names, "is_outage"])
