"""A strict, compiled scanner for the book's common raw lines: one pass over a file's bytes.

Nearly every line of a symbol's raw files is a live message in the collector's wrapper
(``crypto_lake.lib.raw.lines``), minified, keys in Binance's order (``crypto_lake.lib.raw.
binance``, from which the payload text below is derived). This scanner reads exactly two
such forms straight into integer arrays: ``@depth`` diff events and ``@bookTicker`` quotes of
the symbol (prices and quantities in 1e-8). Lines of the symbol's other streams (trades) are
skipped when nothing in them could make the plain reader (``crypto_lake.lib.book.lines``) see
a depth or session line. Every other line (snapshots, session records, odd layouts, escapes,
anything malformed) is handed back as a *fallback* line for the plain reader to decide. So
whatever the scanner accepts, the plain reader reads to the same values;
``crypto_lake_tests/lib/test_book_scan.py`` proves it line by line.
"""

from __future__ import annotations

import numpy as np

from crypto_lake.lib.book.engine import KIND_EVENT, KIND_FALLBACK, KIND_TICKER
from crypto_lake.lib.book.jit import njit
from crypto_lake.lib.book.lines import MAX_TIME_US
from crypto_lake.lib.raw.binance import BOOK_TICKER, DEPTH_UPDATE, wire_layout


def _u8(text: bytes) -> np.ndarray:
    return np.frombuffer(text, dtype=np.uint8)


def _before(message, column) -> np.ndarray:
    return _u8(dict(wire_layout(message))[column])


# the collector's wrapper, then the payloads as Binance writes them
_T_RECV = _u8(b'{"recv_ns":')
_T_CONN = _u8(b',"conn":"')
_T_UNIT = _u8(b'","unit":"')
_T_STREAM = _u8(b'","stream":"')
_T_DATA = _u8(b'","data":')
_L_US, _L_MS = _u8(b"us"), _u8(b"ms")
_L_DEPTH = _u8(b"depth")
_L_100MS = _u8(b"@100ms")
_L_TICKER = _u8(BOOK_TICKER.name.encode())
_D_E = _before(DEPTH_UPDATE, "event_time")  # {"e":"depthUpdate","E":
_D_S = _before(DEPTH_UPDATE, "symbol")
_D_U = _before(DEPTH_UPDATE, "first_update_id")
_D_u = _before(DEPTH_UPDATE, "update_id")
_D_B = _before(DEPTH_UPDATE, "bids")
_D_A = _before(DEPTH_UPDATE, "asks")
_D_END = _u8(dict(wire_layout(DEPTH_UPDATE))[None] + b"}")
_K_U = _before(BOOK_TICKER, "update_id")
_K_S = _before(BOOK_TICKER, "symbol")
_K_B = _before(BOOK_TICKER, "bid")
_K_BQ = _before(BOOK_TICKER, "bid_qty")
_K_A = _before(BOOK_TICKER, "ask")
_K_AQ = _before(BOOK_TICKER, "ask_qty")
_K_END = _u8(dict(wire_layout(BOOK_TICKER))[None] + b"}")
_POW10 = np.array([10**i for i in range(9)], dtype=np.int64)
_MAX_T = MAX_TIME_US
_U = np.uint64
_ZEROS, _HIGH, _SIX = _U(0x3030303030303030), _U(0xF0F0F0F0F0F0F0F0), _U(0x0606060606060606)


@njit
def _lit(buf, p, end, lit):
    """``p`` after the bytes ``lit`` at ``p``, or -1."""
    if p < 0 or p + len(lit) > end:
        return -1
    for i in range(len(lit)):
        if buf[p + i] != lit[i]:
            return -1
    return p + len(lit)


@njit
def _eight_digits(buf, i):
    """The value of the 8 ASCII digits at ``i``, or -1 (SWAR, as in raw.fastparse)."""
    w = _U(0)
    for k in range(8):
        w |= _U(buf[i + k]) << _U(8 * k)
    if (w & _HIGH) != _ZEROS or ((w + _SIX) & _HIGH) != _ZEROS:
        return -1
    w = ((w & _U(0x0F0F0F0F0F0F0F0F)) * _U(2561)) >> _U(8)
    w = ((w & _U(0x00FF00FF00FF00FF)) * _U(6553601)) >> _U(16)
    return np.int64(((w & _U(0x0000FFFF0000FFFF)) * _U(42949672960001)) >> _U(32))


@njit
def _int(buf, p, end):
    """(index after, value) of a canonical non-negative JSON integer below 2^63 at ``p``."""
    if p < 0 or p >= end:
        return -1, 0
    i, v = p, 0
    while i < end:
        d = np.int64(buf[i]) - 48
        if d < 0 or d > 9:
            break
        if v > 922337203685477580 or (v == 922337203685477580 and d > 7):
            return -1, 0
        v = v * 10 + d
        i += 1
    n = i - p
    if n == 0 or (n > 1 and buf[p] == 48):
        return -1, 0
    if i < end and (buf[i] == 46 or buf[i] == 101 or buf[i] == 69):
        return -1, 0  # a float
    return i, v


@njit
def _dec(buf, p, end):
    """(index of the closing quote, value in 1e-8) of ``D{1,10}(.D{1,8})?"`` at ``p``."""
    if p < 0:
        return -1, 0
    i, v = p, 0
    while i < end and 48 <= buf[i] <= 57:
        if i - p == 10:
            return -1, 0
        v = v * 10 + (np.int64(buf[i]) - 48)
        i += 1
    if i == p:
        return -1, 0
    n_frac = 0
    if i < end and buf[i] == 46:
        i += 1
        if i + 8 < end:
            x = _eight_digits(buf, i)
            if x >= 0:  # Binance sends 8 decimals: one word
                v = v * 100000000 + x
                n_frac, i = 8, i + 8
        while i < end and 48 <= buf[i] <= 57:
            if n_frac == 8:
                return -1, 0
            v = v * 10 + (np.int64(buf[i]) - 48)
            n_frac += 1
            i += 1
        if n_frac == 0:
            return -1, 0
    if i >= end or buf[i] != 34:
        return -1, 0
    return i, v * _POW10[8 - n_frac]


@njit
def _levels(buf, p, end, lvp, lvq, at):
    """Read ``[["p","q"],...]`` at ``p`` into lvp/lvq from ``at``: (index after, count);
    (-1, 0) when not in the grammar (or a price is 0), (-2, 0) when lvp is full."""
    if p < 0 or p >= end or buf[p] != 91:
        return -1, 0
    p += 1
    n = 0
    if p < end and buf[p] == 93:
        return p + 1, 0
    while True:
        if p + 1 >= end or buf[p] != 91 or buf[p + 1] != 34:
            return -1, 0
        q, price = _dec(buf, p + 2, end)
        if q < 0 or price == 0 or q + 3 >= end or buf[q + 1] != 44 or buf[q + 2] != 34:
            return -1, 0
        q, qty = _dec(buf, q + 3, end)
        if q < 0 or q + 2 >= end or buf[q + 1] != 93:
            return -1, 0
        if at + n == len(lvp):
            return -2, 0
        lvp[at + n], lvq[at + n] = price, qty
        n += 1
        p = q + 2
        if buf[p] == 93:
            return p + 1, n
        if buf[p] != 44:
            return -1, 0
        p += 1


@njit
def _line_end(buf, p, end):
    while p < end and buf[p] != 10:
        p += 1
    return p


@njit
def _skippable(buf, p, end):
    """(end of line, whether the plain reader sees neither a depth nor a session line in
    it) for a line of another of the symbol's streams, from its stream suffix at ``p``: no
    escape, no ``"st`` or ``"se`` (a second stream key, a session key) and no ``@d``."""
    ok = True
    while p < end and buf[p] != 10:
        c = buf[p]
        if (
            c == 92
            or (
                c == 34
                and p + 2 < end
                and buf[p + 1] == 115
                and (buf[p + 2] == 116 or buf[p + 2] == 101)
            )
            or (c == 64 and p + 1 < end and buf[p + 1] == 100)
        ):
            ok = False
        p += 1
    return p, ok


@njit
def _wrapper(buf, p, end, lower):
    """The collector's fields of a live line at ``p`` up to the stream's '@': (index of the
    stream suffix, recv_ns, µs per payload time unit), or (-1, 0, 0)."""
    p, recv = _int(buf, _lit(buf, p, end, _T_RECV), end)
    p = _lit(buf, p, end, _T_CONN)
    if p < 0:
        return -1, 0, 0
    while p < end and buf[p] != 34:
        c = buf[p]
        if c == 92 or c < 32 or c >= 128 or c == 64:  # escapes, controls, '@': the plain reader
            return -1, 0, 0
        p += 1
    p = _lit(buf, p, end, _T_UNIT)
    if _lit(buf, p, end, _L_US) >= 0:
        mult = 1
    elif _lit(buf, p, end, _L_MS) >= 0:
        mult = 1000
    else:
        return -1, 0, 0
    p = _lit(buf, _lit(buf, p + 2, end, _T_STREAM), end, lower)
    if p < 0 or p >= end or buf[p] != 64:
        return -1, 0, 0
    return p + 1, recv, mult


@njit
def _depth(buf, p, end, upper, mult, ev, k, lvp, lvq, at):
    """The payload of a diff event at ``p`` into ev[1:7, k] and lvp/lvq from ``at``;
    returns the index after the line's closing brace, -1 (fallback) or -2 (levels full)."""
    p, t = _int(buf, _lit(buf, p, end, _D_E), end)
    p = _lit(buf, _lit(buf, p, end, _D_S), end, upper)
    p, first = _int(buf, _lit(buf, p, end, _D_U), end)
    p, last = _int(buf, _lit(buf, p, end, _D_u), end)
    if p < 0 or first > last or t >= _MAX_T // mult:
        return -1
    p, nb = _levels(buf, _lit(buf, p, end, _D_B), end, lvp, lvq, at)
    if p < 0:
        return p
    p, na = _levels(buf, _lit(buf, p, end, _D_A), end, lvp, lvq, at + nb)
    if p < 0:
        return p
    ev[1, k], ev[2, k], ev[3, k], ev[4, k], ev[5, k], ev[6, k] = t * mult, first, last, at, nb, na
    return _lit(buf, p, end, _D_END)


@njit
def _ticker(buf, p, end, upper, tk, k):
    p, tk[1, k] = _int(buf, _lit(buf, p, end, _K_U), end)
    p = _lit(buf, _lit(buf, p, end, _K_S), end, upper)
    p, tk[2, k] = _dec(buf, _lit(buf, p, end, _K_B), end)
    p, tk[3, k] = _dec(buf, _lit(buf, p, end, _K_BQ), end)
    p, tk[4, k] = _dec(buf, _lit(buf, p, end, _K_A), end)
    p, tk[5, k] = _dec(buf, _lit(buf, p, end, _K_AQ), end)
    return _lit(buf, p, end, _K_END)


@njit
def scan(buf, at, lower, upper, ev, lvp, lvq, tk, fb, order):
    """Scan the lines of ``buf`` from offset ``at`` (a line's start) until its end or until an
    output array is full. Records, in line order, ``order[i] = index * 4 + kind``: diff events
    in ``ev`` (7 x n: recv_ns, t_us, U, u, level start, bids, asks; levels in lvp/lvq, bids
    first), tickers in ``tk`` (6 x n: recv_ns, u, bid, bid qty, ask, ask qty) and fallback
    lines in ``fb`` (2 x n: start, end). Returns (records, levels, offset reached); no record
    and the offset ``at`` when one line has more levels than lvp holds."""
    end = len(buf)
    n_it = n_ev = n_lv = n_tk = n_fb = 0
    p = at
    while p < end:
        if n_it == len(order) or n_ev == ev.shape[1] or n_tk == tk.shape[1] or n_fb == fb.shape[1]:
            break
        if buf[p] == 10:
            p += 1
            continue
        s = p
        q, recv, mult = _wrapper(buf, p, end, lower)
        if q >= 0:
            r = _lit(buf, q, end, _L_DEPTH)
            if r >= 0:
                r2 = _lit(buf, r, end, _L_100MS)
                r = _lit(buf, r2 if r2 >= 0 else r, end, _T_DATA)
                r = _depth(buf, r, end, upper, mult, ev, n_ev, lvp, lvq, n_lv)
                if r == -2:
                    return n_it, n_lv, s  # lvp is full
                if r >= 0 and (r == end or buf[r] == 10):
                    ev[0, n_ev] = recv
                    n_lv += ev[5, n_ev] + ev[6, n_ev]
                    order[n_it] = n_ev * 4 + KIND_EVENT
                    n_ev += 1
                    n_it += 1
                    p = r + 1
                    continue
            elif _lit(buf, q, end, _L_TICKER) >= 0:
                r = _ticker(buf, _lit(buf, q + len(_L_TICKER), end, _T_DATA), end, upper, tk,
                            n_tk)  # fmt: skip
                if r >= 0 and (r == end or buf[r] == 10):
                    tk[0, n_tk] = recv
                    order[n_it] = n_tk * 4 + KIND_TICKER
                    n_tk += 1
                    n_it += 1
                    p = r + 1
                    continue
            else:
                e, ok = _skippable(buf, q, end)
                if ok:
                    p = e + 1
                    continue
        e = _line_end(buf, s, end)
        fb[0, n_fb], fb[1, n_fb] = s, e
        order[n_it] = n_fb * 4 + KIND_FALLBACK
        n_fb += 1
        n_it += 1
        p = e + 1
    return n_it, n_lv, min(p, end)
