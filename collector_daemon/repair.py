"""Gap repair from the REST API, by id, within Binance's request-weight budget.

``historicalTrades?fromId`` (weight 25) repairs ``@trade`` gaps and ``aggTrades?fromId``
(weight 4) repairs ``@aggTrade`` gaps; every returned element that fills a missing id is
written verbatim as a repaired raw line. Pacing follows the exchange's own count
(``X-MBX-USED-WEIGHT-1M``): a request that would exceed the budget waits for the next minute.
A 429 is answered by sleeping ``Retry-After`` seconds; a 418 (IP ban) stops repairing until
the ban ends, leaving the gap open and visible in the heartbeat.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from collector_daemon.gaps import Gap, GapBook
from collector_daemon.tracker import IdTracker
from collector_daemon.writer import RawWriter
from crypto_lake.lib.core.logs import get_logger
from crypto_lake.lib.raw import binance
from crypto_lake.lib.raw.lines import repaired_line

log = get_logger("collector.repair")

WEIGHT = {binance.HISTORICAL_TRADES.name: 25, binance.AGG_TRADES.name: 4}
PAGE = 1000
DEFAULT_BAN_SECONDS = 120.0


@dataclass
class RestStats:
    requests: int = 0
    http_429: int = 0
    http_418: int = 0
    errors: int = 0
    trades_repaired: int = 0
    used_weight: int = 0
    banned_until: float = 0.0  # wall clock seconds
    last_retry_after: float | None = None


class Banned(Exception):
    """The exchange answered 418: stop repairing until the ban ends."""


class RestRepairer:
    """Repairs open gaps one page at a time (see module docstring)."""

    def __init__(
        self,
        *,
        rest_url: str,
        trade_stream: str,
        time_unit: str,
        budget_per_minute: int,
        writer: RawWriter,
        trackers: dict[str, IdTracker],
        book: GapBook,
    ) -> None:
        self.rest_url = rest_url.rstrip("/")
        source = binance.REPAIR_SOURCE[trade_stream]
        self.source = source.name
        self.id_key = source.key("trade_id")
        self.trade_stream = trade_stream
        self.time_unit = time_unit
        self.budget = budget_per_minute
        self.writer = writer
        self.trackers = trackers
        self.book = book
        self.stats = RestStats()
        self.wakeup = asyncio.Event()
        self._weight_minute = 0
        self._session: aiohttp.ClientSession | None = None

    async def run(self) -> None:
        headers: dict[str, str] = {}
        if self.time_unit == "us":
            headers[binance.TIME_UNIT_HEADER] = binance.TIME_UNIT_NAMES["us"]
        timeout = aiohttp.ClientTimeout(total=15)
        async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
            self._session = session
            failures = 0
            while True:
                wait = self.stats.banned_until - time.time()
                if wait > 0:
                    await asyncio.sleep(min(wait, 5.0))
                    continue
                if self.stats.banned_until:
                    self.stats.banned_until = 0.0
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
                    self.stats.errors += 1
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

    async def _pace(self, weight: int) -> None:
        minute = int(time.time() // 60)
        if minute != self._weight_minute:
            self._weight_minute, self.stats.used_weight = minute, 0
        if self.stats.used_weight + weight > self.budget:
            wait = 60 - time.time() % 60 + 0.1
            log.info(
                "REST weight %d of %d used; waiting %.1f s",
                self.stats.used_weight,
                self.budget,
                wait,
            )
            await asyncio.sleep(wait)
            self._weight_minute, self.stats.used_weight = int(time.time() // 60), 0

    async def _fetch(self, symbol: str, from_id: int, limit: int) -> list[Any]:
        assert self._session is not None
        url = f"{self.rest_url}/api/v3/{self.source}"
        params = {"symbol": symbol, "fromId": str(from_id), "limit": str(limit)}
        while True:
            await self._pace(WEIGHT[self.source])
            self.stats.requests += 1
            async with self._session.get(url, params=params) as resp:
                used = resp.headers.get("X-MBX-USED-WEIGHT-1M")
                if used and used.isdigit():
                    self.stats.used_weight = int(used)
                    self._weight_minute = int(time.time() // 60)
                retry_after = _retry_after(resp.headers.get("Retry-After"))
                if resp.status == 429:
                    self.stats.http_429 += 1
                    self.stats.last_retry_after = retry_after
                    log.warning("REST 429: waiting Retry-After %.1f s", retry_after or 1.0)
                    await asyncio.sleep(retry_after or 1.0)
                    continue
                if resp.status == 418:
                    self.stats.http_418 += 1
                    ban = retry_after or DEFAULT_BAN_SECONDS
                    self.stats.banned_until = time.time() + ban
                    for gap in self.book.open_gaps():
                        gap.note = f"banned (418) for {ban:.0f} s; repair stopped"
                    self.book.dirty = True
                    log.error("REST 418 (IP ban): repair stopped for %.0f s", ban)
                    raise Banned()
                if resp.status != 200:
                    raise ValueError(f"HTTP {resp.status} from {url}")
                rows = await resp.json(content_type=None)
                if not isinstance(rows, list):
                    raise ValueError(f"unexpected answer from {url}: {str(rows)[:100]}")
                return rows


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
