"""Official klines from Binance REST (``/api/v3/klines``), for parity checks (R7) and history.

Plain synchronous HTTP (urllib), run inside a Dagster step. One :class:`KlinesClient` serves
every partition of a run and carries what must outlive one partition:

- pacing: Binance counts request weight per IP in calendar minutes (6000 per minute) and
  reports the count in ``X-MBX-USED-WEIGHT-1M``. The client keeps that count within its
  budget, a share of the limit (the rest stays free for the collector's gap repairs from the
  same IP): a request that would go over waits for the next minute instead of provoking a 429;
- 429: waits its ``Retry-After`` (the next minute when it has none), then retries;
- 418 (IP ban): stops at once with :class:`KlinesBanned`, because requests during a ban only
  make it longer. The ban's end is remembered, in a state file when one is given, so no
  request is sent before it, by this run or the next.

A day's file records its facts in the Parquet footer (:data:`FACTS_KEY`): how many minutes
the exchange should have klines for, and whether the file is complete, i.e. a closed UTC day
with every one of those minutes. That is all 1440, except on the day a symbol started
trading: no kline exists before its first one (the exchange has none before the day
either), so that day expects the minutes from its first kline on. A re-run skips complete
files (:func:`stored_klines`) and fetches the others again, today's included.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from crypto_lake.lib.core.fsutil import atomic_write_bytes
from crypto_lake.lib.core.logs import get_logger
from crypto_lake.lib.core.parquet_out import write_dataset
from crypto_lake.lib.core.schema import KLINES_1M
from crypto_lake.lib.core.symbols import validate_symbol
from crypto_lake.lib.raw import binance

log = get_logger("klines")

PAGE = 1000
KLINES_WEIGHT = 2  # request weight of /api/v3/klines, up to 1000 rows (FACTS.md)
INTERVAL_MS = {"1s": 1_000, "1m": 60_000, "5m": 300_000, "1h": 3_600_000, "1d": 86_400_000}
MINUTE_MS, DAY_MS = 60_000, 86_400_000
DAY_MINUTES = 1440
KLINES_SCHEMA = KLINES_1M.arrow_schema()  # lib/core/schema.py
# positions in a REST kline row (lib/raw/binance.py)
_OPEN, _CLOSE = binance.KLINES.key("open_time"), binance.KLINES.key("close_time")
CLOSE_MARGIN_MS = 2_000  # the exchange may still settle a kline for a moment after its close
MINUTE_SLACK_S = 1.0  # wait this long past a minute's end: our clock and Binance's differ a bit
DEFAULT_BAN_S = 120.0  # a 418 without Retry-After: Binance's shortest ban
FACTS_KEY = b"crypto_lake.klines_1m"  # Parquet key-value metadata of a day's file


class KlinesError(RuntimeError):
    """The klines endpoint failed in a way retries did not fix."""


class KlinesBanned(KlinesError):
    """HTTP 418: the IP is banned; ``retry_after`` seconds until it may try again (``until``:
    the ban's end, epoch seconds)."""

    def __init__(self, message: str, retry_after: float | None, until: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after
        self.until = until


@dataclass
class RestUsage:
    """What a client (or one partition's fetch) cost: requests sent, their weight, waits."""

    requests: int = 0
    weight: int = 0
    http_429: int = 0
    waited_s: float = 0.0  # pacing waits plus Retry-After waits
    max_used_weight: int = 0  # the highest X-MBX-USED-WEIGHT-1M the exchange reported

    def since(self, earlier: RestUsage) -> RestUsage:
        return RestUsage(self.requests - earlier.requests, self.weight - earlier.weight,
                         self.http_429 - earlier.http_429, self.waited_s - earlier.waited_s,
                         self.max_used_weight)  # fmt: skip


class WeightPacer:
    """Keeps the IP's request weight per calendar minute within ``budget``.

    The exchange's count (``observe``) wins over ours, so other clients on the same IP (the
    collector) are accounted for; without it, our own requests are counted.
    """

    def __init__(self, budget: int, clock: Callable[[], float], sleep: Callable[[float], Any]):
        self.budget, self.clock, self.sleep = budget, clock, sleep
        self.minute, self.used = -1, 0

    def _roll(self, now: float) -> None:
        if int(now // 60) != self.minute:
            self.minute, self.used = int(now // 60), 0

    def wait_for(self, weight: int) -> float:
        """Sleep until ``weight`` more fits this minute's budget, count it; seconds waited."""
        now = self.clock()
        self._roll(now)
        waited = 0.0
        if self.used + weight > self.budget:
            waited = (self.minute + 1) * 60 + MINUTE_SLACK_S - now
            log.info("klines: request weight %d of %d used this minute; waiting %.1f s for "
                     "the next", self.used, self.budget, waited)  # fmt: skip
            self.sleep(waited)
            self.minute, self.used = int(self.clock() // 60), 0
        self.used += weight
        return waited

    def observe(self, used: int) -> None:
        """The exchange's count for the current minute, this request included."""
        self.minute, self.used = int(self.clock() // 60), used

    def seconds_to_next_minute(self) -> float:
        now = self.clock()
        return (int(now // 60) + 1) * 60 + MINUTE_SLACK_S - now


@dataclass
class KlinesAnswer:
    rows: list[list]
    closed_before_ms: int  # klines closing before this were complete when asked


@dataclass
class KlinesDay:
    """One UTC day of 1 m klines as the exchange answered it, with its facts."""

    symbol: str
    day: str
    rows: list[list]
    minutes_expected: int
    complete: bool
    trading_from_ms: int | None = None  # the symbol's first kline ever, when in this day
    usage: RestUsage = field(default_factory=RestUsage)

    def facts(self) -> dict[str, Any]:
        return {"symbol": self.symbol, "day": self.day, "minutes_expected": self.minutes_expected,
                "complete": self.complete, "trading_from_ms": self.trading_from_ms}  # fmt: skip


class KlinesClient:
    """``/api/v3/klines`` within a request-weight budget; one per run (see module docstring)."""

    def __init__(
        self,
        rest_base_url: str,
        *,
        weight_limit: int = 6000,
        budget_share: float = 0.5,
        timeout: float = 10.0,
        max_retries: int = 5,
        ban_file: Path | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Any] | None = None,
    ) -> None:
        budget = int(weight_limit * budget_share)
        if budget < KLINES_WEIGHT:
            raise ValueError(f"a weight budget of {budget} per minute allows no klines request")
        self.base_url = rest_base_url.rstrip("/")
        self.timeout, self.max_retries = timeout, max_retries
        self.clock = clock or time.time
        self.sleep = sleep or time.sleep
        self.pacer = WeightPacer(budget, self.clock, self.sleep)
        self.usage = RestUsage()
        self.ban_file = ban_file
        self.banned_until = _read_ban(ban_file)

    # -- HTTP ------------------------------------------------------------------------------
    def get(self, path: str, params: Mapping[str, Any], weight: int = KLINES_WEIGHT) -> Any:
        """GET with pacing and retries on 429/5xx/connection errors; raises on 418 and
        other client errors."""
        url = f"{self.base_url}{path}?{urllib.parse.urlencode(params)}"
        delay = 1.0
        for attempt in range(self.max_retries + 1):
            self._refuse_during_ban()
            self.usage.waited_s += self.pacer.wait_for(weight)
            self.usage.requests += 1
            self.usage.weight += weight
            try:
                with urllib.request.urlopen(url, timeout=self.timeout) as resp:
                    self._observe(resp.headers)
                    body = resp.read()
                return orjson.loads(body)
            except urllib.error.HTTPError as exc:
                self._observe(exc.headers)
                retry_after = _retry_after(exc)
                if exc.code == 418:
                    self._ban(retry_after, url)
                if (
                    exc.code == 429
                ):  # the IP is over its limit until Retry-After (or the minute's end)
                    self.usage.http_429 += 1
                    wait = (
                        self.pacer.seconds_to_next_minute() if retry_after is None else retry_after
                    )
                elif exc.code >= 500:
                    wait = delay
                else:
                    raise KlinesError(f"klines: HTTP {exc.code} for {url}") from exc
                log.warning("klines: HTTP %d, retrying in %.1f s", exc.code, wait)
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                wait = delay
                log.warning("klines: %s, retrying in %.1f s", exc, wait)
            except orjson.JSONDecodeError as exc:
                raise KlinesError(f"klines: an answer that is not JSON from {url}") from exc
            if attempt == self.max_retries:
                break
            self.sleep(wait)
            self.usage.waited_s += wait
            delay = min(delay * 2, 30.0)
        raise KlinesError(f"klines: giving up on {url} after {self.max_retries + 1} attempts")

    def _observe(self, headers: Any) -> None:
        value = headers.get("X-MBX-USED-WEIGHT-1M") if headers else None
        if value is not None and str(value).strip().isdigit():
            used = int(value)
            self.pacer.observe(used)
            self.usage.max_used_weight = max(self.usage.max_used_weight, used)

    def _ban(self, retry_after: float | None, url: str) -> None:
        seconds = retry_after if retry_after is not None else DEFAULT_BAN_S
        self.banned_until = self.clock() + seconds
        if self.ban_file is not None:
            ban = {"until": self.banned_until, "until_utc": utc_text(self.banned_until)}
            atomic_write_bytes(self.ban_file, orjson.dumps(ban), durable=False)
        raise KlinesBanned(f"klines: IP banned by Binance (HTTP 418) until "
                           f"{utc_text(self.banned_until)} ({seconds:.0f} s) for {url}",
                           seconds, self.banned_until)  # fmt: skip

    def _refuse_during_ban(self) -> None:
        left = self.banned_until - self.clock()
        if left > 0:
            raise KlinesBanned(f"klines: IP banned by Binance (HTTP 418) until "
                               f"{utc_text(self.banned_until)}; no request sent during the ban",
                               left, self.banned_until)  # fmt: skip

    # -- klines ----------------------------------------------------------------------------
    def fetch(self, symbol: str, interval: str, start_ms: int, end_ms: int) -> KlinesAnswer:
        """All closed klines with open time in [start_ms, end_ms), oldest first."""
        symbol = validate_symbol(symbol)
        if interval not in INTERVAL_MS:
            raise ValueError(f"unsupported interval {interval!r}; known: {sorted(INTERVAL_MS)}")
        step = INTERVAL_MS[interval]
        rows: list[list] = []
        cursor = start_ms
        closed_before_ms = time.time_ns() // 1_000_000 - CLOSE_MARGIN_MS
        while cursor < end_ms:
            closed_before_ms = time.time_ns() // 1_000_000 - CLOSE_MARGIN_MS
            params = {"symbol": symbol, "interval": interval, "startTime": cursor,
                      "endTime": end_ms - 1, "limit": PAGE}  # fmt: skip
            page = self.get("/api/v3/klines", params)
            if not isinstance(page, list):
                raise KlinesError(f"klines: unexpected answer {str(page)[:200]}")
            full = len(page) >= PAGE
            page = [r for r in page if isinstance(r, list) and cursor <= int(r[_OPEN]) < end_ms]
            # A kline still open when we asked is partial: keep closed intervals only, so the
            # stored file (and R7's comparison with our bars) never holds a half-built minute.
            page = [r for r in page if int(r[_CLOSE]) < closed_before_ms]
            if not page:
                break
            rows.extend(page)
            cursor = int(page[-1][_OPEN]) + step
            if not full:
                break
        return KlinesAnswer(rows, closed_before_ms)

    def fetch_day(self, symbol: str, day: str) -> KlinesDay:
        """The closed 1 m klines of one UTC day, with how many the exchange should have."""
        before = replace(self.usage)
        start_ms, end_ms = day_bounds_ms(day)
        answer = self.fetch(symbol, "1m", start_ms, end_ms)
        opens = sorted({int(r[_OPEN]) for r in answer.rows})
        closed_end = min(end_ms, answer.closed_before_ms // MINUTE_MS * MINUTE_MS)
        trading_from, first_expected = None, start_ms
        # Minutes missing at the start: before the symbol's first kline ever (it started
        # trading that day, or later), or an outage (the exchange has klines before the day).
        late_start = closed_end > start_ms and (not opens or opens[0] > start_ms)
        if late_start and not self._has_klines_before(symbol, start_ms):
            trading_from = opens[0] if opens else None
            first_expected = opens[0] if opens else closed_end
        expected = max(0, (closed_end - first_expected) // MINUTE_MS)
        complete = closed_end == end_ms and len(opens) == expected
        return KlinesDay(validate_symbol(symbol), day, answer.rows, expected, complete,
                         trading_from, self.usage.since(before))  # fmt: skip

    def _has_klines_before(self, symbol: str, before_ms: int) -> bool:
        params = {"symbol": symbol, "interval": "1m", "startTime": 0, "endTime": before_ms - 1,
                  "limit": 1}  # fmt: skip
        page = self.get("/api/v3/klines", params)
        return isinstance(page, list) and any(int(r[_OPEN]) < before_ms for r in page)


def fetch_klines(
    rest_base_url: str,
    symbol: str,
    interval: str,
    start_ms: int,
    end_ms: int,
    *,
    timeout: float = 10.0,
    max_retries: int = 5,
    sleep=time.sleep,
) -> list[list]:
    """All closed klines with open time in [start_ms, end_ms), oldest first, as REST arrays
    (a one-off :class:`KlinesClient`)."""
    client = KlinesClient(rest_base_url, timeout=timeout, max_retries=max_retries, sleep=sleep)
    return client.fetch(symbol, interval, start_ms, end_ms).rows


def _retry_after(exc: urllib.error.HTTPError) -> float | None:
    value = exc.headers.get("Retry-After") if exc.headers else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _read_ban(path: Path | None) -> float:
    """The end of a ban recorded in ``path`` (epoch seconds), 0 when none can be read."""
    if path is None:
        return 0.0
    try:
        return float(orjson.loads(path.read_bytes())["until"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0.0


def utc_text(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def day_bounds_ms(day: str) -> tuple[int, int]:
    """[start, end) of a UTC day in epoch milliseconds."""
    start = datetime.fromisoformat(day).replace(tzinfo=UTC)
    start_ms = int(start.timestamp() * 1000)
    return start_ms, start_ms + DAY_MS


# -- files --------------------------------------------------------------------------------
def klines_table(rows: list[list], symbol: str, unit: str = "ms") -> pa.Table:
    """REST kline arrays -> Arrow (exact decimals, UTC µs timestamps), deduplicated, sorted."""
    symbol = validate_symbol(symbol)
    mult = 1000 if unit == "ms" else 1
    by_open = {int(r[_OPEN]): r for r in rows}
    ordered = [by_open[k] for k in sorted(by_open)]

    def values(f: binance.Field) -> list:
        if f.kind == "decimal":
            return [Decimal(r[f.key]) for r in ordered]
        return [int(r[f.key]) * (mult if f.kind == "time" else 1) for r in ordered]

    cols = {f.column: values(f) for f in binance.KLINES.fields if f.column in KLINES_SCHEMA.names}
    cols["symbol"] = [symbol] * len(ordered)
    return pa.table(
        {f.name: pa.array(cols[f.name], f.type) for f in KLINES_SCHEMA}, schema=KLINES_SCHEMA
    )


def write_klines(
    rows: list[list],
    out: Path,
    *,
    symbol: str,
    unit: str = "ms",
    facts: Mapping[str, Any] | None = None,
) -> int:
    """Write kline arrays as one deterministic zstd Parquet file (atomic: a reader or a
    re-run never sees half a file), with ``facts`` in its footer; returns the row count."""
    table = klines_table(rows, symbol, unit)
    if facts is not None:
        text = json.dumps(dict(facts), sort_keys=True).encode()
        table = table.replace_schema_metadata({FACTS_KEY: text})
    write_dataset(table, Path(out), "klines_1m")
    return table.num_rows


def write_klines_day(fetched: KlinesDay, out: Path) -> StoredKlines:
    """Write one day's klines with its facts; returns what a re-run will read back."""
    rows = write_klines(fetched.rows, out, symbol=fetched.symbol, facts=fetched.facts())
    return StoredKlines(rows, fetched.minutes_expected, fetched.complete,
                        fetched.trading_from_ms)  # fmt: skip


@dataclass(frozen=True)
class StoredKlines:
    """A day's klines file as found on disk: its rows and recorded facts."""

    rows: int
    minutes_expected: int
    complete: bool
    trading_from_ms: int | None = None

    @property
    def missing_minutes(self) -> int:
        return max(0, self.minutes_expected - self.rows)


def stored_klines(path: Path, symbol: str, day: str) -> StoredKlines | None:
    """What the day's file holds, from its footer only; None when there is no readable file.

    Complete means: its facts say so, for this symbol and day, and the row count matches the
    minutes expected. A file written before facts were recorded is complete when it holds all
    1440 minutes (the writer only ever kept closed minutes of the file's day, once each).
    """
    try:
        meta = pq.read_metadata(path)
    except (OSError, pa.ArrowException):
        return None
    rows = meta.num_rows
    raw = (meta.metadata or {}).get(FACTS_KEY)
    if raw is None:
        return StoredKlines(rows, DAY_MINUTES, rows == DAY_MINUTES)
    try:
        facts = json.loads(raw)
        expected = int(facts["minutes_expected"])
        trading_from = facts.get("trading_from_ms")
        ours = facts.get("symbol") == symbol and facts.get("day") == day
        complete = bool(facts["complete"]) and ours and rows == expected
    except (ValueError, KeyError, TypeError):
        return StoredKlines(rows, DAY_MINUTES, False)
    return StoredKlines(rows, expected, complete, trading_from)
