"""The gap book: every trade-id gap the collector declared, persisted in ``state/gaps.json``.

A gap is a range of ids that stayed missing longer than the reorder grace period. Its status
is derived from the symbol's IdTracker (``reconcile``): ``open`` while any id of the range is
still missing, ``repaired`` once none is. The file is rewritten atomically whenever the book
changed, so Dagster (and a restarted collector) always read a consistent list; open gaps are
reloaded on start and repaired then.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from collector_daemon.tracker import Hole, IdTracker
from crypto_lake.lib.core.fsutil import atomic_write_bytes
from crypto_lake.lib.core.logs import get_logger

log = get_logger("collector.gaps")
KEEP_CLOSED = 1000  # closed gaps kept in the file for inspection; open gaps are always kept


@dataclass
class Gap:
    gap_id: int
    symbol: str
    stream: str  # e.g. btcusdt@trade: says whether ids are trade or aggTrade ids
    first_id: int
    last_id: int
    cause: str  # in-stream | reconnect | restart | file-hole
    detected_ns: int
    time_from: int | None = None  # event time of the last trade before the gap
    time_to: int | None = None  # event time of the first trade after it
    status: str = "open"  # open | repaired
    missing: int = 0
    repaired: int = 0  # ids written from REST
    closed_ns: int | None = None
    note: str | None = None  # e.g. why repair stopped

    @property
    def count(self) -> int:
        return self.last_id - self.first_id + 1


class GapBook:
    """Declared gaps of all symbols (see module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.gaps: list[Gap] = []
        self._next_id = 1
        self.dirty = False

    def load(self) -> list[Gap]:
        """Read the file (if any) and return its open gaps."""
        if not self.path.exists():
            return []
        try:
            records = orjson.loads(self.path.read_bytes()).get("gaps", [])
            self.gaps = [Gap(**r) for r in records]
        except (orjson.JSONDecodeError, TypeError, AttributeError, OSError) as exc:
            log.error("cannot read %s (%s); starting a new gap book", self.path, exc)
            self.gaps = []
        self._next_id = max((g.gap_id for g in self.gaps), default=0) + 1
        return [g for g in self.gaps if g.status == "open"]

    def declare(self, symbol: str, stream: str, hole: Hole) -> Gap:
        gap = Gap(
            gap_id=self._next_id,
            symbol=symbol,
            stream=stream,
            first_id=hole.first,
            last_id=hole.last,
            cause=hole.cause,
            detected_ns=time.time_ns(),
            time_from=hole.time_before,
            time_to=hole.time_after,
            missing=hole.count,
        )
        self._next_id += 1
        self.gaps.append(gap)
        self.dirty = True
        log.warning(
            "gap %d: %s ids %d..%d (%d missing, cause %s)",
            gap.gap_id,
            symbol,
            gap.first_id,
            gap.last_id,
            gap.count,
            gap.cause,
        )
        return gap

    def open_gaps(self) -> list[Gap]:
        return [g for g in self.gaps if g.status == "open"]

    def reconcile(self, trackers: dict[str, IdTracker]) -> None:
        """Refresh each open gap's missing count; close the ones with nothing missing."""
        for gap in self.open_gaps():
            tracker = trackers.get(gap.symbol)
            if tracker is None:
                continue
            missing = tracker.missing_in(gap.first_id, gap.last_id)
            if missing != gap.missing:
                gap.missing = missing
                self.dirty = True
            if missing == 0:
                gap.status = "repaired"
                gap.closed_ns = time.time_ns()
                gap.note = None
                self.dirty = True
                log.info("gap %d (%s) repaired", gap.gap_id, gap.symbol)

    def counts(self) -> dict[str, int]:
        open_n = sum(1 for g in self.gaps if g.status == "open")
        return {
            "open": open_n,
            "repaired": sum(1 for g in self.gaps if g.status == "repaired"),
            "open_missing_ids": sum(g.missing for g in self.gaps if g.status == "open"),
        }

    def summary(self, limit: int = 50) -> list[dict[str, Any]]:
        return [asdict(g) for g in self.open_gaps()[:limit]]

    def save(self, force: bool = False) -> None:
        if not (self.dirty or force):
            return
        closed = [g for g in self.gaps if g.status != "open"][-KEEP_CLOSED:]
        self.gaps = sorted(self.open_gaps() + closed, key=lambda g: g.gap_id)
        payload = {"updated_ns": time.time_ns(), "gaps": [asdict(g) for g in self.gaps]}
        atomic_write_bytes(self.path, orjson.dumps(payload, option=orjson.OPT_INDENT_2))
        self.dirty = False
