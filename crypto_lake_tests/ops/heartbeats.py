"""Heartbeat files as the collector writes them (collector_daemon/app.py ``snapshot``): the
current format with ``groups``, hostname and boot id, and the older one without them."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import orjson

from crypto_lake.lib.core.fsutil import atomic_write_bytes
from crypto_lake.lib.raw.heartbeat import read_boot_id

NOW_NS = 1_800_000_000 * 10**9  # a fixed "now" for the tests (2027-01-15)
S = 10**9


def heartbeat(
    *, status: str = "running", updated_ns: int = NOW_NS, pid: int = 4242,
    hostname: str = "collector-host", groups: list[dict[str, Any]] | None = None,
    gaps: list[dict[str, Any]] | None = None, disk: tuple[int, int] | None = None,
    **extra: Any,
) -> dict[str, Any]:  # fmt: skip
    """A current-format heartbeat: two groups, both connected, unless told otherwise.
    ``disk`` is (total, free) bytes."""
    if groups is None:
        groups = [group(0, ["BTCUSDT", "ETHUSDT"], updated_ns), group(1, ["SOLUSDT"], updated_ns)]
    live = [{"conn": f"ws-{g['group']}", "symbols": g["symbols"], "age_seconds": 30.0,
             "up_since_ns": g["up_since_ns"]} for g in groups if g["connected"]]  # fmt: skip
    symbols = {s: {"last_message_ns": g["last_message_ns"], "age_seconds": 0.5}
               for g in groups for s in g["symbols"]}  # fmt: skip
    hb = {
        "status": status, "error": None, "pid": pid, "run_id": "r1",
        "hostname": hostname, "boot_id": read_boot_id(),
        "started_at": "2027-01-15T07:00:00+00:00", "updated_ns": updated_ns,
        "heartbeat_seconds": 5.0, "symbols": symbols, "connections": live, "groups": groups,
        "gaps": {"open": len(gaps or []), "repaired": 0, "open_list": gaps or []},
        "disk_free_bytes": disk[1] if disk else 50 * 2**30,
        "disk_total_bytes": disk[0] if disk else 100 * 2**30,
    }  # fmt: skip
    hb.update(extra)
    return hb


def group(index: int, symbols: list[str], now_ns: int = NOW_NS, *, down_for_s: float = 0.0,
          last_age_s: float = 0.5) -> dict[str, Any]:  # fmt: skip
    """A group entry; ``down_for_s`` > 0 makes it disconnected since that long."""
    connected = down_for_s <= 0
    return {
        "group": index, "symbols": symbols, "connected": connected,
        "up_since_ns": now_ns - 600 * S if connected else None,
        "down_since_ns": None if connected else now_ns - int(down_for_s * S),
        "last_message_ns": now_ns - int(last_age_s * S),
    }  # fmt: skip


def open_gap(symbol: str, age_s: float, now_ns: int = NOW_NS, first_id: int = 100) -> dict:
    return {"gap_id": 1, "symbol": symbol, "stream": f"{symbol.lower()}@trade",
            "first_id": first_id, "last_id": first_id + 9, "cause": "reconnect",
            "detected_ns": now_ns - int(age_s * S), "status": "open", "missing": 10,
            "repaired": 0}  # fmt: skip


def old_format(hb: dict[str, Any]) -> dict[str, Any]:
    """The same heartbeat as an older collector wrote it: no groups, host, boot id, total."""
    new = ("groups", "hostname", "boot_id", "disk_total_bytes", "exit_code")
    return {k: v for k, v in hb.items() if k not in new}


def this_host(hb: dict[str, Any]) -> dict[str, Any]:
    """The heartbeat as if written on this machine since its last boot."""
    return {**hb, "hostname": socket.gethostname(), "boot_id": read_boot_id()}


def write(path: Path, hb: dict[str, Any]) -> Path:
    atomic_write_bytes(Path(path), orjson.dumps(hb), durable=False)
    return Path(path)
