"""A collector that died and has not started again left no stop record: a closed day must not
read as a quiet market after its last received line, unless something vouches that recording
went on (a raw file after the day, or a live connection since before that line)."""

from __future__ import annotations

import json
import time

import dagster as dg
import duckdb
import pytest

from crypto_lake.defs.market.assets import bars_1s, partition_file, ticks
from crypto_lake.lib.raw.lines import session_line
from crypto_lake_tests.defs import rawgen
from crypto_lake_tests.defs.conftest import DAYS, make_lake

US = rawgen.US
DAY = DAYS[0]
SYMBOL = "BTCUSDT"


def build(lake) -> list[tuple]:
    """ticks + bars_1s of (DAY, SYMBOL); the bars' outage flags after the day's last line."""
    result = dg.materialize([ticks, bars_1s], partition_key=f"{DAY}|{SYMBOL}",
                            resources={"lake": lake.resource})  # fmt: skip
    assert result.success
    bars = partition_file(lake.layout, "bars_1s", SYMBOL, DAY)
    return duckdb.sql(
        f"SELECT count(*) FILTER (WHERE is_outage), count(*) FROM '{bars}' "
        f"WHERE window_start > (SELECT max(ts_recv) FROM "
        f"'{partition_file(lake.layout, 'quotes', SYMBOL, DAY)}')"
    ).fetchall()[0]


@pytest.fixture
def lake(tmp_path, monkeypatch):
    """One closed day recorded from a collector start; its last line ~10 min before midnight
    (the generated trades and quotes sit in the day's first and last 10 minutes)."""
    sd = rawgen.generate(SYMBOL, [DAY], per_day=60)
    start_ns = rawgen.day_start_us(DAY) * 1000
    events = [(start_ns, session_line(start_ns, "", "collector_start")),
              (start_ns + 1, session_line(start_ns + 1, "ws-1", "connect")),
              *rawgen.raw_lines(sd)]  # fmt: skip
    lake = make_lake(tmp_path / "lake", "http://127.0.0.1:9", {})
    rawgen.write_raw(lake.layout, SYMBOL, iter(sorted(events, key=lambda e: e[0])))
    monkeypatch.setenv("LAKE_ROOT", str(lake.layout.root))
    return lake


def test_a_closed_day_after_a_crash_is_unrecorded_after_its_last_line(lake) -> None:
    flagged, seconds = build(lake)
    assert seconds > 10 and flagged == seconds  # everything after the last line
    outages = json.loads(next(lake.layout.root.rglob("state/outages/**/*.json")).read_text())
    assert outages[-1][1] == rawgen.day_start_us(DAYS[1]) and outages[-1][2] == "unrecorded"


def test_a_file_after_the_day_vouches_for_its_end(lake) -> None:
    next_ns = rawgen.day_start_us(DAYS[1]) * 1000 + 5 * US * 1000
    quote = next(line for _, line in rawgen.raw_lines(rawgen.generate(SYMBOL, [DAYS[1]], 5))
                 if b"bookTicker" in line)  # fmt: skip
    rawgen.append_part(lake.layout, SYMBOL, DAYS[1], [quote])
    assert next_ns  # (any sealed file of the symbol after the day will do)
    flagged, seconds = build(lake)
    assert seconds > 10 and flagged == 0


def test_a_collector_connected_since_before_the_last_line_vouches_for_it(lake) -> None:
    now_ns = time.time_ns()
    since_ns = rawgen.day_start_us(DAY) * 1000  # connected since the day's start, still up
    heartbeat = {
        "status": "running", "updated_ns": now_ns, "heartbeat_seconds": 5,
        "connections": [{"symbols": [SYMBOL], "up_since_ns": since_ns}],
        "symbols": {SYMBOL: {"last_message_ns": now_ns}},
    }  # fmt: skip
    lake.layout.heartbeat_path.parent.mkdir(parents=True, exist_ok=True)
    lake.layout.heartbeat_path.write_text(json.dumps(heartbeat))
    flagged, seconds = build(lake)
    assert seconds > 10 and flagged == 0
