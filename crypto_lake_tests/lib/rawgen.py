"""Hand-built raw files for the transform tests, in the exact wire formats.

Trades are generated once (a seeded random walk with 8-decimal prices) and then written as
raw lines in different ways: @trade or @aggTrade messages, µs or ms units, duplicated,
reordered, with a gap repaired from REST in a later file. Every writer files lines by their
receive time into 1-minute part files, as the collector does.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import orjson
import pyarrow as pa

from crypto_lake.lib.core.paths import LakeLayout, part_file_name
from crypto_lake.lib.raw.lines import repaired_line, session_line, ws_line

DAY = "2024-03-01"
DAY_START_MS = int(datetime(2024, 3, 1, tzinfo=UTC).timestamp()) * 1000
DAY_END_MS = DAY_START_MS + 86_400_000


@dataclass(frozen=True)
class Trade:
    id: int
    t_ms: int  # exchange trade time (ms; whole ms so that ms and µs encodings agree)
    price: str
    qty: str
    m: bool  # buyer is maker

    def ws_payload(self, unit: str, symbol: str) -> dict:
        t = self.t_ms * (1000 if unit == "us" else 1)
        return {"e": "trade", "E": t + 1, "s": symbol, "t": self.id, "p": self.price,
                "q": self.qty, "T": t, "m": self.m, "M": True}  # fmt: skip

    def rest_payload(self) -> dict:
        quote = (Decimal(self.price) * Decimal(self.qty)).quantize(Decimal("1e-8"))
        return {"id": self.id, "price": self.price, "qty": self.qty, "quoteQty": str(quote),
                "time": self.t_ms, "isBuyerMaker": self.m, "isBestMatch": True}  # fmt: skip


@dataclass(frozen=True)
class Quote:
    u: int
    recv_ms: int
    bid: str
    bid_qty: str
    ask: str
    ask_qty: str

    def payload(self, symbol: str) -> dict:
        return {"u": self.u, "s": symbol, "b": self.bid, "B": self.bid_qty, "a": self.ask,
                "A": self.ask_qty}  # fmt: skip


def make_trades(n: int, seed: int = 7, start_ms: int = DAY_START_MS - 30_000) -> list[Trade]:
    """n trades with consecutive ids, clustered in bursts, spanning midnight at both ends."""
    rng = random.Random(seed)
    steps = [rng.choice([0, 0, 1, 3, 250, 900, 2500]) for _ in range(n)]
    jumps = max(1, n // 400)
    # Big pauses between bursts, sized so the last trades land just after the next midnight.
    jump = (DAY_END_MS + 20_000 - start_ms - sum(steps)) // jumps
    out, t, px = [], start_ms, 6_000_000_000_000  # price in 1e-8 units (60000.0)
    for i in range(n):
        t += steps[i] + (jump if i % 400 == 200 else 0)
        px += rng.choice([0, 0, 0, 1, -1, 3, -3]) * 1_000_000 + rng.choice([0] * 9 + [17])
        qty = rng.randint(1, 5_000_000_000)
        out.append(Trade(10_000 + i, t, _dec(px), _dec(qty), rng.random() < 0.5))
    # The day's last trade happens 1 ms before midnight, so it is received the next day.
    last = max(i for i, tr in enumerate(out) if tr.t_ms < DAY_END_MS)
    tr = out[last]
    out[last] = Trade(tr.id, DAY_END_MS - 1, tr.price, tr.qty, tr.m)
    return out


def _dec(units: int) -> str:
    return f"{units // 100_000_000}.{units % 100_000_000:08d}"


def make_quotes(n: int, seed: int = 8) -> list[Quote]:
    rng = random.Random(seed)
    out, u = [], 900_000
    for _ in range(n):
        u += rng.randint(1, 9)
        recv = rng.randint(DAY_START_MS - 60_000, DAY_END_MS + 60_000)
        bid = 5_999_000_000_000 + rng.randint(0, 2_000_000_000)
        ask = bid + rng.randint(1, 500_000_000)
        out.append(Quote(u, recv, _dec(bid), _dec(rng.randint(1, 10**9)), _dec(ask), "1.50000000"))
    out.sort(key=lambda q: (q.recv_ms, q.u))
    # update ids increase with receive time on one connection
    return [Quote(900_000 + 7 * i, q.recv_ms, q.bid, q.bid_qty, q.ask, q.ask_qty)
            for i, q in enumerate(out)]  # fmt: skip


def aggregate(trades: list[Trade]) -> list[dict]:
    """Binance-style aggTrades: consecutive trades with the same time, price and side."""
    groups: list[list[Trade]] = []
    for tr in trades:
        g = groups[-1] if groups else None
        if g and g[-1].t_ms == tr.t_ms and g[-1].price == tr.price and g[-1].m == tr.m:
            g.append(tr)
        else:
            groups.append([tr])
    out = []
    for a_id, g in enumerate(groups, start=500):
        qty = sum(Decimal(t.qty) for t in g)
        out.append({"a": a_id, "p": g[0].price, "q": f"{qty:.8f}", "f": g[0].id, "l": g[-1].id,
                    "T": g[0].t_ms, "m": g[0].m, "M": True})  # fmt: skip
    return out


def trade_line(tr: Trade, recv_ms: int, unit: str = "us", conn: str = "ws-1") -> bytes:
    msg = {"stream": "btcusdt@trade", "data": tr.ws_payload(unit, "BTCUSDT")}
    return ws_line(recv_ms * 1_000_000 + 123, conn, unit, orjson.dumps(msg))


def quote_line(q: Quote, conn: str = "ws-1", unit: str = "us") -> bytes:
    msg = {"stream": "btcusdt@bookTicker", "data": q.payload("BTCUSDT")}
    return ws_line(q.recv_ms * 1_000_000 + 456, conn, unit, orjson.dumps(msg))


def agg_line(a: dict, recv_ms: int, unit: str = "ms") -> bytes:
    data = {"e": "aggTrade", "E": a["T"] + 1, "s": "BTCUSDT", **a}
    if unit == "us":
        data = {**data, "E": data["E"] * 1000, "T": data["T"] * 1000}
    msg = {"stream": "btcusdt@aggTrade", "data": data}
    return ws_line(recv_ms * 1_000_000, "ws-1", unit, orjson.dumps(msg))


def rest_line(tr: Trade, recv_ms: int) -> bytes:
    return repaired_line(recv_ms * 1_000_000, "btcusdt@trade", "ms", "historicalTrades",
                         tr.rest_payload())  # fmt: skip


def disconnect_lines(start_ms: int, end_ms: int) -> list[tuple[int, bytes]]:
    return [
        (start_ms, session_line(start_ms * 1_000_000, "ws-1", "disconnect", reason="test")),
        (end_ms, session_line(end_ms * 1_000_000, "ws-9", "connect")),
    ]


QUOTE_QTY = pa.decimal128(38, 16)
_E8 = Decimal("1e-8")


def archive_table(rows: list[tuple], agg: bool = False) -> pa.Table:
    """A public daily file's trades as ``crypto_lake.lib.history`` reads them: rows of
    (trade_id, ts_event_us, price, qty, is_buyer_maker), plus (first_trade_id,
    last_trade_id) when ``agg`` (the aggregate id in trade_id), sorted by (time, id)."""
    rows = sorted(rows, key=lambda r: (r[1], r[0]))
    price = [Decimal(r[2]).quantize(_E8) for r in rows]
    qty = [Decimal(r[3]).quantize(_E8) for r in rows]
    cols = {
        "trade_id": pa.array([r[0] for r in rows], pa.int64()),
        "ts_event": pa.array([r[1] for r in rows], pa.timestamp("us", tz="UTC")),
        "price": pa.array(price, pa.decimal128(18, 8)),
        "qty": pa.array(qty, pa.decimal128(20, 8)),
        "quote_qty": pa.array([p * q for p, q in zip(price, qty, strict=True)], QUOTE_QTY),
        "is_buyer_maker": pa.array([r[4] for r in rows], pa.bool_()),
    }
    if agg:
        cols["first_trade_id"] = pa.array([r[5] for r in rows], pa.int64())
        cols["last_trade_id"] = pa.array([r[6] for r in rows], pa.int64())
    return pa.table(cols)


def trades_archive(trades: list[Trade]) -> pa.Table:
    """The public daily trades file of DAY holding ``trades`` (those of the day)."""
    return archive_table([(t.id, t.t_ms * 1000, t.price, t.qty, t.m) for t in trades
                          if DAY_START_MS <= t.t_ms < DAY_END_MS])  # fmt: skip


def agg_archive(aggs: list[dict]) -> pa.Table:
    """The public daily aggTrades file of DAY holding ``aggs`` (``aggregate``; ms times)."""
    rows = [(a["a"], a["T"] * 1000, a["p"], a["q"], a["m"], a["f"], a["l"]) for a in aggs
            if DAY_START_MS <= a["T"] < DAY_END_MS]  # fmt: skip
    return archive_table(rows, agg=True)


def write_raw(
    layout: LakeLayout,
    lines: list[tuple[int, bytes]],
    symbol: str = "BTCUSDT",
    first_part: int = 0,
    shuffle_seed: int | None = None,
) -> list[Path]:
    """File (recv_ms, line) pairs into 1-minute part files under their receive day."""
    by_file: dict[tuple[str, int], list[bytes]] = defaultdict(list)
    for recv_ms, line in lines:
        dt = datetime.fromtimestamp(recv_ms / 1000, tz=UTC)
        by_file[(dt.date().isoformat(), recv_ms // 60_000)].append(line)
    rng = random.Random(shuffle_seed)
    paths, part = [], first_part
    for (day, _minute), chunk in sorted(by_file.items()):
        if shuffle_seed is not None:
            rng.shuffle(chunk)
        d = layout.raw_day_dir(symbol, day)
        d.mkdir(parents=True, exist_ok=True)
        path = d / part_file_name(part)
        path.write_bytes(b"".join(chunk))
        paths.append(path)
        part += 1
    return paths


def clean_lines(trades: list[Trade], quotes: list[Quote]) -> list[tuple[int, bytes]]:
    """Each trade received 5 ms after it happened, µs unit, one connection."""
    lines = [(tr.t_ms + 5, trade_line(tr, tr.t_ms + 5)) for tr in trades]
    lines += [(q.recv_ms, quote_line(q)) for q in quotes]
    return sorted(lines, key=lambda x: x[0])


@dataclass
class Partition:
    """Outputs of one (BTCUSDT, DAY) build under a temporary lake."""

    layout: LakeLayout
    files: list[Path]
    stats: object
    trades: Path
    quotes: Path
    bars: Path
    bars_1m: Path


def build_partition(root: Path, lines: list[tuple[int, bytes]], threads: int | None = None,
                    shuffle_seed: int | None = None) -> Partition:  # fmt: skip
    """Raw lines -> catalog -> trades/quotes -> bars_1s -> bars_1m, in the lake layout."""
    from crypto_lake.lib.core.duck import connect
    from crypto_lake.lib.market.bars import build_bars_1m, build_bars_1s
    from crypto_lake.lib.market.ticks import build_ticks
    from crypto_lake.lib.raw.catalog import RawCatalog

    layout = LakeLayout(root)
    write_raw(layout, lines, shuffle_seed=shuffle_seed)
    catalog = RawCatalog(layout)
    catalog.refresh()
    files = catalog.files_for("BTCUSDT", DAY)
    con = connect(threads=threads)

    def out(ds: str) -> Path:
        return layout.market_partition_dir(ds, "BTCUSDT", DAY) / "part-0.parquet"

    stats = build_ticks(files, "BTCUSDT", DAY, out("trades"), out("quotes"),
                        layout.quarantine_root / "transform", con=con)  # fmt: skip
    build_bars_1s(out("trades"), out("quotes"), "BTCUSDT", DAY, out("bars_1s"), stats.outages,
                  con=con)  # fmt: skip
    build_bars_1m(out("bars_1s"), out("bars_1m"), con=con)
    return Partition(layout, files, stats, out("trades"), out("quotes"), out("bars_1s"),
                     out("bars_1m"))  # fmt: skip


def rest_klines(trades: list[Trade]) -> list[list]:
    """Binance REST 1 m kline arrays for DAY built from ``trades`` (empty minutes carry close)."""
    by_min: dict[int, list[Trade]] = defaultdict(list)
    last_close = None
    for tr in trades:
        if tr.t_ms < DAY_START_MS:
            last_close = tr.price
        elif tr.t_ms < DAY_END_MS:
            by_min[tr.t_ms // 60_000].append(tr)
    rows = []
    for minute in range(DAY_START_MS // 60_000, DAY_END_MS // 60_000):
        g = by_min.get(minute, [])
        if not g and last_close is None:
            continue
        p = [Decimal(t.price) for t in g] or [Decimal(last_close)]
        vol = sum((Decimal(t.qty) for t in g), Decimal(0))
        qv = sum((Decimal(t.price) * Decimal(t.qty) for t in g), Decimal(0))
        tb = sum((Decimal(t.qty) for t in g if not t.m), Decimal(0))
        o = minute * 60_000
        ohlc = [f"{x:.8f}" for x in (p[0], max(p), min(p), p[-1])]
        rows.append(
            [o, *ohlc, f"{vol:.8f}", o + 59_999, f"{qv:.8f}", len(g), f"{tb:.8f}", "0", "0"]
        )
        if g:
            last_close = g[-1].price
    return rows
