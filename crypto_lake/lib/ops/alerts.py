"""Alerts to a webhook (SPEC §10): at most one per condition key per hour, and a "resolved"
message when a firing condition clears.

A condition is named by its ``key``: the condition plus its subject (``collector_down``,
``connection_down:group-1``, ``open_gap:BTCUSDT``, ``run_failure:market_day_job``). Sensors
evaluate the conditions and hand the active ones to an ``AlertBook``, which decides what to
send and remembers it in ``state/alerts.json`` (atomic writes, under a lock), so sensor ticks,
separate processes, share it:

- a key that becomes active is sent at once, unless the same key was sent less than
  ``repeat_seconds`` ago (then it is sent when that hour is over, if still active);
- a key that stays active is sent again every ``repeat_seconds``;
- a key that was sent and clears is sent once more as "resolved" (never sent: dropped);
- a delivery that fails is not marked sent: the next tick tries again.

The file holds no URL; delivery errors are stored as the webhook module words them (URL-free).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from pydantic import SecretStr

from crypto_lake.lib.core.fsutil import FILE_MODE, atomic_write_bytes, make_dirs, set_file_mode
from crypto_lake.lib.core.logs import get_logger
from crypto_lake.lib.ops.config import AlertsConfig, Severity
from crypto_lake.lib.ops.webhook import post_json

log = get_logger("ops.alerts")

STATE_FILE = "alerts.json"
LOCK_FILE = "alerts.lock"
ICONS = {"critical": ":rotating_light:", "warning": ":warning:", "info": ":information_source:"}


@dataclass(frozen=True)
class Alert:
    """One active condition: ``summary`` is the one line a person reads, ``details`` the
    structured facts (JSON-serialisable) a machine reads."""

    condition: str
    subject: str
    severity: Severity
    summary: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.condition}:{self.subject}" if self.subject else self.condition


@dataclass(frozen=True)
class Sent:
    """What one tick delivered (or failed to)."""

    key: str
    state: str  # firing | resolved
    error: str | None  # None: delivered


def iso(ns: int | None) -> str | None:
    if ns is None:
        return None
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="seconds")


class AlertBook:
    """The alert state of one lake: which keys are firing, since when, what was sent."""

    def __init__(self, data: dict[str, Any], cfg: AlertsConfig, *, lake: str, host: str):
        self.entries: dict[str, dict[str, Any]] = data.get("alerts") or {}
        self.last_sent: dict[str, int] = data.get("last_sent_ns") or {}
        self.cfg, self.lake, self.host = cfg, lake, host

    # what is active ---------------------------------------------------------------------------
    def fire(self, alerts: list[Alert], now_ns: int) -> None:
        """Mark ``alerts`` active now (their summary and details replace the earlier ones)."""
        for a in alerts:
            entry = self.entries.get(a.key)
            if entry is None:  # (a resolved one not yet announced continues its episode)
                entry = {"since_ns": now_ns, "sent_ns": None}
            entry.update(condition=a.condition, subject=a.subject, severity=a.severity,
                         summary=a.summary, details=a.details, resolved_ns=None,
                         pending=True)  # fmt: skip
            self.entries[a.key] = entry

    def resolve(self, keys: list[str], now_ns: int) -> None:
        """Mark these firing keys as cleared (one never announced is simply forgotten)."""
        for key in keys:
            entry = self.entries.get(key)
            if entry is None or entry.get("resolved_ns") is not None:
                continue
            if entry.get("sent_ns"):
                entry.update(resolved_ns=now_ns, pending=False)
            else:
                del self.entries[key]

    def sync(self, condition: str, active: list[Alert], now_ns: int) -> None:
        """One condition fully evaluated: ``active`` fire, its other firing keys resolve."""
        self.fire(active, now_ns)
        keys = {a.key for a in active}
        self.resolve([k for k in self.firing(condition) if k not in keys], now_ns)

    def firing(self, condition: str | None = None) -> dict[str, dict[str, Any]]:
        """Firing (not resolved) entries, of one condition or all."""
        return {k: e for k, e in self.entries.items() if e.get("resolved_ns") is None
                and (condition is None or e.get("condition") == condition)}  # fmt: skip

    # what to send -----------------------------------------------------------------------------
    def due(self, now_ns: int) -> list[tuple[str, dict[str, Any]]]:
        """The messages to send now: (key, JSON body)."""
        repeat_ns = int(self.cfg.repeat_seconds * 1e9)
        out = []
        for key, e in sorted(self.entries.items()):
            if e.get("resolved_ns") is not None:
                out.append((key, self.body(key, e, "resolved", now_ns)))
            elif e.get("pending") and now_ns - self.last_sent.get(key, -(2**62)) >= repeat_ns:
                out.append((key, self.body(key, e, "firing", now_ns)))
        return out

    def body(self, key: str, e: dict[str, Any], state: str, now_ns: int) -> dict[str, Any]:
        """The webhook message: Slack-compatible ``text`` plus the structured fields."""
        since, severity = iso(e["since_ns"]), e["severity"]
        if state == "resolved":
            minutes = (e["resolved_ns"] - e["since_ns"]) / 60e9
            text = f":white_check_mark: resolved: {e['summary']} (since {since}, {minutes:.0f} min)"
        else:
            text = f"{ICONS.get(severity, '')} [{severity}] {e['summary']} (since {since})"
        return {
            "text": f"crypto_lake@{self.host}: {text.strip()}",
            "condition": e["condition"], "key": key, "state": state, "severity": severity,
            "summary": e["summary"], "details": e.get("details") or {}, "since": since,
            "resolved_at": iso(e.get("resolved_ns")), "sent_at": iso(now_ns),
            "lake": self.lake, "host": self.host,
        }  # fmt: skip

    def delivered(self, key: str, state: str, now_ns: int) -> None:
        if state == "resolved":
            self.entries.pop(key, None)
            return
        entry = self.entries[key]
        entry.update(sent_ns=now_ns, pending=False, last_error=None)
        self.last_sent[key] = now_ns

    def failed(self, key: str, error: str, now_ns: int) -> None:
        self.entries[key].update(last_error=error, last_attempt_ns=now_ns)

    def to_json(self, now_ns: int) -> bytes:
        """The state file: entries plus the send times still inside the repeat window."""
        horizon = now_ns - int(self.cfg.repeat_seconds * 1e9)
        recent = {k: t for k, t in self.last_sent.items() if t > horizon or k in self.entries}
        payload = {"version": 1, "updated_ns": now_ns, "alerts": self.entries,
                   "last_sent_ns": recent}  # fmt: skip
        return orjson.dumps(payload, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)


@contextlib.contextmanager
def open_book(
    state_dir: Path, cfg: AlertsConfig, *, lake: str, now_ns: int | None = None
) -> Iterator[AlertBook]:
    """The lake's alert book, locked against other sensor processes; saved on exit."""
    state_dir = make_dirs(state_dir)
    path = state_dir / STATE_FILE
    # the lake's file mode (fsutil); the lock is released when the file is closed
    fd = os.open(state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, FILE_MODE)
    set_file_mode(fd)
    with os.fdopen(fd, "rb") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        book = AlertBook(_load(path), cfg, lake=lake, host=socket.gethostname())
        yield book
        saved_ns = time.time_ns() if now_ns is None else now_ns
        atomic_write_bytes(path, book.to_json(saved_ns), durable=False)


def _load(path: Path) -> dict[str, Any]:
    """The saved state; an unreadable file starts afresh (logged), never a crash."""
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, orjson.JSONDecodeError) as exc:
        log.warning("alert state %s unreadable (%s): starting afresh", path, type(exc).__name__)
        return {}
    return data if isinstance(data, dict) and isinstance(data.get("alerts"), dict) else {}


def deliver(
    book: AlertBook, url: SecretStr | None, now_ns: int, *, unavailable: str | None = None
) -> list[Sent]:
    """Send every due message. After the first failure the rest wait for the next tick (the
    endpoint is down; trying each would only add timeouts). ``unavailable``: why no message
    can be sent at all (e.g. the URL's secret file is unreadable)."""
    out: list[Sent] = []
    outage: str | None = unavailable
    for key, body in book.due(now_ns):
        if outage is None:
            result = post_json(url, body, timeout_s=book.cfg.webhook_timeout_seconds,
                               attempts=book.cfg.webhook_attempts)  # fmt: skip
            outage = result.error
        if outage is None:
            book.delivered(key, body["state"], now_ns)
        else:
            book.failed(key, outage, now_ns)
        out.append(Sent(key, body["state"], outage))
    return out
