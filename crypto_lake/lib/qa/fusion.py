"""Fusion of rule violations and detector anomalies into PASS / REVIEW / FAIL (SPEC §7).

For a window W of one symbol (an hour, or the whole run range) with ``N`` expected seconds:

``schema_score``  = 1 - min(1, (C + M + 0.5·m) / N), where C, M, m are the seconds covered by
                    critical, major and minor violation rows in W (a row's ``seconds``: 1 for
                    a bad bar, the gap length for missing seconds, 60 for an R7 minute).
                    The share of the window whose bars obey the rules; minor issues count half.
``detector_score`` = 1 - min(1, D / (detector_budget · N)), where D is the number of seconds in
                    W flagged by the rolling z-score or the jump detector. With the default
                    budget of 5 %, a window whose flagged share reaches 5 % scores 0.
``ai_confidence``  = 1 - I / N, where I is the number of seconds in W the IsolationForest scores
                    as outliers: the model's confidence that the window is normal. (The model
                    flags ``contamination`` of the fitted data by construction, so a clean day
                    scores 1 - contamination = 0.995; anomalies concentrated in a window lower it
                    there.)

``score = 0.7·schema_score + 0.2·detector_score + 0.1·ai_confidence`` (weights from config).

Verdict, first match wins: any critical violation -> FAIL; score < review_score (0.65) -> FAIL;
any major violation -> REVIEW; score < pass_score (0.85) -> REVIEW; otherwise PASS.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from crypto_lake.lib.core.schema import QA_VERDICTS
from crypto_lake.lib.qa.config import FusionConfig

VERDICTS = ("PASS", "REVIEW", "FAIL")
VERDICT_SCHEMA = QA_VERDICTS.arrow_schema()  # lib/core/schema.py


def verdict_for(score: float, critical: int, major: int, cfg: FusionConfig) -> tuple[str, str]:
    """The SPEC §7 verdict and a one-line reason."""
    if critical > 0:
        return "FAIL", f"{critical} critical violation(s)"
    if score < cfg.review_score:
        return "FAIL", f"score {score:.3f} < {cfg.review_score}"
    if major > 0:
        return "REVIEW", f"{major} major violation(s)"
    if score < cfg.pass_score:
        return "REVIEW", f"score {score:.3f} < {cfg.pass_score}"
    return "PASS", f"score {score:.3f}"


def fusion_score(schema: float, detector: float, ai: float, cfg: FusionConfig) -> float:
    return cfg.schema_weight * schema + cfg.detector_weight * detector + cfg.ai_weight * ai


def _epoch(col: pa.ChunkedArray) -> np.ndarray:
    return col.cast(pa.timestamp("s", tz="UTC")).cast(pa.int64()).to_numpy(zero_copy_only=False)


def _sum_in_windows(ts: np.ndarray, weights: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Sum of ``weights`` whose ``ts`` falls in each [edges[i], edges[i+1])."""
    bucket = np.searchsorted(edges, ts, side="right") - 1
    inside = (bucket >= 0) & (bucket < len(edges) - 1)
    return np.bincount(bucket[inside], weights=weights[inside], minlength=len(edges) - 1)


def _window_edges(start: int, end: int, size: int) -> np.ndarray:
    """Aligned window edges covering [start, end): partial first/last windows are clipped."""
    first = start // size * size
    inner = np.arange(first + size, end, size, dtype=np.int64)
    return np.concatenate([[start], inner, [end]]).astype(np.int64)


def fuse(
    symbol: str,
    bar_ts: np.ndarray,
    violations: pa.Table,
    anomalies: pa.Table,
    window: tuple[int, int],
    cfg: FusionConfig,
) -> pa.Table:
    """Verdict rows for each ``cfg.window_seconds`` window of ``window`` plus one for all of it.

    ``bar_ts``: epoch seconds of the bars present; ``violations``/``anomalies``: the rows of
    this symbol (VIOLATION_SCHEMA / ANOMALY_SCHEMA); ``window`` = (start, end) epoch seconds.
    """
    start, end = window
    hour_edges = _window_edges(start, end, cfg.window_seconds)
    day_edges = np.array([start, end], dtype=np.int64)
    tables = []
    for scope, edges in (("hour", hour_edges), ("day", day_edges)):
        tables.append(_fuse_windows(symbol, scope, edges, bar_ts, violations, anomalies, cfg))
    return pa.concat_tables(tables)


def _fuse_windows(
    symbol: str,
    scope: str,
    edges: np.ndarray,
    bar_ts: np.ndarray,
    violations: pa.Table,
    anomalies: pa.Table,
    cfg: FusionConfig,
) -> pa.Table:
    n_win = len(edges) - 1
    expected = np.diff(edges).astype(np.float64)
    rows = _sum_in_windows(bar_ts, np.ones(len(bar_ts)), edges)

    v_ts, v_sec = _epoch(violations["ts"]), violations["seconds"].to_numpy().astype(np.float64)
    sev = violations["severity"].to_numpy(zero_copy_only=False)
    counts, covered = {}, {}
    for s in ("critical", "major", "minor"):
        mask = sev == s
        counts[s] = _sum_in_windows(v_ts[mask], np.ones(mask.sum()), edges)
        covered[s] = _sum_in_windows(v_ts[mask], v_sec[mask], edges)

    a_ts = _epoch(anomalies["start"])
    a_sec = anomalies["seconds"].to_numpy().astype(np.float64)
    det = anomalies["detector"].to_numpy(zero_copy_only=False)
    is_if = det == "iforest"
    flagged_rules = _sum_in_windows(a_ts[~is_if], a_sec[~is_if], edges)
    flagged_if = _sum_in_windows(a_ts[is_if], a_sec[is_if], edges)
    n_anom = _sum_in_windows(a_ts, np.ones(len(a_ts)), edges)

    bad = covered["critical"] + covered["major"] + 0.5 * covered["minor"]
    schema = 1.0 - np.minimum(1.0, bad / expected)
    detector = 1.0 - np.minimum(1.0, flagged_rules / (cfg.detector_budget * expected))
    ai = 1.0 - np.minimum(1.0, flagged_if / expected)
    score = np.round(fusion_score(schema, detector, ai, cfg), 6)
    decided = [
        verdict_for(float(score[i]), int(counts["critical"][i]), int(counts["major"][i]), cfg)
        for i in range(n_win)
    ]
    ts_type = pa.timestamp("s", tz="UTC")
    return pa.table(
        {
            "symbol": pa.array([symbol] * n_win, pa.string()),
            "scope": pa.array([scope] * n_win, pa.string()),
            "window_start": pa.array(edges[:-1]).cast(ts_type),
            "window_end": pa.array(edges[1:]).cast(ts_type),
            "rows": pa.array(rows.astype(np.int64)),
            "schema_score": pa.array(np.round(schema, 6)),
            "detector_score": pa.array(np.round(detector, 6)),
            "ai_confidence": pa.array(np.round(ai, 6)),
            "score": pa.array(score),
            "critical": pa.array(counts["critical"].astype(np.int64)),
            "major": pa.array(counts["major"].astype(np.int64)),
            "minor": pa.array(counts["minor"].astype(np.int64)),
            "anomalies": pa.array(n_anom.astype(np.int64)),
            "verdict": pa.array([d[0] for d in decided], pa.string()),
            "reason": pa.array([d[1] for d in decided], pa.string()),
        },
        schema=VERDICT_SCHEMA,
    )
