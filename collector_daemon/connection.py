"""One group of streams on one WebSocket connection at a time, kept alive forever.

A ``StreamGroup`` owns the streams of some symbols (as many as fit in one connection) and:

* reconnects after every failure with capped exponential backoff and full jitter;
* answers server pings (aiohttp's autoping does that) and treats a connection that has
  been silent for ``silence_timeout`` seconds as dead;
* replaces its connection make-before-break when it reaches ``max_age`` (Binance cuts at
  24 h) or the server announced a shutdown: the new connection is opened first, both run
  side by side for a moment (the router drops the duplicates), then the old one is closed;
* writes session records (connect, subscribed, disconnect with reason, replaced) into the
  files of all its symbols, so each file tells an outage from a quiet market;
* tells the heartbeat and the metrics whether it is connected right now (``connected``),
  since when (``up_since_ns``) or since when not (``down_since_ns``).

The WebSocket client is aiohttp's (also our REST client): its C frame reader receives about
three times more messages per second than the ``websockets`` library on this hardware
(bench/bench_collector.py measures the ceiling), which is what lets one process take 13
busy symbols with a wide margin.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass

import aiohttp
from aiohttp import WSMsgType

from collector_daemon.router import ConnState, Router
from crypto_lake.lib.core.logs import get_logger

log = get_logger("collector.connection")

TICK = 0.1  # supervisor poll interval, s
OVERLAP = 1.0  # both connections stay open this long during a replacement, s
OPEN_TIMEOUT = 10.0
YIELD_EVERY = 256  # messages read back to back before other tasks get a turn


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Full jitter: uniform(0, min(cap, base * 2**attempt))."""
    return rng.uniform(0.0, min(cap, base * (2 ** min(attempt, 30))))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        return f"server rejected the WebSocket connection: HTTP {exc.status}"
    return str(exc) or type(exc).__name__


def _close_reason(ws: aiohttp.ClientWebSocketResponse, msg: aiohttp.WSMessage) -> str:
    if msg.type == WSMsgType.ERROR:
        return f"connection error: {ws.exception() or msg.data!r}"
    if ws.close_code in (None, 1006):
        return "connection lost (no close frame)"
    extra = f", {msg.extra}" if msg.type == WSMsgType.CLOSE and msg.extra else ""
    return f"closed by server (code {ws.close_code}{extra})"


@dataclass
class GroupSettings:
    silence_timeout: float
    max_age: float
    backoff_base: float
    backoff_cap: float


class _Conn:
    """A live socket plus its reader task."""

    def __init__(
        self, state: ConnState, ws: aiohttp.ClientWebSocketResponse, session: aiohttp.ClientSession
    ) -> None:
        self.state = state
        self.ws = ws
        self.session = session
        self.opened = time.monotonic()
        self.last_msg = self.opened
        self.live = asyncio.Event()
        self.reason = "closed"
        self.close_reason: str | None = None  # set when we close it on purpose
        self.task: asyncio.Task[None] | None = None


class StreamGroup:
    """See module docstring."""

    def __init__(
        self,
        index: int,
        symbols: list[str],
        url: str,
        router: Router,
        settings: GroupSettings,
        conn_prefix: str,
        rng: random.Random | None = None,
        *,
        started_ns: int | None = None,
    ) -> None:
        self.index = index
        self.symbols = symbols
        self.url = url
        self.router = router
        self.settings = settings
        self.streams = router.streams_for(symbols)
        self.conn_prefix = conn_prefix
        self.rng = rng or random.Random()
        self.reconnects = 0
        self.replacements = 0
        self.connect_failures = 0
        self.reconnect_seconds: list[float] = []
        self.backoff_delays: list[float] = []
        self.current: _Conn | None = None
        self.up_since_ns: int | None = None  # when the current unbroken connected stretch began
        # when the group last lost its connection; before the first one: the process start
        self.down_since_ns: int | None = started_ns or time.time_ns()
        self._seq = 0

    @property
    def connected(self) -> bool:
        """True while a connection of this group is open (its reader still running)."""
        conn = self.current
        return conn is not None and conn.task is not None and not conn.task.done()

    # connecting ------------------------------------------------------------------------------
    async def _connect(self) -> _Conn | None:
        self._seq += 1
        conn_id = f"{self.conn_prefix}-{self.index}.{self._seq}"
        session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, connect=OPEN_TIMEOUT)
        )
        try:
            ws = await session.ws_connect(
                self.url,
                autoping=True,  # answers the server's pings with the same payload
                heartbeat=None,  # the silence watchdog covers dead connections
                compress=0,
                max_msg_size=1 << 22,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=1.0),
            )
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            await session.close()
            self.connect_failures += 1
            log.warning("connect %s failed: %s", conn_id, _describe(exc))
            return None
        state = ConnState(conn_id, self.symbols, self.streams)
        conn = _Conn(state, ws, session)
        self.router.session(conn_id, self.symbols, "connect", url=self.url)
        log.info("%s connected (%d streams)", conn_id, len(self.streams))
        conn.task = asyncio.get_running_loop().create_task(self._read(conn))
        return conn

    async def _read(self, conn: _Conn) -> None:
        on_message = self.router.on_message
        state = conn.state
        receive = conn.ws.receive
        data_types = (WSMsgType.TEXT, WSMsgType.BINARY)
        try:
            msg = await receive()
            if msg.type in data_types:
                conn.last_msg = time.monotonic()
                conn.live.set()
                self.router.session(
                    state.conn_id, self.symbols, "subscribed", streams=sorted(self.streams)
                )
                on_message(state, msg.data)
                n = 0
                while True:
                    msg = await receive()
                    if msg.type not in data_types:
                        break
                    conn.last_msg = time.monotonic()
                    on_message(state, msg.data)
                    n += 1
                    if n % YIELD_EVERY == 0:
                        # receive() does not suspend while frames are buffered: let the
                        # flush/fsync/rotation timers run even under a firehose.
                        await asyncio.sleep(0)
            conn.reason = _close_reason(conn.ws, msg)
        except asyncio.CancelledError:
            conn.reason = "collector stopping"
            raise
        except Exception as exc:  # a bug or OS error must not kill the group
            conn.reason = f"error: {exc!r}"
            log.exception("reader of %s failed", state.conn_id)
        finally:
            reason = conn.close_reason or conn.reason
            event = "replaced" if conn.close_reason == "replaced" else "disconnect"
            self.router.session(state.conn_id, self.symbols, event, reason=reason)
            if event == "disconnect":
                self.router.mark_reconnect(self.symbols)
                if conn is self.current and self.down_since_ns is None:
                    self.down_since_ns = time.time_ns()
            log.info("%s %s: %s", state.conn_id, event, reason)
            with contextlib.suppress(Exception):
                await asyncio.shield(self._abort(conn))

    @staticmethod
    async def _abort(conn: _Conn) -> None:
        """Close the socket: a close frame if the peer still answers, else just drop it."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.ws.close(), timeout=1.0)
        with contextlib.suppress(Exception):
            await conn.session.close()

    async def _close(self, conn: _Conn, why: str) -> None:
        conn.close_reason = why
        await self._abort(conn)
        if conn.task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(conn.task), timeout=2.0)
            if not conn.task.done():
                conn.task.cancel()

    # supervising -----------------------------------------------------------------------------
    async def run(self) -> None:
        """Forever: connect, supervise, back off after a failure; cancel to stop."""
        attempt = 0
        down_since: float | None = None
        try:
            while True:
                conn = await self._connect()
                if conn is None:
                    delay = backoff_delay(
                        attempt, self.settings.backoff_base, self.settings.backoff_cap, self.rng
                    )
                    self.backoff_delays.append(delay)
                    attempt += 1
                    down_since = down_since or time.monotonic()
                    await asyncio.sleep(delay)
                    continue
                self.current = conn
                self.up_since_ns, self.down_since_ns = time.time_ns(), None
                await self._supervise(conn, down_since)
                if self.down_since_ns is None:
                    self.down_since_ns = time.time_ns()
                self.reconnects += 1
                down_since = time.monotonic()
                if self.current is not None and self.current.live.is_set():
                    attempt = 0  # it worked for a while: start the backoff again from base
                delay = backoff_delay(
                    attempt, self.settings.backoff_base, self.settings.backoff_cap, self.rng
                )
                self.backoff_delays.append(delay)
                attempt += 1
                await asyncio.sleep(delay)
        finally:
            if self.current is not None:
                await self._close(self.current, "collector stopping")

    async def _supervise(self, conn: _Conn, down_since: float | None) -> None:
        """Until the current connection dies: watchdog, replacement; returns on death."""
        next_replace_try = 0.0
        replace_attempt = 0
        while True:
            assert conn.task is not None
            done, _ = await asyncio.wait({conn.task}, timeout=TICK)
            if done:
                return
            now = time.monotonic()
            if down_since is not None and conn.live.is_set():
                self.reconnect_seconds.append(now - down_since)
                down_since = None
            if now - conn.last_msg > self.settings.silence_timeout:
                log.warning(
                    "%s silent for %.1f s: reconnecting", conn.state.conn_id, now - conn.last_msg
                )
                await self._close(conn, f"silent for {now - conn.last_msg:.1f} s")
                return
            due = now - conn.opened >= self.settings.max_age or conn.state.shutdown_notice
            if due and now >= next_replace_try:
                new = await self._replace(conn)
                if new is None:
                    replace_attempt += 1
                    next_replace_try = now + backoff_delay(
                        replace_attempt,
                        self.settings.backoff_base,
                        self.settings.backoff_cap,
                        self.rng,
                    )
                    continue
                conn, replace_attempt = new, 0
                self.current = conn

    async def _replace(self, old: _Conn) -> _Conn | None:
        """Make-before-break: open a new connection, let it overlap, close the old one."""
        why = "server shutdown notice" if old.state.shutdown_notice else "max connection age"
        log.info("replacing %s (%s)", old.state.conn_id, why)
        new = await self._connect()
        if new is None:
            return None
        assert new.task is not None and old.task is not None
        live = asyncio.ensure_future(new.live.wait())
        await asyncio.wait(
            {live, new.task}, timeout=OPEN_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
        )
        live.cancel()
        if not new.live.is_set():
            await self._close(new, "replacement never received data")
            return None
        await asyncio.sleep(OVERLAP)
        self.replacements += 1
        await self._close(old, "replaced")
        return new
