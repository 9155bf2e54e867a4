"""The collector's one REST client: Binance's request-weight budget shared by all its users.

Gap repairs (repair.py) and depth snapshots (snapshots.py) come from the same IP, so one
client paces them both against ``budget_per_minute``:

* before each request its weight is reserved in the current calendar minute (Binance counts
  per minute and IP); a request that would pass the budget, or the caller's own ``cap`` (the
  share depth snapshots may use), waits for the next minute. The exchange's own count
  (``X-MBX-USED-WEIGHT-1M``) raises ours when it is higher (other users of the IP);
* a 429 pauses every caller for its ``Retry-After`` (requests inside a 429 ban escalate to
  a 418), then the request is sent again;
* a 418 (IP ban) raises ``Banned`` at once and every later request too until the ban ends,
  without sending anything.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass

import aiohttp

from crypto_lake.lib.core.logs import get_logger
from crypto_lake.lib.raw import binance

log = get_logger("collector.rest")

DEFAULT_BAN_SECONDS = 120.0
USED_WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"


@dataclass
class RestStats:
    requests: int = 0
    http_429: int = 0
    http_418: int = 0
    errors: int = 0
    trades_repaired: int = 0  # counted by the repairer
    used_weight: int = 0  # this minute, ours or the exchange's count, whichever is higher
    banned_until: float = 0.0  # wall clock seconds
    last_retry_after: float | None = None


class Banned(Exception):
    """The exchange answered 418 (or did so before and the ban has not ended)."""

    def __init__(self, until: float) -> None:
        super().__init__(f"REST banned (418) until {until:.0f}")
        self.until = until


class RestError(ValueError):
    """An answer other than 200, 429 or 418."""


class RestClient:
    """Weight-paced GET requests to Binance's REST API (see module docstring)."""

    def __init__(
        self, *, rest_url: str, time_unit: str, budget_per_minute: int, timeout: float = 15.0
    ) -> None:
        self.rest_url = rest_url.rstrip("/")
        self.time_unit = time_unit
        self.budget = budget_per_minute
        self.timeout = timeout
        self.stats = RestStats()
        self._minute = 0
        self._used_by: dict[str, int] = defaultdict(int)  # weight per purpose this minute
        self._paused_until = 0.0  # monotonic: a 429's Retry-After, for every caller
        self._session: aiohttp.ClientSession | None = None

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None:  # made inside the running loop, on first use
            headers: dict[str, str] = {}
            if self.time_unit == "us":
                headers[binance.TIME_UNIT_HEADER] = binance.TIME_UNIT_NAMES["us"]
            self._session = aiohttp.ClientSession(
                headers=headers, timeout=aiohttp.ClientTimeout(total=self.timeout)
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def banned(self) -> bool:
        return self.stats.banned_until > time.time()

    def _roll_minute(self) -> None:
        minute = int(time.time() // 60)
        if minute != self._minute:
            self._minute, self.stats.used_weight = minute, 0
            self._used_by.clear()

    async def _reserve(self, weight: int, purpose: str, cap: int | None) -> None:
        """Wait until ``weight`` fits this minute's budget (and ``cap`` for ``purpose``), then
        count it. No await between the check and the count: callers cannot both pass."""
        while True:
            pause = self._paused_until - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
                continue
            self._roll_minute()
            used = self.stats.used_weight
            if used + weight <= self.budget and (
                cap is None or self._used_by[purpose] + weight <= cap
            ):
                self.stats.used_weight += weight
                self._used_by[purpose] += weight
                return
            wait = 60 - time.time() % 60 + 0.1
            log.info("REST weight %d of %d used (%s: %d of %s); waiting %.1f s", used,
                     self.budget, purpose, self._used_by[purpose], cap, wait)  # fmt: skip
            await asyncio.sleep(wait)

    async def get(
        self,
        endpoint: str,
        params: dict[str, str],
        weight: int,
        *,
        purpose: str = "repair",
        cap: int | None = None,
    ) -> bytes:
        """The body of ``GET /api/v3/<endpoint>`` once it answers 200.

        Raises Banned (418, now or still), RestError (another status) or aiohttp's and
        asyncio's errors (connection, timeout); a 429 is waited out and retried here."""
        url = f"{self.rest_url}/api/v3/{endpoint}"
        while True:
            if self.banned:
                raise Banned(self.stats.banned_until)
            await self._reserve(weight, purpose, cap)
            if self.banned:  # the ban began while we waited
                raise Banned(self.stats.banned_until)
            self.stats.requests += 1
            try:
                async with self._session_now().get(url, params=params) as resp:
                    self._note_used(resp.headers.get(USED_WEIGHT_HEADER))
                    retry_after = _retry_after(resp.headers.get("Retry-After"))
                    if resp.status == 429:
                        self.stats.http_429 += 1
                        self.stats.last_retry_after = retry_after
                        wait = retry_after or 1.0
                        log.warning("REST 429 on %s: waiting Retry-After %.1f s", endpoint, wait)
                        self._paused_until = max(self._paused_until, time.monotonic() + wait)
                        continue
                    if resp.status == 418:
                        self.stats.http_418 += 1
                        ban = retry_after or DEFAULT_BAN_SECONDS
                        self.stats.banned_until = time.time() + ban
                        log.error("REST 418 (IP ban): no REST request for %.0f s", ban)
                        raise Banned(self.stats.banned_until)
                    if resp.status != 200:
                        raise RestError(f"HTTP {resp.status} from {url}")
                    return await resp.read()
            except (aiohttp.ClientError, TimeoutError, RestError):
                self.stats.errors += 1
                raise

    def _note_used(self, header: str | None) -> None:
        """The exchange's count of this minute's weight, when above ours."""
        if header and header.isdigit():
            self._roll_minute()
            self.stats.used_weight = max(self.stats.used_weight, int(header))


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
