"""The alert conditions that need no Dagster: the collector (from its heartbeat), its
connection groups and open gaps, the lake's disk, and the macro source (its state file).

Each function returns the active alerts of one condition, or None when the condition cannot
be judged now (then its firing alerts are left as they are, neither repeated nor resolved):
a connection group or a gap is only judged from a live collector's heartbeat, since a
stopped or stale one says nothing current about them (``collector_down`` covers that).
"""

from __future__ import annotations

from typing import Any

from crypto_lake.lib.macro.source_health import SourceHealth
from crypto_lake.lib.ops.alerts import Alert, iso
from crypto_lake.lib.ops.config import AlertsConfig
from crypto_lake.lib.raw.heartbeat import CollectorHealth


def collector_alerts(h: CollectorHealth, cfg: AlertsConfig) -> list[Alert]:
    """``collector_down`` unless the collector is running: missing, stale, crashed and failed
    are critical; a clean stop has ``collector_stopped_severity`` (an operator's act, but
    nothing is recorded while it lasts)."""
    if h.recording:
        return []
    severity = cfg.collector_stopped_severity if h.state == "stopped" else "critical"
    details: dict[str, Any] = {
        "state": h.state, "status": h.status, "reason": h.reason, "pid": h.pid,
        "hostname": h.hostname, "process_alive": h.process_alive,
        "heartbeat_age_seconds": None if h.age_s is None else round(h.age_s, 1),
        "heartbeat_updated_at": iso(h.updated_ns), "error": h.error, "exit_code": h.exit_code,
    }  # fmt: skip
    return [Alert("collector_down", "", severity, f"collector {h.state}: {h.reason}", details)]


def connection_alerts(h: CollectorHealth, cfg: AlertsConfig) -> list[Alert] | None:
    """``connection_down:group-N`` for each group down longer than the threshold."""
    if not h.recording:
        return None
    out = []
    for g in h.groups:
        if g.connected or g.down_seconds is None or g.down_seconds < cfg.connection_down_seconds:
            continue
        summary = (f"connection group {g.group} ({', '.join(g.symbols)}) down for "
                   f"{g.down_seconds:.0f} s: those symbols are not being recorded")  # fmt: skip
        out.append(Alert("connection_down", f"group-{g.group}", "critical", summary, {
            "group": g.group, "symbols": list(g.symbols), "down_since": iso(g.down_since_ns),
            "down_seconds": round(g.down_seconds, 1),
            "last_message_at": iso(g.last_message_ns),
        }))  # fmt: skip
    return out


def gap_alerts(h: CollectorHealth, cfg: AlertsConfig) -> list[Alert] | None:
    """``open_gap:SYMBOL`` for each symbol with a gap open longer than the threshold."""
    if not h.recording:
        return None
    by_symbol: dict[str, list] = {}
    for gap in h.open_gaps:
        if gap.age_s is not None and gap.age_s >= cfg.open_gap_seconds:
            by_symbol.setdefault(gap.symbol, []).append(gap)
    out = []
    for symbol, gaps in sorted(by_symbol.items()):
        oldest = max(g.age_s for g in gaps)
        missing = sum(g.missing or 0 for g in gaps)
        summary = (f"{symbol}: {len(gaps)} data gap(s) open for up to {oldest / 60:.0f} min "
                   f"({missing} trade ids missing, not repaired)")  # fmt: skip
        out.append(Alert("open_gap", symbol, "warning", summary, {
            "symbol": symbol, "open_gaps": len(gaps), "missing_ids": missing,
            "oldest_age_seconds": round(oldest, 1),
            "gaps": [{"first_id": g.first_id, "last_id": g.last_id, "cause": g.cause,
                      "detected_at": iso(g.detected_ns)} for g in gaps[:10]],
        }))  # fmt: skip
    return out


def disk_alerts(fraction: float | None, threshold: float, where: str) -> list[Alert] | None:
    """``disk`` when the lake's file system is fuller than ``threshold``."""
    if fraction is None:
        return None
    if fraction < threshold:
        return []
    summary = (f"lake disk {fraction:.0%} full (alert at {threshold:.0%}): free space or "
               "lower archive.retention_days")  # fmt: skip
    details = {"used_fraction": round(fraction, 4), "threshold": threshold, "path": where}
    return [Alert("disk", "", "warning" if fraction < 0.9 else "critical", summary, details)]


def macro_alerts(source: SourceHealth | None, now_ns: int, cfg: AlertsConfig) -> list[Alert]:
    """``macro_source_down`` when the macro source (Yahoo) has been down over the threshold
    (its state: ``crypto_lake.lib.macro.source_health.read_source_health``)."""
    down = None if source is None else source.down_since_ns
    if not isinstance(down, int) or (now_ns - down) / 1e9 < cfg.macro_down_seconds:
        return []
    hours = (now_ns - down) / 3600e9
    error = (source.last_error or "").splitlines()[:1]
    why = f" ({error[0][:200]})" if error else ""
    summary = f"macro source (Yahoo) down for {hours:.1f} h{why}: macro minutes are not updated"
    details = {
        "down_since": iso(down), "last_ok_at": iso(source.last_ok_ns),
        "consecutive_failures": source.consecutive_failures,
        "last_error": error[0][:300] if error else "",
    }  # fmt: skip
    return [Alert("macro_source_down", "", "warning", summary, details)]
