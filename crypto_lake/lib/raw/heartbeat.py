"""What the collector's heartbeat (``state/heartbeat.json``) says about recording right now.

The collector rewrites the file atomically every ``heartbeat_seconds`` (see
``collector_daemon/app.py``, ``Collector.snapshot``): its status, when it was written
(``updated_ns``), per symbol the receive time of the last message, and the live connections
with their symbols and since when they were up. Dagster reads it to tell a quiet symbol
(recorded, nothing happened) from one that is not being recorded (nothing can be said).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

DEFAULT_INTERVAL_S = 5.0  # the collector's default heartbeat_seconds
STALE_AFTER_INTERVALS = 3  # a heartbeat older than this many intervals: the collector is gone


@dataclass(frozen=True)
class Recording:
    """The collector's word on one symbol: it was connected to the symbol's streams without a
    break from ``since_us`` to ``until_us`` (the heartbeat's write time), and the last
    message it had received by then arrived at ``last_message_us`` (None: none since the
    process started)."""

    since_us: int
    until_us: int
    last_message_us: int | None


def read_heartbeat(path: Path) -> dict[str, Any] | None:
    """The heartbeat as written, or None when it is missing or unreadable."""
    try:
        data = orjson.loads(Path(path).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def recording_until(
    path: Path, symbol: str, *, now_us: int | None = None, max_age_s: float | None = None
) -> Recording | None:
    """What the heartbeat at ``path`` vouches for ``symbol``, or None when it vouches for
    nothing: no readable heartbeat, one older than ``max_age_s`` (default: three heartbeat
    intervals), a collector not "running", or no live connection carrying the symbol."""
    hb = read_heartbeat(path)
    if hb is None or hb.get("status") != "running":
        return None
    until_us = _ns_field(hb, "updated_ns", "updated_at")
    if until_us is None:
        return None
    now_us = time.time_ns() // 1000 if now_us is None else now_us
    if max_age_s is None:
        interval = hb.get("heartbeat_seconds")
        interval = interval if isinstance(interval, int | float) else DEFAULT_INTERVAL_S
        max_age_s = STALE_AFTER_INTERVALS * interval
    if now_us - until_us > max_age_s * 1e6:
        return None
    since = [_connected_since_us(c, until_us) for c in hb.get("connections") or []
             if isinstance(c, dict) and symbol in (c.get("symbols") or [])]  # fmt: skip
    since = [t for t in since if t is not None]
    if not since:
        return None
    info = (hb.get("symbols") or {}).get(symbol) or {}
    last = _ns_field(info, "last_message_ns", "last_message_at")
    return Recording(min(since), until_us, last)


def _connected_since_us(conn: dict[str, Any], until_us: int) -> int | None:
    """Since when a listed connection's group was connected without a break (older
    heartbeats only give the connection's own age)."""
    if isinstance(conn.get("up_since_ns"), int):
        return conn["up_since_ns"] // 1000
    age = conn.get("age_seconds")
    return until_us - round(age * 1e6) if isinstance(age, int | float) else None


def _ns_field(obj: dict[str, Any], ns_key: str, iso_key: str) -> int | None:
    """A time in µs from an integer-ns field, else from its ISO text twin (ms precision)."""
    ns = obj.get(ns_key)
    if isinstance(ns, int):
        return ns // 1000
    text = obj.get(iso_key)
    if not isinstance(text, str):
        return None
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    if dt.tzinfo is None:
        return None
    return (dt - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
