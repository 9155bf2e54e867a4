"""Issue 20: book_1s and its checks from the real Definitions on a real Dagster instance.

Two synthetic depth days of BTCUSDT, written in the collector's exact raw formats
(``crypto_lake.lib.book.synthetic``): a clean one, and one with lost diff events (each
followed by a "gap" snapshot, as the collector fetches one) and two 1-3 s disconnects. The
book refresh sensor sees their raw files and asks for a run per block of days; ``book_job``
runs them. Checked: the partitions are the depth symbols only; the clean day's four checks
pass with verified snapshots and compared bookTickers; on the faulty day the spans between a
gap and its resync are ``reliable = false`` and listed by the failing ``book_continuous``
check while the other checks pass; the best bid/ask of every reliable row equal the true
book; the metadata carries the chart; the book's coverage per minute counts those seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import duckdb
import pytest

from crypto_lake.lib.core.paths import LakeLayout

# not adjacent: each synthetic day numbers its updates from the same id, and the next day's
# first file closes a day's last second (book_1s.first_part_after)
DAYS = ("2024-03-04", "2024-03-06")
SECONDS = 900


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[LakeLayout, dict]:
    root = tmp_path_factory.mktemp("book") / "lake"
    base = {"symbol": "BTCUSDT", "start_s": 3600, "seconds": SECONDS, "events_per_s": 10,
            "levels_per_event": 20, "depth": 400, "snapshot_every_s": 120,
            "part_seconds": 300}  # fmt: skip
    specs = [
        {**base, "day": DAYS[0], "seed": 11},
        {**base, "day": DAYS[1], "seed": 12, "faults": {"drop": 0.0004, "disconnects": 2}},
    ]
    env = {**os.environ, "LAKE_ROOT": str(root),
           "CRYPTO_LAKE__SYMBOLS": "[BTCUSDT, ETHUSDT]",
           "CRYPTO_LAKE__COLLECTOR__DEPTH__SYMBOLS": "[BTCUSDT]"}  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "crypto_lake_tests.defs.book_runner", str(root), json.dumps(specs)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    return LakeLayout(root), json.loads(proc.stdout.strip().splitlines()[-1])


def _checks(out: dict, day: str) -> dict[str, dict]:
    return {c["name"]: c for c in out["checks"] if c["partition"] == f"{day}|BTCUSDT"}


def test_partitions_are_the_depth_symbols_and_the_sensor_asks_for_the_touched_days(run) -> None:
    _, out = run
    assert out["partitions"] == ["2024-01-01|BTCUSDT", "2024-01-02|BTCUSDT", "2024-01-03|BTCUSDT"]
    assert out["runs"] == [True, True]  # one ranged run per block of consecutive days
    for day, tags in zip(DAYS, out["requests"], strict=True):
        assert tags["dagster/asset_partition_range_start"] == f"{day}|BTCUSDT"
        assert tags["dagster/asset_partition_range_end"] == f"{day}|BTCUSDT"
        assert tags["crypto_lake/trigger"] == "book_refresh"
    assert out["materialized"] == [f"{d}|BTCUSDT" for d in DAYS]


def test_clean_day_passes_every_check_with_something_to_judge(run) -> None:
    _, out = run
    checks = _checks(out, DAYS[0])
    assert set(checks) == {"book_not_crossed", "book_matches_book_ticker",
                           "book_matches_snapshots", "book_continuous"}  # fmt: skip
    assert all(c["passed"] for c in checks.values()), checks
    snaps = checks["book_matches_snapshots"]["metadata"]
    assert snaps["snapshots_verified"] >= SECONDS // 120 - 1
    assert snaps["levels_compared"] > 1000 and snaps["max_mid_deviation_bps"] == 0.0
    assert checks["book_matches_book_ticker"]["metadata"]["tickers_compared"] > 1000
    meta = out["metadata"][f"{DAYS[0]}|BTCUSDT"]
    assert meta["gaps"] == 0 and meta["reliable_seconds"] == meta["dagster/row_count"] > 800
    assert "data:image/png;base64," in meta["summary"]


def test_gaps_are_marked_unreliable_and_reliable_rows_equal_the_true_book(run) -> None:
    layout, out = run
    checks = _checks(out, DAYS[1])
    cont = checks["book_continuous"]
    assert not cont["passed"] and cont["severity"] == "ERROR"
    assert cont["metadata"]["gaps"] >= 1 and cont["metadata"]["gap"] >= 1
    for name in ("book_not_crossed", "book_matches_book_ticker", "book_matches_snapshots"):
        assert checks[name]["passed"], checks[name]
    for day in DAYS:
        path = layout.market_file("book_1s", "BTCUSDT", day)
        rows = duckdb.sql(
            f"SELECT epoch(window_start)::BIGINT % 86400, reliable, unreliable_reason, "
            f"(bid_price_1 * 1e8)::BIGINT, (ask_price_1 * 1e8)::BIGINT "
            f"FROM read_parquet('{path}') ORDER BY 1"
        ).fetchall()
        start, bids, asks = out["truth"][f"{day}|BTCUSDT"]
        reliable = [r for r in rows if r[1]]
        assert len(reliable) > 700
        for sec, _, _, bid, ask in reliable:
            assert (bid, ask) == (bids[sec - start], asks[sec - start]), sec
        unreliable = [r for r in rows if not r[1]]
        assert all(r[2] is not None and r[3] is None for r in unreliable)
        # the book's coverage per minute, written with the partition: every second counted
        cov = layout.market_file("coverage_book", "BTCUSDT", day)
        minutes, reliable_s, gap_s, total = duckdb.sql(
            "SELECT count(*), sum(seconds_reliable), sum(seconds_gap), sum(seconds_reliable + "
            "seconds_no_snapshot + seconds_gap + seconds_malformed + seconds_verify_mismatch + "
            f"seconds_beyond_snapshot_depth + seconds_no_data) FROM read_parquet('{cov}')"
        ).fetchall()[0]
        assert (minutes, total) == (1440, 86_400)  # a closed day, nothing pending
        assert reliable_s == out["metadata"][f"{day}|BTCUSDT"]["reliable_seconds"]
        assert (gap_s > 0) == (day == DAYS[1])
        if day == DAYS[1]:
            assert {r[2] for r in unreliable} >= {"gap"}
            assert (
                sum(1 for r in unreliable)
                == out["metadata"][f"{day}|BTCUSDT"]["unreliable_seconds"]
            )
