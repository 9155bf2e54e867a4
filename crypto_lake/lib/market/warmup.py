"""Compile the numba kernels once, ahead of use: ``python -m crypto_lake.lib.market.warmup``.

The compiled readers (``lib/raw/fastparse.py``, ``lib/history/fast_trades.py``), the bar
kernels (``columns.py``, ``fastbars.py``) and the order book reconstruction (``lib/book``)
are cached by numba (``cache=True``), but only once something calls them: the first market
or book run on a fresh machine or container spends a minute or two compiling. This builds
ticks, 1 s bars, a public trades file's rows and the book of a small made-up day with the same
calls the assets make (the two halves in two processes side by side: 45 s instead of 75 s on 2
cores), so every kernel is compiled with the argument types of a real run and lands in
numba's cache (next to the sources, or in ``NUMBA_CACHE_DIR``). deploy/Containerfile runs it
at build time with ``NUMBA_CPU_NAME=generic``, so the cache is valid on whatever CPU the
image runs on.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import orjson

from crypto_lake.lib.book.fast import reconstruct_day
from crypto_lake.lib.book.synthetic import depth_event_line, snapshot_line, ticker_line
from crypto_lake.lib.book.table import book_1s_table
from crypto_lake.lib.history import fast_trades
from crypto_lake.lib.market.bars import build_bars_1s
from crypto_lake.lib.market.ticks import build_ticks
from crypto_lake.lib.raw.lines import ws_line

SYMBOL, DAY = "BTCUSDT", "2024-01-02"
DAY_START_US = 1_704_153_600_000_000  # 2024-01-02T00:00:00Z


def sample_lines(count: int = 200) -> list[bytes]:
    """Raw lines of ``count`` trades and as many best bid/ask changes, one every 50 ms."""
    lines = []
    for i in range(count):
        ts = DAY_START_US + i * 50_000
        price = f"{42000 + (i % 7) * 0.5:.2f}"
        trade = {"e": "trade", "E": ts + 100, "s": SYMBOL, "t": 1000 + i, "p": price,
                 "q": "0.01000000", "T": ts, "m": i % 2 == 0, "M": True}  # fmt: skip
        quote = {"u": 5000 + i, "s": SYMBOL, "b": price, "B": "1.00000000",
                 "a": f"{float(price) + 0.01:.2f}", "A": "2.00000000"}  # fmt: skip
        streams = ((f"{SYMBOL.lower()}@trade", trade, ts + 2_000),
                   (f"{SYMBOL.lower()}@bookTicker", quote, ts + 3_000))  # fmt: skip
        for stream, data, recv in streams:
            message = orjson.dumps({"stream": stream, "data": data})
            lines.append(ws_line(recv * 1000, "ws-1", "us", message))
    return lines


def warm(workdir: Path, processes: int = 2) -> dict[str, int]:
    """Run the ticks and 1 s bars steps and the book reconstruction on the sample day in
    ``workdir``; their row counts. With ``processes`` > 1 the two halves compile side by side
    in their own processes (the book's kernels take 40 s, the others 30 s, each on one core)."""
    halves = (warm_market, warm_book)
    if processes < 2:
        return {k: v for half in halves for k, v in half(workdir).items()}
    context = multiprocessing.get_context("spawn")  # a fresh interpreter, no forked threads
    with ProcessPoolExecutor(len(halves), mp_context=context) as pool:
        results = [pool.submit(half, workdir) for half in halves]
        return {k: v for r in results for k, v in r.result().items()}


def warm_market(workdir: Path) -> dict[str, int]:
    """The compiled reader and the bar kernels: ticks and 1 s bars of the sample day."""
    raw = workdir / "part-000001.jsonl"
    raw.write_bytes(b"".join(sample_lines()))
    trades, quotes = workdir / "trades.parquet", workdir / "quotes.parquet"
    seconds = workdir / "seconds.parquet"
    ticks = build_ticks([raw], SYMBOL, DAY, trades, quotes, workdir / "quarantine",
                        seconds_out=seconds)  # fmt: skip
    bars = build_bars_1s(trades, quotes, SYMBOL, DAY, workdir / "bars_1s.parquet",
                         end_us=DAY_START_US + 60_000_000, seconds=seconds)  # fmt: skip
    return {"trades": ticks.trade_rows, "quotes": ticks.quote_rows, "bars_1s": bars.rows,
            "public_trades": warm_public_trades(workdir)}  # fmt: skip


def warm_public_trades(workdir: Path, count: int = 200) -> int:
    """The compiled public trades reader (``history.fast_trades``): a small public trades
    zip of the sample day (milliseconds, as Binance's files before 2025), its row count."""
    path = workdir / f"{SYMBOL}-trades-{DAY}.zip"
    ms = DAY_START_US // 1000
    rows = "".join(f"{1000 + i},42000.50000000,0.01000000,420.00500000,{ms + i * 50},True,True\n"
                   for i in range(count))  # fmt: skip
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(path.name[: -len(".zip")] + ".csv", rows)
    read = fast_trades.read_rows(path, "trades", DAY)
    if read is None:
        raise RuntimeError(f"the compiled reader did not take {path}")
    return read.rows.shape[1]


def warm_book(workdir: Path) -> dict[str, int]:
    """The order book reconstruction: book_1s of a few seconds of depth."""
    book = workdir / "depth.jsonl"
    book.write_bytes(b"".join(depth_lines()))
    return {"book_1s": book_1s_table(reconstruct_day([book], SYMBOL, DAY)).num_rows}


def depth_lines(seconds: int = 5) -> list[bytes]:
    """A snapshot, then ten diff events a second each followed by its bookTicker."""
    tick, lot = 10**6, 10**7  # 0.01 and 0.1 in units of 1e-8
    bid, ask = 42_000 * 10**8, 42_000 * 10**8 + tick
    t0 = DAY_START_US + 1_000_000
    lines = [snapshot_line((t0 - 1) * 1000, 100, [(bid - i * tick, lot) for i in range(30)],
                           [(ask + i * tick, lot) for i in range(30)], limit=100,
                           reason="start", symbol=SYMBOL)]  # fmt: skip
    for i in range(seconds * 10):
        t, u = t0 + i * 100_000, 101 + i
        qty = lot + (i % 5) * tick
        lines.append(depth_event_line(t * 1000, t, u, u, [(bid, qty)], [], symbol=SYMBOL))
        lines.append(ticker_line(t * 1000 + 1, u, bid, qty, ask, lot, symbol=SYMBOL))
    return lines


def main() -> int:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="crypto-lake-warmup-") as tmp:
        counts = warm(Path(tmp), processes=min(2, os.cpu_count() or 1))
    print(f"numba kernels compiled and cached in {time.monotonic() - started:.1f} s ({counts})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
