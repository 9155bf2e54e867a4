"""The true order book behind a synthetic day: a compiled exchange simulator.

The book lives on a dense price grid (one quantity per tick and side: a representation
unlike the engine's sorted arrays, so the two cannot share a bug). Each diff event moves a
random-walk fair price, clears the levels it crossed, fills the spread and changes levels at
random depths; its level changes get consecutive update ids ``U..U+n-1`` in the order they
are written (bids first), and ``u`` may run past them (updates Binance folds into a level).
A snapshot requested at time ``τ`` inside an event's 100 ms takes the book after a prefix of
that event's changes, so its ``lastUpdateId`` falls inside the event as real snapshots do.
The true top 20 and the 10 bps depth at the end of every second are recorded on request.
"""

from __future__ import annotations

import numpy as np

from crypto_lake.lib.book.jit import njit

# state vector (int64) of a simulation carried across calls; the fair price in 1/1000 tick
G_FAIR, G_BB, G_BA, G_NEXT_ID, G_EVENT, G_SNAP, G_LAST_SEC = range(7)
TRUTH_FIELDS = 82  # 20 bid prices, 20 bid qtys, 20 ask prices, 20 ask qtys, bid/ask 10 bps qty


@njit
def seed(value):
    np.random.seed(value)


@njit
def _qty(unit):
    return (1 + np.int64(np.random.exponential(40.0))) * unit


@njit
def init_book(bidq, askq, mid, depth, spacing, unit):
    """Fill ``depth`` levels per side around grid index ``mid``: dense near the top (every
    other tick), ``spacing`` ticks apart on average deeper down."""
    for side in range(2):
        q = bidq if side == 0 else askq
        i, n = (mid - 1, 0) if side == 0 else (mid + 1, 0)
        while n < depth and 0 < i < len(q) - 1:
            q[i] = _qty(unit)
            n += 1
            near = abs(i - mid) < 100
            step = 1 + (np.random.randint(0, 2) if near else np.random.randint(0, 2 * spacing))
            i += -step if side == 0 else step


@njit
def _best(q, i, side):
    """The best non-empty index from ``i`` on (downwards for bids), or -1."""
    while 0 <= i < len(q):
        if q[i]:
            return i
        i += -1 if side == 0 else 1
    return -1


@njit
def _put(bidq, askq, g, side, i, qty):
    """Set a level, keeping the best indices g[G_BB], g[G_BA]; returns the old quantity."""
    q = bidq if side == 0 else askq
    old = q[i]
    q[i] = qty
    if side == 0:
        if qty and (g[G_BB] < 0 or i > g[G_BB]):
            g[G_BB] = i
        elif not qty and i == g[G_BB]:
            g[G_BB] = _best(bidq, i, 0)
    else:
        if qty and (g[G_BA] < 0 or i < g[G_BA]):
            g[G_BA] = i
        elif not qty and i == g[G_BA]:
            g[G_BA] = _best(askq, i, 1)
    return old


@njit
def _levels_from(q, i, side, limit, px, qt, base, tick):
    """Up to ``limit`` non-empty levels from index i outwards into px/qt; returns the count."""
    n = 0
    while n < limit and 0 <= i < len(q):
        if q[i]:
            px[n], qt[n] = base + i * tick, q[i]
            n += 1
        i += -1 if side == 0 else 1
    return n


@njit
def _record_truth(bidq, askq, g, truth, col, base, tick):
    tmp_p, tmp_q = np.zeros(20, np.int64), np.zeros(20, np.int64)
    for side in range(2):
        q = bidq if side == 0 else askq
        start = g[G_BB] if side == 0 else g[G_BA]
        truth[side * 40 : side * 40 + 40, col] = 0
        if start < 0:
            continue
        n = _levels_from(q, start, side, 20, tmp_p, tmp_q, base, tick)
        truth[side * 40 : side * 40 + n, col] = tmp_p[:n]
        truth[side * 40 + 20 : side * 40 + 20 + n, col] = tmp_q[:n]
    if g[G_BB] < 0 or g[G_BA] < 0:
        return
    mid2 = 2 * base + (g[G_BB] + g[G_BA]) * tick
    thr = (mid2 // 10_000) * 10 + ((mid2 % 10_000) * 10) // 10_000
    for side in range(2):
        q = bidq if side == 0 else askq
        i, total = (g[G_BB] if side == 0 else g[G_BA]), 0
        while 0 <= i < len(q):
            p = base + i * tick
            if (mid2 - 2 * p if side == 0 else 2 * p - mid2) > thr:
                break
            total += q[i]
            i += -1 if side == 0 else 1
        truth[80 + side, col] = total


@njit
def _changes(bidq, askq, g, stamp, n_target, sigma, spacing, unit, lo, hi, ch):
    """Draw and apply one event's level changes into ch (4 x n: side, index, old, new) in
    the order drawn; returns their count."""
    g[G_FAIR] = np.int64(min(max(g[G_FAIR] / 1000 + np.random.normal(0.0, sigma), lo), hi) * 1000)
    fair = g[G_FAIR] // 1000
    ev = g[G_EVENT] + 1
    n = 0
    while g[G_BA] >= 0 and g[G_BA] <= fair and n < len(ch[0]):  # asks the price crossed
        i = g[G_BA]
        stamp[1, i] = ev
        ch[0, n], ch[1, n], ch[3, n] = 1, i, 0
        ch[2, n] = _put(bidq, askq, g, 1, i, 0)
        n += 1
    while g[G_BB] >= 0 and g[G_BB] >= fair + 1 and n < len(ch[0]):
        i = g[G_BB]
        stamp[0, i] = ev
        ch[0, n], ch[1, n], ch[3, n] = 0, i, 0
        ch[2, n] = _put(bidq, askq, g, 0, i, 0)
        n += 1
    tries = 0
    while n < n_target and n < len(ch[0]) and tries < 20 * n_target:
        tries += 1
        side = np.random.randint(0, 2)
        top = g[G_BB] if side == 0 else g[G_BA]
        if top < 0:
            top = fair if side == 0 else fair + 1
        r = np.random.random()
        if r < 0.85:
            d = np.int64(np.random.exponential(8.0))
        elif r < 0.97:
            d = np.random.randint(0, 40 * spacing)
        else:
            d = np.random.randint(0, 50_000)  # deep: past a snapshot's depth too
        if np.random.random() < 0.15:
            d = -1 - np.random.randint(0, 3)  # inside the spread
        i = top - d if side == 0 else top + d
        if i <= 0 or i >= len(bidq) - 1 or stamp[side, i] == ev:
            continue
        if (side == 0 and g[G_BA] >= 0 and i >= g[G_BA]) or (side == 1 and g[G_BB] >= 0
                                                              and i <= g[G_BB]):  # fmt: skip
            continue
        q = bidq if side == 0 else askq
        new = 0 if q[i] and np.random.random() < 0.4 else _qty(unit)
        if new == 0 and (i == g[G_BB] or i == g[G_BA]) and d >= 0 and np.random.random() < 0.5:
            new = _qty(unit)  # keep the top from thinning out too fast
        stamp[side, i] = ev
        ch[0, n], ch[1, n], ch[3, n] = side, i, new
        ch[2, n] = _put(bidq, askq, g, side, i, new)
        n += 1
    return n


@njit
def simulate(g, bidq, askq, stamp, n_events, t0, step, n_per_event, sigma, spacing, unit, base,
             tick, snap_tau, snap_limit, ev, lvp, lvq, tk, snap_l, snap_px, snap_qty, snap_n,
             truth, sec0, mid_ticker_p, after_p):  # fmt: skip
    """Simulate ``n_events`` diff events from event g[G_EVENT] on (event i at
    t0 + i * step + jitter µs). Outputs: ev (6 x n: t_us, U, u, level start, bids, asks),
    lvp/lvq, tk (7 x k: event, u, bid, bid qty, ask, ask qty, after the depth line),
    snapshots of requests snap_tau[g[G_SNAP]:] taken during these events (snap_l, snap_px /
    snap_qty (2 x k x limit), snap_n (2 x k)) and, when truth has columns, the true book at
    the end of seconds sec0.. (TRUTH_FIELDS x seconds). Returns (levels, tickers)."""
    lo, hi = 60_000.0, len(bidq) - 60_000.0
    ch = np.zeros((4, 4 * n_per_event + 64), np.int64)
    n_lv = n_tk = 0
    for k in range(n_events):
        i = g[G_EVENT]
        t = t0 + i * step + (i * 7919) % 13 * 100
        sec = t // 1_000_000
        if g[G_LAST_SEC] < 0:
            g[G_LAST_SEC] = sec
        while g[G_LAST_SEC] < sec:
            col = g[G_LAST_SEC] - sec0
            if 0 <= col < truth.shape[1]:
                _record_truth(bidq, askq, g, truth, col, base, tick)
            g[G_LAST_SEC] += 1
        n_target = n_per_event // 2 + np.random.randint(0, n_per_event + 1)
        n = _changes(bidq, askq, g, stamp, n_target, sigma, spacing, unit, lo, hi, ch)
        for m in range(n - 1, -1, -1):  # undo: replay in the written order (bids first)
            _put(bidq, askq, g, ch[0, m], ch[1, m], ch[2, m])
        order = np.argsort(ch[0, :n], kind="mergesort")
        first = g[G_NEXT_ID]
        nb = 0
        for m in range(n):
            if ch[0, m] == 0:
                nb += 1
        mid_at = np.random.randint(0, n - 1) if n > 1 and np.random.random() < mid_ticker_p else -1
        prev_t = t - step
        for m in range(n + 1):
            while (
                g[G_SNAP] < len(snap_tau)
                and snap_tau[g[G_SNAP]] <= t
                and (m == n or (snap_tau[g[G_SNAP]] - prev_t) * (n + 1) < (m + 1) * step)
            ):
                s = g[G_SNAP]
                snap_l[s] = first + m - 1
                for side in range(2):
                    q = bidq if side == 0 else askq
                    top = g[G_BB] if side == 0 else g[G_BA]
                    snap_n[side, s] = 0 if top < 0 else _levels_from(
                        q, top, side, snap_limit[s], snap_px[side, s], snap_qty[side, s], base,
                        tick)  # fmt: skip
                g[G_SNAP] += 1
            if m == n:
                break
            j = order[m]
            side, idx, new = ch[0, j], ch[1, j], ch[3, j]
            _put(bidq, askq, g, side, idx, new)
            lvp[n_lv + m], lvq[n_lv + m] = base + idx * tick, new
            if m == mid_at:
                _ticker(g, bidq, askq, tk, n_tk, k, first + m, base, tick, 0)
                n_tk += 1
        last = first + n - 1 + np.random.randint(0, n // 2 + 1)
        ev[0, k], ev[1, k], ev[2, k], ev[3, k], ev[4, k], ev[5, k] = (
            t,
            first,
            last,
            n_lv,
            nb,
            n - nb,
        )
        _ticker(g, bidq, askq, tk, n_tk, k, last, base, tick, np.random.random() < after_p)
        n_tk += 1
        n_lv += n
        g[G_NEXT_ID] = last + 1
        g[G_EVENT] = i + 1
    return n_lv, n_tk


@njit
def _ticker(g, bidq, askq, tk, n, k, u, base, tick, after):
    b, a = g[G_BB], g[G_BA]
    tk[0, n], tk[1, n], tk[6, n] = k, u, after
    tk[2, n], tk[3, n] = (base + b * tick, bidq[b]) if b >= 0 else (0, 0)
    tk[4, n], tk[5, n] = (base + a * tick, askq[a]) if a >= 0 else (0, 0)
