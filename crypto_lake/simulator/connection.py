"""One client WebSocket connection: its send queue, ping/pong clock, age limit and faults.

Frames are handed to the connection by the market loop (:meth:`Connection.push`) and written
by the connection's own writer task, so one slow client never stalls the market or the others.
A frame counts as sent (SentLog) once the transport's buffer is empty after writing it, i.e.
the bytes reached the kernel; frames still buffered when the connection is aborted are not
counted, so SentLog never claims more than a client could have received.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time

from aiohttp import WSMsgType, web

from crypto_lake.lib.core.logs import get_logger
from crypto_lake.simulator.config import SimConfig
from crypto_lake.simulator.faults import Faults
from crypto_lake.simulator.market import Event
from crypto_lake.simulator.sentlog import SentLog
from crypto_lake.simulator.wire import (
    Unit,
    framed_ms,
    framed_us,
    malformed_copy,
    render,
    server_shutdown_frame,
    ws_text_frame,
)

log = get_logger("simulator.ws")
HIGH_WATER = 1 << 20  # transport bytes buffered before the writer waits for the client
LOW_WATER = 1 << 18
# A client this far behind is cut off, as Binance does with slow consumers, instead of
# letting its queue grow without bound.
MAX_QUEUED_FRAMES = 1_000_000
MALFORMED = "malformed"
# A frame and what it carries: the data event, MALFORMED garbage, or None for control frames.
Item = tuple[bytes, Event | str | None]


class Connection:
    """Server side of one combined-stream connection."""

    def __init__(
        self,
        conn_id: int,
        ws: web.WebSocketResponse,
        request: web.Request,
        streams: list[str],
        unit: Unit,
        cfg: SimConfig,
        faults: Faults,
        sent: SentLog,
    ) -> None:
        self.id = conn_id
        self.ws = ws
        self.request = request
        self.streams = set(streams)
        self.unit = unit
        self.cfg = cfg
        self.faults = faults
        self.sent = sent
        self.rng = random.Random(f"{cfg.seed}:conn:{conn_id}")
        self.opened = time.monotonic()
        self.stalled_until = 0.0
        self.ping_pending_since: float | None = None  # oldest ping not answered yet
        self._ping_payloads: set[bytes] = set()  # payloads a pong must echo
        self.closing = False
        self._pending: list[Item] = []
        self._unconfirmed: list[Event] = []
        self._wake = asyncio.Event()

    # -- producer side (market loop) --------------------------------------------------------
    def stalled(self) -> bool:
        return time.monotonic() < self.stalled_until

    def push(self, events: list[Event]) -> None:
        """Queue the events this connection subscribed to, applying per-message faults."""
        if self.closing:
            return
        streams, unit, faults = self.streams, self.unit, self.faults
        framed = framed_us if unit == "us" else framed_ms
        items = [(framed(ev), ev) for ev in events if ev.stream in streams and not ev.hidden]
        if not items:
            return
        if faults.duplicate_prob or faults.reorder_prob or faults.malformed_prob:
            items = self._apply_faults(items)
        self._pending.extend(items)
        self._wake.set()
        if len(self._pending) > MAX_QUEUED_FRAMES:
            log.warning("conn %d: client too slow (%d frames queued), dropping it", self.id,
                        len(self._pending))  # fmt: skip
            self.abort()

    def push_control(self, payload: bytes) -> None:
        self._pending.append((ws_text_frame(payload), None))
        self._wake.set()

    def _apply_faults(self, items: list[Item]) -> list[Item]:
        out: list[Item] = []
        rng, faults = self.rng, self.faults
        for item in items:
            if rng.random() < faults.malformed_prob:
                garbage = malformed_copy(render(item[1], self.unit))  # type: ignore[arg-type]
                out.append((ws_text_frame(garbage), MALFORMED))
            out.append(item)
            if rng.random() < faults.duplicate_prob:
                out.append(item)
            if len(out) >= 2 and rng.random() < faults.reorder_prob:
                out[-1], out[-2] = out[-2], out[-1]
        return out

    # -- writer task ------------------------------------------------------------------------
    async def write_loop(self) -> None:
        """Write queued frames in one transport write per batch, with flow control."""
        transport = self.request.transport
        while not self.closing and transport is not None and not transport.is_closing():
            if self._unconfirmed:
                # Frames still buffered: look again soon even if the market is quiet.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 0.02)
                self._confirm([])
            else:
                await self._wake.wait()
            self._wake.clear()
            items, self._pending = self._pending, []
            if not items or self.stalled():
                continue  # a stalled connection loses what the exchange published meanwhile
            transport.write(b"".join([frame for frame, _ in items]))
            done = [ev for _, ev in items if isinstance(ev, Event)]
            if len(done) != len(items):
                self.sent.record_malformed(sum(1 for _, ev in items if ev is MALFORMED))
            if transport.get_write_buffer_size() > HIGH_WATER:
                await self._wait_for_client(transport)
            self._confirm(done)

    async def _wait_for_client(self, transport: asyncio.Transport) -> None:
        """Back-pressure: a slow client holds its own queue, never the market loop."""
        while transport.get_write_buffer_size() > LOW_WATER and not transport.is_closing():
            await asyncio.sleep(0.002)

    def _confirm(self, done: list[Event]) -> None:
        """Record frames as sent once nothing is left in the transport's buffer."""
        self._unconfirmed.extend(done)
        transport = self.request.transport
        if transport is not None and transport.get_write_buffer_size() == 0:
            self.sent.record_many(self._unconfirmed)
            self._unconfirmed = []

    # -- reader task ------------------------------------------------------------------------
    async def read_loop(self) -> None:
        ws = self.ws
        async for msg in ws:
            if msg.type == WSMsgType.PING:
                if not self.stalled():
                    await ws.pong(msg.data)
            elif msg.type == WSMsgType.PONG:
                # Binance: only a pong echoing a ping's payload counts; unsolicited pongs
                # are allowed but do not prevent the disconnect.
                if bytes(msg.data) in self._ping_payloads:
                    self._ping_payloads.clear()
                    self.ping_pending_since = None
            elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.ERROR):
                break
            # Client text messages (SUBSCRIBE etc.) are not supported: streams come from the URL.

    # -- clock task: pings, pong timeout, age limit -----------------------------------------
    async def clock_loop(self) -> None:
        cfg = self.cfg
        step = max(0.01, min(cfg.ping_interval_s, cfg.ping_timeout_s, 1.0) / 4)
        next_ping = self.opened + cfg.ping_interval_s
        notice_at = self.opened + cfg.max_connection_age_s - cfg.notice_lead_s
        close_at = self.opened + cfg.max_connection_age_s
        notice_sent = not cfg.server_shutdown_notice
        while not self.ws.closed and not self.closing:
            await asyncio.sleep(step)
            now = time.monotonic()
            if now >= close_at:
                await self.close(1000, "connection age limit reached")
                return
            if not notice_sent and now >= notice_at:
                notice_sent = True
                self.push_control(server_shutdown_frame(time.time_ns() // 1000, self.unit))
            if self.stalled():
                self.ping_pending_since = None  # our own silence is not the client's fault
                self._ping_payloads.clear()
                next_ping = max(next_ping, self.stalled_until)
                continue
            if now >= next_ping:
                next_ping = now + cfg.ping_interval_s
                payload = str(time.time_ns() // 1000).encode()
                self._ping_payloads.add(payload)
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await self.ws.ping(payload)
                if self.ping_pending_since is None:
                    self.ping_pending_since = now
            if self.ping_pending_since is not None and (
                now - self.ping_pending_since > cfg.ping_timeout_s
            ):
                log.info(
                    "conn %d: no pong within %.1fs, disconnecting", self.id, cfg.ping_timeout_s
                )
                self.abort()
                return

    # -- ending -----------------------------------------------------------------------------
    async def close(self, code: int, reason: str) -> None:
        """Graceful close: flush what was written, then a close frame."""
        if self.closing:
            return
        self.closing = True
        self._wake.set()
        try:
            await asyncio.wait_for(self.ws.close(code=code, message=reason.encode()), 2.0)
        except (TimeoutError, ConnectionError, RuntimeError):
            pass
        else:
            # The client answered the close frame, so it read everything written before it.
            self.sent.record_many(self._unconfirmed)
            self._unconfirmed = []
        self.abort()

    def abort(self) -> None:
        """Abrupt end: the TCP connection is closed without a close frame."""
        self.closing = True
        self._wake.set()
        transport = self.request.transport
        if transport is not None:
            transport.abort()
