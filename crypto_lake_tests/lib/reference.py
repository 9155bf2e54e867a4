"""An independent reference for the transform: plain Python and Decimal over raw lines.

It shares no code with crypto_lake.lib.market.ticks/bars (only the raw file layout), so a bug in
the DuckDB SQL cannot hide by being repeated here.
"""

from __future__ import annotations

import gzip
from decimal import Decimal
from pathlib import Path

import orjson
import zstandard

US = 1_000_000


def _lines(path: Path):
    if path.name.endswith(".zst"):  # the collector's default sealing
        with open(path, "rb") as raw:
            data = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True).read()
        yield from data.splitlines(keepends=True)
        return
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as fh:
        yield from fh


def reference_ticks(paths: list[Path], symbol: str, start_us: int, end_us: int):
    """(trades by id, quotes by update id) of the day, deduplicated the documented way."""
    trades: dict[int, dict] = {}
    quotes: dict[int, dict] = {}
    prefix = symbol.lower() + "@"
    for path in paths:
        for raw in _lines(path):
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if "session" in obj or not str(obj.get("stream", "")).startswith(prefix):
                continue
            mult = 1 if obj.get("unit") == "us" else 1000
            recv_us = obj["recv_ns"] // 1000
            kind = obj["stream"].split("@")[1]
            d, rest = obj["data"], obj.get("rest")
            if kind == "bookTicker":
                if start_us <= recv_us < end_us:
                    q = {"u": d["u"], "recv": recv_us, "bid": Decimal(d["b"]),
                         "bid_qty": Decimal(d["B"]), "ask": Decimal(d["a"]),
                         "ask_qty": Decimal(d["A"])}  # fmt: skip
                    old = quotes.get(q["u"])
                    if old is None or recv_us < old["recv"]:
                        quotes[q["u"]] = q
                continue
            if rest == "historicalTrades":
                tr = {"id": d["id"], "t": d["time"] * mult, "p": d["price"], "q": d["qty"],
                      "m": d["isBuyerMaker"], "f": d["id"], "l": d["id"]}  # fmt: skip
            elif kind == "trade":
                tr = {"id": d["t"], "t": d["T"] * mult, "p": d["p"], "q": d["q"], "m": d["m"],
                      "f": d["t"], "l": d["t"]}  # fmt: skip
            elif kind == "aggTrade":
                if d["f"] == -1:
                    continue
                tr = {"id": d["a"], "t": d["T"] * mult, "p": d["p"], "q": d["q"], "m": d["m"],
                      "f": d["f"], "l": d["l"]}  # fmt: skip
            else:
                continue
            if not start_us <= tr["t"] < end_us:
                continue
            tr.update(p=Decimal(tr["p"]), q=Decimal(tr["q"]), repaired=rest is not None,
                      recv=recv_us)  # fmt: skip
            old = trades.get(tr["id"])
            if old is None or (tr["repaired"], tr["recv"]) < (old["repaired"], old["recv"]):
                trades[tr["id"]] = tr
    return trades, quotes


def reference_bars(trades: dict, quotes: dict, start_us: int, end_us: int) -> list[dict]:
    """One dict per second of [start_us, end_us), Binance 1 s kline semantics."""
    by_sec: dict[int, list[dict]] = {}
    for tr in sorted(trades.values(), key=lambda t: t["id"]):
        by_sec.setdefault(tr["t"] // US, []).append(tr)
    qs = sorted(quotes.values(), key=lambda q: q["recv"])
    out, last_close, qi, best = [], None, 0, None
    for sec in range(start_us // US, end_us // US):
        while qi < len(qs) and qs[qi]["recv"] < (sec + 1) * US:
            if best is None or qs[qi]["u"] > best["u"]:
                best = qs[qi]
            qi += 1
        row = {"sec": sec, "bid": None, "ask": None, "bid_qty": None, "ask_qty": None}
        if best is not None:
            row.update(bid=best["bid"], ask=best["ask"], bid_qty=best["bid_qty"],
                       ask_qty=best["ask_qty"])  # fmt: skip
        group = by_sec.get(sec)
        if group:
            vol = sum(t["q"] for t in group)
            qvol = sum(t["p"] * t["q"] for t in group)
            row.update(open=group[0]["p"], high=max(t["p"] for t in group),
                       low=min(t["p"] for t in group), close=group[-1]["p"], volume_base=vol,
                       volume_quote=qvol, trade_count=sum(t["l"] - t["f"] + 1 for t in group),
                       vwap=float(qvol / vol),
                       taker_buy_base=sum((t["q"] for t in group if not t["m"]), Decimal(0)),
                       first_trade_id=min(t["f"] for t in group),
                       last_trade_id=max(t["l"] for t in group))  # fmt: skip
            last_close = group[-1]["p"]
        else:
            row.update(open=last_close, high=last_close, low=last_close, close=last_close,
                       volume_base=Decimal(0), volume_quote=Decimal(0), trade_count=0,
                       vwap=None, taker_buy_base=Decimal(0), first_trade_id=None,
                       last_trade_id=None)  # fmt: skip
        out.append(row)
    return out


def reference_klines_1m(trades: dict) -> dict[int, dict]:
    """Binance 1 m klines (minutes that had trades) straight from the trades."""
    by_min: dict[int, list[dict]] = {}
    for tr in sorted(trades.values(), key=lambda t: t["id"]):
        by_min.setdefault(tr["t"] // (60 * US), []).append(tr)
    out = {}
    for minute, g in by_min.items():
        out[minute] = {
            "open": g[0]["p"], "high": max(t["p"] for t in g), "low": min(t["p"] for t in g),
            "close": g[-1]["p"], "volume_base": sum(t["q"] for t in g),
            "volume_quote": sum(t["p"] * t["q"] for t in g),
            "trade_count": sum(t["l"] - t["f"] + 1 for t in g),
            "taker_buy_base": sum((t["q"] for t in g if not t["m"]), Decimal(0)),
        }  # fmt: skip
    return out
