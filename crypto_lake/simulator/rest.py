"""REST endpoints under /api/v3 in Binance's shapes, with weights, 429/418 and time units."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from crypto_lake.lib.core.symbols import InvalidNameError, validate_symbol
from crypto_lake.lib.raw.binance import DEPTH, TIME_UNIT_HEADER, US_PER_UNIT, depth_weight
from crypto_lake.simulator import queries
from crypto_lake.simulator.instruments import format_e8
from crypto_lake.simulator.limits import WEIGHTS, RateLimiter
from crypto_lake.simulator.market import MarketModel
from crypto_lake.simulator.streams import StreamRequestError, parse_time_unit
from crypto_lake.simulator.wire import rest_error

MAX_LIMIT = 1000
DEPTH_LIMIT_DEFAULT, DEPTH_LIMIT_MAX = 100, 5000  # a larger depth limit is cut to 5000


class ApiError(Exception):
    """A Binance-style error answer: HTTP status plus {"code", "msg"}."""

    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.code, self.msg, self.status = code, msg, status


def _json(data: Any, used: int) -> web.Response:
    return web.Response(
        body=orjson.dumps(data),
        content_type="application/json",
        headers={"X-MBX-USED-WEIGHT-1M": str(used)},
    )


class RestApi:
    """Handlers for /api/v3/*; answers come from the market's tapes (history + live) and,
    for ``depth``, its order books."""

    def __init__(self, market: MarketModel, limiter: RateLimiter) -> None:
        self.market = market
        self.limiter = limiter
        self.handlers: dict[str, Callable[[web.Request, int], Any]] = {
            "ping": lambda r, d: {},
            "time": lambda r, d: {"serverTime": time.time_ns() // 1000 // d},
            "exchangeInfo": self.exchange_info,
            "klines": self.klines,
            "aggTrades": self.agg_trades,
            "historicalTrades": self.historical_trades,
            "trades": self.recent_trades,
        }
        if market.books():  # without order books there is no depth endpoint at all
            self.handlers["depth"] = self.depth

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/api/v3/{endpoint}", self.dispatch)]

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["endpoint"]
        handler = self.handlers.get(name)
        if handler is None:
            return web.Response(
                status=404,
                body=rest_error(-1, f"unknown endpoint {name!r}"),
                content_type="application/json",
            )
        verdict = self.limiter.admit(request.remote or "?", self.weight_of(name, request))
        headers = {"X-MBX-USED-WEIGHT-1M": str(verdict.used)}
        if verdict.status != 200:
            headers["Retry-After"] = str(verdict.retry_after)
            return web.Response(
                status=verdict.status,
                body=rest_error(-1003, verdict.msg),
                content_type="application/json",
                headers=headers,
            )
        try:
            unit_div = US_PER_UNIT[parse_time_unit(request.headers.get(TIME_UNIT_HEADER))]
            result = handler(request, unit_div)
        except StreamRequestError as exc:
            result = ApiError(-1100, str(exc))
        except ApiError as exc:
            result = exc
        if isinstance(result, ApiError):
            return web.Response(
                status=result.status,
                body=rest_error(result.code, result.msg),
                content_type="application/json",
                headers=headers,
            )
        return _json(result, verdict.used)

    def weight_of(self, name: str, request: web.Request) -> int:
        """The request weight of a call: the endpoint's, or by the limit for depth."""
        if name == "depth":
            try:
                return depth_weight(self._depth_limit(request))
            except ApiError:
                return WEIGHTS[name]  # answered with an error, weighed like the default
        return WEIGHTS[name]

    # -- parameters -------------------------------------------------------------------------
    def _symbol(self, request: web.Request) -> str:
        raw = request.query.get("symbol")
        if not raw:
            raise ApiError(
                -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."
            )
        try:
            symbol = validate_symbol(raw)
        except InvalidNameError as exc:
            raise ApiError(-1121, "Invalid symbol.") from exc
        if symbol not in self.market.symbols:
            raise ApiError(-1121, "Invalid symbol.")
        return symbol

    @staticmethod
    def _int(request: web.Request, name: str) -> int | None:
        raw = request.query.get(name)
        if raw is None or raw == "":
            return None
        try:
            return int(raw)
        except ValueError as exc:
            raise ApiError(-1100, f"Illegal characters found in parameter '{name}'.") from exc

    def _limit(self, request: web.Request, default: int = 500) -> int:
        limit = self._int(request, "limit")
        if limit is None:
            return default
        if not 1 <= limit <= MAX_LIMIT:
            raise ApiError(
                -1130, f"Invalid data sent for a parameter: limit must be 1..{MAX_LIMIT}."
            )
        return limit

    def _depth_limit(self, request: web.Request) -> int:
        limit = self._int(request, "limit")
        if limit is None:
            return DEPTH_LIMIT_DEFAULT
        if limit < 1:
            raise ApiError(-1130, "Invalid data sent for a parameter: limit must be >= 1.")
        return min(limit, DEPTH_LIMIT_MAX)

    def _time(self, request: web.Request, name: str, unit_div: int) -> int | None:
        """A time parameter in µs; an end time covers its whole millisecond."""
        value = self._int(request, name)
        if value is None:
            return None
        return value * unit_div + (unit_div - 1 if name == "endTime" else 0)

    # -- endpoints --------------------------------------------------------------------------
    def exchange_info(self, request: web.Request, unit_div: int) -> dict:
        wanted = list(self.market.symbols)
        if request.query.get("symbol"):
            wanted = [self._symbol(request)]
        symbols = []
        for sym in wanted:
            inst = self.market.symbols[sym].inst
            base, quote = inst.base_quote
            symbols.append(
                {
                    "symbol": sym,
                    "status": "TRADING",
                    "baseAsset": base,
                    "baseAssetPrecision": 8,
                    "quoteAsset": quote,
                    "quotePrecision": 8,
                    "quoteAssetPrecision": 8,
                    "isSpotTradingAllowed": True,
                    "filters": [
                        {
                            "filterType": "PRICE_FILTER",
                            "minPrice": format_e8(inst.tick_e8),
                            "maxPrice": format_e8(10**6 * 10**8),
                            "tickSize": format_e8(inst.tick_e8),
                        },
                        {
                            "filterType": "LOT_SIZE",
                            "minQty": format_e8(inst.lot_e8),
                            "maxQty": format_e8(9 * 10**6 * 10**8),
                            "stepSize": format_e8(inst.lot_e8),
                        },
                    ],
                }
            )
        return {
            "timezone": "UTC",
            "serverTime": time.time_ns() // 1000 // unit_div,
            "rateLimits": [
                {
                    "rateLimitType": "REQUEST_WEIGHT",
                    "interval": "MINUTE",
                    "intervalNum": 1,
                    "limit": self.limiter.limit,
                }
            ],
            "exchangeFilters": [],
            "symbols": symbols,
        }

    def klines(self, request: web.Request, unit_div: int) -> list:
        symbol = self._symbol(request)
        interval = request.query.get("interval")
        if not interval:
            raise ApiError(
                -1102, "Mandatory parameter 'interval' was not sent, was empty/null, or malformed."
            )
        if interval not in queries.INTERVALS_S:
            raise ApiError(-1120, "Invalid interval.")
        return queries.klines(
            self.market.source(symbol),
            queries.INTERVALS_S[interval],
            time.time_ns() // 1000,
            self._time(request, "startTime", unit_div),
            self._time(request, "endTime", unit_div),
            self._limit(request),
            unit_div,
        )

    def agg_trades(self, request: web.Request, unit_div: int) -> list:
        symbol = self._symbol(request)
        start = self._time(request, "startTime", unit_div)
        end = self._time(request, "endTime", unit_div)
        if start is not None and end is not None and end - start > 3_600_000_000:
            raise ApiError(-1127, "More than 1 hours between startTime and endTime.")
        return queries.agg_trades(
            self.market.source(symbol),
            self._int(request, "fromId"),
            start,
            end,
            self._limit(request),
            unit_div,
        )

    def historical_trades(self, request: web.Request, unit_div: int) -> list:
        symbol = self._symbol(request)
        return queries.historical_trades(
            self.market.source(symbol), self._int(request, "fromId"), self._limit(request),
            unit_div,
        )  # fmt: skip

    def recent_trades(self, request: web.Request, unit_div: int) -> list:
        symbol = self._symbol(request)
        return queries.historical_trades(
            self.market.source(symbol), None, self._limit(request), unit_div
        )

    def depth(self, request: web.Request, unit_div: int) -> dict:
        """The order book now: lastUpdateId and up to ``limit`` levels per side, best first."""
        symbol = self._symbol(request)
        book = self.market.symbols[symbol].book
        if book is None:
            raise ApiError(-1121, "Invalid symbol: no order book is simulated for it.")
        view = book.rest_view(self._depth_limit(request))
        return DEPTH.element(update_id=view.update_id, bids=view.bids, asks=view.asks)
