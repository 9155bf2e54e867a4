"""Gap repair from the REST API, by id, within Binance's request-weight budget.

``historicalTrades?fromId`` (weight 25) repairs ``@trade`` gaps and ``aggTrades?fromId``
(weight 4) repairs ``@aggTrade`` gaps; every returned element that fills a missing id is
written verbatim as a repaired raw line. Requests go through the collector's shared
``RestClient`` (rest.py): paced by the exchange's own count (``X-MBX-USED-WEIGHT-1M``), a
429 waited out (``Retry-After``); a 418 (IP ban) stops repairing until the ban ends, leaving
the gap open and visible in the heartbeat.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import orjson

from collector_daemon.gaps import Gap, GapBook
from collector_daemon.rest import Banned, RestClient
from collector_daemon.tracker import IdTracker
from collector_daemon.writer import RawWriter
from crypto_lake.lib.core.logs import get_logger
from crypto_lake.lib.raw import binance
from crypto_lake.lib.raw.lines import repaired_line

log = get_logger("collector.repair")

WEIGHT = {binance.HISTORICAL_TRADES.name: 25, binance.AGG_TRADES.name: 4}
PAGE = 1000


class RestRepairer:
    """Repairs open gaps one page at a time (see module docstring)."""

    def __init__(
        self,
        *,
        client: RestClient,
        trade_stream: str,
        writer: RawWriter,
        trackers: dict[str, IdTracker],
        book: GapBook,
    ) -> None:
        self.client = client
        source = binance.REPAIR_SOURCE[trade_stream]
        self.source = source.name
        self.id_key = source.key("trade_id")
        self.trade_stream = trade_stream
        self.time_unit = client.time_unit
        self.writer = writer
        self.trackers = trackers
        self.book = book
        self.stats = client.stats
        self.wakeup = asyncio.Event()
        self._banned = False

    async def run(self) -> None:
        failures = 0
        while True:
            wait = self.stats.banned_until - time.time()
            if wait > 0:
                if not self._banned:
                    self._banned = True
                    for g in self.book.open_gaps():
                        g.note = f"banned (418) for {wait:.0f} s; repair stopped"
                    self.book.dirty = True
                await asyncio.sleep(min(wait, 5.0))
                continue
            if self._banned:
                self._banned = False
                for g in self.book.open_gaps():
                    g.note = None
                log.info("REST ban over; repair resumes")
            gap = next((g for g in self.book.open_gaps() if not g.note), None)
            if gap is None:
                self.wakeup.clear()
                try:
                    await asyncio.wait_for(self.wakeup.wait(), timeout=5.0)
                except TimeoutError:
                    # retry gaps parked after errors or an empty answer
                    for g in self.book.open_gaps():
                        if g.note and not g.note.startswith("banned"):
                            g.note = None
                continue
            try:
                ok = await self.repair(gap)
                failures = 0 if ok else failures
            except Banned:
                continue
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                failures += 1
                gap.note = f"REST error: {exc}"[:200]
                self.book.dirty = True
                log.warning("repair of gap %d failed: %s", gap.gap_id, exc)
                await asyncio.sleep(min(30.0, 0.5 * 2**failures))

    async def repair(self, gap: Gap) -> bool:
        """Fetch the gap's ids page by page; True when nothing is missing afterwards."""
        tracker = self.trackers[gap.symbol]
        stream = f"{gap.symbol.lower()}@{self.trade_stream}"
        cur = gap.first_id
        while cur <= gap.last_id:
            nxt_missing = self._first_missing(tracker, cur, gap.last_id)
            if nxt_missing is None:
                break
            cur = nxt_missing
            limit = min(PAGE, gap.last_id - cur + 1)
            rows = await self._fetch(gap.symbol, cur, limit)
            if not rows:
                gap.note = "exchange returned no trades for the missing ids"
                break
            recv_ns = time.time_ns()
            highest = cur - 1
            for row in rows:
                ident = row.get(self.id_key) if isinstance(row, dict) else None
                if not isinstance(ident, int):
                    continue
                highest = max(highest, ident)
                if ident <= gap.last_id and tracker.fill(ident):
                    line = repaired_line(recv_ns, stream, self.time_unit, self.source, row)
                    self.writer.write(gap.symbol, recv_ns, line)
                    gap.repaired += 1
                    self.stats.trades_repaired += 1
            if highest < cur:
                gap.note = "exchange answer did not advance"
                break
            cur = highest + 1
        self.book.reconcile(self.trackers)
        self.book.dirty = True
        return gap.status == "repaired"

    @staticmethod
    def _first_missing(tracker: IdTracker, lo: int, hi: int) -> int | None:
        for hole in tracker.holes:
            if hole.last >= lo and hole.first <= hi:
                return max(lo, hole.first)
        return None

    async def _fetch(self, symbol: str, from_id: int, limit: int) -> list[Any]:
        params = {"symbol": symbol, "fromId": str(from_id), "limit": str(limit)}
        body = await self.client.get(self.source, params, WEIGHT[self.source])
        try:
            rows = orjson.loads(body)
        except orjson.JSONDecodeError:
            rows = None
        if not isinstance(rows, list):
            self.stats.errors += 1
            raise ValueError(f"unexpected answer from {self.source}: {body[:100]!r}")
        return rows
