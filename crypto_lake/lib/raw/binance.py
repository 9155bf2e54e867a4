"""Binance's message map: every field we read or send, by wire key, with our column name.

One :class:`Message` per kind of exchange message: the ``@trade``, ``@aggTrade`` and
``@bookTicker`` stream payloads, the REST ``historicalTrades``, ``aggTrades`` and ``klines``
answer elements, and the ``serverShutdown`` notice. Its fields are listed in the order
Binance writes them; each has the wire key (a klines row is an array: the key is the position),
our column name (the one the trades, quotes and klines tables use where the value is stored)
and its kind:

* ``decimal``: a JSON string holding a plain decimal (``"60000.12000000"``);
* ``int`` and ``bool``: JSON numbers and ``true``/``false``;
* ``string``: any other JSON string;
* ``levels``: a JSON array of ``[price, qty]`` pairs of decimal strings (order book sides);
* ``time``: an integer time since the epoch, in the unit the message was requested in:
  milliseconds by default, microseconds when the stream URL has ``timeUnit=MICROSECOND`` or
  the REST request the header ``X-MBX-TIME-UNIT: MICROSECOND`` (``TIME_UNIT_PARAM``,
  ``TIME_UNIT_HEADER``). Every time field of a message is in that one unit; the collector
  records it as the raw line's ``unit`` ("ms" or "us", see ``crypto_lake.lib.raw.lines``).
  ``@bookTicker`` has no time field at all: its receive time is its only clock. The collector
  asks for the configured ``binance.time_unit`` on its streams and REST repairs alike;
  ``crypto_lake.lib.market.klines`` sends no header, so its klines are in ms.

The collector (ids, times, repair endpoint), both raw readers (the compiled
``crypto_lake.lib.raw.fastparse`` and the SQL of ``crypto_lake.lib.market.tick_staging``),
the raw catalog, the klines reader (``crypto_lake.lib.market.klines``) and the exchange
simulator (frames and REST answers) take keys from here.
The order book: ``@depth@100ms`` (or ``@depth``, every second) diff events and the REST
``depth`` snapshot. Book update ids are one sequence per symbol shared with ``@bookTicker``'s
``u``: a diff event covers ``U`` to ``u`` and the next one starts at ``u + 1``; a snapshot's
``lastUpdateId`` is the last update in it. A level with quantity 0 is removed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

TimeUnit = Literal["ms", "us"]
FieldKind = Literal["decimal", "int", "bool", "string", "time", "levels"]

TIME_UNIT_PARAM = "timeUnit"  # stream URL query parameter
TIME_UNIT_HEADER = "X-MBX-TIME-UNIT"  # REST request header
TIME_UNIT_NAMES: dict[TimeUnit, str] = {"ms": "MILLISECOND", "us": "MICROSECOND"}
US_PER_UNIT: dict[TimeUnit, int] = {"ms": 1000, "us": 1}
_US_TIMES_ABOVE = 10**14  # epoch times in µs are ~1.7e15, in ms ~1.7e12


def time_unit_of(epoch_time: int) -> TimeUnit:
    """The unit of a current epoch time by its size (a message states no unit itself)."""
    return "us" if epoch_time > _US_TIMES_ABOVE else "ms"


@dataclass(frozen=True)
class Field:
    key: str | int  # the JSON key; a klines row's position
    column: str  # our name for it: the trades, quotes or klines column where one stores it
    kind: FieldKind
    note: str = ""

    @property
    def quoted(self) -> bool:
        """Whether the value is written as a JSON string."""
        return self.kind in ("decimal", "string")


@dataclass(frozen=True)
class Message:
    """One kind of Binance message: ``name`` is the stream suffix (``btcusdt@<name>``), the
    REST endpoint (``/api/v3/<name>``) or the event type; ``fields`` in Binance's order."""

    name: str
    transport: Literal["ws", "rest"]
    fields: tuple[Field, ...]

    def field(self, column: str) -> Field:
        for f in self.fields:
            if f.column == column:
                return f
        raise KeyError(f"{self.name} has no field {column!r}")

    def key(self, column: str) -> Any:
        """The wire key (or klines position) of ``column``."""
        return self.field(column).key

    @property
    def keys(self) -> tuple[Any, ...]:
        return tuple(f.key for f in self.fields)

    @property
    def event(self) -> str | None:
        """The constant value of the ``event_type`` field (``e``), if the message has one."""
        return self.name if any(f.column == "event_type" for f in self.fields) else None

    def element(self, **values: Any) -> dict[str, Any] | list[Any]:
        """The message as Binance sends it, from values by column: a dict in wire order, or
        the array of a positional message (klines). Every field must be given."""
        if len(values) != len(self.fields):
            raise TypeError(f"{self.name} has the fields {[f.column for f in self.fields]}")
        if isinstance(self.fields[0].key, int):
            return [values[f.column] for f in self.fields]
        return {f.key: values[f.column] for f in self.fields}  # type: ignore[misc]


def _fields(*specs: tuple[Any, str, FieldKind] | tuple[Any, str, FieldKind, str]) -> tuple:
    return tuple(Field(*spec) for spec in specs)


_EVENT = ("e", "event_type", "string", "the message name, e.g. trade")
_EVENT_TIME = ("E", "event_time", "time", "when the exchange published the message")
_SYMBOL = ("s", "symbol", "string", "upper case")
_PRICE = ("p", "price", "decimal")
_QTY = ("q", "qty", "decimal")
_TRADE_TIME = ("T", "ts_event", "time", "when the trade happened")
_MAKER = ("m", "is_buyer_maker", "bool", "true: the buyer was the maker, the taker sold")
_BEST_MATCH = ("M", "is_best_match", "bool", "always true; ignored")

TRADE = Message("trade", "ws", _fields(
    _EVENT, _EVENT_TIME, _SYMBOL,
    ("t", "trade_id", "int", "consecutive per symbol in practice: a hole means lost messages"),
    _PRICE, _QTY, _TRADE_TIME, _MAKER, _BEST_MATCH,
))  # fmt: skip
AGG_TRADE = Message("aggTrade", "ws", _fields(
    _EVENT, _EVENT_TIME, _SYMBOL,
    ("a", "trade_id", "int", "the aggregate id, consecutive; stored as trade_id"),
    _PRICE, _QTY,
    ("f", "first_trade_id", "int", "-1 (with l = -1, p = q = '0') when invalidated"),
    ("l", "last_trade_id", "int", "trades in the aggregate: l - f + 1"),
    _TRADE_TIME, _MAKER, _BEST_MATCH,
))  # fmt: skip
BOOK_TICKER = Message("bookTicker", "ws", _fields(
    ("u", "update_id", "int", "increases but skips values: for order and dedup, not gaps"),
    _SYMBOL,
    ("b", "bid", "decimal"), ("B", "bid_qty", "decimal"),
    ("a", "ask", "decimal"), ("A", "ask_qty", "decimal"),
))  # fmt: skip
DEPTH_UPDATE = Message("depthUpdate", "ws", _fields(
    _EVENT, _EVENT_TIME, _SYMBOL,
    ("U", "first_update_id", "int", "the first book update id in the event"),
    ("u", "update_id", "int", "the last; the next event's U is u + 1 unless updates were lost"),
    ("b", "bids", "levels", "changed bid levels: the new quantity, 0 = removed"),
    ("a", "asks", "levels", "changed ask levels"),
))  # fmt: skip
DEPTH_STREAM_SUFFIX = {100: "depth@100ms", 1000: "depth"}  # update speed (ms) -> stream name
DEPTH = Message("depth", "rest", _fields(
    ("lastUpdateId", "update_id", "int", "the book's last update id in the snapshot"),
    ("bids", "bids", "levels", "best first"),
    ("asks", "asks", "levels", "best first"),
))  # fmt: skip
# request weight of GET /api/v3/depth by limit: (largest limit, weight)
DEPTH_WEIGHTS = ((100, 5), (500, 25), (1000, 50), (5000, 250))


def depth_weight(limit: int) -> int:
    """The request weight of a depth snapshot of ``limit`` levels per side."""
    for most, weight in DEPTH_WEIGHTS:
        if limit <= most:
            return weight
    raise ValueError(f"depth limit {limit} is above 5000")


SERVER_SHUTDOWN = Message("serverShutdown", "ws", _fields(_EVENT, _EVENT_TIME))

HISTORICAL_TRADES = Message("historicalTrades", "rest", _fields(
    ("id", "trade_id", "int", "the @trade stream's t"),
    ("price", "price", "decimal"), ("qty", "qty", "decimal"),
    ("quoteQty", "quote_qty", "decimal"),
    ("time", "ts_event", "time"),
    ("isBuyerMaker", "is_buyer_maker", "bool"),
    ("isBestMatch", "is_best_match", "bool"),
))  # fmt: skip
AGG_TRADES = Message("aggTrades", "rest", tuple(  # the @aggTrade payload without e, E, s
    f for f in AGG_TRADE.fields if f.column not in ("event_type", "event_time", "symbol")
))  # fmt: skip
KLINES = Message("klines", "rest", _fields(
    (0, "open_time", "time"),
    (1, "open", "decimal"), (2, "high", "decimal"), (3, "low", "decimal"),
    (4, "close", "decimal"), (5, "volume", "decimal", "base asset"),
    (6, "close_time", "time", "the interval's last millisecond (or microsecond)"),
    (7, "quote_volume", "decimal"),
    (8, "trade_count", "int"),
    (9, "taker_buy_base", "decimal"), (10, "taker_buy_quote", "decimal"),
    (11, "unused", "string", "always '0'"),
))  # fmt: skip

STREAMS = {m.name: m for m in (TRADE, AGG_TRADE, BOOK_TICKER)}
TRADE_STREAMS = {m.name: m for m in (TRADE, AGG_TRADE)}
REST = {m.name: m for m in (HISTORICAL_TRADES, AGG_TRADES, KLINES)}
# the REST endpoint that refetches a trade stream's messages by id (``fromId``) after a gap;
# a repaired raw line's ``rest`` field names it, and its ``data`` is that endpoint's element
REPAIR_SOURCE = {TRADE.name: HISTORICAL_TRADES, AGG_TRADE.name: AGG_TRADES}
REPAIR_SOURCES = {m.name: m for m in REPAIR_SOURCE.values()}


def keys_of(column: str, messages: Iterable[Message]) -> list[Any]:
    """The distinct wire keys of ``column`` in ``messages``, first seen first (messages
    without that field are skipped)."""
    out: list[Any] = []
    for m in messages:
        for f in m.fields:
            if f.column == column and f.key not in out:
                out.append(f.key)
    return out


def wire_layout(message: Message) -> list[tuple[str | None, bytes]]:
    """The payload's text as Binance writes it (minified, keys in order), cut at its values:
    (column, the bytes written before its value), then (None, the bytes after the last).

    The event type is a constant and written into the text, so ``trade`` starts with
    ``("event_time", b'{"e":"trade","E":')``; the bytes before a value include the opening
    quote of a string value and the closing quote of the value before."""
    out: list[tuple[str | None, bytes]] = []
    text, quote = b"{", b""
    for i, f in enumerate(message.fields):
        text += quote + (b"," if i else b"") + b'"%s":' % str(f.key).encode()
        quote = b'"' if f.quoted else b""
        if f.column == "event_type":
            text += quote + message.name.encode()
            continue
        out.append((f.column, text + quote))
        text = b""
    out.append((None, quote + b"}"))
    return out
