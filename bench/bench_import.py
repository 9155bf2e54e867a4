"""Benchmark: importing one day of Binance's public trades file (6.5 M trades) into the lake.

    ./dev bench bench_import [--trades 6500000] [--workdir /tmp/bench_import] [--keep]
                             [--baselines pyarrow,pandas,duckdb] [--repeat 1]

1. Generates (cached under --workdir) a BTC-like day in Binance's public spot format: a
   numpy random walk of prices in cents, log-normal quantities in steps of 0.00001 BTC,
   microsecond times (2025-03-01, after the cut-over), consecutive ids; the CSV written by
   pyarrow, zipped with zipfile's deflate, its SHA256 in a ``.CHECKSUM`` beside it.
2. Ours, in a child process, the zip dropped from the page cache first, exactly as the
   Dagster ticks and bars_1s steps import a day of history (``importer.archive_trades``,
   then ``build_ticks`` and ``build_bars_1s``): ``read_stored_archive`` (the compiled
   reader ``fast_trades`` straight into tick rows, the SHA256 against the stored checksum
   alongside), ``build_ticks([], ..., archive=rows, seconds_out=...)`` (the trades Parquet
   + the per-second summary) and ``build_bars_1s(..., seconds=...)``. ``--repeat N`` runs
   it N times; the summary gives the median run (and every run's wall time).
   The clock starts after the imports and numba's compiler set-up, as in bench_transform
   (numba's one-time compilation into its cache is done first, by a small warm-up day in
   another child). The full CRC pass ``fetch_public_file`` makes before storing a download
   (``verify_zip``) is timed on its own: it belongs to the download, not the import. Both
   inflate the zip's CSV with ISA-L (``lib/history/zip_member.py``).
3. Baselines in the same run, each in its own child from a cold page cache:
   * ``pyarrow``: ours with the general reader the fast one falls back to on a file of
     another shape: ``verify_stored_file``, then pyarrow's CSV reader
     (``read_trades(..., quote_qty=False)``), the rest as ours;
   * ``pandas``: ``pandas.read_csv`` of the zip, ``Decimal`` per price and quantity (exact),
     quote = price x qty in Decimal, sort, ``pyarrow.Table.from_pandas`` + ``write_table``
     (zstd), 1 s bars with ``resample`` on floats, written to Parquet;
   * ``duckdb``: unzip the CSV (DuckDB reads no zip), ``read_csv`` with DECIMAL columns and
     ``COPY`` to zstd Parquet sorted by (time, id) with the exact product, then 1 s bars by
     one GROUP BY over that file, 2 threads.
   Peak RSS of each child is its VmHWM (ru_maxrss is inherited across fork+exec here, see
   bench_transform.peak_rss_mb).

Targets (issue 19): >= 2 M trade rows/s end-to-end on 2 cores, peak RSS <= 1.5 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SYMBOL = "BTCUSDT"
DAY = "2025-03-01"
DAY_START_US = 1_740_787_200_000_000
TRADES = 6_500_000
WARMUP_TRADES = 200_000
TARGET_ROWS_S, TARGET_RSS_MB = 2_000_000, 1536.0
CSV_COLUMNS = ["id", "price", "qty", "quote_qty", "time", "is_buyer_maker", "is_best_match"]


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


# --- the generated day --------------------------------------------------------------------------
def generate_day(folder: Path, n: int, seed: int = 7) -> Path:
    """Write (once; cached by name) the public trades zip of DAY with ``n`` trades and its
    .CHECKSUM, laid out as the lake stores them (LakeLayout.public_file)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv

    from crypto_lake.lib.core.paths import LakeLayout
    from crypto_lake.lib.history.public_files import checksum_path, sha256_file

    zip_path = LakeLayout(folder).public_file("trades", SYMBOL, DAY)
    if checksum_path(zip_path).exists():
        return zip_path
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    times = DAY_START_US + np.sort(rng.integers(0, 86_400_000_000, n))
    cents = 8_500_000 + np.cumsum(rng.integers(-3, 4, n))  # ~85,000 USDT, tick 0.01
    price = cents * 1_000_000  # in 1e-8
    lots = np.clip(np.exp(rng.normal(-6.5, 1.8, n)) * 1e5, 1, 5e7).astype(np.int64)
    qty = lots * 1000  # steps of 0.00001
    maker = rng.random(n) < 0.5
    price_a, qty_a = _decimals(price, pa.decimal128(18, 8)), _decimals(qty, pa.decimal128(20, 8))
    quote = pc.multiply(price_a, qty_a.cast(pa.decimal128(19, 8)))  # < 8 places here: exact
    words = pa.array(["False", "True"])
    table = pa.table({
        "id": np.arange(4_600_000_000, 4_600_000_000 + n, dtype=np.int64), "price": price_a,
        "qty": qty_a, "quote_qty": quote.cast(pa.decimal128(38, 8)), "time": times,
        "is_buyer_maker": words.take(maker.astype(np.int8)),
        "is_best_match": words.take(np.ones(n, dtype=np.int8)),
    })  # fmt: skip
    csv_path = zip_path.with_suffix(".csv")
    pcsv.write_csv(table, csv_path, pcsv.WriteOptions(include_header=False,
                                                      quoting_style="none"))  # fmt: skip
    csv_bytes = csv_path.stat().st_size
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(csv_path, csv_path.name)
    csv_path.unlink()
    checksum_path(zip_path).write_text(f"{sha256_file(zip_path)}  {zip_path.name}\n")
    info = {"trades": n, "csv_bytes": csv_bytes, "zip_bytes": zip_path.stat().st_size,
            "generate_s": round(time.perf_counter() - t0, 1)}  # fmt: skip
    (folder / "generated.json").write_text(json.dumps(info))
    return zip_path


def _decimals(units, dtype):
    """int64 units of 1e-8 as an Arrow decimal array (low word, sign-extended high word)."""
    import numpy as np
    import pyarrow as pa

    words = np.empty(2 * len(units), dtype=np.int64)
    words[0::2], words[1::2] = units, units >> 63
    return pa.Array.from_buffers(dtype, len(units), [None, pa.py_buffer(words)])


# --- child: ours --------------------------------------------------------------------------------
def child_ours(zip_path: Path, out: Path, reader: str = "fast") -> dict:
    """``reader``: "fast" as the asset reads (``read_stored_archive``: ``fast_trades``, the
    checksum alongside), "pyarrow" the general reader the fast one falls back to
    (``verify_stored_file``, then ``read_trades``)."""
    import numpy as np

    from crypto_lake.lib.core.duck import connect
    from crypto_lake.lib.history.importer import read_stored_archive
    from crypto_lake.lib.history.public_csv import read_trades
    from crypto_lake.lib.history.public_files import verify_stored_file
    from crypto_lake.lib.market import fastbars
    from crypto_lake.lib.market.archive_trades import ArchiveRows
    from crypto_lake.lib.market.bars import build_bars_1s
    from crypto_lake.lib.market.ticks import build_ticks
    from crypto_lake.lib.raw.catalog import day_bounds_us

    con = connect(threads=2, memory_limit="1GB")
    # numba's set-up, once per process
    fastbars.seconds_from_rows(np.zeros((9, 0), np.int64), np.zeros((6, 0), np.int64), 0, 1)
    trades, quotes, seconds = out / "trades.parquet", out / "quotes.parquet", out / "sec.parquet"
    stages: dict[str, float] = {}
    cpu = time.process_time()
    t_all = t = time.perf_counter()
    if reader == "fast":
        table = read_stored_archive(zip_path, "trades", DAY)  # importer.archive_trades's read
        if not isinstance(table, ArchiveRows):
            raise SystemExit("the fast reader did not take the generated day")
        rows = table.rows.shape[1]
    else:
        verify_stored_file(zip_path)
        table = read_trades(zip_path, DAY, quote_qty=False)
        rows = table.num_rows
    stages["verify_and_read_s"], t = _lap(t)
    stats = build_ticks([], SYMBOL, DAY, trades, quotes, out / "quarantine", con=con,
                        seconds_out=seconds, archive=table)  # fmt: skip
    del table
    stages["build_ticks_s"], t = _lap(t)
    build_bars_1s(trades, quotes, SYMBOL, DAY, out / "bars_1s.parquet", stats.outages,
                  end_us=day_bounds_us(DAY)[1], con=con, seconds=seconds)  # fmt: skip
    stages["build_bars_1s_s"], t = _lap(t)
    wall = time.perf_counter() - t_all
    return {"rows": rows, "wall_s": round(wall, 3), "stages": stages,
            "cpu_s": round(time.process_time() - cpu, 2),
            "trades_bytes": trades.stat().st_size,
            "bars_bytes": (out / "bars_1s.parquet").stat().st_size,
            "peak_rss_mb": round(peak_rss_mb())}  # fmt: skip


def _lap(t: float) -> tuple[float, float]:
    now = time.perf_counter()
    return round(now - t, 3), now


def child_verify_zip(zip_path: Path) -> dict:
    from crypto_lake.lib.history.public_files import verify_zip

    t0 = time.perf_counter()
    verify_zip(zip_path, zip_path.name[:-4] + ".csv", "trades", str(zip_path))
    return {"wall_s": round(time.perf_counter() - t0, 3), "peak_rss_mb": round(peak_rss_mb())}


# --- child: baselines ---------------------------------------------------------------------------
def child_pandas(zip_path: Path, out: Path) -> dict:
    from decimal import Decimal

    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    t0, cpu = time.perf_counter(), time.process_time()
    df = pd.read_csv(zip_path, header=None, names=CSV_COLUMNS,
                     dtype={"price": str, "qty": str, "quote_qty": str})  # fmt: skip
    price, qty = df["price"].map(Decimal), df["qty"].map(Decimal)
    trades = pd.DataFrame({
        "symbol": SYMBOL, "trade_id": df["id"], "ts_event": pd.to_datetime(df["time"], unit="us",
                                                                           utc=True),
        "price": price, "qty": qty, "quote_qty": price * qty,
        "is_buyer_maker": df["is_buyer_maker"],
    }).sort_values(["ts_event", "trade_id"])  # fmt: skip
    schema = pa.schema(
        [
            ("symbol", pa.string()),
            ("trade_id", pa.int64()),
            ("ts_event", pa.timestamp("us", tz="UTC")),
            ("price", pa.decimal128(18, 8)),
            ("qty", pa.decimal128(20, 8)),
            ("quote_qty", pa.decimal128(38, 16)),
            ("is_buyer_maker", pa.bool_()),
        ]
    )
    pq.write_table(pa.Table.from_pandas(trades, schema=schema, preserve_index=False),
                   out / "trades.parquet", compression="zstd")  # fmt: skip
    rows = len(trades)
    f = pd.DataFrame(
        {"price": df["price"].astype(float), "qty": df["qty"].astype(float), "id": df["id"]},
        index=pd.to_datetime(df["time"], unit="us", utc=True),
    )
    f = f.sort_index(kind="stable")  # fmt: skip
    f["quote"] = f["price"] * f["qty"]
    bars = f.resample("1s").agg({"price": ["first", "max", "min", "last"], "qty": "sum",
                                 "quote": "sum", "id": ["count", "min", "max"]})  # fmt: skip
    bars.columns = ["_".join(c) for c in bars.columns]
    bars["price_last"] = bars["price_last"].ffill()
    bars.to_parquet(out / "bars_1s.parquet", compression="zstd")
    return {
        "rows": rows,
        "wall_s": round(time.perf_counter() - t0, 3),
        "cpu_s": round(time.process_time() - cpu, 2),
        "peak_rss_mb": round(peak_rss_mb()),
    }


def child_duckdb(zip_path: Path, out: Path) -> dict:
    from crypto_lake.lib.core.duck import connect

    con = connect(threads=2)
    t0, cpu = time.perf_counter(), time.process_time()
    with zipfile.ZipFile(zip_path) as zf:
        csv = Path(zf.extract(zf.namelist()[0], out))
    columns = ("{'id': 'BIGINT', 'price': 'DECIMAL(18,8)', 'qty': 'DECIMAL(20,8)', "
               "'quote_qty': 'VARCHAR', 'time': 'BIGINT', 'is_buyer_maker': 'BOOLEAN', "
               "'is_best_match': 'BOOLEAN'}")  # fmt: skip
    trades = out / "trades.parquet"
    con.execute(f"""
        COPY (SELECT '{SYMBOL}' AS symbol, id AS trade_id, make_timestamp(time) AS ts_event,
                     price, qty, price::DECIMAL(38,8) * qty AS quote_qty, is_buyer_maker
              FROM read_csv('{csv}', header = false, columns = {columns})
              ORDER BY ts_event, trade_id)
        TO '{trades}' (FORMAT parquet, COMPRESSION zstd)""")
    csv.unlink()
    con.execute(f"""
        COPY (SELECT time_bucket(INTERVAL 1 second, ts_event) AS window_start,
                     arg_min(price, trade_id) AS open, max(price) AS high, min(price) AS low,
                     arg_max(price, trade_id) AS close, sum(qty) AS volume_base,
                     sum(quote_qty) AS volume_quote, count(*) AS trade_count,
                     sum(qty) FILTER (WHERE NOT is_buyer_maker) AS taker_buy_base,
                     min(trade_id) AS first_trade_id, max(trade_id) AS last_trade_id
              FROM read_parquet('{trades}') GROUP BY ALL ORDER BY window_start)
        TO '{out / "bars_1s.parquet"}' (FORMAT parquet, COMPRESSION zstd)""")
    (rows,) = con.execute(f"SELECT count(*) FROM read_parquet('{trades}')").fetchone()
    return {
        "rows": rows,
        "wall_s": round(time.perf_counter() - t0, 3),
        "cpu_s": round(time.process_time() - cpu, 2),
        "peak_rss_mb": round(peak_rss_mb()),
    }


def _run_child(kind: str, *args: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", kind, *args],
                          capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"child {kind} failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _cold(path: Path) -> None:
    """Drop a file from the page cache (written back first), as a day stored hours ago."""
    from crypto_lake.lib.core.fsutil import advise

    os.sync()
    advise([path], os.POSIX_FADV_DONTNEED)


# --- main ---------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trades", type=int, default=TRADES)
    parser.add_argument("--workdir", type=Path,
                        default=Path(tempfile.gettempdir()) / "bench_import")  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the generated zips (cache)")
    parser.add_argument("--baselines", default="pyarrow,pandas,duckdb")
    parser.add_argument("--repeat", type=int, default=1, help="runs of ours (median kept)")
    parser.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, rest = args.child[0], args.child[1:]
        children = {"ours": child_ours, "verify_zip": child_verify_zip,
                    "pandas": child_pandas, "duckdb": child_duckdb,
                    "pyarrow": lambda z, o: child_ours(z, o, "pyarrow")}  # fmt: skip
        paths = [Path(a) for a in rest[:2]]
        print(json.dumps(children[kind](*paths, *rest[2:])))
        return 0

    work = args.workdir
    baselines = [b for b in args.baselines.split(",") if b]
    print(f"generating {args.trades / 1e6:.1f} M trades under {work} ...", file=sys.stderr)
    day_dir = work / f"day_{args.trades}"
    zip_path = generate_day(day_dir, args.trades)
    report: dict = {"generated": json.loads((day_dir / "generated.json").read_text()),
                    "load_average_start": os.getloadavg()}  # fmt: skip
    warm = generate_day(work / f"day_{WARMUP_TRADES}", WARMUP_TRADES)
    print("warming numba's cache (child process) ...", file=sys.stderr)
    _run_child("ours", str(warm), str(_fresh(work / "out_warmup")))
    runs = []
    for i in range(args.repeat):
        _cold(zip_path)
        print(f"ours, run {i + 1} (child process) ...", file=sys.stderr)
        runs.append(_run_child("ours", str(zip_path), str(_fresh(work / "out"))))
    report["ours"] = {**sorted(runs, key=lambda r: r["wall_s"])[(len(runs) - 1) // 2],
                      "walls": [r["wall_s"] for r in runs],
                      "peak_rss_mbs": [r["peak_rss_mb"] for r in runs]}  # fmt: skip
    _cold(zip_path)
    report["verify_zip"] = _run_child("verify_zip", str(zip_path))
    for name in baselines:
        _cold(zip_path)
        print(f"baseline {name} (child process) ...", file=sys.stderr)
        report[name] = _run_child(name, str(zip_path), str(_fresh(work / f"out_{name}")))
    report["load_average"] = os.getloadavg()
    _print_summary(report, baselines)
    print(json.dumps(report))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def _print_summary(r: dict, baselines: list[str]) -> None:
    g, v, o = r["generated"], r["verify_zip"], r["ours"]
    rate = o["rows"] / o["wall_s"]
    lines = [
        f"public trades day: {g['trades'] / 1e6:.2f} M trades, CSV {g['csv_bytes'] / 1e6:.0f} MB, "
        f"zip {g['zip_bytes'] / 1e6:.0f} MB",
        f"ours (verify + read + build_ticks + build_bars_1s), median of "
        f"{len(o['walls'])}: {o['wall_s']:.2f} s, {rate / 1e6:.2f} M rows/s (target >= "
        f"{TARGET_ROWS_S / 1e6:.1f}), peak RSS {o['peak_rss_mb']} MB (target <= "
        f"{TARGET_RSS_MB:.0f}), CPU {o['cpu_s']} s",
        f"  stages {o['stages']}; walls of the runs {o['walls']}, peak RSS {o['peak_rss_mbs']}",
        f"the CRC pass of a download (verify_zip, in fetch_public_file): {v['wall_s']:.2f} s",
    ]
    for name in baselines:
        b = r[name]
        r[name]["rows_per_s"] = base = b["rows"] / b["wall_s"]
        lines.append(f"baseline {name}: {b['wall_s']:.2f} s, {base / 1e6:.2f} M rows/s, peak "
                     f"RSS {b['peak_rss_mb']} MB, CPU {b['cpu_s']} s; ours: "
                     f"{rate / base:.1f}x")  # fmt: skip
    lines.append(f"load average (2 cores) at the start {_loads(r['load_average_start'])}, at "
                 f"the end {_loads(r['load_average'])}")  # fmt: skip
    print("\n".join(lines), file=sys.stderr)


def _loads(loads: tuple[float, ...]) -> str:
    return "/".join(f"{x:.2f}" for x in loads)


if __name__ == "__main__":
    raise SystemExit(main())
