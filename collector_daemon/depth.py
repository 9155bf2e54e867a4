"""Per-symbol bookkeeping of the order book diff stream and the snapshots it needs.

Binance's diff depth events (``<symbol>@depth@100ms``) carry a range of book update ids,
``U`` to ``u``, and the next event starts at ``u + 1``. A reader rebuilds the book from a
REST snapshot (``lastUpdateId``) and the events after it, so the collector records, besides
every event, a snapshot wherever a reader needs one to (re)start:

* ``start``: the first event after the collector started;
* ``reconnect``: the first event after the connection carrying the stream was lost;
* ``gap``: an event whose ``U`` is not the previous ``u + 1`` (updates were lost);
* ``verify``: every ``verify_interval_minutes`` while the sequence is unbroken, to check
  the rebuilt book against.

Events are told apart by ``u``: one already seen (the make-before-break overlap of two
connections, an exchange re-send) is a duplicate and dropped; one below the newest ``u`` but
never seen arrived late (reordered) and is kept, as trades in a hole are. The sequence check
runs on the newest ``u`` only, so a late event opens no second gap.

A snapshot must cover the events it restarts from: ``lastUpdateId >= U - 1`` of the first
event after the break (Binance's procedure: a snapshot older than that is fetched again), and
for ``verify`` the events already received (``lastUpdateId >= u``). Requests coalesce: one
snapshot at a time per symbol; requests made meanwhile become one more fetch, unless the
snapshot under way already covers them (a ``verify`` snapshot never stands in for a resync).
Everything here is pure bookkeeping; ``snapshots.py`` does the fetching.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from collector_daemon.tracker import RecentIds

RESYNC_REASONS = ("start", "reconnect", "gap")  # reasons a reader restarts its book from


class Event(Enum):
    """What ``DepthTracker.accept`` made of a diff event."""

    NEXT = "next"  # in sequence: U == previous u + 1 (or the first event, a restart)
    GAP = "gap"  # newer, after a break in the sequence
    LATE = "late"  # older than the newest and never seen: reordered delivery, kept
    DUPLICATE = "duplicate"  # seen before: dropped


@dataclass(frozen=True)
class Request:
    """A snapshot to fetch: why, and the update id it must reach (``lastUpdateId >= need``)."""

    reason: str
    need: int


class DepthTracker:
    """Diff-event sequence and snapshot requests of one symbol (see module docstring)."""

    def __init__(self, window: int = 20_000) -> None:
        self.last_u: int | None = None  # newest update id received
        self.restart: str | None = "start"  # the next event's snapshot reason, if any
        self.events = self.gaps = self.duplicates = self.late = 0
        self.gap_after: int | None = None  # the u before the latest gap (for the log)
        self._seen = RecentIds(window)
        # snapshots
        self.wanted: str | None = None  # reason of the next fetch, None when none is due
        self.need = 0  # the next snapshot must have lastUpdateId >= need
        self.in_flight: Request | None = None
        self.fetched = self.failed = self.stale = 0
        self.fetched_by_reason: dict[str, int] = {}
        self.last_snapshot_id: int | None = None

    # the diff stream -------------------------------------------------------------------------
    def reconnected(self) -> None:
        """The connection carrying the stream was lost: the next event restarts the book."""
        self.restart = "reconnect"

    @property
    def in_sequence(self) -> bool:
        """Events arrive and no restart is pending (a verification snapshot makes sense)."""
        return self.last_u is not None and self.restart is None

    def accept(self, first: int, last: int) -> Event:
        """Classify the event covering update ids ``first..last`` and request the snapshot it
        calls for (``wanted``)."""
        if not self._seen.accept(last):
            self.duplicates += 1
            return Event.DUPLICATE
        self.events += 1
        prev = self.last_u
        if prev is not None and last <= prev:
            self.late += 1
            return Event.LATE
        verdict = Event.NEXT
        reason = self.restart
        if prev is not None and first != prev + 1:
            self.gaps += 1
            self.gap_after = prev
            verdict = Event.GAP
            reason = reason or "gap"
        self.restart = None
        self.last_u = last
        if reason is not None:
            self.want(reason, first - 1)
        return verdict

    # snapshots -------------------------------------------------------------------------------
    def want(self, reason: str, need: int) -> None:
        """Ask for a snapshot with ``lastUpdateId >= need``; merges with one already asked
        for (a resync reason wins over ``verify``)."""
        if self.wanted is None or (self.wanted == "verify" and reason != "verify"):
            self.wanted = reason
        self.need = max(self.need, need)

    def want_verify(self) -> bool:
        """Ask for a verification snapshot if one makes sense now; True if asked."""
        if not self.in_sequence or self.wanted is not None or self.in_flight is not None:
            return False
        assert self.last_u is not None
        self.want("verify", self.last_u)
        return True

    def take(self) -> Request | None:
        """The snapshot to fetch now, if one is wanted and none is under way."""
        if self.wanted is None or self.in_flight is not None:
            return None
        self.in_flight = Request(self.wanted, self.need)
        self.wanted = None
        return self.in_flight

    def failed_fetch(self) -> None:
        """The fetch under way failed: it is wanted again (merged with newer requests)."""
        req = self.in_flight
        self.in_flight = None
        self.failed += 1
        if req is not None:
            self.want(req.reason, req.need)

    def answered(self, last_update_id: int) -> bool:
        """A snapshot of the fetch under way was written. Returns True when it is stale
        (older than asked for): then it is wanted again, like requests it does not cover."""
        req = self.in_flight
        self.in_flight = None
        if req is None:
            return False
        self.fetched += 1
        self.fetched_by_reason[req.reason] = self.fetched_by_reason.get(req.reason, 0) + 1
        self.last_snapshot_id = last_update_id
        stale = last_update_id < req.need
        if stale:
            self.stale += 1
            self.want(req.reason, req.need)
        elif self.wanted is not None:
            # asked for while this one was under way: covered if it reaches far enough and
            # can serve the same purpose (a verify snapshot never stands in for a resync)
            serves = self.wanted == "verify" or req.reason in RESYNC_REASONS
            if serves and last_update_id >= self.need:
                self.wanted = None
        return stale

    def summary(self) -> dict[str, Any]:
        """Diff events, sequence gaps and snapshots so far (the heartbeat's "depth")."""
        return {
            "events": self.events,
            "gaps": self.gaps,
            "duplicates": self.duplicates,
            "late": self.late,
            "last_update_id": self.last_u,
            "in_sequence": self.in_sequence,
            "snapshots": self.fetched,
            "snapshots_by_reason": dict(self.fetched_by_reason),
            "snapshots_failed": self.failed,
            "snapshots_stale": self.stale,
            "snapshot_wanted": self.wanted,
            "last_snapshot_update_id": self.last_snapshot_id,
        }
