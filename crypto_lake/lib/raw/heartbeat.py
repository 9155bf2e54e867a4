"""What the collector's heartbeat (``state/heartbeat.json``) says about recording right now.

The collector rewrites the file atomically every ``heartbeat_seconds`` (see
``collector_daemon/app.py``, ``Collector.snapshot``): its status, when it was written
(``updated_ns``), per symbol the receive time of the last message, and the live connections
with their symbols and since when they were up. Dagster reads it to tell a quiet symbol
(recorded, nothing happened) from one that is not being recorded (nothing can be said)
(``recording_until``), and to say what state the collector is in — running, stopped, failed,
stale or crashed — with its connection groups, open gaps and disk (``collector_health``, shown
in the UI as the ``collector`` asset and used by the alerts).
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

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
        max_age_s = stale_after_s(hb)
    if now_us - until_us > max_age_s * 1e6:
        return None
    since = [_connected_since_us(c, until_us) for c in hb.get("connections") or []
             if isinstance(c, dict) and c.get("connected", True) is not False
             and symbol in (c.get("symbols") or [])]  # fmt: skip
    since = [t for t in since if t is not None]
    if not since:
        return None
    info = (hb.get("symbols") or {}).get(symbol) or {}
    last = _ns_field(info, "last_message_ns", "last_message_at")
    return Recording(min(since), until_us, last)


def stale_after_s(hb: dict[str, Any]) -> float:
    """How old a heartbeat may be before its collector counts as gone: three of its intervals."""
    return STALE_AFTER_INTERVALS * (_number(hb.get("heartbeat_seconds")) or DEFAULT_INTERVAL_S)


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


# Collector health ----------------------------------------------------------------------------
# What an operator (the Dagster UI, the alerts) needs to know: is the collector recording, and
# if not, did someone stop it, did it fail, or did it die without a word? ``collector_health``
# answers from the heartbeat alone, and on the collector's own host also from whether its
# process is still alive.

HealthState = Literal["missing", "running", "stopped", "failed", "stale", "crashed"]
LIVE_STATUSES = ("starting", "running", "stopping")  # a fresh heartbeat with these: running
BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")


@dataclass(frozen=True)
class GroupHealth:
    """One connection group (a set of symbols on one WebSocket connection)."""

    group: int
    symbols: tuple[str, ...]
    connected: bool
    up_since_ns: int | None  # connected without a break since
    down_since_ns: int | None  # not connected since (None while connected)
    last_message_ns: int | None  # newest message received on the group
    down_seconds: float | None  # how long it has been down, at the health's ``now``
    last_message_age_s: float | None


@dataclass(frozen=True)
class OpenGap:
    """A range of trade ids the collector is missing and has not repaired (yet)."""

    symbol: str
    first_id: int | None
    last_id: int | None
    missing: int | None
    cause: str
    detected_ns: int | None
    age_s: float | None  # since it was detected


@dataclass(frozen=True)
class CollectorHealth:
    """The collector as a reader sees it at ``now_ns``.

    ``state``: "running" (a fresh heartbeat from a live process: starting, running or
    stopping), "stopped" (a clean stop, e.g. SIGTERM), "failed" (exited on an error, see
    ``error`` and ``exit_code``), "stale" (says it is running but has not written the
    heartbeat for ``stale_after_s``: hung, killed on another host, or unable to write, e.g.
    a full disk), "crashed" (on this host, and its process is gone: killed or crashed), or
    "missing" (no readable heartbeat: never started here, or the file is damaged).
    ``recording`` is True only for "running". ``reason`` is one line for an operator.
    """

    state: HealthState
    reason: str
    status: str | None = None  # what the file says
    now_ns: int = 0
    updated_ns: int | None = None
    age_s: float | None = None  # of the heartbeat
    stale_after_s: float | None = None
    pid: int | None = None
    hostname: str | None = None
    process_alive: bool | None = None  # None: not on this host (or not checked)
    error: str | None = None
    exit_code: int | None = None
    started_at: str | None = None
    groups: tuple[GroupHealth, ...] = ()
    unconnected_symbols: tuple[str, ...] = ()  # configured in the heartbeat, on no live group
    open_gaps: tuple[OpenGap, ...] = ()
    disk_free_bytes: int | None = None
    disk_total_bytes: int | None = None
    disk_used_fraction: float | None = None

    @property
    def recording(self) -> bool:
        return self.state == "running"


def collector_health(
    path: Path, *, now_ns: int | None = None, same_host_check: bool = True
) -> CollectorHealth:
    """Read the heartbeat at ``path`` and say what state the collector is in (see
    ``CollectorHealth``). Tolerates heartbeats of older collectors (no ``groups``: the live
    ``connections`` are taken as the only groups; no ``hostname``: no process check)."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    path = Path(path)
    hb = read_heartbeat(path)
    if hb is None:
        what = "unreadable" if path.exists() else "missing"
        return CollectorHealth("missing", f"no collector heartbeat ({path.name} is {what}): "
                               "the collector is not running here or has never started",
                               now_ns=now_ns)  # fmt: skip
    updated_us = _ns_field(hb, "updated_ns", "updated_at")
    updated_ns = None if updated_us is None else updated_us * 1000
    stale_after = stale_after_s(hb)
    age = None if updated_ns is None else max(0.0, (now_ns - updated_ns) / 1e9)
    alive = _process_alive(hb) if same_host_check else None
    status = hb.get("status") if isinstance(hb.get("status"), str) else None
    state, reason = _judge(status, hb, age, stale_after, alive)
    total, free = _int(hb.get("disk_total_bytes")), _int(hb.get("disk_free_bytes"))
    return CollectorHealth(
        state=state, reason=reason, status=status, now_ns=now_ns, updated_ns=updated_ns,
        age_s=age, stale_after_s=stale_after, pid=_int(hb.get("pid")),
        hostname=hb.get("hostname") if isinstance(hb.get("hostname"), str) else None,
        process_alive=alive, error=_text(hb.get("error")), exit_code=_int(hb.get("exit_code")),
        started_at=_text(hb.get("started_at")), groups=tuple(_groups(hb, now_ns, updated_ns)),
        unconnected_symbols=_unconnected(hb), open_gaps=tuple(_open_gaps(hb, now_ns)),
        disk_free_bytes=free, disk_total_bytes=total,
        disk_used_fraction=(total - free) / total if total and free is not None else None,
    )  # fmt: skip


def _judge(
    status: str | None, hb: dict[str, Any], age: float | None, stale_after: float,
    alive: bool | None,
) -> tuple[HealthState, str]:  # fmt: skip
    """The state and its one-line reason, from the status, the heartbeat's age and (on the
    collector's host) whether its process is alive."""
    if status == "stopped":
        return "stopped", "the collector was stopped cleanly (nothing is being recorded)"
    if status == "failed":
        code = _int(hb.get("exit_code"))
        error = _text(hb.get("error")) or "no reason given"
        return "failed", f"the collector exited on an error (exit code {code}): {error}"
    if status not in LIVE_STATUSES:
        return "stale", f"the heartbeat has an unknown status {status!r}: nothing can be said"
    if alive is False:
        return "crashed", (f"the heartbeat says {status!r} but process {hb.get('pid')} is gone "
                           "(killed or crashed): restart the collector")  # fmt: skip
    if age is None:
        return "stale", "the heartbeat has no write time: nothing can be said"
    if age > stale_after:
        return "stale", (f"the heartbeat is {age:.0f} s old (stale after {stale_after:.0f} s): "
                         "the collector is hung, killed, or cannot write (disk full?)")  # fmt: skip
    return "running", f"the collector is {status} (heartbeat {age:.0f} s old)"


def _process_alive(hb: dict[str, Any]) -> bool | None:
    """Whether the heartbeat's process is alive, when it ran on this host since its last
    boot (same hostname and boot id); None when that cannot be told from here."""
    pid = _int(hb.get("pid"))
    if pid is None or pid <= 0 or hb.get("hostname") != socket.gethostname():
        return None
    boot_id = hb.get("boot_id")
    if not isinstance(boot_id, str) or boot_id != read_boot_id():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    except OSError:
        return None
    return True


def read_boot_id() -> str | None:
    """This boot's id (Linux): with the hostname and pid, a reader on the same host tells a
    live collector from a crashed one (pid gone, or a heartbeat from an earlier boot)."""
    try:
        return BOOT_ID_PATH.read_text().strip() or None
    except OSError:
        return None


def _groups(hb: dict[str, Any], now_ns: int, updated_ns: int | None) -> list[GroupHealth]:
    """Every connection group; older heartbeats without ``groups`` give their live
    ``connections`` only (all connected)."""
    symbols = hb.get("symbols") if isinstance(hb.get("symbols"), dict) else {}
    raw = hb.get("groups")
    if isinstance(raw, list):
        items = [g for g in raw if isinstance(g, dict)]
    else:
        items = []
        for c in hb.get("connections") or []:
            if not isinstance(c, dict):
                continue
            since_us = _connected_since_us(c, (updated_ns or now_ns) // 1000)
            up_ns = None if since_us is None else since_us * 1000
            items.append({"symbols": c.get("symbols"), "connected": True, "up_since_ns": up_ns})
    out = []
    for i, g in enumerate(items):
        syms = tuple(s for s in g.get("symbols") or [] if isinstance(s, str))
        last = _int(g.get("last_message_ns"))
        if last is None:  # derive it from the symbols' own last messages
            lasts = [_int((symbols.get(s) or {}).get("last_message_ns")) for s in syms]
            last = max((x for x in lasts if x is not None), default=None)
        connected = g.get("connected") is True
        down = None if connected else _int(g.get("down_since_ns"))
        out.append(GroupHealth(
            group=_int(g.get("group")) if _int(g.get("group")) is not None else i,
            symbols=syms, connected=connected, up_since_ns=_int(g.get("up_since_ns")),
            down_since_ns=down,
            down_seconds=None if down is None else max(0.0, (now_ns - down) / 1e9),
            last_message_ns=last,
            last_message_age_s=None if last is None else max(0.0, (now_ns - last) / 1e9),
        ))  # fmt: skip
    return out


def _unconnected(hb: dict[str, Any]) -> tuple[str, ...]:
    """Symbols the heartbeat lists that no live connection carries."""
    symbols = hb.get("symbols") if isinstance(hb.get("symbols"), dict) else {}
    live = {s for c in hb.get("connections") or [] if isinstance(c, dict)
            and c.get("connected", True) is not False for s in c.get("symbols") or []}  # fmt: skip
    return tuple(sorted(s for s in symbols if s not in live))


def _open_gaps(hb: dict[str, Any], now_ns: int) -> list[OpenGap]:
    gaps = hb.get("gaps") if isinstance(hb.get("gaps"), dict) else {}
    out = []
    for g in gaps.get("open_list") or []:
        if not isinstance(g, dict) or g.get("status", "open") != "open":
            continue
        detected = _int(g.get("detected_ns"))
        out.append(OpenGap(
            symbol=str(g.get("symbol") or "?"), first_id=_int(g.get("first_id")),
            last_id=_int(g.get("last_id")), missing=_int(g.get("missing")),
            cause=str(g.get("cause") or ""), detected_ns=detected,
            age_s=None if detected is None else max(0.0, (now_ns - detected) / 1e9),
        ))  # fmt: skip
    return out


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _number(value: Any) -> float | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value > 0
    return float(value) if ok else None


def _text(value: Any) -> str | None:
    """A one-line text field (the first line, at most 300 characters)."""
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip().splitlines()[0][:300]
