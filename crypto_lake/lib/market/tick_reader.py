"""The compiled tick reader's side of a build: every raw file through ``fastparse``, in
parallel, rows appended in file order straight into the day's matrices.

The reader takes the lines the collector writes for live data and leaves every other line
(REST repairs, session records, anything unusual) to the general DuckDB path
(``tick_staging``), which gives the same result for every line.
"""

from __future__ import annotations

import gc
import os
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import zstandard

from crypto_lake.lib.archive.compact import raw_file_day
from crypto_lake.lib.core.fsutil import advise
from crypto_lake.lib.market import columns
from crypto_lake.lib.raw import fastparse
from crypto_lake.lib.raw.catalog import MAX_LINE_BYTES, long_line_record
from crypto_lake.lib.raw.lines import open_raw


class Parsed:
    """What the compiled reader made of a day's files: the accepted rows, appended in file
    order straight into the day's matrices, and the lines left to the general path."""

    def __init__(self, bufs: columns.Buffers) -> None:
        self.trades = columns.Rows(bufs, "trades", len(fastparse.TRADE_COLUMNS))
        self.quotes = columns.Rows(bufs, "quotes", len(fastparse.QUOTE_COLUMNS))
        self.other = 0
        self.fallback_own: list[bytes] = []
        self.fallback_other: list[bytes] = []
        self.fallback_files: list[str] = []  # own files with fallback lines
        self.long_lines: list[bytes] = []  # quarantine records of own lines too long for DuckDB


class _Scratch:
    """The bytes and parsed rows of a few consecutive files; reused job after job, so the
    per-file arrays are allocated once per build."""

    def __init__(self) -> None:
        self.data = np.empty(1 << 20, dtype=np.uint8)
        self.tr = np.empty((len(fastparse.TRADE_COLUMNS), 0), dtype=np.int64)
        self.bk = np.empty((len(fastparse.QUOTE_COLUMNS), 0), dtype=np.int64)
        self.fb_s = self.fb_e = np.empty(0, dtype=np.int64)
        self.n_tr = self.n_bk = self.n_other = 0
        self.fallback: list[bytes] = []
        self.fallback_files: list[str] = []
        self.long_lines: list[bytes] = []
        self.zstd = zstandard.ZstdDecompressor()

    def _read(self, path: Path) -> np.ndarray:
        n = 0
        with open_raw(path, self.zstd) as fh:
            while True:
                if n == len(self.data):
                    bigger = np.empty(2 * len(self.data), dtype=np.uint8)
                    bigger[:n] = self.data
                    self.data = bigger
                got = fh.readinto(memoryview(self.data)[n:])
                if not got:
                    return self.data[:n]
                n += got

    def _room(self, rows: int) -> None:
        """Capacity for ``rows`` more rows of each kind, and for ``rows`` fallback lines."""
        if self.tr.shape[1] < self.n_tr + rows or self.bk.shape[1] < self.n_bk + rows:
            cap = (max(self.n_tr, self.n_bk) + rows) * 5 // 4
            tr = np.empty((len(fastparse.TRADE_COLUMNS), cap), dtype=np.int64)
            bk = np.empty((len(fastparse.QUOTE_COLUMNS), cap), dtype=np.int64)
            tr[:, : self.n_tr] = self.tr[:, : self.n_tr]
            bk[:, : self.n_bk] = self.bk[:, : self.n_bk]
            self.tr, self.bk = tr, bk
        if len(self.fb_s) < rows:
            self.fb_s, self.fb_e = np.empty(rows, dtype=np.int64), np.empty(rows, dtype=np.int64)

    def parse(self, paths: list[Path], lower: np.ndarray, start_us: int, end_us: int,
              keep_other: bool) -> _Scratch:  # fmt: skip
        """Parse ``paths`` (all own files or all neighbour files), rows in file order."""
        self._reset()
        for path in paths:
            self._parse(path, self._read(path), lower, start_us, end_us, keep_other)
        return self

    def parse_piece(self, path: Path, piece: bytes, lower: np.ndarray, start_us: int,
                    end_us: int, keep_other: bool) -> _Scratch:  # fmt: skip
        """Parse one piece of whole lines of a compacted day (``_pieces``)."""
        self._reset()
        if len(self.data) < len(piece):
            self.data = np.empty(len(piece), dtype=np.uint8)
        buf = self.data[: len(piece)]
        buf[:] = np.frombuffer(piece, dtype=np.uint8)
        self._parse(path, buf, lower, start_us, end_us, keep_other)
        return self

    def _reset(self) -> None:
        self.n_tr = self.n_bk = self.n_other = 0
        self.fallback, self.fallback_files, self.long_lines = [], [], []

    def _parse(self, path: Path, buf: np.ndarray, lower: np.ndarray, start_us: int, end_us: int,
               keep_other: bool) -> None:  # fmt: skip
        at, rows, fallback = 0, len(buf) // _LINE_BYTES + 1, len(self.fallback)
        while True:  # once, unless the file has more lines than guessed
            self._room(rows)
            self.n_tr, self.n_bk, n_other, m, at = fastparse.parse_buffer(
                buf, at, lower, start_us, end_us, keep_other, self.tr, self.bk,
                self.fb_s, self.fb_e, self.n_tr, self.n_bk,
            )  # fmt: skip
            self.n_other += n_other
            if m and int((self.fb_e[:m] - self.fb_s[:m]).max()) > MAX_LINE_BYTES:
                self._set_aside_long_lines(buf, path, m)
            else:
                self.fallback += [buf[self.fb_s[i] : self.fb_e[i]].tobytes() for i in range(m)]
            if at >= len(buf):
                break
            rows *= 2
        if len(self.fallback) > fallback:
            self.fallback_files.append(str(path))

    def _set_aside_long_lines(self, buf: np.ndarray, path: Path, m: int) -> None:
        """The ``m`` fallback lines of ``buf``, those longer than MAX_LINE_BYTES (DuckDB's JSON
        reader would fail the whole day on them) as quarantine records instead."""
        for i in range(m):
            s, e = int(self.fb_s[i]), int(self.fb_e[i])
            if e - s > MAX_LINE_BYTES:
                line_no = int(np.count_nonzero(buf[:s] == 10)) + 1
                self.long_lines.append(long_line_record(path, line_no, buf[s:e].tobytes()))
            else:
                self.fallback.append(buf[s:e].tobytes())


# Room for a file's rows is guessed from its size (raw lines average about 200 bytes);
# counting its lines first would cost a pass over every byte.
_LINE_BYTES = 128


def _pieces(path: Path) -> Iterator[tuple[bytes, int]]:
    """A compacted day's lines (one file of a GB or more) in pieces of whole lines of about
    ``_CHUNK_BYTES``, each with the bytes of the file it took (to size the day from)."""
    rest, at = b"", 0
    with open(path, "rb") as raw:
        reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
        while chunk := reader.read(_CHUNK_BYTES):
            data = rest + chunk
            cut = data.rfind(b"\n") + 1
            if not cut:  # one line longer than a piece: read on
                rest = data
                continue
            yield data[:cut], raw.tell() - at
            rest, at = data[cut:], raw.tell()
    if rest:
        yield rest, 0


Job = tuple[str, object, bool, int]  # kind ("files" | "piece"), what, own?, bytes on disk


def _jobs(own: list[str], other: list[str], sizes: dict[Path, int]) -> Iterator[Job]:
    """The parse jobs in file order: up to ``_FILES_PER_JOB`` part files each, or one piece of
    a compacted day, so a day in one file is still parsed on every thread."""
    for group, is_own in ((own, True), (other, False)):
        batch: list[Path] = []
        for path in map(Path, group):
            if raw_file_day(path) == path.parent.name or not path.name.endswith(".zst"):
                batch.append(path)
                if len(batch) == _FILES_PER_JOB:
                    yield "files", batch, is_own, sum(sizes.get(p, 0) for p in batch)
                    batch = []
                continue
            if batch:
                yield "files", batch, is_own, sum(sizes.get(p, 0) for p in batch)
                batch = []
            for piece, weight in _pieces(path):
                yield "piece", (path, piece), is_own, weight
        if batch:
            yield "files", batch, is_own, sum(sizes.get(p, 0) for p in batch)


_CHUNK_BYTES = 8 << 20  # pieces of a compacted day: about a job of minute files (8 x 1 MB)
_FILES_PER_JOB = 8  # files parsed per thread hand-off (a thread switch per file costs)


def fast_parse(
    own: list[str], other: list[str], symbol: str, start_us: int, end_us: int, threads: int,
    bufs: columns.Buffers,
) -> Parsed:  # fmt: skip
    """Every file through the compiled reader, ``threads`` jobs of a few files (or of one
    piece of a compacted day) at a time (it releases the GIL), at most one job ahead per
    thread; rows in file order.

    Once the first job is in, the day's matrices are sized for the whole day from its rows
    per file byte: growing them step by step would copy every row about twice more, into
    memory touched for the first time, which is slow (see ``columns``). A wrong estimate
    costs nothing worse: too high leaves untouched address space, too low grows as before.
    """
    lower = np.frombuffer(symbol.lower().encode(), dtype=np.uint8)
    out = Parsed(bufs)
    threads = max(1, threads)
    free = list(bufs.objects("scratch", 2 * threads, _Scratch))
    pending: deque = deque()
    sizes = _file_sizes(own)
    first = 0  # bytes on disk of the first job, when it is of the day's own files
    sized = False  # jobs are taken in order: the first one sizes the day

    def take(is_own: bool, job: Future) -> None:
        nonlocal sized
        s = job.result()
        if not sized:
            sized = True
            if first:
                rest = (sum(sizes.values()) - first) / first * 1.1
                out.trades.reserve(s.n_tr + int(s.n_tr * rest))
                out.quotes.reserve(s.n_bk + int(s.n_bk * rest))
        out.trades.append(s.tr[:, : s.n_tr])
        out.quotes.append(s.bk[:, : s.n_bk])
        out.other += s.n_other
        (out.fallback_own if is_own else out.fallback_other).extend(s.fallback)
        if is_own:  # a compacted day's pieces: its name once
            out.fallback_files += [f for f in s.fallback_files if f not in out.fallback_files[-1:]]
            out.long_lines += s.long_lines
        free.append(s)

    with _no_cyclic_gc(), ThreadPoolExecutor(threads + 1) as pool:
        # read ahead, in order, so the reader threads rarely wait on a cold disk
        pool.submit(advise, [Path(f) for f in own + other], os.POSIX_FADV_WILLNEED)
        for n, (kind, what, is_own, weight) in enumerate(_jobs(own, other, sizes)):
            if n == 0 and is_own:
                first = weight
            if not free:
                take(*pending.popleft())
            s = free.pop()
            args = (lower, start_us, end_us, is_own)
            job = pool.submit(s.parse, what, *args) if kind == "files" else pool.submit(
                s.parse_piece, *what, *args)  # fmt: skip
            pending.append((is_own, job))
        while pending:
            take(*pending.popleft())
    return out


def _file_sizes(paths: list[str]) -> dict[Path, int]:
    """Bytes on disk of each file that exists."""
    sizes = {}
    for f in paths:
        try:
            sizes[Path(f)] = os.stat(f).st_size
        except OSError:
            continue  # whoever reads it reports it
    return sizes


class _GcPause:
    """Pauses Python's cyclic garbage collector while files are parsed: the reader makes a
    few objects per file and no cycles, yet each full collection walks every object of the
    process (about 1 s of a 13-symbol day). Nested and concurrent builds share one pause."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders = 0
        self._resume = False

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._holders == 0:
                self._resume = gc.isenabled()
                gc.disable()
            self._holders += 1
        try:
            yield
        finally:
            with self._lock:
                self._holders -= 1
                if self._holders == 0 and self._resume:
                    gc.enable()


_no_cyclic_gc = _GcPause()
