"""The book of a symbol-day from its raw files: the compiled path.

The raw files are streamed in blocks of whole lines; the scanner (``scan``) turns each block's
depth events and bookTickers into integer arrays, the engine (``engine``) replays them, and
every line the scanner leaves (snapshots, session records, odd or malformed lines) is read by
the plain reader (``lines.read_line``) and handed to the engine here, in its place in the
sequence. Memory is the engine's arrays (the book, bounded buffers, the day's rows) plus one
block: no event of the day is kept as a Python object.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import zstandard

from crypto_lake.lib.book import engine as eng
from crypto_lake.lib.book import state
from crypto_lake.lib.book.lines import (
    BookTicker,
    DepthEvent,
    DepthSnapshot,
    Malformed,
    Session,
    read_line,
)
from crypto_lake.lib.book.model import (
    MAX_QUARANTINE,
    US,
    BookChecks,
    BookConfig,
    BookDay,
    Crossing,
    Quarantined,
    SnapshotCheck,
    TickerMismatch,
)
from crypto_lake.lib.book.scan import scan
from crypto_lake.lib.raw.catalog import day_bounds_us
from crypto_lake.lib.raw.lines import open_raw

BLOCK_BYTES = 8 << 20  # lines read per block
_EVENTS, _LEVELS, _TICKERS, _FALLBACKS = 1 << 16, 1 << 20, 1 << 16, 1 << 12


def reconstruct_day(paths: Iterable[Path], symbol: str, day: str,
                    config: BookConfig | None = None) -> BookDay:  # fmt: skip
    """The book of ``symbol`` (upper case) over UTC ``day`` from its raw part files, read
    in the order given (the receive order). Same result as
    ``reference.reconstruct_day_reference``."""
    run = _Run(symbol, day, config or BookConfig())
    for path, offset, data in _blocks(list(paths)):
        run.feed(str(path), offset, data)
    return run.finish()


def _read_blocks(path: Path, size: int, dctx: zstandard.ZstdDecompressor) -> Iterator[
        tuple[int, bytes]]:  # fmt: skip
    """(offset, bytes) of whole lines; the last line may lack its newline."""
    with open_raw(path, dctx) as fh:
        offset, rest = 0, b""
        while True:
            block = fh.read(size)
            if not block:
                if rest:
                    yield offset, rest
                return
            data = rest + block if rest else block
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                rest = data  # a line longer than the block
                continue
            yield offset, data[:cut]
            offset += cut
            rest = data[cut:]


def _blocks(paths: list[Path]) -> Iterator[tuple[Path, int, bytes]]:
    """The blocks of every file, decompressed a few blocks ahead in a thread (zstd releases
    the GIL, the engine too: the two overlap on two cores)."""
    q: queue.Queue = queue.Queue(maxsize=3)
    stop = threading.Event()

    def produce() -> None:
        try:
            dctx = zstandard.ZstdDecompressor()
            for path in paths:
                for offset, data in _read_blocks(path, BLOCK_BYTES, dctx):
                    if stop.is_set():
                        return
                    q.put((path, offset, data))
            q.put(None)
        except BaseException as exc:  # handed to the consumer
            q.put(exc)

    thread = threading.Thread(target=produce, name="book-reader", daemon=True)
    thread.start()
    try:
        while (item := q.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(0.01)


class _Run:
    def __init__(self, symbol: str, day: str, cfg: BookConfig) -> None:
        self.symbol, self.day, self.cfg = symbol, day, cfg
        self.start_us, end_us = day_bounds_us(day)
        self.S = state.new_engine(self.start_us // US, (end_us - self.start_us) // US, cfg)
        self.lower = np.frombuffer(symbol.lower().encode(), np.uint8)
        self.upper = np.frombuffer(symbol.encode(), np.uint8)
        self.ev = np.zeros((7, _EVENTS), np.int64)
        self.lvp, self.lvq = np.zeros(_LEVELS, np.int64), np.zeros(_LEVELS, np.int64)
        self.tk = np.zeros((6, _TICKERS), np.int64)
        self.fb = np.zeros((2, _FALLBACKS), np.int64)
        self.order = np.zeros(_EVENTS + _TICKERS + _FALLBACKS, np.int64)
        self.snapshots: list[SnapshotCheck] = []
        self.quarantine: list[Quarantined] = []
        self.malformed_snapshots = self.tickers_malformed = self.disconnects = 0

    def feed(self, path: str, offset: int, data: bytes) -> None:
        buf = np.frombuffer(data, np.uint8)
        p = 0
        while p < len(buf):
            n, _, q = scan(buf, p, self.lower, self.upper, self.ev, self.lvp, self.lvq, self.tk,
                           self.fb, self.order)  # fmt: skip
            if n == 0 and q == p:  # one line with more levels than the arrays hold
                self.lvp = np.zeros(2 * len(self.lvp), np.int64)
                self.lvq = np.zeros(2 * len(self.lvq), np.int64)
                continue
            self._process(n, data, path, offset)
            p = q

    def _process(self, n: int, data: bytes, path: str, offset: int) -> None:
        i = 0
        while True:
            status, i = eng.run(self.S, self.order, n, self.ev, self.lvp, self.lvq, self.tk, i)
            if status == eng.DONE:
                return
            if status == eng.NEED_ROOM:
                self.S = state.with_room(self.S, int(max(self.ev[5:7, self.order[i] >> 2])))
                continue
            k = self.order[i] >> 2
            a, b = int(self.fb[0, k]), int(self.fb[1, k])
            self._fallback(data[a:b], path, offset + a)
            i += 1

    def _fallback(self, line: bytes, path: str, offset: int) -> None:
        item = read_line(line, self.symbol)
        if isinstance(item, DepthEvent):
            lvp = np.array([p for p, _ in item.bids] + [p for p, _ in item.asks] or [0], np.int64)
            lvq = np.array([q for _, q in item.bids] + [q for _, q in item.asks] or [0], np.int64)
            ev = np.array([[item.recv_ns], [item.t_us], [item.first_id], [item.last_id], [0],
                           [len(item.bids)], [len(item.asks)]], np.int64)  # fmt: skip
            self.S = state.with_room(self.S, max(len(item.bids), len(item.asks)))
            status, _ = eng.run(self.S, np.array([eng.KIND_EVENT]), 1, ev, lvp, lvq, self.tk, 0)
            assert status == eng.DONE, "with_room made room for the event"
        elif isinstance(item, BookTicker):
            tk = np.array([[item.recv_ns], [item.update_id], [item.bid], [item.bid_qty],
                           [item.ask], [item.ask_qty]], np.int64)  # fmt: skip
            eng.run(self.S, np.array([eng.KIND_TICKER]), 1, self.ev, self.lvp, self.lvq, tk, 0)
        elif isinstance(item, DepthSnapshot):
            self._snapshot(item)
        elif isinstance(item, Malformed):
            if item.kind == "book_ticker":
                self.tickers_malformed += 1
                return
            if len(self.quarantine) < MAX_QUARANTINE:
                self.quarantine.append(Quarantined(path, offset, item.kind, item.reason,
                                                   line[:4096]))  # fmt: skip
            if item.kind == "depth_snapshot":
                self.malformed_snapshots += 1
            else:
                eng.handle_malformed(self.S)
        elif isinstance(item, Session) and item.event == "disconnect":
            self.disconnects += 1

    def _snapshot(self, s: DepthSnapshot) -> None:
        idx = len(self.snapshots)
        self.snapshots.append(SnapshotCheck(s.recv_ns, s.last_id, s.reason, s.limit))
        S, st = self.S, self.S.st
        if idx >= S.snap_res.shape[1]:
            S = S._replace(snap_res=state.grown(S.snap_res, 2 * S.snap_res.shape[1]))
        n = max(len(s.bids), len(s.asks), 1)
        if n > S.pvp.shape[1]:
            S = S._replace(pvp=state.grown(S.pvp, 2 * n), pvq=state.grown(S.pvq, 2 * n))
        # the snapshot, the buffer replayed on it, or the history redone over adopted levels
        self.S = state.with_room(S, n + int(st[state.S_BUFL_TAIL] - st[state.S_BUFL_HEAD])
                                 + int(st[state.S_HL_END] - st[state.S_HL_FIRST]))  # fmt: skip
        sp, sq = np.zeros((2, n), np.int64), np.zeros((2, n), np.int64)
        for side, levels in enumerate((s.bids, s.asks)):
            if levels:
                sp[side, : len(levels)], sq[side, : len(levels)] = zip(*levels, strict=True)
        eng.handle_snapshot(self.S, idx, s.last_id, sp, sq, len(s.bids), len(s.asks),
                            -1 if s.limit is None else s.limit)  # fmt: skip

    def finish(self) -> BookDay:
        S = self.S
        st = S.st
        checks = BookChecks(**{name: int(st[state.C_EVENTS + i])
                               for i, name in enumerate(state.COUNTERS)})  # fmt: skip
        checks.malformed_snapshots = self.malformed_snapshots
        checks.tickers_malformed = self.tickers_malformed
        checks.disconnects = self.disconnects
        checks.crossings = [Crossing(int(S.cr[0, k]), int(S.cr[1, k]))
                            for k in range(st[state.S_N_CR])]  # fmt: skip
        tm = S.tm.tolist()
        checks.ticker_mismatches = [
            TickerMismatch(tm[0][k], tm[1][k], tuple(tm[r][k] for r in range(2, 6)),
                           tuple(tm[r][k] for r in range(6, 10)))
            for k in range(st[state.S_N_TM])
        ]  # fmt: skip
        for idx, check in enumerate(self.snapshots):
            check.set_result(S.snap_res[:, idx].tolist())
        total = checks.malformed_events + self.malformed_snapshots
        return BookDay(self.symbol, self.day, self.start_us, S.rows, self.snapshots, checks,
                       self.quarantine, total)  # fmt: skip
