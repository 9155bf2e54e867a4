"""The compiled book engine: ``model``'s rules over integer arrays.

Mirrors ``crypto_lake.lib.book.reference`` function by function (``_sequence``,
``_buffer``, ``_apply``, ``_load``; the checks in ``verify``, the rows in ``rows``, the state
and the break in ``state``), with the dicts replaced by ``levels``' blocked arrays and the
deques by rings; ``crypto_lake_tests/lib/test_book_*.py`` compares the two on random days.
The entry points are ``run`` (scanned records), ``handle_snapshot`` and ``handle_malformed``.
"""

from __future__ import annotations

import numpy as np

from crypto_lake.lib.book import levels
from crypto_lake.lib.book.jit import njit
from crypto_lake.lib.book.levels import NONE
from crypto_lake.lib.book.model import (
    GAP,
    MALFORMED,
    O_ABANDONED,
    O_EXACT,
    O_IGNORED,
    O_STALE,
    O_STRADDLE,
    O_SYNC,
    O_TOO_OLD,
    R_EVENTS,
    R_LEVELS,
    SR_OUTCOME,
    SYNCED,
    SYNCING,
    UNSYNCED,
    US,
)
from crypto_lake.lib.book.rows import close_seconds, top_of_book, top_proved
from crypto_lake.lib.book.state import (
    C_APPLIED,
    C_CROSSED,
    C_DUPLICATE,
    C_EVENTS,
    C_EVICTED,
    C_LEVEL_UPDATES,
    C_LEVELS_APPLIED,
    C_MALFORMED,
    C_OLD,
    C_TICKERS,
    S_BOOK_ID,
    S_BUF_HEAD,
    S_BUF_TAIL,
    S_BUFL_HEAD,
    S_BUFL_TAIL,
    S_CAP_BE,
    S_CAP_BL,
    S_CAP_HE,
    S_CAP_HL,
    S_CAP_PT,
    S_CAP_T,
    S_DAY0,
    S_EVICTED_U,
    S_FIRST_RECORDS,
    S_FLOOR_B,
    S_H_END,
    S_H_FIRST,
    S_HL_END,
    S_HL_FIRST,
    S_LAST_FIRST,
    S_LAST_LAST,
    S_LAST_T,
    S_N_CR,
    S_NSEC,
    S_OPEN,
    S_PHASE,
    S_PT_N,
    S_PV,
    S_PV_L,
    S_PV_LIMIT,
    S_PV_NA,
    S_PV_NB,
    S_SYNC_L,
    S_T_END,
    S_T_FIRST,
    break_book,
    clear_buffer,
    has_room,
)
from crypto_lake.lib.book.verify import compare_ticker, snapshot_edge, verify_now, verify_past

KIND_EVENT, KIND_TICKER, KIND_FALLBACK = 1, 2, 3  # of a scanned record (order = idx*4+kind)
DONE, AT_FALLBACK, NEED_ROOM = 0, 1, 2  # what ``run`` stopped at


@njit
def _buffer(S, first, last, t, lvp, lvq, start, nb, na):
    st, buf, bufl = S.st, S.buf, S.bufl
    n = nb + na
    while st[S_BUF_TAIL] > st[S_BUF_HEAD] and (
        st[S_BUF_TAIL] - st[S_BUF_HEAD] + 1 > st[S_CAP_BE]
        or st[S_BUFL_TAIL] - st[S_BUFL_HEAD] + n > st[S_CAP_BL]
    ):
        h = st[S_BUF_HEAD]
        st[S_BUFL_HEAD] += buf[4, h] + buf[5, h]
        st[S_BUF_HEAD] = h + 1
        st[C_EVICTED] += 1
    if n > st[S_CAP_BL]:
        st[C_EVICTED] += 1  # alone larger than the buffer
        clear_buffer(st)
        return
    if st[S_BUF_TAIL] + 1 > buf.shape[1] or st[S_BUFL_TAIL] + n > bufl.shape[1]:
        h0, l0 = st[S_BUF_HEAD], st[S_BUFL_HEAD]  # move the live part to the front
        for k in range(h0, st[S_BUF_TAIL]):
            for r in range(6):
                buf[r, k - h0] = buf[r, k]
            buf[3, k - h0] -= l0
        for k in range(l0, st[S_BUFL_TAIL]):
            bufl[0, k - l0], bufl[1, k - l0] = bufl[0, k], bufl[1, k]
        st[S_BUF_TAIL] -= h0
        st[S_BUFL_TAIL] -= l0
        st[S_BUF_HEAD] = st[S_BUFL_HEAD] = 0
    k, lt = st[S_BUF_TAIL], st[S_BUFL_TAIL]
    buf[0, k], buf[1, k], buf[2, k], buf[3, k], buf[4, k], buf[5, k] = first, last, t, lt, nb, na
    for m in range(n):
        bufl[0, lt + m], bufl[1, lt + m] = lvp[start + m], lvq[start + m]
    st[S_BUF_TAIL] = k + 1
    st[S_BUFL_TAIL] = lt + n


@njit
def _sequence(S, first, last, t, lvp, lvq, start, nb, na):
    st = S.st
    if st[S_PHASE] == UNSYNCED:
        _buffer(S, first, last, t, lvp, lvq, start, nb, na)
    elif last <= st[S_BOOK_ID]:
        st[C_OLD] += 1
        if first == st[S_LAST_FIRST] and last == st[S_LAST_LAST]:
            st[C_DUPLICATE] += 1
    elif first > st[S_BOOK_ID] + 1:
        break_book(S, GAP)
        _buffer(S, first, last, t, lvp, lvq, start, nb, na)
    else:
        _apply(S, first, last, t, lvp, lvq, start, nb, na)


@njit
def _evict_history(st, hist):
    h = st[S_H_FIRST] % st[S_CAP_HE]
    st[S_HL_FIRST] += hist[3, h]
    st[S_EVICTED_U] = hist[1, h]
    st[S_H_FIRST] += 1


@njit
def _apply(S, first, last, t, lvp, lvq, start, nb, na):
    st, hist, histl = S.st, S.hist, S.histl
    n = nb + na
    keep = n <= st[S_CAP_HL]
    while st[S_H_END] > st[S_H_FIRST] and (
        not keep
        or st[S_H_END] - st[S_H_FIRST] + 1 > st[S_CAP_HE]
        or st[S_HL_END] - st[S_HL_FIRST] + n > st[S_CAP_HL]
    ):
        _evict_history(st, hist)
    base, cap = st[S_HL_END], st[S_CAP_HL]
    for m in range(n):
        side = 0 if m < nb else 1
        p, q = lvp[start + m], lvq[start + m]
        old = levels.set_level(S, side, p, q)
        if keep:
            e = (base + m) % cap
            histl[0, e], histl[1, e], histl[2, e], histl[3, e] = side, p, old, q
    if keep:
        h = st[S_H_END] % st[S_CAP_HE]
        hist[0, h], hist[1, h], hist[2, h], hist[3, h] = first, last, base, n
        st[S_H_END] += 1
        st[S_HL_END] += n
    else:
        st[S_EVICTED_U] = last
    st[C_APPLIED] += 1
    st[C_LEVELS_APPLIED] += n
    st[S_BOOK_ID], st[S_LAST_FIRST], st[S_LAST_LAST], st[S_LAST_T] = last, first, last, t
    st[S_PHASE] = SYNCED
    b, bq, a, aq = top_of_book(S)
    if b and a and b >= a:
        st[C_CROSSED] += 1
        if st[S_N_CR] < st[S_FIRST_RECORDS]:
            S.cr[0, st[S_N_CR]], S.cr[1, st[S_N_CR]] = t, last
            st[S_N_CR] += 1
    proved = top_proved(S, b, a)
    tops = S.tops
    if st[S_T_END] - st[S_T_FIRST] == st[S_CAP_T]:
        st[S_T_FIRST] += 1
    h = st[S_T_END] % st[S_CAP_T]
    tops[0, h], tops[1, h], tops[2, h], tops[3, h], tops[4, h] = last, b, bq, a, aq
    tops[5, h] = proved
    st[S_T_END] += 1
    w = 0
    ptk = S.ptk
    for i in range(st[S_PT_N]):
        if ptk[1, i] > last:
            for r in range(6):
                ptk[r, w] = ptk[r, i]
            w += 1
        elif ptk[1, i] == last and proved:
            compare_ticker(S, ptk[0, i], last, ptk[2, i], ptk[3, i], ptk[4, i], ptk[5, i],
                           b, bq, a, aq)  # fmt: skip
    st[S_PT_N] = w
    if st[S_PV] >= 0 and last >= st[S_PV_L]:
        idx = st[S_PV]
        st[S_PV] = -1
        if last == st[S_PV_L]:  # the state at L: exact
            skp, sks = np.empty(0, np.int64), np.empty(0, np.int64)
            outcome = O_EXACT
        else:  # L inside this event: the levels it touched are skipped
            skp = lvp[start : start + n].copy()
            sks = np.zeros(n, np.int64)
            sks[nb:] = 1
            outcome = O_STRADDLE
        verify_now(S, S.pvp, S.pvq, st[S_PV_NB], st[S_PV_NA], st[S_PV_LIMIT], skp, sks, outcome,
                   idx)  # fmt: skip


@njit
def _load(S, last_id, sp, sq, snb, sna, limit):
    st = S.st
    for side in range(2):
        n = snb if side == 0 else sna
        keys, qtys = np.empty(n, np.int64), np.empty(n, np.int64)
        for i in range(n):  # best first -> ascending keys
            keys[i] = sp[side, n - 1 - i] if side == 0 else -sp[side, n - 1 - i]
            qtys[i] = sq[side, n - 1 - i]
        levels.load_side(S, side, keys, qtys, n)
        st[S_FLOOR_B + side] = snapshot_edge(sp, side, n, limit)
    st[S_BOOK_ID] = st[S_SYNC_L] = st[S_EVICTED_U] = last_id
    st[S_PHASE] = SYNCING
    st[S_LAST_FIRST] = st[S_LAST_LAST] = -1
    st[S_H_FIRST], st[S_HL_FIRST] = st[S_H_END], st[S_HL_END]
    st[S_T_FIRST] = st[S_T_END]
    st[S_PT_N] = 0


# --- entry points (called from crypto_lake.lib.book.fast) ---------------------------------------
@njit
def handle_snapshot(S, idx, last_id, sp, sq, snb, sna, limit):
    """A well-formed snapshot (sides best first in sp/sq, limit -1 = none). The caller makes
    room first (``state.with_room``): for the snapshot, the buffer replayed on it or the
    history redone; pvp/pvq for the snapshot."""
    st, res = S.st, S.snap_res
    if st[S_PHASE] == UNSYNCED:
        buf = S.buf
        for k in range(st[S_BUF_HEAD], st[S_BUF_TAIL]):
            if buf[1, k] > last_id:
                if buf[0, k] > last_id + 1:
                    res[SR_OUTCOME, idx] = O_STALE
                    return
                break
        res[SR_OUTCOME, idx] = O_SYNC
        _load(S, last_id, sp, sq, snb, sna, limit)
        h0, h1, l0 = st[S_BUF_HEAD], st[S_BUF_TAIL], st[S_BUFL_HEAD]
        events = buf[:, h0:h1].copy()
        lvp = S.bufl[0, l0 : st[S_BUFL_TAIL]].copy()
        lvq = S.bufl[1, l0 : st[S_BUFL_TAIL]].copy()
        clear_buffer(st)
        for k in range(h1 - h0):
            _sequence(S, events[0, k], events[1, k], events[2, k], lvp, lvq, events[3, k] - l0,
                      events[4, k], events[5, k])  # fmt: skip
    elif st[S_PHASE] == SYNCING:
        if last_id > st[S_BOOK_ID]:
            res[SR_OUTCOME, idx] = O_SYNC
            _load(S, last_id, sp, sq, snb, sna, limit)
        else:
            res[SR_OUTCOME, idx] = O_IGNORED
    else:
        if st[S_PV] >= 0:
            res[SR_OUTCOME, st[S_PV]] = O_ABANDONED
            st[S_PV] = -1
        if last_id < st[S_SYNC_L]:
            res[SR_OUTCOME, idx] = O_TOO_OLD
        elif last_id == st[S_BOOK_ID]:
            empty = np.empty(0, np.int64)
            verify_now(S, sp, sq, snb, sna, limit, empty, empty, O_EXACT, idx)
        elif last_id > st[S_BOOK_ID]:
            n = max(snb, sna)
            S.pvp[:, :n], S.pvq[:, :n] = sp[:, :n], sq[:, :n]
            st[S_PV], st[S_PV_L], st[S_PV_NB], st[S_PV_NA], st[S_PV_LIMIT] = (
                idx, last_id, snb, sna, limit)  # fmt: skip
        else:
            verify_past(S, idx, last_id, sp, sq, snb, sna, limit)


@njit
def handle_malformed(S):
    """A quarantined depth event: its updates are lost."""
    st = S.st
    st[C_MALFORMED] += 1
    if st[S_PHASE] == UNSYNCED:
        clear_buffer(st)  # the buffer cannot run across the lost updates
    else:
        break_book(S, MALFORMED)


@njit
def _ticker(S, recv, u, tb, tbq, ta, taq):
    st = S.st
    st[C_TICKERS] += 1
    if st[S_PHASE] != SYNCED:
        return
    if u > st[S_BOOK_ID]:
        ptk, n = S.ptk, st[S_PT_N]
        if n >= st[S_CAP_PT]:
            for i in range(n - 1):
                for r in range(6):
                    ptk[r, i] = ptk[r, i + 1]
            n -= 1
        ptk[0, n], ptk[1, n], ptk[2, n], ptk[3, n], ptk[4, n], ptk[5, n] = recv, u, tb, tbq, ta, taq
        st[S_PT_N] = n + 1
        return
    tops = S.tops
    for k in range(st[S_T_END] - 1, st[S_T_FIRST] - 1, -1):
        h = k % st[S_CAP_T]
        if tops[0, h] == u and tops[5, h]:
            compare_ticker(S, recv, u, tb, tbq, ta, taq, tops[1, h], tops[2, h], tops[3, h],
                           tops[4, h])  # fmt: skip
        if tops[0, h] <= u:
            return


@njit
def _event(S, t, first, last, lvp, lvq, start, nb, na):
    st = S.st
    n = nb + na
    st[C_EVENTS] += 1
    st[C_LEVEL_UPDATES] += n
    sec = t // US
    if st[S_OPEN] == NONE:
        st[S_OPEN] = sec
    elif sec > st[S_OPEN]:
        close_seconds(S, sec)
        st[S_OPEN] = sec
    i = st[S_OPEN] - st[S_DAY0]
    if 0 <= i < st[S_NSEC]:
        S.rows[R_EVENTS, i] += 1
        S.rows[R_LEVELS, i] += n
    _sequence(S, first, last, t, lvp, lvq, start, nb, na)


@njit
def run(S, order, n_items, ev, lvp, lvq, tk, at):
    """Process scanned records order[at:n_items] (``scan``'s arrays): returns (DONE, n_items),
    (AT_FALLBACK, i) for a line the caller reads, or (NEED_ROOM, i) when the book needs more
    blocks for event i (``state.with_room``; then call again from i)."""
    for i in range(at, n_items):
        kind, k = order[i] & 3, order[i] >> 2
        if kind == KIND_EVENT:
            if not has_room(S, max(ev[5, k], ev[6, k])):
                return NEED_ROOM, i
            _event(S, ev[1, k], ev[2, k], ev[3, k], lvp, lvq, ev[4, k], ev[5, k], ev[6, k])
        elif kind == KIND_TICKER:
            _ticker(S, tk[0, k], tk[1, k], tk[2, k], tk[3, k], tk[4, k], tk[5, k])
        else:
            return AT_FALLBACK, i
    return DONE, n_items
