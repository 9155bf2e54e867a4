"""Binance's exact wire format: combined-stream frames and REST JSON shapes.

Frames are formatted as bytes directly (not via a dict) because this is the hot path and the
key order must match Binance's to the byte: ``{"stream":..,"data":{"e":..,"E":..,...}}``. The
formats are built from the Binance map (``crypto_lake.lib.raw.binance``).
"""

from __future__ import annotations

import orjson

from crypto_lake.lib.raw import binance
from crypto_lake.lib.raw.binance import TimeUnit as Unit
from crypto_lake.simulator.market import Event

_BOOL = {True: b"true", False: b"false"}


def to_unit(time_us: int, unit: Unit) -> int:
    return time_us if unit == "us" else time_us // 1000


def render(ev: Event, unit: Unit) -> bytes:
    """The combined-stream JSON text of ``ev`` with times in ``unit`` (not cached)."""
    return _RENDERERS[ev.kind](ev, unit)


def ws_text_frame(payload: bytes) -> bytes:
    """``payload`` as one unmasked, uncompressed WebSocket text frame (RFC 6455, server side).

    The simulator writes pre-framed batches straight to the transport: one write per batch
    instead of one coroutine per message is what lets one connection carry >20k msgs/s.
    """
    n = len(payload)
    if n < 126:
        return b"\x81" + bytes((n,)) + payload
    if n < 65536:
        return b"\x81\x7e" + n.to_bytes(2, "big") + payload
    return b"\x81\x7f" + n.to_bytes(8, "big") + payload


def framed_ms(ev: Event) -> bytes:
    """The event's WebSocket frame with millisecond times (cached on the event)."""
    frame = ev.wire_ms
    if frame is None:
        frame = ev.wire_ms = ws_text_frame(_RENDERERS[ev.kind](ev, "ms"))
    return frame


def framed_us(ev: Event) -> bytes:
    """The event's WebSocket frame with microsecond times (cached on the event)."""
    frame = ev.wire_us
    if frame is None:
        frame = ev.wire_us = ws_text_frame(_RENDERERS[ev.kind](ev, "us"))
    return frame


def _ascii(name: str, _cache: dict[str, bytes] = {}) -> bytes:  # noqa: B006 (a cache)
    b = _cache.get(name)
    if b is None:
        b = _cache[name] = name.encode()
    return b


def _frame_format(message: binance.Message, columns: tuple[str, ...]) -> bytes:
    """A bytes %-format of the combined-stream frame of ``message``, from the Binance map, for
    the stream name and then the values of ``columns`` (which must be the map's order after the
    event type): ``%d`` for numbers and times, ``%s`` for the bytes of strings, decimals and
    booleans."""
    layout = binance.wire_layout(message)
    if tuple(column for column, _ in layout[:-1]) != columns:
        raise ImportError(f"the {message.name} frame has the values {layout}")
    text = b'{"stream":"%s","data":'
    for column, before in layout:
        text += before.replace(b"%", b"%%")
        if column is not None:
            text += b"%d" if message.field(column).kind in ("int", "time") else b"%s"
    return text + b"}"


_TRADE = _frame_format(binance.TRADE, (
    "event_time", "symbol", "trade_id", "price", "qty", "ts_event", "is_buyer_maker",
    "is_best_match",
))  # fmt: skip
_AGG_TRADE = _frame_format(binance.AGG_TRADE, (
    "event_time", "symbol", "trade_id", "price", "qty", "first_trade_id", "last_trade_id",
    "ts_event", "is_buyer_maker", "is_best_match",
))  # fmt: skip
_BOOK_TICKER = _frame_format(binance.BOOK_TICKER, (
    "update_id", "symbol", "bid", "bid_qty", "ask", "ask_qty",
))  # fmt: skip
_DEPTH_UPDATE = _frame_format(binance.DEPTH_UPDATE, (
    "event_time", "symbol", "first_update_id", "update_id", "bids", "asks",
))  # fmt: skip


def _trade(ev: Event, unit: Unit) -> bytes:
    return _TRADE % (
        _ascii(ev.stream), to_unit(ev.event_us, unit), _ascii(ev.symbol), ev.ident,
        ev.price, ev.qty, to_unit(ev.time_us, unit), _BOOL[ev.maker], b"true",
    )  # fmt: skip


def _agg_trade(ev: Event, unit: Unit) -> bytes:
    return _AGG_TRADE % (
        _ascii(ev.stream), to_unit(ev.event_us, unit), _ascii(ev.symbol), ev.ident,
        ev.price, ev.qty, ev.first_id, ev.last_id, to_unit(ev.time_us, unit), _BOOL[ev.maker],
        b"true",
    )  # fmt: skip


def _book_ticker(ev: Event, unit: Unit) -> bytes:
    # bookTicker carries no event time on Binance spot: the unit does not change the frame.
    return _BOOK_TICKER % (
        _ascii(ev.stream), ev.ident, _ascii(ev.symbol), ev.bid, ev.bid_qty, ev.ask, ev.ask_qty,
    )  # fmt: skip


def _depth_update(ev: Event, unit: Unit) -> bytes:
    return _DEPTH_UPDATE % (
        _ascii(ev.stream), to_unit(ev.event_us, unit), _ascii(ev.symbol), ev.first_id, ev.ident,
        ev.bids, ev.asks,
    )  # fmt: skip


_RENDERERS = {
    binance.TRADE.name: _trade,
    binance.AGG_TRADE.name: _agg_trade,
    binance.BOOK_TICKER.name: _book_ticker,
    binance.DEPTH_UPDATE.name: _depth_update,
}


def server_shutdown_frame(now_us: int, unit: Unit) -> bytes:
    """Binance's notice that this connection will be closed soon."""
    shutdown = binance.SERVER_SHUTDOWN
    return orjson.dumps(
        shutdown.element(event_type=shutdown.event, event_time=to_unit(now_us, unit))
    )


def malformed_copy(frame: bytes) -> bytes:
    """A frame cut in the middle: not valid JSON, like a corrupted or truncated message."""
    return frame[: max(1, len(frame) // 2)]


def rest_error(code: int, msg: str) -> bytes:
    """Binance's REST error body, e.g. {"code": -1121, "msg": "Invalid symbol."}."""
    return orjson.dumps({"code": code, "msg": msg})
