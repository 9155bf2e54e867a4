"""The compiled reconstruction equals the plain reference on random days, and both equal the
true book wherever they call a row reliable.

Synthetic days (``crypto_lake.lib.book.synthetic``) with every fault the files can carry (lost,
reordered, duplicated, malformed and oddly laid out diff events, stale and malformed
snapshots, malformed tickers, disconnects), in both time units, over several part files,
with shallow snapshots and tiny memory bounds so every buffer, history and ring overflows:
rows, checks, snapshots, quarantine and the book_1s table must be identical, and every
reliable row must hold the simulator's true top 20 levels (and 10 bps depth where proved).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from crypto_lake.lib.book import fast
from crypto_lake.lib.book import model as M
from crypto_lake.lib.book.fast import reconstruct_day
from crypto_lake.lib.book.model import BookConfig
from crypto_lake.lib.book.reference import reconstruct_day_reference
from crypto_lake.lib.book.synthetic import Faults, SyntheticSpec, write_day
from crypto_lake.lib.book.table import book_1s_table

FAULTS = Faults(drop=0.01, reorder=0.01, duplicate=0.01, corrupt=0.01, odd_layout=0.02,
                stale=0.5, corrupt_snapshot=0.1, corrupt_ticker=0.01, disconnects=1)  # fmt: skip
TINY = BookConfig(buffer_events=6, buffer_levels=150, history_levels=120, history_events=4,
                  tops_history=3, pending_tickers=2, first_records=3)  # fmt: skip
CASES = {
    "faults_us": (SyntheticSpec(seconds=60, faults=FAULTS, part_seconds=13, seed=1,
                                snapshot_every_s=10, trades_per_event=1), None),
    "faults_ms_zstd": (SyntheticSpec(seconds=60, faults=FAULTS, unit="ms", seed=2,
                                     compression="zstd", snapshot_every_s=7), None),
    "tiny_bounds": (SyntheticSpec(seconds=45, faults=FAULTS, seed=3, levels_per_event=20,
                                  snapshot_every_s=5), TINY),
    "shallow_snapshots": (SyntheticSpec(seconds=60, seed=4, snapshot_limit=25, depth=40,
                                        sigma=6.0, snapshot_every_s=4,
                                        faults=Faults(drop=0.01, stale=1.0)), None),
    "thin_fast_market": (SyntheticSpec(seconds=30, seed=5, events_per_s=20, depth=8,
                                       spacing=2, sigma=10.0, levels_per_event=6,
                                       snapshot_limit=1000, snapshot_every_s=3,
                                       faults=Faults(reorder=0.02, duplicate=0.05)), TINY),
}  # fmt: skip


def _truth_rows(day, built) -> tuple[int, int]:
    """(reliable rows checked, rows whose 10 bps depth was proved and checked)."""
    rows, truth = built.rows, day.truth
    checked = depth = 0
    for j in range(truth.shape[1]):
        r = rows[:, day.truth_sec + j]
        if r[M.R_STATE] != M.RELIABLE:
            continue
        mine = np.concatenate(
            [
                r[M.R_BID_PX : M.R_BID_PX + 20],
                r[M.R_BID_QTY : M.R_BID_QTY + 20],
                r[M.R_ASK_PX : M.R_ASK_PX + 20],
                r[M.R_ASK_QTY : M.R_ASK_QTY + 20],
            ]
        )
        assert np.array_equal(mine, truth[:80, j]), f"second {j}: a reliable row is wrong"
        checked += 1
        for side in range(2):
            if r[M.R_FLAGS] & M.band_bit(0, side):
                k = M.sum_index(0, 0, side)
                assert r[k + 1] == 0 and r[k] == truth[80 + side, j], f"second {j}: depth"
                depth += 1
    return checked, depth  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_compiled_equals_reference_and_reliable_rows_equal_the_truth(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, config = CASES[case]
    spec = dataclasses.replace(spec, record_truth=True)
    day = write_day(spec, tmp_path / "raw")
    monkeypatch.setattr(fast, "BLOCK_BYTES", 5000)  # block edges inside lines, and long lines
    got = reconstruct_day(day.paths, spec.symbol, spec.day, config)
    ref = reconstruct_day_reference(day.paths, spec.symbol, spec.day, config)
    assert np.array_equal(got.rows, ref.rows)
    assert dataclasses.asdict(got.checks) == dataclasses.asdict(ref.checks)
    assert got.snapshots == ref.snapshots
    assert got.quarantine == ref.quarantine and got.quarantined_total == ref.quarantined_total
    assert book_1s_table(got).equals(book_1s_table(ref))
    checked, _ = _truth_rows(day, got)
    assert checked > spec.seconds // 4, "too few reliable rows to mean anything"
    assert got.checks.crossed == 0 and got.checks.tickers_mismatched == 0
    assert got.snapshot_counts()["mismatched"] == 0


def test_the_cases_reach_the_paths_they_are_for(tmp_path: Path) -> None:
    """Guard against a fuzz that silently stops exercising something."""
    seen: dict[str, int] = {}
    for case, (spec, config) in CASES.items():
        day = write_day(spec, tmp_path / case)
        got = reconstruct_day(day.paths, spec.symbol, spec.day, config)
        ch = got.checks
        for name, value in {**got.snapshot_counts(), "gap": ch.breaks_gap,
                            "malformed": ch.breaks_malformed, "evicted": ch.events_evicted,
                            "duplicate": ch.events_duplicate, "quarantined": got.quarantined_total,
                            "tickers_compared": ch.tickers_compared,
                            "beyond": int(np.sum(got.rows[M.R_STATE] == M.BEYOND_DEPTH)),
                            "disconnects": ch.disconnects}.items():  # fmt: skip
            seen[name] = seen.get(name, 0) + value
    wanted = (
        "sync",
        "stale",
        "exact",
        "straddle",
        "too_old",
        "gap",
        "malformed",
        "evicted",
        "duplicate",
        "quarantined",
        "tickers_compared",
        "beyond",
        "disconnects",
    )
    for name in wanted:
        assert seen[name] > 0, (name, seen)
