"""The plain line reader of the book: what a raw line is, and why a depth line is malformed."""

from __future__ import annotations

import pytest

from crypto_lake.lib.book.lines import (
    BookTicker,
    DepthEvent,
    DepthSnapshot,
    Malformed,
    Session,
    decimal_units,
    read_line,
)
from crypto_lake.lib.book.synthetic import depth_event_line, snapshot_line, ticker_line
from crypto_lake.lib.raw.lines import session_line, ws_line

T = 1_709_254_800_000_000  # 2024-03-01 01:00 UTC, µs
E8 = 10**8
EVENT = depth_event_line(T * 1000 + 5, T, 101, 105, [(97000 * E8, E8 // 2)],
                         [(97001 * E8, 0)]).rstrip(b"\n")  # fmt: skip


def test_decimal_units() -> None:
    assert decimal_units("97000.01000000", "p") == 9_700_001_000_000
    assert decimal_units("0.5", "p") == 50_000_000
    assert decimal_units("007", "p") == 700_000_000
    assert decimal_units("9999999999.99999999", "p") == 999_999_999_999_999_999
    for bad in ("", ".5", "1.", "-1", "1e5", "12345678901", "1.123456789", " 1", "١", 1.5):
        with pytest.raises(ValueError):
            decimal_units(bad, "p")


def test_a_diff_event_in_both_units() -> None:
    ev = read_line(EVENT, "BTCUSDT")
    assert ev == DepthEvent(T * 1000 + 5, T, 101, 105, [(97000 * E8, E8 // 2)],
                            [(97001 * E8, 0)])  # fmt: skip
    ms = depth_event_line(1, T, 1, 1, [], [], unit="ms").rstrip(b"\n")
    assert read_line(ms, "BTCUSDT").t_us == T  # E in ms -> µs
    assert read_line(ms.replace(b',"unit":"ms"', b""), "BTCUSDT").t_us == T  # no unit: ms


@pytest.mark.parametrize(
    ("old", "new", "reason"),
    [
        (b'"u":105', b'"u":"105"', "missing or non-integer u"),
        (b'"U":101', b'"U":101.0', "missing or non-integer U"),
        (b',"u":105', b"", "missing or non-integer u"),
        (b'"U":101', b'"U":106', "U > u"),
        (b'"U":101', b'"U":-1', "missing or non-integer U"),
        (b'"U":101', b'"U":true', "missing or non-integer U"),
        (b'"u":105', b'"u":9223372036854775808', "missing or non-integer u"),
        (b'"0.50000000"', b'"-0.5"', "negative qty"),
        (b'"0.50000000"', b'"0.500000001"', "qty has more than 8 decimals"),
        (b'"97000.00000000"', b'"9.7e4"', "price is not a plain decimal"),
        (b'"97000.00000000"', b'"0.0"', "zero price"),
        (b'"97000.00000000"', b"97000.0", "price is not a string"),
        (b'[["97000.00000000","0.50000000"]]', b'[["97000.00000000"]]',
         "a bids level is not a [price, qty] pair"),
        (b'"b":[', b'"b":{"x":1},"c":[', "bids is not a list"),
        (b'"s":"BTCUSDT"', b'"s":"ETHUSDT"', "another symbol"),
        (b'"e":"depthUpdate"', b'"e":"trade"', "not a depthUpdate event"),
        (b'"E":1709254800000000', b'"E":4000000000000000', "E out of range"),
        (b'"unit":"us"', b'"unit":"ns"', "unknown unit"),
        (b'"recv_ns":1709254800000000005', b'"recv_ns":"1"', "missing or non-integer recv_ns"),
    ],
)  # fmt: skip
def test_malformed_diff_events_say_why(old: bytes, new: bytes, reason: str) -> None:
    assert old in EVENT
    assert read_line(EVENT.replace(old, new, 1), "BTCUSDT") == Malformed("depth_event", reason)


def test_broken_lines_count_as_depth_lines_only_when_they_name_the_stream() -> None:
    assert read_line(EVENT[:90], "BTCUSDT") == Malformed("depth_event", "not JSON")
    assert read_line(EVENT[:60], "BTCUSDT") is None  # cut before the stream name
    snap = snapshot_line(1, 7, [(2 * E8, E8)], [(3 * E8, E8)]).rstrip(b"\n")
    assert read_line(snap[:-5], "BTCUSDT") == Malformed("depth_snapshot", "not JSON")
    assert read_line(b"[1, 2]", "BTCUSDT") is None
    assert read_line(b'["btcusdt@depth"]', "BTCUSDT") == Malformed("depth_event",
                                                                   "not a JSON object")  # fmt: skip
    assert read_line(EVENT, "ETHUSDT") is None  # another symbol's stream


def test_snapshots() -> None:
    line = snapshot_line(9, 77, [(3 * E8, 1), (2 * E8, 2)], [(4 * E8, 3)], limit=5,
                         reason="gap").rstrip(b"\n")  # fmt: skip
    assert read_line(line, "BTCUSDT") == DepthSnapshot(9, 77, [(3 * E8, 1), (2 * E8, 2)],
                                                       [(4 * E8, 3)], 5, "gap")  # fmt: skip
    unsorted = snapshot_line(9, 77, [(2 * E8, 1), (3 * E8, 2)], []).rstrip(b"\n")
    assert read_line(unsorted, "BTCUSDT") == Malformed("depth_snapshot", "bids not best first")
    zero = snapshot_line(9, 77, [(2 * E8, 0)], []).rstrip(b"\n")
    assert read_line(zero, "BTCUSDT") == Malformed("depth_snapshot", "zero qty in a snapshot")
    no_id = line.replace(b'"lastUpdateId":77', b'"lastUpdateId":null')
    bad_id = Malformed("depth_snapshot", "missing or non-integer lastUpdateId")
    assert read_line(no_id, "BTCUSDT") == bad_id
    assert read_line(line.replace(b'"limit":5', b'"limit":0'), "BTCUSDT").reason == (
        "limit is not a positive integer")  # fmt: skip
    assert read_line(line.replace(b',"limit":5', b""), "BTCUSDT").limit is None


def test_tickers_sessions_and_other_lines() -> None:
    tk = ticker_line(5, 42, 2 * E8, 1, 3 * E8, 2).rstrip(b"\n")
    assert read_line(tk, "BTCUSDT") == BookTicker(5, 42, 2 * E8, 1, 3 * E8, 2)
    assert read_line(tk.replace(b'"b":"', b'"b":"x'), "BTCUSDT").kind == "book_ticker"
    assert read_line(session_line(5, "ws-1", "disconnect", reason="x"), "BTCUSDT") == Session(
        "disconnect", "ws-1")  # fmt: skip
    trade = ws_line(5, "ws-1", "us", b'{"stream":"btcusdt@trade","data":{"e":"trade"}}')
    assert read_line(trade.rstrip(b"\n"), "BTCUSDT") is None
    # the last key wins, as in every JSON reader here: a second stream key decides
    twice = trade.rstrip(b"\n")[:-1] + b',"stream":"btcusdt@depth@100ms"}'
    assert isinstance(read_line(twice, "BTCUSDT"), Malformed)
