"""Synthetic raw days for the book: the collector's exact line formats over a simulated book.

``write_day`` writes the raw part files of one symbol-day as the collector would (diff events,
bookTickers, REST snapshots at the start, every ``snapshot_every_s`` and after each fault,
optionally trades and session records) from the true book of ``crypto_lake.lib.book.sim``,
with faults on request (``Faults``): lost, reordered, duplicated, malformed and oddly laid
out diff events, stale and malformed snapshots, malformed tickers, disconnects. It returns
the true book at the end of every second when asked, so a reconstruction can be checked
against the truth and not only against another reconstruction. Deterministic per seed.
Independent of the exchange simulator (``crypto_lake.simulator``) on purpose.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
import zstandard

from crypto_lake.lib.book import sim
from crypto_lake.lib.book.synthetic_format import format_lines, literals
from crypto_lake.lib.core.paths import part_file_name
from crypto_lake.lib.raw.catalog import day_bounds_us
from crypto_lake.lib.raw.lines import depth_snapshot_line, session_line, ws_line

US = 1_000_000
GRID = 1 << 21  # ticks of the simulated price grid


@dataclass(frozen=True)
class Faults:
    """Per diff event probabilities, and counts, of what goes wrong in the files."""

    drop: float = 0.0  # missing from the files: a gap (a "gap" snapshot follows)
    reorder: float = 0.0  # swapped with the next event (a "gap" snapshot follows)
    duplicate: float = 0.0  # written twice
    corrupt: float = 0.0  # malformed (a "gap" snapshot follows)
    odd_layout: float = 0.0  # valid JSON in another layout (spaces)
    stale: float = 0.0  # a fault's resync snapshot is preceded by a stale one
    corrupt_snapshot: float = 0.0  # per snapshot
    corrupt_ticker: float = 0.0  # per bookTicker
    disconnects: int = 0  # 1-3 s outages with session records and a "reconnect" snapshot


@dataclass(frozen=True)
class SyntheticSpec:
    symbol: str = "BTCUSDT"
    day: str = "2024-03-01"
    start_s: int = 0  # first second of the day with events
    seconds: int = 60
    events_per_s: int = 10
    levels_per_event: int = 50  # mean level changes per event
    price: int = 97_000 * 10**8  # start mid, 1e-8
    tick: int = 10**6  # 0.01
    depth: int = 3000  # initial levels per side
    spacing: int = 15  # mean ticks between deep levels
    sigma: float = 3.0  # random walk of the fair price per event, ticks
    qty_unit: int = 100_000  # quantity step (0.001), 1e-8
    snapshot_every_s: int = 600
    snapshot_limit: int = 1000
    unit: str = "us"
    part_seconds: int = 600
    compression: str = "none"  # or "zstd"
    trades_per_event: int = 0  # @trade lines (the scanner skips them)
    mid_ticker: float = 0.3  # chance of a bookTicker inside an event (not comparable)
    ticker_after: float = 0.1  # chance the event's bookTicker arrives after the event
    seed: int = 1
    faults: Faults = field(default_factory=Faults)
    record_truth: bool = False


@dataclass
class SyntheticDay:
    paths: list[Path]
    events: int  # diff events simulated (some may be missing from the files)
    level_updates: int
    tickers: int
    snapshots: int
    raw_bytes: int
    truth: np.ndarray | None  # (sim.TRUTH_FIELDS, seconds) from truth_sec (day index) on
    truth_sec: int


def units_text(v: int) -> str:
    """An integer of 1e-8 as Binance writes it: ``"97000.01000000"``."""
    return f"{v // 10**8}.{v % 10**8:08d}"


def _pairs(levels: list[tuple[int, int]]) -> list[list[str]]:
    return [[units_text(p), units_text(q)] for p, q in levels]


def depth_event_line(recv_ns: int, t_us: int, first: int, last: int, bids: list[tuple[int, int]],
                     asks: list[tuple[int, int]], *, symbol: str = "BTCUSDT", unit: str = "us",
                     conn: str = "ws-1") -> bytes:  # fmt: skip
    """A diff event as the collector writes it (``ws_line`` of Binance's combined-stream
    message); prices and quantities in 1e-8, ``t_us`` the event time."""
    payload = {"e": "depthUpdate", "E": t_us if unit == "us" else t_us // 1000, "s": symbol,
               "U": first, "u": last, "b": _pairs(bids), "a": _pairs(asks)}  # fmt: skip
    message = orjson.dumps({"stream": f"{symbol.lower()}@depth@100ms", "data": payload})
    return ws_line(recv_ns, conn, unit, message)


def ticker_line(recv_ns: int, update_id: int, bid: int, bid_qty: int, ask: int, ask_qty: int, *,
                symbol: str = "BTCUSDT", unit: str = "us") -> bytes:  # fmt: skip
    """A bookTicker as the collector writes it."""
    payload = {"u": update_id, "s": symbol, "b": units_text(bid), "B": units_text(bid_qty),
               "a": units_text(ask), "A": units_text(ask_qty)}  # fmt: skip
    message = orjson.dumps({"stream": f"{symbol.lower()}@bookTicker", "data": payload})
    return ws_line(recv_ns, "ws-1", unit, message)


def snapshot_line(recv_ns: int, last_id: int, bids: list[tuple[int, int]],
                  asks: list[tuple[int, int]], *, limit: int = 1000, reason: str = "verify",
                  symbol: str = "BTCUSDT") -> bytes:  # fmt: skip
    """A REST depth snapshot as the collector writes it (sides best first)."""
    body = orjson.dumps({"lastUpdateId": last_id, "bids": _pairs(bids), "asks": _pairs(asks)})
    return depth_snapshot_line(recv_ns, f"{symbol.lower()}@depth@100ms", reason, limit, body)


# --- the day ----------------------------------------------------------------------------------
@dataclass
class _Request:
    """A REST snapshot: taken at ``tau`` (µs), received at ``recv`` (ns)."""

    tau: int
    recv: int
    reason: str
    corrupt: bool = False
    line: bytes = b""


class _Writer:
    """Turns simulated pieces into part files, splicing in snapshot and session lines by
    receive time and applying the planned faults."""

    def __init__(self, spec: SyntheticSpec, folder: Path, plan: dict[int, str],
                 extra: list[tuple[int, bytes]], rng: random.Random) -> None:  # fmt: skip
        self.spec, self.folder, self.plan, self.rng = spec, folder, plan, rng
        self.extra = sorted(extra, key=lambda x: x[0])  # (recv, line) not yet written
        self.cctx = zstandard.ZstdCompressor(level=3)
        self.paths: list[Path] = []
        self.raw_bytes = 0

    def add(self, recv: int, line: bytes) -> None:
        self.extra.append((recv, line))
        self.extra.sort(key=lambda x: x[0])

    def piece(self, data: bytes, meta: np.ndarray, first_event: int, last: bool) -> None:
        ends = meta[1].tolist()
        starts = [0, *ends[:-1]]
        lines = [data[a:b] for a, b in zip(starts, ends, strict=True)]
        recvs, kinds, events = meta[0].tolist(), meta[2].tolist(), meta[3].tolist()
        out: list[tuple[int, bytes]] = []
        swap: tuple[int, bytes] | None = None
        corrupt_ticker = self.spec.faults.corrupt_ticker
        for line, recv, kind, k in zip(lines, recvs, kinds, events, strict=True):
            fault = self.plan.get(first_event + k)
            if fault == "outage":
                continue  # the connection was down: nothing of it arrived
            if kind != 0:
                if kind == 1 and corrupt_ticker and self.rng.random() < corrupt_ticker:
                    line = line.replace(b'"b":"', b'"b":"x')
                out.append((recv, line))
                continue
            if fault == "drop":
                continue
            if fault == "reorder":
                swap = (recv, line)
                continue
            if fault == "duplicate":
                out.append((recv, line))
            elif fault == "corrupt":
                line = corrupt_event(line, self.rng)
            elif fault == "odd":
                line = line.replace(b'"U":', b'"U": ').replace(b',"a":', b', "a":')
            out.append((recv, line))
            if swap is not None and kind == 0:
                out.append((recv, swap[1]))
                swap = None
        cut = out[-1][0] if out and not last else None
        merged = out + [x for x in self.extra if cut is None or x[0] <= cut]
        self.extra = [x for x in self.extra if cut is not None and x[0] > cut]
        merged.sort(key=lambda x: x[0])  # stable: equal times keep their order
        self._write(b"".join(line for _, line in merged))

    def _write(self, data: bytes) -> None:
        self.raw_bytes += len(data)
        name = part_file_name(len(self.paths), compression=self.spec.compression)
        if self.spec.compression == "zstd":
            data = self.cctx.compress(data)
        path = self.folder / name
        path.write_bytes(data)
        self.paths.append(path)


def corrupt_event(line: bytes, rng: random.Random) -> bytes:
    """One of the ways a diff event can be malformed."""
    body = line.rstrip(b"\n")
    how = rng.randrange(6)
    if how == 0:
        body = body[: len(body) // 2]  # truncated
    elif how == 1:
        body = body.replace(b'"u":', b'"u":"', 1).replace(b',"b":', b'","b":', 1)  # u a string
    elif how == 2:
        body = body.replace(b',"u":', b',"v":', 1)  # no u
    elif how == 3:
        body = body.replace(b'0","', b'01","', 1)  # 9 decimals
    elif how == 4:
        body = body.replace(b'","', b'","-', 1)  # a negative quantity
    else:
        body = body.replace(b'"b":[["', b'"b":[["1e5', 1)  # not a plain decimal
    return body + b"\n"


def _plan(spec: SyntheticSpec, n_events: int, event_t, rng: random.Random):
    """Faults by event, the snapshot requests and session lines."""
    f = spec.faults
    plan: dict[int, str] = {}
    per_piece = spec.part_seconds * spec.events_per_s
    requests = [_Request(event_t(0) + 150_000, (event_t(0) + 210_000) * 1000, "start")]
    every = spec.snapshot_every_s * US
    day0 = day_bounds_us(spec.day)[0]
    tau = day0 + (event_t(0) - day0) // every * every + every
    while tau < event_t(n_events - 1) - US:
        requests.append(_Request(tau, (tau + rng.randint(20_000, 400_000)) * 1000, "verify"))
        tau += every
    sessions: list[tuple[int, bytes]] = []

    def resync(k: int, reason: str) -> None:
        after = event_t(min(k + 1, n_events - 1))
        if rng.random() < f.stale:
            requests.append(_Request(event_t(k) - 800_000, after * 1000 + 10_000_000, reason))
        tau = after + 30_000
        requests.append(_Request(tau, (tau + rng.randint(20_000, 300_000)) * 1000, reason))

    margin = 3 * spec.events_per_s
    for k in range(margin, n_events - margin):
        if k in plan or k - 1 in plan or (k + 1) % per_piece == 0:
            continue
        r = rng.random()
        for kind, p in (("drop", f.drop), ("reorder", f.reorder), ("duplicate", f.duplicate),
                        ("corrupt", f.corrupt), ("odd", f.odd_layout)):  # fmt: skip
            if r < p:
                plan[k] = kind
                if kind in ("drop", "reorder", "corrupt"):
                    resync(k + (kind == "reorder"), "gap")
                break
            r -= p
    for _ in range(f.disconnects):
        k = rng.randrange(margin, max(margin + 1, n_events - 4 * margin))
        d = rng.randint(1, 3) * spec.events_per_s
        if any(j in plan for j in range(k - 1, k + d + 1)):
            continue
        for j in range(k, k + d):
            plan[j] = "outage"
        sessions.append((event_t(k) * 1000, session_line(event_t(k) * 1000, "ws-1",
                                                         "disconnect", reason="test")))  # fmt: skip
        back = event_t(k + d) * 1000 - 40_000_000
        sessions.append((back, session_line(back, "ws-1", "connect")))
        tau = event_t(k + d) + 50_000
        requests.append(_Request(tau, (tau + rng.randint(20_000, 300_000)) * 1000, "reconnect"))
    for req in requests:
        req.corrupt = rng.random() < f.corrupt_snapshot
    requests.sort(key=lambda r: r.tau)
    return plan, requests, sessions


def _snapshot_line(spec: SyntheticSpec, req: _Request, last_id: int, px, qty, n) -> bytes:
    sides = [list(zip(px[s, : n[s]].tolist(), qty[s, : n[s]].tolist(), strict=True))
             for s in range(2)]  # fmt: skip
    line = snapshot_line(req.recv, last_id, sides[0], sides[1], limit=spec.snapshot_limit,
                         reason=req.reason, symbol=spec.symbol)  # fmt: skip
    return line[: len(line) // 3] + b"\n" if req.corrupt else line


def write_day(spec: SyntheticSpec, folder: Path) -> SyntheticDay:
    """Write the raw part files of ``spec`` into ``folder`` (created)."""
    folder.mkdir(parents=True, exist_ok=True)
    day0_us = day_bounds_us(spec.day)[0]
    t0 = day0_us + spec.start_s * US
    step = US // spec.events_per_s
    n_events = spec.seconds * spec.events_per_s

    def event_t(i: int) -> int:  # as sim.simulate times event i
        return t0 + i * step + (i * 7919) % 13 * 100

    rng = random.Random(spec.seed)
    plan, requests, sessions = _plan(spec, n_events, event_t, rng)
    bidq, askq = np.zeros(GRID, np.int64), np.zeros(GRID, np.int64)
    stamp = np.zeros((2, GRID), np.int64)
    mid = GRID // 2
    base = spec.price - mid * spec.tick
    sim.seed(spec.seed)
    sim.init_book(bidq, askq, mid, spec.depth, spec.spacing, spec.qty_unit)
    g = np.array([mid * 1000, sim._best(bidq, mid, 0), sim._best(askq, mid, 1), 10**9, 0, 0, -1],
                 np.int64)  # fmt: skip
    snap_tau = np.array([r.tau for r in requests] or [0], np.int64)[: len(requests)]
    limits = np.full(max(len(requests), 1), spec.snapshot_limit, np.int64)
    k_snap = len(requests)
    snap_l = np.zeros(max(k_snap, 1), np.int64)
    snap_px = np.zeros((2, max(k_snap, 1), spec.snapshot_limit), np.int64)
    snap_qty = np.zeros_like(snap_px)
    snap_n = np.zeros((2, max(k_snap, 1)), np.int64)
    truth = np.zeros((sim.TRUTH_FIELDS, spec.seconds if spec.record_truth else 0), np.int64)
    lit, offs = literals(spec.symbol, spec.unit)
    div = 1 if spec.unit == "us" else 1000
    writer = _Writer(spec, folder, plan, sessions, rng)
    per_piece = spec.part_seconds * spec.events_per_s
    width = 4 * spec.levels_per_event + 64
    totals = [0, 0]
    for first in range(0, n_events, per_piece):
        n = min(per_piece, n_events - first)
        ev = np.zeros((6, n), np.int64)
        lvp, lvq = np.zeros(n * width, np.int64), np.zeros(n * width, np.int64)
        tk = np.zeros((7, 2 * n), np.int64)
        s0 = int(g[sim.G_SNAP])
        n_lv, n_tk = sim.simulate(g, bidq, askq, stamp, n, t0, step, spec.levels_per_event,
                                  spec.sigma, spec.spacing, spec.qty_unit, base, spec.tick,
                                  snap_tau, limits, ev, lvp, lvq, tk, snap_l, snap_px, snap_qty,
                                  snap_n, truth, t0 // US, spec.mid_ticker,
                                  spec.ticker_after)  # fmt: skip
        totals[0] += n_lv
        totals[1] += n_tk
        for s in range(s0, int(g[sim.G_SNAP])):
            req = requests[s]
            writer.add(req.recv, _snapshot_line(spec, req, int(snap_l[s]), snap_px[:, s],
                                                snap_qty[:, s], snap_n[:, s]))  # fmt: skip
        lines = n * (3 + spec.trades_per_event)
        out = np.empty(n_lv * 45 + lines * 260, np.uint8)
        meta = np.zeros((4, lines), np.int64)
        size, n_lines = format_lines(out, lit, offs, ev, n, lvp, lvq, tk, n_tk, div,
                                     spec.trades_per_event, first * 1000 + 1, meta)  # fmt: skip
        writer.piece(out[:size].tobytes(), meta[:, :n_lines], first, first + n >= n_events)
    return SyntheticDay(writer.paths, n_events, totals[0], totals[1], int(g[sim.G_SNAP]),
                        writer.raw_bytes, truth if spec.record_truth else None,
                        spec.start_s)  # fmt: skip
