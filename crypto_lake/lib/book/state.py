"""The compiled engine's state: its arrays, their scalar slots, and the break transition.

All state lives in the arrays of one :data:`Engine` tuple (numba passes it to every
function); scalars and counters sit in ``st`` at the ``S_*`` and ``C_*`` slots. The book's
two sides are ``levels``' blocked arrays. ``break_book`` is here because every part of the
engine may break the book (a gap, a malformed event, a failed verification).
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from crypto_lake.lib.book.jit import njit
from crypto_lake.lib.book.levels import NONE, B, spare_blocks
from crypto_lake.lib.book.model import (
    BEYOND_DEPTH,
    GAP,
    MALFORMED,
    N_FIELDS,
    N_SR,
    NO_SNAPSHOT,
    O_ABANDONED,
    R_STATE,
    RELIABLE,
    SR_OUTCOME,
    UNSYNCED,
    US,
    BookConfig,
    new_rows,
)

Engine = namedtuple("Engine", [
    "st",  # int64 scalars and counters (S_*, C_*)
    "bk", "bq", "blen", "bsum", "bord", "bmin", "bfree", "nlev", "nblk", "nfree",  # levels
    "buf", "bufl",  # unsynced buffer: (6, events) U, u, t, level start, nb, na; (2, levels)
    "hist", "histl",  # undo history ring: (4, events) U, u, level start, n; (4, levels)
    "tops",  # ring (6, n) after each applied event: u, bid, bid qty, ask, ask qty, proved
    "ptk",  # (6, n) pending bookTickers: recv_ns, u, bid, bid qty, ask, ask qty
    "pvp", "pvq",  # (2, cap) the pending verification snapshot's prices, quantities
    "rows", "rowv",  # (N_FIELDS, seconds) the day's rows; (N_FIELDS,) scratch
    "snap_res",  # (N_SR, snapshots) results
    "tm", "cr",  # (10, k) first ticker mismatches; (2, k) first crossings
])  # fmt: skip

(S_PHASE, S_REASON, S_BOOK_ID, S_SYNC_L, S_LAST_FIRST, S_LAST_LAST, S_LAST_T, S_OPEN,
 S_FLOOR_B, S_FLOOR_A, S_DAY0, S_NSEC,
 S_BUF_HEAD, S_BUF_TAIL, S_BUFL_HEAD, S_BUFL_TAIL,
 S_H_FIRST, S_H_END, S_HL_FIRST, S_HL_END, S_EVICTED_U, S_T_FIRST, S_T_END, S_PT_N,
 S_PV, S_PV_L, S_PV_NB, S_PV_NA, S_PV_LIMIT,
 S_CAP_BE, S_CAP_BL, S_CAP_HE, S_CAP_HL, S_CAP_T, S_CAP_PT, S_FIRST_RECORDS,
 S_N_TM, S_N_CR) = range(38)  # fmt: skip
# counters, named as the BookChecks fields they fill
COUNTERS = ("events", "level_updates", "events_applied", "level_updates_applied", "events_old",
            "events_duplicate", "events_evicted", "breaks_gap", "breaks_malformed",
            "breaks_verify_mismatch", "malformed_events", "crossed", "tickers",
            "tickers_compared", "tickers_equal", "tickers_mismatched")  # fmt: skip
(C_EVENTS, C_LEVEL_UPDATES, C_APPLIED, C_LEVELS_APPLIED, C_OLD, C_DUPLICATE, C_EVICTED,
 C_BREAKS_GAP, C_BREAKS_MALFORMED, C_BREAKS_VERIFY, C_MALFORMED, C_CROSSED, C_TICKERS,
 C_TK_COMPARED, C_TK_EQUAL, C_TK_MISMATCHED) = range(38, 38 + len(COUNTERS))  # fmt: skip
N_STATE = 38 + len(COUNTERS)


def new_engine(day0: int, nsec: int, cfg: BookConfig, blocks: int = 64) -> Engine:
    """A fresh engine for the day starting at second ``day0``."""
    st = np.zeros(N_STATE, np.int64)
    st[S_PHASE], st[S_REASON] = UNSYNCED, NO_SNAPSHOT
    st[S_LAST_T] = st[S_OPEN] = NONE
    st[S_LAST_FIRST] = st[S_LAST_LAST] = -1
    st[S_DAY0], st[S_NSEC] = day0, nsec
    st[S_PV] = -1
    st[S_CAP_BE], st[S_CAP_BL] = cfg.buffer_events, cfg.buffer_levels
    st[S_CAP_HE], st[S_CAP_HL] = cfg.history_events, cfg.history_levels
    st[S_CAP_T], st[S_CAP_PT] = cfg.tops_history, cfg.pending_tickers
    st[S_FIRST_RECORDS] = cfg.first_records

    def m(rows: int, cols: int) -> np.ndarray:
        return np.zeros((rows, max(cols, 1)), np.int64)

    return Engine(
        st=st, bk=np.zeros((2, blocks, B), np.int64), bq=np.zeros((2, blocks, B), np.int64),
        blen=m(2, blocks), bsum=np.zeros((2, blocks, 4), np.int64), bord=m(2, blocks),
        bmin=m(2, blocks), bfree=np.tile(np.arange(blocks, dtype=np.int64), (2, 1)),
        nlev=np.zeros(2, np.int64), nblk=np.zeros(2, np.int64),
        nfree=np.full(2, blocks, np.int64), buf=m(6, cfg.buffer_events),
        bufl=m(2, cfg.buffer_levels), hist=m(4, cfg.history_events),
        histl=m(4, cfg.history_levels), tops=m(6, cfg.tops_history),
        ptk=m(6, cfg.pending_tickers), pvp=m(2, 1024), pvq=m(2, 1024), rows=new_rows(nsec),
        rowv=np.zeros(N_FIELDS, np.int64), snap_res=m(N_SR, 64), tm=m(10, cfg.first_records),
        cr=m(2, cfg.first_records),
    )  # fmt: skip


@njit
def has_room(S, more):
    """Whether both sides can take ``more`` levels, and a pending snapshot's (adopted)."""
    pending = max(S.st[S_PV_NB], S.st[S_PV_NA]) if S.st[S_PV] >= 0 else 0
    need = spare_blocks(S, more + pending)
    return S.nfree[0] >= need and S.nfree[1] >= need


def with_room(S: Engine, more: int) -> Engine:
    """``S``, with more blocks if ``has_room(S, more)`` is false (block ids stay valid)."""
    if has_room(S, more):
        return S
    pending = max(S.st[S_PV_NB], S.st[S_PV_NA]) if S.st[S_PV] >= 0 else 0
    old = S.bk.shape[1]
    blocks = max(2 * old, old + int(spare_blocks(S, more + pending)))

    def wider(a: np.ndarray) -> np.ndarray:
        out = np.zeros((2, blocks, *a.shape[2:]), np.int64)
        out[:, :old] = a
        return out

    bfree = np.zeros((2, blocks), np.int64)
    nfree = S.nfree.copy()
    for side in range(2):
        n = int(S.nfree[side])
        bfree[side, :n] = S.bfree[side, :n]
        bfree[side, n : n + blocks - old] = np.arange(old, blocks)
        nfree[side] = n + blocks - old
    return S._replace(bk=wider(S.bk), bq=wider(S.bq), blen=wider(S.blen), bsum=wider(S.bsum),
                      bord=wider(S.bord), bmin=wider(S.bmin), bfree=bfree,
                      nfree=nfree)  # fmt: skip


def grown(a: np.ndarray, cols: int) -> np.ndarray:
    """A 2-D array with ``cols`` columns, ``a`` in its first ones."""
    out = np.zeros((a.shape[0], cols), dtype=a.dtype)
    out[:, : a.shape[1]] = a
    return out


@njit
def clear_buffer(st):
    st[S_BUF_HEAD] = st[S_BUF_TAIL] = st[S_BUFL_HEAD] = st[S_BUFL_TAIL] = 0


@njit
def break_book(S, reason):
    """The book is unreliable from the last applied event on (``reference._break``)."""
    st, rows = S.st, S.rows
    if reason == GAP:
        st[C_BREAKS_GAP] += 1
    elif reason == MALFORMED:
        st[C_BREAKS_MALFORMED] += 1
    else:
        st[C_BREAKS_VERIFY] += 1
    if st[S_LAST_T] != NONE and st[S_OPEN] != NONE:
        a = max(st[S_LAST_T] // US - st[S_DAY0], 0)
        b = min(st[S_OPEN] - st[S_DAY0], st[S_NSEC])
        for i in range(a, b):
            if rows[R_STATE, i] == RELIABLE or rows[R_STATE, i] == BEYOND_DEPTH:
                rows[R_STATE, i] = reason
    st[S_PHASE], st[S_REASON] = UNSYNCED, reason
    if st[S_PV] >= 0:
        S.snap_res[SR_OUTCOME, st[S_PV]] = O_ABANDONED
        st[S_PV] = -1
    st[S_PT_N] = 0
    st[S_T_FIRST] = st[S_T_END]
    st[S_H_FIRST], st[S_HL_FIRST] = st[S_H_END], st[S_HL_END]
    clear_buffer(st)
