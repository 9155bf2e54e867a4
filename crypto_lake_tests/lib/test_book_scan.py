"""The compiled scanner reads exactly what the plain reader reads.

Every line the scanner takes (a diff event, a bookTicker) must be read to the same values by
``lines.read_line``; every line it skips must be nothing to the plain reader; anything else it
hands back. Valid lines in every layout the collector writes, and thousands of random
mutations of them, are fed to both, one by one and as whole buffers cut into tiny output
arrays.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from crypto_lake.lib.book.engine import KIND_EVENT, KIND_FALLBACK, KIND_TICKER
from crypto_lake.lib.book.lines import BookTicker, DepthEvent, read_line
from crypto_lake.lib.book.scan import scan
from crypto_lake.lib.book.synthetic import (
    SyntheticSpec,
    depth_event_line,
    snapshot_line,
    ticker_line,
    write_day,
)
from crypto_lake.lib.raw.lines import repaired_line, session_line, ws_line

T = 1_709_254_800_000_000
E8 = 10**8
LOWER = np.frombuffer(b"btcusdt", np.uint8)
UPPER = np.frombuffer(b"BTCUSDT", np.uint8)


def scan_all(data: bytes, events: int = 64, levels: int = 4096, tickers: int = 64,
             fallbacks: int = 64) -> list[tuple]:  # fmt: skip
    """Everything the scanner records in ``data``, in order, with arrays of the given sizes."""
    ev, tk = np.zeros((7, events), np.int64), np.zeros((6, tickers), np.int64)
    lvp, lvq = np.zeros(levels, np.int64), np.zeros(levels, np.int64)
    fb = np.zeros((2, fallbacks), np.int64)
    order = np.zeros(events + tickers + fallbacks, np.int64)
    buf = np.frombuffer(data, np.uint8)
    out, p = [], 0
    while p < len(buf):
        n, _, q = scan(buf, p, LOWER, UPPER, ev, lvp, lvq, tk, fb, order)
        assert n > 0 or q > p, "no progress: a line with more levels than the arrays hold"
        for code in order[:n].tolist():
            kind, k = code & 3, code >> 2
            if kind == KIND_EVENT:
                a, nb, na = ev[4:7, k].tolist()
                pairs = list(zip(lvp[a : a + nb + na].tolist(), lvq[a : a + nb + na].tolist(),
                                 strict=True))  # fmt: skip
                out.append(DepthEvent(*ev[:4, k].tolist(), pairs[:nb], pairs[nb:]))
            elif kind == KIND_TICKER:
                out.append(BookTicker(*tk[:, k].tolist()))
            else:
                assert kind == KIND_FALLBACK
                out.append(data[fb[0, k] : fb[1, k]])
        p = q
    return out


def check_line(line: bytes) -> str:
    """Scan one line and check it against the plain reader; returns what the scanner did."""
    got = scan_all(line + b"\n")
    plain = read_line(line, "BTCUSDT") if line.strip(b"\n") else None
    if not got:
        assert plain is None, (line, plain)
        return "skipped"
    assert len(got) == 1, (line, got)
    if isinstance(got[0], bytes):
        assert got[0] == line
        return "fallback"
    assert got[0] == plain, (line, got[0], plain)
    return "taken"


def _valid_lines() -> dict[str, bytes]:
    bids = [(97000 * E8 + i * 10**6, (i + 1) * 10**5) for i in range(5)]
    asks = [(97001 * E8 + i * 10**6, 0 if i == 2 else 123_456_789) for i in range(4)]
    trade = (b'{"stream":"btcusdt@trade","data":{"e":"trade","E":1709254800000000,'
             b'"s":"BTCUSDT","t":5,"p":"97000.00000000","q":"0.00100000",'
             b'"T":1709254800000000,"m":true,"M":true}}')  # fmt: skip
    return {
        "event": depth_event_line(T * 1000, T, 10, 20, bids, asks),
        "event_ms": depth_event_line(T * 1000, T, 10, 20, bids, asks, unit="ms"),
        "event_empty": depth_event_line(T * 1000, T, 21, 21, [], []),
        "event_big": depth_event_line(
            T * 1000,
            T,
            1,
            9 * 10**18,
            [(9_999_999_999 * E8 + 99, 1)],
            [(1, 999_999_999_999_999_999)],
        ),
        "event_1000ms": depth_event_line(T * 1000, T, 10, 20, bids, []).replace(
            b"@depth@100ms", b"@depth"
        ),
        "ticker": ticker_line(T * 1000, 20, 97000 * E8, 5, 97001 * E8, 0),
        "trade": ws_line(T * 1000, "ws-2", "us", trade),
        "repaired": repaired_line(
            T * 1000, "btcusdt@trade", "ms", "historicalTrades", {"id": 5, "price": "1.0"}
        ),
        "snapshot": snapshot_line(T * 1000, 20, bids, asks[:2]),
        "session": session_line(T * 1000, "ws-1", "disconnect", reason="x"),
        "other_symbol": depth_event_line(T * 1000, T, 10, 20, bids, asks, symbol="ETHUSDT"),
    }


def test_common_lines_are_taken_or_skipped_and_the_rest_handed_back() -> None:
    did = {name: check_line(line.rstrip(b"\n")) for name, line in _valid_lines().items()}
    assert did == {
        "event": "taken", "event_ms": "taken", "event_empty": "taken", "event_big": "taken",
        "event_1000ms": "taken", "ticker": "taken", "trade": "skipped", "repaired": "skipped",
        "snapshot": "fallback", "session": "fallback", "other_symbol": "fallback",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("old", "new", "did"),
    [
        (b'"U":10', b'"U": 10', "fallback"), (b'"u":20', b'"u":020', "fallback"),
        (b'"u":20', b'"u":20.0', "fallback"), (b'"U":10', b'"U":21', "fallback"),
        (b'"0.00100000"', b'"0.001"', "taken"), (b'"0.00100000"', b'"-0.001"', "fallback"),
        (b'"0.00100000"', b'"0.001000001"', "fallback"),
        (b'"97000.00000000"', b'"097000.0"', "taken"),
        (b'"97000.00000000"', b'"97000.000000000"', "fallback"),
        (b'"97000.00000000"', b'"0.00000000"', "fallback"),
        (b'"conn":"ws-1"', b'"conn":"ws\\u002d1"', "fallback"),
        (b'"conn":"ws-1"', b'"conn":"btcusdt@depth"', "fallback"),
        (b'"s":"BTCUSDT"', b'"s":"BTCUSDX"', "fallback"), (b"}}", b"},\"x\":1}", "fallback"),
        (b"}}", b"}} ", "fallback"), (b'"E":', b'"E":-', "fallback"),
        (b'{"recv_ns":', b'{"recv_ns":-', "fallback"), (b'"unit":"us"', b'"unit":"ns"', "fallback"),
        (b'"b":[[', b'"b":[ [', "fallback"), (b"]],", b"],],", "fallback"),
        (b'"a":[', b'"a":[],"a":[', "fallback"),
    ],
)  # fmt: skip
def test_odd_forms_agree(old: bytes, new: bytes, did: str) -> None:
    line = _valid_lines()["event"].rstrip(b"\n")
    assert old in line
    assert check_line(line.replace(old, new, 1)) == did


_ALPHABET = b'0123456789.,:"[]{}-+e \\@dsuUbaE\x00\xff'


def _mutate(line: bytes, rng: random.Random) -> bytes:
    b = bytearray(line)
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(b) + 1)
        op = rng.randrange(3)
        if op == 0 and i < len(b):
            del b[i]
        elif op == 1:
            b.insert(i, rng.choice(_ALPHABET))
        elif i < len(b):
            b[i] = rng.choice(_ALPHABET)
    return bytes(b).replace(b"\n", b"")


def test_random_mutations_agree() -> None:
    rng = random.Random(20)
    lines = [x.rstrip(b"\n") for x in _valid_lines().values()]
    did: dict[str, int] = {}
    for _ in range(6000):
        what = check_line(_mutate(rng.choice(lines), rng))
        did[what] = did.get(what, 0) + 1
    assert did["taken"] > 200 and did["fallback"] > 3000 and did["skipped"] > 100, did


def test_a_synthetic_file_scans_alike_in_one_buffer_and_in_tiny_pieces(tmp_path: Path) -> None:
    spec = SyntheticSpec(seconds=3, trades_per_event=1, levels_per_event=20, unit="ms")
    data = write_day(spec, tmp_path).paths[0].read_bytes()
    per_line = []
    for line in data.split(b"\n"):
        if line:
            per_line += scan_all(line + b"\n")
            check_line(line)
    assert scan_all(data) == per_line
    assert scan_all(data, events=1, levels=60, tickers=1, fallbacks=1) == per_line
    assert scan_all(data.rstrip(b"\n")) == per_line  # no newline at the end
    assert sum(isinstance(x, DepthEvent) for x in per_line) == 30
