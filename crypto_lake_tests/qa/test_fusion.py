"""Fusion: the documented scores and the SPEC §7 verdict thresholds."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from crypto_lake.lib.qa.config import FusionConfig
from crypto_lake.lib.qa.detectors import ANOMALY_SCHEMA
from crypto_lake.lib.qa.fusion import fuse, fusion_score, verdict_for
from crypto_lake.lib.qa.violations import VIOLATION_SCHEMA

CFG = FusionConfig()
T0 = 1_795_132_800  # 2026-11-20 00:00 UTC


@pytest.mark.parametrize(
    ("score", "critical", "major", "expected"),
    [
        (1.0, 0, 0, "PASS"),
        (0.85, 0, 0, "PASS"),
        (0.8499, 0, 0, "REVIEW"),
        (0.65, 0, 0, "REVIEW"),
        (0.6499, 0, 0, "FAIL"),
        (1.0, 0, 1, "REVIEW"),
        (0.5, 0, 1, "FAIL"),
        (1.0, 1, 0, "FAIL"),
        (0.99, 1, 5, "FAIL"),
    ],
)
def test_verdict_thresholds(score, critical, major, expected):
    assert verdict_for(score, critical, major, CFG)[0] == expected


def test_weights_are_the_spec_weights_and_must_sum_to_one():
    assert fusion_score(1.0, 0.0, 0.0, CFG) == pytest.approx(0.7)
    assert fusion_score(0.0, 1.0, 0.0, CFG) == pytest.approx(0.2)
    assert fusion_score(0.0, 0.0, 1.0, CFG) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="sum to 1"):
        FusionConfig(schema_weight=0.8)


def _violations(rows: list[tuple[str, str, int, int]]) -> pa.Table:
    return pa.table(
        {
            "symbol": ["X"] * len(rows),
            "rule": [r[0] for r in rows],
            "severity": [r[1] for r in rows],
            "ts": pa.array([r[2] for r in rows], pa.int64()).cast(pa.timestamp("s", tz="UTC")),
            "seconds": pa.array([r[3] for r in rows], pa.int32()),
            "detail": [""] * len(rows),
        },
        schema=VIOLATION_SCHEMA,
    )


def _anomalies(rows: list[tuple[str, int, int]]) -> pa.Table:
    ts = pa.array([r[1] for r in rows], pa.int64()).cast(pa.timestamp("s", tz="UTC"))
    return pa.table(
        {
            "symbol": ["X"] * len(rows),
            "detector": [r[0] for r in rows],
            "start": ts,
            "end": ts,
            "seconds": pa.array([r[2] for r in rows], pa.int32()),
            "feature": ["ret_bps"] * len(rows),
            "score": [9.0] * len(rows),
            "value": [1.0] * len(rows),
        },
        schema=ANOMALY_SCHEMA,
    )


def test_scores_follow_their_definitions_per_window():
    window = (T0, T0 + 2 * 3600)
    bar_ts = np.arange(*window)
    violations = _violations(
        [("R5", "major", T0 + 10, 360), ("R6", "minor", T0 + 20, 1), ("R6", "minor", T0 + 21, 1)]
    )
    anomalies = _anomalies(
        [("zscore", T0 + 100, 90), ("jump", T0 + 200, 1), ("iforest", T0 + 300, 36)]
    )
    out = fuse("X", bar_ts, violations, anomalies, window, CFG).to_pylist()
    first, second, day = out
    assert [r["scope"] for r in out] == ["hour", "hour", "day"]
    assert first["schema_score"] == pytest.approx(1 - (360 + 0.5 * 2) / 3600)
    assert first["detector_score"] == pytest.approx(1 - 91 / (0.05 * 3600))
    assert first["ai_confidence"] == pytest.approx(1 - 36 / 3600)
    expected = (
        0.7 * first["schema_score"] + 0.2 * first["detector_score"] + 0.1 * first["ai_confidence"]
    )
    assert first["score"] == pytest.approx(expected, abs=1e-6)
    assert (first["verdict"], first["major"], first["minor"], first["anomalies"]) == (
        "REVIEW",
        1,
        2,
        3,
    )
    assert (second["verdict"], second["score"], second["rows"]) == ("PASS", 1.0, 3600)
    assert day["verdict"] == "REVIEW" and day["rows"] == 7200


def test_a_critical_row_fails_its_hour_and_the_day_but_not_other_hours():
    window = (T0, T0 + 3 * 3600)
    v = _violations([("R2", "critical", T0 + 3600 + 5, 1)])
    out = fuse("X", np.arange(*window), v, _anomalies([]), window, CFG)
    assert out["verdict"].to_pylist() == ["PASS", "FAIL", "PASS", "FAIL"]


def test_heavy_detector_load_alone_moves_a_window_to_review():
    window = (T0, T0 + 3600)
    anomalies = _anomalies([("zscore", T0 + 10, 400), ("iforest", T0 + 900, 400)])
    hour = fuse("X", np.arange(*window), _violations([]), anomalies, window, CFG).to_pylist()[0]
    assert hour["detector_score"] == 0.0
    assert hour["verdict"] == "REVIEW"  # 0.7 + 0 + 0.1 * (1 - 400/3600) = 0.789


def test_windows_are_clipped_to_a_partial_range():
    window = (T0 + 1800, T0 + 7000)
    out = fuse("X", np.arange(*window), _violations([]), _anomalies([]), window, CFG)
    starts = out["window_start"].cast(pa.int64()).to_pylist()
    ends = out["window_end"].cast(pa.int64()).to_pylist()
    assert list(zip(starts, ends, strict=True)) == [
        (T0 + 1800, T0 + 3600),
        (T0 + 3600, T0 + 7000),
        (T0 + 1800, T0 + 7000),
    ]
