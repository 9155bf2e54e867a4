"""QA assets (SPEC §7) per (date, symbol): violations, anomalies, verdicts, the daily report.

A run without window tags checks whole days (the daily schedule, the re-run after a bars
refresh, UI backfills); the hourly schedule tags its runs with a window end and length, and
the assets then replace only that window's rows in the day's files (``lib.qa.pipeline``), so
all of them write the same files and re-runs never duplicate. Every run judges only the
seconds whose bars_1s exist: a partition without bars in the window is not evaluated (listed
as such in the metadata and the report), never reported as missing data.

``qa_report`` depends on violations and anomalies, not on ``qa_verdicts``: it recomputes the
(cheap) fusion itself, so the report is still written on a day whose FAIL verdict makes the
blocking ``no_fail_verdict`` check stop everything downstream of ``qa_verdicts``.
"""

import warnings
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from crypto_lake.defs.market.checks import check_outputs, target_of
from crypto_lake.defs.market.emit import record_unreported
from crypto_lake.defs.market.partitions import (
    CONFIG,
    market_partitions,
    partition_pairs,
    run_partition_keys,
)
from crypto_lake.defs.resources import LakeResource
from crypto_lake.defs.table_schemas import table_metadata
from crypto_lake.lib.core.paths import LakeLayout
from crypto_lake.lib.qa import pipeline as qa
from crypto_lake.lib.qa.config import QAConfig, qa_config_from
from crypto_lake.lib.qa.report import build_day_report

warnings.filterwarnings("ignore", message=".*backfill_policy.*", category=dg.BetaWarning)
GROUP = "qa"
SINGLE_RUN = dg.BackfillPolicy.single_run()
WINDOW_END_TAG = "crypto_lake/qa_window_end"  # ISO time; absent = whole days
WINDOW_MINUTES_TAG = "crypto_lake/qa_window_minutes"
PREVIEW_ROWS = 10


def qa_config(lake: LakeResource) -> QAConfig:
    return qa_config_from(lake.config)


def run_window(context: Any, day: str) -> tuple[tuple[int, int], bool]:
    """(window inside ``day``, intraday?) from the run's tags."""
    tags = context.run.tags if context.run else {}
    day_lo, day_hi = qa.day_window(day)
    end_tag = tags.get(WINDOW_END_TAG)
    if not end_tag:
        return (day_lo, day_hi), False
    end = int(datetime.fromisoformat(end_tag).timestamp())
    minutes = int(tags.get(WINDOW_MINUTES_TAG, "90"))
    return (max(day_lo, end - minutes * 60), min(day_hi, end)), True


def _pairs(context: Any) -> list[tuple[str, str]]:
    """The partitions the run claims (a job-page backfill's too, see run_partition_keys)."""
    return partition_pairs(run_partition_keys(context))


Work = list[tuple[str, str, tuple[int, int]]]


def _windows(context: Any, layout: LakeLayout) -> tuple[Work, list[str]]:
    """(day, symbol, window) for each partition of the run with bars in its window, and
    "day|symbol: why not" for the partitions that have none (not evaluated)."""
    work, skipped = [], []
    for day, symbol in _pairs(context):
        window, _ = run_window(context, day)
        if window[1] <= window[0]:
            continue
        evaluated, note = qa.evaluation_window(layout, symbol, day, window)
        if evaluated is None:
            skipped.append(f"{day}|{symbol}: {note}")
        else:
            work.append((day, symbol, window))
    return work, skipped


def _record_others(context: Any, asset: str) -> None:
    """Materializations for the run's partitions Dagster would not record (job-page runs)."""
    note = f"written by run {context.run.run_id}; the run's totals are on its other result"
    keys = [f"{d}|{s}" for d, s in _pairs(context)]
    record_unreported(context, asset, keys, {"note": dg.MetadataValue.text(note)})


def _coverage_metadata(work: Work, skipped: list[str]) -> dict[str, Any]:
    return {
        "partitions": len(work),
        "not_evaluated": len(skipped),
        "not_evaluated_partitions": dg.MetadataValue.md(
            "\n".join(f"- {s}" for s in skipped) or "_none_"
        ),
    }


def _preview(table: pa.Table, columns: list[str]) -> str:
    rows = table.select(columns).slice(0, PREVIEW_ROWS).to_pylist()
    if not rows:
        return "_none_"
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(str(r[c]).replace("|", "\\|") for c in columns) + " |")
    return "\n".join(lines)


def _uri(layout: LakeLayout, kind: str, pairs: list[tuple[str, str, Any]]) -> dict[str, Any]:
    days = sorted({p[0] for p in pairs})
    if not days:
        return {}
    return {"dagster/uri": dg.MetadataValue.path(str(layout.qa_partition_dir(kind, days[-1])))}


@dg.asset(
    deps=["bars_1s", "binance_klines_1m"],
    partitions_def=market_partitions,
    backfill_policy=SINGLE_RUN,
    group_name=GROUP,
    kinds={"parquet", "duckdb"},
    metadata=table_metadata("qa_violations"),  # the table schema (lib/core/schema.py)
)
def qa_violations(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    """R1–R7 violations of bars_1s as rows (rule, severity critical/major/minor, second, how
    many seconds it covers, detail): one row per offending second, per gap of missing seconds,
    per R7 minute that differs from the official klines. Stored per day and symbol under
    qa/violations/."""
    layout, cfg = lake.layout, qa_config(lake)
    work, skipped = _windows(context, layout)
    tables = [qa.violations_step(layout, s, d, w, cfg) for d, s, w in work]
    tables = [t for t in tables if t is not None]
    rows = pa.concat_tables(tables) if tables else qa.SCHEMAS["violations"].empty_table()
    by_sev = Counter(rows["severity"].to_pylist())
    _record_others(context, "qa_violations")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": rows.num_rows,
            **{f"{s}_rows": by_sev.get(s, 0) for s in ("critical", "major", "minor")},
            **_coverage_metadata(work, skipped),
            "preview": dg.MetadataValue.md(
                _preview(rows, ["symbol", "rule", "severity", "ts", "detail"])
            ),
            **_uri(layout, "violations", work),
        }
    )


@dg.asset(
    deps=["bars_1s"],
    partitions_def=market_partitions,
    backfill_policy=SINGLE_RUN,
    group_name=GROUP,
    kinds={"parquet", "scikitlearn"},
    metadata=table_metadata("qa_anomalies"),  # the table schema (lib/core/schema.py)
)
def qa_anomalies(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    """Anomaly events from three detectors over bars_1s features (spread bps, log volume, VWAP
    drift bps, returns): IsolationForest, rolling z-score and a jump detector, with the
    parameters of the ``qa`` config section. One row per event (detector, start, end, flagged
    seconds, driving feature, score). Stored per day and symbol under qa/anomalies/."""
    layout, cfg = lake.layout, qa_config(lake)
    work, skipped = _windows(context, layout)
    tables = [qa.anomalies_step(layout, s, d, w, cfg) for d, s, w in work]
    tables = [t for t in tables if t is not None]
    rows = pa.concat_tables(tables) if tables else qa.SCHEMAS["anomalies"].empty_table()
    by_det = Counter(rows["detector"].to_pylist())
    top = rows.sort_by([("score", "descending")]) if rows.num_rows else rows
    _record_others(context, "qa_anomalies")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": rows.num_rows,
            **{f"{d}_events": by_det.get(d, 0) for d in ("iforest", "zscore", "jump")},
            "flagged_seconds": int(pc.sum(rows["seconds"]).as_py() or 0),
            **_coverage_metadata(work, skipped),
            "top_events": dg.MetadataValue.md(
                _preview(top, ["symbol", "detector", "start", "feature", "score", "value"])
            ),
            **_uri(layout, "anomalies", work),
        }
    )


@dg.asset(
    deps=["qa_violations", "qa_anomalies"],
    partitions_def=market_partitions,
    backfill_policy=SINGLE_RUN,
    group_name=GROUP,
    kinds={"parquet"},
    metadata=table_metadata("qa_verdicts"),  # the table schema (lib/core/schema.py)
)
def qa_verdicts(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    """PASS / REVIEW / FAIL per symbol and hour with bars, and for the day so far: score =
    0.7·schema_score + 0.2·detector_score + 0.1·ai_confidence (definitions in
    crypto_lake/lib/qa/fusion.py). PASS needs score ≥ 0.85 and no critical violation; a major
    violation or a score below 0.85 means REVIEW; a critical violation or a score below 0.65
    means FAIL. A FAIL fails the blocking check ``no_fail_verdict``. A symbol-day without
    bars gets no verdict: it is not evaluated (see ``not_evaluated_partitions``)."""
    layout, cfg = lake.layout, qa_config(lake)
    work, skipped = _windows(context, layout)
    tables = [qa.verdicts_step(layout, s, d, w[1], cfg) for d, s, w in work]
    tables = [t for t in tables if t is not None]
    rows = pa.concat_tables(tables) if tables else qa.SCHEMAS["verdicts"].empty_table()
    day = rows.filter(pc.equal(rows["scope"], "day"))
    counts = Counter(day["verdict"].to_pylist())
    cols = [
        "symbol",
        "window_start",
        "verdict",
        "score",
        "critical",
        "major",
        "anomalies",
        "reason",
    ]
    _record_others(context, "qa_verdicts")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": rows.num_rows,
            **{f"{v.lower()}_symbol_days": counts.get(v, 0) for v in ("PASS", "REVIEW", "FAIL")},
            "min_day_score": float(pc.min(day["score"]).as_py() or 0.0) if day.num_rows else 0.0,
            "day_verdicts": dg.MetadataValue.md(_preview(day.sort_by("symbol"), cols)),
            **_coverage_metadata(work, skipped),
            **_uri(layout, "verdicts", [(d, s, None) for d, s in _pairs(context)]),
        }
    )


NO_FAIL = dg.AssetCheckSpec(
    name="no_fail_verdict",
    asset="qa_verdicts",
    blocking=True,
    description="Fails for a symbol-day with a FAIL verdict (a critical rule break or a fusion "
    "score below 0.65); archiving waits for this check. One result per (date, symbol).",
    partitions_def=market_partitions,
)


@dg.multi_asset_check(name="qa_verdicts_no_fail", specs=[NO_FAIL], can_subset=False,
                      description="no_fail_verdict, one result per partition.")  # fmt: skip
def no_fail_verdict(
    context: dg.AssetCheckExecutionContext, lake: LakeResource
) -> Iterator[dg.AssetCheckEvaluation | dg.Output]:
    """Per partition, like R1–R7 (``crypto_lake.defs.market.checks``): one symbol's FAIL
    fails that partition's check only. A symbol-day with no verdict (no bars in its window)
    is skipped: a WARN failure that says so, never a pass."""
    asset = dg.AssetKey("qa_verdicts")
    for day, symbol in _pairs(context):
        key = f"{day}|{symbol}"
        v = qa.read_qa(lake.layout, "verdicts", day, [symbol])
        v = v.filter(pc.equal(v["scope"], "day")).to_pylist()
        if not v:
            passed, severity, description = False, dg.AssetCheckSeverity.WARN, (
                "Skipped: no verdict for this symbol-day (no bars in its window)")  # fmt: skip
            meta: dict[str, Any] = {"skipped": dg.MetadataValue.bool(True)}
        else:
            row = v[-1]
            passed, severity = row["verdict"] != "FAIL", dg.AssetCheckSeverity.ERROR
            description = f"verdict {row['verdict']} (score {row['score']:.3f}): {row['reason']}"
            meta = {"verdict": row["verdict"], "score": float(row["score"]),
                    "critical": int(row["critical"]), "major": int(row["major"]),
                    "skipped": dg.MetadataValue.bool(False)}  # fmt: skip
        yield dg.AssetCheckEvaluation(
            asset_key=asset, check_name=NO_FAIL.name, passed=passed, severity=severity,
            description=description, partition=key, blocking=False, metadata=meta,
            target_materialization_data=target_of(context.instance, key, asset),
        )  # fmt: skip
    yield from check_outputs([NO_FAIL])


@dg.asset(
    deps=["qa_violations", "qa_anomalies"],
    partitions_def=market_partitions,
    backfill_policy=SINGLE_RUN,
    group_name=GROUP,
    kinds={"markdown", "matplotlib"},
)
def qa_report(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    """The daily QA report (Markdown): verdict summary, top symbols by anomalies, violations by
    severity with the first offending rows per rule, detector statistics, and per symbol a chart
    of price with anomalies marked, spread and volume; configured symbols without bars are
    listed as not evaluated. Shown here as metadata and written to qa/reports/{date}.md; each
    run rebuilds the report of its days over all symbols checked."""
    layout, cfg = lake.layout, qa_config(lake)
    pairs = _pairs(context)
    days = sorted({d for d, _ in pairs})
    markdown, path = "", ""
    for day in days:
        markdown, path = build_day_report(
            layout, day, top_rows=cfg.report_top_rows, cfg=cfg, symbols=list(CONFIG.symbols)
        )
    _record_others(context, "qa_report")
    return dg.MaterializeResult(
        metadata={
            "report": dg.MetadataValue.md(markdown or "_no day in this run_"),
            "dagster/uri": dg.MetadataValue.path(path),
            "days": dg.MetadataValue.text(", ".join(days)),
            "symbols": len(CONFIG.symbols),
        }
    )
