"""The book's rules on hand-built days: sync, gaps, stale snapshots, duplicates, malformed
lines, verification (exact, inside an event, rewound, too old), bookTickers, crossed books and
the depth a snapshot proves. Every day is rebuilt by the reference and the compiled path,
which must agree on everything; the assertions then check the documented behaviour."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from crypto_lake.lib.book import model as M
from crypto_lake.lib.book.fast import reconstruct_day
from crypto_lake.lib.book.model import BookConfig, BookDay
from crypto_lake.lib.book.reference import reconstruct_day_reference
from crypto_lake.lib.book.synthetic import depth_event_line, snapshot_line, ticker_line
from crypto_lake.lib.raw.catalog import day_bounds_us
from crypto_lake.lib.raw.lines import session_line

DAY = "2024-03-01"
DAY0, _ = day_bounds_us(DAY)
S0 = 3600  # the first second with data: 01:00:00
T0 = DAY0 + S0 * 1_000_000
E8 = 10**8
P = 100 * E8  # a price of 100.00000000
C = 10**6  # one cent


def ev(t_ms: float, first: int, last: int, bids=(), asks=(), **kw) -> bytes:
    t = T0 + int(t_ms * 1000)
    return depth_event_line(t * 1000 + 2_000_000, t, first, last, list(bids), list(asks), **kw)


def snap(t_ms: float, last: int, bids, asks, **kw) -> bytes:
    return snapshot_line((T0 + int(t_ms * 1000)) * 1000, last, list(bids), list(asks), **kw)


def tick(t_ms: float, u: int, bid: int, bq: int, ask: int, aq: int) -> bytes:
    return ticker_line((T0 + int(t_ms * 1000)) * 1000, u, bid, bq, ask, aq)


BOOK = ([(P, 1), (P - C, 2)], [(P + C, 3), (P + 2 * C, 4)])  # bids, asks best first


def rebuild(tmp_path: Path, lines: list[bytes], config: BookConfig | None = None) -> BookDay:
    """Both reconstructions of the lines; they must agree; returns the compiled one's."""
    path = tmp_path / "part-000000.jsonl"
    path.write_bytes(b"".join(lines))
    fast = reconstruct_day([path], "BTCUSDT", DAY, config)
    ref = reconstruct_day_reference([path], "BTCUSDT", DAY, config)
    assert np.array_equal(fast.rows, ref.rows)
    assert dataclasses.asdict(fast.checks) == dataclasses.asdict(ref.checks)
    assert fast.snapshots == ref.snapshots
    assert fast.quarantine == ref.quarantine
    return fast


def row(day: BookDay, sec: int) -> dict:
    r = day.rows[:, S0 + sec]
    return {
        "state": M.STATE_NAMES[r[M.R_STATE]] or "reliable",
        "id": int(r[M.R_UPDATE_ID]),
        "bids": [(int(r[M.R_BID_PX + i]), int(r[M.R_BID_QTY + i]))
                 for i in range(M.LEVELS) if r[M.R_BID_PX + i]],
        "asks": [(int(r[M.R_ASK_PX + i]), int(r[M.R_ASK_QTY + i]))
                 for i in range(M.LEVELS) if r[M.R_ASK_PX + i]],
        "events": int(r[M.R_EVENTS]),
    }  # fmt: skip


def spans(day: BookDay) -> list[tuple[int, int, str]]:
    """Unreliable spans in seconds after S0 (the day's head and tail left out)."""
    out = []
    for g in day.gaps():
        a, b = (g.start_us - T0) // 1_000_000, (g.end_us - T0) // 1_000_000
        if b > 0 and a < 60:
            out.append((a, min(b, 60), g.reason))
    return out


def test_sync_from_a_snapshot_with_buffered_events_and_rows_by_event_time(tmp_path) -> None:
    day = rebuild(tmp_path, [
        ev(100, 95, 100, bids=[(P, 9)]),  # before the snapshot, already in it: dropped
        ev(130, 101, 101, asks=[(P + 3 * C, 1)]),  # buffered, applied after the snapshot
        snap(150, 100, *BOOK, reason="start"),
        ev(200, 102, 103, bids=[(P, 5)], asks=[(P + C, 0)]),
        tick(1100, 104, P, 5, P + C // 2, 7),  # arrives before its event: waits for it
        ev(1300, 104, 104, asks=[(P + C // 2, 7)]),
        tick(1310, 103, P, 5, P + 2 * C, 4),  # after its event: the history of tops
        tick(1320, 104, P, 5, P + C // 2, 7),
        ev(2100, 105, 106, bids=[(P - C, 0)]),
        ev(3500, 107, 107),
    ])  # fmt: skip
    assert [s.outcome for s in day.snapshots] == ["sync"]
    first = {"state": "reliable", "id": 103, "events": 3, "bids": [(P, 5), (P - C, 2)],
             "asks": [(P + 2 * C, 4), (P + 3 * C, 1)]}  # fmt: skip
    assert row(day, 0) == first
    assert row(day, 1)["asks"][0] == (P + C // 2, 7) and row(day, 1)["id"] == 104
    assert row(day, 2) == {"state": "reliable", "id": 106, "events": 1, "bids": [(P, 5)],
                           "asks": [(P + C // 2, 7), (P + 2 * C, 4), (P + 3 * C, 1)]}  # fmt: skip
    assert row(day, 3)["state"] == "no_data"  # never closed: no later event
    assert day.first_reliable == S0 and day.reliable_seconds == 3
    ch = day.checks
    assert (ch.events, ch.events_applied, ch.events_old) == (6, 5, 1)
    assert (ch.tickers, ch.tickers_compared, ch.tickers_equal) == (3, 3, 3)
    assert ch.crossed == 0 and not day.quarantine


def test_a_gap_breaks_the_book_until_a_later_snapshot_and_a_stale_one_is_skipped(tmp_path) -> None:
    day = rebuild(tmp_path, [
        snap(0, 100, *BOOK, reason="start"),
        ev(100, 101, 101, bids=[(P, 2)]),
        ev(1100, 102, 102, bids=[(P, 3)]),
        ev(2100, 105, 106, bids=[(P, 4)]),  # 103..104 lost: a gap
        ev(2200, 107, 107, bids=[(P, 5)]),
        snap(2250, 101, *BOOK, reason="gap"),  # older than the buffered events: stale
        ev(3100, 108, 108, bids=[(P, 6)]),
        snap(3200, 107, [(P, 5), (P - C, 2)], BOOK[1], reason="gap"),
        ev(4100, 109, 109, bids=[(P, 7)]),
        ev(5100, 110, 110),
    ])  # fmt: skip
    assert [s.outcome for s in day.snapshots] == ["sync", "stale", "sync"]
    # the lost updates happened after the last applied event (second 1): 1 and 2 unreliable;
    # the resync in second 3 holds from there
    assert spans(day) == [(1, 3, "gap"), (5, 60, "no_data")]
    assert row(day, 0)["state"] == "reliable"
    assert row(day, 3)["bids"][0] == (P, 6) and row(day, 4)["bids"][0] == (P, 7)
    assert day.checks.breaks_gap == 1
    assert day.checks.events_old == 2  # the buffered 105-106 and 107: in the snapshot


def test_duplicates_are_dropped_and_reordered_events_break_the_sequence(tmp_path) -> None:
    e101, e102, e103 = ev(100, 101, 101, bids=[(P, 2)]), ev(200, 102, 102), ev(300, 103, 103)
    day = rebuild(tmp_path, [
        snap(0, 100, *BOOK), e101, e101.replace(b"ws-1", b"ws-2"), e103, e102,
        snap(400, 102, [(P, 2), (P - C, 2)], BOOK[1]),
        ev(1100, 104, 104),
    ])  # fmt: skip
    ch = day.checks
    assert ch.events_duplicate == 1 and ch.breaks_gap == 1
    assert ch.events_old == 2  # the copy of 101; then 102 of the buffer, in the snapshot
    assert [s.outcome for s in day.snapshots] == ["sync", "sync"]
    assert row(day, 0)["state"] == "reliable" and row(day, 0)["id"] == 103


def test_malformed_lines_are_quarantined_and_a_malformed_event_breaks_the_book(tmp_path) -> None:
    bad = ev(1100, 102, 102).replace(b'"u":102', b'"u":"102"')
    day = rebuild(tmp_path, [
        snap(0, 100, *BOOK), ev(100, 101, 101),
        bad, snap(1150, 101, *BOOK)[:-40] + b"\n",  # a cut snapshot: quarantined only
        tick(1160, 101, P, 1, P + C, 3).replace(b'"B":"', b'"B":"-'),
        session_line((T0 + 1170_000) * 1000, "ws-1", "disconnect", reason="x"),
        ev(2100, 103, 103),
        snap(2200, 103, *BOOK),
        ev(3100, 104, 104),
    ])  # fmt: skip
    assert [(q.kind, q.reason, q.offset) for q in day.quarantine] == [
        ("depth_event", "missing or non-integer u", len(b"".join(
            [snap(0, 100, *BOOK), ev(100, 101, 101)]))),
        ("depth_snapshot", "not JSON", len(b"".join(
            [snap(0, 100, *BOOK), ev(100, 101, 101), bad]))),
    ]  # fmt: skip
    ch = day.checks
    assert (ch.malformed_events, ch.malformed_snapshots, ch.breaks_malformed) == (1, 1, 1)
    assert (ch.tickers_malformed, ch.disconnects) == (1, 1)
    # second 2 closes while the book is syncing (snapshot 103 loaded, no event applied yet)
    assert spans(day) == [(0, 3, "malformed"), (3, 60, "no_data")]


def test_verification_exact_inside_an_event_rewound_and_failing(tmp_path) -> None:
    after_101 = ([(P, 2), (P - C, 2)], BOOK[1])
    after_102 = ([(P, 2), (P - C, 2)], [(P + C, 9), (P + 2 * C, 4)])
    wrong = ([(P, 2), (P - C, 3)], BOOK[1])
    day = rebuild(tmp_path, [
        snap(0, 100, *BOOK, reason="start"),
        ev(100, 101, 101, bids=[(P, 2)]),
        snap(150, 101, *after_101),  # the book is at 101: exact, now
        snap(160, 102, *after_102),  # ahead of the book: waits for event 102
        ev(200, 102, 102, asks=[(P + C, 9)]),  # ends at 102: exact
        snap(250, 103, *after_102),  # waits; L = 103 falls inside the next event
        ev(300, 103, 105, bids=[(P, 8)]),  # touched: skipped; the other levels equal
        ev(400, 106, 106, asks=[(P + 2 * C, 5)]),
        snap(450, 104, [(P, 8), (P - C, 2)], after_102[1]),  # the book is past it: rewound
        snap(460, 106, *wrong),  # a wrong level: the book breaks
        ev(1100, 107, 107),
    ])  # fmt: skip
    got = [(s.outcome, s.compared_levels, s.mismatched_levels, s.skipped_levels)
           for s in day.snapshots]  # fmt: skip
    assert got == [("sync", 0, 0, 0), ("exact", 4, 0, 0), ("exact", 4, 0, 0),
                   ("straddle", 3, 0, 1), ("straddle", 3, 0, 1), ("exact", 4, 4, 0)]  # fmt: skip
    assert day.snapshots[1].mid_deviation == 0.0 and day.snapshots[1].mid_deviation_bps == 0.0
    assert day.snapshots[5].mid_deviation_bps == 0.0  # same best levels, wrong depth
    assert day.checks.breaks_verify_mismatch == 1 and row(day, 0)["state"] == "verify_mismatch"


def test_verification_too_old_abandoned_and_unresolved(tmp_path) -> None:
    cfg = BookConfig(history_events=2)
    day = rebuild(tmp_path, [
        snap(0, 100, *BOOK, reason="start"),
        ev(100, 101, 101), ev(200, 102, 102), ev(300, 103, 103),
        snap(350, 101, *BOOK),  # the history holds 102 and 103: rewound to 101
        snap(355, 100, *BOOK),  # would need 101 too: too old
        snap(360, 99, *BOOK),  # older than the sync: too old
        snap(370, 200, *BOOK),  # ahead: waits...
        ev(400, 105, 105),  # ...and a gap abandons it
        snap(500, 105, *BOOK, reason="gap"),
        snap(550, 104, *BOOK),  # syncing: an older snapshot is ignored
        ev(600, 106, 106),
        snap(650, 300, *BOOK),  # waits until the end of the input
        ev(700, 107, 107),
    ], cfg)  # fmt: skip
    assert [s.outcome for s in day.snapshots] == ["sync", "exact", "too_old", "too_old",
                                                  "abandoned", "sync", "ignored",
                                                  "unresolved"]  # fmt: skip
    assert day.snapshot_counts()["too_old"] == 2


def test_ticker_mismatches_and_crossed_books_are_reported(tmp_path) -> None:
    day = rebuild(tmp_path, [
        snap(0, 100, *BOOK),
        tick(50, 100, P, 1, P + C, 4),  # the book is not synced (no event applied): ignored
        ev(100, 101, 101, bids=[(P - 2 * C, 1)]),
        tick(150, 101, P, 1, P + C, 4),  # the ask qty is 3 after event 101
        ev(200, 102, 102, bids=[(P + C, 1)]),  # a bid at the best ask: crossed
        ev(300, 103, 103, bids=[(P + C, 0)]),
        ev(1100, 104, 104),
    ])  # fmt: skip
    ch = day.checks
    assert (ch.tickers_compared, ch.tickers_mismatched) == (1, 1)
    mm = ch.ticker_mismatches[0]
    assert (mm.update_id, mm.expected, mm.got) == (101, (P, 1, P + C, 4), (P, 1, P + C, 3))
    assert ch.crossed == 1 and ch.crossings[0].update_id == 102
    assert ch.crossings[0].t_us == T0 + 200_000


def test_rows_are_proved_only_within_the_snapshot_depth(tmp_path) -> None:
    bids = [(P - i * C, 1) for i in range(25)]
    asks = [(P + (i + 1) * C, 1) for i in range(25)]
    day = rebuild(tmp_path, [
        snap(0, 100, bids[:20], asks[:20], limit=20, reason="start"),  # cut at 20 levels
        ev(100, 101, 101, asks=[(P + C, 0)]),  # the 20th ask is now beyond the snapshot
        ev(1100, 102, 102, asks=[(P + C, 5)]),
        ev(2100, 103, 103),
        snap(2200, 103, bids, [(P + C, 5), *asks[1:]], limit=30),  # all of it: proves the rest
        ev(3100, 104, 104),
        ev(4100, 105, 105),
    ])  # fmt: skip
    assert row(day, 0)["state"] == "beyond_snapshot_depth"
    assert row(day, 1)["state"] == "reliable"
    assert row(day, 3)["state"] == "reliable" and len(row(day, 3)["asks"]) == 20
    assert day.snapshots[1].outcome == "exact" and day.snapshots[1].compared_levels == 40
    r1, r3 = day.rows[:, S0 + 1], day.rows[:, S0 + 3]
    # 10 bps (0.1 around 100.005) lies within the 20 levels proved, 50 bps (0.5) does not
    assert r1[M.R_FLAGS] & M.band_bit(0, 0) and not r1[M.R_FLAGS] & M.band_bit(1, 0)
    assert r3[M.R_FLAGS] & M.band_bit(1, 0) and r3[M.R_FLAGS] & M.band_bit(1, 1)
    assert r3[M.sum_index(0, 0, 0)] == 10  # bids 99.91 .. 100.00 within 10 bps
    assert r3[M.sum_index(0, 1, 0)] == 25 and r3[M.sum_index(0, 1, 0) + 1] == 0
    assert r3[M.sum_index(1, 0, 0)] == sum(P - k * C for k in range(10))  # notional, x1e-16


def test_the_unsynced_buffer_is_bounded(tmp_path) -> None:
    cfg = BookConfig(buffer_events=2)
    day = rebuild(tmp_path, [ev(100 * i, 100 + i, 100 + i) for i in range(1, 6)]
                  + [snap(550, 102, *BOOK), ev(600, 106, 106)], cfg)  # fmt: skip
    assert day.checks.events_evicted == 4  # 101..103, then 104 when 106 arrives
    assert [s.outcome for s in day.snapshots] == ["stale"]  # 103 is gone: 104 starts the buffer


def test_milliseconds_events_before_the_day_and_a_quiet_hour(tmp_path) -> None:
    midnight = -1000 * S0  # relative to T0, in ms
    day = rebuild(tmp_path, [
        snap(midnight - 600, 100, *BOOK),
        ev(midnight - 500, 101, 101, unit="ms"),  # the day before: no row, not counted
        ev(midnight + 100, 102, 102, unit="ms", bids=[(P, 7)]),
        ev(100, 103, 103, unit="ms"),  # an hour later, the next update id: nothing missed
    ])  # fmt: skip
    assert int(day.rows[M.R_EVENTS].sum()) == 2
    assert day.rows[M.R_EVENTS, 0] == 1 and day.rows[M.R_BID_PX, 0] == P
    assert day.first_reliable == 0 and day.reliable_seconds == S0  # the quiet hour too
