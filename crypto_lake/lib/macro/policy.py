"""How hard the macro automation pushes on Yahoo: cadence, run cap, breaker, fast failure.

Each field has a default here and is overridden by the ``macro`` config section when that
section has a field of the same name (``CRYPTO_LAKE__MACRO__MAX_RUNS_IN_FLIGHT=3``...), so these
knobs become configurable as soon as ``MacroConfig`` declares them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from crypto_lake.lib.macro.source_health import (
    BREAKER_COOLDOWN_SECONDS,
    BREAKER_FAILURES,
    Breaker,
)


@dataclass(frozen=True)
class MacroPolicy:
    # Today's bars are fetched again this often (SPEC §8: every 15 minutes).
    refresh_interval_seconds: float = 900.0
    # A past day still missing some ticker is asked for again at most this often.
    catchup_retry_seconds: float = 3600.0
    # Macro runs queued or in progress at once (sensor, UI and launchpad runs alike): the
    # sensor requests nothing more while this many are in flight, so a fresh lake's 7-day
    # catch-up, or a dead Yahoo, never fills the run queue.
    max_runs_in_flight: int = 2
    # The circuit breaker (lib/macro/source_health.py).
    breaker_failures: int = BREAKER_FAILURES
    breaker_cooldown_seconds: float = BREAKER_COOLDOWN_SECONDS
    # Tries per ticker when Yahoo cannot be reached at all (refused, DNS, timeout): unlike a
    # 429 or 5xx, waiting a minute between tries does not help, and a run must fail fast.
    connect_attempts: int = 2

    @property
    def breaker(self) -> Breaker:
        return Breaker(self.breaker_failures, self.breaker_cooldown_seconds)


def macro_policy(macro_config: object) -> MacroPolicy:
    """The policy with every field that ``macro_config`` (a ``MacroConfig``) declares."""
    names = [f.name for f in fields(MacroPolicy)]
    return MacroPolicy(**{n: getattr(macro_config, n) for n in names if hasattr(macro_config, n)})
