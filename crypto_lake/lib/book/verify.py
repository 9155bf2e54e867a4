"""The compiled checks: snapshot verification and bookTicker comparison.

Mirrors ``reference.ReferenceBook``'s ``_verify``, ``_verify_past``, ``_compare``,
``_adopt``, ``_conclude`` and ``_compare_ticker``. Snapshot sides arrive as (2, n) arrays of
prices and quantities, best first, with their lengths and ``limit`` (-1: none).
"""

from __future__ import annotations

import numpy as np

from crypto_lake.lib.book import levels
from crypto_lake.lib.book.jit import njit
from crypto_lake.lib.book.levels import NONE
from crypto_lake.lib.book.model import (
    NOTHING_PROVEN_ASK,
    NOTHING_PROVEN_BID,
    O_EXACT,
    O_STRADDLE,
    O_TOO_OLD,
    SR_OUTCOME,
    VERIFY_MISMATCH,
)
from crypto_lake.lib.book.rows import top_of_book, top_proved
from crypto_lake.lib.book.state import (
    C_TK_COMPARED,
    C_TK_EQUAL,
    C_TK_MISMATCHED,
    S_BOOK_ID,
    S_CAP_HE,
    S_CAP_HL,
    S_EVICTED_U,
    S_FIRST_RECORDS,
    S_FLOOR_B,
    S_H_END,
    S_H_FIRST,
    S_HL_END,
    S_HL_FIRST,
    S_N_TM,
    break_book,
)


@njit
def compare_ticker(S, recv, u, tb, tbq, ta, taq, b, bq, a, aq):
    """Compare a bookTicker (tb, tbq, ta, taq) with the book's top at its update id."""
    st = S.st
    st[C_TK_COMPARED] += 1
    if tb == b and tbq == bq and ta == a and taq == aq:
        st[C_TK_EQUAL] += 1
        return
    st[C_TK_MISMATCHED] += 1
    k = st[S_N_TM]
    if k < st[S_FIRST_RECORDS]:
        tm = S.tm
        tm[0, k], tm[1, k], tm[2, k], tm[3, k], tm[4, k], tm[5, k] = recv, u, tb, tbq, ta, taq
        tm[6, k], tm[7, k], tm[8, k], tm[9, k] = b, bq, a, aq
        st[S_N_TM] = k + 1


@njit
def snapshot_edge(sp, side, n, limit):
    """The worst price a snapshot side proves (``reference.snapshot_range``), NONE = all."""
    if limit >= 0 and n < limit:
        return NONE
    if n == 0:
        return NOTHING_PROVEN_BID if side == 0 else NOTHING_PROVEN_ASK
    return sp[side, n - 1]


@njit
def _key(price, side):
    return NONE if price == NONE else (price if side == 0 else -price)


@njit
def _skipped(price, side, skp, sks):
    for m in range(len(skp)):  # noqa: SIM110 - a loop compiles, a generator does not
        if skp[m] == price and sks[m] == side:
            return True
    return False


@njit
def _compare(S, sp, sq, snb, sna, limit, skp, sks, outcome, idx):
    """Compare the book with a snapshot within its depth and the proved range, skipping
    the (price, side) levels in skp/sks; results into snap_res[:, idx]."""
    compared = mismatched = skipped = 0
    for side in range(2):
        ns = snb if side == 0 else sna
        edge = max(_key(snapshot_edge(sp, side, ns, limit), side),
                   _key(S.st[S_FLOOR_B + side], side))  # fmt: skip
        pos, i = levels.top(S, side)
        j = 0
        while True:
            bkey = levels.key_at(S, side, pos, i) if pos >= 0 else NONE
            have_b = pos >= 0 and bkey >= edge
            skey = (sp[side, j] if side == 0 else -sp[side, j]) if j < ns else NONE
            have_s = j < ns and skey >= edge
            if not have_b and not have_s:
                break
            if have_b and (not have_s or bkey > skey):
                key, qb, qs = bkey, levels.qty_at(S, side, pos, i), 0
                pos, i = levels.down(S, side, pos, i)
            elif not have_b or skey > bkey:
                key, qb, qs = skey, 0, sq[side, j]
                j += 1
            else:
                key, qb, qs = skey, levels.qty_at(S, side, pos, i), sq[side, j]
                pos, i = levels.down(S, side, pos, i)
                j += 1
            if _skipped(key if side == 0 else -key, side, skp, sks):
                skipped += 1
            else:
                compared += 1
                if qb != qs:
                    mismatched += 1
    b, _, a, _ = top_of_book(S)
    res = S.snap_res
    res[0, idx], res[1, idx], res[2, idx], res[3, idx] = outcome, compared, mismatched, skipped
    res[4, idx] = b + a if b and a and top_proved(S, b, a) else 0
    res[5, idx] = sp[0, 0] + sp[1, 0] if snb and sna else 0


@njit
def _adopt(S, sp, sq, snb, sna, limit, skp, sks):
    """Take the snapshot's levels beyond the proved range (unknown to the book), except
    the (price, side) levels in skp/sks; returns how many levels changed."""
    changed = 0
    for side in range(2):
        mine = S.st[S_FLOOR_B + side]
        if mine == NONE:
            continue
        ns = snb if side == 0 else sna
        lo, hi = _key(snapshot_edge(sp, side, ns, limit), side), _key(mine, side)
        drop = np.empty(S.nlev[side], np.int64)
        k = 0
        pos, i = levels.top(S, side)
        while pos >= 0:
            key = levels.key_at(S, side, pos, i)
            if key < lo:
                break
            if key < hi:
                drop[k] = key if side == 0 else -key
                k += 1
            pos, i = levels.down(S, side, pos, i)
        for m in range(k):  # levels the snapshot does not have
            if not _skipped(drop[m], side, skp, sks) and not _listed(drop[m], sp, side, ns):
                levels.set_level(S, side, drop[m], 0)
                changed += 1
        for j in range(ns):
            key = sp[side, j] if side == 0 else -sp[side, j]
            if not (lo <= key < hi) or _skipped(sp[side, j], side, skp, sks):
                continue
            if levels.set_level(S, side, sp[side, j], sq[side, j]) != sq[side, j]:
                changed += 1
    return changed


@njit
def _listed(price, sp, side, ns):
    """Whether a snapshot side (best first) lists ``price``."""
    lo, hi = 0, ns
    while lo < hi:
        mid = (lo + hi) >> 1
        if (sp[side, mid] > price) if side == 0 else (sp[side, mid] < price):
            lo = mid + 1
        else:
            hi = mid
    return lo < ns and sp[side, lo] == price


@njit
def _conclude(S, sp, snb, sna, limit, idx, adopted):
    """A mismatch breaks the book; a match extends the proved range. Adopted levels
    restart the undo history (its old quantities predate them)."""
    st = S.st
    if S.snap_res[2, idx]:
        break_book(S, VERIFY_MISMATCH)
        return
    if adopted:
        st[S_H_FIRST], st[S_HL_FIRST] = st[S_H_END], st[S_HL_END]
        st[S_EVICTED_U] = st[S_BOOK_ID]
    for side in range(2):
        edge = snapshot_edge(sp, side, snb if side == 0 else sna, limit)
        mine = st[S_FLOOR_B + side]
        if edge == NONE or mine == NONE:
            st[S_FLOOR_B + side] = NONE
        else:
            st[S_FLOOR_B + side] = min(mine, edge) if side == 0 else max(mine, edge)


@njit
def verify_now(S, sp, sq, snb, sna, limit, skp, sks, outcome, idx):
    """Compare with the book as it is now (at L, or after the event L falls in)."""
    _compare(S, sp, sq, snb, sna, limit, skp, sks, outcome, idx)
    adopted = 0 if S.snap_res[2, idx] else _adopt(S, sp, sq, snb, sna, limit, skp, sks)
    _conclude(S, sp, snb, sna, limit, idx, adopted)


@njit
def _replay(S, k, redo):
    """Undo (or redo) history event k's level updates."""
    st, hist, histl = S.st, S.hist, S.histl
    h = k % st[S_CAP_HE]
    ls, n, cap = hist[2, h], hist[3, h], st[S_CAP_HL]
    for i in range(n):
        m = i if redo else n - 1 - i  # redo forwards, undo backwards
        e = (ls + m) % cap
        levels.set_level(S, histl[0, e], histl[1, e], histl[3, e] if redo else histl[2, e])


@njit
def verify_past(S, idx, last_id, sp, sq, snb, sna, limit):
    """A snapshot older than the book: rewind to it with the undo history."""
    st, hist = S.st, S.hist
    pred, j = st[S_EVICTED_U], -1
    for k in range(st[S_H_FIRST], st[S_H_END]):
        u = hist[1, k % st[S_CAP_HE]]
        if u > last_id:
            j = k if pred <= last_id else -1
            break
        pred = u
    if j < 0:
        S.snap_res[SR_OUTCOME, idx] = O_TOO_OLD
        return
    exact = hist[0, j % st[S_CAP_HE]] > last_id  # the state before event j is the state at L
    undo_from = j if exact else j + 1
    for k in range(st[S_H_END] - 1, undo_from - 1, -1):
        _replay(S, k, False)
    if exact:
        skp, sks = np.empty(0, np.int64), np.empty(0, np.int64)
    else:
        h = j % st[S_CAP_HE]
        ls, n = hist[2, h], hist[3, h]
        skp, sks = np.empty(n, np.int64), np.empty(n, np.int64)
        for m in range(n):
            e = (ls + m) % st[S_CAP_HL]
            skp[m], sks[m] = S.histl[1, e], S.histl[0, e]
    _compare(S, sp, sq, snb, sna, limit, skp, sks, O_EXACT if exact else O_STRADDLE, idx)
    adopted = 0 if S.snap_res[2, idx] else _adopt(S, sp, sq, snb, sna, limit, skp, sks)
    for k in range(undo_from, st[S_H_END]):
        _replay(S, k, True)
    _conclude(S, sp, snb, sna, limit, idx, adopted)
