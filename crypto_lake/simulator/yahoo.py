"""A loopback Yahoo Finance stand-in: what yfinance 1.7 asks Yahoo, answered in Yahoo's format.

It powers the demo (``./dev demo`` starts it and points ``macro.yahoo_base_url`` at it, so
macro minutes and the synthetic DXY come without any network) and the macro tests.
``python -m crypto_lake.simulator.yahoo --port 0 --port-file F`` runs it from the command line;
``YahooServer`` runs it on a thread (``with YahooServer() as srv: srv.url``).

Endpoints (every *.yahoo.com host is routed here by lib/macro/yahoo.py's adapter; the original
host arrives in ``X-Yahoo-Host``):

- ``GET /`` (fc.yahoo.com): 404 with an ``A3`` cookie, as Yahoo does;
- ``GET /v1/test/getcrumb`` (query1/query2): a crumb as text;
- ``GET /consent`` (guce.yahoo.com), ``POST /v2/collectConsent``, ``GET /copyConsent``: the
  csrf cookie strategy yfinance falls back to after a 4xx; answered without a consent form;
- ``GET /v8/finance/chart/{ticker}``: ``range=1d&interval=1d`` (yfinance's timezone probe) and
  ``period1/period2&interval=1m`` (the bars). The JSON is the chart API's shape: ``meta`` with
  ``exchangeTimezoneName``, ``currentTradingPeriod`` and ``tradingPeriods``, then ``timestamp``
  and ``indicators.quote[0]`` with open/high/low/close/volume lists. A window without bars
  gets ``"indicators": {"quote": [{}]}`` and no timestamps, as Yahoo answers for a weekend.

Bars are generated for every in-session minute of the requested window that has closed
(from the project's session calendar, so today's bars stop at the current minute), for any
ticker: the default macro tickers and the DXY inputs (USDSEK=X...) get prices near their real
level, others 100. Prices are deterministic (a slow sine around the base price). Knobs make the
answer empty, rate-limited (HTTP 429), failing (HTTP 500), missing chosen minutes, shifted in
price, or make the whole service answer one status (``down_status = 503``: Yahoo is down).
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import threading
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit
from zoneinfo import ZoneInfo

import numpy as np

from crypto_lake.lib.core.fsutil import atomic_write_bytes
from crypto_lake.lib.core.logs import get_logger, setup_logging
from crypto_lake.lib.macro.calendar import session_kind, session_minutes_utc

log = get_logger("simulator.yahoo")

META = {
    "us_equity": ("America/New_York", "ETF", "PCX", "NYSEArca"),
    "cme_future": ("America/New_York", "FUTURE", "CME", "CME"),
    "fx": ("Europe/London", "CURRENCY", "CCY", "CCY"),
}
BASE_PRICE = {"SPY": 590.0, "UUP": 28.0, "ES=F": 5950.0, "EURUSD=X": 1.08, "GBPUSD=X": 1.27,
              "USDJPY=X": 151.0, "USDCAD=X": 1.39, "USDCHF=X": 0.88, "USDSEK=X": 10.6}  # fmt: skip
VALID_RANGES = ["1d", "5d", "1mo", "3mo", "6mo", "1y", "2y", "5y", "10y", "ytd", "max"]


class YahooState:
    """Knobs and a request log, shared between the test and the handler threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rate_limit: dict[str, int] = defaultdict(int)  # next N bar requests -> 429
        self.fail: dict[str, int] = defaultdict(int)  # next N bar requests -> 500
        self.empty: set[str] = set()  # answer bar requests with no bars
        self.chart_error: dict[str, str] = {}  # answer 404 + chart.error with this description
        self.drop: dict[str, set[int]] = defaultdict(set)  # epoch seconds left out
        self.price_shift: dict[str, float] = defaultdict(float)
        self.requests: list[tuple[str, str, dict[str, str]]] = []  # (host, path, params)
        self.down_status: int | None = None  # every request answered with this status

    def chart_requests(self, ticker: str | None = None) -> list[dict[str, str]]:
        with self.lock:
            return [
                p
                for _, path, p in self.requests
                if path.startswith("/v8/finance/chart/")
                and p.get("interval") == "1m"
                and (ticker is None or unquote(path.rsplit("/", 1)[1]) == ticker)
            ]


def _period(zone: ZoneInfo, start: int, end: int) -> dict[str, object]:
    local = datetime.fromtimestamp(start, UTC).astimezone(zone)
    offset = int(local.utcoffset().total_seconds())  # type: ignore[union-attr]
    return {"timezone": local.tzname(), "start": start, "end": end, "gmtoffset": offset}


def trading_periods(ticker: str, p1: int, p2: int) -> list[list[dict[str, object]]]:
    """One regular period per local date of the window, as Yahoo lists them for 1m requests."""
    kind = session_kind(ticker)
    zone = ZoneInfo(META[kind][0])
    first = datetime.fromtimestamp(p1, UTC).astimezone(zone).date()
    last = datetime.fromtimestamp(max(p1, p2 - 1), UTC).astimezone(zone).date()
    out = []
    d = first
    while d <= last:
        if kind == "us_equity":
            mins = session_minutes_utc(ticker, d)  # the UTC day == NY session day here
            if mins.size:
                s = int(mins[0].astype("int64"))
                out.append([_period(zone, s, int(mins[-1].astype("int64")) + 60)])
        else:  # futures/FX: the whole local day, so yfinance's regular-hours filter keeps all
            s = int(datetime.combine(d, datetime.min.time(), zone).timestamp())
            e = int(datetime.combine(d + timedelta(days=1), datetime.min.time(), zone).timestamp())
            out.append([_period(zone, s, e)])
        d += timedelta(days=1)
    return out


def bar_timestamps(ticker: str, p1: int, p2: int) -> np.ndarray:
    """Every in-session minute start in [p1, p2) as epoch seconds."""
    d0 = datetime.fromtimestamp(p1, UTC).date()
    d1 = datetime.fromtimestamp(max(p1, p2 - 1), UTC).date()
    days = [d0 + timedelta(days=i) for i in range((d1 - d0).days + 1)]
    mins = np.concatenate([session_minutes_utc(ticker, d) for d in days] or [np.array([], "M8[s]")])
    secs = mins.astype("int64")
    return secs[(secs >= p1) & (secs < p2)]


def price_at(ticker: str, ts: int, shift: float) -> float:
    base = BASE_PRICE.get(ticker, 100.0) * (1 + shift)
    return round(base * (1 + 0.002 * math.sin(ts / 3600.0)), 6)


def chart_json(state: YahooState, ticker: str, params: dict[str, str]) -> dict[str, object]:
    kind = session_kind(ticker)
    tz_name, instrument, exch, full = META[kind]
    zone = ZoneInfo(tz_name)
    now = int(datetime.now(UTC).timestamp())
    p1, p2 = int(params.get("period1", now - 86400)), int(params.get("period2", now))
    tps = trading_periods(ticker, p1, p2)
    cur = tps[-1][0] if tps else _period(zone, p1, p2)
    meta: dict[str, object] = {
        "currency": "USD", "symbol": ticker, "exchangeName": exch, "fullExchangeName": full,
        "instrumentType": instrument, "firstTradeDate": 946684800, "regularMarketTime": now,
        "hasPrePostMarketData": kind == "us_equity", "gmtoffset": cur["gmtoffset"],
        "timezone": cur["timezone"], "exchangeTimezoneName": tz_name,
        "regularMarketPrice": BASE_PRICE.get(ticker, 100.0), "priceHint": 2,
        "currentTradingPeriod": {"pre": cur, "regular": cur, "post": cur},
        "dataGranularity": params.get("interval", "1m"), "range": params.get("range", ""),
        "validRanges": VALID_RANGES,
    }  # fmt: skip
    result: dict[str, object] = {"meta": meta, "indicators": {"quote": [{}]}}
    with state.lock:
        empty, dropped = ticker in state.empty, set(state.drop[ticker])
        shift = state.price_shift[ticker]
    if params.get("interval") == "1m" and not empty:
        ts = [int(t) for t in bar_timestamps(ticker, p1, p2) if int(t) not in dropped]
        if ts:
            meta["tradingPeriods"] = tps
            closes = [price_at(ticker, t, shift) for t in ts]
            opens = [price_at(ticker, t - 60, shift) for t in ts]
            result["timestamp"] = ts
            result["indicators"] = {"quote": [{
                "open": opens, "close": closes,
                "high": [round(max(o, c) * 1.0001, 6) for o, c in zip(opens, closes, strict=True)],
                "low": [round(min(o, c) * 0.9999, 6) for o, c in zip(opens, closes, strict=True)],
                "volume": [0 if kind == "fx" else 1000 + t % 97 for t in ts],
            }]}  # fmt: skip
    return {"chart": {"result": [result], "error": None}}


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass

    def _send(self, code: int, body: bytes, ctype: str, extra: dict[str, str] | None = None):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _down(self) -> bool:
        """Answer with the ``down_status`` knob (Yahoo is down) when it is set."""
        status = self.server.state.down_status
        if status is None:
            return False
        self._send(status, b"<html>Service Unavailable</html>", "text/html")
        return True

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self._record()
        if not self._down():
            self._send(200, b"<html><body>ok</body></html>", "text/html")

    def _record(self) -> tuple[str, dict[str, str]]:
        parts = urlsplit(self.path)
        params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        with self.server.state.lock:
            self.server.state.requests.append(
                (self.headers.get("X-Yahoo-Host", ""), parts.path, params)
            )
        return parts.path, params

    def do_GET(self) -> None:
        path, params = self._record()
        state = self.server.state
        if self._down():
            return
        if path == "/":
            expires = (datetime.now(UTC) + timedelta(days=365)).strftime(
                "%a, %d %b %Y %H:%M:%S GMT"
            )
            cookie = f"A3=d=loopback; Expires={expires}; Domain=.yahoo.com; Path=/"
            self._send(404, b"<html>not found</html>", "text/html", {"Set-Cookie": cookie})
        elif path == "/v1/test/getcrumb":
            self._send(200, b"loopbackCrumb", "text/plain")
        elif path in ("/consent", "/copyConsent"):
            self._send(200, b"<html><body>no consent needed</body></html>", "text/html")
        elif path.startswith("/v8/finance/chart/"):
            self._chart(state, unquote(path.rsplit("/", 1)[1]), params)
        else:
            self._send(404, b'{"error": "not found"}', "application/json")

    def _chart(self, state: YahooState, ticker: str, params: dict[str, str]) -> None:
        if params.get("interval") == "1m":
            with state.lock:
                if state.rate_limit[ticker] > 0:
                    state.rate_limit[ticker] -= 1
                    self._send(429, b"Too Many Requests", "text/plain", {"Retry-After": "1"})
                    return
                if ticker in state.chart_error:
                    error = {"code": "Not Found", "description": state.chart_error[ticker]}
                    body = json.dumps({"chart": {"result": None, "error": error}}).encode()
                    self._send(404, body, "application/json")
                    return
                if state.fail[ticker] > 0:
                    state.fail[ticker] -= 1
                    self._send(500, b"<html>Internal error</html>", "text/html")
                    return
        body = json.dumps(chart_json(state, ticker, params)).encode()
        self._send(200, body, "application/json")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: YahooState


class YahooServer:
    """Start with ``with YahooServer() as srv:``; ``srv.url`` is the base URL to configure."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.state = YahooState()
        self._server = _Server((host, port), _Handler)
        self._server.state = self.state
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> YahooServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGINT/SIGTERM; print the base URL and write the port to ``--port-file``."""
    p = argparse.ArgumentParser(
        prog="python -m crypto_lake.simulator.yahoo",
        description="Loopback Yahoo Finance stand-in for yfinance",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--port-file", type=Path, default=None, help="write the bound port here")
    args = p.parse_args(argv)  # fmt: skip
    setup_logging()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with YahooServer(args.host, args.port) as server:
        if args.port_file is not None:
            atomic_write_bytes(args.port_file, f"{server.port}\n".encode(), durable=False)
        # The URL is the CLI's output (what a user or launcher reads), hence stdout.
        sys.stdout.write(f"yahoo_url={server.url}\n")
        sys.stdout.flush()
        log.info("Yahoo stand-in serving on %s; point macro.yahoo_base_url at it", server.url)
        stop.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
