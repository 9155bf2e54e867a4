"""REST order book snapshots (``GET /api/v3/depth``) written into the symbols' raw files.

One task per depth symbol fetches the snapshots its DepthTracker asks for (depth.py: at start,
after a reconnect or a sequence gap, and every ``verify_interval_minutes``), so never more
than one per symbol is under way and requests made meanwhile coalesce. Requests go through
the collector's shared RestClient (rest.py): weight-paced within ``weight_cap`` per minute
(depth.snapshot_weight_share of the collector's budget), 429 waited out, no request during
a 418 ban.

A snapshot is written verbatim (``lines.depth_snapshot_line``, its own record kind) into the
symbol's current file. An answer that is not a JSON object with an integer ``lastUpdateId``
and ``bids``/``asks`` lists is quarantined; it and any failed request are retried with
backoff and logged. A stale snapshot (``lastUpdateId`` below what was asked for) is written
too, counted and fetched again. None of this ever blocks the message path: the router only
records the request and wakes the symbol's task.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import orjson

from collector_daemon.depth import DepthTracker, Request
from collector_daemon.rest import Banned, RestClient, RestError
from collector_daemon.router import Router
from collector_daemon.writer import RawWriter
from crypto_lake.lib.core.logs import get_logger
from crypto_lake.lib.raw import binance
from crypto_lake.lib.raw.lines import depth_snapshot_line

log = get_logger("collector.snapshots")

_LAST_ID, _BIDS, _ASKS = (binance.DEPTH.key(c) for c in ("update_id", "bids", "asks"))
BACKOFF_BASE, BACKOFF_CAP = 0.25, 30.0


def snapshot_update_id(body: bytes) -> int | None:
    """The ``lastUpdateId`` of a depth answer, None unless it is a JSON object with an integer
    ``lastUpdateId`` and ``bids``/``asks`` lists."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(obj) is not dict:
        return None
    last = obj.get(_LAST_ID)
    if type(last) is not int or type(obj.get(_BIDS)) is not list:
        return None
    return last if type(obj.get(_ASKS)) is list else None


class DepthSnapshotter:
    """Fetches and writes the snapshots of every depth symbol (see module docstring)."""

    def __init__(
        self,
        *,
        client: RestClient,
        writer: RawWriter,
        router: Router,
        trackers: dict[str, DepthTracker],
        stream: str,
        limit: int,
        verify_seconds: float,
        weight_cap: int,
    ) -> None:
        self.client = client
        self.writer = writer
        self.router = router
        self.trackers = trackers
        self.streams = {s: f"{s.lower()}@{stream}" for s in trackers}
        self.limit = limit
        self.weight = binance.depth_weight(limit)
        self.weight_cap = weight_cap
        self.verify_seconds = verify_seconds
        self._wake = {s: asyncio.Event() for s in trackers}

    def wake(self, symbol: str) -> None:
        """The router's hook: ``symbol``'s tracker wants a snapshot."""
        event = self._wake.get(symbol)
        if event is not None:
            event.set()

    async def run(self) -> None:
        await asyncio.gather(*(self._symbol_loop(s) for s in self.trackers))

    async def _symbol_loop(self, symbol: str) -> None:
        tracker, wake = self.trackers[symbol], self._wake[symbol]
        failures = 0
        next_verify = time.monotonic() + self.verify_seconds
        while True:
            ban = self.client.stats.banned_until - time.time()
            if ban > 0:
                await asyncio.sleep(min(ban, 5.0))
                continue
            req = tracker.take()
            if req is None:
                timeout = None
                if self.verify_seconds > 0:
                    timeout = max(0.0, next_verify - time.monotonic())
                wake.clear()
                try:
                    await asyncio.wait_for(wake.wait(), timeout)
                except TimeoutError:
                    tracker.want_verify()  # only while the stream is in sequence
                    next_verify = time.monotonic() + self.verify_seconds
                continue
            outcome = await self._fetch(symbol, tracker, req)
            if outcome == "ok":
                failures = 0
                next_verify = time.monotonic() + self.verify_seconds
                continue
            failures += 1
            if outcome == "stale":
                next_verify = time.monotonic() + self.verify_seconds
            await asyncio.sleep(min(BACKOFF_CAP, BACKOFF_BASE * 2**failures))

    async def _fetch(self, symbol: str, tracker: DepthTracker, req: Request) -> str:
        """Fetch and write one snapshot: "ok", "stale" (written, wanted again) or "failed"."""
        params = {"symbol": symbol, "limit": str(self.limit)}
        try:
            body = await self.client.get(
                binance.DEPTH.name, params, self.weight, purpose="depth", cap=self.weight_cap
            )
        except Banned as exc:
            tracker.failed_fetch()
            log.warning("%s depth snapshot (%s) not fetched: %s", symbol, req.reason, exc)
            return "failed"
        except (aiohttp.ClientError, TimeoutError, RestError) as exc:
            tracker.failed_fetch()
            log.warning("%s depth snapshot (%s) failed: %s; retrying", symbol, req.reason,
                        str(exc) or type(exc).__name__)  # fmt: skip
            return "failed"
        recv_ns = time.time_ns()
        last_id = snapshot_update_id(body)
        if last_id is None:
            reason = "depth snapshot without integer lastUpdateId and bids/asks lists"
            self.router.quarantine("rest", recv_ns, body, reason)
            tracker.failed_fetch()
            log.warning("%s depth snapshot (%s) malformed: quarantined; retrying", symbol,
                        req.reason)  # fmt: skip
            return "failed"
        line = depth_snapshot_line(recv_ns, self.streams[symbol], req.reason, self.limit, body,
                                   self.client.time_unit)  # type: ignore[arg-type]  # fmt: skip
        self.writer.write(symbol, recv_ns, line)
        if tracker.answered(last_id):
            log.warning("%s depth snapshot (%s) stale: lastUpdateId %d < %d needed; fetching "
                        "again", symbol, req.reason, last_id, req.need)  # fmt: skip
            return "stale"
        log.info("%s depth snapshot (%s): lastUpdateId %d, %d bytes", symbol, req.reason,
                 last_id, len(body))  # fmt: skip
        return "ok"
