"""Both 1 s bar paths agree byte for byte on fuzzed raw input (hypothesis).

Each example is a day of raw lines in the collector's format (@trade and @bookTicker
messages, REST repairs, session records): odd decimal texts, very small and very large
values, duplicated and out-of-order trades and quotes, trades and quotes around both
midnights, outages, a previous close and a grid cut; and maybe a public daily file of the
day ("archive" trades: copies of recorded trades, and trades the raw files lack). The tick
tables are built once; the bars are then built three ways (the compiled core from the tick
tables, the compiled core from the per-second summary ``build_ticks(seconds_out=...)``
saved, and the SQL definition) and the three files must be byte-identical. The bars are
also checked against the independent Decimal reference (``reference.py``).

Reproducible by default (derandomized, no example database). Locally,
``CRYPTO_LAKE_FUZZ_EXAMPLES=500`` runs more examples and ``CRYPTO_LAKE_FUZZ_RANDOM=1`` draws
new ones on every run.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, localcontext
from pathlib import Path

import numpy as np
import orjson
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, assume, given, note, settings
from hypothesis import strategies as st

from crypto_lake.lib.core.duck import connect
from crypto_lake.lib.core.paths import LakeLayout
from crypto_lake.lib.market.bars import build_bars_1s
from crypto_lake.lib.market.fastbars import load_seconds
from crypto_lake.lib.market.ticks import build_ticks
from crypto_lake.lib.raw.catalog import day_bounds_us
from crypto_lake.lib.raw.lines import repaired_line, ws_line
from crypto_lake_tests.lib import rawgen
from crypto_lake_tests.lib.reference import reference_bars, reference_ticks

EXAMPLES = int(os.environ.get("CRYPTO_LAKE_FUZZ_EXAMPLES", "40"))
RANDOM = os.environ.get("CRYPTO_LAKE_FUZZ_RANDOM") == "1"
SYMBOL, DAY = "BTCUSDT", rawgen.DAY
START_US, END_US = day_bounds_us(DAY)
US = 1_000_000
PRICE_MAX = 10**18 - 1  # DECIMAL(18,8) in units of 1e-8
QTY_MAX = 2**63 - 1  # DECIMAL(20,8), but the tick tables hold quantities as int64 of 1e-8
# seconds (from the day's start) where trades and quotes pile up: one just before or after
# each midnight, maybe more at other edges or anywhere
EDGE_SECONDS = [-2, 1, 59, 60, 3599, 3600, 86_398, 86_401]
EDGE_MICROS = [0, 1, 999, 1000, 999_000, 999_999]


@dataclass(frozen=True)
class Copy:
    """One received copy of a message: live on a connection or repaired from REST."""

    recv_ns: int
    conn: str  # "ws-1", "ws-2" or "rest"


@dataclass(frozen=True)
class RawTrade:
    """A trade and every copy of it the raw files hold."""

    id: int
    t_us: int  # exchange trade time (a whole ms when the line's unit is ms)
    price: str  # the decimal text as sent
    qty: str
    m: bool  # buyer is maker
    unit: str  # time unit of the live lines
    copies: tuple[Copy, ...]

    def lines(self) -> list[tuple[int, bytes]]:
        out = []
        for c in self.copies:
            if c.conn == "rest":
                payload = {"id": self.id, "price": self.price, "qty": self.qty,
                           "quoteQty": f"{Decimal(self.price) * Decimal(self.qty):.8f}",
                           "time": self.t_us // 1000, "isBuyerMaker": self.m,
                           "isBestMatch": True}  # fmt: skip
                line = repaired_line(c.recv_ns, "btcusdt@trade", "ms", "historicalTrades", payload)
            else:
                t = self.t_us if self.unit == "us" else self.t_us // 1000
                data = {"e": "trade", "E": t + 1, "s": SYMBOL, "t": self.id, "p": self.price,
                        "q": self.qty, "T": t, "m": self.m, "M": True}  # fmt: skip
                msg = orjson.dumps({"stream": "btcusdt@trade", "data": data})
                line = ws_line(c.recv_ns, c.conn, self.unit, msg)
            out.append((c.recv_ns // 1_000_000, line))
        return out


@dataclass(frozen=True)
class RawQuote:
    """A bookTicker update and every copy of it the raw files hold."""

    quote: rawgen.Quote  # its recv_ms is not used: the copies carry the receive times
    copies: tuple[Copy, ...]

    def lines(self) -> list[tuple[int, bytes]]:
        msg = orjson.dumps({"stream": "btcusdt@bookTicker", "data": self.quote.payload(SYMBOL)})
        return [
            (c.recv_ns // 1_000_000, ws_line(c.recv_ns, c.conn, "us", msg)) for c in self.copies
        ]


@dataclass(frozen=True)
class FuzzDay:
    """One example: the day's raw messages and how its bars are asked for."""

    trades: list[RawTrade]
    quotes: list[RawQuote]
    disconnects: list[tuple[int, int]]  # (disconnect_ms, reconnect_ms) session records
    outages: list[tuple[int, int]]  # more [start_us, end_us) intervals passed to the bars
    previous_close: str | Decimal | None
    end_us: int | None
    archive: list[RawTrade] | None  # the public daily file's trades (of the day), if any

    def archive_table(self):
        """The public file as ``build_ticks(archive=...)`` takes it (None: no file)."""
        if self.archive is None:
            return None
        return rawgen.archive_table([(t.id, t.t_us, t.price, t.qty, t.m) for t in self.archive])

    def lines(self) -> list[tuple[int, bytes]]:
        out = [x for tr in self.trades for x in tr.lines()]
        out += [x for q in self.quotes for x in q.lines()]
        for a, b in self.disconnects:
            out += rawgen.disconnect_lines(a, b)
        return out


def _text(units: int, style: str) -> str:
    """A decimal of ``units`` 1e-8 as the exchange could spell it."""
    whole, frac = divmod(units, 10**8)
    text = f"{whole}.{frac:08d}"
    if style == "trimmed":  # no trailing zeros, no point for whole numbers
        return text.rstrip("0").rstrip(".")
    if style == "padded":  # more places than the column keeps, all zeros
        return text + "0000"
    if style == "short":  # one place when it is exact
        return f"{whole}.{frac // 10**7}" if frac % 10**7 == 0 else text
    return text  # Binance's own: always 8 places


def _units(maximum: int) -> st.SearchStrategy[int]:
    return st.one_of(
        st.integers(1, 1000),  # a few 1e-8
        st.integers(1, 10**13),  # up to 100000.0
        st.integers(10**17, maximum),  # near the column's limit
        st.sampled_from([1, 10**8, 6_000_012_345_678, maximum]),
    )


def _decimal(maximum: int) -> st.SearchStrategy[str]:
    styles = st.sampled_from(["binance", "trimmed", "padded", "short"])
    return st.builds(_text, _units(maximum), styles)


def _time_us(seconds: list[int]) -> st.SearchStrategy[int]:
    second = st.one_of(st.sampled_from(seconds), st.integers(-2, 86_401))
    micros = st.one_of(st.sampled_from(EDGE_MICROS), st.integers(0, US - 1))
    return st.builds(lambda s, u: START_US + s * US + u, second, micros)


def _delay_us() -> st.SearchStrategy[int]:
    """Receive time minus exchange time: usually small, sometimes negative (the local clock
    behind) or a minute (a slow link)."""
    return st.one_of(st.integers(-300_000, 3_000_000), st.sampled_from([-1, 0, 1, 60_000_000]))


@st.composite
def _trade(draw, trade_id: int, seconds: list[int]) -> RawTrade:
    unit = draw(st.sampled_from(["us", "ms"]))
    t_us = draw(_time_us(seconds))
    if unit == "ms":
        t_us -= t_us % 1000
    price, qty = draw(_decimal(PRICE_MAX)), draw(_decimal(QTY_MAX))
    live = draw(st.lists(st.tuples(_delay_us(), st.sampled_from(["ws-1", "ws-2"])), max_size=3))
    late = st.integers(60_000_000, 300_000_000)  # REST repairs come minutes later
    rest = draw(st.lists(late, min_size=0 if live else 1, max_size=1 if live else 2))
    ns = draw(st.integers(0, 999))
    copies = tuple(
        Copy((t_us + d) * 1000 + ns, conn) for d, conn in [*live, *((d, "rest") for d in rest)]
    )
    return RawTrade(trade_id, t_us, price, qty, draw(st.booleans()), unit, copies)


@st.composite
def _quote(draw, update_id: int, seconds: list[int]) -> RawQuote:
    recv_us = draw(_time_us(seconds))
    later = draw(st.lists(st.integers(0, 1_500_000), max_size=2))  # duplicates, identical
    ns = draw(st.integers(0, 999))
    copies = (
        Copy(recv_us * 1000 + ns, "ws-1"),
        *(Copy((recv_us + d) * 1000 + ns, "ws-2") for d in later),
    )
    bid, bid_qty, ask, ask_qty = (draw(_decimal(m)) for m in (PRICE_MAX, QTY_MAX) * 2)
    q = rawgen.Quote(update_id, 0, bid, bid_qty, ask, ask_qty)
    return RawQuote(q, copies)


def _ids(n: int) -> st.SearchStrategy[list[int]]:
    """n distinct ids in no particular order, from a base near 0, 1e9 or 2**62."""
    base = st.sampled_from([1, 10**9, 2**62])
    return st.builds(
        lambda b, offsets: [b + o for o in offsets],
        base,
        st.lists(st.integers(0, 3 * n + 3), min_size=n, max_size=n, unique=True),
    )


def _previous_close() -> st.SearchStrategy[str | Decimal | None]:
    """None, a text (read as DECIMAL(18,8): more than 8 places are rounded half away from
    zero), or a Decimal as last_trade_price returns it (str() may give '1E-8')."""
    # rounded up, still a DECIMAL(18,8): beyond, both paths refuse the value (test_fastbars
    # checks the refusal); here they are compared on what they accept
    units = _units(PRICE_MAX - 1)
    more = st.sampled_from(["", "5", "49", "50001", "9"])
    text = st.builds(lambda u, extra: _text(u, "binance") + extra, units, more)
    exact = st.builds(lambda u: Decimal(u).scaleb(-8), _units(PRICE_MAX))
    return st.one_of(st.none(), _decimal(PRICE_MAX), text, exact)


def _interval(seconds: list[int]) -> st.SearchStrategy[tuple[int, int]]:
    length = st.one_of(st.sampled_from([0, 1, US - 1, US, US + 1]), st.integers(0, 90 * US))
    return st.builds(lambda a, n: (a, a + n), _time_us(seconds), length)


def _quote_volumes_fit(trades: list[RawTrade]) -> bool:
    """Whether every second's sum of price * qty fits volume_quote's DECIMAL(38,16). Beyond
    (11 or more trades at the largest price and qty in one second) both paths refuse the
    ticks (test_fastbars checks the refusal); here they are compared on what they accept."""
    sums: dict[int, Decimal] = {}
    for tr in trades:
        sec = tr.t_us // US
        sums[sec] = sums.get(sec, Decimal(0)) + Decimal(tr.price) * Decimal(tr.qty)
    return all(v < Decimal(10) ** 22 for v in sums.values())


@st.composite
def fuzz_days(draw) -> FuzzDay:
    seconds = [
        draw(st.sampled_from([86_399, 86_400])),
        draw(st.sampled_from([0, -1])),
        *draw(st.lists(st.sampled_from(EDGE_SECONDS) | st.integers(0, 86_399), max_size=3)),
    ]
    n_trades, n_quotes = draw(st.integers(0, 30)), draw(st.integers(0, 20))
    n_archive = draw(st.integers(0, 10))  # trades only the public file has
    trade_ids, update_ids = draw(_ids(n_trades + n_archive)), draw(_ids(n_quotes))
    trades = [draw(_trade(i, seconds)) for i in trade_ids[:n_trades]]
    archive = None
    if draw(st.sampled_from([True, False])):  # a public file: the day's trades, recorded or not
        only = [draw(_trade(i, seconds)) for i in trade_ids[n_trades:]]
        copies = draw(st.lists(st.sampled_from(trades), unique_by=lambda t: t.id)) if trades else []
        archive = [t for t in [*copies, *only] if START_US <= t.t_us < END_US]
    assume(_quote_volumes_fit(trades + [t for t in archive or [] if t not in trades]))
    quotes = [draw(_quote(u, seconds)) for u in update_ids]
    disconnects = [
        (a // 1000, b // 1000) for a, b in draw(st.lists(_interval(seconds), max_size=2))
    ]
    outages = draw(st.lists(_interval(seconds), max_size=3))
    end_us = draw(
        st.one_of(
            st.none(),
            st.sampled_from([START_US, START_US + 1, END_US - 1, END_US]),
            st.integers(START_US - US, END_US + US),
        )
    )
    return FuzzDay(trades, quotes, disconnects, outages, draw(_previous_close()), end_us, archive)


@pytest.fixture(scope="module")
def con():
    return connect(threads=2)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not RANDOM,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(day=fuzz_days())
def test_fast_and_sql_bars_are_byte_identical_on_fuzzed_raw_input(con, day: FuzzDay):
    lines = day.lines()
    note("raw lines:\n" + "".join(line.decode() for _, line in lines))
    with tempfile.TemporaryDirectory(prefix="bars-fuzz-") as tmp:
        root = Path(tmp)
        files = rawgen.write_raw(LakeLayout(root), lines)
        t, q, summary = root / "trades.parquet", root / "quotes.parquet", root / "s.parquet"
        stats = build_ticks(files, SYMBOL, DAY, t, q, root / "quarantine", con=con,
                            seconds_out=summary, archive=day.archive_table())  # fmt: skip
        assert stats.bad_lines == 0 and stats.trade_id_conflicts == 0
        assert load_seconds(summary, t, q) is not None
        outages = [*stats.outages, *day.outages]
        note(f"outages: {outages}")
        kw = {"previous_close": day.previous_close, "end_us": day.end_us, "con": con}
        paths = {"fast": {}, "saved": {"seconds": summary}, "sql": {"fast": False}}
        built = {
            name: build_bars_1s(t, q, SYMBOL, DAY, root / f"{name}.parquet", outages, **kw, **extra)
            for name, extra in paths.items()
        }
        for name in ("fast", "saved"):
            _assert_same_bytes(root / f"{name}.parquet", root / "sql.parquet", name)
            assert built[name] == built["sql"], name
        _assert_matches_reference(con, files, root / "sql.parquet", outages, day)


def _assert_same_bytes(got: Path, expected: Path, name: str) -> None:
    if got.read_bytes() == expected.read_bytes():
        return
    a, b = pq.read_table(got), pq.read_table(expected)
    assert a.schema == b.schema, f"{name}: schema\n{a.schema}\n!=\n{b.schema}"
    assert a.num_rows == b.num_rows, f"{name}: {a.num_rows} rows != {b.num_rows}"
    for column in a.column_names:
        x, y = a.column(column).to_pylist(), b.column(column).to_pylist()
        for i, (u, v) in enumerate(zip(x, y, strict=True)):
            if u != v and not (u != u and v != v):  # NaN == NaN here
                row = a.slice(i, 1).to_pylist()[0]
                raise AssertionError(
                    f"{name} vs sql, first difference at row {i} "
                    f"({row['window_start']}), column {column}: {u!r} != "
                    f"{v!r}\n{name} row: {row}\nsql row: "
                    f"{b.slice(i, 1).to_pylist()[0]}"
                )
    raise AssertionError(f"{name}: same values, different bytes (metadata or encoding)")


# the bar columns the reference computes, plus the flags derived from it here
CHECKED = ["open", "high", "low", "close", "volume_base", "volume_quote", "trade_count",
           "vwap", "taker_buy_base", "first_trade_id", "last_trade_id", "bid", "ask",
           "bid_qty", "ask_qty", "spread", "is_live", "is_repaired", "is_archive", "is_empty",
           "is_outage"]  # fmt: skip


def _assert_matches_reference(con, files: list[Path], bars: Path, outages, day: FuzzDay) -> None:
    """The bars equal the Decimal reference on every row. Only the rows where either side
    changes from the row before are compared: between two such rows both sides repeat
    themselves, so that is every row."""
    grid_end = END_US if day.end_us is None else max(START_US, min(day.end_us, END_US))
    with localcontext(prec=80):  # products and sums of 38 digits, exact
        trades, quotes = reference_ticks(files, SYMBOL, START_US, END_US)
        for a in day.archive or []:  # the public file fills the ids the raw files lack
            if a.id not in trades:
                trades[a.id] = {"id": a.id, "t": a.t_us, "p": Decimal(a.price),
                                "q": Decimal(a.qty), "m": a.m, "f": a.id, "l": a.id,
                                "repaired": False, "archive": True}  # fmt: skip
        ref = reference_bars(trades, quotes, START_US, grid_end)
    prev = None
    if day.previous_close is not None:  # as ::DECIMAL(18,8) reads it
        prev = Decimal(str(day.previous_close)).quantize(Decimal("1e-8"), ROUND_HALF_UP)
    secs = np.arange(START_US // US, grid_end // US, dtype=np.int64)
    outage = np.zeros(len(secs), dtype=bool)
    for a, b in outages:
        outage |= (secs * US < b) & ((secs + 1) * US > a)
    archive = {t["t"] // US for t in trades.values() if t.get("archive")}
    live = {t["t"] // US for t in trades.values() if not t["repaired"] and not t.get("archive")}
    repaired = {t["t"] // US for t in trades.values() if t["repaired"]}
    for i, r in enumerate(ref):
        if r["close"] is None:
            r.update(open=prev, high=prev, low=prev, close=prev)
        r.update(
            spread=None if r["bid"] is None else r["ask"] - r["bid"],
            is_live=r["sec"] in live,
            is_repaired=r["sec"] in repaired,
            is_archive=r["sec"] in archive,
            is_empty=r["trade_count"] == 0,
            is_outage=bool(outage[i]),
        )
    changes = " OR ".join(f"{c} IS DISTINCT FROM lag({c}) OVER w" for c in CHECKED)
    got_changed = con.execute(
        f"SELECT i FROM (SELECT row_number() OVER w - 1 AS i, {changes} AS changed "
        f"FROM read_parquet($p) WINDOW w AS (ORDER BY window_start)) "
        f"WHERE changed OR i = 0",
        {"p": str(bars)},
    ).fetchall()
    table = pq.read_table(bars)
    assert table.num_rows == len(ref)
    if not ref:
        return
    rows = (
        {i for (i,) in got_changed}
        | {0}
        | {i for i in range(1, len(ref)) if any(ref[i][c] != ref[i - 1][c] for c in CHECKED)}
    )
    for i in sorted(rows):
        got, want = table.slice(i, 1).to_pylist()[0], ref[i]
        assert int(got["window_start"].timestamp()) == want["sec"]
        for c in CHECKED:
            if c == "vwap" and want[c] is not None and got[c] is not None:
                assert got[c] == pytest.approx(want[c], rel=1e-14), (want["sec"], c)
            else:
                assert got[c] == want[c], (want["sec"], c, got[c], want[c])
