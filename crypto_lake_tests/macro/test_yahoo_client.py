"""yfinance's real code against the loopback Yahoo: routing, outcomes, retries."""

import socket
import time
from pathlib import Path

import pandas as pd
import pytest
import requests

from crypto_lake.lib.macro.yahoo import (
    YahooFetchError,
    YahooSettings,
    fetch_minute_bars,
    routed_session,
)
from crypto_lake.simulator.yahoo import YahooServer
from crypto_lake_tests.macro.days import utc


def test_routed_session_sends_every_yahoo_host_to_the_loopback(yahoo: YahooServer) -> None:
    session = routed_session(yahoo.url)
    r = session.get("https://query1.finance.yahoo.com/v1/test/getcrumb", timeout=5)
    assert r.status_code == 200 and r.text == "loopbackCrumb"
    assert r.url.startswith("https://query1.finance.yahoo.com/")  # yfinance sees Yahoo's URL
    session.get("https://fc.yahoo.com", timeout=5)
    assert session.cookies.get("A3", domain=".yahoo.com") == "d=loopback"
    hosts = [h for h, _, _ in yahoo.state.requests]
    assert hosts == ["query1.finance.yahoo.com", "fc.yahoo.com"]
    # Non-Yahoo hosts are not rewritten (and would fail here: nothing listens on port 9).
    with pytest.raises(requests.ConnectionError):
        session.get("http://127.0.0.1:9/", timeout=2)


def test_normal_day_goes_through_cookie_crumb_and_chart(
    yahoo: YahooServer, settings: YahooSettings
) -> None:
    result = fetch_minute_bars("SPY", utc("2026-11-20"), utc("2026-11-21"), settings)
    assert result.status == "ok" and result.attempts == 1
    assert len(result.frame) == 390
    first = result.frame.index[0]
    assert str(first.tz) == "America/New_York"
    assert first.tz_convert("UTC") == pd.Timestamp("2026-11-20 14:30", tz="UTC")
    chart = yahoo.state.chart_requests("SPY")
    assert chart[-1]["period1"] == str(int(utc("2026-11-20").timestamp()))
    assert chart[-1]["period2"] == str(int(utc("2026-11-21").timestamp()))
    assert chart[-1]["interval"] == "1m" and chart[-1]["crumb"] == "loopbackCrumb"


def test_weekend_is_an_empty_answer(yahoo: YahooServer, settings: YahooSettings) -> None:
    result = fetch_minute_bars("SPY", utc("2026-11-21"), utc("2026-11-22"), settings)
    assert result.status == "empty" and result.frame.empty
    assert "no price data" in result.reason


def test_empty_answer_on_a_trading_day(yahoo: YahooServer, settings: YahooSettings) -> None:
    yahoo.state.empty.add("ES=F")
    result = fetch_minute_bars("ES=F", utc("2026-11-20"), utc("2026-11-21"), settings)
    assert result.status == "empty" and result.attempts == 1


def test_429_then_success_backs_off_and_retries(
    yahoo: YahooServer, settings: YahooSettings
) -> None:
    # yfinance itself retries a 429 once (after switching cookie strategy) and then raises
    # YFRateLimitError; two 429s therefore cost one of our attempts.
    yahoo.state.rate_limit["UUP"] = 2
    result = fetch_minute_bars("UUP", utc("2026-11-20"), utc("2026-11-21"), settings)
    assert result.status == "ok" and len(result.frame) == 390
    assert (result.attempts, result.rate_limited) == (2, 1)
    assert len(yahoo.state.chart_requests("UUP")) == 3


def test_persistent_429_raises_after_all_attempts(
    yahoo: YahooServer, settings: YahooSettings
) -> None:
    yahoo.state.rate_limit["UUP"] = 100
    with pytest.raises(YahooFetchError) as err:
        fetch_minute_bars("UUP", utc("2026-11-20"), utc("2026-11-21"), settings)
    assert err.value.attempts == settings.max_attempts
    assert err.value.rate_limited == settings.max_attempts
    assert err.value.source_down  # counts for the circuit breaker


def test_server_error_then_success(yahoo: YahooServer, settings: YahooSettings) -> None:
    yahoo.state.fail["GBPUSD=X"] = 2  # yfinance's own retry eats one, ours the other
    result = fetch_minute_bars("GBPUSD=X", utc("2026-11-20"), utc("2026-11-21"), settings)
    assert result.status == "ok" and result.attempts == 2 and result.rate_limited == 0
    assert any("JSONDecodeError" in e or "Error" in e for e in result.errors)


def test_hidden_per_ticker_error_is_surfaced_not_stored_as_empty(
    yahoo: YahooServer, settings: YahooSettings
) -> None:
    # By default yfinance logs this and returns an empty frame, which would look like a quiet
    # day; Yahoo's explicit reason makes it an error, without pointless retries.
    yahoo.state.chart_error["USDCHF=X"] = "No data found, symbol may be delisted"
    with pytest.raises(YahooFetchError, match="symbol may be delisted") as err:
        fetch_minute_bars("USDCHF=X", utc("2026-11-20"), utc("2026-11-21"), settings)
    assert err.value.attempts == 1
    assert not err.value.source_down  # Yahoo answered: the source is up


def test_unreachable_yahoo_fails_fast(yf_cache_dir: Path) -> None:
    """Connection refused is not worth 5 attempts with a minute of backoff: with the shipped
    retry settings a fetch gives up after 2 quick tries (offline, a run took ~200 s)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens
    settings = YahooSettings(
        base_url=f"http://127.0.0.1:{port}", max_attempts=5, backoff_base_seconds=2.0,
        backoff_cap_seconds=60.0, cache_dir=yf_cache_dir,
    )  # fmt: skip
    started = time.monotonic()
    with pytest.raises(YahooFetchError, match="ConnectionError") as err:
        fetch_minute_bars("SPY", utc("2026-11-20"), utc("2026-11-21"), settings)
    assert time.monotonic() - started < 5
    assert err.value.attempts == settings.connect_attempts == 2
    assert err.value.source_down


def test_naive_window_is_rejected(settings: YahooSettings) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        fetch_minute_bars(
            "SPY", utc("2026-11-20").replace(tzinfo=None), utc("2026-11-21"), settings
        )
