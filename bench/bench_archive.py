"""Benchmark: archiving the synthetic full day, and transforming it from the archive.

    ./dev bench bench_archive [--workdir /tmp/bench_transform] [--keep] [--scale 1.0]
                              [--rounds 2] [--ticks-rounds 4] [--options serial,pairs,...]

Uses bench_transform's raw day (13 symbols, ~27 M events x scale, zstd-sealed 1-minute part
files, cached in WORKDIR/raw_day_zstd). A scratch lake in WORKDIR/archive_bench/lake links to
it (the minute files are only read) and gets the five tables the archive copies (trades,
quotes, bars_1s, bars_1m, coverage; built once, untimed, cached with --keep). Then, each
stage in its own child process, from a cold page cache (as bench_transform drops it):

1. archive: ``archive_day`` + ``archive_status(deep=True)`` for the 13 symbols, as the
   daily_archive asset does, with each option: ``serial`` (one symbol at a time, as the asset
   loops), ``serial_zt1``/``serial_zt2`` (zstd_threads 1/2), ``pairs`` (two symbols at a time,
   crypto_lake.lib.market.parallel), ``pairs_zt2``. Targets: < 120 s wall, peak RSS <= 1.5 GB.
2. compaction ratio of the raw day: uncompressed content / compacted file, and the stored
   zstd minute files / compacted file (from the raw sidecars).
3. the ticks step (build_ticks of the 13 symbols, two at a time, as the Dagster asset does)
   from the 1,440 minute files per symbol vs from ``with_compacted``'s one file, run in
   alternate order (A B B A A B B A for 4 rounds; the ratio is the geometric mean of each
   round's, which cancels a steady drift); trades and quotes must be byte-identical.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench_transform as bt  # bench/ is on sys.path when run as a script

ROOT, DAY, SYMBOLS = bt.ROOT, bt.DAY, list(bt.SYMBOLS)
# archive options: (symbols at a time, zstd_threads)
OPTIONS = {"serial": (1, 0), "serial_zt1": (1, 1), "serial_zt2": (1, 2), "pairs": (2, 0),
           "pairs_zt2": (2, 2)}  # fmt: skip
ARCHIVE_S, RSS_MB = 120.0, 1536.0


def _part(layout, dataset: str, symbol: str) -> Path:
    return layout.market_partition_dir(dataset, symbol, DAY) / "part-0.parquet"


def _ticks(src, out, symbol: str, files: list[Path], con):
    """The ticks step of one partition, as the Dagster ticks asset calls it."""
    from crypto_lake.lib.market.ticks import build_ticks

    return build_ticks(files, symbol, DAY, _part(out, "trades", symbol),
                       _part(out, "quotes", symbol), out.quarantine_root / symbol / DAY,
                       con=con, seconds_out=out.tick_seconds_path(symbol, DAY))  # fmt: skip


def _connect(work: Path):
    """Process set-up before the clock starts, as in bench_transform.child_transform."""
    import crypto_lake.lib.market.ticks  # noqa: F401 - imported before the clock starts
    from crypto_lake.lib.core.duck import connect
    from crypto_lake.lib.raw import fastparse

    con = connect(threads=2, memory_limit="1GB")
    con.execute(f"SET temp_directory = '{work / 'duckdb_tmp'}'")
    fastparse.parse(b"", "BTCUSDT", 0, 1, keep_other=False)  # numba set-up, once per process
    return con


# --- children -----------------------------------------------------------------------------------
def child_tables(work: Path, lake: Path, symbols: list[str]) -> dict:
    """Untimed set-up: the five tables the archive copies, from the minute files."""
    from crypto_lake.lib.core.paths import LakeLayout
    from crypto_lake.lib.market.bars import build_bars_1m, build_bars_1s
    from crypto_lake.lib.market.coverage import build_coverage
    from crypto_lake.lib.market.parallel import map_partitions

    layout, con = LakeLayout(lake), _connect(work)

    def build(symbol: str) -> int:
        c = con.cursor()
        files = sorted(layout.raw_day_dir(symbol, DAY).glob("part-*.jsonl*"))
        stats = _ticks(layout, layout, symbol, files, c)
        bars_1s, quotes = _part(layout, "bars_1s", symbol), _part(layout, "quotes", symbol)
        seconds = layout.tick_seconds_path(symbol, DAY)
        build_bars_1s(_part(layout, "trades", symbol), quotes, symbol, DAY, bars_1s,
                      stats.outages, con=c, seconds=seconds)  # fmt: skip
        build_bars_1m(bars_1s, _part(layout, "bars_1m", symbol), con=c)
        kinds = stats.outage_kinds or ["outage"] * len(stats.outages)
        intervals = [(a, b, k) for (a, b), k in zip(stats.outages, kinds, strict=True)]
        build_coverage(bars_1s, quotes, symbol, DAY, _part(layout, "coverage", symbol),
                       intervals, con=c)  # fmt: skip
        return stats.raw_lines

    t0 = time.perf_counter()
    lines = sum(n for _, n in map_partitions(build, symbols))
    return {"lines": lines, "wall_s": round(time.perf_counter() - t0, 1)}


def child_archive(lake: Path, option: str, symbols: list[str]) -> dict:
    from crypto_lake.lib.archive.day import archive_day, archive_status
    from crypto_lake.lib.core.paths import LakeLayout
    from crypto_lake.lib.market.parallel import map_partitions

    layout, (workers, zstd_threads) = LakeLayout(lake), OPTIONS[option]

    def archive(symbol: str) -> dict:
        t0 = time.perf_counter()
        archive_day(layout, symbol, DAY, context={"run_id": "bench_archive"},
                    zstd_threads=zstd_threads)  # fmt: skip
        t1 = time.perf_counter()
        status = archive_status(layout, symbol, DAY, deep=True)  # as daily_archive checks it
        if not status.complete:
            raise RuntimeError(f"{symbol}: archive does not verify: {status.problems}")
        return {"archive_s": round(t1 - t0, 2), "verify_s": round(time.perf_counter() - t1, 2)}

    t0 = time.perf_counter()
    per = dict(map_partitions(archive, symbols, workers=workers))
    return {"wall_s": time.perf_counter() - t0, "per_symbol": per, "peak_rss_mb": bt.peak_rss_mb()}


def child_ticks(work: Path, lake: Path, out_dir: Path, mode: str, symbols: list[str]) -> dict:
    """The ticks step of the day from the minute files or (mode compacted) from the archive."""
    from crypto_lake.lib.archive.day import with_compacted
    from crypto_lake.lib.core.paths import LakeLayout
    from crypto_lake.lib.market.parallel import map_partitions

    src, out, con = LakeLayout(lake), LakeLayout(out_dir), _connect(work)
    t0 = time.perf_counter()
    jobs = {}  # the asset lists every partition's files first (with_compacted verifies the file)
    for symbol in symbols:
        files = sorted(src.raw_day_dir(symbol, DAY).glob("part-*.jsonl*"))
        jobs[symbol] = with_compacted(src, symbol, DAY, files) if mode == "compacted" else files
    t_list = time.perf_counter() - t0
    done = list(map_partitions(lambda s: _ticks(src, out, s, jobs[s], con.cursor()), symbols))
    wall = time.perf_counter() - t0
    sha = {s: [_sha256(_part(out, d, s)) for d in ("trades", "quotes")] for s in symbols}
    return {"wall_s": wall, "list_s": round(t_list, 2), "peak_rss_mb": bt.peak_rss_mb(),
            "files": sum(len(f) for f in jobs.values()),
            "lines": sum(st.raw_lines for _, st in done), "sha256": sha}  # fmt: skip


def _sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


# --- parent -------------------------------------------------------------------------------------
def _run_child(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True,
                          text=True, cwd=ROOT)  # fmt: skip
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"child {args[0]} failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _drop_cache(*roots: Path) -> None:
    """Written back, then dropped from the page cache (as bench_transform does)."""
    from crypto_lake.lib.core.fsutil import advise

    os.sync()
    advise((p for r in roots if r.exists() for p in r.rglob("*") if p.is_file()),
           os.POSIX_FADV_DONTNEED)  # fmt: skip


def _compaction(lake: Path) -> dict:
    from crypto_lake.lib.archive.day import read_sidecar
    from crypto_lake.lib.core.paths import RAW_ARCHIVE, LakeLayout

    layout = LakeLayout(lake)
    meta = {s: read_sidecar(layout.archive_sidecar(RAW_ARCHIVE, s, DAY)) for s in SYMBOLS}
    keys = ("content_bytes", "input_bytes", "bytes")
    out = {"total": {k: sum(m[k] for m in meta.values()) for k in keys},
           "BTCUSDT": {k: meta["BTCUSDT"][k] for k in keys}}  # fmt: skip
    for v in out.values():
        v["content_ratio"] = round(v["content_bytes"] / v["bytes"], 2)
        v["minute_files_ratio"] = round(v["input_bytes"] / v["bytes"], 3)
    return out


def _mean(runs: list[dict], key: str) -> float:
    return sum(r[key] for r in runs) / len(runs)


def measure(work: Path, raw: Path, bench: Path, rounds: int, ticks_rounds: int,
            options: list[str]) -> dict:  # fmt: skip
    lake = bench / "lake"
    if not (lake / "tables.json").exists():  # the tables the archive copies (untimed)
        shutil.rmtree(lake, ignore_errors=True)
        (lake / "raw").mkdir(parents=True)
        (lake / "raw" / "binance").symlink_to(raw / "raw" / "binance")
        print("building the five tables (child process, untimed) ...", file=sys.stderr)
        tables = _run_child(["tables", str(work), str(lake)])
        (lake / "tables.json").write_text(json.dumps(tables))
    archive: dict[str, list[dict]] = {o: [] for o in options}
    order = [o for r in range(rounds) for o in (options if r % 2 == 0 else options[::-1])]
    for option in order:  # alternate order (A B B A) to cancel the machine's drift
        shutil.rmtree(lake / "archive", ignore_errors=True)
        _drop_cache(raw, lake)
        print(f"archiving 13 symbols, {option} (child process) ...", file=sys.stderr)
        archive[option].append(_run_child(["archive", str(lake), option]))
    # numba's on-disk cache must be warm before the timed ticks runs (bench_transform)
    _run_child(["ticks", str(work), str(lake), str(bench / "out_warmup"), "minutes", "EURUSDT"])
    ticks: dict[str, list[dict]] = {"minutes": [], "compacted": []}
    modes = ["minutes", "compacted"]
    for mode in [m for r in range(ticks_rounds) for m in modes[:: 1 - 2 * (r % 2)]]:
        shutil.rmtree(bench / f"out_{mode}", ignore_errors=True)
        _drop_cache(raw, lake)
        print(f"ticks step from {mode} files (child process) ...", file=sys.stderr)
        ticks[mode].append(_run_child(["ticks", str(work), str(lake), str(bench / f"out_{mode}"),
                                       mode]))  # fmt: skip
    shas = [r.pop("sha256") for runs in ticks.values() for r in runs]
    ac = {o: {"wall_s": round(_mean(r, "wall_s"), 1), "runs_s": [round(x["wall_s"], 1) for x in r],
              "peak_rss_mb": round(max(x["peak_rss_mb"] for x in r)),
              "per_symbol": r[-1]["per_symbol"]} for o, r in archive.items()}  # fmt: skip
    tk = {m: {"wall_s": round(_mean(r, "wall_s"), 2), "runs_s": [round(x["wall_s"], 2) for x in r],
              "list_s": r[-1]["list_s"], "files": r[-1]["files"], "lines": r[-1]["lines"],
              "peak_rss_mb": round(max(x["peak_rss_mb"] for x in r))}
          for m, r in ticks.items()}  # fmt: skip
    ratios = [a["wall_s"] / b["wall_s"] for a, b in zip(*ticks.values(), strict=True)]
    best = min(ac, key=lambda o: ac[o]["wall_s"])
    return {"archive": ac, "fastest": best, "compaction": _compaction(lake), "ticks": tk,
            "ticks_speedup": round(statistics.geometric_mean(ratios), 2),
            "ticks_speedup_by_round": [round(x, 2) for x in ratios],
            "identical_outputs": all(s == shas[0] for s in shas)}  # fmt: skip


def _print_summary(r: dict) -> None:
    ok = lambda good: "PASS" if good else "FAIL"  # noqa: E731
    a, best, t = r["archive"], r["fastest"], r["ticks"]
    base = a.get("serial", a[best])["wall_s"]
    lines = [
        f"load average before/after: {r['loadavg_1m']} (2 cores)",
        f"archive + deep verify, 13 symbols (mean of {len(a[best]['runs_s'])} runs each):",
    ]
    for o, v in a.items():
        lines.append(f"  {o:<11} {v['wall_s']:6.1f} s {v['runs_s']}, {base / v['wall_s']:.2f}x "
                     f"vs serial, peak RSS {v['peak_rss_mb']} MB")  # fmt: skip
    per = " ".join(f"{s[:-4]} {v['archive_s']}+{v['verify_s']}"
                   for s, v in a[best]["per_symbol"].items())  # fmt: skip
    lines += [f"  per symbol ({best}, archive+verify s): {per}",
              f"fastest: {best} {a[best]['wall_s']} s (target < {ARCHIVE_S:.0f} s: "
              f"{ok(a[best]['wall_s'] < ARCHIVE_S)}), peak RSS {a[best]['peak_rss_mb']} MB "
              f"(target <= {RSS_MB:.0f}: {ok(a[best]['peak_rss_mb'] <= RSS_MB)})"]  # fmt: skip
    for k, c in r["compaction"].items():
        lines.append(f"compaction {k}: {c['content_bytes'] / 1e9:.2f} GB content, "
                     f"{c['input_bytes'] / 1e6:.0f} MB minute files -> {c['bytes'] / 1e6:.0f} "
                     f"MB: {c['content_ratio']}x content, {c['minute_files_ratio']}x minute "
                     "files")  # fmt: skip
    for m, v in t.items():
        lines.append(f"ticks step from {m} ({v['files']} files, {v['lines'] / 1e6:.1f} M lines):"
                     f" {v['wall_s']:.1f} s {v['runs_s']} (listing/verifying {v['list_s']} s), "
                     f"peak RSS {v['peak_rss_mb']} MB (transform target <= {RSS_MB:.0f}: "
                     f"{ok(v['peak_rss_mb'] <= RSS_MB)})")  # fmt: skip
    lines.append(f"compacted vs minute files: {r['ticks_speedup']}x faster (by round: "
                 f"{r['ticks_speedup_by_round']}); trades+quotes "
                 f"byte-identical: {ok(r['identical_outputs'])}")  # fmt: skip
    print("\n".join(lines), file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the 27 M events")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir())
                        / "bench_transform")  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep generated data (cache)")
    parser.add_argument("--rounds", type=int, default=2, help="runs per archive option")
    parser.add_argument("--ticks-rounds", type=int, default=4, help="runs per ticks source")
    parser.add_argument("--options", default=",".join(OPTIONS), help="archive options to measure")
    parser.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, a = args.child[0], args.child[1:]
        if kind == "tables":
            result = child_tables(Path(a[0]), Path(a[1]), SYMBOLS)
        elif kind == "archive":
            result = child_archive(Path(a[0]), a[1], SYMBOLS)
        else:
            result = child_ticks(Path(a[0]), Path(a[1]), Path(a[2]), a[3], a[4:] or SYMBOLS)
        print(json.dumps(result))
        return 0
    work, options = args.workdir, args.options.split(",")
    raw, bench = work / "raw_day_zstd", work / "archive_bench"
    cached = (raw / "complete.json").exists()
    print(f"raw day under {raw} ({'cached' if cached else 'generating'}) ...", file=sys.stderr)
    gen = bt.generate_day(raw, args.scale, compression="zstd")
    load = os.getloadavg()[0]  # other work on the machine skews the figures: say how much
    report = {"scale": args.scale, "generated": gen,
              **measure(work, raw, bench, args.rounds, args.ticks_rounds, options),
              "loadavg_1m": [round(load, 2), round(os.getloadavg()[0], 2)]}  # fmt: skip
    _print_summary(report)
    print(json.dumps(report))
    if not args.keep:  # only what this run made: another bench's cache may share the workdir
        shutil.rmtree(bench, ignore_errors=True)
        if not cached:
            shutil.rmtree(raw, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
