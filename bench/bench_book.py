"""Benchmark: rebuilding the order book of one synthetic BTCUSDT day into book_1s.

    ./dev bench bench_book [--scale 1.0] [--workdir /tmp/bench_book] [--keep]
                           [--baseline-minutes 10]

1. Generates (and caches under --workdir) a BTCUSDT-like day with
   ``crypto_lake.lib.book.synthetic``: 10 diff events/s with ~50 level changes each (43.2 M
   level updates at scale 1), a bookTicker per event and some inside events, 2 trades per
   event, REST snapshots (limit 1000) at the start and every 10 minutes, in the collector's
   exact raw formats, in receive order, 1-minute part files sealed with zstd as the
   collector seals them.
2. Ours, in a child process, from a cold page cache: ``fast.reconstruct_day`` over the day's
   part files (decompression in a reader thread, the compiled scanner and engine in the
   main one: 2 cores), then ``book_1s_table`` and the zstd Parquet file. The clock starts
   after the imports and numba's loading of its compiled code (~1 s, once per process, as
   bench_transform does); numba's one-time compilation into its cache is done before by a
   small day in another child.
3. Baseline in the same run, in its own child: ``reference.reconstruct_day_reference``
   (orjson per line, a dict per book side, ``sorted`` top 20 at every second's end: the
   plain implementation the compiled one is tested against) on the day's first
   --baseline-minutes part files, extrapolated per level update to the day (stated in the
   output). Its rows for the seconds it closed are compared with ours.

Target (issue 20, item 5): >= 1 M level updates/s on 2 cores with bounded memory: the
engine's arrays (book, bounded buffers, the day's rows) and one block of lines, whatever the
length of the day.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DAY = "2024-03-01"
SYMBOL = "BTCUSDT"
TARGET = 1_000_000  # level updates/s


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM; ru_maxrss is inherited across fork+exec here)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def generate(folder: Path, scale: float) -> dict:
    """The raw day (cached: kept when its marker matches the scale)."""
    from crypto_lake.lib.book.synthetic import SyntheticSpec, write_day

    marker = folder / "complete.json"
    if marker.exists():
        info = json.loads(marker.read_text())
        if info.get("scale") == scale:
            return info
    shutil.rmtree(folder, ignore_errors=True)
    t0 = time.perf_counter()
    spec = SyntheticSpec(symbol=SYMBOL, day=DAY, seconds=int(86_400 * scale),
                         compression="zstd", part_seconds=60, trades_per_event=2,
                         snapshot_every_s=600, seed=20)  # fmt: skip
    day = write_day(spec, folder / "raw")
    info = {"scale": scale, "events": day.events, "level_updates": day.level_updates,
            "tickers": day.tickers, "snapshots": day.snapshots, "files": len(day.paths),
            "raw_bytes": day.raw_bytes,
            "disk_bytes": sum(p.stat().st_size for p in day.paths),
            "generate_s": round(time.perf_counter() - t0, 1)}  # fmt: skip
    marker.write_text(json.dumps(info))
    return info


def _parts(folder: Path, limit: int | None = None) -> list[Path]:
    return sorted((folder / "raw").glob("part-*.jsonl*"))[:limit]


# --- children -----------------------------------------------------------------------------------
def child_ours(folder: Path, out: Path) -> dict:
    from crypto_lake.lib.book.fast import reconstruct_day
    from crypto_lake.lib.book.table import book_1s_table
    from crypto_lake.lib.core.parquet_out import write_parquet

    reconstruct_day([], SYMBOL, DAY)  # numba loads its compiled code: process start-up
    paths = _parts(folder)
    t0 = time.perf_counter()
    day = reconstruct_day(paths, SYMBOL, DAY)
    t1 = time.perf_counter()
    table = book_1s_table(day)
    t2 = time.perf_counter()
    write_parquet(table, out)
    t3 = time.perf_counter()
    ch = day.checks
    counts = day.snapshot_counts()
    np_rows = out.with_suffix(".rows.npy")
    import numpy as np

    np.save(np_rows, day.rows)  # for the baseline's comparison (not timed)
    return {"wall_s": t3 - t0, "reconstruct_s": t1 - t0, "table_s": t2 - t1,
            "write_s": t3 - t2, "rows": table.num_rows, "level_updates": ch.level_updates,
            "events": ch.events, "reliable_seconds": day.reliable_seconds,
            "tickers_compared": ch.tickers_compared, "tickers_equal": ch.tickers_equal,
            "snapshots_verified": counts["exact"] + counts["straddle"],
            "snapshots_mismatched": counts["mismatched"], "crossed": ch.crossed,
            "max_mid_deviation_bps": day.max_mid_deviation_bps,
            "parquet_mb": out.stat().st_size / 1e6, "peak_rss_mb": peak_rss_mb()}  # fmt: skip


def child_baseline(folder: Path, minutes: int, ours_rows: Path) -> dict:
    import numpy as np

    from crypto_lake.lib.book import model
    from crypto_lake.lib.book.reference import reconstruct_day_reference

    paths = _parts(folder, minutes)
    t0 = time.perf_counter()
    day = reconstruct_day_reference(paths, SYMBOL, DAY)
    wall = time.perf_counter() - t0
    closed = np.flatnonzero(day.rows[model.R_STATE] != model.NO_DATA)
    theirs = np.load(ours_rows)
    same = bool(np.array_equal(day.rows[:, closed], theirs[:, closed])) if len(closed) else None
    return {"wall_s": wall, "level_updates": day.checks.level_updates, "files": len(paths),
            "seconds_compared": len(closed), "rows_equal_ours": same,
            "peak_rss_mb": peak_rss_mb()}  # fmt: skip


def _run_child(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True,
                          cwd=ROOT)  # fmt: skip
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"child {args[1]} failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- main ---------------------------------------------------------------------------------------
def main() -> int:
    from crypto_lake.lib.core.fsutil import advise

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the day")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir())
                        / "bench_book")  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the generated day (cache)")
    parser.add_argument("--baseline-minutes", type=int, default=10)
    parser.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, folder = args.child[0], Path(args.child[1])
        if kind == "ours":
            result = child_ours(folder, Path(args.child[2]))
        else:
            result = child_baseline(folder, int(args.child[2]), Path(args.child[3]))
        print(json.dumps(result))
        return 0

    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    print(f"generating {args.scale:g} synthetic BTCUSDT day(s) under {work} ...", file=sys.stderr)
    gen = generate(work / "day", args.scale)
    print("warming the compiled code's cache (child process) ...", file=sys.stderr)
    generate(work / "warmup", 0.001)
    _run_child(["--child", "ours", str(work / "warmup"), str(work / "warmup.parquet")])
    os.sync()
    advise((p for p in (work / "day").rglob("*") if p.is_file()), os.POSIX_FADV_DONTNEED)
    print("rebuilding the day (child process) ...", file=sys.stderr)
    out = work / "book_1s.parquet"
    ours = _run_child(["--child", "ours", str(work / "day"), str(out)])
    print(f"baseline on the first {args.baseline_minutes} minutes ...", file=sys.stderr)
    base = _run_child(["--child", "baseline", str(work / "day"), str(args.baseline_minutes),
                       str(out.with_suffix(".rows.npy"))])  # fmt: skip
    our_rate = ours["level_updates"] / ours["wall_s"]
    base_rate = base["level_updates"] / base["wall_s"]
    report = {
        "generated": gen, "ours": {**ours, "level_updates_per_s": round(our_rate),
                                   "rows_per_s": round(ours["rows"] / ours["wall_s"])},
        "baseline": {**base, "level_updates_per_s": round(base_rate),
                     "extrapolated_day_s": round(gen["level_updates"] / base_rate, 1)},
        "speedup": round(our_rate / base_rate, 1),
    }  # fmt: skip
    _print_summary(report)
    print(json.dumps(report))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _print_summary(r: dict) -> None:
    g, o, b = r["generated"], r["ours"], r["baseline"]
    lines = [
        f"raw day: {g['events'] / 1e6:.3f} M diff events, {g['level_updates'] / 1e6:.1f} M level "
        f"updates, {g['tickers'] / 1e6:.2f} M bookTickers, {g['snapshots']} snapshots, "
        f"{g['raw_bytes'] / 1e9:.2f} GB of JSONL in {g['files']} zstd files "
        f"({g['disk_bytes'] / 1e9:.2f} GB; generated in {g['generate_s']} s)",
        f"ours (reconstruct + book_1s table + Parquet, 2 threads): {o['wall_s']:.1f} s "
        f"(reconstruct {o['reconstruct_s']:.1f}, table {o['table_s']:.2f}, write "
        f"{o['write_s']:.2f}), {o['level_updates_per_s'] / 1e6:.2f} M level updates/s "
        f"(target >= {TARGET / 1e6:g}), {o['rows_per_s']:,} book_1s rows/s, peak RSS "
        f"{o['peak_rss_mb']:.0f} MB",
        f"  checks: {o['reliable_seconds']} reliable seconds, {o['tickers_equal']}/"
        f"{o['tickers_compared']} bookTickers equal, {o['snapshots_verified']} snapshots "
        f"verified ({o['snapshots_mismatched']} mismatched, max mid deviation "
        f"{o['max_mid_deviation_bps']} bps), crossed {o['crossed']}",
        f"baseline (plain reference on the first {b['files']} minutes, "
        f"{b['level_updates'] / 1e6:.2f} M level updates): {b['wall_s']:.1f} s, "
        f"{b['level_updates_per_s']:,} level updates/s, peak RSS {b['peak_rss_mb']:.0f} MB; "
        f"extrapolated per level update to the day: {b['extrapolated_day_s']} s; its "
        f"{b['seconds_compared']} rows equal ours: {b['rows_equal_ours']}",
        f"speedup vs baseline: {r['speedup']}x",
    ]
    print("\n".join(lines), file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
