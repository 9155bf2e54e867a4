"""The compiled writer of synthetic raw lines: diff events, bookTickers and trades.

Writes the integer output of ``crypto_lake.lib.book.sim`` as the collector's raw lines
(``crypto_lake.lib.raw.lines.ws_line`` of Binance's combined-stream messages, byte for byte:
``crypto_lake_tests/lib/test_book_table.py`` checks it), straight into a byte buffer: a
day of 43 M level updates is 2 GB of JSONL, too much to format in Python.
"""

from __future__ import annotations

import numpy as np

from crypto_lake.lib.book.jit import njit


@njit
def _int(out, p, v):
    n, x = 1, v
    while x >= 10:
        x //= 10
        n += 1
    for k in range(n - 1, -1, -1):
        out[p + k] = 48 + v % 10
        v //= 10
    return p + n


@njit
def _dec(out, p, v):
    p = _int(out, p, v // 100_000_000)
    out[p] = 46
    f = v % 100_000_000
    for k in range(8, 0, -1):
        out[p + k] = 48 + f % 10
        f //= 10
    return p + 9


@njit
def _put(out, p, lit, offs, j):
    for k in range(offs[j], offs[j + 1]):
        out[p] = lit[k]
        p += 1
    return p


@njit
def format_lines(out, lit, offs, ev, n_ev, lvp, lvq, tk, n_tk, div, trades, trade_id, meta):
    """Write the events' lines in receive order: per event, its bookTickers and trades,
    the diff event, then a bookTicker flagged to arrive after it. ``meta`` (4 x lines):
    recv_ns, end offset, kind (0 diff, 1 ticker, 2 trade), event. Returns (bytes, lines)."""
    p = n = j = 0
    prev = ev[0, 0] * 1000 - 90_000_000
    for k in range(n_ev):
        t = ev[0, k]
        recv = max(t * 1000 + 2_000_000 + (k * 131) % 997 * 1000, prev + 1000)
        j0 = j
        while j < n_tk and tk[0, j] == k:
            j += 1
        before = 0
        for m in range(j0, j):
            if tk[6, m] == 0:
                before += 1
        count = before + trades
        step = (recv - prev) // (count + 1)
        slot = 0
        for m in range(j0, j):
            if tk[6, m] == 0:
                slot += 1
                p = _ticker(out, p, lit, offs, prev + slot * step, tk, m)
                meta[0, n], meta[1, n], meta[2, n], meta[3, n] = prev + slot * step, p, 1, k
                n += 1
        for _ in range(trades):
            slot += 1
            r = prev + slot * step
            p = _put(out, p, lit, offs, 0)
            p = _int(out, p, r)
            p = _put(out, p, lit, offs, 13)
            p = _int(out, p, t // div)
            p = _put(out, p, lit, offs, 14)
            p = _int(out, p, trade_id)
            trade_id += 1
            p = _put(out, p, lit, offs, 15)
            p = _dec(out, p, tk[2, j - 1] if tk[2, j - 1] else 10**8)
            p = _put(out, p, lit, offs, 16)
            p = _dec(out, p, 100_000)
            p = _put(out, p, lit, offs, 17)
            p = _int(out, p, t // div)
            p = _put(out, p, lit, offs, 18)
            meta[0, n], meta[1, n], meta[2, n], meta[3, n] = r, p, 2, k
            n += 1
        p = _put(out, p, lit, offs, 0)
        p = _int(out, p, recv)
        p = _put(out, p, lit, offs, 1)
        p = _int(out, p, t // div)
        p = _put(out, p, lit, offs, 2)
        p = _int(out, p, ev[1, k])
        p = _put(out, p, lit, offs, 3)
        p = _int(out, p, ev[2, k])
        for side in range(2):
            p = _put(out, p, lit, offs, 4 + side)
            a = ev[3, k] + (0 if side == 0 else ev[4, k])
            for m in range(a, a + ev[4 + side, k]):
                if m > a:
                    p = _put(out, p, lit, offs, 22)
                p = _put(out, p, lit, offs, 19)
                p = _dec(out, p, lvp[m])
                p = _put(out, p, lit, offs, 20)
                p = _dec(out, p, lvq[m])
                p = _put(out, p, lit, offs, 21)
        p = _put(out, p, lit, offs, 6)
        meta[0, n], meta[1, n], meta[2, n], meta[3, n] = recv, p, 0, k
        n += 1
        for m in range(j0, j):
            if tk[6, m] == 1:
                p = _ticker(out, p, lit, offs, recv + 1000 * (m - j0 + 1), tk, m)
                meta[0, n], meta[1, n], meta[2, n], meta[3, n] = recv + 1000 * (m - j0 + 1), p, 1, k
                n += 1
        prev = recv
    return p, n


@njit
def _ticker(out, p, lit, offs, recv, tk, m):
    p = _put(out, p, lit, offs, 0)
    p = _int(out, p, recv)
    p = _put(out, p, lit, offs, 7)
    p = _int(out, p, tk[1, m])
    for f in range(4):
        p = _put(out, p, lit, offs, 8 + f)
        p = _dec(out, p, tk[2 + f, m])
    return _put(out, p, lit, offs, 12)


def literals(symbol: str, unit: str) -> tuple[np.ndarray, np.ndarray]:
    lower = symbol.lower()
    head = f',"conn":"ws-1","unit":"{unit}","stream":"{lower}@'
    pieces = [
        '{"recv_ns":', head + 'depth@100ms","data":{"e":"depthUpdate","E":',
        f',"s":"{symbol}","U":', ',"u":', ',"b":[', '],"a":[', "]}}\n",
        head + 'bookTicker","data":{"u":', f',"s":"{symbol}","b":"', '","B":"', '","a":"',
        '","A":"', '"}}\n',
        head + 'trade","data":{"e":"trade","E":', f',"s":"{symbol}","t":', ',"p":"', '","q":"',
        '","T":', ',"m":true,"M":true}}\n',
        '["', '","', '"]', ",",
    ]  # fmt: skip
    data = [x.encode() for x in pieces]
    offs = np.cumsum([0, *map(len, data)]).astype(np.int64)
    return np.frombuffer(b"".join(data), np.uint8), offs
