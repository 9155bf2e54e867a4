"""The exchange simulator with days of kline history, on a clock the tests move.

Pacing is about calendar minutes, so the tests share one fake clock between the klines
client (its ``clock``/``sleep``) and the simulator's rate limiter: a wait for the next minute
takes no real time, and the simulator counts weight in the same minutes the client sees.
The simulator's market starts at "now"; the history before is seeded into its ledger (a
trade every few minutes, so every minute has a kline: empty ones repeat the last close) as
it starts, before its market trades.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from crypto_lake.simulator import SimConfig, SimulatorThread
from crypto_lake.simulator import limits as sim_limits
from crypto_lake.simulator.limits import RateLimiter, Verdict

US = 1_000_000


@dataclass
class FakeClock:
    """Epoch seconds that advance only when slept; ``on_sleep`` runs before each sleep."""

    now: float
    sleeps: list[float] = field(default_factory=list)
    on_sleep: Callable[[float], None] | None = None

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if self.on_sleep is not None:
            self.on_sleep(seconds)
        self.now += max(0.0, seconds)


def minute_start_clock() -> FakeClock:
    """A fake clock at the start of the current real minute (so minute maths is exact)."""
    return FakeClock(float(int(time.time() // 60) * 60))


def utc_day(days_ago: int) -> str:
    return (datetime.now(UTC) - timedelta(days=days_ago)).date().isoformat()


def day_start_us(day: str) -> int:
    return int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp()) * US


def seed_history(sim: SimulatorThread, history: dict[str, int], every_s: int = 420) -> None:
    """Trades of each symbol from its epoch µs in ``history`` until the market starts."""
    model = sim.market
    restart_clock = model.restart_clock

    def restart_then_seed(start_us: int) -> None:
        restart_clock(start_us)  # the simulator starts its market at "now" (empty ledgers)
        for symbol, from_us in history.items():
            market = model.symbols[symbol]
            ledger, ticks = market.ledger, market.bid
            for i, t in enumerate(range(from_us, start_us - 60 * US, every_s * US)):
                ledger.add_order(t, ticks + (i * 7919) % 41 - 20, [1 + i % 5], maker=i % 2 == 0)

    model.restart_clock = restart_then_seed


@dataclass
class Exchange:
    sim: SimulatorThread
    clock: FakeClock
    verdicts: list[Verdict]  # every REST request the limiter judged, in order
    ban_until: float = 0.0  # the end of the last ban provoked (fake clock)

    @property
    def url(self) -> str:
        return self.sim.rest_url

    def statuses(self, since: int = 0) -> list[int]:
        return [v.status for v in self.verdicts[since:]]

    def provoke_ban(self, ban_s: float = 300.0) -> None:
        """Another client on our IP ignores a 429: the simulator escalates to a 418 ban."""
        faults = self.sim.faults
        faults.rest_418_after_ignored, faults.ban_418_s = 1, ban_s
        faults.rest_429(1, retry_after_s=30)
        for _ in range(2):
            with suppress(urllib.error.HTTPError):
                urllib.request.urlopen(f"{self.url}/api/v3/ping", timeout=5).close()
        assert self.verdicts[-1].status == 418
        self.ban_until = self.clock.now + ban_s


@contextmanager
def exchange(
    monkeypatch: pytest.MonkeyPatch,
    history: dict[str, int],
    *,
    weight_limit: int = 6000,
    clock: FakeClock | None = None,
) -> Iterator[Exchange]:
    """A running simulator whose symbols have history from the given epoch µs, its limiter
    on ``clock``, every limiter verdict recorded."""
    clock = clock or minute_start_clock()
    verdicts: list[Verdict] = []
    real_admit = RateLimiter.admit

    def admit(self, ip: str, weight: int, now: float | None = None) -> Verdict:
        verdict = real_admit(self, ip, weight, now)
        verdicts.append(verdict)
        return verdict

    monkeypatch.setattr(sim_limits, "time", SimpleNamespace(time=clock.time))
    monkeypatch.setattr(RateLimiter, "admit", admit)
    cfg = SimConfig(symbols=list(history), seed=7, rate_scale=0.05,
                    rest_weight_limit=weight_limit)  # fmt: skip
    sim = SimulatorThread(cfg)
    seed_history(sim, history)
    with sim:
        yield Exchange(sim, clock, verdicts)
