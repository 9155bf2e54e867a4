"""Per-symbol id bookkeeping: duplicate detection and gap detection in one structure.

Trade ids (``@trade`` ``t``) and aggregate ids (``@aggTrade`` ``a``) are consecutive per
symbol, so a tracker only needs the next expected id and the sorted list of id ranges that
are still missing. That is exact (no window that can forget) and its size is the number of
open holes, not the number of trades:

* ``id == next``          -> new, advance;
* ``id >  next``          -> new, and ``next .. id-1`` becomes a *pending* hole;
* ``id <  next``          -> new only if it lies in a hole (a late, reordered message or a
                             REST repair); otherwise it is a duplicate (make-before-break
                             overlap, exchange re-send) and is dropped.

A pending hole becomes a *gap* once it has stayed open longer than the reorder grace period;
the caller (GapBook) records and repairs it. bookTicker update ids increase but skip values,
so they only get a bounded recent-ids window (RecentIds) for overlap deduplication.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass

MAX_BELOW_FLOOR = 10_000


@dataclass
class Hole:
    """Missing ids ``first..last`` (inclusive), first seen missing at ``since`` (monotonic s)."""

    first: int
    last: int
    since: float
    cause: str
    declared: bool = False
    # exchange event times of the neighbours, for the gap's time range
    time_before: int | None = None
    time_after: int | None = None

    @property
    def count(self) -> int:
        return self.last - self.first + 1


class IdTracker:
    """Consecutive-id tracker of one symbol (see module docstring)."""

    def __init__(self, next_id: int | None = None) -> None:
        self.next_id = next_id
        self.holes: list[Hole] = []  # sorted by first, non-overlapping
        self._firsts: list[int] = []
        self.cause_hint = "in-stream"  # set to "reconnect"/"restart" by the collector
        self.last_time: int | None = None
        # With no history, ids just below the first one seen may still arrive (reordered);
        # they are new unless already seen. None once the history is known.
        self.floor: int | None = None
        self._below_floor: set[int] = set()

    def accept(self, ident: int, now: float, event_time: int | None = None) -> bool:
        """True if ``ident`` is new (write it), False if it is a duplicate (drop it)."""
        nxt = self.next_id
        if nxt is None:
            self.floor = ident
        if nxt is None or ident == nxt:
            self.next_id = ident + 1
            self.last_time = event_time
            self.cause_hint = "in-stream"  # the hint only names a hole right after the event
            return True
        if ident > nxt:
            hole = Hole(nxt, ident - 1, now, self.cause_hint, time_before=self.last_time)
            hole.time_after = event_time
            self.holes.append(hole)
            self._firsts.append(nxt)
            self.cause_hint = "in-stream"
            self.next_id = ident + 1
            self.last_time = event_time
            return True
        return self.fill(ident)

    def fill(self, ident: int) -> bool:
        """Mark ``ident`` as received if it is missing; False when it was already present."""
        i = bisect.bisect_right(self._firsts, ident) - 1
        if i < 0 or ident > self.holes[i].last:
            return self._below_first(ident)
        hole = self.holes[i]
        if hole.first == hole.last:
            del self.holes[i]
            del self._firsts[i]
        elif ident == hole.first:
            hole.first += 1
            self._firsts[i] = hole.first
        elif ident == hole.last:
            hole.last -= 1
        else:
            right = Hole(ident + 1, hole.last, hole.since, hole.cause, hole.declared)
            right.time_before, right.time_after = hole.time_before, hole.time_after
            hole.last = ident - 1
            self.holes.insert(i + 1, right)
            self._firsts.insert(i + 1, right.first)
        return True

    def _below_first(self, ident: int) -> bool:
        floor = self.floor
        if floor is None or ident >= floor or ident in self._below_floor:
            return False
        if len(self._below_floor) >= MAX_BELOW_FLOOR:
            self.floor = None  # long past start-up: stop tracking the first-seen boundary
            return False
        self._below_floor.add(ident)
        return True

    def add_hole(self, first: int, last: int, now: float, cause: str, declared: bool) -> None:
        """Re-open a known missing range (loaded from gaps.json or found in the files)."""
        if last < first:
            return
        if self.next_id is None or last >= self.next_id:
            self.next_id = max(self.next_id or 0, last + 1)
        for ident_range in self._uncovered(first, last):
            lo, hi = ident_range
            hole = Hole(lo, hi, now, cause, declared)
            i = bisect.bisect_left(self._firsts, lo)
            self.holes.insert(i, hole)
            self._firsts.insert(i, lo)

    def _uncovered(self, first: int, last: int) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        cur = first
        for hole in self.holes:
            if hole.last < cur:
                continue
            if hole.first > last:
                break
            if hole.first > cur:
                out.append((cur, hole.first - 1))
            cur = max(cur, hole.last + 1)
        if cur <= last:
            out.append((cur, last))
        return out

    def due(self, now: float, grace: float) -> list[Hole]:
        """Holes that outlived the reorder grace period and are not yet declared as gaps."""
        out = []
        for hole in self.holes:
            if not hole.declared and now - hole.since >= grace:
                hole.declared = True
                out.append(hole)
        return out

    def missing_in(self, first: int, last: int) -> int:
        """How many ids of ``first..last`` are still missing."""
        total = 0
        for hole in self.holes:
            lo, hi = max(first, hole.first), min(last, hole.last)
            if lo <= hi:
                total += hi - lo + 1
        return total


class RecentIds:
    """Bounded window of recently seen ids (bookTicker ``u``) for overlap deduplication."""

    def __init__(self, size: int = 20_000) -> None:
        self._size = size
        self._order: deque[int] = deque()
        self._seen: set[int] = set()

    def accept(self, ident: int) -> bool:
        if ident in self._seen:
            return False
        self._seen.add(ident)
        self._order.append(ident)
        if len(self._order) > self._size:
            self._seen.discard(self._order.popleft())
        return True
