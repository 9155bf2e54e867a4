"""What the collector tells the outside world: Prometheus metrics, sd_notify, helpers.

The heartbeat itself is built by ``Collector.snapshot`` (app.py); ``/metrics`` renders that
same snapshot through prometheus_client (``metric_families``), so the two never disagree.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

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


# Prometheus ----------------------------------------------------------------------------------
PREFIX = "crypto_lake_collector_"


def _age_seconds(now_ns: int | None, then_ns: int | None) -> float | None:
    if not isinstance(now_ns, int) or not isinstance(then_ns, int):
        return None
    return round(max(0, now_ns - then_ns) / 1e9, 3)


def _gauge(name: str, help_: str, value: float | None) -> Iterator[Metric]:
    if value is not None:
        yield GaugeMetricFamily(PREFIX + name, help_, value=value)


def _counter(name: str, help_: str, value: float | None) -> Iterator[Metric]:
    if value is not None:
        yield CounterMetricFamily(PREFIX + name, help_, value=value)


def _group_families(hb: dict[str, Any]) -> Iterator[Metric]:
    """``up``, ``running`` and the per-group connection gauges (see ``metric_families``)."""
    now_ns = hb.get("updated_ns")
    groups = [g for g in hb.get("groups") or [] if isinstance(g, dict)]  # this collector's own
    running = hb.get("status") == "running"
    n_up = sum(1 for g in groups if g.get("connected"))
    up_help = "1 while running with at least one connection group connected, else 0"
    yield from _gauge("up", up_help, int(running and n_up > 0))
    yield from _gauge("running", "1 while the collector is in the running state", int(running))
    yield from _gauge("groups", "connection groups (one WebSocket connection each)", len(groups))
    yield from _gauge("connected_groups", "connection groups connected right now", n_up)
    labels = ["group", "symbols"]
    connected = GaugeMetricFamily(
        PREFIX + "connected", "1 while the group's connection is up", labels=labels
    )
    down = GaugeMetricFamily(
        PREFIX + "group_down_seconds",
        "seconds since the group lost its connection (0 while connected)",
        labels=labels,
    )
    age = GaugeMetricFamily(
        PREFIX + "group_last_message_age_seconds",
        "seconds since the group's newest message",
        labels=labels,
    )
    for g in groups:
        values = [str(g.get("group")), ",".join(g.get("symbols") or [])]
        connected.add_metric(values, 1 if g.get("connected") else 0)
        down_s = 0.0 if g.get("connected") else _age_seconds(now_ns, g.get("down_since_ns"))
        if down_s is not None:
            down.add_metric(values, down_s)
        age_s = _age_seconds(now_ns, g.get("last_message_ns"))
        if age_s is not None:
            age.add_metric(values, age_s)
    yield from (connected, down, age)


def _depth_families(hb: dict[str, Any]) -> Iterator[Metric]:
    """Per depth symbol: diff events, sequence gaps, snapshots (by reason), failed and stale
    snapshot fetches. Nothing when no symbol records depth."""
    depth = hb.get("depth")
    if not isinstance(depth, dict) or not depth:
        return
    sym = ["symbol"]
    events = CounterMetricFamily(PREFIX + "depth_events", "diff depth events written", labels=sym)
    gaps = CounterMetricFamily(
        PREFIX + "depth_gaps", "breaks in the diff depth sequence (U != previous u + 1)", labels=sym
    )
    snaps = CounterMetricFamily(
        PREFIX + "depth_snapshots", "depth snapshots written", labels=["symbol", "reason"]
    )
    failed = CounterMetricFamily(
        PREFIX + "depth_snapshot_failures", "failed depth snapshot fetches (retried)", labels=sym
    )
    stale = CounterMetricFamily(
        PREFIX + "depth_snapshots_stale",
        "depth snapshots older than the events they had to cover (fetched again)",
        labels=sym,
    )
    for symbol, info in sorted(depth.items()):
        if not isinstance(info, dict):
            continue
        for family, key in ((events, "events"), (gaps, "gaps"), (failed, "snapshots_failed"),
                            (stale, "snapshots_stale")):  # fmt: skip
            if isinstance(info.get(key), int):
                family.add_metric([symbol], info[key])
        for reason, n in sorted((info.get("snapshots_by_reason") or {}).items()):
            snaps.add_metric([symbol, reason], n)
    yield from (events, gaps, snaps, failed, stale)


def metric_families(hb: dict[str, Any]) -> Iterator[Metric]:
    """The heartbeat ``hb`` as Prometheus metric families (names start with ``PREFIX``).

    ``up`` is 1 only while the collector is running AND at least one connection group is
    connected, i.e. while it records market data; ``running`` is 1 while the process is in
    the "running" state whatever the exchange does; ``connected{group,symbols}`` says which
    connections are up and ``group_down_seconds`` for how long one is not. Every value comes
    from the heartbeat, so /metrics and heartbeat.json never disagree.
    """
    yield from _group_families(hb)
    sym_age = GaugeMetricFamily(
        PREFIX + "last_message_age_seconds",
        "seconds since the symbol's newest message",
        labels=["symbol"],
    )
    for sym, info in sorted((hb.get("symbols") or {}).items()):
        if isinstance(info, dict) and info.get("age_seconds") is not None:
            sym_age.add_metric([sym], info["age_seconds"])
    yield sym_age
    yield from _counter("messages", "market messages written", hb.get("messages_total"))
    yield from _counter("duplicates", "duplicates dropped", hb.get("duplicates_dropped"))
    yield from _counter("quarantined", "messages quarantined", hb.get("quarantined"))
    yield from _counter("bytes_written", "bytes written to raw files", hb.get("bytes_written"))
    yield from _counter("reconnects", "connection losses", hb.get("reconnects"))
    yield from _counter("connect_failures", "failed connects", hb.get("connect_failures"))
    gaps = hb.get("gaps") or {}
    yield from _gauge("gaps_open", "open trade-id gaps", gaps.get("open"))
    yield from _counter("gaps_repaired", "repaired gaps", gaps.get("repaired"))
    yield from _gauge("disk_free_bytes", "free bytes on the lake disk", hb.get("disk_free_bytes"))
    yield from _gauge("disk_total_bytes", "size of the lake disk", hb.get("disk_total_bytes"))
    now_ns = hb.get("updated_ns")
    if isinstance(now_ns, int):
        yield from _gauge("heartbeat_timestamp_seconds", "snapshot time (Unix s)", now_ns / 1e9)
    latency = GaugeMetricFamily(
        PREFIX + "receive_latency_ms", "receive minus event time", labels=["quantile"]
    )
    for q, value in (hb.get("latency_ms") or {}).items():
        latency.add_metric([q], value)
    yield latency
    yield from _depth_families(hb)


class HeartbeatMetrics:
    """A prometheus_client collector rendering a fresh heartbeat snapshot at each scrape."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.snapshot = snapshot

    def describe(self) -> list[Metric]:
        return []  # names are not declared up front: registering must not take a snapshot

    def collect(self) -> Iterator[Metric]:
        yield from metric_families(self.snapshot())


def metrics_registry(snapshot: Callable[[], dict[str, Any]]) -> CollectorRegistry:
    """A registry of our own (not the process-global one) holding only the heartbeat."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HeartbeatMetrics(snapshot))
    return registry


def prometheus_text(hb: dict[str, Any]) -> str:
    """``hb`` in the Prometheus text exposition format (what /metrics serves)."""
    return generate_latest(metrics_registry(lambda: hb)).decode()


class MetricsServer:
    """``GET /metrics`` (Prometheus text, rendered by prometheus_client) and ``GET
    /heartbeat`` (JSON) on ``host:port`` (loopback by default)."""

    def __init__(self, host: str, port: int, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.host, self.port, self.snapshot = host, port, snapshot
        self.registry = metrics_registry(snapshot)
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

        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

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
