"""What a day's recording missed: stretches without a live connection or without a collector
(from the session records of the raw files), and missing trade ids.

Session records are rows of kind ``session`` of the build's ``stage`` table
(``tick_staging``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import duckdb
import numpy as np

from crypto_lake.lib.core.fsutil import atomic_write_bytes
from crypto_lake.lib.core.paths import LakeLayout
from crypto_lake.lib.raw import fastparse

OUTAGE, UNRECORDED = "outage", "unrecorded"  # kinds of TickStats.outage_kinds


def first_live(trades: np.ndarray, quotes: np.ndarray, start_us: int) -> int | None:
    """The first receive time, at or after the day's start, of a live (not repaired)
    market line (rows as ``fastparse.TRADE_COLUMNS`` and ``QUOTE_COLUMNS``)."""
    live = trades[1, ((trades[8] & fastparse.FLAG_REPAIRED) == 0) & (trades[1] >= start_us)]
    cands = [int(x.min()) for x in (live, quotes[0][quotes[0] >= start_us]) if len(x)]
    return min(cands) if cands else None


def session_outages(
    con: duckdb.DuckDBPyConnection, start_us: int, end_us: int, first_live_us: int | None,
    market_recv: tuple[np.ndarray, ...] = (),
) -> list[tuple[int, int, str]]:  # fmt: skip
    """Intervals without recording, from session records, clipped to the day, with their
    kind: ``"outage"`` (the collector ran without a live connection) or ``"unrecorded"`` (no
    collector ran, or nothing was recorded).

    A disconnect opens an outage only when no other connection is live (the make-before-break
    replacement keeps streaming); a collector stop opens an unrecorded stretch; the next
    connect/subscribed closes either. A collector start with no stop before it means the
    previous process died without one (SIGKILL, crash, power loss): unrecorded from the last
    line received before the start (``market_recv``: receive times, µs, of the day's market
    lines; the session records count too) to the next connect. Anything still open at the end
    of the records runs to the end of the day. See ``_leading_outage`` for the day's start.
    """
    rows = con.execute(
        "SELECT recv_us, session, conn FROM stage WHERE kind = 'session' "
        "ORDER BY recv_us, session, conn"
    ).fetchall()
    live: set[str] = set()
    seen: set[str] = set()
    outages = _leading_outage(rows, start_us, end_us, first_live_us)
    opened: tuple[int, str] | None = None
    last_line = _LastLineBefore(market_recv)
    prev_us: int | None = None  # the previous session record
    for recv_us, event, conn in rows:
        if event in ("connect", "subscribed"):
            live.add(conn)
            seen.add(conn)
            if opened is not None:
                outages.append((opened[0], recv_us, opened[1]))
                opened = None
        elif event == "collector_start":
            if opened is None:  # no stop seen: whatever ran before died at its last line
                died = last_line.before(recv_us, prev_us)
                opened = (recv_us, OUTAGE) if died is None else (died, UNRECORDED)
            live.clear()
        elif event in ("disconnect", "replaced", "collector_stop"):
            if conn not in seen:
                seen.add(conn)  # it was live before the first record we have
            live.discard(conn)
            if event == "collector_stop":
                live.clear()
            if not live and opened is None and event != "replaced":
                opened = (recv_us, UNRECORDED if event == "collector_stop" else OUTAGE)
        prev_us = recv_us
    if opened is not None:
        outages.append((opened[0], end_us, opened[1]))
    return _disjoint([(max(a, start_us), min(b, end_us), k) for a, b, k in outages])


class _LastLineBefore:
    """The latest receive time before a given time, over the day's market lines. One
    vectorized pass per question (a collector start without a stop before it is rare, a
    handful a day at worst); sorting a busy day once would cost more."""

    def __init__(self, recv: tuple[np.ndarray, ...]) -> None:
        self._recv = [np.asarray(r, dtype=np.int64) for r in recv]

    def before(self, t_us: int, floor: int | None) -> int | None:
        """max(the last market line before ``t_us``, ``floor``), None when neither exists."""
        best = -1 if floor is None else floor
        for r in self._recv:
            if len(r):
                best = max(best, int(np.max(r, where=r < t_us, initial=-1)))
        return None if best < 0 else best


def _disjoint(intervals: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """Non-empty, non-overlapping intervals in time order; where two overlap the earlier one
    keeps the overlap, and touching intervals of one kind become one."""
    out: list[tuple[int, int, str]] = []
    for a, b, kind in sorted(intervals):
        if out:
            a = max(a, out[-1][1])
        if b <= a:
            continue
        if out and out[-1][1] == a and out[-1][2] == kind:
            out[-1] = (out[-1][0], b, kind)
        else:
            out.append((a, b, kind))
    return out


def _leading_outage(
    rows: list[tuple], start_us: int, end_us: int, first_live_us: int | None
) -> list[tuple[int, int, str]]:
    """How the day starts when nothing was recording at midnight.

    [day start, first record) when the day's first session record is a collector start
    ("unrecorded") or a connect ("outage": the collector started the day before) that no live
    line (``first_live_us``, the first one of the day) precedes. A day with neither a session
    record nor a live line was not recorded at all: the whole day is "unrecorded".
    """
    first = next((r for r in rows if start_us <= r[0] < end_us), None)
    if first is None:
        return [(start_us, end_us, UNRECORDED)] if first_live_us is None else []
    if first[1] not in ("collector_start", "connect", "subscribed"):
        return []
    if first_live_us is not None and first_live_us <= first[0]:
        return []
    return [(start_us, first[0], UNRECORDED if first[1] == "collector_start" else OUTAGE)]


def with_unrecorded_tail(
    outages: list[tuple[int, int]], kinds: list[str], end_us: int, last_recv_us: int | None,
    *, now_us: int, recorded_after: bool, connected_since_us: int | None,
) -> tuple[list[tuple[int, int]], list[str]]:  # fmt: skip
    """A closed day's outages plus the stretch after its last received line when nothing
    vouches that recording went on: no raw file after the day (``recorded_after``) and no
    collector connected to the symbol now since before that line (``connected_since_us``,
    from the heartbeat). A collector that died and has not started again wrote no stop and
    no start yet; without this its last hours would look like a quiet market."""
    if (
        now_us < end_us
        or last_recv_us is None
        or last_recv_us >= end_us
        or recorded_after
        or (connected_since_us is not None and connected_since_us <= last_recv_us)
    ):
        return outages, kinds
    merged = _disjoint([(a, b, k) for (a, b), k in zip(outages, kinds, strict=True)]
                       + [(last_recv_us, end_us, UNRECORDED)])  # fmt: skip
    return [(a, b) for a, b, _ in merged], [k for _, _, k in merged]


def trade_id_gaps(
    first_ids: np.ndarray, last_ids: np.ndarray, limit: int = 10_000
) -> list[tuple[int, int]]:
    """Missing underlying trade ids as (first_missing, last_missing), in id order."""
    if len(first_ids) < 2:
        return []
    if not np.all(first_ids[1:] >= first_ids[:-1]):
        o = np.argsort(first_ids, kind="stable")
        first_ids, last_ids = first_ids[o], last_ids[o]
    at = np.flatnonzero(first_ids[1:] > last_ids[:-1] + 1)[:limit]
    return [(int(last_ids[i]) + 1, int(first_ids[i + 1]) - 1) for i in at]


def save_outage_intervals(layout: LakeLayout, symbol: str, day: str,
                          intervals: Sequence[tuple[int, int, str]]) -> Path:  # fmt: skip
    """Persist a partition's unrecorded intervals, ``[start_us, end_us, kind]`` each (kind
    OUTAGE: the collector ran without a live connection; UNRECORDED: it did not run or
    recorded nothing), for the bars step to flag those seconds and coverage to tell them
    apart (``LakeLayout.outages_path``)."""
    path = layout.outages_path(symbol, day)
    data = json.dumps([[int(a), int(b), k] for a, b, k in intervals])
    atomic_write_bytes(path, data.encode(), durable=False)
    return path


def load_outage_intervals(layout: LakeLayout, symbol: str, day: str) -> list[tuple[int, int, str]]:
    """The saved intervals as ``(start_us, end_us, kind)``; files of the older two-element
    format read as kind OUTAGE."""
    path = layout.outages_path(symbol, day)
    if not path.exists():
        return []
    return [(int(row[0]), int(row[1]), str(row[2]) if len(row) > 2 else OUTAGE)
            for row in json.loads(path.read_text())]  # fmt: skip
