"""Benchmark: one synthetic day of raw JSONL for 13 symbols -> trades, quotes, bars_1s.

    ./dev bench bench_transform [--scale 1.0] [--workdir /tmp/bench_transform] [--keep]
                                [--raw-compression zstd|none]

1. Generates (and caches under --workdir) a realistic day: ~27 M raw events x scale, trades
   and bookTicker lines in the exact raw format, in receive order, in 1-minute part files
   (18,720 files), with DuckDB string building (fast, deterministic). By default the files
   are sealed as the collector seals them with ``compression: zstd`` (~5.5 GB of JSONL,
   ~0.7 GB on disk); ``--raw-compression none`` keeps them plain, which on a slow disk makes
   the transform wait on reads.
2. Drops the raw files from the page cache, then transforms them with crypto_lake.lib in a
   child process as the Dagster ticks and bars_1s steps do (build_ticks + build_bars_1s per
   symbol, two symbols at a time: crypto_lake.lib.market.parallel); reports events/s and the child's
   peak RSS. The clock starts after the imports and numba's compiler set-up (~1 s, once per
   process, as a Dagster ticks step pays it once for all its partitions). Numba's one-time
   compilation into its on-disk cache (once per installation) is done before, by the same
   transform of the smallest symbol in another child.
3. Baseline in the same run: a straightforward pandas version (per-line json.loads,
   DataFrame, drop_duplicates, resample) on one busy symbol-hour, in its own child process;
   its per-event rate is extrapolated to the day (stated in the output).
4. DuckDB latency of a 1-minute rollup of one symbol-day, and of a month across all symbols
   (a month of bars_1s is generated synthetically, without raw data).

Targets (issue 4): >= 1.8 M events/s on 2 cores, peak RSS <= 1.5 GB, >= 10x pandas,
rollup of one symbol-day < 100 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DAY = "2024-03-01"
DAY_START_US = 1_709_251_200_000_000
TOTAL_EVENTS = 27_000_000
TRADE_SHARE = 0.30
# Relative activity of the default symbols (BTC busiest), base price in 1e-8 units.
SYMBOLS = {
    "BTCUSDT": (24, 6_000_000_000_000), "ETHUSDT": (15, 350_000_000_000),
    "SOLUSDT": (10, 15_000_000_000), "BNBUSDT": (7, 40_000_000_000),
    "XRPUSDT": (8, 60_000_000), "DOGEUSDT": (7, 15_000_000), "ADAUSDT": (5, 70_000_000),
    "AVAXUSDT": (4, 4_000_000_000), "LINKUSDT": (4, 2_000_000_000),
    "LTCUSDT": (3, 9_000_000_000), "DOTUSDT": (3, 900_000_000), "SUIUSDT": (6, 180_000_000),
    "EURUSDT": (4, 108_000_000),
}  # fmt: skip


def _dec(expr: str) -> str:
    """SQL: an integer number of 1e-8 units as Binance's 8-decimal string."""
    return f"printf('%d.%08d', ({expr}) // 100000000, ({expr}) % 100000000)"


def _symbol_sql(symbol: str, n_trades: int, n_quotes: int, base: int) -> str:
    lower = symbol.lower()
    head = '\'{"recv_ns":\' || recv_ns || \',"conn":"ws-1","unit":"us","stream":"'
    trade = f"""
        SELECT {head}{lower}@trade","data":{{"e":"trade","E":' || (t_us + 1) ||
               ',"s":"{symbol}","t":' || (1000000 + i) || ',"p":"' || {_dec("px")} ||
               '","q":"' || {_dec("qty")} || '","T":' || t_us || ',"m":' ||
               CASE WHEN h % 2 = 0 THEN 'true' ELSE 'false' END || ',"M":true}}}}' AS line,
               t_us // 60000000 - {DAY_START_US // 60_000_000} AS minute
        FROM (SELECT i, t_us, t_us * 1000 + 3000000 + h % 997 AS recv_ns, h,
                     {base} + ({base} // 500) * sin(i / 40000.0)::BIGINT
                       + (h % 200) * ({base} // 10000000 + 1) AS px,
                     1000 + h % 500000000 AS qty
              FROM (SELECT i, hash(i * 31 + 7) AS h,
                           {DAY_START_US} + i * {86_400_000_000 // max(n_trades, 1)} AS t_us
                    FROM range({n_trades}) r(i)))
        WHERE t_us * 1000 + 3000000 + h % 997 < {(DAY_START_US + 86_400_000_000) * 1000}
    """
    quote = f"""
        SELECT {head}{lower}@bookTicker","data":{{"u":' || (5000000 + 3 * i) ||
               ',"s":"{symbol}","b":"' || {_dec("bid")} || '","B":"' || {_dec("qty")} ||
               '","a":"' || {_dec("bid + 1 + h % 7")} || '","A":"' || {_dec("qty + 77")} ||
               '"}}}}' AS line,
               recv_ns // 60000000000 - {DAY_START_US // 60_000_000} AS minute
        FROM (SELECT i, h, {DAY_START_US * 1000} + i * {86_400_000_000_000 // max(n_quotes, 1)}
                         + h % 999983 AS recv_ns,
                     {base} + ({base} // 500) * sin(i / 90000.0)::BIGINT AS bid,
                     100000 + h % 900000000 AS qty
              FROM (SELECT i, hash(i * 17 + 3) AS h FROM range({n_quotes}) r(i)))
    """
    return f"{trade} UNION ALL {quote}"


def generate_day(raw_root: Path, scale: float, compression: str = "none") -> dict:
    """Write the raw day (cached: skipped when the marker file exists). ``compression`` zstd
    seals every file as the collector does with ``compression: zstd`` (level 3, streamed)."""
    import io

    import duckdb

    from collector_daemon.sealing import compress_stream

    marker = raw_root / "complete.json"
    if marker.exists():
        info = json.loads(marker.read_text())
        if info.get("compression") == compression:  # else a cache of an older layout
            return info
    shutil.rmtree(raw_root, ignore_errors=True)
    weights = sum(w for w, _ in SYMBOLS.values())
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    counts, t0, raw_bytes = {}, time.perf_counter(), 0
    for symbol, (w, base) in SYMBOLS.items():
        n = int(TOTAL_EVENTS * scale * w / weights)
        n_trades = int(n * TRADE_SHARE)
        tmp = raw_root / "_gen" / symbol
        tmp.parent.mkdir(parents=True, exist_ok=True)
        con.execute(
            f"COPY ({_symbol_sql(symbol, n_trades, n - n_trades, base)}) TO '{tmp}' "
            "(FORMAT csv, HEADER false, QUOTE '', ESCAPE '', DELIMITER '\x01', "
            "PARTITION_BY (minute))"
        )
        day_dir = raw_root / "raw" / "binance" / symbol / DAY
        day_dir.mkdir(parents=True, exist_ok=True)
        for part in tmp.glob("minute=*"):
            # One file per minute, lines in receive order as the collector writes them
            # (DuckDB's partitioned COPY interleaves threads). recv_ns always has 19 digits,
            # so the text order of the lines is their numeric order.
            minute = int(part.name.split("=")[1])
            lines = [x for f in part.glob("*.csv") for x in f.read_bytes().splitlines(True)]
            lines.sort()
            data = b"".join(lines)
            raw_bytes += len(data)
            name = f"part-{minute * 10:06d}.jsonl"
            if compression == "zstd":
                sealed = io.BytesIO()
                compress_stream(io.BytesIO(data), sealed, compression)
                data, name = sealed.getvalue(), name + ".zst"
            (day_dir / name).write_bytes(data)
        counts[symbol] = n
    shutil.rmtree(raw_root / "_gen", ignore_errors=True)
    files = list((raw_root / "raw").rglob("part-*.jsonl*"))
    info = {"events": sum(counts.values()), "per_symbol": counts, "files": len(files),
            "bytes": raw_bytes, "disk_bytes": sum(f.stat().st_size for f in files),
            "compression": compression,
            "generate_s": round(time.perf_counter() - t0, 1)}  # fmt: skip
    marker.write_text(json.dumps(info))
    return info


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM). getrusage's ru_maxrss would be wrong here: Linux
    carries it over from the parent across fork+exec, so the child would report the
    generator's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- child: the crypto_lake transform ---------------------------------------------------------
def child_transform(work: Path, raw_dir: str, out_dir: str, symbols: list[str]) -> dict:
    import crypto_lake.lib.market.bars  # noqa: F401 - imported before the clock starts
    from crypto_lake.lib.core.duck import connect
    from crypto_lake.lib.core.paths import LakeLayout
    from crypto_lake.lib.market.parallel import map_partitions
    from crypto_lake.lib.raw import fastparse

    src = LakeLayout(work / raw_dir)
    out = LakeLayout(work / out_dir)
    con = connect(threads=2, memory_limit="1GB")
    con.execute(f"SET temp_directory = '{work / 'duckdb_tmp'}'")
    # Process start-up, like the imports: numba's first call sets up its compiler (~1 s here),
    # once per process (a Dagster ticks step pays it once for all its partitions).
    fastparse.parse(b"", "BTCUSDT", 0, 1, keep_other=False)
    per_symbol, t_all = {}, time.perf_counter()
    # as the Dagster ticks step builds a ranged run's partitions
    for symbol, result in map_partitions(lambda s: _transform_one(src, out, s, con.cursor()),
                                         symbols):  # fmt: skip
        per_symbol[symbol] = result
    wall = time.perf_counter() - t_all
    return {"wall_s": wall, "lines": sum(v["lines"] for v in per_symbol.values()),
            "per_symbol": per_symbol,
            "peak_rss_mb": peak_rss_mb()}  # fmt: skip


def _transform_one(src, out, symbol: str, con) -> dict:
    from crypto_lake.lib.market.bars import build_bars_1s
    from crypto_lake.lib.market.ticks import build_ticks

    def part(asset: str) -> Path:
        return out.market_partition_dir(asset, symbol, DAY) / "part-0.parquet"

    files = sorted(src.raw_day_dir(symbol, DAY).glob("part-*.jsonl*"))
    seconds = out.tick_seconds_path(symbol, DAY)  # as the Dagster ticks and bars_1s steps do
    t0 = time.perf_counter()
    stats = build_ticks(files, symbol, DAY, part("trades"), part("quotes"), out.quarantine_root,
                        con=con, seconds_out=seconds)  # fmt: skip
    t1 = time.perf_counter()
    build_bars_1s(part("trades"), part("quotes"), symbol, DAY, part("bars_1s"), stats.outages,
                  con=con, seconds=seconds)  # fmt: skip
    t2 = time.perf_counter()
    return {"lines": stats.raw_lines, "ticks_s": round(t1 - t0, 2), "bars_s": round(t2 - t1, 2)}


# --- child: the straightforward pandas baseline -------------------------------------------------
def child_pandas(work: Path, raw_dir: str, symbol: str, first_minute: int, minutes: int) -> dict:
    import io
    import json as stdjson

    import pandas as pd

    from crypto_lake.lib.raw.lines import open_raw

    day_dir = work / raw_dir / "raw" / "binance" / symbol / DAY
    files = [
        next(day_dir.glob(f"part-{m * 10:06d}.jsonl*"))
        for m in range(first_minute, first_minute + minutes)
    ]
    t0 = time.perf_counter()
    trades, quotes, lines = [], [], 0
    for f in files:
        with io.TextIOWrapper(open_raw(f), encoding="utf-8") as fh:
            for line in fh:
                lines += 1
                obj = stdjson.loads(line)
                d = obj["data"]
                if obj["stream"].endswith("@trade"):
                    trades.append({"id": d["t"], "ts": d["T"], "price": float(d["p"]),
                                   "qty": float(d["q"]), "m": d["m"]})  # fmt: skip
                else:
                    quotes.append({"u": d["u"], "ts": obj["recv_ns"] // 1000,
                                   "bid": float(d["b"]), "ask": float(d["a"])})  # fmt: skip
    t = pd.DataFrame(trades).drop_duplicates("id")
    t["ts"] = pd.to_datetime(t["ts"], unit="us", utc=True)
    t["quote"] = t["price"] * t["qty"]
    t["taker_buy"] = t["qty"].where(~t["m"], 0.0)
    t = t.sort_values(["ts", "id"]).set_index("ts")
    bars = t.resample("1s").agg({"price": ["first", "max", "min", "last"], "qty": "sum",
                                 "quote": "sum", "id": ["count", "first", "last"],
                                 "taker_buy": "sum"})  # fmt: skip
    bars.columns = ["_".join(c) for c in bars.columns]
    bars["price_last"] = bars["price_last"].ffill()
    q = pd.DataFrame(quotes).drop_duplicates("u")
    q["ts"] = pd.to_datetime(q["ts"], unit="us", utc=True)
    qb = q.sort_values(["ts", "u"]).set_index("ts").resample("1s").last().ffill()
    bars = bars.join(qb[["bid", "ask"]], how="left")
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "lines": lines, "bars": len(bars),
            "peak_rss_mb": peak_rss_mb()}  # fmt: skip


def _run_child(args: list[str]) -> dict:
    cmd = [sys.executable, __file__, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"child {args[0]} failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- query latency ------------------------------------------------------------------------------
ROLLUP = """
SELECT {keys}time_bucket(INTERVAL 1 minute, window_start) AS minute,
       arg_min(open, window_start) AS open, max(high) AS high, min(low) AS low,
       arg_max(close, window_start) AS close, sum(volume_base) AS volume,
       sum(trade_count) AS trades
FROM bars_1s {where} GROUP BY ALL ORDER BY ALL
"""


def generate_month(root: Path, days: int) -> int:
    """bars_1s for ``days`` days x 13 symbols, one Parquet file per symbol-day, hive layout."""
    import duckdb

    marker = root / f"month_{days}.done"
    if marker.exists():
        return int(marker.read_text())
    shutil.rmtree(root, ignore_errors=True)
    out = root / "bars_1s" / "exchange=binance"
    out.mkdir(parents=True)
    syms = ", ".join(f"'{s}'" for s in SYMBOLS)
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"""
        COPY (
            SELECT s AS symbol, (TIMESTAMPTZ '{DAY}' + INTERVAL (d) DAY)::DATE AS date,
                TIMESTAMPTZ '{DAY}' + INTERVAL (d * 86400 + sec) SECOND AS window_start,
                px AS open, px + 0.5 AS high, px - 0.5 AS low, px + 0.25 AS close,
                (h % 1000000)::DECIMAL(38,8) / 1000 AS volume_base,
                (h % 1000000)::DECIMAL(38,16) * 60 AS volume_quote,
                (h % 40)::BIGINT AS trade_count, px::DOUBLE AS vwap,
                (h % 500000)::DECIMAL(38,8) / 1000 AS taker_buy_base,
                NULL::BIGINT AS first_trade_id, NULL::BIGINT AS last_trade_id,
                px - 0.01 AS bid, px + 0.01 AS ask, 1.5::DECIMAL(20,8) AS bid_qty,
                2.5::DECIMAL(20,8) AS ask_qty, px::DOUBLE AS mid, 0.02::DECIMAL(18,8) AS spread,
                0.3 AS spread_bps, true AS is_live, false AS is_repaired,
                h % 40 = 0 AS is_empty, false AS is_outage
            FROM (SELECT unnest([{syms}]) AS s) sy, range({days}) dd(d), range(86400) ss(sec),
                 LATERAL (SELECT hash(d, sec, s) AS h,
                          (60000 + (sec % 997))::DECIMAL(18,8) AS px)
        ) TO '{out}' (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (symbol, date),
                      WRITE_PARTITION_COLUMNS true)
    """)
    rows = days * 86_400 * len(SYMBOLS)
    marker.write_text(str(rows))
    return rows


def time_query(db: Path, sql: str, repeat: int = 5) -> dict:
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    con.execute("SET enable_progress_bar = false")
    t0 = time.perf_counter()
    rows = len(con.execute(sql).fetchall())
    cold = time.perf_counter() - t0
    warm = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        con.execute(sql).fetchall()
        warm.append(time.perf_counter() - t0)
    con.close()
    return {"rows": rows, "first_ms": round(cold * 1000, 1),
            "median_ms": round(statistics.median(warm) * 1000, 1)}  # fmt: skip


def query_latency(work: Path, month_days: int) -> dict:
    from crypto_lake.lib.core.paths import LakeLayout
    from crypto_lake.lib.market.views import build_lake_views

    day_sql = ROLLUP.format(keys="", where="WHERE symbol = 'BTCUSDT' AND date = DATE '2024-03-01'")
    month_sql = ROLLUP.format(keys="symbol, ", where="")
    out: dict = {}
    db = build_lake_views(LakeLayout(work / "lake_out"), extra_statements=[])
    out["day_rollup_real_output"] = time_query(db, day_sql)
    t0 = time.perf_counter()
    rows = generate_month(work / "month", month_days)
    out["month_generate_s"] = round(time.perf_counter() - t0, 1)
    mdb = build_lake_views(LakeLayout(work / "month"), extra_statements=[])
    out["day_rollup_in_month_lake"] = time_query(mdb, day_sql)
    out["month_rollup_all_symbols"] = time_query(mdb, month_sql, repeat=2)
    out["month_rows"] = rows
    out["month_days"] = month_days
    return out


# --- main ---------------------------------------------------------------------------------------
def _free_gb(path: Path) -> float:
    return shutil.disk_usage(path).free / 1e9


def main() -> int:
    from crypto_lake.lib.core.fsutil import advise

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the 27 M events")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir())
                        / "bench_transform")  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep generated data (cache)")
    parser.add_argument(
        "--month-days",
        type=int,
        default=None,
        help="days in the month query (default 30, or 3 below scale 0.5)",
    )
    parser.add_argument("--pandas-minutes", type=int, default=60)
    parser.add_argument(
        "--raw-compression",
        choices=["zstd", "none"],
        default="zstd",
        help="how the raw files are sealed (the collector's compression setting)",
    )
    parser.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, work = args.child[0], Path(args.child[1])
        if kind == "transform":
            result = child_transform(work, args.child[2], args.child[3],
                                     args.child[4:] or list(SYMBOLS))  # fmt: skip
        else:
            result = child_pandas(work, args.child[2], args.child[3], int(args.child[4]),
                                  int(args.child[5]))  # fmt: skip
        print(json.dumps(result))
        return 0

    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    raw_dir = "raw_day" if args.raw_compression == "none" else f"raw_day_{args.raw_compression}"
    need = 8.0 * args.scale + 2.5
    if _free_gb(work) < need and not (work / raw_dir / "complete.json").exists():
        print(f"need ~{need:.0f} GB free under {work}, have {_free_gb(work):.1f} GB",
              file=sys.stderr)  # fmt: skip
        return 2
    month_days = args.month_days or (30 if args.scale >= 0.5 else 3)
    print(f"generating {TOTAL_EVENTS * args.scale / 1e6:.1f} M raw events under {work} ...",
          file=sys.stderr)  # fmt: skip
    gen = generate_day(work / raw_dir, args.scale, args.raw_compression)
    shutil.rmtree(work / "lake_out", ignore_errors=True)
    # numba compiles the readers once per installation (about a minute, and over 1.5 GB at
    # its peak) into its on-disk cache; a small symbol fills that cache first
    print("warming the compiled readers' cache (child process) ...", file=sys.stderr)
    smallest = min(SYMBOLS, key=lambda s: SYMBOLS[s][0])
    _run_child(["--child", "transform", str(work), raw_dir, "lake_warmup", smallest])
    shutil.rmtree(work / "lake_warmup")
    # from disk, as a finalize run reads a day written hours ago, whatever earlier runs cached;
    # written back first (a just-generated day is still dirty in memory: it could not be
    # dropped, and the transform would compete with its write-back)
    os.sync()
    advise((p for p in (work / raw_dir).rglob("*") if p.is_file()), os.POSIX_FADV_DONTNEED)
    print("transforming (child process) ...", file=sys.stderr)
    tr = _run_child(["--child", "transform", str(work), raw_dir, "lake_out"])
    busy = max(gen["per_symbol"], key=gen["per_symbol"].get)
    print(f"pandas baseline on {busy}, {args.pandas_minutes} minutes ...", file=sys.stderr)
    pd_res = _run_child(
        ["--child", "pandas", str(work), raw_dir, busy, "600", str(args.pandas_minutes)]
    )
    print("query latency ...", file=sys.stderr)
    q = query_latency(work, month_days)
    ours = tr["lines"] / tr["wall_s"]
    theirs = pd_res["lines"] / pd_res["wall_s"]
    report = {
        "scale": args.scale, "generated": gen,
        "transform": {**tr, "events_per_s": round(ours)},
        "pandas_baseline": {**pd_res, "symbol": busy, "events_per_s": round(theirs),
                            "extrapolated_day_s": round(tr["lines"] / theirs, 1)},
        "speedup_vs_pandas": round(ours / theirs, 1), "queries": q,
    }  # fmt: skip
    _print_summary(report)
    print(json.dumps(report))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _print_summary(r: dict) -> None:
    t, p, q = r["transform"], r["pandas_baseline"], r["queries"]
    g = r["generated"]
    lines = [
        f"raw day: {g['events'] / 1e6:.2f} M events, {g['bytes'] / 1e9:.2f} GB of JSONL, "
        f"{g['files']} files, {g['disk_bytes'] / 1e9:.2f} GB on disk (compression "
        f"{g['compression']}; generated in {g['generate_s']} s)",
        f"transform (ticks + bars_1s, 13 symbols): {t['wall_s']:.1f} s, "
        f"{t['events_per_s'] / 1e6:.2f} M events/s (target >= 1.8), "
        f"peak RSS {t['peak_rss_mb']:.0f} MB (target <= 1536)",
        f"pandas baseline ({p['symbol']}, {p['lines']} events): {p['wall_s']:.1f} s, "
        f"{p['events_per_s'] / 1e6:.3f} M events/s, peak RSS {p['peak_rss_mb']:.0f} MB; "
        f"extrapolated per event to the day: {p['extrapolated_day_s']} s",
        f"speedup vs pandas: {r['speedup_vs_pandas']}x (target >= 10)",
        f"1 m rollup of one symbol-day (real output): {q['day_rollup_real_output']}",
        f"1 m rollup of one symbol-day in a {q['month_days']}-day lake: "
        f"{q['day_rollup_in_month_lake']} (target < 100 ms)",
        f"1 m rollup of {q['month_days']} days x 13 symbols ({q['month_rows'] / 1e6:.1f} M rows): "
        f"{q['month_rollup_all_symbols']}",
    ]
    print("\n".join(lines), file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
