"""The one thin yfinance client: 1-minute bars for one ticker and window, with honest outcomes.

Everything the lake knows about Yahoo goes through :func:`fetch_minute_bars`. It runs
yfinance's real code (``Ticker.history``) and turns the ways yfinance fails into three outcomes:

- ``ok``: a non-empty frame;
- ``empty``: Yahoo answered with no bars (weekend, holiday, no data for the window). yfinance
  raises ``YFPricesMissingError`` without a Yahoo reason for this once its hidden errors are
  switched off;
- :class:`YahooFetchError`: rate limiting (HTTP 429, ``YFRateLimitError``) or any other error
  that persisted through ``max_attempts`` tries with capped exponential backoff and jitter;
  after ``connect_attempts`` tries when Yahoo cannot be reached at all (connection refused,
  DNS failure, timeout: an offline machine must fail in seconds, not minutes);
  immediately when Yahoo's answer carries an explicit ``chart.error`` (unknown ticker, window
  outside the 1-minute history), which retrying cannot fix. ``source_down`` tells the first
  two (the source failed: they count for the circuit breaker, lib/macro/source_health.py)
  from the last (Yahoo answered, about this ticker).

yfinance hides errors by default (it logs them and returns an empty frame), which would make a
failure look like an empty day; we switch that off through its documented config
(``yf.config.debug.hide_exceptions = False``) so every frame is checked.

Pointing yfinance somewhere else (tests use a loopback server): yfinance reads its chart host
from a module constant at call time, but the cookie/crumb hosts (``fc.yahoo.com``,
``query1.finance.yahoo.com/v1/test/getcrumb``, ``guce.yahoo.com/consent``,
``consent.yahoo.com``) are hard-coded. So instead of patching constants, a configured
``base_url`` gives yfinance an injected ``requests`` session whose transport adapter rewrites
every ``*.yahoo.com`` URL to ``base_url`` (path and query kept, original host sent as
``X-Yahoo-Host``). With no ``base_url`` yfinance uses its own session (curl_cffi with browser
impersonation), exactly as in production.
"""

from __future__ import annotations

import random
import time as _time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import pandas as pd
import requests
from requests.adapters import HTTPAdapter

from crypto_lake.lib.core.logs import get_logger

log = get_logger("macro.yahoo")

YAHOO_DOMAIN = "yahoo.com"


@dataclass(frozen=True)
class YahooSettings:
    """How to reach Yahoo and how hard to try."""

    base_url: str | None = None  # None: the real Yahoo through yfinance's own session
    timeout_seconds: float = 20.0
    max_attempts: int = 5
    connect_attempts: int = 2  # tries while Yahoo is unreachable (refused, DNS, timeout)
    backoff_base_seconds: float = 2.0
    backoff_cap_seconds: float = 60.0
    cache_dir: Path | None = None  # yfinance's timezone/cookie cache (sqlite); None: its default


@dataclass
class FetchResult:
    """What one ticker/window fetch produced."""

    ticker: str
    status: Literal["ok", "empty"]
    frame: pd.DataFrame
    attempts: int
    rate_limited: int  # how many tries ended in HTTP 429
    reason: str = ""
    errors: list[str] = field(default_factory=list)


class YahooFetchError(RuntimeError):
    """Yahoo kept failing (rate limits or errors) through every attempt.

    ``source_down`` is False only when Yahoo answered with an explicit error about the ticker
    or window: the source itself is up.
    """

    def __init__(
        self,
        ticker: str,
        attempts: int,
        rate_limited: int,
        errors: list[str],
        *,
        source_down: bool = True,
    ):
        self.ticker, self.attempts, self.rate_limited, self.errors = (
            ticker,
            attempts,
            rate_limited,
            errors,
        )
        self.source_down = source_down
        last = errors[-1] if errors else "unknown error"
        super().__init__(
            f"{ticker}: Yahoo failed {attempts} times ({rate_limited} rate-limited); last: {last}"
        )


class YahooRoutingAdapter(HTTPAdapter):
    """Sends every request for a ``*.yahoo.com`` host to ``base_url`` instead."""

    def __init__(self, base_url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._base = urlsplit(base_url.rstrip("/"))

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        parts = urlsplit(request.url or "")
        host = parts.hostname or ""
        if not (host == YAHOO_DOMAIN or host.endswith("." + YAHOO_DOMAIN)):
            return super().send(request, **kwargs)
        routed = request.copy()
        routed.url = urlunsplit(
            (self._base.scheme, self._base.netloc, self._base.path + parts.path, parts.query, "")
        )
        routed.headers["X-Yahoo-Host"] = host
        response = super().send(routed, **kwargs)
        # yfinance and requests' cookie jar keep seeing the Yahoo URL they asked for.
        response.url = request.url or ""
        response.request = request
        return response


def routed_session(base_url: str) -> requests.Session:
    """A requests session (a type yfinance accepts) whose Yahoo traffic goes to ``base_url``."""
    session = requests.Session()
    adapter = YahooRoutingAdapter(base_url)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.headers["User-Agent"] = "crypto-lake"
    return session


_SESSIONS: dict[str, requests.Session] = {}
_CACHE_DIR: list[Path] = []


def _prepare_yfinance(settings: YahooSettings) -> requests.Session | None:
    import yfinance as yf

    yf.config.debug.hide_exceptions = False
    if settings.cache_dir is not None and _CACHE_DIR[-1:] != [settings.cache_dir]:
        settings.cache_dir.mkdir(parents=True, exist_ok=True)
        yf.set_tz_cache_location(str(settings.cache_dir))
        _CACHE_DIR.append(settings.cache_dir)
    if settings.base_url is None:
        return None
    if settings.base_url not in _SESSIONS:
        _SESSIONS[settings.base_url] = routed_session(settings.base_url)
    return _SESSIONS[settings.base_url]


def is_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says Yahoo could not be reached at all: connection
    refused or reset, DNS failure, connect/read timeout; from requests (the routed session),
    curl_cffi (yfinance's own session) or the socket layer."""
    kinds: list[type[BaseException]] = [
        requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError,
    ]  # fmt: skip
    try:
        from curl_cffi.requests import exceptions as curl_exc

        kinds += [curl_exc.ConnectionError, curl_exc.Timeout]
    except ImportError:  # yfinance without curl_cffi: the requests session only
        pass
    seen: BaseException | None = exc
    for _ in range(5):  # the exception and a few causes deep
        if seen is None:
            return False
        if isinstance(seen, tuple(kinds)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _forget_bad_crumb() -> None:
    """Drop a crumb that is an error text. yfinance 1.7 keeps whatever its crumb request
    returned, a 5xx page or "Too Many Requests" included, and reuses it for the rest of the
    process: after Yahoo was down, every later request would carry it. (A real crumb is one
    short token.)"""
    from yfinance.data import YfData

    data = YfData()
    crumb = getattr(data, "_crumb", None)
    if isinstance(crumb, str) and (not crumb.strip() or "<" in crumb or " " in crumb.strip()):
        data._crumb = None


def _backoff_seconds(settings: YahooSettings, attempt: int) -> float:
    """Capped exponential backoff with equal jitter (attempt counts from 1)."""
    ceiling = min(settings.backoff_cap_seconds, settings.backoff_base_seconds * 2 ** (attempt - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def fetch_minute_bars(
    ticker: str, start: datetime, end: datetime, settings: YahooSettings
) -> FetchResult:
    """1-minute bars of ``ticker`` for [start, end) (aware datetimes), regular hours only.

    Returns ``ok`` or ``empty``; raises :class:`YahooFetchError` when every attempt failed.
    The frame is yfinance's own (index in the exchange's time zone); converting it to UTC is
    the caller's job (crypto_lake.lib.macro.store.bars_from_frame).
    """
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must be timezone-aware")
    import yfinance as yf
    from yfinance.data import YfData
    from yfinance.exceptions import YFPricesMissingError, YFRateLimitError

    session = _prepare_yfinance(settings)
    errors: list[str] = []
    rate_limited = unreachable = 0
    for attempt in range(1, settings.max_attempts + 1):
        # yfinance memoises answers for windows that ended >30 min ago for the whole process;
        # Yahoo back-fills late minutes, so every fetch must see Yahoo's current answer.
        YfData.cache_get.cache_clear()
        try:
            frame = yf.Ticker(ticker, session=session).history(
                start=start,
                end=end,
                interval="1m",
                prepost=False,
                auto_adjust=False,
                actions=False,
                repair=False,
                keepna=False,
                timeout=settings.timeout_seconds,
            )
        except YFPricesMissingError as exc:
            if exc.yahoo_reason is None:  # a window without bars: weekend, holiday, no trades
                return FetchResult(ticker, "empty", pd.DataFrame(), attempt, rate_limited, str(exc))
            # Yahoo said why (chart.error: unknown ticker, window out of range): the per-ticker
            # error yfinance would otherwise hide as an empty frame. Asking again won't help.
            raise YahooFetchError(
                ticker, attempt, rate_limited, [*errors, str(exc)], source_down=False
            ) from exc
        except YFRateLimitError as exc:
            rate_limited += 1
            errors.append(f"rate limited: {exc}")
            _forget_bad_crumb()
        except Exception as exc:  # yfinance surfaces HTTP/JSON/timezone errors untyped
            errors.append(f"{type(exc).__name__}: {exc}")
            _forget_bad_crumb()
            unreachable += is_unreachable(exc)
            if unreachable >= settings.connect_attempts:
                raise YahooFetchError(ticker, attempt, rate_limited, errors) from exc
        else:
            status: Literal["ok", "empty"] = "ok" if len(frame) else "empty"
            return FetchResult(ticker, status, frame, attempt, rate_limited, errors=errors)
        if attempt < settings.max_attempts:
            delay = _backoff_seconds(settings, attempt)
            log.warning("%s: attempt %d failed (%s); retrying in %.2fs", ticker, attempt,
                        errors[-1], delay)  # fmt: skip
            _time.sleep(delay)
    raise YahooFetchError(ticker, settings.max_attempts, rate_limited, errors)
