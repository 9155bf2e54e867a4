"""The plain reconstruction: orjson per line, a dict per book side, ``sorted`` per second.

This is the specification the compiled path (``crypto_lake.lib.book.fast``) is tested
against, and the benchmark's baseline: slow, obvious, and following ``model``'s rules step by
step. Prices and quantities are Python ints of 1e-8 throughout.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from pathlib import Path

from crypto_lake.lib.book.lines import (
    BookTicker,
    DepthEvent,
    DepthSnapshot,
    Malformed,
    Session,
    read_line,
)
from crypto_lake.lib.book.model import (
    BANDS_BPS,
    BEYOND_DEPTH,
    FLAG_HAS_MID,
    GAP,
    LEVELS,
    MALFORMED,
    MAX_QUARANTINE,
    N_FIELDS,
    N_SR,
    NO_SNAPSHOT,
    NOTHING_PROVEN_ASK,
    NOTHING_PROVEN_BID,
    O_ABANDONED,
    O_EXACT,
    O_IGNORED,
    O_STALE,
    O_STRADDLE,
    O_SYNC,
    O_TOO_OLD,
    R_ASK_PX,
    R_ASK_QTY,
    R_BID_PX,
    R_BID_QTY,
    R_EVENTS,
    R_FLAGS,
    R_LEVELS,
    R_STATE,
    R_UPDATE_ID,
    RELIABLE,
    SR_OUTCOME,
    SYNCED,
    SYNCING,
    UNSYNCED,
    US,
    VERIFY_MISMATCH,
    BookChecks,
    BookConfig,
    BookDay,
    Crossing,
    Quarantined,
    SnapshotCheck,
    TickerMismatch,
    band_bit,
    band_threshold,
    new_rows,
    sum_index,
)
from crypto_lake.lib.raw.catalog import day_bounds_us
from crypto_lake.lib.raw.lines import open_raw

_MASK64 = (1 << 64) - 1
Entry = tuple[int, int, int, int]  # (side, price, old qty, new qty) of one applied level


def reconstruct_day_reference(paths: Iterable[Path], symbol: str, day: str,
                              config: BookConfig | None = None) -> BookDay:  # fmt: skip
    """The book of ``symbol`` (upper case) over UTC ``day`` from its raw part files, read
    in the order given (the receive order)."""
    book = ReferenceBook(symbol, day, config or BookConfig())
    for path in paths:
        offset = 0
        with open_raw(Path(path)) as fh:
            for line in fh:
                body = line[:-1] if line.endswith(b"\n") else line
                if body:
                    book.feed(read_line(body, symbol), str(path), offset, body)
                offset += len(line)
    return book.finish()


def _words(x: int) -> tuple[int, int]:
    """A non-negative int below 2^127 as signed (low, high) 64-bit words."""
    lo = x & _MASK64
    return (lo - (1 << 64) if lo >> 63 else lo), x >> 64


def snapshot_range(levels: list[tuple[int, int]], limit: int | None, side: int) -> int | None:
    """The worst price a snapshot side proves (its last level when it was cut at ``limit``),
    None when it holds the whole side."""
    if limit is not None and len(levels) < limit:
        return None
    if not levels:
        return NOTHING_PROVEN_BID if side == 0 else NOTHING_PROVEN_ASK
    return levels[-1][0]


class ReferenceBook:
    """The state machine of ``model``'s rules over dict books (side 0 bids, 1 asks)."""

    def __init__(self, symbol: str, day: str, config: BookConfig) -> None:
        self.symbol, self.day, self.cfg = symbol, day, config
        self.start_us, end_us = day_bounds_us(day)
        self.day0, self.nsec = self.start_us // US, (end_us - self.start_us) // US
        self.rows = new_rows(self.nsec)
        self.checks = BookChecks()
        self.snapshots: list[SnapshotCheck] = []
        self.results: list[list[int]] = []
        self.quarantine: list[Quarantined] = []
        self.phase, self.cur_reason = UNSYNCED, NO_SNAPSHOT
        self.sides: tuple[dict[int, int], dict[int, int]] = ({}, {})
        self.book_id = self.sync_l = 0
        self.last_ids = (-1, -1)  # U, u of the last applied event since the sync
        self.last_t: int | None = None
        self.open_sec: int | None = None
        self.floors: list[int | None] = [None, None]  # proved range: bid floor, ask ceiling
        self.buffer: deque[DepthEvent] = deque()
        self.buffer_levels = 0
        self.history: deque[tuple[int, int, list[Entry]]] = deque()
        self.history_levels = 0
        self.evicted_u = 0  # u of the event before the history's oldest
        # (u, proved, bid, bid qty, ask, ask qty) after each applied event
        self.tops: deque[tuple[int, ...]] = deque(maxlen=config.tops_history)
        self.pending_tickers: list[BookTicker] = []
        self.pending: tuple[DepthSnapshot, int] | None = None

    # --- input ------------------------------------------------------------------------------
    def feed(self, item: object, path: str, offset: int, line: bytes) -> None:
        ch = self.checks
        if isinstance(item, DepthEvent):
            self.on_event(item)
        elif isinstance(item, DepthSnapshot):
            self.on_snapshot(item)
        elif isinstance(item, BookTicker):
            self.on_ticker(item)
        elif isinstance(item, Malformed):
            if item.kind == "book_ticker":
                ch.tickers_malformed += 1
                return
            if len(self.quarantine) < MAX_QUARANTINE:
                self.quarantine.append(Quarantined(path, offset, item.kind, item.reason,
                                                   line[:4096]))  # fmt: skip
            if item.kind == "depth_snapshot":
                ch.malformed_snapshots += 1
            else:
                self.on_malformed_event()
        elif isinstance(item, Session) and item.event == "disconnect":
            ch.disconnects += 1

    def on_event(self, e: DepthEvent) -> None:
        n = len(e.bids) + len(e.asks)
        self.checks.events += 1
        self.checks.level_updates += n
        sec = e.t_us // US
        if self.open_sec is None:
            self.open_sec = sec
        elif sec > self.open_sec:
            self._close(sec)
            self.open_sec = sec
        i = self.open_sec - self.day0
        if 0 <= i < self.nsec:
            self.rows[R_EVENTS, i] += 1
            self.rows[R_LEVELS, i] += n
        self._sequence(e)

    def on_malformed_event(self) -> None:
        self.checks.malformed_events += 1
        if self.phase == UNSYNCED:
            self.buffer.clear()  # the buffer cannot run across the lost updates
            self.buffer_levels = 0
        else:
            self._break(MALFORMED)

    def on_snapshot(self, s: DepthSnapshot) -> None:
        idx = len(self.snapshots)
        self.snapshots.append(SnapshotCheck(s.recv_ns, s.last_id, s.reason, s.limit))
        self.results.append([0] * N_SR)
        res = self.results[idx]
        if self.phase == UNSYNCED:
            nxt = next((e for e in self.buffer if e.last_id > s.last_id), None)
            if nxt is not None and nxt.first_id > s.last_id + 1:
                res[SR_OUTCOME] = O_STALE
                return
            res[SR_OUTCOME] = O_SYNC
            self._load(s)
            events = list(self.buffer)
            self.buffer.clear()
            self.buffer_levels = 0
            for e in events:
                self._sequence(e)
        elif self.phase == SYNCING:
            if s.last_id > self.book_id:
                res[SR_OUTCOME] = O_SYNC
                self._load(s)
            else:
                res[SR_OUTCOME] = O_IGNORED
        else:
            if self.pending is not None:
                self.results[self.pending[1]][SR_OUTCOME] = O_ABANDONED
                self.pending = None
            if s.last_id < self.sync_l:
                res[SR_OUTCOME] = O_TOO_OLD
            elif s.last_id == self.book_id:
                self._verify(s, idx, O_EXACT, [])
            elif s.last_id > self.book_id:
                self.pending = (s, idx)
            else:
                self._verify_past(s, idx)

    def on_ticker(self, tk: BookTicker) -> None:
        self.checks.tickers += 1
        if self.phase != SYNCED:
            return
        if tk.update_id > self.book_id:
            if len(self.pending_tickers) >= self.cfg.pending_tickers:
                self.pending_tickers.pop(0)
            self.pending_tickers.append(tk)
            return
        for u, proved, *top in reversed(self.tops):
            if u == tk.update_id and proved:
                self._compare_ticker(tk, tuple(top))
            if u <= tk.update_id:
                return

    def finish(self) -> BookDay:
        self.pending = None  # its outcome stays "unresolved"
        for check, res in zip(self.snapshots, self.results, strict=True):
            check.set_result(res)
        ch = self.checks
        return BookDay(self.symbol, self.day, self.start_us, self.rows, self.snapshots, ch,
                       self.quarantine, ch.malformed_events + ch.malformed_snapshots)  # fmt: skip

    # --- the sequence -----------------------------------------------------------------------
    def _sequence(self, e: DepthEvent) -> None:
        if self.phase == UNSYNCED:
            self._buffer(e)
        elif e.last_id <= self.book_id:
            self.checks.events_old += 1
            if (e.first_id, e.last_id) == self.last_ids:
                self.checks.events_duplicate += 1
        elif e.first_id > self.book_id + 1:
            self._break(GAP)
            self._buffer(e)
        else:
            self._apply(e)

    def _buffer(self, e: DepthEvent) -> None:
        cfg = self.cfg
        self.buffer.append(e)
        self.buffer_levels += len(e.bids) + len(e.asks)
        while self.buffer and (len(self.buffer) > cfg.buffer_events
                               or self.buffer_levels > cfg.buffer_levels):  # fmt: skip
            old = self.buffer.popleft()
            self.buffer_levels -= len(old.bids) + len(old.asks)
            self.checks.events_evicted += 1

    def _set(self, side: int, price: int, qty: int) -> int:
        book = self.sides[side]
        old = book.get(price, 0)
        if qty:
            book[price] = qty
        else:
            book.pop(price, None)
        return old

    def _apply(self, e: DepthEvent) -> None:
        entries = [(0, p, self._set(0, p, q), q) for p, q in e.bids]
        entries += [(1, p, self._set(1, p, q), q) for p, q in e.asks]
        ch = self.checks
        ch.events_applied += 1
        ch.level_updates_applied += len(entries)
        self.book_id, self.last_ids, self.last_t = e.last_id, (e.first_id, e.last_id), e.t_us
        self.phase = SYNCED
        self._remember(e.first_id, e.last_id, entries)
        top = self._top()
        if top[0] and top[2] and top[0] >= top[2]:
            ch.crossed += 1
            if len(ch.crossings) < self.cfg.first_records:
                ch.crossings.append(Crossing(e.t_us, e.last_id))
        proved = self._proved(top)
        self.tops.append((e.last_id, proved, *top))
        waiting = []
        for tk in self.pending_tickers:
            if tk.update_id > e.last_id:
                waiting.append(tk)
            elif tk.update_id == e.last_id and proved:
                self._compare_ticker(tk, top)
        self.pending_tickers = waiting
        if self.pending is not None and e.last_id >= self.pending[0].last_id:
            s, idx = self.pending
            self.pending = None
            if e.last_id == s.last_id:
                self._verify(s, idx, O_EXACT, [])
            else:
                self._verify(s, idx, O_STRADDLE, entries)

    def _remember(self, first: int, last: int, entries: list[Entry]) -> None:
        cfg = self.cfg
        self.history.append((first, last, entries))
        self.history_levels += len(entries)
        while self.history and (len(self.history) > cfg.history_events
                                or self.history_levels > cfg.history_levels):  # fmt: skip
            _, u, old = self.history.popleft()
            self.history_levels -= len(old)
            self.evicted_u = u

    def _break(self, reason: int) -> None:
        ch = self.checks
        if reason == GAP:
            ch.breaks_gap += 1
        elif reason == MALFORMED:
            ch.breaks_malformed += 1
        else:
            ch.breaks_verify_mismatch += 1
        if self.last_t is not None and self.open_sec is not None:
            a = max(self.last_t // US - self.day0, 0)
            b = min(self.open_sec - self.day0, self.nsec)
            for i in range(a, b):
                if self.rows[R_STATE, i] in (RELIABLE, BEYOND_DEPTH):
                    self.rows[R_STATE, i] = reason
        self.phase, self.cur_reason = UNSYNCED, reason
        if self.pending is not None:
            self.results[self.pending[1]][SR_OUTCOME] = O_ABANDONED
            self.pending = None
        self.pending_tickers = []
        self.tops.clear()
        self.history.clear()
        self.history_levels = 0
        self.buffer.clear()
        self.buffer_levels = 0

    def _load(self, s: DepthSnapshot) -> None:
        self.sides = (dict(s.bids), dict(s.asks))
        self.book_id = self.sync_l = self.evicted_u = s.last_id
        self.phase = SYNCING
        self.last_ids = (-1, -1)
        self.floors = [snapshot_range(s.bids, s.limit, 0), snapshot_range(s.asks, s.limit, 1)]
        self.history.clear()
        self.history_levels = 0
        self.tops.clear()
        self.pending_tickers = []

    def _top(self) -> tuple[int, int, int, int]:
        bids, asks = self.sides
        b = max(bids) if bids else 0
        a = min(asks) if asks else 0
        return b, bids.get(b, 0), a, asks.get(a, 0)

    def _proved(self, top: tuple[int, int, int, int]) -> bool:
        """Whether the best bid and ask lie in the proved range (else a better level the
        book never saw may exist: the top is unknown)."""
        floor, ceil = self.floors
        return (floor is None or (top[0] != 0 and top[0] >= floor)) and (
            ceil is None or (top[2] != 0 and top[2] <= ceil))  # fmt: skip

    def _compare_ticker(self, tk: BookTicker, top: tuple) -> None:
        ch = self.checks
        ch.tickers_compared += 1
        expected = (tk.bid, tk.bid_qty, tk.ask, tk.ask_qty)
        if expected == top:
            ch.tickers_equal += 1
            return
        ch.tickers_mismatched += 1
        if len(ch.ticker_mismatches) < self.cfg.first_records:
            ch.ticker_mismatches.append(TickerMismatch(tk.recv_ns, tk.update_id, expected, top))

    # --- verification -----------------------------------------------------------------------
    def _verify_past(self, s: DepthSnapshot, idx: int) -> None:
        """A snapshot older than the book: rewind to it with the undo history."""
        hist, pred, j = list(self.history), self.evicted_u, None
        for k, (_, u, _) in enumerate(hist):
            if u > s.last_id:
                j = k if pred <= s.last_id else None
                break
            pred = u
        if j is None:
            self.results[idx][SR_OUTCOME] = O_TOO_OLD
            return
        exact = hist[j][0] > s.last_id  # the state before event j is the state at L
        undo = hist[j if exact else j + 1 :]
        for _, _, entries in reversed(undo):
            for side, price, old, _ in reversed(entries):
                self._set(side, price, old)
        skip = [] if exact else hist[j][2]
        res = self._compare(s, O_EXACT if exact else O_STRADDLE, skip)
        adopted = 0 if res[2] else self._adopt(s, skip)
        for _, _, entries in undo:
            for side, price, _, new in entries:
                self._set(side, price, new)
        self._conclude(s, idx, res, adopted)

    def _verify(self, s: DepthSnapshot, idx: int, outcome: int, skip: list[Entry]) -> None:
        """Compare with the book as it is now (at L, or after the event L falls in)."""
        res = self._compare(s, outcome, skip)
        self._conclude(s, idx, res, 0 if res[2] else self._adopt(s, skip))

    def _in(self, p: int, side: int, edge: int | None, proved: bool) -> bool:
        """Whether price p is within a snapshot edge (None: the whole side) and, proved
        True, within the book's proved range (False: beyond it)."""
        if edge is not None and (p < edge if side == 0 else p > edge):
            return False
        mine = self.floors[side]
        inside = mine is None or (p >= mine if side == 0 else p <= mine)
        return inside == proved

    def _compare(self, s: DepthSnapshot, outcome: int, skip: list[Entry]) -> list[int]:
        compared = mismatched = skipped = 0
        for side, levels in ((0, s.bids), (1, s.asks)):
            book, snap = self.sides[side], dict(levels)
            edge = snapshot_range(levels, s.limit, side)
            touched = {p for sd, p, _, _ in skip if sd == side}
            for p in {p for p in (*book, *snap) if self._in(p, side, edge, True)}:
                if p in touched:
                    skipped += 1
                    continue
                compared += 1
                mismatched += book.get(p, 0) != snap.get(p, 0)
        top = self._top()
        book_mid2 = top[0] + top[2] if top[0] and top[2] and self._proved(top) else 0
        snap_mid2 = s.bids[0][0] + s.asks[0][0] if s.bids and s.asks else 0
        return [outcome, compared, mismatched, skipped, book_mid2, snap_mid2]

    def _adopt(self, s: DepthSnapshot, skip: list[Entry]) -> int:
        """Take the snapshot's levels beyond the proved range (unknown to the book) except
        those the straddled event set; returns how many levels changed."""
        changed = 0
        for side, levels in ((0, s.bids), (1, s.asks)):
            edge = snapshot_range(levels, s.limit, side)
            touched = {p for sd, p, _, _ in skip if sd == side}
            snap = {p: q for p, q in levels if self._in(p, side, edge, False)}
            for p in [p for p in self.sides[side] if self._in(p, side, edge, False)]:
                if p not in touched and p not in snap:
                    self._set(side, p, 0)
                    changed += 1
            for p, q in snap.items():
                if p not in touched and self._set(side, p, q) != q:
                    changed += 1
        return changed

    def _conclude(self, s: DepthSnapshot, idx: int, res: list[int], adopted: int) -> None:
        """Record a verification; a mismatch breaks the book, a match extends the proved
        range to the snapshot's (whose levels were adopted). Adopted levels restart the undo
        history (its old quantities predate them)."""
        self.results[idx][:] = res
        if res[2]:
            self._break(VERIFY_MISMATCH)
            return
        if adopted:
            self.history.clear()
            self.history_levels = 0
            self.evicted_u = self.book_id
        for side, levels in ((0, s.bids), (1, s.asks)):
            edge, mine = snapshot_range(levels, s.limit, side), self.floors[side]
            if edge is None or mine is None:
                self.floors[side] = None
            else:
                self.floors[side] = min(mine, edge) if side == 0 else max(mine, edge)

    # --- rows -------------------------------------------------------------------------------
    def _close(self, to_sec: int) -> None:
        """Rows of the seconds [open_sec, to_sec): the book now."""
        a = max(self.open_sec - self.day0, 0)
        b = min(to_sec - self.day0, self.nsec)
        if a >= b:
            return
        values = self._row()
        for f in range(N_FIELDS):
            if f not in (R_EVENTS, R_LEVELS):
                self.rows[f, a:b] = values[f]

    def _row(self) -> list[int]:
        v = [0] * N_FIELDS
        if self.phase != SYNCED:
            v[R_STATE] = self.cur_reason
            return v
        bids = sorted(self.sides[0].items(), reverse=True)
        asks = sorted(self.sides[1].items())
        for i, (p, q) in enumerate(bids[:LEVELS]):
            v[R_BID_PX + i], v[R_BID_QTY + i] = p, q
        for i, (p, q) in enumerate(asks[:LEVELS]):
            v[R_ASK_PX + i], v[R_ASK_QTY + i] = p, q
        floor, ceil = self.floors
        complete = (floor is None or (len(bids) >= LEVELS and bids[LEVELS - 1][0] >= floor)) and (
            ceil is None or (len(asks) >= LEVELS and asks[LEVELS - 1][0] <= ceil))  # fmt: skip
        v[R_STATE] = RELIABLE if complete else BEYOND_DEPTH
        v[R_UPDATE_ID] = self.book_id
        if not bids or not asks:
            return v
        flags = FLAG_HAS_MID
        mid2 = bids[0][0] + asks[0][0]
        for band, bps in enumerate(BANDS_BPS):
            thr = band_threshold(mid2, bps)
            for side, levels in ((0, bids), (1, asks)):
                qty = notional = 0
                for p, q in levels:
                    if (mid2 - 2 * p if side == 0 else 2 * p - mid2) > thr:
                        break
                    qty += q
                    notional += p * q
                for kind, total in ((0, qty), (1, notional)):
                    k = sum_index(kind, band, side)
                    v[k], v[k + 1] = _words(total)
                edge = self.floors[side]
                if edge is None or (mid2 - 2 * (edge - 1) > thr if side == 0
                                    else 2 * (edge + 1) - mid2 > thr):  # fmt: skip
                    flags |= band_bit(band, side)
        v[R_FLAGS] = flags
        return v
