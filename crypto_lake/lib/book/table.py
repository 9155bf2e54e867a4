"""The ``book_1s`` table: one row per second of a symbol-day from its first reliable second.

Column types follow the lake's market tables (``crypto_lake.lib.core.schema``): prices and
quantities are exact decimals as in trades, quotes and bars_1s (DECIMAL(18,8) and (20,8)),
sums of quantities DECIMAL(38,8) and of price x quantity DECIMAL(38,16); mid, microprice and
imbalance are doubles, each the correctly rounded quotient of the exact integers. The levels
are flat columns (``bid_price_1`` .. ``ask_qty_20``, level by level), which DuckDB and pandas
select and filter like any column. Every book value is NULL in an unreliable row; a level
beyond a thin book is NULL; a depth sum is NULL where its band reaches past the range a
snapshot proved (see ``model``).

The dataset definition is ``crypto_lake.lib.core.schema.BOOK_1S``, with every other table's.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pyarrow as pa

from crypto_lake.lib.book.model import (
    BANDS_BPS,
    FLAG_HAS_MID,
    LEVELS,
    R_ASK_PX,
    R_ASK_QTY,
    R_BID_PX,
    R_BID_QTY,
    R_EVENTS,
    R_FLAGS,
    R_LEVELS,
    R_STATE,
    R_UPDATE_ID,
    RELIABLE,
    STATE_NAMES,
    US,
    BookDay,
    band_bit,
    sum_index,
)
from crypto_lake.lib.core.schema import BOOK_1S as BOOK_1S  # the table's definition
from crypto_lake.lib.core.schema import COVERAGE_BOOK, F64, PRICE, QTY, QUOTE_VOLUME, VOLUME
from crypto_lake.lib.market import columns

_SIDES = ("bid", "ask")


def _words(rows: np.ndarray, k: int, valid: np.ndarray, dtype: pa.DataType) -> pa.Array:
    words = np.empty(2 * rows.shape[1], np.int64)
    words[0::2], words[1::2] = rows[k], rows[k + 1]
    return columns.decimal(words, dtype, valid)


def _big(rows: np.ndarray, k: int) -> list[int]:
    """The 128-bit values at rows k, k + 1 as Python ints."""
    lo, hi = rows[k].view(np.uint64).tolist(), rows[k + 1].tolist()
    return [(h << 64) | low for low, h in zip(lo, hi, strict=True)]


def _doubles(rows: np.ndarray, ok: np.ndarray, depth_ok: np.ndarray) -> dict[str, pa.Array]:
    """mid, microprice and imbalance: correctly rounded quotients of exact integers."""
    n = rows.shape[1]
    b, a = rows[R_BID_PX].tolist(), rows[R_ASK_PX].tolist()
    bq, aq = rows[R_BID_QTY].tolist(), rows[R_ASK_QTY].tolist()
    bd, ad = _big(rows, sum_index(0, 0, 0)), _big(rows, sum_index(0, 0, 1))
    mid, micro, imb = np.zeros(n), np.zeros(n), np.zeros(n)
    imb_ok = depth_ok.copy()
    for i in np.flatnonzero(ok).tolist():
        mid[i] = (b[i] + a[i]) / (2 * 10**8)
        micro[i] = (b[i] * aq[i] + a[i] * bq[i]) / ((bq[i] + aq[i]) * 10**8)
        if imb_ok[i]:
            total = bd[i] + ad[i]
            imb_ok[i] = total > 0
            imb[i] = (bd[i] - ad[i]) / total if total else 0.0

    def f64(values: np.ndarray, valid: np.ndarray) -> pa.Array:
        return pa.Array.from_buffers(F64, n, [columns.bitmap(valid), pa.py_buffer(values)])

    return {"mid": f64(mid, ok), "microprice": f64(micro, ok), "imbalance": f64(imb, imb_ok)}


def book_1s_table(day: BookDay) -> pa.Table:
    """The ``book_1s`` rows of a reconstructed day: from its first reliable second to the last
    second its clock passed (none when it never became reliable). Later seconds have no row:
    not recorded, or not yet (today's partition ends at its last closed second)."""
    first, last = day.first_reliable, day.last_second
    rows = day.rows[:, first : last + 1] if first is not None else day.rows[:, :0]
    rows = np.ascontiguousarray(rows)
    n = rows.shape[1]
    state, flags = rows[R_STATE], rows[R_FLAGS]
    reliable = state == RELIABLE
    has_mid = reliable & (flags & FLAG_HAS_MID > 0)
    band_ok = {(b, s): has_mid & (flags & band_bit(b, s) > 0) for b in range(2) for s in range(2)}
    out: dict[str, pa.Array] = {
        "symbol": columns.repeat(columns.buffers(), "book.symbol", day.symbol, n),
        "window_start": columns.timestamps(
            day.start_us + (np.arange(n, dtype=np.int64) + (first or 0)) * US),
        "reliable": columns.booleans(reliable),
        "unreliable_reason": pa.DictionaryArray.from_arrays(pa.Array.from_buffers(
            pa.int32(), n, [columns.bitmap(~reliable), pa.py_buffer(
                np.maximum(state - 1, 0).astype(np.int32))]), columns.strings(STATE_NAMES[1:])),
        "update_id": columns.int64(rows[R_UPDATE_ID], valid=reliable),
        "events": columns.int64(rows[R_EVENTS]),
        "level_updates": columns.int64(rows[R_LEVELS]),
    }  # fmt: skip
    doubles = _doubles(rows, has_mid, band_ok[0, 0] & band_ok[0, 1])
    out["mid"], out["microprice"] = doubles["mid"], doubles["microprice"]
    out["spread"] = columns.units(None, "", rows[R_ASK_PX] - rows[R_BID_PX], PRICE, has_mid)
    out["imbalance_10bps"] = doubles["imbalance"]
    for kind, dtype in ((0, VOLUME), (1, QUOTE_VOLUME)):
        name = ("depth", "notional")[kind]
        for band, bps in enumerate(BANDS_BPS):
            for side in range(2):
                out[f"{_SIDES[side]}_{name}_{bps}bps"] = _words(
                    rows, sum_index(kind, band, side), band_ok[band, side], dtype
                )
    for i in range(LEVELS):
        for side, (px, qty) in enumerate(((R_BID_PX, R_BID_QTY), (R_ASK_PX, R_ASK_QTY))):
            present = reliable & (rows[px + i] > 0)
            out[f"{_SIDES[side]}_price_{i + 1}"] = columns.units(None, "", rows[px + i], PRICE,
                                                                 present)  # fmt: skip
            out[f"{_SIDES[side]}_qty_{i + 1}"] = columns.units(None, "", rows[qty + i], QTY,
                                                               present)  # fmt: skip
    return pa.table(out)


_COVERAGE_STATES = ("reliable", *STATE_NAMES[1:])  # in R_STATE order (RELIABLE = 0)


def book_coverage_table(day: BookDay, closed: bool) -> pa.Table:
    """The ``coverage_book`` rows of a reconstructed day: per minute, its seconds by state.

    A closed day has its 1,440 minutes; a day not yet closed (``closed`` false) ends at the
    minute of the book's last second, and the seconds after that second are pending."""
    state = day.rows[R_STATE].copy()
    last = day.last_second
    if closed:
        minutes = len(state) // 60
    else:
        minutes = 0 if last is None else last // 60 + 1
        state[0 if last is None else last + 1 :] = len(_COVERAGE_STATES)  # pending
    per = state[: minutes * 60].reshape(minutes, 60)
    counts = {
        f"seconds_{name}": (per == k).sum(axis=1, dtype=np.int32)
        for k, name in enumerate([*_COVERAGE_STATES, "pending"])
    }
    names = [f.name for f in COVERAGE_BOOK.arrow_schema()]
    out: dict[str, pa.Array] = {
        "symbol": pa.array([day.symbol] * minutes, pa.string()),
        "date": pa.array([date.fromisoformat(day.day)] * minutes, pa.date32()),
        "minute": columns.timestamps(day.start_us + np.arange(minutes, dtype=np.int64) * 60 * US),
        **{k: pa.array(v) for k, v in counts.items()},
        "events": pa.array(day.rows[R_EVENTS, : minutes * 60].reshape(minutes, 60).sum(axis=1)),
    }
    return pa.table({name: out[name] for name in names})
