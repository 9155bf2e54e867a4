"""Official klines from Binance REST (``/api/v3/klines``), for parity checks (R7) and history.

Plain synchronous HTTP (urllib): a kline fetch is a handful of requests per partition, run
inside a Dagster step. Pages of 1000 rows; 429 answers are retried after their
``Retry-After``; a 418 (IP ban) stops immediately with :class:`KlinesBanned`, because
retrying during a ban only makes it longer.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.parse
import urllib.request
from decimal import Decimal
from pathlib import Path

import orjson
import pyarrow as pa

from crypto_lake.lib.core.logs import get_logger
from crypto_lake.lib.core.parquet_out import write_dataset
from crypto_lake.lib.core.schema import KLINES_1M
from crypto_lake.lib.core.symbols import validate_symbol
from crypto_lake.lib.raw import binance

log = get_logger("klines")

PAGE = 1000
INTERVAL_MS = {"1s": 1_000, "1m": 60_000, "5m": 300_000, "1h": 3_600_000, "1d": 86_400_000}
KLINES_SCHEMA = KLINES_1M.arrow_schema()  # lib/core/schema.py
# positions in a REST kline row (lib/raw/binance.py)
_OPEN, _CLOSE = binance.KLINES.key("open_time"), binance.KLINES.key("close_time")


class KlinesError(RuntimeError):
    """The klines endpoint failed in a way retries did not fix."""


class KlinesBanned(KlinesError):
    """HTTP 418: the IP is banned; ``retry_after`` seconds until it may try again."""

    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _get_json(url: str, timeout: float, max_retries: int, sleep=time.sleep) -> list:
    """GET with retries on 429/5xx/connection errors; raises on 418 and client errors."""
    delay = 1.0
    for attempt in range(max_retries + 1):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                return orjson.loads(resp.read())
        except urllib.error.HTTPError as exc:
            retry_after = _retry_after(exc)
            if exc.code == 418:
                raise KlinesBanned(f"klines: IP banned (418) for {url}", retry_after) from exc
            if exc.code != 429 and exc.code < 500:
                raise KlinesError(f"klines: HTTP {exc.code} for {url}") from exc
            wait = retry_after if retry_after is not None else delay
            log.warning("klines: HTTP %d, retrying in %.1f s", exc.code, wait)
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            wait = delay
            log.warning("klines: %s, retrying in %.1f s", exc, wait)
        if attempt == max_retries:
            break
        sleep(wait)
        delay = min(delay * 2, 30.0)
    raise KlinesError(f"klines: giving up on {url} after {max_retries + 1} attempts")


def _retry_after(exc: urllib.error.HTTPError) -> float | None:
    value = exc.headers.get("Retry-After") if exc.headers else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


CLOSE_MARGIN_MS = 2_000  # the exchange may still settle a kline for a moment after its close


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
    """All closed klines with open time in [start_ms, end_ms), oldest first, as REST arrays."""
    symbol = validate_symbol(symbol)
    if interval not in INTERVAL_MS:
        raise ValueError(f"unsupported interval {interval!r}; known: {sorted(INTERVAL_MS)}")
    step = INTERVAL_MS[interval]
    rows: list[list] = []
    cursor = start_ms
    while cursor < end_ms:
        closed_before_ms = time.time_ns() // 1_000_000 - CLOSE_MARGIN_MS
        query = urllib.parse.urlencode(
            {
                "symbol": symbol,
                "interval": interval,
                "startTime": cursor,
                "endTime": end_ms - 1,
                "limit": PAGE,
            }
        )
        page = _get_json(f"{rest_base_url.rstrip('/')}/api/v3/klines?{query}", timeout,
                         max_retries, sleep)  # fmt: skip
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
    return rows


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


def write_klines(rows: list[list], out: Path, *, symbol: str, unit: str = "ms") -> int:
    """Write kline arrays as one deterministic zstd Parquet file (atomic); returns row count."""
    table = klines_table(rows, symbol, unit)
    write_dataset(table, Path(out), "klines_1m")
    return table.num_rows
