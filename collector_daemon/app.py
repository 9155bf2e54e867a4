"""The collector process: wires writer, router, connections, gap repair and health together.

Start-up order matters: take the lake lock, recover leftover ``.open`` files, learn where
each symbol's trade ids stopped (files + ``state/gaps.json``), write the ``collector_stop``
a killed previous run never wrote (``unclean``), then connect. Shutdown
(SIGTERM/SIGINT) is the reverse: close the sockets, write ``collector_stop``, seal every
file, save the gap book, write the final heartbeat, release the lock.

The heartbeat (``state/heartbeat.json``, see ``snapshot``) lets any reader tell the states
apart: "running" with a fresh ``updated_ns`` (and ``pid`` alive on ``hostname``/``boot_id``),
"stopped" (clean stop, ``exit_code`` 0), "failed" (``error`` one line, ``exit_code``), and a
process that died without a word (SIGKILL, power loss, a disk too full for the last write):
still "running" but with an ``updated_ns`` older than a few ``heartbeat_seconds`` — stale.
Exit codes: ``collector_daemon/exits.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import shutil
import signal
import socket
import time
from dataclasses import dataclass
from typing import Any

import orjson
import zstandard

from collector_daemon.connection import GroupSettings, StreamGroup
from collector_daemon.depth import DepthTracker
from collector_daemon.exits import (
    EXIT_IOERR,
    EXIT_OK,
    EXIT_SOFTWARE,
    StartupError,
    startup_error,
)
from collector_daemon.gaps import GapBook
from collector_daemon.health import (
    MetricsServer,
    iso,
    quantiles,
    sd_notify,
    watchdog_interval,
)
from collector_daemon.lock import LakeLock
from collector_daemon.recovery import recover_lake
from collector_daemon.repair import RestRepairer
from collector_daemon.rest import RestClient
from collector_daemon.resume import (
    load_checkpoint,
    recent_ids,
    restore_tracker,
    save_checkpoint,
    unclean_end_ns,
)
from collector_daemon.router import Router
from collector_daemon.snapshots import DepthSnapshotter
from collector_daemon.tracker import IdTracker
from collector_daemon.writer import RawWriter
from crypto_lake.lib.core.config import Config
from crypto_lake.lib.core.fsutil import atomic_write_bytes, make_dirs
from crypto_lake.lib.core.logs import get_logger
from crypto_lake.lib.core.paths import LakeLayout
from crypto_lake.lib.raw import binance
from crypto_lake.lib.raw.heartbeat import read_boot_id
from crypto_lake.lib.raw.lines import session_line

log = get_logger("collector")

EXIT_WRITE_FAILED = EXIT_IOERR  # systemd's Restart=on-failure restarts us later


def one_line(exc: BaseException) -> str:
    """``exc`` as one line for the heartbeat's ``error`` and the log."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, OSError) else f"{type(exc).__name__}: {text}"


@dataclass
class Tuning:
    """Knobs that are not part of the shared config file (CLI flags)."""

    flush_interval: float = 0.02  # lines reach the OS within this (kill -9 loses at most this)
    fsync_interval: float = 1.0  # lines are durable (fsynced) within about this
    reorder_grace: float = 2.0  # a missing id becomes a gap after this
    rotate_check: float = 0.1


class Collector:
    """One collector process over one lake (see module docstring)."""

    def __init__(self, cfg: Config, tuning: Tuning | None = None) -> None:
        self.cfg = cfg
        self.tuning = tuning or Tuning()
        self.layout = LakeLayout(cfg.lake_root)
        self.lock = LakeLock(self.layout.collector_lock_path)
        self.status = "starting"
        self.error: str | None = None
        self.exit_code: int | None = None  # set when the process is about to exit
        self.started_ns = time.time_ns()
        self.hostname = socket.gethostname()
        self.boot_id = read_boot_id()
        self.run_id = f"{self.started_ns // 1_000_000_000:x}"
        self.torn_lines_recovered = 0
        self.stream_kind = cfg.binance.trade_stream
        self.trackers = {s: IdTracker() for s in cfg.symbols}
        self.book = GapBook(self.layout.gaps_path)
        c = cfg.collector
        self.writer = RawWriter(
            self.layout,
            compression=c.compression,
            rotate_seconds=c.rotate_seconds,
            fsync=c.fsync,
            on_failure=self._on_write_failure,
        )
        d = c.depth
        self.depth = {s: DepthTracker() for s in d.symbols}
        self.router = Router(
            self.writer,
            trade_stream=self.stream_kind,
            time_unit=cfg.binance.time_unit,
            trackers=self.trackers,
            depth=self.depth,
            depth_stream=binance.DEPTH_STREAM_SUFFIX[d.update_speed_ms],
            on_depth_snapshot=self._wake_snapshots,
        )
        self.groups: list[StreamGroup] = []
        self.rest: RestClient | None = None  # gap repairs and depth snapshots share it
        if c.repair_gaps or self.depth:
            self.rest = RestClient(
                rest_url=cfg.binance.rest_base_url,
                time_unit=cfg.binance.time_unit,
                budget_per_minute=c.rest_weight_budget_per_minute,
                timeout=cfg.binance.rest_timeout_seconds,
            )
        self.repairer: RestRepairer | None = None
        self.snapshots = self._snapshotter()
        self.metrics: MetricsServer | None = None
        self._stop: asyncio.Event | None = None
        self._prev_rate = (time.monotonic(), 0)

    # start-up --------------------------------------------------------------------------------
    def _restore_ids(self) -> None:
        """Seed every tracker from the id checkpoint and the newest raw files (resume.py)."""
        open_gaps = self.book.load()
        checkpoint = load_checkpoint(self.layout, self.stream_kind)
        for symbol, tracker in self.trackers.items():
            cp = checkpoint.get(symbol)
            stream = f"{symbol.lower()}@{self.stream_kind}"
            floor = int(cp["next_id"]) - 1 if cp else None
            ids = recent_ids(self.layout, symbol, stream, floor)
            if cp is None:  # checkpoint lost: fall back to the open gaps of the gap book
                for gap in open_gaps:
                    if gap.symbol == symbol and gap.stream == stream:
                        tracker.add_hole(gap.first_id, gap.last_id, 0.0, gap.cause, True)
            restore_tracker(tracker, cp, ids)
            for hole in tracker.holes:  # a declared hole whose gap record was never saved
                if hole.declared and not any(
                    g.symbol == symbol and g.first_id <= hole.first and hole.last <= g.last_id
                    for g in open_gaps
                ):
                    hole.declared = False
            if tracker.next_id is not None:
                log.info(
                    "%s: resuming at id %d (%d missing ranges)",
                    symbol,
                    tracker.next_id,
                    len(tracker.holes),
                )
        self.book.reconcile(self.trackers)
        save_checkpoint(self.layout, self.stream_kind, self.trackers)

    def _unclean_ends(self) -> dict[str, int]:
        """Symbols whose previous run died without ``collector_stop`` (SIGKILL, crash, write
        failure), with the receive time of its last line. Start-up writes the missing stop,
        dated at that line (``unclean``), so it lands in that day's folder: a reader of that
        day alone then knows recording ended there, even if this start is days later."""
        ends = {}
        for symbol in self.cfg.symbols:
            try:
                last_ns = unclean_end_ns(self.layout, symbol)
            except (OSError, EOFError, zstandard.ZstdError) as exc:
                log.error("%s: cannot read the newest part: %s", symbol, exc)
                continue
            if last_ns is not None:
                ends[symbol] = last_ns
        if ends:
            log.warning("previous run did not stop cleanly (%s)", ", ".join(sorted(ends)))
        return ends

    def _snapshotter(self) -> DepthSnapshotter | None:
        """The depth snapshot fetcher, when some symbols record depth."""
        if not self.depth or self.rest is None:
            return None
        c = self.cfg.collector
        d = c.depth
        return DepthSnapshotter(
            client=self.rest,
            writer=self.writer,
            router=self.router,
            trackers=self.depth,
            stream=binance.DEPTH_STREAM_SUFFIX[d.update_speed_ms],
            limit=d.snapshot_limit,
            verify_seconds=d.verify_interval_minutes * 60,
            weight_cap=int(c.rest_weight_budget_per_minute * d.snapshot_weight_share),
        )

    def _wake_snapshots(self, symbol: str) -> None:
        if self.snapshots is not None:
            self.snapshots.wake(symbol)

    def _symbol_chunks(self) -> list[list[str]]:
        """The configured symbols in order, cut into connections of at most
        ``max_streams_per_connection`` streams (trade, bookTicker and maybe depth each)."""
        limit = self.cfg.binance.max_streams_per_connection
        chunks: list[list[str]] = []
        used = limit
        for s in self.cfg.symbols:
            n = len(self.router.streams_for([s]))
            if used + n > limit:
                chunks.append([])
                used = 0
            chunks[-1].append(s)
            used += n
        return chunks

    def _build_groups(self) -> None:
        b = self.cfg.binance
        c = self.cfg.collector
        settings = GroupSettings(
            silence_timeout=c.silence_timeout_seconds,
            max_age=c.max_connection_age_seconds,
            backoff_base=c.backoff_base_seconds,
            backoff_cap=c.backoff_cap_seconds,
        )
        for chunk in self._symbol_chunks():
            streams = "/".join(self.router.streams_for(chunk))
            url = f"{b.ws_base_url.rstrip('/')}/stream?streams={streams}"
            if b.time_unit == "us":
                url += f"&{binance.TIME_UNIT_PARAM}={binance.TIME_UNIT_NAMES['us']}"
            self.groups.append(
                StreamGroup(
                    len(self.groups),
                    chunk,
                    url,
                    self.router,
                    settings,
                    f"ws-{self.run_id}",
                    random.Random(),
                    started_ns=self.started_ns,
                )
            )

    def _on_write_failure(self, exc: BaseException) -> None:
        self.status = "failed"
        self.error = f"write failed: {one_line(exc)}"
        if self._stop is not None:
            self._stop.set()

    def request_stop(self) -> None:
        if self._stop is not None and not self._stop.is_set():
            log.info("stop requested")
            self._stop.set()

    # periodic work ---------------------------------------------------------------------------
    async def _flush_loop(self) -> None:
        last_rotate = 0.0
        while True:
            await asyncio.sleep(self.tuning.flush_interval)
            self.writer.flush()
            now = time.monotonic()
            if now - last_rotate >= self.tuning.rotate_check:
                last_rotate = now
                self.writer.rotate()

    async def _sync_loop(self) -> None:
        interval = self.tuning.fsync_interval
        next_at = time.monotonic() + interval
        while True:  # fixed rate: a slow fsync does not stretch the interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at = max(next_at + interval, time.monotonic())
            await self.writer.sync()

    async def _gap_loop(self) -> None:
        stream = self.stream_kind
        last_save = 0.0
        while True:
            await asyncio.sleep(0.25)
            now = time.monotonic()
            new = False
            for symbol, tracker in self.trackers.items():
                for hole in tracker.due(now, self.tuning.reorder_grace):
                    self.book.declare(symbol, f"{symbol.lower()}@{stream}", hole)
                    new = True
            self.book.reconcile(self.trackers)
            self._checkpoint()
            if new and self.repairer is not None:
                self.repairer.wakeup.set()
            if self.book.dirty and now - last_save >= 0.5:
                last_save = now
                try:
                    self.book.save()
                except OSError as exc:
                    log.error("cannot save %s: %s", self.book.path, exc)

    def _checkpoint(self) -> None:
        """Flush first, so the checkpoint never claims an id that is not in a file."""
        self.writer.flush()
        if self.writer.failed is not None:
            return
        try:
            save_checkpoint(self.layout, self.stream_kind, self.trackers)
        except OSError as exc:
            log.error("cannot save the id checkpoint: %s", exc)

    async def _heartbeat_loop(self) -> None:
        wd = watchdog_interval()
        hb_every = self.cfg.collector.heartbeat_seconds
        tick = min(hb_every, wd) if wd else hb_every
        last_hb = 0.0
        while True:
            await asyncio.sleep(tick)
            if wd:
                sd_notify("WATCHDOG=1")
            if time.monotonic() - last_hb >= hb_every - 1e-3:
                last_hb = time.monotonic()
                self.write_heartbeat()

    # heartbeat -------------------------------------------------------------------------------
    def group_states(self, now_ns: int) -> list[dict[str, Any]]:
        """Every connection group, live or not, in a fixed order (the heartbeat's "groups")."""
        last_msg = self.router.stats.last_msg_ns
        out = []
        for g in self.groups:
            connected = g.connected
            times = [last_msg[s] for s in g.symbols if s in last_msg]
            out.append(
                {
                    "group": g.index,
                    "symbols": g.symbols,
                    "connected": connected,
                    "up_since_ns": g.up_since_ns if connected else None,
                    "down_since_ns": None if connected else (g.down_since_ns or now_ns),
                    "last_message_ns": max(times) if times else None,
                }
            )
        return out

    def snapshot(self) -> dict[str, Any]:
        """The heartbeat (module docstring); also what /heartbeat and /metrics serve."""
        now_ns, mono = time.time_ns(), time.monotonic()
        st = self.router.stats
        prev_t, prev_n = self._prev_rate
        rate = (st.messages - prev_n) / (mono - prev_t) if mono > prev_t else 0.0
        symbols = {}
        for s, tracker in self.trackers.items():
            last = st.last_msg_ns.get(s)
            symbols[s] = {
                "last_message_at": iso(last),
                "last_message_ns": last,
                "age_seconds": round((now_ns - last) / 1e9, 3) if last else None,
                "next_trade_id": tracker.next_id,
                "pending_holes": len(tracker.holes),
            }
        reconnect_s = [x for g in self.groups for x in g.reconnect_seconds]
        conns = []
        for g in self.groups:
            if g.current is not None and not (g.current.task and g.current.task.done()):
                conns.append(
                    {
                        "conn": g.current.state.conn_id,
                        "symbols": g.symbols,
                        "age_seconds": round(mono - g.current.opened, 3),
                        # connected without a break since (replacements included)
                        "up_since_ns": g.up_since_ns,
                    }
                )
        rest = self.rest.stats if self.rest else None
        try:
            disk = shutil.disk_usage(self.layout.root)
        except OSError:
            disk = None
        return {
            "status": self.status,
            "error": self.error,
            "exit_code": self.exit_code,
            "pid": os.getpid(),
            "hostname": self.hostname,
            "boot_id": self.boot_id,
            "run_id": self.run_id,
            "lake_root": str(self.layout.root),
            "started_at": iso(self.started_ns),
            "updated_at": iso(now_ns),
            "updated_ns": now_ns,
            "heartbeat_seconds": self.cfg.collector.heartbeat_seconds,
            "symbols": symbols,
            "messages_total": st.messages,
            "messages_per_second": round(rate, 1),
            "duplicates_dropped": st.duplicates,
            "quarantined": st.quarantined,
            "server_shutdown_notices": st.shutdown_notices,
            "latency_ms": quantiles(list(st.latency_ns), 1e6),
            "durable_latency_ms": self.writer.durable.quantiles((0.5, 0.95, 0.99)),
            "reconnects": sum(g.reconnects for g in self.groups),
            "replacements": sum(g.replacements for g in self.groups),
            "connect_failures": sum(g.connect_failures for g in self.groups),
            "reconnect_seconds": quantiles(reconnect_s),
            "max_backoff_seconds": max(
                (d for g in self.groups for d in g.backoff_delays), default=0.0
            ),
            "connections": conns,  # the live ones
            "groups": self.group_states(now_ns),  # every group, live or not
            "gaps": {**self.book.counts(), "open_list": self.book.summary()},
            "rest": rest.__dict__.copy() if rest else None,
            "depth": {s: t.summary() for s, t in self.depth.items()},  # empty: no depth
            "bytes_written": self.writer.bytes_written,
            "lines_written": self.writer.lines_written,
            "parts_sealed": self.writer.parts_sealed,
            "open_parts": len(self.writer.parts),
            "torn_lines_recovered": self.torn_lines_recovered,
            "disk_free_bytes": disk.free if disk else None,
            "disk_total_bytes": disk.total if disk else None,
            "metrics_url": self.metrics.url if self.metrics else None,
        }

    def write_heartbeat(self, *, quiet: bool = False) -> None:
        """Write the heartbeat; the gap book is saved first, so it is never older than this.

        ``quiet``: a failure is only a debug message (the last words of a start that already
        logged why it failed: on a full disk this write fails too, and readers then see the
        old heartbeat go stale)."""
        level = logging.DEBUG if quiet else logging.ERROR
        if self.book.dirty:
            try:
                self.book.save()
            except OSError as exc:
                log.log(level, "cannot save %s: %s", self.book.path, exc)
        snap = self.snapshot()
        self._prev_rate = (time.monotonic(), self.router.stats.messages)
        try:
            data = orjson.dumps(snap, option=orjson.OPT_INDENT_2)
            atomic_write_bytes(self.layout.heartbeat_path, data, durable=False)
        except OSError as exc:
            log.log(level, "cannot write heartbeat: %s", exc)

    def _record_failed_start(self, error: str, exit_code: int) -> None:
        """Best effort: say "failed" with the reason and exit code in the heartbeat."""
        self.status, self.error, self.exit_code = "failed", error, exit_code
        self.write_heartbeat(quiet=True)

    # main ------------------------------------------------------------------------------------
    async def run(self) -> int:
        """Run until stopped; returns the process exit code.

        Raises LockHeld (another collector runs on this lake: its heartbeat is left alone),
        StartupError (the lake cannot be written: one line, exits.py) or, for a bug, the
        exception itself; the last two after a best-effort "failed" heartbeat."""
        self._stop = asyncio.Event()
        try:
            self.lock.acquire()
        except OSError as exc:
            raise startup_error(exc, "taking the lake lock", self.lock.path) from exc
        try:
            return await self._run()
        except StartupError as exc:
            self._record_failed_start(str(exc), exc.exit_code)
            raise
        except Exception as exc:
            self._record_failed_start(f"unexpected error: {one_line(exc)}", EXIT_SOFTWARE)
            raise
        finally:
            self.lock.release()

    async def _start_step(self, step: str, path: object, fn: Any, *args: Any) -> Any:
        """Run one start-up step in a worker thread; an OSError becomes a StartupError."""
        try:
            return await asyncio.to_thread(fn, *args)
        except OSError as exc:
            raise startup_error(exc, step, path) from exc

    async def _run(self) -> int:
        assert self._stop is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        log.info(
            "collector writing to %s (symbols: %s)",
            self.layout.root.resolve(),
            ",".join(self.cfg.symbols),
        )
        root, comp = self.layout.root, self.cfg.collector.compression
        report = await self._start_step("recovering leftover .open files", root / "raw",
                                        recover_lake, self.layout, comp)  # fmt: skip
        self.torn_lines_recovered = report.torn_lines
        await self._start_step("saving the trade-id checkpoint", self.layout.state_dir,
                               self._restore_ids)  # fmt: skip
        self._build_groups()
        await self._start_step("creating the state folder", self.layout.state_dir,
                               make_dirs, self.layout.state_dir)  # fmt: skip
        ends = await asyncio.to_thread(self._unclean_ends)
        for symbol, last_ns in ends.items():  # the stop the previous run never wrote
            line = session_line(last_ns, "collector", "collector_stop", unclean=True,
                                reason="no stop recorded", noted_ns=time.time_ns())  # fmt: skip
            self.writer.write(symbol, last_ns, line)
        start = {"pid": os.getpid(), "recovered_parts": len(report.sealed),
                 "torn_lines": report.torn_lines}  # fmt: skip
        clean = [s for s in self.cfg.symbols if s not in ends]
        if clean:
            self.router.session("collector", clean, "collector_start", **start)
        for symbol, last_ns in ends.items():
            self.router.session(
                "collector", [symbol], "collector_start", **start, unclean=True,
                last_recv_ns=last_ns,
            )  # fmt: skip
        tasks = [loop.create_task(g.run(), name=f"group-{g.index}") for g in self.groups]
        helpers = [
            loop.create_task(c())
            for c in (self._flush_loop, self._sync_loop, self._gap_loop, self._heartbeat_loop)
        ]
        if self.cfg.collector.repair_gaps and self.rest is not None:
            self.repairer = RestRepairer(
                client=self.rest,
                trade_stream=self.stream_kind,
                writer=self.writer,
                trackers=self.trackers,
                book=self.book,
            )
            helpers.append(loop.create_task(self.repairer.run()))
        if self.snapshots is not None:
            helpers.append(loop.create_task(self.snapshots.run()))
        if self.cfg.collector.metrics_port:
            self.metrics = MetricsServer(
                self.cfg.collector.metrics_host, self.cfg.collector.metrics_port, self.snapshot
            )
            try:
                await self.metrics.start()
            except OSError as exc:
                log.error("metrics endpoint disabled: %s", exc)
                self.metrics = None
        if self.status == "starting":
            self.status = "running"
        self.write_heartbeat()
        sd_notify("READY=1")
        await self._stop.wait()
        return await self._shutdown(tasks, helpers)

    async def _shutdown(self, tasks: list[asyncio.Task], helpers: list[asyncio.Task]) -> int:
        failed = self.writer.failed is not None
        if not failed:
            self.status = "stopping"
        sd_notify("STOPPING=1")
        for t in tasks:
            t.cancel()
        await asyncio.wait(tasks, timeout=4.0)
        for t in helpers:
            t.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
        if self.rest is not None:
            with contextlib.suppress(Exception):
                await self.rest.close()
        if not failed:
            self.router.session("collector", self.cfg.symbols, "collector_stop", reason="signal")
        await self.writer.close()
        failed = self.writer.failed is not None
        if not failed:
            self._checkpoint()
        self.book.reconcile(self.trackers)
        with contextlib.suppress(OSError):
            self.book.save(force=True)
        self.status = "failed" if failed else "stopped"
        self.exit_code = EXIT_WRITE_FAILED if failed else EXIT_OK
        self.write_heartbeat()
        if self.metrics is not None:
            await self.metrics.stop()
        if failed:
            log.error("collector stopped after a write error: %s", self.error)
            return EXIT_WRITE_FAILED
        log.info("collector stopped cleanly (%d parts sealed)", self.writer.parts_sealed)
        return EXIT_OK
