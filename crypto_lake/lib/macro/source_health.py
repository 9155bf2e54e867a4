"""Is Yahoo reachable? The macro source's health, persisted, and the circuit breaker on it.

``macro_minute`` records every Yahoo fetch it makes: :func:`record_success` when Yahoo answered
(bars, an empty day, or an explicit per-ticker error: the source is up), :func:`record_failure`
when the source itself failed (connection refused, DNS, timeouts, HTTP 5xx/429 after the
retries). The state lives in ``state/macro_source.json``, written atomically::

    {"down_since_ns": 1764936000000000000,   # first failure of the current streak; null when up
     "last_ok_ns": 1764932400000000000,      # last time Yahoo answered; null if never
     "last_error": "ConnectionError: ...",   # the latest failure ("" when none yet)
     "consecutive_failures": 3,              # failures since the last answer
     "updated_ns": 1764936060000000000}      # when this file was last written

Readers: the macro sensor (``crypto_lake.defs.macro.schedules``) and the alerts ("macro source
down over 1 h" is ``down_since_ns`` older than an hour). Keep the fields and their meaning.

The breaker: after ``failures`` consecutive source failures it is *open* and the sensor queues
no macro runs (each would only fail against a dead Yahoo and hold a run slot). Every
``cooldown_seconds`` after the latest failure it is *half-open*: one probe run is allowed; the
probe's first answer closes it, its failure keeps it open for another cooldown.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from crypto_lake.lib.core.config import MacroConfig
from crypto_lake.lib.core.fsutil import atomic_write_bytes
from crypto_lake.lib.core.logs import get_logger
from crypto_lake.lib.core.paths import LakeLayout

log = get_logger("macro.source_health")

STATE_FILE = "macro_source.json"
MAX_ERROR_CHARS = 500  # keeps the file (and a sensor's skip reason) readable


@dataclass(frozen=True)
class SourceHealth:
    """The persisted state of the macro source (see the module docstring for each field)."""

    down_since_ns: int | None
    last_ok_ns: int | None
    last_error: str
    consecutive_failures: int
    updated_ns: int


@dataclass(frozen=True)
class Breaker:
    """When to stop queuing macro runs, and how often to probe while stopped."""

    failures: int
    cooldown_seconds: float

    @classmethod
    def of(cls, macro: MacroConfig) -> Breaker:
        """The breaker the ``macro`` config section sets (breaker_failures, ..._cooldown_...)."""
        return cls(macro.breaker_failures, macro.breaker_cooldown_seconds)

    def is_open(self, health: SourceHealth | None) -> bool:
        """Whether the latest ``failures`` fetches or more all failed at the source."""
        return health is not None and health.consecutive_failures >= self.failures

    def next_probe_ns(self, health: SourceHealth) -> int:
        """When the open breaker lets one probe run through: a cooldown after the last failure."""
        return health.updated_ns + int(self.cooldown_seconds * 1e9)

    def probe_due(self, health: SourceHealth, now_ns: int) -> bool:
        return now_ns >= self.next_probe_ns(health)


def source_health_path(layout: LakeLayout) -> Path:
    return layout.state_dir / STATE_FILE


def read_source_health(layout: LakeLayout) -> SourceHealth | None:
    """The stored state; None before the first fetch. An unreadable file counts as unknown
    (None, with a warning naming it): the next fetch rewrites it."""
    path = source_health_path(layout)
    try:
        data = json.loads(path.read_text())
        return SourceHealth(
            down_since_ns=_int_or_none(data["down_since_ns"]),
            last_ok_ns=_int_or_none(data["last_ok_ns"]),
            last_error=str(data["last_error"]),
            consecutive_failures=int(data["consecutive_failures"]),
            updated_ns=int(data["updated_ns"]),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring unreadable %s (%s); the next Yahoo fetch rewrites it", path, exc)
        return None


def _int_or_none(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]


def _write(layout: LakeLayout, health: SourceHealth) -> SourceHealth:
    payload = json.dumps(asdict(health), sort_keys=True).encode()
    atomic_write_bytes(source_health_path(layout), payload + b"\n", durable=False)
    return health


def record_success(layout: LakeLayout, *, now_ns: int | None = None) -> SourceHealth:
    """Yahoo answered: the source is up (closes the breaker)."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    before = read_source_health(layout)
    if before is not None and before.down_since_ns is not None:
        log.info("Yahoo answers again after %d failed fetches (down since %s)",
                 before.consecutive_failures, format_ns(before.down_since_ns))  # fmt: skip
    last_error = before.last_error if before is not None else ""
    return _write(layout, SourceHealth(None, now_ns, last_error, 0, now_ns))


def record_failure(
    layout: LakeLayout, error: str, *, now_ns: int | None = None, breaker: Breaker | None = None
) -> SourceHealth:
    """A fetch failed at the source (unreachable, timeouts, 5xx/429 after retries)."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    breaker = breaker or Breaker.of(MacroConfig())
    before = read_source_health(layout)
    failures = 1 + (before.consecutive_failures if before is not None else 0)
    down_since = before.down_since_ns if before is not None else None
    health = SourceHealth(
        down_since_ns=down_since if down_since is not None else now_ns,
        last_ok_ns=before.last_ok_ns if before is not None else None,
        last_error=error[:MAX_ERROR_CHARS],
        consecutive_failures=failures,
        updated_ns=now_ns,
    )
    if failures == breaker.failures:
        log.error(
            "Yahoo unreachable: %d fetches in a row failed (last: %s). Macro runs stop being "
            "queued; one probe every %.0f s. Check the network or macro.yahoo_base_url.",
            failures, health.last_error, breaker.cooldown_seconds,
        )  # fmt: skip
    return _write(layout, health)


def format_ns(ns: int) -> str:
    """``2026-12-05 12:00:00 UTC`` for an epoch-nanosecond time."""
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def open_breaker_reason(health: SourceHealth, breaker: Breaker) -> str:
    """What a sensor tick says while the breaker holds macro runs back."""
    since = format_ns(health.down_since_ns or health.updated_ns)
    return (
        f"Yahoo unreachable since {since} ({health.consecutive_failures} failed fetches in a "
        f"row), last error: {health.last_error}; no macro runs are queued until the next probe "
        f"at {format_ns(breaker.next_probe_ns(health))}"
    )
