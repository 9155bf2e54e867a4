"""Klines from REST: paging, pacing within the request-weight budget, Retry-After on 429, an
immediate stop on 418 that later runs respect, and the day files' completeness facts.

Wire-level cases use a scripted loopback server; pacing, bans and day facts run against the
exchange simulator with seeded history on a fake clock (``klines_sim``), so waits for the next
minute take no real time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import orjson
import pyarrow.parquet as pq
import pytest

from crypto_lake.lib.market.klines import (
    DAY_MINUTES,
    KlinesBanned,
    KlinesClient,
    KlinesError,
    WeightPacer,
    fetch_klines,
    stored_klines,
    write_klines,
    write_klines_day,
)
from crypto_lake_tests.lib import klines_sim
from crypto_lake_tests.lib.klines_sim import FakeClock, day_start_us, utc_day

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
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()


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


def test_429_without_retry_after_waits_for_the_next_minute(server):
    """Binance's weight window is the calendar minute: retrying a second later only meets
    another 429 (and ignoring 429s escalates to a 418 ban)."""
    server.script = [(429, {})]
    clock = FakeClock(600.0 + 15)
    client = KlinesClient(server.url, clock=clock.time, sleep=clock.sleep)
    rows = client.fetch("BTCUSDT", "1m", START, START + 600_000).rows
    assert len(rows) == 10 and client.usage.http_429 == 1
    assert clock.sleeps == [46.0]  # to the next minute, plus a second of slack


def test_an_interrupted_write_leaves_the_previous_file_whole(tmp_path, monkeypatch):
    rows = [_kline(START + i * 60_000) for i in range(DAY_MINUTES)]
    out = tmp_path / "part-0.parquet"
    write_klines(rows[:10], out, symbol="BTCUSDT")
    before = out.read_bytes()

    def torn(table, where, **kwargs):
        with open(where, "wb") as fh:
            fh.write(b"PAR1 half a file")
        raise KeyboardInterrupt  # the run is stopped mid-write

    monkeypatch.setattr(pq, "write_table", torn)
    with pytest.raises(KeyboardInterrupt):
        write_klines(rows, out, symbol="BTCUSDT")
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["part-0.parquet"]


# --- pacing (no network) -------------------------------------------------------------------
def test_pacer_waits_for_the_next_minute_instead_of_going_over_budget():
    clock = FakeClock(120.0 + 50)  # 50 s into a minute
    pacer = WeightPacer(10, clock.time, clock.sleep)
    assert [pacer.wait_for(2) for _ in range(5)] == [0.0] * 5  # 10 of 10
    assert pacer.wait_for(2) == 11.0  # to the next minute and a second of slack
    assert (clock.now, pacer.used) == (181.0, 2)
    pacer.observe(9)  # the exchange's count includes other clients on the IP (the collector)
    assert pacer.wait_for(2) == 60.0 and clock.now == 241.0
    clock.now = 301.0  # a new minute starts from nothing
    assert pacer.wait_for(2) == 0.0 and pacer.used == 2
    assert clock.sleeps == [11.0, 60.0]


# --- against the exchange simulator (seeded history, fake clock) ---------------------------
US = klines_sim.US


def _client(ex: klines_sim.Exchange, **kwargs) -> KlinesClient:
    return KlinesClient(ex.url, clock=ex.clock.time, sleep=ex.clock.sleep, **kwargs)


def test_pacing_keeps_many_pages_within_a_small_limit_without_any_429(monkeypatch):
    days = [utc_day(n) for n in (4, 3, 2, 1)]
    since = day_start_us(days[0]) - 3600 * US
    with klines_sim.exchange(monkeypatch, dict.fromkeys(["BTCUSDT", "ETHUSDT"], since),
                             weight_limit=24) as ex:  # fmt: skip
        client = _client(ex, weight_limit=24, budget_share=0.5)  # 12 per minute: 6 requests
        for symbol in ("BTCUSDT", "ETHUSDT"):
            for day in days:
                got = client.fetch_day(symbol, day)
                assert len(got.rows) == got.minutes_expected == DAY_MINUTES and got.complete
                assert (got.usage.requests, got.usage.weight) == (2, 4)  # 1000 + 440 rows
        assert set(ex.statuses()) == {200} and client.usage.http_429 == 0
        assert len(ex.verdicts) == client.usage.requests == 16
        assert max(v.used for v in ex.verdicts) == 12  # the IP's count per minute: the budget
        assert client.usage.max_used_weight == 12
        assert ex.clock.sleeps == [61.0, 60.0]  # 6 + 6 + 4 requests in three minutes

        # The same fetch with a budget the exchange does not grant meets 429s (and, honouring
        # their Retry-After, still gets every row).
        greedy = _client(ex, weight_limit=6000)
        assert all(greedy.fetch_day(s, d).complete for s in ("BTCUSDT", "ETHUSDT") for d in days)
        assert greedy.usage.http_429 > 0 and 429 in ex.statuses(16)


def test_429_retry_after_is_honoured_so_the_ban_never_escalates(monkeypatch):
    day = utc_day(1)
    with klines_sim.exchange(monkeypatch, {"BTCUSDT": day_start_us(day) - 3600 * US}) as ex:
        ex.sim.faults.rest_418_after_ignored = 1  # one request inside a 429's wait: 418
        ex.sim.faults.rest_429(2, retry_after_s=7)
        got = _client(ex).fetch_day("BTCUSDT", day)
        assert got.complete and len(got.rows) == DAY_MINUTES
        assert ex.statuses() == [429, 429, 200, 200]
        assert ex.clock.sleeps == [7.0, 7.0] and got.usage.http_429 == 2


def test_418_stops_at_once_and_no_request_goes_out_until_the_ban_ends(monkeypatch, tmp_path):
    from crypto_lake.lib.market.klines import utc_text

    day = utc_day(1)
    ban_file = tmp_path / "state" / "binance_rest_ban.json"
    with klines_sim.exchange(monkeypatch, {"BTCUSDT": day_start_us(day) - 3600 * US}) as ex:
        client = _client(ex, ban_file=ban_file)
        ex.provoke_ban(300)  # another client on our IP ignored a 429
        n = len(ex.verdicts)
        with pytest.raises(KlinesBanned) as exc:
            client.fetch_day("BTCUSDT", day)
        assert ex.statuses(n) == [418] and ex.clock.sleeps == []
        until = exc.value.until
        assert until == ex.clock.now + 300 and exc.value.retry_after == 300
        assert "418" in str(exc.value) and utc_text(until) in str(exc.value)
        # Neither this run's client nor the next run's sends anything during the ban.
        for again in (client, _client(ex, ban_file=ban_file)):
            with pytest.raises(KlinesBanned, match="no request sent"):
                again.fetch_day("BTCUSDT", day)
        assert len(ex.verdicts) == n + 1
        ex.clock.now = until + 1
        assert _client(ex, ban_file=ban_file).fetch_day("BTCUSDT", day).complete


def test_day_facts_say_what_is_complete_and_a_rerun_can_read_them(monkeypatch, tmp_path):
    """A closed day is complete with all 1440 minutes; the day a symbol started trading, with
    every minute from its first kline (the exchange has none before); a day before that, with
    none; today never. The facts live in the file, so a re-run reads them back."""
    listed, before, today = utc_day(2), utc_day(3), utc_day(0)
    listing_us = day_start_us(listed) + 10 * 3600 * US  # ETHUSDT's first trade: 10:00
    history = {"BTCUSDT": day_start_us(before) - 3600 * US, "ETHUSDT": listing_us}
    with klines_sim.exchange(monkeypatch, history) as ex:
        client = _client(ex)
        first = client.fetch_day("ETHUSDT", listed)
        assert len(first.rows) == first.minutes_expected == 14 * 60 and first.complete
        assert first.trading_from_ms == listing_us // 1000
        assert first.usage.requests == 2  # one page, and whether any kline came before
        not_yet = client.fetch_day("ETHUSDT", before)
        assert (not_yet.rows, not_yet.minutes_expected, not_yet.complete) == ([], 0, True)
        running = client.fetch_day("BTCUSDT", today)
        assert len(running.rows) == running.minutes_expected and not running.complete
        full = client.fetch_day("BTCUSDT", before)
        assert len(full.rows) == full.minutes_expected == DAY_MINUTES and full.complete
        assert full.trading_from_ms is None and full.usage.requests == 2

    def path(symbol: str, day: str, name: str = "part-0.parquet"):
        return tmp_path / symbol / day / name

    for got in (first, not_yet, running, full):
        stored = write_klines_day(got, path(got.symbol, got.day))
        assert stored_klines(path(got.symbol, got.day), got.symbol, got.day) == stored
        assert (stored.rows, stored.complete) == (len(got.rows), got.complete)
    assert (
        stored_klines(path("BTCUSDT", before), "BTCUSDT", listed).complete is False
    )  # not its day
    lost = path("BTCUSDT", before, "lost.parquet")
    write_klines(full.rows[:-1], lost, symbol="BTCUSDT", facts=full.facts())
    assert stored_klines(lost, "BTCUSDT", before).complete is False
    # Files from before facts were recorded: complete when they hold all 1440 minutes.
    legacy = path("BTCUSDT", before, "legacy.parquet")
    write_klines(full.rows, legacy, symbol="BTCUSDT")
    assert stored_klines(legacy, "BTCUSDT", before).complete
    write_klines(full.rows[1:], legacy, symbol="BTCUSDT")
    assert not stored_klines(legacy, "BTCUSDT", before).complete
    torn = path("BTCUSDT", before, "torn.parquet")
    torn.write_bytes(b"PAR1 half a file")
    assert stored_klines(torn, "BTCUSDT", before) is None
    assert stored_klines(path("BTCUSDT", "2020-01-01"), "BTCUSDT", "2020-01-01") is None


def test_config_knobs_default_to_half_of_binances_limit_and_are_validated():
    from crypto_lake.lib.core.config import ConfigError, load_config

    binance = load_config(environ={"CRYPTO_LAKE_CONFIG": "/dev/null"}).binance
    assert (binance.rest_weight_limit_per_minute, binance.rest_weight_budget_share) == (6000, 0.5)
    assert (binance.rest_timeout_seconds, binance.rest_max_retries) == (10.0, 5)
    bad = [("REST_WEIGHT_BUDGET_SHARE", "0"), ("REST_WEIGHT_BUDGET_SHARE", "1.5"),
           ("REST_WEIGHT_LIMIT_PER_MINUTE", "0"), ("REST_WEIGHT_LIMIT_PER_MINUTE", "3"),
           ("REST_MAX_RETRIES", "-1"), ("REST_TIMEOUT_SECONDS", "0")]  # fmt: skip
    for key, value in bad:
        env = {"CRYPTO_LAKE_CONFIG": "/dev/null", f"CRYPTO_LAKE__BINANCE__{key}": value}
        with pytest.raises(ConfigError, match="binance"):
            load_config(environ=env)
