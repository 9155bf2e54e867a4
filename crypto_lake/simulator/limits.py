"""Binance's REST rate limiting: request weight per minute per IP, 429 bans, 418 escalation."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from crypto_lake.simulator.faults import Faults

# Request weights as documented by Binance for spot /api/v3 (late 2020s).
WEIGHTS = {
    "ping": 1,
    "time": 1,
    "exchangeInfo": 20,
    "klines": 2,
    "aggTrades": 4,
    "historicalTrades": 25,
    "trades": 25,
    "depth": 5,  # at the default limit 100; it grows with the limit (RestApi.weight_of)
}


@dataclass
class ClientState:
    window: int = -1  # the minute (epoch // 60) the weight counts for
    used: int = 0
    ban_until: float = 0.0  # 429 ban (Retry-After) end, epoch seconds
    ignored: int = 0  # requests sent while a 429 ban was active
    ban418_until: float = 0.0


@dataclass(frozen=True)
class Verdict:
    """Outcome of admitting a request: status 200 (go ahead), 429 or 418."""

    status: int
    used: int
    retry_after: int = 0
    msg: str = ""


class RateLimiter:
    """Per-IP weight accounting in fixed calendar-minute windows, as Binance does."""

    def __init__(self, limit: int, faults: Faults) -> None:
        self.limit = limit
        self.faults = faults
        self.clients: dict[str, ClientState] = {}

    def admit(self, ip: str, weight: int, now: float | None = None) -> Verdict:
        now = time.time() if now is None else now
        st = self.clients.setdefault(ip, ClientState())
        minute = int(now // 60)
        if st.window != minute:
            st.window, st.used = minute, 0
        if now < st.ban418_until:
            return self._banned(418, st, st.ban418_until - now, ip)
        if now < st.ban_until:
            st.ignored += 1
            k = self.faults.rest_418_after_ignored
            if k is not None and st.ignored >= k:
                st.ban418_until = now + self.faults.ban_418_s
                return self._banned(418, st, self.faults.ban_418_s, ip)
            return self._banned(429, st, st.ban_until - now, ip)
        st.ignored = 0
        forced = self.faults._take_forced_429()
        if forced is not None:
            st.ban_until = now + forced
            return self._banned(429, st, forced, ip)
        if st.used + weight > self.limit:
            st.ban_until = (minute + 1) * 60.0
            return self._banned(429, st, st.ban_until - now, ip)
        st.used += weight
        return Verdict(200, st.used)

    def _banned(self, status: int, st: ClientState, seconds: float, ip: str) -> Verdict:
        retry = max(1, math.ceil(seconds))
        if status == 418:
            msg = f"Way too many requests; IP({ip}) banned for {retry}s. Use WebSocket Streams."
        else:
            msg = (
                f"Too many requests; current limit of IP({ip}) request weight is {self.limit} "
                "per 1 MINUTE. Please use WebSocket Streams for live updates to avoid bans."
            )
        return Verdict(status, st.used, retry, msg)
