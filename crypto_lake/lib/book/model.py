"""What a book reconstruction of one symbol-day returns, and the rules it follows.

Both reconstructions (``reference`` and the compiled ``fast``) fill the same integer rows and
records; ``crypto_lake_tests/lib/test_book_*.py`` compares them field by field.

The rules (Binance's "how to manage a local order book correctly", made exact for files):

* **Sequence.** A diff event covers update ids ``U..u``. Synced, an event with ``u <=`` the
  book's id is dropped (Binance's update procedure, step 1: every update in it is already in
  the book, so a late or repeated event changes nothing; one with the same ``U/u`` as the
  last applied event is counted as a duplicate); one with ``U >`` id + 1 is a *gap*; any
  other is applied (it may overlap the book's id: quantities are absolute). So an event
  delivered out of order breaks the book where the later one arrives first (a gap), and the
  late one is dropped after the resync. A malformed depth event (quarantined) is a break too:
  its updates are lost. Session records (disconnects) are only counted: the update ids
  prove whether anything was lost, and an hour of silence followed by the next id is an
  hour in which the book did not change.
* **Sync.** Unsynced, events are buffered (``BookConfig.buffer_events`` / ``buffer_levels``,
  oldest dropped first; a malformed event empties the buffer). A snapshot ``L`` is *stale*
  when the first buffered event with ``u > L`` has ``U > L + 1`` (updates between them are
  missing): it is skipped, the next one is awaited. Otherwise the book is set to it and the
  buffered events are replayed with the rules above; until one event applies after the
  snapshot the book is *syncing* (not yet confirmed: a gap right after the snapshot means
  it was stale too). While syncing a newer snapshot replaces it, an older one is ignored.
* **Clock.** Rows follow the exchange's event time ``E`` (in the line's ``unit``): the row of
  second ``s`` is the book when the first event with ``E >= s + 1 s`` arrives (the receive
  order), so every event with ``E`` in ``s`` is in it (``events``/``level_updates`` count the
  events received while ``s`` was the latest second). Snapshots and bookTickers have no
  event time and move no clock. A second the clock never passed (before the first event,
  after the last one) has no row data (``no_data``): pass the next day's first part file to
  close the day's last second.
* **Reliable** rows: the book was synced at the second's end and its top 20 levels per side
  lie in the range a snapshot proved (``beyond_snapshot_depth`` otherwise: a snapshot holds
  only the top ``limit`` levels, so a deeper level that never changed is unknown; every level
  the book holds exists, only unseen ones can be missing). On a break, rows from the second
  of the last applied event on are marked unreliable, as the lost updates happened after it.
  Depth sums are NULL where their band reaches past the proved range.
* **Verification.** A snapshot received while synced is compared with the book at its
  ``lastUpdateId`` L: exactly when an applied event ends at L; when L falls inside an event
  (``U <= L < u``), the levels it touched are skipped (counted) and the others must be
  equal. A book already past L is rewound with the undo history of the last
  ``BookConfig.history_levels`` level updates (``too_old`` beyond it); one before L waits for
  the event that reaches L (``abandoned`` if the book breaks first, ``unresolved`` at the
  end). The levels compared are those within both the snapshot's depth (its top ``limit``
  levels) and the proved range. A mismatch is a break (``verify_mismatch``). A match adopts
  the snapshot's levels beyond the proved range and extends the range to the snapshot's
  (so the proof follows the price through the day); adopted levels restart the undo history.
  The mid deviation (book - snapshot) is reported where the book's top is proved.
* **bookTicker.** A ticker whose ``u`` is the last id of an applied event (the state at u) is
  compared with the book's best bid/ask then; one that arrives before that event waits for it
  (``BookConfig.pending_tickers``), a later one is looked up in the last ``tops_history``
  applied events' tops. Others are not comparable, nor is a top outside the proved range
  (a better level the book never saw may exist). A crossed book (best bid >= best ask after
  an applied event) is counted whatever the range.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

US = 1_000_000
LEVELS = 20  # levels per side in a row
BANDS_BPS = (10, 50)  # depth bands around the mid
I64_MIN = int(np.iinfo(np.int64).min)

# Row layout: one int64 column per second of the day, ``N_FIELDS`` rows.
R_STATE, R_FLAGS, R_UPDATE_ID, R_EVENTS, R_LEVELS = range(5)
R_BID_PX = 5
R_BID_QTY = R_BID_PX + LEVELS
R_ASK_PX = R_BID_QTY + LEVELS
R_ASK_QTY = R_ASK_PX + LEVELS
R_SUMS = R_ASK_QTY + LEVELS  # 8 sums as (low, high) 64-bit words, see ``sum_index``
N_FIELDS = R_SUMS + 16

# R_FLAGS bits: a depth band that lies inside the proved range (per band and side), a mid
FLAG_HAS_MID = 16


def band_bit(band: int, side: int) -> int:
    """The R_FLAGS bit of band index ``band`` (0: 10 bps, 1: 50 bps), side 0 bid / 1 ask."""
    return 1 << (band * 2 + side)


def sum_index(kind: int, band: int, side: int) -> int:
    """Row of the low word of a depth sum; kind 0 = quantity, 1 = notional (price x qty)."""
    return R_SUMS + 2 * (kind * 4 + band * 2 + side)


# R_STATE: 0 = reliable, else why not
RELIABLE, NO_DATA, NO_SNAPSHOT, GAP, MALFORMED, VERIFY_MISMATCH, BEYOND_DEPTH = range(7)
STATE_NAMES = ("", "no_data", "no_snapshot", "gap", "malformed", "verify_mismatch",
               "beyond_snapshot_depth")  # fmt: skip

# phases of the book
UNSYNCED, SYNCING, SYNCED = range(3)

# outcome of a snapshot
OUTCOMES = ("unresolved", "sync", "stale", "ignored", "exact", "straddle", "too_old",
            "abandoned")  # fmt: skip
O_UNRESOLVED, O_SYNC, O_STALE, O_IGNORED, O_EXACT, O_STRADDLE, O_TOO_OLD, O_ABANDONED = range(8)
# The proved range of a side whose snapshot had no level though ``limit`` allowed none: no
# price (a bid floor above every price, an ask ceiling below); None = the whole side.
NOTHING_PROVEN_BID, NOTHING_PROVEN_ASK = 1 << 61, 0
MAX_QUARANTINE = 1000  # quarantine records kept (all are counted)
# snapshot result fields (ints), as both reconstructions record them
SR_OUTCOME, SR_COMPARED, SR_MISMATCHED, SR_SKIPPED, SR_BOOK_MID2, SR_SNAP_MID2 = range(6)
N_SR = 6


@dataclass(frozen=True)
class BookConfig:
    """Bounds of the reconstruction's memory (equal in both implementations)."""

    buffer_events: int = 20_000  # diff events buffered while unsynced
    buffer_levels: int = 1 << 20  # their level changes
    history_levels: int = 1 << 16  # level updates kept to rewind the book to a snapshot
    history_events: int = 1 << 14
    tops_history: int = 4096  # applied events whose best bid/ask a late bookTicker can see
    pending_tickers: int = 4096  # bookTickers waiting for their event
    first_records: int = 10  # mismatches and crossings listed


@dataclass(frozen=True)
class Gap:
    """A span of unreliable seconds [start_us, end_us) and why (``STATE_NAMES``)."""

    start_us: int
    end_us: int
    reason: str


@dataclass(frozen=True)
class Quarantined:
    """A malformed depth event or snapshot: ``offset`` is its byte offset in the
    decompressed file; ``line`` its first 4 KiB."""

    path: str
    offset: int
    kind: str  # "depth_event" or "depth_snapshot"
    reason: str
    line: bytes


@dataclass(frozen=True)
class TickerMismatch:
    """A bookTicker that disagrees with the book at its update id (prices, qtys in 1e-8)."""

    recv_ns: int
    update_id: int
    expected: tuple[int, int, int, int]  # the ticker's bid, bid qty, ask, ask qty
    got: tuple[int, int, int, int]  # the book's (0, 0 for an empty side)


@dataclass(frozen=True)
class Crossing:
    t_us: int  # event time of the event after which the book was crossed
    update_id: int


@dataclass
class SnapshotCheck:
    """One REST snapshot and what became of it (``OUTCOMES``); for a verification
    (``exact``/``straddle``) the levels compared and the mid deviation, book - snapshot."""

    recv_ns: int
    last_update_id: int
    reason: str
    limit: int | None
    outcome: str = "unresolved"
    compared_levels: int = 0
    mismatched_levels: int = 0
    skipped_levels: int = 0
    mid_deviation: float | None = None  # in quote currency
    mid_deviation_bps: float | None = None

    def set_result(self, res: list[int]) -> None:
        """Fill from the integer result fields (SR_*)."""
        self.outcome = OUTCOMES[res[SR_OUTCOME]]
        self.compared_levels = res[SR_COMPARED]
        self.mismatched_levels = res[SR_MISMATCHED]
        self.skipped_levels = res[SR_SKIPPED]
        book2, snap2 = res[SR_BOOK_MID2], res[SR_SNAP_MID2]
        if self.outcome in ("exact", "straddle") and book2 > 0 and snap2 > 0:
            self.mid_deviation = (book2 - snap2) / (2 * 10**8)  # exact ints, one rounding
            self.mid_deviation_bps = (book2 - snap2) * 10_000 / snap2


@dataclass
class BookChecks:
    """Counters of the day (see the module docstring for the rules behind them)."""

    events: int = 0  # well-formed diff events received
    level_updates: int = 0  # their level changes
    events_applied: int = 0
    level_updates_applied: int = 0
    events_old: int = 0  # dropped: u <= the book's update id
    events_duplicate: int = 0  # of those, the same U/u as the last applied event
    events_evicted: int = 0  # dropped from the full buffer while unsynced
    breaks_gap: int = 0
    breaks_malformed: int = 0
    breaks_verify_mismatch: int = 0
    malformed_events: int = 0  # quarantined
    malformed_snapshots: int = 0  # quarantined
    crossed: int = 0  # applied events after which best bid >= best ask
    crossings: list[Crossing] = field(default_factory=list)
    tickers: int = 0  # well-formed bookTickers received
    tickers_malformed: int = 0  # ignored
    tickers_compared: int = 0
    tickers_equal: int = 0
    tickers_mismatched: int = 0
    ticker_mismatches: list[TickerMismatch] = field(default_factory=list)
    disconnects: int = 0  # session disconnect lines (noted; the update ids prove gaps)


@dataclass
class BookDay:
    """The reconstruction of one symbol-day. ``rows`` holds every second of the day
    (N_FIELDS x 86,400 int64, see R_*); ``book_1s`` rows start at ``first_reliable``."""

    symbol: str
    day: str
    start_us: int
    rows: np.ndarray
    snapshots: list[SnapshotCheck]
    checks: BookChecks
    quarantine: list[Quarantined]
    quarantined_total: int = 0  # also those beyond the listed ones

    @property
    def first_reliable(self) -> int | None:
        """Index of the day's first reliable second, or None."""
        hit = np.flatnonzero(self.rows[R_STATE] == RELIABLE)
        return int(hit[0]) if len(hit) else None

    @property
    def last_second(self) -> int | None:
        """Index of the day's last second the clock passed (a row of data), or None."""
        hit = np.flatnonzero(self.rows[R_STATE] != NO_DATA)
        return int(hit[-1]) if len(hit) else None

    @property
    def reliable_seconds(self) -> int:
        return int(np.count_nonzero(self.rows[R_STATE] == RELIABLE))

    def gaps(self) -> list[Gap]:
        """Maximal runs of unreliable seconds of the day with one reason each."""
        state = self.rows[R_STATE]
        change = np.flatnonzero(np.diff(state)) + 1
        starts = np.concatenate(([0], change))
        ends = np.concatenate((change, [len(state)]))
        return [
            Gap(self.start_us + int(a) * US, self.start_us + int(b) * US,
                STATE_NAMES[int(state[a])])
            for a, b in zip(starts, ends, strict=True)
            if state[a] != RELIABLE
        ]  # fmt: skip

    @property
    def max_mid_deviation_bps(self) -> float | None:
        devs = [abs(s.mid_deviation_bps) for s in self.snapshots
                if s.mid_deviation_bps is not None]  # fmt: skip
        return max(devs) if devs else None

    def snapshot_counts(self) -> dict[str, int]:
        """Snapshots by outcome, plus ``mismatched``: verified with a mismatched level."""
        out = {name: 0 for name in OUTCOMES}
        for s in self.snapshots:
            out[s.outcome] += 1
        out["mismatched"] = sum(1 for s in self.snapshots if s.mismatched_levels)
        return out


def new_rows(nsec: int) -> np.ndarray:
    rows = np.zeros((N_FIELDS, nsec), dtype=np.int64)
    rows[R_STATE] = NO_DATA
    return rows


def band_threshold(mid2: int, bps: int) -> int:
    """floor(bps * mid2 / 10,000) without overflow: a bid at p is within ``bps`` of the mid
    when mid2 - 2p <= this (an ask when 2p - mid2 <= this), mid2 = best bid + best ask."""
    return (mid2 // 10_000) * bps + ((mid2 % 10_000) * bps) // 10_000
