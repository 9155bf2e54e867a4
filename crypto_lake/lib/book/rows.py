"""The compiled per-second row: the book at a second's end (``reference.ReferenceBook._row``)."""

from __future__ import annotations

from crypto_lake.lib.book import levels
from crypto_lake.lib.book.jit import njit
from crypto_lake.lib.book.levels import NONE
from crypto_lake.lib.book.model import (
    BANDS_BPS,
    BEYOND_DEPTH,
    FLAG_HAS_MID,
    LEVELS,
    N_FIELDS,
    R_ASK_PX,
    R_ASK_QTY,
    R_BID_PX,
    R_BID_QTY,
    R_EVENTS,
    R_FLAGS,
    R_LEVELS,
    R_STATE,
    R_SUMS,
    R_UPDATE_ID,
    RELIABLE,
    SYNCED,
)
from crypto_lake.lib.book.state import (
    S_BOOK_ID,
    S_DAY0,
    S_FLOOR_B,
    S_NSEC,
    S_OPEN,
    S_PHASE,
    S_REASON,
)

_BAND0, _BAND1 = BANDS_BPS


@njit
def threshold(mid2, bps):
    """``model.band_threshold``."""
    return (mid2 // 10_000) * bps + ((mid2 % 10_000) * bps) // 10_000


@njit
def top_of_book(S):
    """(bid, bid qty, ask, ask qty), 0 for an empty side."""
    b = bq = a = aq = 0
    pos, i = levels.top(S, 0)
    if pos >= 0:
        b, bq = levels.key_at(S, 0, pos, i), levels.qty_at(S, 0, pos, i)
    pos, i = levels.top(S, 1)
    if pos >= 0:
        a, aq = -levels.key_at(S, 1, pos, i), levels.qty_at(S, 1, pos, i)
    return b, bq, a, aq


@njit
def top_proved(S, b, a):
    """Whether best bid b and best ask a (0: none) lie in the proved range."""
    floor, ceil = S.st[S_FLOOR_B], S.st[S_FLOOR_B + 1]
    return (floor == NONE or (b != 0 and b >= floor)) and (ceil == NONE or (a != 0 and a <= ceil))


@njit
def _top_levels(S, v, side):
    """The top 20 of a side into v; returns the key of the 20th best level (NONE if fewer)."""
    pos, i = levels.top(S, side)
    px, qty = (R_BID_PX, R_BID_QTY) if side == 0 else (R_ASK_PX, R_ASK_QTY)
    key = NONE
    for k in range(LEVELS):
        if pos < 0:
            return NONE
        key = levels.key_at(S, side, pos, i)
        v[px + k], v[qty + k] = (key if side == 0 else -key), levels.qty_at(S, side, pos, i)
        pos, i = levels.down(S, side, pos, i)
    return key


@njit
def row(S, v):
    st = S.st
    v[:] = 0
    if st[S_PHASE] != SYNCED:
        v[R_STATE] = st[S_REASON]
        return
    k20b, k20a = _top_levels(S, v, 0), _top_levels(S, v, 1)
    floor, ceil = st[S_FLOOR_B], st[S_FLOOR_B + 1]
    complete = (floor == NONE or (k20b != NONE and k20b >= floor)) and (
        ceil == NONE or (k20a != NONE and -k20a <= ceil))  # fmt: skip
    v[R_STATE] = RELIABLE if complete else BEYOND_DEPTH
    v[R_UPDATE_ID] = st[S_BOOK_ID]
    if S.nlev[0] == 0 or S.nlev[1] == 0:
        return
    flags = FLAG_HAS_MID
    mid2 = v[R_BID_PX] + v[R_ASK_PX]
    for band in range(2):
        thr = threshold(mid2, _BAND0 if band == 0 else _BAND1)
        for side in range(2):
            # a bid p is in the band when 2p >= mid2 - thr, an ask when 2p <= mid2 + thr
            edge = (mid2 - thr + 1) // 2 if side == 0 else -((mid2 + thr) // 2)
            levels.band_sums(S, side, edge, v, R_SUMS + 2 * (band * 2 + side))
            proved = st[S_FLOOR_B + side]
            if proved == NONE or (mid2 - 2 * (proved - 1) > thr if side == 0
                                  else 2 * (proved + 1) - mid2 > thr):  # fmt: skip
                flags |= 1 << (band * 2 + side)
    v[R_FLAGS] = flags


@njit
def close_seconds(S, to_sec):
    """Rows of the seconds [open, to_sec): the book now."""
    st = S.st
    a = max(st[S_OPEN] - st[S_DAY0], 0)
    b = min(to_sec - st[S_DAY0], st[S_NSEC])
    if a >= b:
        return
    row(S, S.rowv)
    for f in range(N_FIELDS):
        if f != R_EVENTS and f != R_LEVELS:
            x = S.rowv[f]
            for i in range(a, b):
                S.rows[f, i] = x
