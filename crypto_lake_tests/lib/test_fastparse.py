"""The compiled raw-line reader gives exactly what the general DuckDB path gives.

Every odd line form a crash, a bug or a future payload change could produce is fed to both
paths (build_ticks with fast=True and fast=False): the Parquet bytes and every counter must
match. The reader must also really take the common lines itself and leave the odd ones.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from crypto_lake.lib.market.ticks import build_ticks
from crypto_lake.lib.raw import fastparse
from crypto_lake.lib.raw.catalog import day_bounds_us
from crypto_lake.lib.raw.lines import depth_snapshot_line, session_line, ws_line

DAY = "2024-03-01"
START_US, END_US = day_bounds_us(DAY)
T0 = START_US + 3_600_000_000  # 01:00 UTC, in µs


def _trade(i: int, *, px: str = "60000.12000000", qty: str = "0.50000000", t_us: int | None = None,
           unit: str = "us", sym: str = "btcusdt", m: str = "true") -> bytes:  # fmt: skip
    t_us = T0 + i * 1000 if t_us is None else t_us
    t = t_us if unit == "us" else t_us // 1000
    msg = (f'{{"stream":"{sym}@trade","data":{{"e":"trade","E":{t + 1},"s":"{sym.upper()}",'
           f'"t":{1000 + i},"p":"{px}","q":"{qty}","T":{t},"m":{m},"M":true}}}}')  # fmt: skip
    return ws_line(t_us * 1000 + 5_000, "ws-1", unit, msg.encode())


def _book(u: int, recv_us: int, bid: str = "59999.00000000") -> bytes:
    msg = (f'{{"stream":"btcusdt@bookTicker","data":{{"u":{u},"s":"BTCUSDT","b":"{bid}",'
           f'"B":"1.25000000","a":"60001.00000000","A":"2.00000000"}}}}')  # fmt: skip
    return ws_line(recv_us * 1000, "ws-1", "us", msg.encode())


def _agg(a: int, f: int, last: int) -> bytes:
    t = T0 + a * 1000
    msg = (f'{{"stream":"btcusdt@aggTrade","data":{{"e":"aggTrade","E":{t},"s":"BTCUSDT",'
           f'"a":{a},"p":"60000.00000000","q":"1.00000000","f":{f},"l":{last},"T":{t},'
           f'"m":false,"M":true}}}}')  # fmt: skip
    return ws_line(t * 1000 + 9_000, "ws-2", "us", msg.encode())


_LEVELS = '[["59999.00000000","1.25000000"],["59998.50000000","0.00000000"]]'


def _depth(first: int, last: int, recv_us: int, sym: str = "btcusdt", b: str = _LEVELS,
           a: str = '[["60001.00000000","2.00000000"]]') -> bytes:  # fmt: skip
    """A diff depth event as the collector writes it (``@depth@100ms``)."""
    msg = (f'{{"stream":"{sym}@depth@100ms","data":{{"e":"depthUpdate","E":{recv_us - 900},'
           f'"s":"{sym.upper()}","U":{first},"u":{last},"b":{b},"a":{a}}}}}')  # fmt: skip
    return ws_line(recv_us * 1000, "ws-1", "us", msg.encode())


def _snapshot(last_id: int, recv_us: int, stream: str = "btcusdt@depth@100ms",
              reason: str = "start") -> bytes:  # fmt: skip
    """A REST depth snapshot as the collector writes it."""
    body = f'{{"lastUpdateId":{last_id},"bids":{_LEVELS},"asks":[["60001.00000000","2.0"]]}}'
    return depth_snapshot_line(recv_us * 1000, stream, reason, 1000, body.encode(), "us")


def _depth_lines() -> list[bytes]:
    """Order book lines the collector writes: diff events (the compiled reader's own
    other-stream lines), snapshots (the general path's), an empty side, the 1000 ms stream."""
    lines = [_depth(500 + 10 * k, 509 + 10 * k, T0 + k * 100_000) for k in range(20)]
    lines += [_depth(700, 700, T0 + 5, b="[]"), _depth(701, 702, T0 + 6, a="[]")]
    lines += [_depth(703, 705, T0 + 7).replace(b"@depth@100ms", b"@depth")]
    lines += [_snapshot(499, T0 + 10), _snapshot(650, T0 + 900_000, reason="verify")]
    return lines


def _odd_depth_lines() -> list[bytes]:
    """Depth-like lines outside the grammar, or typed apart by the general path."""
    base = _depth(800, 801, T0 + 50).rstrip(b"\n")
    return [
        base.replace(b'"1.25000000"]', b'"1.25000000","x"]'),  # three values in a level
        base.replace(b'["59999.00000000",', b"[59999.0,"),  # a number, not a string
        base.replace(b'"b":[[', b'"b":[[[').replace(b'"0.00000000"]]', b'"0.00000000"]]]'),
        base.replace(b'"b":[', b'"b": ['),  # whitespace
        base.replace(b'"b":[["59999', b'"b":[["\\u0035999'),  # an escape in a level
        base.replace(b'],["59998', b'],,["59998'),  # not JSON
        base.replace(b'"a":[["60001.00000000","2.00000000"]]', b'"a":[["60001","2"],]'),
        base.replace(b'"a":[["60001.00000000","2.00000000"]]', b'"a":null'),
        base.replace(b'"U":800', b'"U":800,"U":801'),  # a duplicate key
        base.replace(b'"stream":"btcusdt@depth@100ms"', b'"stream":"btcusdt@bookTicker"'),
        base.replace(b'"stream":"btcusdt@depth@100ms"', b'"stream":"btcusdt@trade@100ms"'),
        base[:-20],  # torn
        _depth(802, 803, T0 + 60, sym="ethusdt").rstrip(b"\n"),  # another symbol
        _snapshot(900, T0 + 70, stream="btcusdt@trade").rstrip(b"\n"),  # depth REST on trades
        _snapshot(901, T0 + 80, stream="ethusdt@depth@100ms").rstrip(b"\n"),
        _snapshot(902, T0 + 90).rstrip(b"\n").replace(b'"bids":[', b'"bids":["x",'),
    ]


def _odd_lines() -> list[bytes]:
    """Lines outside the template, each of which the general path types in its own way."""
    base = _trade(50).rstrip(b"\n")
    return [
        base.replace(b'"p":"60000.12000000"', b'"p": "60000.12000000"'),  # whitespace
        base.replace(b'"q":"0.50000000"', b'"q":"0.5"'),  # short decimals
        base.replace(b'"q":"0.50000000"', b'"q":"0.500000001"'),  # 9 decimals: rounding
        base.replace(b'"q":"0.50000000"', b'"q":"123456789012.5"'),  # beyond 10 digits
        base.replace(b'"q":"0.50000000"', b'"q":"0.5e1"'),  # not a plain decimal
        base.replace(b'"q":"0.50000000"', b'"q":0.5'),  # a JSON number, not a string
        base.replace(b'"q":"0.50000000"', b'"q":null'),
        base.replace(b'"t":1050', b'"t":"1050"'),  # id as a string
        base.replace(b'"t":1050', b'"t":01050'),  # leading zero: not JSON
        base.replace(b'"t":1050', b'"t":1050,"t":1051'),  # duplicate key
        base.replace(b'"s":"BTCUSDT"', b'"s":"BTC\\u0055SDT"'),  # an escape
        base.replace(b'"s":"BTCUSDT"', '"s":"BTCÜSDT"'.encode()),  # non-ASCII
        base.replace(b'"unit":"us"', b'"unit":"ns"'),
        base.replace(b',"unit":"us"', b""),  # no unit: ms
        base.replace(b'"m":true', b'"m":"true"'),
        base.replace(b'"stream":"btcusdt@trade"', b'"stream":"btcusdt@trade@x"'),
        base.replace(b'"conn":"ws-1"', b'"conn":"rest"'),
        base.replace(b'"e":"trade"', b'"X":"MARKET","e":"trade"'),  # an unknown key
        base.replace(b'{"recv_ns":', b'{"extra":[1,2],"recv_ns":'),
        base + b"\r",  # CRLF line end
        base[:-7],  # truncated by a crash
        b"not json at all",
        b'{"recv_ns":"1709254800000000000","stream":"btcusdt@trade","data":{}}',
        b'{"recv_ns":-5,"conn":"ws-1","stream":"btcusdt@trade","data":{"t":1}}',
        _agg(7, -1, -1).rstrip(b"\n"),  # invalidated aggregate
        _trade(60, sym="ethusdt").rstrip(b"\n"),  # another symbol
        session_line(T0 * 1000, "ws-1", "disconnect", reason="test").rstrip(b"\n"),
        session_line(T0 * 1000 + 10**9, "ws-2", "connect").rstrip(b"\n"),
    ]


def _common_lines() -> list[bytes]:
    lines = [_trade(i) for i in range(40)]
    lines += [_trade(i, unit="ms", t_us=T0 + 100_000 + i * 1000) for i in range(40, 45)]
    lines += [_trade(i, m="false", px="0.00000001", qty="9999999999.99999999")
              for i in range(45, 48)]  # fmt: skip
    lines += [_book(10 + k, T0 + k * 500) for k in range(30)]
    lines += [_trade(0), _book(12, T0 + 1000)]  # duplicates
    lines += [_trade(49, t_us=START_US - 10)]  # yesterday's trade: dropped by both
    lines += [_book(99, END_US + 10)]  # tomorrow's quote: dropped by both
    lines += [_depth(1, 2, T0 + 77)]  # order book diff event: counted as another stream
    return lines


def _both_paths(tmp_path: Path, files: dict[str, list[bytes]]) -> tuple:
    paths = []
    for rel, lines in files.items():
        p = tmp_path / "raw" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"".join(x if x.endswith(b"\n") else x + b"\n" for x in lines))
        paths.append(p)
    out = {}
    for fast in (True, False):
        d = tmp_path / f"out_{fast}"
        stats = build_ticks(paths, "BTCUSDT", DAY, d / "t.parquet", d / "q.parquet", d / "quar",
                            fast=fast)  # fmt: skip
        out[fast] = (stats, (d / "t.parquet").read_bytes(), (d / "q.parquet").read_bytes())
    return out[True], out[False]


def test_template_lines_are_read_by_the_compiled_reader():
    data = b"".join(_common_lines())
    parsed = fastparse.parse(data, "BTCUSDT", START_US, END_US, keep_other=True)
    assert parsed.fallback == []
    assert parsed.trades.shape[1] == 49 and parsed.quotes.shape[1] == 31
    assert parsed.other_lines == 1  # the depth event
    # prices in 1e-8, times in µs whatever the unit
    assert parsed.trades[6, 0] == 6_000_012_000_000 and parsed.trades[7, 0] == 50_000_000
    assert parsed.trades[5, 40] == T0 + 100_000 + 40_000  # an ms line


def test_a_full_buffer_resumes_at_the_line_it_stopped_at():
    """With room for one row and one fallback line per call, the reader stops at each line it
    has no room for and goes on from there: the same rows, counts and lines as in one call."""
    odd = _odd_lines() + _odd_depth_lines() + _depth_lines()
    data = b"".join(_common_lines()) + b"\n".join(x.rstrip(b"\n") for x in odd) + b"\n\n"
    whole = fastparse.parse(data, "BTCUSDT", START_US, END_US, keep_other=True)
    buf, lower = np.frombuffer(data, dtype=np.uint8), np.frombuffer(b"btcusdt", dtype=np.uint8)
    trades, quotes, fallback, other, at, calls = [], [], [], 0, 0, 0
    while at < len(buf):
        tr, bk = np.empty((9, 1), dtype=np.int64), np.empty((6, 1), dtype=np.int64)
        fb_s, fb_e = np.empty(1, dtype=np.int64), np.empty(1, dtype=np.int64)
        n_tr, n_bk, n_other, m, at = fastparse.parse_buffer(
            buf, at, lower, START_US, END_US, True, tr, bk, fb_s, fb_e, 0, 0
        )
        trades.append(tr[:, :n_tr].copy())
        quotes.append(bk[:, :n_bk].copy())
        fallback += [data[fb_s[i] : fb_e[i]] for i in range(m)]
        other, calls = other + n_other, calls + 1
    assert np.array_equal(np.hstack(trades), whole.trades)
    assert np.array_equal(np.hstack(quotes), whole.quotes)
    assert fallback == whole.fallback and other == whole.other_lines
    assert calls > whole.trades.shape[1] + whole.quotes.shape[1] >= 80


def test_odd_lines_are_left_to_the_general_path():
    odd = _odd_lines()
    parsed = fastparse.parse(b"\n".join(odd), "BTCUSDT", START_US, END_US, keep_other=True)
    taken = len(odd) - len(parsed.fallback)
    # only the short decimal, the "rest" connection and the other symbol are inside the
    # grammar (read key by key); everything else is handed on (the unit-less line too: its
    # µs times read as ms are beyond any day)
    assert taken == 3, [x for x in odd if x not in parsed.fallback]


def test_depth_events_are_other_lines_of_the_compiled_reader():
    """Diff events are read (strictly) and counted as other-stream lines, never handed on;
    snapshots (``rest``) and depth-like lines outside the grammar are handed on."""
    lines, odd = _depth_lines(), _odd_depth_lines()
    parsed = fastparse.parse(b"".join(lines), "BTCUSDT", START_US, END_US, keep_other=True)
    assert parsed.trades.shape[1] == parsed.quotes.shape[1] == 0
    assert parsed.other_lines == len(lines) - 2 and len(parsed.fallback) == 2
    assert all(b'"rest":"depth"' in x for x in parsed.fallback)
    parsed = fastparse.parse(b"\n".join(odd), "BTCUSDT", START_US, END_US, keep_other=True)
    taken = [x for x in odd if x not in parsed.fallback]
    # inside the grammar: a key read and not kept twice (as in any other line; neither path
    # uses it) and another symbol's event
    assert taken == [odd[8], odd[12]], taken


@pytest.mark.parametrize("layout", ["one_file", "split_days"])
def test_fast_and_general_paths_agree_byte_for_byte(tmp_path, layout):
    common, odd = _common_lines(), _odd_lines() + _odd_depth_lines()
    depth = _depth_lines()
    if layout == "one_file":
        files = {f"{DAY}/part-000001.jsonl": common[:40] + odd + depth + common[40:]}
    else:  # a neighbour day's file holding late trades, plus bad lines in it
        files = {
            f"{DAY}/part-000001.jsonl": common[:30] + odd[:12] + depth[:10],
            f"{DAY}/part-000002.jsonl": common[30:] + odd[12:] + depth[10:],
            "2024-03-02/part-000000.jsonl": [_trade(200), _trade(201), b"garbage",
                                             _depth(3, 4, END_US + 5), _snapshot(2, END_US + 9)],
        }  # fmt: skip
    (fast_stats, fast_t, fast_q), (slow_stats, slow_t, slow_q) = _both_paths(tmp_path, files)
    assert fast_t == slow_t and fast_q == slow_q
    fast_d, slow_d = dataclasses.asdict(fast_stats), dataclasses.asdict(slow_stats)
    fast_d.pop("quarantine_path"), slow_d.pop("quarantine_path")
    assert fast_d == slow_d
    assert fast_stats.trade_duplicates >= 1 and fast_stats.quote_duplicates == 1
    assert fast_stats.bad_lines > 5 and fast_stats.invalidated_agg_trades == 1
    q_fast = Path(fast_stats.quarantine_path).read_bytes()
    q_slow = Path(slow_stats.quarantine_path).read_bytes()
    assert q_fast == q_slow and q_fast.count(b"\n") >= fast_stats.bad_lines
    # the order book: snapshots of the own depth stream and well-formed events are no bad
    # lines; a depth snapshot filed under the trade stream, a torn event are
    assert b'lastUpdateId\\":499' not in q_fast and b'lastUpdateId\\":650' not in q_fast
    assert b'lastUpdateId\\":900' in q_fast and b'"U\\":500' not in q_fast


INT_TOKENS = [b"0", b"7", b"-1", b"-0", b"01", b"-01", b"00", b"", b"-", b"--1", b"1.5", b"1e5",
              b"1E5", b"12a", b"1709251200000000000", b"9223372036854775807",
              b"9223372036854775808", b"-9223372036854775807", b"-9223372036854775808",
              b"9999999999999999999", b"99999999999999999999", b"10000000000000000000",
              b"922337203685477580", b"9223372036854775799"]  # fmt: skip
# Eight digits are read as one word: a non-digit at each place of a word, just below and
# above '0'..'9' ('/', ':') and with the same low bits ('?', 0xB5); int64's edges, and a
# third word, which always overflows.
_WORD_BREAKS = [b"12345678"[:k] + c + b"12345678"[k + 1 :] for k in range(8)
                for c in (b"/", b":", b"?", b"\xb5")]  # fmt: skip
INT_TOKENS += [b"1" + t for t in _WORD_BREAKS] + [
    b"12345678", b"1234567", b"123456789", b"1234567812345678", b"12345678123456789",
    b"00000000", b"0000000012", b"9223372036800000000", b"9223372036854775806",
    b"9223372036899999999", b"9223372036900000000", b"-9223372036854775807",
    b"123456781234567812345678", b"-100000000000000000000000"]  # fmt: skip
DEC_TOKENS = [b"0.5", b"60000.12000000", b"-1.5", b"-0", b"007.10", b"1", b"1.", b".5", b"-",
              b"", b"1.123456789", b"1.12345678", b"1234567890", b"12345678901",
              b"1234567890.12345678", b"9999999999.99999999", b"1a", b"1.2.3", b"1e5", b"+1",
              b"1 ", b"0.00000001"]  # fmt: skip
DEC_TOKENS += [b"1." + t for t in _WORD_BREAKS] + [b"1.1234567", b"12345678.9", b"0.99999999",
                                                   b"1.00000000"]  # fmt: skip


def _int_reference(text: bytes) -> tuple[int, int]:
    """(length, value) of the integer token that ``text`` starts with (-1 when it is none):
    the longest run of sign and digits, in JSON's integer grammar, not followed by a float's
    '.', 'e' or 'E', within int64 (its minimum excluded)."""
    import re

    tok = re.match(rb"-?[0-9]*", text).group()
    after = text[len(tok) : len(tok) + 1]
    if not re.fullmatch(rb"-?(0|[1-9][0-9]*)", tok) or after in (b".", b"e", b"E"):
        return -1, 0
    v = int(tok)
    return (len(tok), v) if abs(v) <= 2**63 - 1 else (-1, 0)


def _dec_reference(tok: bytes, digits: int) -> tuple[bool, int]:
    import re
    from decimal import Decimal

    if not re.fullmatch(rb"-?[0-9]{1,%d}(\.[0-9]{1,8})?" % digits, tok):
        return False, 0
    return True, int(Decimal(tok.decode()) * 10**8)


@pytest.mark.parametrize("follow", [b"", b",", b"}", b".", b"e", b"E", b"5", b"-"])
def test_one_pass_integers_follow_the_json_grammar(follow):
    for tok in INT_TOKENS:
        text = tok + follow
        end, value = fastparse._int_at(np.frombuffer(b"x" + text, dtype=np.uint8), 1, len(text) + 1)
        n, want = _int_reference(text)
        assert (end, value) == ((1 + n, want) if n >= 0 else (-1, 0)), text


@pytest.mark.parametrize("digits", [10, 3])
def test_one_pass_decimals_need_plain_digits_and_the_closing_quote(digits):
    for tok in DEC_TOKENS:
        for quoted in (True, False):
            buf = np.frombuffer(b"x" + tok + (b'"' if quoted else b""), dtype=np.uint8)
            end, value = fastparse._dec_at(buf, 1, len(buf), digits)
            ok, want = _dec_reference(tok, digits) if quoted else (False, 0)
            assert (end >= 0, value if end >= 0 else 0) == (ok, want), (tok, quoted, digits)
            if ok:
                assert end == 1 + len(tok)
