"""Binance's exact wire format: combined-stream frames and REST JSON shapes.

Frames are formatted as bytes directly (not via a dict) because this is the hot path and the
key order must match Binance's to the byte: ``{"stream":..,"data":{"e":..,"E":..,...}}``.
"""

from __future__ import annotations

from typing import Literal

import orjson

from crypto_lake.simulator.market import Event

Unit = Literal["ms", "us"]
_BOOL = {True: b"true", False: b"false"}


def to_unit(time_us: int, unit: Unit) -> int:
    return time_us if unit == "us" else time_us // 1000


def render(ev: Event, unit: Unit) -> bytes:
    """The combined-stream frame of ``ev`` with times in ``unit`` (cached on the event)."""
    frame = ev.frames.get(unit)
    if frame is None:
        frame = ev.frames[unit] = _RENDERERS[ev.kind](ev, unit)
    return frame


def _trade(ev: Event, unit: Unit) -> bytes:
    return b'{"stream":"%s","data":{"e":"trade","E":%d,"s":"%s","t":%d,"p":"%s","q":"%s","T":%d,"m":%s,"M":true}}' % (  # noqa: E501
        ev.stream.encode(), to_unit(ev.event_us, unit), ev.symbol.encode(), ev.ident,
        ev.price.encode(), ev.qty.encode(), to_unit(ev.time_us, unit), _BOOL[ev.maker],
    )  # fmt: skip


def _agg_trade(ev: Event, unit: Unit) -> bytes:
    return b'{"stream":"%s","data":{"e":"aggTrade","E":%d,"s":"%s","a":%d,"p":"%s","q":"%s","f":%d,"l":%d,"T":%d,"m":%s,"M":true}}' % (  # noqa: E501
        ev.stream.encode(), to_unit(ev.event_us, unit), ev.symbol.encode(), ev.ident,
        ev.price.encode(), ev.qty.encode(), ev.first_id, ev.last_id,
        to_unit(ev.time_us, unit), _BOOL[ev.maker],
    )  # fmt: skip


def _book_ticker(ev: Event, unit: Unit) -> bytes:
    # bookTicker carries no event time on Binance spot: the unit does not change the frame.
    return b'{"stream":"%s","data":{"u":%d,"s":"%s","b":"%s","B":"%s","a":"%s","A":"%s"}}' % (
        ev.stream.encode(), ev.ident, ev.symbol.encode(), ev.bid.encode(),
        ev.bid_qty.encode(), ev.ask.encode(), ev.ask_qty.encode(),
    )  # fmt: skip


_RENDERERS = {"trade": _trade, "aggTrade": _agg_trade, "bookTicker": _book_ticker}


def server_shutdown_frame(now_us: int, unit: Unit) -> bytes:
    """Binance's notice that this connection will be closed soon."""
    return orjson.dumps({"e": "serverShutdown", "E": to_unit(now_us, unit)})


def malformed_copy(frame: bytes) -> bytes:
    """A frame cut in the middle: not valid JSON, like a corrupted or truncated message."""
    return frame[: max(1, len(frame) // 2)]


def rest_error(code: int, msg: str) -> bytes:
    """Binance's REST error body, e.g. {"code": -1121, "msg": "Invalid symbol."}."""
    return orjson.dumps({"code": code, "msg": msg})
