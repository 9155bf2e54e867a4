"""A strict, compiled reader for the common raw line: one pass over a file's bytes.

Nearly every raw line is a live ``@trade``, ``@aggTrade`` or ``@bookTicker`` message in the
collector's wrapper (see ``crypto_lake.lib.raw.lines``): minified JSON with integer ids and
times and decimal strings, keys in the order of the Binance map (``crypto_lake.lib.raw.binance``,
from which every payload key and literal here is derived). This module reads exactly those
lines, straight into integer columns (prices and quantities as integers of 1e-8), about ten
times faster than a general JSON reader. It is strict by design: any line outside that narrow
grammar (whitespace, escapes, floats, nulls, duplicate keys, more than 8 decimals, session
records, REST repairs, malformed text) is not guessed at but handed back as a *fallback* line,
which the general DuckDB path in ``crypto_lake.lib.market.tick_staging`` types exactly as it
always did. Order book diff events (``@depth@100ms``, as many lines as trades on a busy
symbol) are read too, strictly (their ``b``/``a`` arrays of ``[price, qty]`` string pairs
included), only to be counted as other-stream lines, as the general path counts them; their
REST snapshots hold ``rest`` and go to the general path, which counts them alike. So for
every line, the result is the one the general path would give;
``crypto_lake_tests/lib/test_fastparse.py`` proves it line by line and file by file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numba
import numpy as np
from numba.core import types as nbtypes
from numba.extending import intrinsic
from numba.np.arrayobj import populate_array

from crypto_lake.lib.raw import binance
from crypto_lake.lib.raw.binance import AGG_TRADE, BOOK_TICKER, TRADE

KIND_TRADE, KIND_AGG, KIND_BOOK, KIND_OTHER = 1, 2, 3, 4

# value types of a captured token
_NONE, _INT, _STR, _TRUE, _FALSE, _LEVELS = 0, 1, 2, 3, 4, 5
INT64_MAX = np.iinfo(np.int64).max

# top-level keys
_K_RECV, _K_CONN, _K_UNIT, _K_STREAM, _K_DATA, _K_FALLBACK = 0, 1, 2, 3, 4, 5
_N_TOP = 4

# Everything Binance-specific below is derived from the message map at import: the payload
# keys the reader keeps (one slot each; a key two streams share shares its slot) and the
# bytes of the template. Numba freezes these globals into the compiled code as constants.
_SLOTS: dict[str, int] = {}


def _slot(message: binance.Message, column: str) -> int:
    return _SLOTS.setdefault(message.key(column), len(_SLOTS))


def _shared(column: str, *messages: binance.Message) -> int:
    """The slot of ``column`` in ``messages``, which the reader handles alike."""
    slots = {_slot(m, column) for m in messages}
    if len(slots) != 1:
        raise ImportError(f"fastparse reads {column} of {messages} with one key")
    return slots.pop()


_D_T = _slot(TRADE, "trade_id")
_D_P = _shared("price", TRADE, AGG_TRADE)
_D_Q = _shared("qty", TRADE, AGG_TRADE)
_D_TT = _shared("ts_event", TRADE, AGG_TRADE)
_D_M = _shared("is_buyer_maker", TRADE, AGG_TRADE)
_D_A = _slot(AGG_TRADE, "trade_id")
_D_F = _slot(AGG_TRADE, "first_trade_id")
_D_L = _slot(AGG_TRADE, "last_trade_id")
_D_U = _slot(BOOK_TICKER, "update_id")
_D_B = _slot(BOOK_TICKER, "bid")
_D_BB = _slot(BOOK_TICKER, "bid_qty")
_D_ASK = _slot(BOOK_TICKER, "ask")  # aggTrade's id is "a" too: the same slot
_D_AA = _slot(BOOK_TICKER, "ask_qty")
_N_DATA = len(_SLOTS)
_D_IGNORED = _N_DATA  # e, E, s, M: read and checked, not used
# payload key (one byte) -> slot, _D_IGNORED, or -1 for a key no stream has
_KEY_SLOT = np.full(256, -1, dtype=np.int64)
for _key in {k for m in (*binance.STREAMS.values(), binance.DEPTH_UPDATE) for k in m.keys}:
    if len(_key) != 1:
        raise ImportError(f"fastparse reads one-letter payload keys, not {_key!r}")
    _KEY_SLOT[ord(_key)] = _SLOTS.get(_key, _D_IGNORED)


def _u8(text: bytes | str) -> np.ndarray:
    return np.frombuffer(text if isinstance(text, bytes) else text.encode(), dtype=np.uint8)


def _before(column: str | None, *messages: binance.Message) -> bytes:
    """The wire bytes before the value of ``column`` (None: after the last value), which
    must be the same in each of ``messages``."""
    texts = {dict(binance.wire_layout(m))[column] for m in messages}
    if len(texts) != 1:
        raise ImportError(f"fastparse reads the text around {column} of {messages} alike")
    return texts.pop()


def _head(message: binance.Message, first: str) -> bytes:
    """From the '@' of the stream name to the payload's first varying value."""
    return b"@" + message.name.encode() + b'","data":' + _before(first, message)


# byte literals as constant arrays (numba freezes global arrays into the code)
_L_AGGTRADE = _u8(AGG_TRADE.name)
_L_BOOKTICKER = _u8(BOOK_TICKER.name)
_L_CONN = np.frombuffer(b"conn", dtype=np.uint8)
_L_DATA = np.frombuffer(b"data", dtype=np.uint8)
_L_FALSE = np.frombuffer(b"false", dtype=np.uint8)
_L_MS = np.frombuffer(b"ms", dtype=np.uint8)
_L_RECV_NS = np.frombuffer(b"recv_ns", dtype=np.uint8)
_L_REST = np.frombuffer(b"rest", dtype=np.uint8)
_L_STREAM = np.frombuffer(b"stream", dtype=np.uint8)
_L_TRADE = _u8(TRADE.name)
_L_TRUE = np.frombuffer(b"true", dtype=np.uint8)
_L_UNIT = np.frombuffer(b"unit", dtype=np.uint8)
_L_US = np.frombuffer(b"us", dtype=np.uint8)
_POW10 = np.array([10**i for i in range(9)], dtype=np.int64)

# positions in the template reader's values of the quote and the first trade columns
_BOOK_V = np.array([1, 4, 8, 9, 10, 11], dtype=np.int64)
_TRADE_V = np.array([0, 1, 4, 5, 6, 7, 8], dtype=np.int64)
# the collector's line layout around Binance's payloads, for the template reader
_T_RECV = np.frombuffer(b'{"recv_ns":', dtype=np.uint8)
_T_CONN = np.frombuffer(b',"conn":"', dtype=np.uint8)
_T_UNIT = np.frombuffer(b'","unit":"', dtype=np.uint8)
_T_STREAM = np.frombuffer(b'","stream":"', dtype=np.uint8)
# the stream name's first letter after '@' tells the stream
_C_TRADE, _C_AGG, _C_BOOK = (ord(m.name[0]) for m in (TRADE, AGG_TRADE, BOOK_TICKER))
_T_TRADE = _u8(_head(TRADE, "event_time"))
_T_AGG = _u8(_head(AGG_TRADE, "event_time"))
_T_BOOK = _u8(_head(BOOK_TICKER, "update_id"))
_T_S = _u8(_before("symbol", TRADE, AGG_TRADE, BOOK_TICKER))
_T_t = _u8(_before("trade_id", TRADE))
_T_a = _u8(_before("trade_id", AGG_TRADE))
_T_p = _u8(_before("price", TRADE, AGG_TRADE))
_T_q = _u8(_before("qty", TRADE, AGG_TRADE))
_T_f = _u8(_before("first_trade_id", AGG_TRADE))
_T_l = _u8(_before("last_trade_id", AGG_TRADE))
_T_TRADE_T = _u8(_before("ts_event", TRADE))
_T_AGG_T = _u8(_before("ts_event", AGG_TRADE))
_T_m = _u8(_before("is_buyer_maker", TRADE, AGG_TRADE))
_T_M = _u8(_before("is_best_match", TRADE, AGG_TRADE))
_T_END = _u8(_before(None, TRADE, AGG_TRADE) + b"}")  # and the line's "}"
_T_b = _u8(_before("bid", BOOK_TICKER))
_T_BB = _u8(_before("bid_qty", BOOK_TICKER))
_T_aa = _u8(_before("ask", BOOK_TICKER))
_T_AA = _u8(_before("ask_qty", BOOK_TICKER))
_T_QEND = _u8(_before(None, BOOK_TICKER) + b"}")


def map_fingerprint() -> str:
    """A digest of the constants above, the Binance-specific ones derived from the map."""
    constants = sorted(
        (k, v.tobytes() if isinstance(v, np.ndarray) else v)
        for k, v in globals().items()
        if k.startswith(("_D_", "_C_", "_K_", "_L_", "_N_", "_T_", "_KEY_SLOT"))
    )
    return hashlib.sha256(repr(constants).encode()).hexdigest()[:16]


# Numba's on-disk cache (``cache=``) is reused until *this* file changes, not when the map
# does. So a map whose constants differ from this fingerprint gets a reader compiled afresh in
# each process (correct, slower to start), and crypto_lake_tests/lib/test_binance.py fails
# until the fingerprint is updated here, which changes this file and so renews the cache.
MAP_FINGERPRINT = "3aca35faeba4dc65"
_CACHE = map_fingerprint() == MAP_FINGERPRINT


@intrinsic
def _unowned(typingctx, arr):
    """The same array without its owner (numba's meminfo), so no reference counting is done
    on it. Numba counts references to an array with an atomic add at every loop turn and
    helper call that uses it: about 40 per line in the reader's loop, measured as half of a
    parse on 2 cores. Only for an array that something else keeps alive while it is used
    (here: arguments, which the caller holds for the whole call) and that is not returned."""
    if not isinstance(arr, nbtypes.Array):
        return None

    def codegen(context, builder, sig, args):
        src = context.make_array(arr)(context, builder, value=args[0])
        dst = context.make_array(arr)(context, builder)
        populate_array(dst, data=src.data, shape=src.shape, strides=src.strides,
                       itemsize=src.itemsize, meminfo=None)  # fmt: skip
        return dst._getvalue()

    return arr(arr), codegen


@numba.njit(cache=_CACHE, nogil=True, inline="always")
def _eq(buf, s, e, lit):
    if e - s != len(lit):
        return False
    for i in range(len(lit)):  # noqa: SIM110 - a loop compiles, a generator does not
        if buf[s + i] != lit[i]:
            return False
    return True


@numba.njit(cache=_CACHE, nogil=True, inline="always")  # the hottest call: ~20 % of a parse
def _lit(buf, p, end, lit):
    """``p`` after the literal bytes ``lit`` at ``p``, or -1."""
    if p < 0 or p + len(lit) > end or not _eq(buf, p, p + len(lit), lit):
        return -1
    return p + len(lit)


@numba.njit(cache=_CACHE, nogil=True)
def _str_after(buf, p, end, lit):
    """Index of the closing quote of the string that follows the literal ``lit`` at ``p``,
    or -1."""
    p = _lit(buf, p, end, lit)
    return -1 if p < 0 else _string_end(buf, p, end)


@numba.njit(cache=_CACHE, nogil=True)
def _top_key(buf, s, e):
    n = e - s
    c = buf[s]
    if n == 7 and c == 114 and _eq(buf, s, e, _L_RECV_NS):
        return _K_RECV
    if n == 4 and c == 99 and _eq(buf, s, e, _L_CONN):
        return _K_CONN
    if n == 4 and c == 117 and _eq(buf, s, e, _L_UNIT):
        return _K_UNIT
    if n == 6 and c == 115 and _eq(buf, s, e, _L_STREAM):
        return _K_STREAM
    if n == 4 and c == 100 and _eq(buf, s, e, _L_DATA):
        return _K_DATA
    return _K_FALLBACK  # rest, session and anything unknown: the general path decides


@numba.njit(cache=_CACHE, nogil=True)
def _data_key(buf, s, e):
    """The slot of the payload key ``buf[s:e]``: _D_IGNORED for keys read and not kept, -1
    for any other key."""
    if e - s != 1:
        return -1
    return _KEY_SLOT[buf[s]]


@numba.njit(cache=_CACHE, nogil=True)
def _string_end(buf, p, end):
    """Index of the closing quote of a string starting after ``p``, or -1 (escape, control
    character or end of line: the general path decides)."""
    while p < end:
        c = buf[p]
        if c == 34:
            return p
        if c == 92 or c < 32 or c >= 128:
            return -1  # escapes, control characters, non-ASCII
        p += 1
    return -1


@numba.njit(cache=_CACHE, nogil=True)
def _value(buf, p, end, starts, ends, types, slot):
    """Read one scalar value at ``p``; store its token in ``slot`` (unless -1).
    Returns the index after it, or -1 when the line needs the general path."""
    c = buf[p]
    if c == 34:
        q = _string_end(buf, p + 1, end)
        if q < 0:
            return -1
        if slot >= 0:
            starts[slot], ends[slot], types[slot] = p + 1, q, _STR
        return q + 1
    if c == 45 or (48 <= c <= 57):
        q = p + 1
        while q < end and 48 <= buf[q] <= 57:
            q += 1
        if q < end and (buf[q] == 46 or buf[q] == 101 or buf[q] == 69):
            return -1  # a float: not in the grammar
        n = q - p if c != 45 else q - p - 1
        if n == 0 or (buf[q - n] == 48 and n > 1):
            return -1  # "-" alone or leading zeros: not JSON
        if slot >= 0:
            starts[slot], ends[slot], types[slot] = p, q, _INT
        return q
    if c == 116 and _lit(buf, p, end, _L_TRUE) > 0:
        if slot >= 0:
            types[slot] = _TRUE
        return p + 4
    if c == 102 and _lit(buf, p, end, _L_FALSE) > 0:
        if slot >= 0:
            types[slot] = _FALSE
        return p + 5
    if c == 91:
        q = _levels(buf, p, end)
        if q > 0 and slot >= 0:
            types[slot] = _LEVELS  # never a value a trade or quote column accepts
        return q
    return -1  # null, other arrays, objects, junk


@numba.njit(cache=_CACHE, nogil=True)
def _levels(buf, p, end):
    """Index after the array of ``["price","qty"]`` string pairs whose '[' is at ``p`` (an
    order book side), or -1 for anything else."""
    p += 1
    if p < end and buf[p] == 93:
        return p + 1
    while p < end:
        if buf[p] != 91:
            return -1
        for k in range(2):
            p += 1
            if p >= end or buf[p] != 34:
                return -1
            p = _string_end(buf, p + 1, end)
            if p < 0:
                return -1
            p += 1
            if p >= end or buf[p] != (44 if k == 0 else 93):
                return -1
        p += 1
        if p >= end:
            return -1
        if buf[p] == 93:
            return p + 1
        if buf[p] != 44:
            return -1
        p += 1
    return -1


@numba.njit(cache=_CACHE, nogil=True)
def _key(buf, p, end):
    """End quote of the key starting at ``p`` (a '"'), when a ':' follows; else -1."""
    if buf[p] != 34:
        return -1
    q = _string_end(buf, p + 1, end)
    if q < 0 or q + 2 >= end or buf[q + 1] != 58:
        return -1
    return q


@numba.njit(cache=_CACHE, nogil=True, inline="always")
def _member_end(buf, p, end):
    """After an object member's value at ``p``: (1, index after '}') at the object's end,
    (0, index after ',') when a member follows, (-1, -1) for anything else."""
    if p < 0 or p >= end:
        return -1, -1
    if buf[p] == 125:
        return 1, p + 1
    if buf[p] != 44:
        return -1, -1
    return 0, p + 1


@numba.njit(cache=_CACHE, nogil=True)
def _data_object(buf, p, end, dstarts, dends, dtypes):
    """Read the exchange payload object whose '{' is at ``p``; returns the index after its
    '}', or -1."""
    for i in range(_N_DATA):
        dtypes[i] = _NONE
    p += 1
    if p < end and buf[p] == 125:
        return p + 1
    while p < end:
        q = _key(buf, p, end)
        if q < 0:
            return -1
        k = _data_key(buf, p + 1, q)
        if k < 0:
            return -1
        p = q + 2
        if k == _D_IGNORED:
            p = _value(buf, p, end, dstarts, dends, dtypes, -1)
        elif dtypes[k] != _NONE:
            return -1  # duplicate key
        else:
            p = _value(buf, p, end, dstarts, dends, dtypes, k)
        done, p = _member_end(buf, p, end)
        if done:
            return p  # after the '}', or -1
    return -1


@numba.njit(cache=_CACHE, nogil=True)
def _line_object(buf, p, end, starts, ends, types, dstarts, dends, dtypes):
    """Read the raw line object whose '{' is at ``p``; returns the index after its '}', or
    -1 when the line needs the general path."""
    for i in range(_N_TOP + 1):
        types[i] = _NONE
    if buf[p] != 123:
        return -1
    p += 1
    while p < end:
        q = _key(buf, p, end)
        if q < 0:
            return -1
        k = _top_key(buf, p + 1, q)
        if k == _K_FALLBACK or types[k] != _NONE:
            return -1  # rest, session, unknown or duplicate keys: the general path decides
        p = q + 2
        if k == _K_DATA:
            if buf[p] != 123:
                return -1
            p = _data_object(buf, p, end, dstarts, dends, dtypes)
            types[_K_DATA] = _TRUE
        else:
            p = _value(buf, p, end, starts, ends, types, k)
        done, p = _member_end(buf, p, end)
        if done:
            return p  # after the '}', or -1
    return -1


_U = np.uint64
_ASCII_ZEROS = _U(0x3030303030303030)
_HIGH_NIBBLES = _U(0xF0F0F0F0F0F0F0F0)
_PLUS_SIX = _U(0x0606060606060606)


@numba.njit(cache=_CACHE, nogil=True, inline="always")
def _load8(buf, i):
    """The 8 bytes at ``i`` as one little-endian word (the compiler makes it one load)."""
    return (_U(buf[i]) | (_U(buf[i + 1]) << _U(8)) | (_U(buf[i + 2]) << _U(16))
            | (_U(buf[i + 3]) << _U(24)) | (_U(buf[i + 4]) << _U(32))
            | (_U(buf[i + 5]) << _U(40)) | (_U(buf[i + 6]) << _U(48))
            | (_U(buf[i + 7]) << _U(56)))  # fmt: skip


@numba.njit(cache=_CACHE, nogil=True, inline="always")
def _eight_digits(w):
    """The value of the 8 ASCII digits in ``w`` (first digit in the lowest byte), or -1 when
    a byte is not a digit. Three multiplications instead of eight dependent steps."""
    if (w & _HIGH_NIBBLES) != _ASCII_ZEROS or ((w + _PLUS_SIX) & _HIGH_NIBBLES) != _ASCII_ZEROS:
        return -1
    w = ((w & _U(0x0F0F0F0F0F0F0F0F)) * _U(2561)) >> _U(8)
    w = ((w & _U(0x00FF00FF00FF00FF)) * _U(6553601)) >> _U(16)
    return np.int64(((w & _U(0x0000FFFF0000FFFF)) * _U(42949672960001)) >> _U(32))


@numba.njit(cache=_CACHE, nogil=True)
def _int_of(buf, starts, ends, types, k):
    if types[k] != _INT:
        return False, 0
    q, v = _int_at(buf, starts[k], ends[k])
    return q == ends[k], v


@numba.njit(cache=_CACHE, nogil=True)
def _dec_of(buf, starts, ends, types, k, digits):
    if types[k] != _STR:
        return False, 0
    q, v = _dec_at(buf, starts[k], ends[k] + 1, digits)  # the string's closing quote at ends[k]
    return q == ends[k], v


@numba.njit(cache=_CACHE, nogil=True, inline="always")
def _int_at(buf, p, end):
    """(index after, value) of the canonical integer at ``p``; index -1 if there is none.
    One pass: the value is accumulated while the digits are scanned, eight at a time while
    whole words of digits follow (ids and times have 10 to 19). The rules are JSON's (no
    leading zeros, not a float) and int64's."""
    if p < 0 or p >= end:
        return -1, 0
    neg = buf[p] == 45
    s = p + 1 if neg else p
    i = s
    v = 0
    while i + 8 <= end:
        x = _eight_digits(_load8(buf, i))
        if x < 0:
            break
        if v > 92233720367:  # v * 10**8 + x may pass int64 (after two words it always does)
            return -1, 0
        v = v * 100000000 + x
        i += 8
    while i < end:
        d = np.int64(buf[i]) - 48
        if d < 0 or d > 9:
            break
        if v > 922337203685477580 or (v == 922337203685477580 and d > 7):
            return -1, 0  # beyond int64 (the minimum itself too: rare enough to hand on)
        v = v * 10 + d
        i += 1
    n = i - s
    if n == 0 or (n > 1 and buf[s] == 48):
        return -1, 0
    if i < end and (buf[i] == 46 or buf[i] == 101 or buf[i] == 69):
        return -1, 0
    return i, -v if neg else v


@numba.njit(cache=_CACHE, nogil=True, inline="always")
def _dec_at(buf, p, end, digits):
    """(index of the closing quote, value in 1e-8) of the decimal string starting at ``p``.
    One pass: ``-?D{1,digits}(.D{1,8})?`` and then the quote, else -1 (more decimals would
    need rounding, which is the general path's business); eight decimals are read as one
    word. The integer and fraction loops are written out on purpose: one shared digits helper
    made the whole reader 5-8 % slower per line (30 % unless numba inlines it)."""
    if p < 0 or p >= end:
        return -1, 0
    neg = buf[p] == 45
    i = p + 1 if neg else p
    v = 0
    n_int = 0
    while i < end:
        d = np.int64(buf[i]) - 48
        if d < 0 or d > 9:
            break
        if n_int == digits:
            return -1, 0
        v = v * 10 + d
        n_int += 1
        i += 1
    if n_int == 0:
        return -1, 0
    n_frac = 0
    if i < end and buf[i] == 46:
        i += 1
        if i + 8 <= end:
            x = _eight_digits(_load8(buf, i))
            if x >= 0:  # all 8 decimals at once (Binance always sends 8)
                v = v * 100000000 + x
                n_frac = 8
                i += 8
        while i < end:
            d = np.int64(buf[i]) - 48
            if d < 0 or d > 9:
                break
            if n_frac == 8:
                return -1, 0
            v = v * 10 + d
            n_frac += 1
            i += 1
        if n_frac == 0:
            return -1, 0
    if i >= end or buf[i] != 34:
        return -1, 0
    v *= _POW10[8 - n_frac]
    return i, -v if neg else v


@numba.njit(cache=_CACHE, nogil=True)
def _bool_at(buf, p, end):
    """(index after, 1/0) of true/false at ``p``; index -1 otherwise."""
    q = _lit(buf, p, end, _L_TRUE)
    if q >= 0:
        return q, 1
    return _lit(buf, p, end, _L_FALSE), 0


@numba.njit(cache=_CACHE, nogil=True)
def _template(buf, p, end, lower, v):
    """Read a line written exactly as the collector writes live messages, keys in Binance's
    order, straight into ``v`` (kind, recv_ns, mult, repaired, id, first, last, T, px, qt,
    ask_px, ask_qt, ibm). Returns the index of the line's end, or -1: then the line goes
    through the key-by-key reader, which accepts the same values in any layout."""
    p = _lit(buf, p, end, _T_RECV)
    p, v[1] = _int_at(buf, p, end)
    p = _lit(buf, p, end, _T_CONN)
    if p < 0:
        return -1
    q = _string_end(buf, p, end)
    if q < 0:
        return -1
    v[3] = 1 if _eq(buf, p, q, _L_REST) else 0
    p = _lit(buf, q, end, _T_UNIT)
    if _lit(buf, p, end, _L_US) > 0:
        v[2] = 1
    elif _lit(buf, p, end, _L_MS) > 0:
        v[2] = 1000
    else:
        return -1
    p = _lit(buf, p + 2, end, _T_STREAM)
    p = _lit(buf, p, end, lower)
    if p < 0 or p + 1 >= end or v[1] < 0:
        return -1
    if buf[p + 1] == _C_TRADE:
        v[0] = KIND_TRADE
        p = _lit(buf, p, end, _T_TRADE)
        p, _ = _int_at(buf, p, end)
        p = _str_after(buf, p, end, _T_S)
        p = _lit(buf, p, end, _T_t)
        p, v[4] = _int_at(buf, p, end)
        v[5] = v[6] = v[4]
    elif buf[p + 1] == _C_AGG:
        v[0] = KIND_AGG
        p = _lit(buf, p, end, _T_AGG)
        p, _ = _int_at(buf, p, end)
        p = _str_after(buf, p, end, _T_S)
        p = _lit(buf, p, end, _T_a)
        p, v[4] = _int_at(buf, p, end)
    elif buf[p + 1] == _C_BOOK:
        v[0] = KIND_BOOK
        p = _lit(buf, p, end, _T_BOOK)
        p, v[4] = _int_at(buf, p, end)
        v[5] = v[6] = v[4]
        p = _str_after(buf, p, end, _T_S)
        p, v[8] = _dec_at(buf, _lit(buf, p, end, _T_b), end, 10)
        p, v[9] = _dec_at(buf, _lit(buf, p, end, _T_BB), end, 10)
        p, v[10] = _dec_at(buf, _lit(buf, p, end, _T_aa), end, 10)
        p, v[11] = _dec_at(buf, _lit(buf, p, end, _T_AA), end, 10)
        return _lit(buf, p, end, _T_QEND)
    else:
        return -1
    p, v[8] = _dec_at(buf, _lit(buf, p, end, _T_p), end, 10)
    p, v[9] = _dec_at(buf, _lit(buf, p, end, _T_q), end, 10)
    if v[0] == KIND_AGG:
        p, v[5] = _int_at(buf, _lit(buf, p, end, _T_f), end)
        p, v[6] = _int_at(buf, _lit(buf, p, end, _T_l), end)
        if v[5] == -1 and v[6] == -1:
            return -1  # an invalidated aggregate: the general path counts it
        p = _lit(buf, p, end, _T_AGG_T)
    else:
        p = _lit(buf, p, end, _T_TRADE_T)
    p, v[7] = _int_at(buf, p, end)
    p, v[12] = _bool_at(buf, _lit(buf, p, end, _T_m), end)
    p, _ = _bool_at(buf, _lit(buf, p, end, _T_M), end)
    return _lit(buf, p, end, _T_END)


@numba.njit(cache=_CACHE, nogil=True)
def parse_buffer(buf, at, lower, start_us, end_us, keep_other, tr, bk, fb_start, fb_end, tr_at,
                 bk_at):  # fmt: skip
    """Parse the lines of ``buf`` from offset ``at`` (a line's start): trades to ``tr``
    (TRADE_COLUMNS x n) from column ``tr_at`` on, quotes to ``bk`` (QUOTE_COLUMNS x n) from
    ``bk_at`` on, the offsets of lines for the general path to fb_start/fb_end from 0 on.
    Returns the columns filled so far of ``tr`` and ``bk``, the other-stream lines, the
    fallback lines and the offset reached: ``len(buf)``, or the first line not read because
    ``tr``, ``bk`` or the fallback arrays were full (call again from there with more room).

    Lines outside the day (by trade time, or receive time for quotes) are dropped here
    exactly as the general path drops them; other streams are counted only if keep_other.
    """
    return _parse_lines(buf, at, lower, start_us, end_us, keep_other, tr, bk, fb_start, fb_end,
                        tr_at, bk_at, np.zeros(_N_TOP + 1, np.int64),
                        np.zeros(_N_TOP + 1, np.int64), np.zeros(_N_TOP + 1, np.int8),
                        np.zeros(_N_DATA, np.int64), np.zeros(_N_DATA, np.int64),
                        np.zeros(_N_DATA, np.int8), np.zeros(13, np.int64))  # fmt: skip


@numba.njit(cache=_CACHE, nogil=True)
def _parse_lines(buf, at, lower, start_us, end_us, keep_other, tr, bk, fb_start, fb_end, tr_at,
                 bk_at, starts, ends, types, dstarts, dends, dtypes, v):  # fmt: skip
    """``parse_buffer`` with its scratch arrays. The caller holds every array argument for
    the whole call, so the loop can use them unowned (``_unowned``): 1.5-2.5x the lines per
    second of the same loop with reference counting."""
    buf, lower, tr, bk = _unowned(buf), _unowned(lower), _unowned(tr), _unowned(bk)
    fb_start, fb_end = _unowned(fb_start), _unowned(fb_end)
    starts, ends, types = _unowned(starts), _unowned(ends), _unowned(types)
    dstarts, dends, dtypes, v = _unowned(dstarts), _unowned(dends), _unowned(dtypes), _unowned(v)
    n = len(buf)
    n_tr = tr_at
    n_bk = bk_at
    n_other = 0
    n_fb = 0
    p = at
    nl = len(lower)
    while p < n:
        line_s = p
        if n_tr == tr.shape[1] or n_bk == bk.shape[1] or n_fb == len(fb_start):
            return n_tr, n_bk, n_other, n_fb, line_s  # a line adds one row at most
        if buf[p] == 10:
            p += 1
            continue  # empty line: the general reader skips it too
        # Strings stop at control characters, so a parse never runs past the line's end.
        e = _template(buf, p, n, lower, v)
        if e > 0 and (e == n or buf[e] == 10):
            p = e + 1
            recv_us = v[1] // 1000
            if v[0] == KIND_BOOK:
                if recv_us >= start_us and recv_us < end_us:
                    for i in range(6):
                        bk[i, n_bk] = v[_BOOK_V[i]]
                    bk[0, n_bk] = recv_us
                    n_bk += 1
                continue
            mult = v[2]
            if v[7] < 0 or v[7] >= 4_000_000_000_000_000 // mult:
                fb_start[n_fb], fb_end[n_fb] = line_s, e
                n_fb += 1
                continue
            ts = v[7] * mult
            if ts >= start_us and ts < end_us:
                for i in range(7):
                    tr[i, n_tr] = v[_TRADE_V[i]]
                tr[1, n_tr] = recv_us
                tr[5, n_tr] = ts
                tr[6, n_tr] = v[8]
                tr[7, n_tr] = v[9]
                tr[8, n_tr] = v[12] + 2 * v[3]
                n_tr += 1
            continue
        e = _line_object(buf, p, n, starts, ends, types, dstarts, dends, dtypes)
        ok = e > 0 and (e == n or buf[e] == 10)
        if not ok:
            e = p
            while e < n and buf[e] != 10:
                e += 1
        p = e + 1
        ok = ok and types[_K_RECV] == _INT and types[_K_STREAM] == _STR
        ok = ok and types[_K_DATA] == _TRUE
        ok = ok and (types[_K_CONN] == _NONE or types[_K_CONN] == _STR)
        kind = 0
        mult = 1000
        if ok:
            ok, recv_ns = _int_of(buf, starts, ends, types, _K_RECV)
            ok = ok and recv_ns >= 0
        if ok and types[_K_UNIT] != _NONE:
            if types[_K_UNIT] != _STR:
                ok = False
            elif _eq(buf, starts[_K_UNIT], ends[_K_UNIT], _L_US):
                mult = 1
            elif not _eq(buf, starts[_K_UNIT], ends[_K_UNIT], _L_MS):
                ok = False
        if ok:
            # stream = "<symbol>@<suffix>[@<more>]": the suffix tells the kind, as in the
            # general path (a depth stream is "<symbol>@depth@100ms")
            s0, s1 = starts[_K_STREAM], ends[_K_STREAM]
            at = -1
            at2 = s1  # the second '@', if any
            for i in range(s0, s1):
                if buf[i] == 64:
                    if at < 0:
                        at = i
                    elif at2 == s1:
                        at2 = i
            if at < 0:
                ok = False
            if ok:
                mine = at - s0 == nl
                if mine:
                    for i in range(nl):
                        if buf[s0 + i] != lower[i]:
                            mine = False
                            break
                if not mine:
                    kind = KIND_OTHER
                elif _eq(buf, at + 1, at2, _L_TRADE):
                    kind = KIND_TRADE
                elif _eq(buf, at + 1, at2, _L_AGGTRADE):
                    kind = KIND_AGG
                elif _eq(buf, at + 1, at2, _L_BOOKTICKER):
                    kind = KIND_BOOK
                else:
                    kind = KIND_OTHER
                if at2 < s1 and kind != KIND_OTHER:
                    ok = False  # "btcusdt@trade@x": not what the collector writes
        if not ok:
            fb_start[n_fb], fb_end[n_fb] = line_s, e
            n_fb += 1
            continue
        recv_us = recv_ns // 1000
        rep = 0
        if types[_K_CONN] == _STR and _eq(buf, starts[_K_CONN], ends[_K_CONN], _L_REST):
            rep = 1
        if kind == KIND_OTHER:
            if keep_other:
                n_other += 1
            continue
        ok_id = ok_f = ok_l = ok_ts = ok_px = ok_qt = ok_apx = ok_aqt = True
        fid = lid = ts = px = qt = apx = aqt = 0
        ibm = 0
        if kind == KIND_BOOK:
            ok_id, tid = _int_of(buf, dstarts, dends, dtypes, _D_U)
            ok_px, px = _dec_of(buf, dstarts, dends, dtypes, _D_B, 10)
            ok_qt, qt = _dec_of(buf, dstarts, dends, dtypes, _D_BB, 10)
            ok_apx, apx = _dec_of(buf, dstarts, dends, dtypes, _D_ASK, 10)
            ok_aqt, aqt = _dec_of(buf, dstarts, dends, dtypes, _D_AA, 10)
            fid = lid = tid
            in_day = recv_us >= start_us and recv_us < end_us
            if not in_day and ok_id and ok_px and ok_qt and ok_apx and ok_aqt:
                continue
        else:
            if kind == KIND_TRADE:
                ok_id, tid = _int_of(buf, dstarts, dends, dtypes, _D_T)
                fid = lid = tid
            else:
                ok_id, tid = _int_of(buf, dstarts, dends, dtypes, _D_A)
                ok_f, fid = _int_of(buf, dstarts, dends, dtypes, _D_F)
                ok_l, lid = _int_of(buf, dstarts, dends, dtypes, _D_L)
                if ok_f and ok_l and fid == -1 and lid == -1:
                    ok_f = False  # an invalidated aggregate: the general path counts it
            ok_ts, ts = _int_of(buf, dstarts, dends, dtypes, _D_TT)
            ok_ts = ok_ts and ts >= 0 and ts < 4_000_000_000_000_000 // mult
            ts = ts * mult
            ok_px, px = _dec_of(buf, dstarts, dends, dtypes, _D_P, 10)
            ok_qt, qt = _dec_of(buf, dstarts, dends, dtypes, _D_Q, 10)
            if dtypes[_D_M] == _TRUE:
                ibm = 1
            elif dtypes[_D_M] != _FALSE:
                ok_px = False
        if not (ok_id and ok_f and ok_l and ok_ts and ok_px and ok_qt and ok_apx and ok_aqt):
            fb_start[n_fb], fb_end[n_fb] = line_s, e
            n_fb += 1
            continue
        if kind != KIND_BOOK and not (ts >= start_us and ts < end_us):
            continue
        if kind == KIND_BOOK:
            bk[0, n_bk] = recv_us
            bk[1, n_bk] = tid
            bk[2, n_bk] = px
            bk[3, n_bk] = qt
            bk[4, n_bk] = apx
            bk[5, n_bk] = aqt
            n_bk += 1
        else:
            tr[0, n_tr] = kind
            tr[1, n_tr] = recv_us
            tr[2, n_tr] = tid
            tr[3, n_tr] = fid
            tr[4, n_tr] = lid
            tr[5, n_tr] = ts
            tr[6, n_tr] = px
            tr[7, n_tr] = qt
            tr[8, n_tr] = ibm + 2 * rep
            n_tr += 1
    return n_tr, n_bk, n_other, n_fb, n


TRADE_COLUMNS = ("kind", "recv_us", "id", "first_id", "last_id", "ts_us", "px", "qt", "flags")
QUOTE_COLUMNS = ("recv_us", "id", "px", "qt", "ask_px", "ask_qt")
FLAG_IBM, FLAG_REPAIRED = 1, 2  # bits of the trades' flags row
# a row from Binance's public daily file (``market.archive_trades``; never set here). The
# dedup sorts copies by flags >> 1: live (0) before repaired (1) before archive (2).
FLAG_ARCHIVE = 4


@dataclass
class Parsed:
    """Accepted rows of one buffer, as int64 matrices (rows as in TRADE_COLUMNS and
    QUOTE_COLUMNS; prices and quantities in 1e-8), and the lines left to the general path."""

    trades: np.ndarray
    quotes: np.ndarray
    other_lines: int
    fallback: list[bytes]


def parse(data: bytes, symbol: str, start_us: int, end_us: int, keep_other: bool) -> Parsed:
    """Parse one raw file's bytes for ``symbol`` (upper case) and the day [start_us, end_us)."""
    buf = np.frombuffer(data, dtype=np.uint8)
    n_lines = data.count(b"\n") + 1  # a last line may lack its newline
    tr = np.empty((len(TRADE_COLUMNS), n_lines), dtype=np.int64)
    bk = np.empty((len(QUOTE_COLUMNS), n_lines), dtype=np.int64)
    fb_s = np.empty(n_lines, dtype=np.int64)
    fb_e = np.empty(n_lines, dtype=np.int64)
    lower = np.frombuffer(symbol.lower().encode(), dtype=np.uint8)
    n_tr, n_bk, n_other, m, _ = parse_buffer(
        buf, 0, lower, start_us, end_us, keep_other, tr, bk, fb_s, fb_e, 0, 0
    )
    return Parsed(  # views: the untouched tails of the arrays cost no memory
        trades=tr[:, :n_tr],
        quotes=bk[:, :n_bk],
        other_lines=int(n_other),
        fallback=[data[fb_s[i] : fb_e[i]] for i in range(m)],
    )
