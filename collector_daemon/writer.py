"""Rotating raw part files: one ``.open`` file per (symbol, UTC day of receive time).

Lines are buffered in memory only briefly: ``flush()`` (called every few ms by the collector
and whenever a buffer grows large) hands them to the OS with one ``os.write`` per file, so a
``kill -9`` loses at most the last few milliseconds. ``sync()`` fsyncs every file with new
bytes (in a worker thread) and measures receive-to-durable latency. ``rotate()`` seals files
older than ``rotate_seconds`` and files of a past UTC day. A write error (ENOSPC, EFBIG, ...)
puts the writer in a failed state: torn bytes are cut back to the last whole line, nothing
more is accepted, and the failure callback tells the collector to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from collector_daemon.sealing import seal_file
from crypto_lake.lib.core.fsutil import FILE_MODE, make_dirs, set_file_mode
from crypto_lake.lib.core.logs import get_logger
from crypto_lake.lib.core.paths import LakeLayout, parse_part_name, part_file_name

log = get_logger("collector.writer")

QUARANTINE = "_quarantine"  # writer key of the quarantine stream
NS_PER_DAY = 86_400 * 1_000_000_000
FLUSH_BYTES = 256 * 1024  # a buffer this large goes to the OS at once


@dataclass
class OpenPart:
    """The file currently written for one key (symbol or quarantine) and day."""

    key: str
    day_num: int
    number: int
    path: Path
    fd: int
    opened: float  # monotonic
    buf: bytearray = field(default_factory=bytearray)
    buf_lines: int = 0
    buf_first_ns: int = 0
    good_offset: int = 0  # bytes of whole lines handed to the OS
    lines: int = 0
    unsynced: list[tuple[int, int]] = field(default_factory=list)  # (lines, oldest recv_ns)


class DurableLatency:
    """Receive-to-durable latency samples: (latency_ns, line count) per fsynced chunk.

    A chunk is the set of lines handed to the OS in one write; its latency is measured from
    its *oldest* line's receive time, so the figures are an upper bound for every line.
    """

    def __init__(self, size: int = 20_000) -> None:
        self.samples: deque[tuple[int, int]] = deque(maxlen=size)

    def record(self, done_ns: int, chunks: list[tuple[int, int]]) -> None:
        for lines, first_ns in chunks:
            self.samples.append((done_ns - first_ns, lines))

    def quantiles(self, qs: tuple[float, ...] = (0.5, 0.99)) -> dict[str, float] | None:
        if not self.samples:
            return None
        ordered = sorted(self.samples)
        total = sum(w for _, w in ordered)
        out: dict[str, float] = {}
        for q in qs:
            target, acc = q * total, 0
            for lat, w in ordered:
                acc += w
                if acc >= target:
                    out[f"p{round(q * 100)}"] = lat / 1e6
                    break
        out["max"] = ordered[-1][0] / 1e6
        return out


class RawWriter:
    """Owns every open part file; all methods run on the collector's event loop."""

    def __init__(
        self,
        layout: LakeLayout,
        *,
        compression: str = "none",
        rotate_seconds: float = 60.0,
        fsync: bool = True,
        on_failure: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.layout = layout
        self.compression = compression
        self.rotate_seconds = rotate_seconds
        self.fsync = fsync
        self.on_failure = on_failure
        self.parts: dict[str, OpenPart] = {}
        self.failed: BaseException | None = None
        self.bytes_written = 0
        self.lines_written = 0
        self.parts_sealed = 0
        self.durable = DurableLatency()
        self._next_number: dict[tuple[str, int], int] = {}
        self._day_str: dict[int, str] = {}
        self._sealing: set[asyncio.Task[None]] = set()

    # paths -----------------------------------------------------------------------------------
    def day_str(self, day_num: int) -> str:
        s = self._day_str.get(day_num)
        if s is None:
            s = datetime.fromtimestamp(day_num * 86_400, UTC).date().isoformat()
            self._day_str[day_num] = s
        return s

    def directory(self, key: str, day_num: int) -> Path:
        day = self.day_str(day_num)
        if key == QUARANTINE:
            return self.layout.quarantine_root / day
        return self.layout.raw_day_dir(key, day)

    def _allocate_number(self, key: str, day_num: int, directory: Path) -> int:
        nxt = self._next_number.get((key, day_num))
        if nxt is None:
            # Scan every part name, sealed or open, so a number is never reused after restart.
            nxt = 0
            if directory.is_dir():
                for name in os.listdir(directory):
                    parsed = parse_part_name(name)
                    if parsed is not None:
                        nxt = max(nxt, parsed.number + 1)
        self._next_number[(key, day_num)] = nxt + 1
        return nxt

    def _open(self, key: str, day_num: int) -> OpenPart:
        directory = self.directory(key, day_num)
        make_dirs(directory)
        number = self._allocate_number(key, day_num, directory)
        path = directory / part_file_name(number, is_open=True)
        # O_EXCL: never append to (or clobber) a file this process did not create
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, FILE_MODE)
        try:
            set_file_mode(fd)  # the policy mode whatever the umask (fsutil)
        except OSError:
            os.close(fd)
            raise
        part = OpenPart(key, day_num, number, path, fd, time.monotonic())
        self.parts[key] = part
        return part

    # writing ---------------------------------------------------------------------------------
    def write(self, key: str, recv_ns: int, line: bytes) -> None:
        """Append one raw line for ``key`` (a symbol or QUARANTINE), received at ``recv_ns``."""
        if self.failed is not None:
            return
        day_num = recv_ns // NS_PER_DAY
        part = self.parts.get(key)
        try:
            if part is None or part.day_num != day_num:
                if part is not None:
                    self._start_seal(part)
                part = self._open(key, day_num)
            if not part.buf_lines:
                part.buf_first_ns = recv_ns
            part.buf += line
            part.buf_lines += 1
            if len(part.buf) >= FLUSH_BYTES:
                self._flush_part(part)
        except OSError as exc:
            self._fail(exc)

    def _flush_part(self, part: OpenPart) -> None:
        if not part.buf:
            return
        data = part.buf
        view = memoryview(data)
        written = 0
        try:
            while written < len(data):
                written += os.write(part.fd, view[written:])
        finally:
            view.release()
        part.good_offset += len(data)
        part.lines += part.buf_lines
        part.unsynced.append((part.buf_lines, part.buf_first_ns))
        self.bytes_written += len(data)
        self.lines_written += part.buf_lines
        part.buf = bytearray()
        part.buf_lines = 0

    def flush(self) -> None:
        """Hand every buffered line to the OS (survives kill -9 from here on)."""
        if self.failed is not None:
            return
        try:
            for part in self.parts.values():
                self._flush_part(part)
        except OSError as exc:
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        if self.failed is not None:
            return
        self.failed = exc
        log.error("write failed, no more data is accepted: %s", exc)
        for part in self.parts.values():
            # A short write may have left half a line: cut back to the last whole line so
            # recovery seals clean data. The .open files stay for the next start.
            try:
                os.truncate(part.path, part.good_offset)
            except OSError as trunc_exc:
                log.error("cannot truncate %s: %s", part.path, trunc_exc)
            with contextlib.suppress(OSError):
                os.close(part.fd)
        self.parts.clear()
        if self.on_failure is not None:
            self.on_failure(exc)

    # durability ------------------------------------------------------------------------------
    async def sync(self) -> None:
        """fsync every file that got new bytes since the last sync, off the event loop."""
        if not self.fsync or self.failed is not None:
            return
        self.flush()
        jobs: list[tuple[int, list[tuple[int, int]]]] = []
        for part in self.parts.values():
            if part.unsynced:
                jobs.append((os.dup(part.fd), part.unsynced))
                part.unsynced = []
        if not jobs:
            return

        async def _fsync(fd: int, chunks: list[tuple[int, int]]) -> None:
            try:
                await asyncio.to_thread(os.fsync, fd)
            finally:
                os.close(fd)
            self.durable.record(time.time_ns(), chunks)

        # All files at once, one worker thread each: the filesystem commits its journal
        # once for the whole group instead of once per file in turn.
        results = await asyncio.gather(*(_fsync(fd, ch) for fd, ch in jobs), return_exceptions=True)
        for res in results:
            if isinstance(res, OSError):
                self._fail(res)
                return

    # rotation and sealing --------------------------------------------------------------------
    def _start_seal(self, part: OpenPart) -> None:
        """Detach ``part`` and seal it in a worker thread."""
        self._flush_part(part)
        os.close(part.fd)
        if self.parts.get(part.key) is part:
            del self.parts[part.key]
        task = asyncio.get_running_loop().create_task(self._seal(part))
        self._sealing.add(task)
        task.add_done_callback(self._sealing.discard)

    async def _seal(self, part: OpenPart) -> None:
        try:
            final = await asyncio.to_thread(
                seal_file, part.path, self.compression, durable=self.fsync
            )
        except OSError as exc:
            self._fail(exc)
            return
        if self.fsync:
            self.durable.record(time.time_ns(), part.unsynced)
        self.parts_sealed += 1
        log.debug("sealed %s (%d lines)", final, part.lines)

    def rotate(self, now_ns: int | None = None) -> None:
        """Seal parts older than rotate_seconds or of a past UTC day."""
        if self.failed is not None:
            return
        mono = time.monotonic()
        today = (now_ns or time.time_ns()) // NS_PER_DAY
        try:
            for part in list(self.parts.values()):
                if mono - part.opened >= self.rotate_seconds or part.day_num < today:
                    self._start_seal(part)
        except OSError as exc:
            self._fail(exc)

    async def close(self) -> None:
        """Seal every open part and wait for all seals (shutdown)."""
        if self.failed is None:
            try:
                for part in list(self.parts.values()):
                    self._start_seal(part)
            except OSError as exc:
                self._fail(exc)
        while self._sealing:
            await asyncio.gather(*list(self._sealing), return_exceptions=True)
