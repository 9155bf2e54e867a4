"""The daily QA report: Markdown with embedded charts (SPEC §7).

Sections: verdict summary, top symbols by anomalies, violations by severity (with the worst
rows per rule), detector statistics, and per symbol a chart of price (anomalies marked),
spread and volume. Charts are PNGs embedded as ``data:image/png;base64`` URIs so the one
Markdown string works as Dagster asset metadata and as the file ``qa/reports/{day}.md``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crypto_lake.lib.core.charts import palette_png, png_data_uri
from crypto_lake.lib.core.duck import connect
from crypto_lake.lib.core.fsutil import atomic_write_bytes
from crypto_lake.lib.core.paths import LakeLayout
from crypto_lake.lib.qa.config import QAConfig
from crypto_lake.lib.qa.detectors import DETECTORS
from crypto_lake.lib.qa.fusion import VERDICTS

DETECTOR_COLOURS = {"iforest": "tab:orange", "zscore": "tab:purple", "jump": "tab:red"}
_MINUTES_SQL = """
SELECT (epoch(window_start)::BIGINT) // 60 * 60 AS minute,
       arg_max(close, window_start) FILTER (WHERE isfinite(close)) AS close,
       min(low) FILTER (WHERE isfinite(low)) AS low,
       max(high) FILTER (WHERE isfinite(high)) AS high,
       median(spread_bps) FILTER (WHERE isfinite(spread_bps)) AS spread_med,
       max(spread_bps) FILTER (WHERE isfinite(spread_bps)) AS spread_max,
       sum(volume_quote) AS volume_quote
FROM bars GROUP BY 1 ORDER BY 1
"""


def minute_series(bars: pa.Table) -> pa.Table:
    """Per-minute close/low/high, spread (median, max) and quote volume for the charts."""
    con = connect()
    try:
        cols = {c: bars[c] for c in bars.column_names}
        for name in ("close", "low", "high", "spread_bps", "volume_quote"):
            cols[name] = pc.cast(bars[name], pa.float64())
        con.register("bars", pa.table(cols))
        return con.sql(_MINUTES_SQL).to_arrow_table()
    finally:
        con.close()


def _np(table: pa.Table, name: str) -> np.ndarray:
    return pc.cast(table[name], pa.float64()).to_numpy(zero_copy_only=False)


def _hours(seconds: np.ndarray, origin: int) -> np.ndarray:
    """Hours since ``origin``: a plain float axis draws far faster than a date axis."""
    return (np.asarray(seconds, dtype=np.float64) - origin) / 3600.0


def render_chart(symbol: str, minutes: pa.Table, anomalies: pa.Table) -> bytes:
    """PNG of price (with anomaly markers), spread and volume for one symbol-day."""
    from matplotlib.figure import Figure  # heavy import, only when a report is drawn

    fig = Figure(figsize=(10, 5.6), dpi=80)
    ax_p, ax_s, ax_v = fig.subplots(3, 1, sharex=True, height_ratios=[3, 1.3, 1.3])
    minute_of = _np(minutes, "minute").astype(np.int64)
    origin = int(minute_of[0]) // 86_400 * 86_400 if len(minute_of) else 0
    t = _hours(minute_of, origin)
    close = _np(minutes, "close")
    ax_p.fill_between(t, _np(minutes, "low"), _np(minutes, "high"), color="tab:blue", alpha=0.2)
    ax_p.plot(t, close, color="tab:blue", lw=0.8, label="close (1 min)")
    for detector in DETECTORS:
        ev = anomalies.filter(pc.equal(anomalies["detector"], detector))
        if not ev.num_rows:
            continue
        start = ev["start"].cast(pa.int64()).to_numpy()
        idx = np.clip(np.searchsorted(minute_of, start // 60 * 60), 0, len(close) - 1)
        ax_p.scatter(
            _hours(start, origin),
            close[idx],
            s=14 if detector != "jump" else 40,
            marker="v" if detector == "jump" else "o",
            color=DETECTOR_COLOURS[detector],
            label=f"{detector} ({ev.num_rows})",
            zorder=3,
        )
    finite = close[np.isfinite(close) & (close > 0)]
    if len(finite):
        # Robust limits: one corrupt print (a zero price) must not flatten the whole day.
        lo, hi = np.quantile(finite, [0.001, 0.999])
        pad = max((hi - lo) * 0.15, hi * 1e-4)
        ax_p.set_ylim(lo - pad, hi + pad)
    ax_p.set_title(f"{symbol}: price with anomalies, spread, volume (UTC)", fontsize=10)
    ax_p.legend(loc="upper left", fontsize=7, ncol=4)
    ax_s.plot(t, _np(minutes, "spread_max"), color="tab:gray", lw=0.6, label="max")
    ax_s.plot(t, _np(minutes, "spread_med"), color="tab:green", lw=0.8, label="median")
    ax_s.set_ylabel("spread bps", fontsize=8)
    ax_s.legend(loc="upper left", fontsize=7, ncol=2)
    volume = np.nan_to_num(_np(minutes, "volume_quote"))
    ax_v.fill_between(t, 0, volume, color="tab:brown", step="mid", lw=0)
    ax_v.set_ylabel("quote vol/min", fontsize=8)
    ticks = np.arange(0, 25, 3)
    ax_v.set_xticks(ticks, [f"{h % 24:02d}:00" for h in ticks])
    ax_v.set_xlim(0, 24)
    for ax in (ax_p, ax_s, ax_v):
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    fig.subplots_adjust(left=0.08, right=0.98, top=0.94, bottom=0.06, hspace=0.12)
    return palette_png(fig, colors=64)


def _md_table(header: list[str], rows: list[list[object]]) -> str:
    def cell(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.3f}"
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _verdict_section(verdicts: pa.Table, not_evaluated: dict[str, str]) -> list[str]:
    day = verdicts.filter(pc.equal(verdicts["scope"], "day")).sort_by("symbol")
    hours = verdicts.filter(pc.equal(verdicts["scope"], "hour"))
    rows = []
    for r in day.to_pylist():
        h = hours.filter(pc.equal(hours["symbol"], r["symbol"]))["verdict"].to_pylist()
        hour_counts = "/".join(str(h.count(v)) for v in VERDICTS)
        rows.append(
            [
                r["symbol"],
                f"**{r['verdict']}**",
                r["score"],
                r["schema_score"],
                r["detector_score"],
                r["ai_confidence"],
                hour_counts,
                r["critical"],
                r["major"],
                r["minor"],
                r["anomalies"],
                r["reason"],
            ]
        )
    totals = {v: sum(1 for r in rows if r[1] == f"**{v}**") for v in VERDICTS}
    head = [
        "symbol",
        "verdict",
        "score",
        "schema",
        "detector",
        "ai",
        "hours P/R/F",
        "critical",
        "major",
        "minor",
        "anomalies",
        "reason",
    ]
    summary = ", ".join(f"{v} {n}" for v, n in totals.items())
    if not_evaluated:
        summary += f", not evaluated {len(not_evaluated)}"
    out = ["## Verdicts", "", f"Symbol-days: {summary}.", "", _md_table(head, rows), ""]
    if not_evaluated:
        out += [_md_table(["symbol", "verdict"], sorted(not_evaluated.items())), ""]
    return out


def _anomaly_sections(anomalies: pa.Table, top_n: int) -> list[str]:
    counts: dict[str, dict[str, int]] = {}
    seconds: dict[str, int] = dict.fromkeys(DETECTORS, 0)
    for r in anomalies.select(["symbol", "detector", "seconds"]).to_pylist():
        counts.setdefault(r["symbol"], dict.fromkeys(DETECTORS, 0))[r["detector"]] += 1
        seconds[r["detector"]] += r["seconds"]
    ranked = sorted(counts.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))
    top = [[s, sum(c.values()), *c.values()] for s, c in ranked[:top_n]]
    out = ["## Top symbols by anomalies", ""]
    out += [_md_table(["symbol", "events", *DETECTORS], top) if top else "No anomalies.", ""]
    stats = []
    for d in DETECTORS:
        ev = anomalies.filter(pc.equal(anomalies["detector"], d))
        score = ev["score"].to_numpy() if ev.num_rows else np.zeros(0)
        stats.append(
            [
                d,
                ev.num_rows,
                seconds[d],
                float(score.max()) if len(score) else 0.0,
                float(np.median(score)) if len(score) else 0.0,
            ]
        )
    out += ["## Detector statistics", ""]
    out += [
        _md_table(["detector", "events", "flagged seconds", "max score", "median score"], stats)
    ]
    return [*out, ""]


def _violation_section(violations: pa.Table, top_rows: int) -> list[str]:
    out = ["## Violations by severity", ""]
    if not violations.num_rows:
        return [*out, "No rule violations.", ""]
    grouped = violations.group_by(["severity", "rule"]).aggregate(
        [("seconds", "sum"), ("symbol", "count")]
    )
    order = {"critical": 0, "major": 1, "minor": 2}
    rows = sorted(
        (
            [g["severity"], g["rule"], g["symbol_count"], g["seconds_sum"]]
            for g in grouped.to_pylist()
        ),
        key=lambda r: (order.get(r[0], 9), r[1]),
    )
    out += [_md_table(["severity", "rule", "rows", "seconds"], rows), ""]
    for rule in sorted({r[1] for r in rows}):
        sample = violations.filter(pc.equal(violations["rule"], rule)).slice(0, top_rows)
        body = [
            [r["symbol"], r["ts"].strftime("%H:%M:%S"), r["seconds"], r["detail"]]
            for r in sample.to_pylist()
        ]
        out += [
            f"**{rule}** (first {len(body)} rows)",
            "",
            _md_table(["symbol", "time", "seconds", "detail"], body),
            "",
        ]
    return out


def render_report(
    day: str,
    verdicts: pa.Table,
    violations: pa.Table,
    anomalies: pa.Table,
    minutes: dict[str, pa.Table],
    *,
    top_rows: int = 5,
    generated_at: datetime | None = None,
    not_evaluated: dict[str, str] | None = None,
) -> str:
    """The day's Markdown report; ``minutes`` maps symbol -> ``minute_series`` for charts,
    ``not_evaluated`` symbol -> why it has no verdict (e.g. no bars yet)."""
    stamp = (generated_at or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"# QA report {day}", "", f"Generated {stamp}.", ""]
    lines += _verdict_section(verdicts, not_evaluated or {})
    lines += _anomaly_sections(anomalies, top_n=10)
    lines += _violation_section(violations, top_rows)
    lines += ["## Charts", ""]
    for symbol in sorted(minutes):
        sym_anoms = anomalies.filter(pc.equal(anomalies["symbol"], symbol))
        if not minutes[symbol].num_rows:
            continue
        png = render_chart(symbol, minutes[symbol], sym_anoms)
        lines += [
            f"### {symbol}",
            "",
            f"![{symbol} price, spread and volume]({png_data_uri(png)})",
            "",
        ]
    return "\n".join(lines)


def _qa_files(layout: LakeLayout, kind: str, day: str) -> list:
    directory = layout.qa_partition_dir(kind, day)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob("*.parquet") if not p.name.startswith("."))


def write_report(layout: LakeLayout, day: str, markdown: str) -> str:
    """Write ``qa/reports/{day}.md`` atomically; returns the path as a string."""
    path = layout.qa_report_path(day)
    atomic_write_bytes(path, markdown.encode("utf-8"))
    return str(path)


def build_day_report(
    layout: LakeLayout,
    day: str,
    *,
    top_rows: int = 5,
    charts: bool = True,
    cfg: QAConfig | None = None,
    symbols: list[str] | None = None,
) -> tuple[str, str]:
    """Render the report of ``day`` from the stored QA files and bars; write it.

    Returns (markdown, path). With ``cfg`` the verdicts are recomputed from the stored
    violations and anomalies and the stored bars (so the report never waits for, or is
    blocked with, the verdicts asset); without it the stored verdicts are used. Each of
    ``symbols`` (e.g. the configured ones) without a verdict is listed as not evaluated, with
    the reason: no bars yet, nothing recorded, or no QA run since the bars exist.
    """
    from crypto_lake.lib.qa.pipeline import (
        day_verdicts,
        day_window,
        load_bars,
        partition_state,
        read_qa,
    )

    names = {p.stem for k in ("violations", "anomalies") for p in _qa_files(layout, k, day)}
    if cfg is None:
        verdicts = read_qa(layout, "verdicts", day)
    else:
        lo, hi = day_window(day)
        until = max(lo + 1, min(hi, int(time.time())))
        tables = [day_verdicts(layout, s, day, until, cfg) for s in sorted(names)]
        verdicts = pa.concat_tables(tables) if tables else read_qa(layout, "verdicts", day)
    judged = set(verdicts["symbol"].to_pylist())
    not_evaluated = {
        s: partition_state(layout, s, day)[1] or "not evaluated (no QA run yet)"
        for s in sorted(set(symbols or []) | names)
        if s not in judged
    }
    violations = read_qa(layout, "violations", day)
    anomalies = read_qa(layout, "anomalies", day)
    minutes: dict[str, pa.Table] = {}
    if charts:
        for symbol in sorted(set(verdicts["symbol"].to_pylist())):
            bars = load_bars(layout, symbol, day_window(day))
            if bars.num_rows:
                minutes[symbol] = minute_series(bars)
    markdown = render_report(
        day,
        verdicts,
        violations,
        anomalies,
        minutes,
        top_rows=top_rows,
        not_evaluated=not_evaluated,
    )
    return markdown, write_report(layout, day, markdown)
