"""Synthetic raw lake for the Dagster tests: real raw lines (lib/raw/lines.py), real folders,
klines.

Trades are generated with exact decimal prices, so tests can compute the reference 1 m klines
independently of the code under test and serve them from a loopback REST server.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import orjson

from crypto_lake.lib.core.paths import LakeLayout, part_file_name
from crypto_lake.lib.raw.lines import repaired_line, session_line, ws_line

US = 1_000_000


@dataclass
class Trade:
    trade_id: int
    ts_us: int
    price: Decimal
    qty: Decimal
    buyer_maker: bool


@dataclass
class SymbolDay:
    """Generated trades and quotes of one symbol over one or more days."""

    symbol: str
    trades: list[Trade] = field(default_factory=list)
    quotes: list[tuple[int, int, Decimal, Decimal, Decimal, Decimal]] = field(default_factory=list)


def day_start_us(day: str) -> int:
    return int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp()) * US


def generate(symbol: str, days: list[str], per_day: int = 300, seed: int = 7) -> SymbolDay:
    """Trades spread over each day's first and last 10 minutes (so day edges are exercised)."""
    rng = random.Random(f"{symbol}-{seed}")
    out = SymbolDay(symbol)
    price = Decimal(rng.randint(100, 60_000))
    next_id, update_id = 1_000, 5_000
    for day in days:
        start = day_start_us(day)
        windows = [(start, start + 600 * US), (start + 86_400 * US - 600 * US, start + 86_400 * US)]
        times = sorted(rng.randrange(lo, hi) for lo, hi in windows for _ in range(per_day // 2))
        for ts in times:
            price = max(Decimal("0.01"), price + Decimal(rng.randint(-50, 50)) / 100)
            qty = Decimal(rng.randint(1, 5000)) / 1000
            out.trades.append(Trade(next_id, ts, price, qty, rng.random() < 0.5))
            next_id += 1
            update_id += rng.randint(1, 3)
            bid = price - Decimal("0.01")
            out.quotes.append(
                (ts + 200, update_id, bid, Decimal("1.5"), price + Decimal("0.01"), Decimal("2.5"))
            )
    return out


def trade_message(symbol: str, t: Trade) -> bytes:
    payload = {
        "e": "trade", "E": t.ts_us + 100, "s": symbol, "t": t.trade_id, "p": f"{t.price:.8f}",
        "q": f"{t.qty:.8f}", "T": t.ts_us, "m": t.buyer_maker, "M": True,
    }  # fmt: skip
    return orjson.dumps({"stream": f"{symbol.lower()}@trade", "data": payload})


def quote_message(symbol: str, q: tuple) -> bytes:
    _, u, bid, bq, ask, aq = q
    payload = {
        "u": u,
        "s": symbol,
        "b": f"{bid:.8f}",
        "B": f"{bq:.8f}",
        "a": f"{ask:.8f}",
        "A": f"{aq:.8f}",
    }
    return orjson.dumps({"stream": f"{symbol.lower()}@bookTicker", "data": payload})


def raw_lines(
    sd: SymbolDay, *, skip_ids: set[int] = frozenset(), duplicate_every: int = 0
) -> Iterator[tuple[int, bytes]]:
    """(recv_ns, line) in receive order; trades received 2 ms after their trade time."""
    events: list[tuple[int, bytes]] = []
    for i, t in enumerate(sd.trades):
        if t.trade_id in skip_ids:
            continue
        recv_ns = (t.ts_us + 2_000) * 1000
        line = ws_line(recv_ns, "ws-1", "us", trade_message(sd.symbol, t))
        events.append((recv_ns, line))
        if duplicate_every and i % duplicate_every == 0:
            events.append(
                (recv_ns + 1, ws_line(recv_ns + 1, "ws-2", "us", trade_message(sd.symbol, t)))
            )
    for q in sd.quotes:
        recv_ns = q[0] * 1000
        events.append((recv_ns, ws_line(recv_ns, "ws-1", "us", quote_message(sd.symbol, q))))
    events.sort(key=lambda e: e[0])
    return iter(events)


def repair_lines(sd: SymbolDay, ids: set[int], recv_ns: int) -> list[bytes]:
    """The REST historicalTrades shape for ``ids``, as the collector's repairer writes it."""
    lines = []
    for t in sd.trades:
        if t.trade_id in ids:
            payload = {
                "id": t.trade_id, "price": f"{t.price:.8f}", "qty": f"{t.qty:.8f}",
                "quoteQty": f"{t.price * t.qty:.8f}", "time": t.ts_us,
                "isBuyerMaker": t.buyer_maker, "isBestMatch": True,
            }  # fmt: skip
            lines.append(
                repaired_line(
                    recv_ns, f"{sd.symbol.lower()}@trade", "us", "historicalTrades", payload
                )
            )
    return lines


def write_raw(
    layout: LakeLayout, symbol: str, events: Iterator[tuple[int, bytes]], rotate_s: int = 300
) -> list[Path]:
    """Seal the events into part files filed by receive day, rotated every ``rotate_s``."""
    files: list[Path] = []
    buckets: dict[tuple[str, int], list[bytes]] = {}
    for recv_ns, line in events:
        dt = datetime.fromtimestamp(recv_ns / 1e9, tz=UTC)
        day = dt.date().isoformat()
        bucket = (recv_ns // 1_000_000_000) // rotate_s
        buckets.setdefault((day, bucket), []).append(line)
    counters: dict[str, int] = {}
    for (day, _), lines in sorted(buckets.items()):
        folder = layout.raw_day_dir(symbol, day)
        folder.mkdir(parents=True, exist_ok=True)
        n = counters.get(day, len(list(folder.glob("part-*"))))
        counters[day] = n + 1
        path = folder / part_file_name(n)
        path.write_bytes(b"".join(lines))
        files.append(path)
    return files


def append_part(layout: LakeLayout, symbol: str, day: str, lines: list[bytes]) -> Path:
    """One more sealed part file in a day folder (late repair, malformed lines, ...)."""
    folder = layout.raw_day_dir(symbol, day)
    folder.mkdir(parents=True, exist_ok=True)
    n = len(list(folder.glob("part-*")))
    path = folder / part_file_name(n)
    path.write_bytes(b"".join(lines))
    return path


def disconnect_line(recv_ns: int) -> bytes:
    return session_line(recv_ns, "ws-1", "disconnect", reason="test")


# reference klines -------------------------------------------------------------------------------
def reference_klines_1m(sd: SymbolDay) -> list[list]:
    """Binance-shaped 1 m klines from the generated trades (ms times, decimal strings).

    Minutes between the first and the last trade without trades repeat the previous close
    with zero volume, as Binance does.
    """
    by_min: dict[int, list[Trade]] = {}
    for t in sd.trades:
        by_min.setdefault(t.ts_us // (60 * US), []).append(t)
    rows, prev_close = [], None
    if not by_min:
        return rows
    for minute in range(min(by_min), max(by_min) + 1):
        ts = by_min.get(minute, [])
        open_ms = minute * 60_000
        if ts:
            ts.sort(key=lambda t: (t.ts_us, t.trade_id))
            o, c = ts[0].price, ts[-1].price
            h, lo = max(t.price for t in ts), min(t.price for t in ts)
            vol = sum((t.qty for t in ts), Decimal(0))
            qv = sum((t.price * t.qty for t in ts), Decimal(0))
            tb = sum((t.qty for t in ts if not t.buyer_maker), Decimal(0))
            tq = sum((t.price * t.qty for t in ts if not t.buyer_maker), Decimal(0))
            prev_close = c
        else:
            o = h = lo = c = prev_close
            vol = qv = tb = tq = Decimal(0)
        ohlcv = [f"{x:.8f}" for x in (o, h, lo, c, vol)]
        tail = [f"{qv:.8f}", len(ts), f"{tb:.8f}", f"{tq:.8f}", "0"]
        rows.append([open_ms, *ohlcv, open_ms + 59_999, *tail])
    return rows


class KlinesServer:
    """A loopback ``/api/v3/klines`` server answering from reference klines."""

    def __init__(self, klines: dict[str, list[list]]) -> None:
        self.klines = klines
        self.requests: list[str] = []
        handler = self._handler()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:
                url = urlparse(self.path)
                server.requests.append(self.path)
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                if url.path != "/api/v3/klines":
                    self.send_response(404)
                    self.end_headers()
                    return
                rows = server.klines.get(q.get("symbol", ""), [])
                start = int(q.get("startTime", 0))
                end = int(q.get("endTime", 2**62))
                limit = int(q.get("limit", 500))
                sel = [r for r in rows if start <= r[0] <= end][:limit]
                body = json.dumps(sel).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler

    def __enter__(self) -> KlinesServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def next_day(day: str) -> str:
    return (datetime.fromisoformat(day) + timedelta(days=1)).date().isoformat()
