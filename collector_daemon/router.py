"""From one received WebSocket message to one raw line in the right file (or quarantine).

Each message is routed by the symbol of its stream name, and only streams the connection
subscribed to are accepted, so nothing an exchange (or an attacker) sends can choose a
path. Trade/aggTrade ids go through the symbol's IdTracker (duplicates dropped, holes
opened), bookTicker update ids through a recent-ids window, diff depth events through the
symbol's DepthTracker (sequence gaps counted, snapshots requested: depth.py). Anything
malformed or unexpected is written to ``raw/_quarantine/`` with the reason and counted;
nothing raises out of here.
"""

from __future__ import annotations

import base64
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from collector_daemon.depth import DepthTracker, Event
from collector_daemon.tracker import IdTracker, RecentIds
from collector_daemon.writer import QUARANTINE, RawWriter
from crypto_lake.lib.core.logs import get_logger
from crypto_lake.lib.raw import binance
from crypto_lake.lib.raw.lines import RawLineError, session_line, ws_line

log = get_logger("collector.router")

TRADE, BOOK, DEPTH = 0, 1, 2
MAX_QUARANTINE_BYTES = 1 << 20
_BOOK_ID = binance.BOOK_TICKER.key("update_id")
_DEPTH_EVENT = binance.DEPTH_UPDATE.event
_DEPTH_COLUMNS = ("event_type", "event_time", "first_update_id", "update_id", "bids", "asks")
_DEPTH_KEYS = tuple(binance.DEPTH_UPDATE.key(c) for c in _DEPTH_COLUMNS)
_EVENT = binance.SERVER_SHUTDOWN.key("event_type")
_SHUTDOWN = binance.SERVER_SHUTDOWN.event


@dataclass
class RouterStats:
    messages: int = 0
    duplicates: int = 0
    quarantined: int = 0
    shutdown_notices: int = 0
    latency_ns: deque[int] = field(default_factory=lambda: deque(maxlen=20_000))
    last_msg_ns: dict[str, int] = field(default_factory=dict)


@dataclass
class ConnState:
    """What the router needs to know about the connection a message came from."""

    conn_id: str
    symbols: list[str]
    streams: dict[str, tuple[str, int]]  # stream name -> (symbol, kind)
    shutdown_notice: bool = False


class Router:
    """Routes messages of every connection (see module docstring)."""

    def __init__(
        self,
        writer: RawWriter,
        *,
        trade_stream: str,
        time_unit: str,
        trackers: dict[str, IdTracker],
        depth: dict[str, DepthTracker] | None = None,
        depth_stream: str = binance.DEPTH_STREAM_SUFFIX[100],
        on_depth_snapshot: Callable[[str], None] | None = None,
    ) -> None:
        """``depth``: the trackers of the symbols whose ``depth_stream`` is recorded;
        ``on_depth_snapshot(symbol)`` is told when one of them wants a snapshot."""
        self.writer = writer
        self.trade_stream = trade_stream
        trade = binance.TRADE_STREAMS[trade_stream]
        self.trade_key = trade.key("trade_id")
        self.event_time_key = trade.key("event_time")
        self.trade_time_key = trade.key("ts_event")
        self.time_unit = time_unit
        self.trackers = trackers
        self.books = {s: RecentIds() for s in trackers}
        self.depth = depth or {}
        self.depth_stream = depth_stream
        self.on_depth_snapshot = on_depth_snapshot
        self.stats = RouterStats()

    def streams_for(self, symbols: list[str]) -> dict[str, tuple[str, int]]:
        out: dict[str, tuple[str, int]] = {}
        for s in symbols:
            out[f"{s.lower()}@{self.trade_stream}"] = (s, TRADE)
            out[f"{s.lower()}@{binance.BOOK_TICKER.name}"] = (s, BOOK)
            if s in self.depth:
                out[f"{s.lower()}@{self.depth_stream}"] = (s, DEPTH)
        return out

    def mark_reconnect(self, symbols: list[str]) -> None:
        """A connection was lost: a hole before the next trade is named 'reconnect', and the
        next depth event asks for a 'reconnect' snapshot."""
        for s in symbols:
            self.trackers[s].cause_hint = "reconnect"
            if s in self.depth:
                self.depth[s].reconnected()

    # session records -------------------------------------------------------------------------
    def session(self, conn_id: str, symbols: list[str], event: str, **fields: object) -> None:
        """Write a session record into the current file of every symbol of a connection."""
        recv_ns = time.time_ns()
        line = session_line(recv_ns, conn_id, event, **fields)
        for s in symbols:
            self.writer.write(s, recv_ns, line)

    def quarantine(self, conn_id: str, recv_ns: int, msg: bytes, reason: str) -> None:
        self.stats.quarantined += 1
        record: dict[str, object] = {"recv_ns": recv_ns, "conn": conn_id, "reason": reason}
        body = msg[:MAX_QUARANTINE_BYTES]
        try:
            record["raw"] = body.decode("utf-8")
        except UnicodeDecodeError:
            record["raw_b64"] = base64.b64encode(body).decode()
        if len(msg) > MAX_QUARANTINE_BYTES:
            record["truncated_from"] = len(msg)
        self.writer.write(QUARANTINE, recv_ns, orjson.dumps(record) + b"\n")
        if self.stats.quarantined <= 10 or self.stats.quarantined % 1000 == 0:
            log.warning(
                "quarantined message #%d from %s: %s", self.stats.quarantined, conn_id, reason
            )

    # the hot path ----------------------------------------------------------------------------
    def on_message(self, conn: ConnState, msg: bytes | str) -> None:
        recv_ns = time.time_ns()
        if isinstance(msg, str):
            msg = msg.encode("utf-8", "surrogateescape")
        try:
            obj = orjson.loads(msg)
        except orjson.JSONDecodeError:
            self.quarantine(conn.conn_id, recv_ns, msg, "invalid JSON")
            return
        if type(obj) is not dict:
            self.quarantine(conn.conn_id, recv_ns, msg, "not a JSON object")
            return
        stream = obj.get("stream")
        data = obj.get("data")
        info = conn.streams.get(stream) if type(stream) is str else None
        if info is None or type(data) is not dict:
            self._unexpected(conn, recv_ns, msg, obj, data)
            return
        symbol, kind = info
        if kind == TRADE:
            ident = data.get(self.trade_key)
            event_time = data.get(self.event_time_key)
            if type(ident) is not int or type(event_time) is not int:
                self.quarantine(conn.conn_id, recv_ns, msg, "trade without integer id/time")
                return
            trade_time = data.get(self.trade_time_key)
            if not self.trackers[symbol].accept(ident, time.monotonic(), trade_time):
                self.stats.duplicates += 1
                return
            unit = binance.time_unit_of(event_time)
            self.stats.latency_ns.append(
                recv_ns - event_time * (1_000 if unit == "us" else 1_000_000)
            )
        elif kind == BOOK:
            ident = data.get(_BOOK_ID)
            if type(ident) is not int:
                reason = f"bookTicker without integer {_BOOK_ID}"
                self.quarantine(conn.conn_id, recv_ns, msg, reason)
                return
            if not self.books[symbol].accept(ident):
                self.stats.duplicates += 1
                return
            unit = self.time_unit  # bookTicker has no time field: the requested unit
        else:
            unit = self._depth_event(conn, symbol, recv_ns, msg, data)  # type: ignore[assignment]
            if unit is None:
                return
        try:
            line = ws_line(recv_ns, conn.conn_id, unit, msg)  # type: ignore[arg-type]
        except RawLineError as exc:
            self.quarantine(conn.conn_id, recv_ns, msg, str(exc))
            return
        self.writer.write(symbol, recv_ns, line)
        self.stats.messages += 1
        self.stats.last_msg_ns[symbol] = recv_ns

    def _depth_event(
        self, conn: ConnState, symbol: str, recv_ns: int, msg: bytes, data: dict
    ) -> str | None:
        """Check a diff depth event and track its sequence; its time unit when it is to be
        written, None when it was quarantined or dropped as a duplicate."""
        e, event_time, first, last, bids, asks = (data.get(k) for k in _DEPTH_KEYS)
        if (e != _DEPTH_EVENT or type(first) is not int or type(last) is not int
                or first > last or type(bids) is not list or type(asks) is not list):  # fmt: skip
            reason = "depthUpdate without integer U <= u and b/a lists"
            self.quarantine(conn.conn_id, recv_ns, msg, reason)
            return None
        tracker = self.depth[symbol]
        wanted = tracker.wanted
        verdict = tracker.accept(first, last)
        if verdict is Event.DUPLICATE:
            self.stats.duplicates += 1
            return None
        if verdict is Event.GAP:
            after = tracker.gap_after or 0
            log.warning("%s depth gap: U=%d after u=%d (%d updates lost); snapshot requested",
                        symbol, first, after, first - after - 1)  # fmt: skip
        if tracker.wanted != wanted and self.on_depth_snapshot is not None:
            self.on_depth_snapshot(symbol)
        if type(event_time) is int:
            return binance.time_unit_of(event_time)
        return self.time_unit

    def _unexpected(
        self, conn: ConnState, recv_ns: int, msg: bytes, obj: dict, data: object
    ) -> None:
        notice = obj if obj.get(_EVENT) == _SHUTDOWN else None
        if notice is None and isinstance(data, dict) and data.get(_EVENT) == _SHUTDOWN:
            notice = data
        if notice is not None:
            # Not market data: recorded as a session event in every file of the connection;
            # the connection supervisor starts a make-before-break replacement.
            self.stats.shutdown_notices += 1
            conn.shutdown_notice = True
            self.session(conn.conn_id, conn.symbols, "server_shutdown", notice=obj)
            log.warning("server shutdown notice on %s", conn.conn_id)
            return
        reason = "unknown stream" if isinstance(obj.get("stream"), str) else "no stream name"
        if isinstance(obj.get("stream"), str) and obj["stream"] in conn.streams:
            reason = "data is not an object"
        self.quarantine(conn.conn_id, recv_ns, msg, reason)
