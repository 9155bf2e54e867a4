"""The plain, strict reader of one raw line for the book: the reference for every line.

A line is one of: a diff event of the symbol's depth stream, a REST depth snapshot, a
bookTicker, a session record, or anything else (ignored). Prices and quantities become
integers of 1e-8. Strict on purpose: a depth event or snapshot that is not exactly right
(bad JSON, a missing or non-integer id, a price that is not a plain decimal with at most 10
integer and 8 fractional digits, a negative quantity, ...) is :class:`Malformed`, never
guessed at. A line too broken to parse counts as a depth line when its bytes name the
symbol's depth stream (``btcusdt@depth``); one that does not is left to the tick pipeline (if
it was a depth event, the next event's ids show the loss).

The compiled scanner (``crypto_lake.lib.book.scan``) reads the common lines itself and hands
every other line here, so both paths agree line by line by construction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from crypto_lake.lib.raw.binance import BOOK_TICKER, DEPTH, DEPTH_UPDATE, US_PER_UNIT

MAX_TIME_US = 4_000_000_000_000_000  # event times beyond ~2096 are not times
I64_LIMIT = 1 << 63
_DECIMAL = re.compile(rb"([0-9]{1,10})(?:\.([0-9]{1,8}))?")
Level = tuple[int, int]  # (price, qty) in 1e-8

_E, _E_TIME, _S, _U_FIRST, _U_LAST, _BIDS, _ASKS = (DEPTH_UPDATE.key(c) for c in (
    "event_type", "event_time", "symbol", "first_update_id", "update_id", "bids",
    "asks"))  # fmt: skip
_SNAP_ID, _SNAP_BIDS, _SNAP_ASKS = (DEPTH.key(c) for c in ("update_id", "bids", "asks"))
_TK_U, _TK_S, _TK_B, _TK_BQ, _TK_A, _TK_AQ = (BOOK_TICKER.key(c) for c in (
    "update_id", "symbol", "bid", "bid_qty", "ask", "ask_qty"))  # fmt: skip


@dataclass(frozen=True)
class DepthEvent:
    recv_ns: int
    t_us: int  # E in µs
    first_id: int  # U
    last_id: int  # u
    bids: list[Level]
    asks: list[Level]


@dataclass(frozen=True)
class DepthSnapshot:
    recv_ns: int
    last_id: int  # lastUpdateId
    bids: list[Level]  # best first
    asks: list[Level]
    limit: int | None
    reason: str


@dataclass(frozen=True)
class BookTicker:
    recv_ns: int
    update_id: int
    bid: int
    bid_qty: int
    ask: int
    ask_qty: int


@dataclass(frozen=True)
class Malformed:
    kind: str  # "depth_event", "depth_snapshot" or "book_ticker"
    reason: str


@dataclass(frozen=True)
class Session:
    event: str
    conn: str | None


Item = DepthEvent | DepthSnapshot | BookTicker | Malformed | Session


class _Bad(ValueError):
    pass


def decimal_units(text: Any, what: str) -> int:
    """A plain decimal string (at most 10 integer and 8 fractional digits) in 1e-8."""
    if not isinstance(text, str):
        raise _Bad(f"{what} is not a string")
    raw = text.encode()
    m = _DECIMAL.fullmatch(raw)
    if m is None:
        if raw.startswith(b"-"):
            raise _Bad(f"negative {what}")
        frac = raw.partition(b".")[2]
        if frac.isdigit() and len(frac) > 8:
            raise _Bad(f"{what} has more than 8 decimals")
        raise _Bad(f"{what} is not a plain decimal")
    whole, frac = m.group(1), m.group(2) or b""
    return int(whole) * 10**8 + int(frac.ljust(8, b"0"))


def _int(value: Any, what: str) -> int:
    if type(value) is not int or not 0 <= value < I64_LIMIT:
        raise _Bad(f"missing or non-integer {what}")
    return value


def _levels(value: Any, what: str, *, zero_qty: bool) -> list[Level]:
    if not isinstance(value, list):
        raise _Bad(f"{what} is not a list")
    out = []
    for level in value:
        if not isinstance(level, list) or len(level) != 2:
            raise _Bad(f"a {what} level is not a [price, qty] pair")
        price = decimal_units(level[0], "price")
        qty = decimal_units(level[1], "qty")
        if price == 0:
            raise _Bad("zero price")
        if qty == 0 and not zero_qty:
            raise _Bad("zero qty in a snapshot")
        out.append((price, qty))
    return out


def _head(obj: dict) -> tuple[int, int]:
    """(recv_ns, µs per unit of the payload's times)."""
    recv_ns = _int(obj.get("recv_ns"), "recv_ns")
    unit = obj.get("unit", "ms")
    if not isinstance(unit, str) or unit not in US_PER_UNIT:
        raise _Bad("unknown unit")
    return recv_ns, US_PER_UNIT[unit]


def _event(obj: dict, upper: str) -> DepthEvent:
    recv_ns, mult = _head(obj)
    data = obj.get("data")
    if not isinstance(data, dict):
        raise _Bad("data is not an object")
    if data.get(_E) != DEPTH_UPDATE.name:
        raise _Bad("not a depthUpdate event")
    if data.get(_S) != upper:
        raise _Bad("another symbol")
    t = _int(data.get(_E_TIME), "E") * mult
    if t >= MAX_TIME_US:
        raise _Bad("E out of range")
    first, last = _int(data.get(_U_FIRST), "U"), _int(data.get(_U_LAST), "u")
    if first > last:
        raise _Bad("U > u")
    bids = _levels(data.get(_BIDS), "bids", zero_qty=True)
    asks = _levels(data.get(_ASKS), "asks", zero_qty=True)
    return DepthEvent(recv_ns, t, first, last, bids, asks)


def _snapshot(obj: dict) -> DepthSnapshot:
    recv_ns, _ = _head(obj)
    if obj.get("rest") != DEPTH.name:
        raise _Bad("unknown REST kind on the depth stream")
    data = obj.get("data")
    if not isinstance(data, dict):
        raise _Bad("data is not an object")
    last = _int(data.get(_SNAP_ID), "lastUpdateId")
    bids = _levels(data.get(_SNAP_BIDS), "bids", zero_qty=False)
    asks = _levels(data.get(_SNAP_ASKS), "asks", zero_qty=False)
    if any(bids[i][0] <= bids[i + 1][0] for i in range(len(bids) - 1)):
        raise _Bad("bids not best first")
    if any(asks[i][0] >= asks[i + 1][0] for i in range(len(asks) - 1)):
        raise _Bad("asks not best first")
    limit = obj.get("limit")
    if limit is not None and (type(limit) is not int or not 0 < limit < I64_LIMIT):
        raise _Bad("limit is not a positive integer")
    reason = obj.get("reason")
    return DepthSnapshot(recv_ns, last, bids, asks, limit, reason if isinstance(reason, str)
                         else "")  # fmt: skip


def _ticker(obj: dict, upper: str) -> BookTicker:
    recv_ns, _ = _head(obj)
    data = obj.get("data")
    if not isinstance(data, dict) or data.get(_TK_S) != upper:
        raise _Bad("not this symbol's bookTicker")
    u = _int(data.get(_TK_U), "u")
    values = [decimal_units(data.get(k), "price or qty") for k in (_TK_B, _TK_BQ, _TK_A, _TK_AQ)]
    return BookTicker(recv_ns, u, *values)


def read_line(line: bytes, symbol: str) -> Item | None:
    """What ``line`` (without its newline) is for the book of ``symbol`` (upper case)."""
    lower = symbol.lower()
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        obj = None
    if not isinstance(obj, dict):
        if (lower + "@depth").encode() not in line:
            return None
        kind = "depth_snapshot" if b'"rest"' in line else "depth_event"
        return Malformed(kind, "not JSON" if obj is None else "not a JSON object")
    if "session" in obj:
        conn = obj.get("conn")
        return Session(str(obj["session"]), conn if isinstance(conn, str) else None)
    stream = obj.get("stream")
    if not isinstance(stream, str):
        return None
    try:
        if stream == lower + "@depth" or stream.startswith(lower + "@depth@"):
            if "rest" in obj:
                return _snapshot_or_bad(obj)
            return _event(obj, symbol)
        if stream == lower + "@" + BOOK_TICKER.name and "rest" not in obj:
            try:
                return _ticker(obj, symbol)
            except _Bad as exc:
                return Malformed("book_ticker", str(exc))
    except _Bad as exc:
        return Malformed("depth_event", str(exc))
    return None


def _snapshot_or_bad(obj: dict) -> DepthSnapshot | Malformed:
    try:
        return _snapshot(obj)
    except _Bad as exc:
        return Malformed("depth_snapshot", str(exc))
