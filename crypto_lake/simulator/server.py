"""ExchangeSimulator: one aiohttp server on one port for /stream (WebSocket), /api/v3 (REST)
and /data/spot/... (Binance's public files, public_files.py)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import date
from itertools import count

from aiohttp import web

from crypto_lake.lib.core.logs import get_logger
from crypto_lake.lib.raw.binance import TIME_UNIT_PARAM
from crypto_lake.simulator.book import OrderBook
from crypto_lake.simulator.config import SimConfig
from crypto_lake.simulator.connection import Connection
from crypto_lake.simulator.faults import Faults
from crypto_lake.simulator.history import day_of_us
from crypto_lake.simulator.ledger import TradeSource
from crypto_lake.simulator.limits import RateLimiter
from crypto_lake.simulator.market import Event, MarketModel
from crypto_lake.simulator.public_files import PublicFiles
from crypto_lake.simulator.rest import RestApi
from crypto_lake.simulator.sentlog import SentLog
from crypto_lake.simulator.streams import (
    DEPTH_STREAM_KINDS,
    STREAM_KINDS,
    StreamRequestError,
    parse_streams,
    parse_time_unit,
)
from crypto_lake.simulator.wire import rest_error

log = get_logger("simulator")
TRIM_EVERY_S = 10.0  # how often old ground truth is forgotten when history_s is set


class ExchangeSimulator:
    """A loopback Binance: combined streams, REST, fault knobs and a log of what it sent."""

    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.faults = Faults()
        self.faults._bind(self, None)
        self.sent = SentLog(cfg.record_sent_ids)
        self.market = MarketModel(cfg.symbols, cfg.seed, time.time_ns() // 1000, cfg.rate_scale)
        if cfg.depth_symbols:
            self.market.add_books(cfg.depth_symbols, cfg.depth_levels, cfg.depth_changes_per_s)
        # Depth streams exist once there are books (a symbol without one has a quiet stream),
        # and in a replay, which sends the file's recorded diff events.
        has_depth = bool(cfg.depth_symbols) or cfg.replay_path is not None
        self.stream_kinds = DEPTH_STREAM_KINDS if has_depth else STREAM_KINDS
        self.connections: dict[int, Connection] = {}
        self._ids = count(1)
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task] = []
        self.host = ""
        self.port = 0
        self.connections_total = 0
        self.connections_refused = 0
        self._paused_at_us: int | None = None
        self.live_start_us = time.time_ns() // 1000  # set again when the market starts
        self.public_files = PublicFiles(
            self._public_source, self.first_day, lambda: self.live_start_us,
            cfg.public_files_include_today, self.faults,
        )  # fmt: skip
        self.replay_finished = asyncio.Event()  # set when a replay file has been fully sent
        self.stream_symbols = set(cfg.symbols)
        if cfg.replay_path is not None:
            from crypto_lake.simulator.replay import replay_symbols

            self.stream_symbols |= set(replay_symbols(cfg.replay_path))

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        loop = asyncio.get_running_loop()
        self.faults._bind(self, loop)
        rest = RestApi(self.market, RateLimiter(self.cfg.rest_weight_limit, self.faults))
        app = web.Application()
        app.add_routes(
            [web.get("/stream", self._handle_stream), *rest.routes(), *self.public_files.routes()]
        )
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True)
        await site.start()
        self.host, self.port = self._runner.addresses[0][:2]
        if self.cfg.replay_path is not None:
            from crypto_lake.simulator.replay import replay_file

            self._tasks.append(asyncio.create_task(replay_file(self, self.cfg)))
        else:
            # Restart the model clock now so the first events are not a backlog since __init__.
            now_us = time.time_ns() // 1000
            self.market.restart_clock(now_us)
            self.live_start_us = now_us
            if self.cfg.history_days:
                self.market.add_history(self.cfg.history_days, self.cfg.history_rate_scale)
            if self._paused_at_us is not None:  # paused before start: trading begins on resume
                self._paused_at_us = now_us
            self._tasks.append(asyncio.create_task(self._market_loop()))
        log.info("simulator listening on %s (REST %s)", self.ws_url, self.rest_url)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        await asyncio.gather(
            *(c.close(1001, "server stopping") for c in list(self.connections.values())),
            return_exceptions=True,
        )
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> ExchangeSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def trades(self, symbol: str) -> list[dict]:
        """Ground truth: every live trade of ``symbol``, including ones skipped on sockets."""
        return self.market.ledger(symbol).trade_dicts()

    def order_book(self, symbol: str) -> OrderBook:
        """Ground truth of ``symbol``'s order book (``at_update``, ``at_second_end``, ``view``);
        its methods are safe to call from any thread."""
        book = self.market.symbols[symbol].book if symbol in self.market.symbols else None
        if book is None:
            raise ValueError(f"symbol {symbol!r} has no simulated order book (depth_symbols)")
        return book

    def tape(self, symbol: str) -> TradeSource:
        """Everything REST and the public files answer from: history (if any), then live."""
        return self.market.source(symbol)

    def first_day(self) -> date:
        """The first UTC day with data: the history's first, else the live start's."""
        tapes = self.market.tapes
        if tapes:
            return next(iter(tapes.values())).history.first_day
        return day_of_us(self.live_start_us)

    def _public_source(self, symbol: str) -> TradeSource | None:
        return self.market.source(symbol) if symbol in self.market.symbols else None

    # -- market -----------------------------------------------------------------------------
    async def _market_loop(self) -> None:
        interval = self.cfg.tick_interval_s
        history_us = None if self.cfg.history_s is None else int(self.cfg.history_s * 1e6)
        book_s = self.cfg.depth_retention_s if self.market.books() else None
        book_us = None if book_s is None else int(book_s * 1e6)
        next_trim = time.monotonic() + TRIM_EVERY_S
        while True:
            if self._paused_at_us is None:
                events = self.market.advance(time.time_ns() // 1000)
                if events:
                    self.publish(events)
            if (history_us is not None or book_us is not None) and time.monotonic() >= next_trim:
                next_trim = time.monotonic() + TRIM_EVERY_S
                now_us = time.time_ns() // 1000
                if history_us is not None:
                    self.market.trim_before(_retention_cutoff(now_us, history_us))
                if book_us is not None:
                    for book in self.market.books().values():
                        book.trim_before(now_us - book_us)
            await asyncio.sleep(interval)

    def pause_market(self) -> None:
        """Stop trading (like exchange maintenance): no new trades or quotes until resumed.

        Connections stay open. Thread-safe; REST answers stay valid and complete.
        """
        self.faults._run(self._pause)

    def resume_market(self) -> None:
        """Resume trading; the paused time is skipped, so no backlog of events is produced."""
        self.faults._run(self._resume)

    def _pause(self) -> None:
        if self._paused_at_us is None:
            now_us = time.time_ns() // 1000
            if self._tasks:  # running: publish what happened up to now, then freeze
                events = self.market.advance(now_us) + self.market.close_depth_windows(now_us)
                if events:
                    self.publish(events)
            self._paused_at_us = now_us

    def _resume(self) -> None:
        if self._paused_at_us is not None:
            self.market.shift_clock(time.time_ns() // 1000 - self._paused_at_us)
            self._paused_at_us = None

    def publish(self, events: list[Event]) -> None:
        """Hand freshly published events to every open connection."""
        for conn in list(self.connections.values()):
            conn.push(events)

    # -- websocket --------------------------------------------------------------------------
    async def _handle_stream(self, request: web.Request) -> web.StreamResponse:
        if self.faults.refuse_connections:
            self.connections_refused += 1
            return web.Response(status=503, text="Service Unavailable (refused by fault knob)")
        try:
            streams = parse_streams(
                request.query.get("streams"), self.stream_symbols, self.cfg.max_streams,
                self.stream_kinds,
            )  # fmt: skip
            unit = parse_time_unit(request.query.get(TIME_UNIT_PARAM))
        except StreamRequestError as exc:
            return web.Response(
                status=400, body=rest_error(-1121, str(exc)), content_type="application/json"
            )
        ws = web.WebSocketResponse(autoping=False, compress=False, max_msg_size=1 << 16)
        try:
            await ws.prepare(request)
        except ConnectionError:  # the client went away during the handshake
            return ws
        conn = Connection(
            next(self._ids), ws, request, streams, unit, self.cfg, self.faults, self.sent
        )
        self.connections[conn.id] = conn
        self.connections_total += 1
        log.info("conn %d opened: %d streams, unit %s", conn.id, len(streams), unit)
        tasks = [asyncio.create_task(conn.write_loop()), asyncio.create_task(conn.clock_loop())]
        try:
            await conn.read_loop()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            conn.closing = True
            self.connections.pop(conn.id, None)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            log.info("conn %d closed", conn.id)
        return ws

    # -- fault targets (called on the loop by Faults) ---------------------------------------
    def _skip_trades(self, symbol: str, n: int) -> None:
        if symbol not in self.market.symbols:
            raise ValueError(f"symbol {symbol!r} is not simulated")
        self.market.symbols[symbol].skip_remaining += n

    def _depth_drop(self, symbol: str, n: int) -> None:
        book = self.order_book(symbol)
        with book.lock:
            for w in book.windows:
                w.drop_left += n

    def _depth_reorder(self, symbol: str) -> None:
        book = self.order_book(symbol)
        with book.lock:
            for w in book.windows:
                w.reorder = True

    def _depth_stale(self, symbol: str, n: int, age_s: float) -> None:
        book = self.order_book(symbol)
        with book.lock:
            book.stale_left += n
            book.stale_age_us = int(age_s * 1e6)

    def _drop_all(self) -> None:
        for conn in list(self.connections.values()):
            conn.abort()

    def _stall_all(self, seconds: float) -> None:
        until = time.monotonic() + seconds
        for conn in list(self.connections.values()):
            conn.stalled_until = until


def _retention_cutoff(now_us: int, history_us: int) -> int:
    """Oldest time to keep, aligned down so every kline after it stays complete.

    Aligned to the day when a day or more is kept (1d klines stay exact), else to the hour
    or the minute.
    """
    align = next(a for a in (86_400, 3_600, 60, 1) if history_us >= a * 1_000_000) * 1_000_000
    cutoff = now_us - history_us
    return cutoff - cutoff % align
