"""One side of the compiled book: a sorted array cut into blocks, with sums per block.

A side holds its levels as ascending keys (a bid's key is its price, an ask's the negated
price, so the best level of either side is the largest key) in blocks of at most ``B``
levels. The blocks are kept in key order by a small position array (``bord``, with each
block's smallest key in ``bmin``), so an update searches two short sorted arrays and moves at
most one block's levels; a full block splits in two, an empty one is freed. Each block also
carries the exact 128-bit sums of its quantities and notionals (price x quantity), so the
depth within a band of the mid adds whole blocks and walks at most one.

A Binance local book grows all day (every level a diff event ever touched, thousands per
side, far from the top too); a plain sorted array would move half a side per deep update.
"""

from __future__ import annotations

import numpy as np

from crypto_lake.lib.book.jit import njit

B = 128  # levels per block
NONE = np.iinfo(np.int64).min
_U64 = np.uint64
_M32, _S32 = _U64(0xFFFFFFFF), _U64(32)


@njit
def product(a, b):
    """The 128-bit product of two non-negative int64 as (low, high) uint64 words."""
    ua, ub = _U64(a), _U64(b)
    a0, a1, b0, b1 = ua & _M32, ua >> _S32, ub & _M32, ub >> _S32
    p00, p01, p10 = a0 * b0, a0 * b1, a1 * b0
    mid = (p00 >> _S32) + (p01 & _M32) + (p10 & _M32)
    return (p00 & _M32) | (mid << _S32), a1 * b1 + (p01 >> _S32) + (p10 >> _S32) + (mid >> _S32)


@njit
def add128(s, k, lo, hi, negative):
    """s[k], s[k + 1] (low, high words as int64) += (lo, hi), or -= when ``negative``."""
    if negative:  # two's complement of the 128-bit value
        hi = ~hi + (_U64(1) if lo == _U64(0) else _U64(0))
        lo = ~lo + _U64(1)
    old = _U64(s[k])
    new = old + lo
    s[k] = np.int64(new)
    s[k + 1] = np.int64(_U64(s[k + 1]) + hi + (_U64(1) if new < old else _U64(0)))


@njit
def _account(S, side, blk, price, qty, negative):
    """Add (or remove) a level's quantity and notional to its block's sums."""
    sums = S.bsum[side, blk]
    add128(sums, 0, _U64(qty), _U64(0), negative)
    lo, hi = product(price, qty)
    add128(sums, 2, lo, hi, negative)


@njit
def _position(S, side, key):
    """Position of the block that holds (or would hold) ``key``: the last block whose
    smallest key is <= key, or the first block."""
    lo, hi = 0, S.nblk[side]
    while lo < hi:
        mid = (lo + hi) >> 1
        if S.bmin[side, mid] <= key:
            lo = mid + 1
        else:
            hi = mid
    return max(lo - 1, 0)


@njit
def _index(S, side, blk, key):
    """Index of the first key >= ``key`` in block ``blk``."""
    lo, hi = 0, S.blen[side, blk]
    while lo < hi:
        mid = (lo + hi) >> 1
        if S.bk[side, blk, mid] < key:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit
def _new_block(S, side, pos):
    """A free block inserted at position ``pos``; returns its id."""
    nfree = S.nfree[side] - 1
    S.nfree[side] = nfree
    blk = S.bfree[side, nfree]
    n = S.nblk[side]
    for j in range(n, pos, -1):
        S.bord[side, j], S.bmin[side, j] = S.bord[side, j - 1], S.bmin[side, j - 1]
    S.bord[side, pos] = blk
    S.nblk[side] = n + 1
    S.blen[side, blk] = 0
    S.bsum[side, blk, :] = 0
    return blk


@njit
def _drop_block(S, side, pos):
    blk = S.bord[side, pos]
    n = S.nblk[side] - 1
    for j in range(pos, n):
        S.bord[side, j], S.bmin[side, j] = S.bord[side, j + 1], S.bmin[side, j + 1]
    S.nblk[side] = n
    S.bfree[side, S.nfree[side]] = blk
    S.nfree[side] += 1


@njit
def _resum(S, side, blk):
    S.bsum[side, blk, :] = 0
    for i in range(S.blen[side, blk]):
        key = S.bk[side, blk, i]
        _account(S, side, blk, key if side == 0 else -key, S.bq[side, blk, i], False)


@njit
def _split(S, side, pos):
    """Split the full block at ``pos``: its upper half moves to a new block at pos + 1."""
    blk = S.bord[side, pos]
    new = _new_block(S, side, pos + 1)
    half = B // 2
    for i in range(half, B):
        S.bk[side, new, i - half], S.bq[side, new, i - half] = S.bk[side, blk, i], S.bq[
            side, blk, i]  # fmt: skip
    S.blen[side, blk], S.blen[side, new] = half, B - half
    S.bmin[side, pos + 1] = S.bk[side, new, 0]
    _resum(S, side, blk)
    _resum(S, side, new)


@njit
def set_level(S, side, price, qty):
    """Set a level (qty 0 removes it); returns the previous quantity (0 if none)."""
    key = price if side == 0 else -price
    if S.nblk[side] == 0:
        if qty == 0:
            return 0
        _new_block(S, side, 0)
    pos = _position(S, side, key)
    blk = S.bord[side, pos]
    n = S.blen[side, blk]
    i = _index(S, side, blk, key)
    if i < n and S.bk[side, blk, i] == key:
        old = S.bq[side, blk, i]
        if qty == 0:
            for j in range(i, n - 1):
                S.bk[side, blk, j], S.bq[side, blk, j] = S.bk[side, blk, j + 1], S.bq[
                    side, blk, j + 1]  # fmt: skip
            S.blen[side, blk] = n - 1
            S.nlev[side] -= 1
            _account(S, side, blk, price, old, True)
            if n == 1:
                _drop_block(S, side, pos)
            elif i == 0:
                S.bmin[side, pos] = S.bk[side, blk, 0]
        else:
            S.bq[side, blk, i] = qty
            if qty > old:
                _account(S, side, blk, price, qty - old, False)
            else:
                _account(S, side, blk, price, old - qty, True)
        return old
    if qty == 0:
        return 0
    if n == B:
        _split(S, side, pos)
        if i >= B // 2:
            pos, i = pos + 1, i - B // 2
            blk = S.bord[side, pos]
        n = S.blen[side, blk]
    for j in range(n, i, -1):
        S.bk[side, blk, j], S.bq[side, blk, j] = S.bk[side, blk, j - 1], S.bq[side, blk, j - 1]
    S.bk[side, blk, i], S.bq[side, blk, i] = key, qty
    S.blen[side, blk] = n + 1
    S.nlev[side] += 1
    _account(S, side, blk, price, qty, False)
    if i == 0:
        S.bmin[side, pos] = key
    return 0


@njit
def clear_side(S, side):
    for pos in range(S.nblk[side] - 1, -1, -1):
        _drop_block(S, side, pos)
    S.nlev[side] = 0


@njit
def load_side(S, side, keys, qtys, n):
    """The side as ``n`` levels of ascending ``keys``, blocks half full."""
    clear_side(S, side)
    half = B // 2
    for a in range(0, n, half):
        blk = _new_block(S, side, S.nblk[side])
        m = min(half, n - a)
        S.bk[side, blk, :m], S.bq[side, blk, :m] = keys[a : a + m], qtys[a : a + m]
        S.blen[side, blk] = m
        S.bmin[side, S.nblk[side] - 1] = keys[a]
        _resum(S, side, blk)
    S.nlev[side] = n


# --- walking down from the best level -------------------------------------------------------------
@njit
def top(S, side):
    """Cursor (position, index) of the best level, position -1 when the side is empty."""
    pos = S.nblk[side] - 1
    return pos, (S.blen[side, S.bord[side, pos]] - 1 if pos >= 0 else 0)


@njit
def down(S, side, pos, i):
    """The cursor of the next worse level."""
    if i > 0:
        return pos, i - 1
    pos -= 1
    return pos, (S.blen[side, S.bord[side, pos]] - 1 if pos >= 0 else 0)


@njit
def key_at(S, side, pos, i):
    return S.bk[side, S.bord[side, pos], i]


@njit
def qty_at(S, side, pos, i):
    return S.bq[side, S.bord[side, pos], i]


@njit
def band_sums(S, side, edge_key, out, k):
    """Quantity and notional of the levels with key >= edge_key into out[k:k + 2] and
    out[k + 8: k + 10] (128-bit words): whole blocks, then part of one."""
    for pos in range(S.nblk[side] - 1, -1, -1):
        blk = S.bord[side, pos]
        if S.bmin[side, pos] >= edge_key:
            s = S.bsum[side, blk]
            add128(out, k, _U64(s[0]), _U64(s[1]), False)
            add128(out, k + 8, _U64(s[2]), _U64(s[3]), False)
            continue
        for i in range(S.blen[side, blk] - 1, -1, -1):
            key = S.bk[side, blk, i]
            if key < edge_key:
                return
            q = S.bq[side, blk, i]
            add128(out, k, _U64(q), _U64(0), False)
            lo, hi = product(key if side == 0 else -key, q)
            add128(out, k + 8, lo, hi, False)
        return


@njit
def spare_blocks(S, more):
    """Free blocks a side needs before adding up to ``more`` levels: every full block may
    split once, and each new block fills half before it splits."""
    return max(S.nblk[0], S.nblk[1]) + 2 * more // B + 2
