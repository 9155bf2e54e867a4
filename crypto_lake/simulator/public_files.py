"""Binance's public file site (data.binance.vision) on the simulator's port, from its tape.

A lake configured with ``binance.public_data_url = <simulator REST base URL>`` finds the files
where Binance publishes them::

    /data/spot/daily/trades/{SYM}/{SYM}-trades-{YYYY-MM-DD}.zip         (+ .zip.CHECKSUM)
    /data/spot/daily/aggTrades/{SYM}/{SYM}-aggTrades-{YYYY-MM-DD}.zip
    /data/spot/daily/klines/{SYM}/{interval}/{SYM}-{interval}-{YYYY-MM-DD}.zip
    /data/spot/monthly/...   the same with {YYYY-MM}

Each zip holds one CSV of the same name (formats: public_csv.py); ``.CHECKSUM`` is
``sha256sum`` output, ``"<64 hex>  <zip name>\\n"``. Contents come from the same tape as REST
(history then live), so a file equals what REST answers and what was streamed.

When a file exists (otherwise 404):

* a day once it is over (UTC, plus SETTLE_US); today only with
  ``SimConfig.public_files_include_today`` (trades up to now); a month once all of it is over;
* not before the simulator's first day (the history's first day, else the live start's);
  a month partly before it holds what exists (the concatenation of its daily files);
* not when the live ledger has already forgotten trades the file needs (``history_s``);
* not when it would have no rows (Binance publishes no file rather than an empty one): a
  trades/aggTrades file needs a trade in its period, a klines file a trade before its end.

Files are built on request in a worker thread, deterministically (fixed zip timestamp and
deflate level), and the last few are cached; public files carry no request weight, so the
REST rate limiter never sees them. Faults: ``Faults.public_file_*`` (faults.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from functools import partial

from aiohttp import web

from crypto_lake.lib.core.symbols import validate_symbol
from crypto_lake.simulator.faults import PUBLIC_KINDS, Faults
from crypto_lake.simulator.history import DAY_US, SymbolHistory, day_of_us, day_start_us
from crypto_lake.simulator.instruments import instrument_for
from crypto_lake.simulator.ledger import TradeSource
from crypto_lake.simulator.public_csv import (
    HEADERS,
    agg_trades_csv,
    klines_csv,
    trades_csv,
    unit_divisor,
)
from crypto_lake.simulator.queries import INTERVALS_S, kline_arrays
from crypto_lake.simulator.zipwriter import deterministic_zip

PIECE_ROWS = 1_000_000  # CSV rows formatted and deflated per worker task
CACHE_FILES = 8
CACHE_BYTES = 1 << 28
SETTLE_US = 2_000_000  # a day counts as over this long after midnight (the last trades settle)
# Today's file (tests only) grows with the clock: one build is served this long, so a client's
# .CHECKSUM request and its zip request a moment later see the same bytes.
TODAY_HOLD_S = 10.0
_PATH = re.compile(
    r"/data/spot/(?P<freq>daily|monthly)/(?P<kind>trades|aggTrades|klines)/(?P<sym>[A-Z0-9]{2,20})"
    r"/(?:(?P<iv>\w{2,3})/)?(?P<file>[A-Za-z0-9.-]+?)(?P<checksum>\.CHECKSUM)?"
)


@dataclass(frozen=True)
class PublicFile:
    """One file of the site: kind, symbol, period (YYYY-MM-DD daily, YYYY-MM monthly)."""

    kind: str
    symbol: str
    period: str
    interval: str | None = None  # klines only

    def __post_init__(self) -> None:
        validate_symbol(self.symbol)
        if self.kind not in PUBLIC_KINDS:
            raise ValueError(f"unknown kind {self.kind!r}")
        if (self.kind == "klines") != (self.interval in INTERVALS_S):
            raise ValueError(f"klines need an interval of {list(INTERVALS_S)}, others none")
        date.fromisoformat(self.period if len(self.period) == 10 else self.period + "-01")
        if len(self.period) not in (7, 10):
            raise ValueError(f"period must be YYYY-MM-DD or YYYY-MM, got {self.period!r}")

    @property
    def monthly(self) -> bool:
        return len(self.period) == 7

    @property
    def first_day(self) -> date:
        return date.fromisoformat(self.period + "-01" if self.monthly else self.period)

    @property
    def last_day(self) -> date:
        if not self.monthly:
            return self.first_day
        nxt = (self.first_day.replace(day=28) + timedelta(days=4)).replace(day=1)
        return nxt - timedelta(days=1)

    @property
    def start_us(self) -> int:
        return day_start_us(self.first_day)

    @property
    def end_us(self) -> int:
        return day_start_us(self.last_day) + DAY_US

    @property
    def name(self) -> str:
        label = self.interval if self.kind == "klines" else self.kind
        return f"{self.symbol}-{label}-{self.period}.zip"

    @property
    def path(self) -> str:
        freq = "monthly" if self.monthly else "daily"
        sub = f"{self.interval}/" if self.kind == "klines" else ""
        return f"/data/spot/{freq}/{self.kind}/{self.symbol}/{sub}{self.name}"


def public_file_path(
    kind: str, symbol: str, period: str | date, interval: str | None = None
) -> str:
    """The URL path of a file, e.g. ``/data/spot/daily/trades/BTCUSDT/BTCUSDT-trades-...zip``."""
    text = period.isoformat() if isinstance(period, date) else period
    return PublicFile(kind, symbol, text, interval).path


def parse_public_path(path: str) -> tuple[PublicFile, bool] | None:
    """(file, is_checksum) for a well-formed path of the site, else None."""
    m = _PATH.fullmatch(path)
    if m is None:
        return None
    kind, sym, iv = m["kind"], m["sym"], m["iv"]
    label = iv if kind == "klines" else kind
    prefix = f"{sym}-{label}-"
    file = m["file"]
    if (kind == "klines") != (iv is not None) or not file.startswith(prefix):
        return None
    if not file.endswith(".zip"):
        return None
    period = file[len(prefix) : -len(".zip")]
    if len(period) != (10 if m["freq"] == "daily" else 7):
        return None
    try:
        return PublicFile(kind, sym, period, iv), m["checksum"] is not None
    except ValueError:
        return None


def checksum_text(zip_name: str, data: bytes) -> bytes:
    """The ``.CHECKSUM`` file of a zip: sha256sum's output line."""
    return f"{hashlib.sha256(data).hexdigest()}  {zip_name}\n".encode()


# -- building a file ------------------------------------------------------------------------
def build_public_zip(
    source: TradeSource, pf: PublicFile, end_us: int | None = None, header: bool = False
) -> bytes:
    """The zip of ``pf`` from ``source``, with trades before ``end_us`` (default: all of it)."""
    end = pf.end_us if end_us is None else min(end_us, pf.end_us)
    return deterministic_zip(pf.name[: -len(".zip")] + ".csv", file_pieces(source, pf, end, header))


def file_pieces(
    source: TradeSource, pf: PublicFile, end_us: int, header: bool = False
) -> Iterator[Callable[[], bytes]]:
    """Lazily, the CSV of ``pf`` as pieces of at most PIECE_ROWS rows, one day at a time."""
    if header:
        yield partial(bytes, HEADERS[pf.kind])
    inst = source.instrument
    div = unit_divisor(pf.first_day)
    day = pf.first_day
    while day <= pf.last_day:
        d0 = day_start_us(day)
        d1 = min(d0 + DAY_US, end_us)
        if d1 <= d0:
            return
        if pf.kind == "trades":
            for tr in source.time_chunks(d0, d1):
                for a in range(0, len(tr), PIECE_ROWS):
                    yield partial(trades_csv, tr.part(a, a + PIECE_ROWS), inst, div)
        elif pf.kind == "aggTrades":
            for tr in source.time_chunks(d0, d1, aggs=True):
                starts = tr.agg_starts.tolist()
                for a in range(0, len(starts), PIECE_ROWS):
                    hi = starts[a + PIECE_ROWS] if a + PIECE_ROWS < len(starts) else len(tr)
                    yield partial(agg_trades_csv, tr.part(starts[a], hi), inst, div)
        else:
            yield partial(_day_klines_csv, source, INTERVALS_S[pf.interval] * 10**6, d0, d1, div)
        day += timedelta(days=1)


def _day_klines_csv(source: TradeSource, step: int, d0: int, d1: int, div: int) -> bytes:
    """Klines opening in [d0, d1), from the one holding the first trade ever on."""
    first = source.first_time()
    if first is None:
        return b""
    lo = max(d0, first - first % step)
    hi = (d1 - 1) - (d1 - 1) % step
    if hi < lo:
        return b""
    return klines_csv(kline_arrays(source, step, lo, hi), step, source.instrument, div)


def synthetic_day_zip(
    symbol: str,
    day: date | str,
    n_trades: int,
    kind: str = "trades",
    interval: str | None = None,
    seed: int = 42,
) -> tuple[str, bytes]:
    """(zip name, zip bytes) of a public file for one whole day with exactly ``n_trades``
    trades, without a server (benchmarks): ``synthetic_day_zip("BTCUSDT", "2025-03-01",
    6_500_000)``. Deterministic in its arguments; klines default to 1m."""
    day = date.fromisoformat(day) if isinstance(day, str) else day
    if kind == "klines" and interval is None:
        interval = "1m"
    hist = SymbolHistory.one_day(instrument_for(symbol), seed, day, n_trades, 1_000_000_000)
    pf = PublicFile(kind, symbol, day.isoformat(), interval)
    return pf.name, build_public_zip(hist, pf)


# -- serving --------------------------------------------------------------------------------
class PublicFiles:
    """The /data/spot/... routes of the simulator."""

    def __init__(
        self,
        sources: Callable[[str], TradeSource | None],
        first_day: Callable[[], date],
        live_start_us: Callable[[], int],
        include_today: bool,
        faults: Faults,
    ) -> None:
        self.sources, self.first_day, self.live_start_us = sources, first_day, live_start_us
        self.include_today = include_today
        self.faults = faults
        self._cache: OrderedDict[tuple, tuple[bytes, str]] = OrderedDict()
        self._building: dict[tuple, asyncio.Future] = {}
        self._today: dict[tuple, tuple[float, tuple[bytes, str]]] = {}  # key -> (built, zip)
        self.builds = 0  # zips built (cache misses)

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/data/spot/{tail:.*}", self.handle)]

    def end_of(self, pf: PublicFile, source: TradeSource, now_us: int) -> int | None:
        """Where the file's trades end (exclusive, µs), or None when it does not exist."""
        today = day_of_us(now_us)
        if pf.last_day < self.first_day() or pf.first_day > today:
            return None
        end = pf.end_us
        if end > now_us - SETTLE_US:  # not over yet
            if pf.monthly or not self.include_today:
                return None
            end = min(end, now_us + 1)
        live0 = self.live_start_us()
        if max(pf.start_us, live0) < source.retained_from_us and end > live0:
            return None  # the live ledger forgot trades this file needs
        if pf.kind == "klines":
            first = source.first_time()
            has_rows = first is not None and first < end
        else:
            has_rows = source.index_at_time(end) > source.index_at_time(pf.start_us)
        return end if has_rows else None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        parsed = parse_public_path(request.path)
        source = self.sources(parsed[0].symbol) if parsed else None
        if parsed is None or source is None:
            return web.Response(status=404, text="404: no such file")
        pf, is_checksum = parsed
        now_us = time.time_ns() // 1000
        end = self.end_of(pf, source, now_us)
        key = (pf.kind, pf.symbol, pf.period)
        if end is None or self.faults._take_public_missing(*key, take=not is_checksum):
            return web.Response(status=404, text="404: no such file")
        header = self.faults._public_flag("header_row", *key)
        cache = pf.end_us <= now_us - SETTLE_US  # a file that can no longer change
        if cache:
            data, digest = await self._zip(source, pf, end, header, cache)
        else:
            held = self._today.get((pf, header))
            if held is None or time.monotonic() - held[0] > TODAY_HOLD_S:
                held = (time.monotonic(), await self._zip(source, pf, end, header, cache))
                self._today[(pf, header)] = held
            data, digest = held[1]
        if is_checksum:
            if self.faults._public_flag("bad_checksum", *key):
                digest = hashlib.sha256(digest.encode()).hexdigest()
            return web.Response(body=f"{digest}  {pf.name}\n".encode(), content_type="text/plain")
        if self.faults._public_flag("truncated", *key):
            data = data[: len(data) // 2]
        return web.Response(body=data, content_type="application/zip")

    async def _zip(
        self, source: TradeSource, pf: PublicFile, end: int, header: bool, cache: bool
    ) -> tuple[bytes, str]:
        key = (pf, end, header)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        fut = self._building.get(key)
        if fut is None:
            loop = asyncio.get_running_loop()
            fut = loop.run_in_executor(None, self._build, source, pf, end, header)
            self._building[key] = fut
            fut.add_done_callback(lambda _: self._building.pop(key, None))
        result = await asyncio.shield(fut)
        if cache and key not in self._cache:
            self._cache[key] = result
            while len(self._cache) > 1 and (
                len(self._cache) > CACHE_FILES
                or sum(len(v[0]) for v in self._cache.values()) > CACHE_BYTES
            ):
                self._cache.popitem(last=False)
        return result

    def _build(
        self, source: TradeSource, pf: PublicFile, end: int, header: bool
    ) -> tuple[bytes, str]:
        self.builds += 1
        data = build_public_zip(source, pf, end, header)
        return data, hashlib.sha256(data).hexdigest()
