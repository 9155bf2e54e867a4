"""What the collector tells the outside world: heartbeat file, Prometheus text, sd_notify."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from crypto_lake.lib.core.logs import get_logger

if TYPE_CHECKING:
    from aiohttp import web

log = get_logger("collector.health")


def iso(ns: int | None) -> str | None:
    if ns is None:
        return None
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="milliseconds")


def quantiles(values: list[int] | list[float], scale: float = 1.0) -> dict[str, float] | None:
    """p50/p95/p99/max of ``values`` divided by ``scale`` (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    n = len(ordered)

    def q(p: float) -> float:
        return round(ordered[min(n - 1, int(p * n))] / scale, 3)

    return {"p50": q(0.5), "p95": q(0.95), "p99": q(0.99), "max": round(ordered[-1] / scale, 3)}


def disk_free(path: os.PathLike[str] | str) -> int | None:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


# Prometheus ----------------------------------------------------------------------------------
def prometheus_text(hb: dict[str, Any]) -> str:
    """Render the heartbeat's numbers in the Prometheus text exposition format."""
    lines: list[str] = []

    def metric(name: str, kind: str, help_: str, value: float | None, labels: str = "") -> None:
        if value is None:
            return
        if not lines or not lines[-1].startswith(f"crypto_lake_collector_{name}"):
            lines.append(f"# HELP crypto_lake_collector_{name} {help_}")
            lines.append(f"# TYPE crypto_lake_collector_{name} {kind}")
        lines.append(f"crypto_lake_collector_{name}{labels} {value}")

    metric("up", "gauge", "1 while running", 1 if hb["status"] == "running" else 0)
    metric("messages_total", "counter", "market messages written", hb["messages_total"])
    metric("duplicates_total", "counter", "duplicates dropped", hb["duplicates_dropped"])
    metric("quarantined_total", "counter", "messages quarantined", hb["quarantined"])
    metric("bytes_written_total", "counter", "bytes written to raw files", hb["bytes_written"])
    metric("reconnects_total", "counter", "connection losses", hb["reconnects"])
    metric("gaps_open", "gauge", "open trade-id gaps", hb["gaps"]["open"])
    metric("gaps_repaired_total", "counter", "repaired gaps", hb["gaps"]["repaired"])
    metric("disk_free_bytes", "gauge", "free bytes on the lake disk", hb["disk_free_bytes"])
    for q in ("p50", "p95", "p99", "max"):
        lat = hb.get("latency_ms") or {}
        metric(
            "receive_latency_ms",
            "gauge",
            "receive minus event time",
            lat.get(q),
            f'{{quantile="{q}"}}',
        )
    for sym, info in sorted(hb["symbols"].items()):
        metric(
            "last_message_age_seconds",
            "gauge",
            "seconds since the symbol's last message",
            info.get("age_seconds"),
            f'{{symbol="{sym}"}}',
        )
    return "\n".join(lines) + "\n"


class MetricsServer:
    """``GET /metrics`` (Prometheus text) and ``GET /heartbeat`` (JSON) on loopback."""

    def __init__(self, host: str, port: int, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.host, self.port, self.snapshot = host, port, snapshot
        self._runner: web.AppRunner | None = None
        self.url: str | None = None

    async def start(self) -> None:
        from aiohttp import web  # only when the endpoint is enabled: keeps start-up fast

        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/heartbeat", self._heartbeat)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        sockets = site._server.sockets if site._server else []  # type: ignore[union-attr]
        port = sockets[0].getsockname()[1] if sockets else self.port
        self.url = f"http://{self.host}:{port}/metrics"
        log.info("metrics on %s", self.url)

    async def _metrics(self, _request: web.Request) -> web.Response:
        from aiohttp import web

        return web.Response(text=prometheus_text(self.snapshot()), content_type="text/plain")

    async def _heartbeat(self, _request: web.Request) -> web.Response:
        from aiohttp import web

        return web.json_response(self.snapshot())

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


# systemd -------------------------------------------------------------------------------------
def sd_notify(message: str) -> bool:
    """Send ``message`` to systemd's notify socket if we run under Type=notify."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]  # abstract namespace socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(addr)
            sock.sendall(message.encode())
        return True
    except OSError as exc:
        log.warning("sd_notify(%s) failed: %s", message, exc)
        return False


def watchdog_interval() -> float | None:
    """Half of systemd's WatchdogSec (from WATCHDOG_USEC), if a watchdog is configured."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2e6
    except ValueError:
        return None
