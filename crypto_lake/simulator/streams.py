"""Parsing and validating the combined-stream URL: ``/stream?streams=a/b&timeUnit=...``."""

from __future__ import annotations

from crypto_lake.lib.core.symbols import InvalidNameError, validate_symbol
from crypto_lake.lib.raw.binance import (
    DEPTH_STREAM_SUFFIX,
    STREAMS,
    TIME_UNIT_NAMES,
    TIME_UNIT_PARAM,
)
from crypto_lake.simulator.wire import Unit

STREAM_KINDS = tuple(STREAMS)  # trade, aggTrade, bookTicker
# with order books (SimConfig.depth_symbols): plus depth@100ms and depth (1000 ms)
DEPTH_STREAM_KINDS = STREAM_KINDS + tuple(DEPTH_STREAM_SUFFIX.values())


class StreamRequestError(ValueError):
    """A stream URL the exchange would reject (HTTP 400 before the upgrade)."""


def parse_stream_name(
    name: str, known_symbols: set[str], kinds: tuple[str, ...] = STREAM_KINDS
) -> str:
    """Validate ``btcusdt@trade``-style names; returns the canonical stream name."""
    sym, sep, kind = name.partition("@")
    if not sep or not sym:
        raise StreamRequestError(f"invalid stream name {name!r}: expected <symbol>@<kind>")
    if sym != sym.lower():
        raise StreamRequestError(f"invalid stream name {name!r}: symbols are lower-case in streams")
    try:
        symbol = validate_symbol(sym.upper())
    except InvalidNameError as exc:
        raise StreamRequestError(str(exc)) from exc
    if kind not in kinds:
        raise StreamRequestError(
            f"unknown stream kind {kind!r} in {name!r}: supported {', '.join(kinds)}"
        )
    if symbol not in known_symbols:
        raise StreamRequestError(f"unknown symbol {symbol!r} in stream {name!r}")
    return f"{sym}@{kind}"


def parse_streams(
    raw: str | None,
    known_symbols: set[str],
    max_streams: int,
    kinds: tuple[str, ...] = STREAM_KINDS,
) -> list[str]:
    """The ``streams`` query parameter as a validated list (order kept, duplicates removed)."""
    if not raw:
        raise StreamRequestError("missing 'streams' parameter, e.g. ?streams=btcusdt@trade")
    names = [n for n in raw.split("/") if n]
    if not names:
        raise StreamRequestError("empty 'streams' parameter")
    if len(names) > max_streams:
        raise StreamRequestError(f"too many streams: {len(names)} > {max_streams}")
    return list(dict.fromkeys(parse_stream_name(n, known_symbols, kinds) for n in names))


def parse_time_unit(raw: str | None) -> Unit:
    """``timeUnit`` query value (or X-MBX-TIME-UNIT header) -> "ms" or "us"."""
    if raw is None:
        return "ms"
    for unit, name in TIME_UNIT_NAMES.items():
        if raw.upper() in (name, name + "S"):
            return unit
    names = " or ".join(TIME_UNIT_NAMES.values())
    raise StreamRequestError(f"invalid {TIME_UNIT_PARAM} {raw!r}: expected {names}")
