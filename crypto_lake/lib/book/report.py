"""One ``book_1s`` partition: rebuild, write, and what its checks judge.

``build_book_day`` rebuilds the book of a symbol-day from its raw files (``fast``), writes
the ``book_1s`` table and its seconds by state per minute (``coverage_book``), quarantines
malformed depth lines, and saves a *report* (plain JSON beside the lake's state,
``LakeLayout.book_checks_path``): the counters, gaps, snapshots and first mismatches of the
rebuild. The asset checks judge that report (``judge_book``), so a check never rebuilds a day.
``book_chart_png`` draws the day's spread and depth.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from crypto_lake.lib.book.fast import reconstruct_day
from crypto_lake.lib.book.model import BookDay
from crypto_lake.lib.book.table import book_1s_table, book_coverage_table
from crypto_lake.lib.core.fsutil import atomic_path, atomic_write_bytes
from crypto_lake.lib.core.logs import get_logger
from crypto_lake.lib.core.parquet_out import write_dataset
from crypto_lake.lib.raw.catalog import day_bounds_us

log = get_logger("book")

REPORT_VERSION = 1
E8 = 10**8

BOOK_CHECKS = {
    "book_not_crossed": "The rebuilt book is never crossed: after every applied diff event "
    "the best bid is below the best ask.",
    "book_matches_book_ticker": "Every recorded bookTicker whose update id ends an applied "
    "diff event equals the rebuilt book's best bid/ask (price and quantity) at that id.",
    "book_matches_snapshots": "Every verification snapshot (REST /api/v3/depth, received while "
    "the book was synced) equals the rebuilt levels within the snapshot's depth; reports the "
    "largest mid deviation.",
    "book_continuous": "The book was synced and proved for the whole recorded day: no span "
    "between a sequence gap (or a malformed event, or a failed verification) and the resync "
    "from the next snapshot. Such spans are listed and their rows are reliable = false.",
}


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, bytes):
        return obj[:200].decode("utf-8", "replace")
    raise TypeError


def report_of(day: BookDay, rows: int) -> dict[str, Any]:
    """The JSON report of a rebuilt day (see the module docstring)."""
    c = day.checks
    first, last = day.first_reliable, day.last_second
    end_us = day.start_us + ((last or 0) + 1) * 1_000_000
    gaps = [g for g in day.gaps() if g.start_us < end_us]
    return {
        "version": REPORT_VERSION,
        "symbol": day.symbol,
        "day": day.day,
        "rows": rows,
        "reliable_seconds": day.reliable_seconds,
        "unreliable_seconds": rows - day.reliable_seconds,
        # spans after the first reliable second (before it the day has no rows)
        "gaps": [{**asdict(g), "end_us": min(g.end_us, end_us)} for g in gaps
                 if first is not None and g.start_us >= day.start_us + first * 1_000_000],
        "first_reliable_us": None if first is None else day.start_us + first * 1_000_000,
        "events": c.events,
        "level_updates": c.level_updates,
        "events_applied": c.events_applied,
        "level_updates_applied": c.level_updates_applied,
        "breaks": {"gap": c.breaks_gap, "malformed": c.breaks_malformed,
                   "verify_mismatch": c.breaks_verify_mismatch},
        "crossed": c.crossed,
        "crossings": [asdict(x) for x in c.crossings],
        "tickers": c.tickers,
        "tickers_compared": c.tickers_compared,
        "tickers_equal": c.tickers_equal,
        "tickers_mismatched": c.tickers_mismatched,
        "ticker_mismatches": [asdict(x) for x in c.ticker_mismatches],
        "snapshots": [asdict(s) for s in day.snapshots],
        "max_mid_deviation_bps": day.max_mid_deviation_bps,
        "quarantined": day.quarantined_total,
    }  # fmt: skip


def build_book_day(
    files: list[Path],
    symbol: str,
    day: str,
    out: Path,
    report_path: Path,
    quarantine_dir: Path,
    coverage_out: Path,
    now_us: int | None = None,
) -> dict[str, Any]:
    """Rebuild, write ``out`` (book_1s), ``coverage_out`` (coverage_book) and ``report_path``;
    returns the report. ``now_us`` (default: the clock) decides whether the day is closed."""
    book = reconstruct_day(files, symbol, day)
    table = book_1s_table(book)
    write_dataset(table, out, "book_1s")
    now = time.time_ns() // 1000 if now_us is None else now_us
    closed = day_bounds_us(day)[1] <= now
    write_dataset(book_coverage_table(book, closed), coverage_out, "coverage_book")
    _write_quarantine(book, Path(quarantine_dir) / f"{symbol}_{day}_depth.jsonl")
    report = report_of(book, table.num_rows)
    atomic_write_bytes(report_path, orjson.dumps(report, default=_jsonable), durable=False)
    return report


def _write_quarantine(book: BookDay, path: Path) -> None:
    """Malformed depth events and snapshots of the day, one JSON line each (or no file)."""
    if not book.quarantine:
        path.unlink(missing_ok=True)
        return
    with atomic_path(path, durable=False) as tmp, open(tmp, "wb") as fh:
        for q in book.quarantine:
            fh.write(orjson.dumps({"path": q.path, "offset": q.offset, "kind": q.kind,
                                   "reason": q.reason,
                                   "line": q.line.decode("utf-8", "replace")}) + b"\n")  # fmt: skip
    log.warning("%s %s: %d malformed depth line(s) quarantined to %s", book.symbol, book.day,
                book.quarantined_total, path)  # fmt: skip


def load_book_report(path: Path) -> dict[str, Any] | None:
    """A saved report, or None when there is none (or it cannot be read)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("version") == REPORT_VERSION else None


@dataclass
class Verdict:
    """One check's result for one partition."""

    name: str
    passed: bool
    reason: str
    skipped: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)


def _skip(name: str, reason: str, **metadata: Any) -> Verdict:
    return Verdict(name, False, reason, skipped=True, metadata=metadata)


def utc_time(us: int | None) -> str:
    """A time of the day (UTC) as the checks' tables and the asset's summary show it."""
    return "" if us is None else datetime.fromtimestamp(us / 1e6, UTC).strftime("%H:%M:%S.%f")


def _px(units: int) -> str:
    return f"{units / E8:.8f}"


def judge_book(report: dict[str, Any] | None) -> list[Verdict]:
    """The four checks of one partition's report (``BOOK_CHECKS``), in that order."""
    names = list(BOOK_CHECKS)
    if report is None:
        why = "no rebuild report: materialize book_1s for this partition"
        return [_skip(n, why) for n in names]
    return [_crossed(report), _tickers(report), _snapshots(report), _continuous(report)]


def _crossed(r: dict[str, Any]) -> Verdict:
    name = "book_not_crossed"
    if not r["events_applied"]:
        return _skip(name, "no diff event was applied (the book never synced)")
    rows = [
        {"event_time": utc_time(x["t_us"]), "update_id": x["update_id"]} for x in r["crossings"]
    ]
    meta = {"events_applied": r["events_applied"], "crossed": r["crossed"]}
    if r["crossed"]:
        return Verdict(name, False, f"crossed after {r['crossed']} applied event(s)", False,
                       meta, rows)  # fmt: skip
    return Verdict(name, True, f"never crossed over {r['events_applied']} applied events",
                   metadata=meta)  # fmt: skip


def _tickers(r: dict[str, Any]) -> Verdict:
    name = "book_matches_book_ticker"
    meta = {"tickers": r["tickers"], "tickers_compared": r["tickers_compared"],
            "tickers_mismatched": r["tickers_mismatched"]}  # fmt: skip
    if not r["tickers_compared"]:
        return _skip(name, "no bookTicker had the update id of an applied diff event", **meta)
    rows = [
        {"received": utc_time(m["recv_ns"] // 1000), "update_id": m["update_id"],
         "ticker": " / ".join(_px(v) for v in m["expected"]),
         "book": " / ".join(_px(v) for v in m["got"])}
        for m in r["ticker_mismatches"]
    ]  # fmt: skip
    if r["tickers_mismatched"]:
        text = f"{r['tickers_mismatched']} of {r['tickers_compared']} bookTickers differ"
        return Verdict(name, False, text, False, meta, rows)
    return Verdict(name, True, f"{r['tickers_compared']} bookTickers equal the book",
                   metadata=meta)  # fmt: skip


def _snapshots(r: dict[str, Any]) -> Verdict:
    name = "book_matches_snapshots"
    snaps = r["snapshots"]
    verified = [s for s in snaps if s["outcome"] in ("exact", "straddle")]
    bad = [s for s in verified if s["mismatched_levels"]]
    outcomes: dict[str, int] = {}
    for s in snaps:
        outcomes[s["outcome"]] = outcomes.get(s["outcome"], 0) + 1
    meta: dict[str, Any] = {
        "snapshots": len(snaps),
        "snapshots_verified": len(verified),
        "snapshots_mismatched": len(bad),
        "levels_compared": sum(s["compared_levels"] for s in verified),
        "levels_mismatched": sum(s["mismatched_levels"] for s in verified),
        "levels_skipped": sum(s["skipped_levels"] for s in verified),
        "outcomes": ", ".join(f"{k}: {v}" for k, v in sorted(outcomes.items())),
    }
    if r["max_mid_deviation_bps"] is not None:
        meta["max_mid_deviation_bps"] = float(r["max_mid_deviation_bps"])
    if not verified:
        return _skip(name, "no verification snapshot was received while the book was synced",
                     **meta)  # fmt: skip
    rows = [
        {"received": utc_time(s["recv_ns"] // 1000), "last_update_id": s["last_update_id"],
         "reason": s["reason"], "outcome": s["outcome"], "compared": s["compared_levels"],
         "mismatched": s["mismatched_levels"], "mid_dev_bps": s["mid_deviation_bps"]}
        for s in (bad or verified)
    ]  # fmt: skip
    if bad:
        return Verdict(name, False, f"{len(bad)} of {len(verified)} verification snapshots "
                       "differ from the rebuilt book", False, meta, rows)  # fmt: skip
    dev = meta.get("max_mid_deviation_bps", 0.0)
    text = (f"{len(verified)} snapshots equal the book ({meta['levels_compared']} levels; "
            f"max mid deviation {dev:g} bps)")  # fmt: skip
    return Verdict(name, True, text, metadata=meta, rows=rows)


def _continuous(r: dict[str, Any]) -> Verdict:
    name = "book_continuous"
    if r["first_reliable_us"] is None:
        return _skip(name, "the book never became reliable (no usable snapshot)",
                     unreliable_seconds=r["unreliable_seconds"])  # fmt: skip
    gaps = r["gaps"]
    meta = {"gaps": len(gaps), "reliable_seconds": r["reliable_seconds"],
            "unreliable_seconds": r["unreliable_seconds"], **r["breaks"]}  # fmt: skip
    rows = [{"from": utc_time(g["start_us"]), "to": utc_time(g["end_us"]), "reason": g["reason"],
             "seconds": (g["end_us"] - g["start_us"]) // 1_000_000} for g in gaps]  # fmt: skip
    if gaps:
        return Verdict(name, False, f"{len(gaps)} unreliable span(s), "
                       f"{r['unreliable_seconds']} s (marked reliable = false)", False, meta,
                       rows)  # fmt: skip
    breaks = sum(r["breaks"].values())
    within = f" ({breaks} sequence break(s), each resynced within its second)" if breaks else ""
    return Verdict(name, True, f"synced and proved at the end of all {r['rows']} seconds{within}",
                   metadata=meta)  # fmt: skip


def book_chart_png(path: Path) -> bytes | None:
    """Spread (bps) and depth within 50 bps per minute over the day, or None without rows."""
    import duckdb

    if not Path(path).exists():
        return None
    con = duckdb.connect()
    try:
        rows = con.execute(
            """
            SELECT (epoch_us(window_start) % 86400000000) // 60000000 AS minute,
                   avg(spread::DOUBLE / mid * 1e4) AS spread_bps,
                   avg(bid_depth_50bps::DOUBLE) AS bid_depth,
                   avg(ask_depth_50bps::DOUBLE) AS ask_depth
            FROM read_parquet(?) WHERE reliable GROUP BY ALL ORDER BY minute
            """,
            [str(path)],
        ).fetchall()
    finally:
        con.close()
    if not rows:
        return None
    from matplotlib.figure import Figure

    from crypto_lake.lib.core.charts import palette_png

    hours = [m / 60 for m, *_ in rows]
    fig = Figure(figsize=(6.4, 2.6), dpi=72)
    ax, ax2 = fig.subplots(2, 1, sharex=True)
    ax.plot(hours, [r[1] for r in rows], color="#1f77b4", linewidth=0.8)
    ax.set_ylabel("spread bps", fontsize=7)
    ax2.plot(hours, [r[2] for r in rows], color="#2ca02c", linewidth=0.8, label="bid")
    ax2.plot(hours, [r[3] for r in rows], color="#d62728", linewidth=0.8, label="ask")
    ax2.set_ylabel("depth ±50 bps", fontsize=7)
    ax2.set_xlim(0, 24)
    ax2.set_xticks(range(0, 25, 3), [f"{h:02d}:00" for h in range(0, 25, 3)])
    for a in (ax, ax2):
        a.tick_params(labelsize=7)
    ax2.legend(fontsize=6, ncol=2, loc="upper right", frameon=False)
    ax.set_title("spread and depth per minute (UTC, reliable seconds)", fontsize=8)
    fig.subplots_adjust(left=0.1, right=0.99, top=0.9, bottom=0.12, hspace=0.15)
    return palette_png(fig, colors=16)
