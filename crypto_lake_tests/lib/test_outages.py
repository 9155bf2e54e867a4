"""Not recorded is never quiet: unrecorded days, collectors that died without a stop record,
the kinds of outage saved for coverage, and today's grid running to the collector's
heartbeat for a quiet symbol."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest

from crypto_lake.defs.market.stats import load_outage_intervals, load_outages, save_outages
from crypto_lake.lib.core.paths import LakeLayout
from crypto_lake.lib.market.bars import build_bars_1s
from crypto_lake.lib.market.ticks import TickStats, build_ticks
from crypto_lake.lib.raw.catalog import day_bounds_us
from crypto_lake.lib.raw.heartbeat import Recording, recording_until
from crypto_lake.lib.raw.lines import session_line, ws_line
from crypto_lake_tests.lib import rawgen

US = 1_000_000
DAY_US = rawgen.DAY_START_MS * 1000
DAY_END_US = rawgen.DAY_END_MS * 1000


def _build(tmp_path: Path, lines: list[tuple[int, bytes]], day: str = rawgen.DAY):
    layout = LakeLayout(tmp_path / "lake")
    files = rawgen.write_raw(layout, lines) if lines else []
    out = tmp_path / "out"
    stats = build_ticks(files, "BTCUSDT", day, out / "t.pq", out / "q.pq", tmp_path / "q")
    return stats, out


def _bars(out: Path, stats: TickStats, day: str = rawgen.DAY, **kw) -> list[dict]:
    build_bars_1s(out / "t.pq", out / "q.pq", "BTCUSDT", day, out / "b.pq", stats.outages, **kw)
    cols = ["window_start", "is_outage", "trade_count"]
    return pq.read_table(out / "b.pq", columns=cols).to_pylist()


def _flagged(bars: list[dict]) -> list[int]:
    """Second offsets (from the day start) flagged as outage."""
    day0 = bars[0]["window_start"].timestamp()
    return [int(b["window_start"].timestamp() - day0) for b in bars if b["is_outage"]]


def _intervals(stats: TickStats) -> list[tuple[int, int, str]]:
    return [(a, b, k) for (a, b), k in zip(stats.outages, stats.outage_kinds, strict=True)]


def _session(ms: int, event: str, conn: str = "collector", **kw) -> tuple[int, bytes]:
    return ms, session_line(ms * 1_000_000, conn, event, **kw)


def _market(t0_ms: int, t1_ms: int, step_ms: int = 100, first_id: int = 1):
    """A trade and a quote every ``step_ms`` in [t0, t1), received 1 ms after the trade."""
    lines, i = [], first_id
    for t in range(t0_ms, t1_ms, step_ms):
        tr = rawgen.Trade(i, t, "100.00000000", "1.00000000", False)
        q = rawgen.Quote(900_000 + i, t + 1, "99.00000000", "1.0", "101.00000000", "1.0")
        lines += [(t + 1, rawgen.trade_line(tr, t + 1)), (t + 1, rawgen.quote_line(q))]
        i += 1
    return lines, i


def test_a_day_with_no_raw_files_is_wholly_unrecorded(tmp_path):
    stats, out = _build(tmp_path, [])
    assert _intervals(stats) == [(DAY_US, DAY_END_US, "unrecorded")]
    bars = _bars(out, stats)
    assert len(bars) == 86_400 and all(b["is_outage"] for b in bars)


def test_a_day_whose_files_hold_nothing_of_it_is_wholly_unrecorded(tmp_path):
    """Only lines of the next day in the day's folder range: nothing recorded that day."""
    late, _ = _market(rawgen.DAY_END_MS + 1000, rawgen.DAY_END_MS + 3000)
    stats, _ = _build(tmp_path, late)
    assert _intervals(stats) == [(DAY_US, DAY_END_US, "unrecorded")]


def test_a_start_without_a_stop_is_unrecorded_from_the_last_line(tmp_path):
    """A collector killed with SIGKILL writes no stop: its downtime runs from the last line
    it wrote to the next run's connect, from the raw lines alone."""
    t0 = rawgen.DAY_START_MS + 10_000
    first, next_id = _market(t0 + 100, t0 + 5_000)  # last line at t0 + 4_901
    second, _ = _market(t0 + 9_200, t0 + 12_000, first_id=next_id)
    lines = [_session(t0, "collector_start", pid=1), _session(t0 + 10, "connect", "ws-a-0.1"),
             *first, _session(t0 + 9_000, "collector_start", pid=2),
             _session(t0 + 9_050, "connect", "ws-b-0.1"), *second]  # fmt: skip
    stats, out = _build(tmp_path, lines)
    last_us = (t0 + 4_901) * 1000  # the last line's receive time
    assert _intervals(stats) == [
        (DAY_US, t0 * 1000, "unrecorded"),  # before the first start
        (t0 * 1000, (t0 + 10) * 1000, "outage"),  # started, not connected yet
        (last_us, (t0 + 9_050) * 1000, "unrecorded"),  # killed -> restarted and connected
    ]
    flagged = _flagged(_bars(out, stats))
    assert flagged == [*range(0, 11), *range(14, 20)]  # seconds 14.9 .. 19.05 of the day

    # The stop the next start writes (dated at the last line) gives the same interval.
    stop = _session(t0 + 4_901, "collector_stop", unclean=True, reason="no stop recorded")
    stats2, _ = _build(tmp_path / "2", [*lines, stop])
    assert _intervals(stats2) == _intervals(stats)


def test_a_dead_collector_not_restarted_that_day_is_unrecorded_to_the_day_end(tmp_path):
    t0 = rawgen.DAY_START_MS + 3_600_000
    market, _ = _market(t0 + 100, t0 + 5_000)
    stop = _session(t0 + 4_901, "collector_stop", unclean=True, reason="no stop recorded")
    lines = [_session(t0, "collector_start"), _session(t0 + 5, "connect", "ws-a-0.1"), *market,
             stop]  # fmt: skip
    stats, out = _build(tmp_path, lines)
    assert _intervals(stats)[-1] == ((t0 + 4_901) * 1000, DAY_END_US, "unrecorded")
    assert _flagged(_bars(out, stats)) == [*range(0, 3601), *range(3604, 86_400)]


def test_outage_kinds(tmp_path):
    """A lost connection while the collector runs is an "outage"; so is the day's start
    before a connect (the collector started the day before); a clean stop until the next
    connect is "unrecorded"."""
    t0 = rawgen.DAY_START_MS + 60_000
    a, i = _market(t0 + 100, t0 + 1_000)
    b, i = _market(t0 + 3_100, t0 + 4_000, first_id=i)
    c, _ = _market(t0 + 9_100, t0 + 10_000, first_id=i)
    lines = [_session(t0, "connect", "ws-1"), *a, _session(t0 + 2_000, "disconnect", "ws-1"),
             _session(t0 + 3_000, "connect", "ws-2"), *b,
             _session(t0 + 5_000, "collector_stop", reason="signal"),
             _session(t0 + 8_000, "collector_start"), _session(t0 + 9_000, "connect", "ws-3"),
             *c]  # fmt: skip
    stats, _ = _build(tmp_path, lines)
    ms = 1000
    assert _intervals(stats) == [
        (DAY_US, t0 * ms, "outage"),
        ((t0 + 2_000) * ms, (t0 + 3_000) * ms, "outage"),
        ((t0 + 5_000) * ms, (t0 + 9_000) * ms, "unrecorded"),
    ]


def test_saved_outages_keep_their_kind_and_old_files_still_load(tmp_path):
    layout = LakeLayout(tmp_path)
    stats = TickStats("BTCUSDT", rawgen.DAY, outages=[(1, 2), (5, 9)],
                      outage_kinds=["outage", "unrecorded"])  # fmt: skip
    save_outages(layout, "BTCUSDT", rawgen.DAY, stats)
    assert load_outages(layout, "BTCUSDT", rawgen.DAY) == [(1, 2), (5, 9)]
    assert load_outage_intervals(layout, "BTCUSDT", rawgen.DAY) == [
        (1, 2, "outage"), (5, 9, "unrecorded")]  # fmt: skip
    path = layout.state_dir / "outages" / "symbol=BTCUSDT" / f"{rawgen.DAY}.json"
    path.write_text(json.dumps([[3, 4]]))  # written before kinds existed
    assert load_outages(layout, "BTCUSDT", rawgen.DAY) == [(3, 4)]
    assert load_outage_intervals(layout, "BTCUSDT", rawgen.DAY) == [(3, 4, "outage")]
    assert load_outages(layout, "ETHUSDT", rawgen.DAY) == []


def _heartbeat(path: Path, now_ns: int, **over) -> None:
    hb = {"status": "running", "updated_ns": now_ns, "heartbeat_seconds": 1.0,
          "symbols": {"BTCUSDT": {"last_message_ns": now_ns - 30 * 10**9}},
          "connections": [{"conn": "ws-1", "symbols": ["BTCUSDT"], "age_seconds": 100.0,
                           "up_since_ns": now_ns - 600 * 10**9}]}  # fmt: skip
    hb.update(over)
    path.write_bytes(orjson.dumps(hb))


def test_recording_until_reads_the_heartbeat(tmp_path):
    path = tmp_path / "heartbeat.json"
    now_ns = time.time_ns()
    now_us = now_ns // 1000
    assert recording_until(path, "BTCUSDT") is None  # no heartbeat
    _heartbeat(path, now_ns)
    assert recording_until(path, "BTCUSDT", now_us=now_us) == Recording(
        now_us - 600 * US, now_us, now_us - 30 * US
    )
    assert recording_until(path, "ETHUSDT", now_us=now_us) is None  # no connection carries it
    assert recording_until(path, "BTCUSDT", now_us=now_us + 2_900_000) is not None
    assert recording_until(path, "BTCUSDT", now_us=now_us + 3_100_000) is None  # stale: 3 x 1 s
    _heartbeat(path, now_ns, status="stopped")
    assert recording_until(path, "BTCUSDT", now_us=now_us) is None
    # a heartbeat of an older collector: ISO times and connection ages only
    iso = (datetime.fromtimestamp(0, UTC) + timedelta(microseconds=now_us)).isoformat(
        timespec="milliseconds")  # fmt: skip
    _heartbeat(path, now_ns, updated_ns=None, updated_at=iso, heartbeat_seconds=None,
               symbols={"BTCUSDT": {"last_message_at": iso}},
               connections=[{"symbols": ["BTCUSDT"], "age_seconds": 2.5}])  # fmt: skip
    ms = now_us // 1000 * 1000
    assert recording_until(path, "BTCUSDT", now_us=now_us) == Recording(ms - 2_500_000, ms, ms)


def test_today_runs_to_the_heartbeat_for_a_quiet_symbol(tmp_path):
    """Today's bars end at the collector's heartbeat, not at the symbol's last message,
    when the collector says it was connected all along and already had nothing newer."""
    now_us = time.time_ns() // 1000
    day = datetime.fromtimestamp(now_us / US, UTC).date().isoformat()
    start_us, end_us = day_bounds_us(day)
    if now_us - start_us < 120 * US or end_us - now_us < 30 * US:
        pytest.skip("too close to midnight UTC")
    last_ms = now_us // 1000 - 40_000  # the symbol's last message, 40 s ago
    layout = LakeLayout(tmp_path / "lake")
    lines = [_session(last_ms - 60_000, "collector_start"),
             _session(last_ms - 59_000, "connect", "ws-1")]  # fmt: skip
    for k, t in enumerate(range(last_ms - 20_000, last_ms + 1, 500)):
        msg = orjson.dumps(
            {
                "stream": "btcusdt@bookTicker",
                "data": {"u": 10 + k, "s": "BTCUSDT", "b": "1.0", "B": "1", "a": "1.1", "A": "1"},
            }
        )
        lines.append((t, ws_line(t * 1_000_000, "ws-1", "us", msg)))
    files = rawgen.write_raw(layout, lines)
    out = tmp_path / "out"
    stats = build_ticks(files, "BTCUSDT", day, out / "t.pq", out / "q.pq", tmp_path / "q")
    last_us = last_ms * 1000
    vouched = Recording(last_us - 59 * US, now_us - 2 * US, last_us)

    def grid_end(recording: Recording | None) -> int:
        build_bars_1s(out / "t.pq", out / "q.pq", "BTCUSDT", day, out / "b.pq", stats.outages,
                      recording=recording)  # fmt: skip
        bars = pq.read_table(out / "b.pq", columns=["window_start", "is_outage"]).to_pylist()
        assert not any(b["is_outage"] for b in bars if b["window_start"].timestamp() * US
                       >= last_us - 20 * US)  # fmt: skip
        return round(bars[-1]["window_start"].timestamp() * US) + US

    assert grid_end(None) == last_us // US * US  # the last message's second
    assert grid_end(vouched) == (now_us - 2 * US) // US * US  # quiet, not missing, to here
    # No extension when the collector had received something the ticks do not hold yet (an
    # unsealed file), or when its connection is younger than the last tick (a reconnect whose
    # records are not sealed yet).
    assert (
        grid_end(Recording(vouched.since_us, vouched.until_us, last_us + 1)) == last_us // US * US
    )
    assert grid_end(Recording(last_us + 1, vouched.until_us, last_us)) == last_us // US * US
