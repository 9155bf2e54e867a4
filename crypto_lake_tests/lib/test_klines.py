"""fetch_klines against a loopback HTTP server: paging, Retry-After on 429, stop on 418."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import orjson
import pyarrow.parquet as pq
import pytest

from crypto_lake.lib.market.klines import KlinesBanned, KlinesError, fetch_klines, write_klines

START = 1_709_251_200_000  # 2024-03-01T00:00Z in ms


def _kline(open_ms: int) -> list:
    return [open_ms, "60000.10000000", "60010.00000000", "59990.00000000", "60001.00000000",
            "1.50000000", open_ms + 59_999, "90001.50000000", 42, "0.75000000",
            "45000.75000000", "0"]  # fmt: skip


class _Server:
    """Serves /api/v3/klines from a fixed day of 1 m klines, with scripted failures."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.script: list[tuple[int, dict]] = []  # (status, headers) answered first, in order
        self.day_start = START  # the day of klines served
        state = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                q = {k: v[0] for k, v in parse_qs(urlparse(self.path).query).items()}
                state.requests.append(q)
                if state.script:
                    status, headers = state.script.pop(0)
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(b'{"code":-1003,"msg":"Too many requests"}')
                    return
                start, end = int(q["startTime"]), int(q["endTime"])
                limit = int(q.get("limit", 500))
                day = state.day_start
                first = max(day, -(-start // 60_000) * 60_000)
                rows = [_kline(t) for t in range(first, min(end + 1, day + 86_400_000), 60_000)]
                body = orjson.dumps(rows[:limit])
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server() -> Iterator[_Server]:
    s = _Server()
    yield s
    s.httpd.shutdown()


def test_fetches_a_day_in_pages_of_1000(server):
    rows = fetch_klines(server.url, "BTCUSDT", "1m", START, START + 86_400_000)
    assert len(rows) == 1440
    assert [r[0] for r in rows] == list(range(START, START + 86_400_000, 60_000))
    assert len(server.requests) == 2 and server.requests[0]["limit"] == "1000"
    assert server.requests[1]["startTime"] == str(START + 1000 * 60_000)


def test_klines_still_open_when_asked_are_not_returned(server):
    """Intraday the exchange also answers the running minute (and, here, later ones): a
    partial kline must never be stored or compared with our bars."""
    import time

    now_ms = time.time_ns() // 1_000_000
    server.day_start = now_ms - now_ms % 60_000 - 5 * 60_000
    rows = fetch_klines(server.url, "BTCUSDT", "1m", server.day_start, now_ms + 3_600_000)
    asked_ms = time.time_ns() // 1_000_000
    assert 4 <= len(rows) <= 5  # the five minutes before the running one, less a just-closed one
    assert all(int(r[6]) < asked_ms for r in rows)
    assert [int(r[0]) for r in rows] == [server.day_start + i * 60_000 for i in range(len(rows))]


def test_429_waits_retry_after_then_succeeds(server):
    server.script = [(429, {"Retry-After": "3"}), (503, {})]
    waits: list[float] = []
    rows = fetch_klines(server.url, "BTCUSDT", "1m", START, START + 600_000, sleep=waits.append)
    assert len(rows) == 10
    assert waits[0] == 3.0 and len(waits) == 2


def test_418_stops_immediately(server):
    server.script = [(418, {"Retry-After": "120"})]
    waits: list[float] = []
    with pytest.raises(KlinesBanned) as exc:
        fetch_klines(server.url, "BTCUSDT", "1m", START, START + 600_000, sleep=waits.append)
    assert exc.value.retry_after == 120.0 and waits == [] and len(server.requests) == 1


def test_gives_up_after_max_retries(server):
    server.script = [(429, {"Retry-After": "0"})] * 3
    with pytest.raises(KlinesError):
        fetch_klines(server.url, "BTCUSDT", "1m", START, START + 600_000, max_retries=2,
                     sleep=lambda s: None)  # fmt: skip


def test_write_klines_exact_and_deterministic(server, tmp_path):
    rows = fetch_klines(server.url, "BTCUSDT", "1m", START, START + 3_600_000)
    n = write_klines(rows + rows[:5], tmp_path / "a.parquet", symbol="BTCUSDT")
    write_klines(list(reversed(rows)), tmp_path / "b.parquet", symbol="BTCUSDT")
    assert n == 60  # duplicates collapse by open time
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    t = pq.read_table(tmp_path / "a.parquet").to_pylist()
    assert t[0]["open"] == Decimal("60000.10000000") and t[0]["trade_count"] == 42
    assert t[0]["open_time"].isoformat() == "2024-03-01T00:00:00+00:00"


def test_rejects_bad_symbol_and_interval():
    with pytest.raises(ValueError):
        fetch_klines("http://127.0.0.1:9", "btc/usdt", "1m", START, START + 60_000)
    with pytest.raises(ValueError):
        fetch_klines("http://127.0.0.1:9", "BTCUSDT", "7m", START, START + 60_000)
