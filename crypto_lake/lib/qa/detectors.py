"""Anomaly detectors over bars_1s features (SPEC §7): IsolationForest, rolling z-score, jumps.

Detectors see only the seconds the recorder watched: bars_1s rows inside a recorder outage
(or before the collector ran: ``is_outage``) are dropped before any feature is computed, so
they are neither fitted nor scored. Their bars carry the last close and the last quote
forward, and on a sparse day those thousands of identical rows would define "normal" and
make every recorded second an outlier. A watched second without trades stays: its quote is
observed first-hand. (Filtering on ``is_live`` instead would drop it too, since bars_1s sets
``is_live`` only on seconds with live trades.)

Features, one value per watched second:

* ``spread_bps``      quoted spread in basis points of mid;
* ``log_volume``      ln(1 + quote volume), only for seconds with live trades (``is_live``; NaN
                      otherwise, so the many empty seconds of a quiet symbol, and trades
                      repaired from REST, do not define "normal");
* ``vwap_drift_bps``  (vwap - mid) / mid in bps, only for seconds with live trades: trades
                      printing away from the quoted book (stale or wrong quotes);
* ``ret_bps``         log return of the close over the previous second, in bps; NaN when the
                      previous second was not watched, so no return spans an outage.

Every detector returns per-second flags and a per-second score; ``events`` clusters flagged
seconds that lie within a cooldown of each other into one anomaly row. All arithmetic is
vectorised (cumulative sums over trailing time windows) and deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crypto_lake.lib.core.schema import QA_ANOMALIES
from crypto_lake.lib.qa.config import IsolationForestConfig, JumpConfig, ZScoreConfig

FEATURES = ("spread_bps", "log_volume", "vwap_drift_bps", "ret_bps")
DETECTORS = ("iforest", "zscore", "jump")
ANOMALY_SCHEMA = QA_ANOMALIES.arrow_schema()  # lib/core/schema.py


@dataclass(frozen=True)
class BarFeatures:
    """Per-second features of one symbol, sorted by time."""

    ts: np.ndarray  # int64 epoch seconds
    trade_count: np.ndarray  # int64
    values: dict[str, np.ndarray]  # FEATURES -> float64

    def __len__(self) -> int:
        return len(self.ts)


@dataclass(frozen=True)
class Flags:
    """One detector's verdict per second."""

    flag: np.ndarray  # bool
    score: np.ndarray  # float64, higher = more anomalous
    feature: np.ndarray  # int8 index into FEATURES of the driving feature


def epoch_seconds(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Timestamps of any unit (or integers already in seconds) as int64 epoch seconds."""
    typ = column.type
    if pa.types.is_timestamp(typ):
        per_second = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[typ.unit]
        raw = column.cast(pa.timestamp(typ.unit)).cast(pa.int64()).to_numpy(zero_copy_only=False)
        return np.floor_divide(raw, per_second)
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.int64)


def _float(table: pa.Table, name: str) -> np.ndarray:
    if name not in table.column_names:
        return np.full(table.num_rows, np.nan)
    col = pc.cast(table[name], pa.float64())
    return col.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)


def _flag(table: pa.Table, name: str, default: np.ndarray) -> np.ndarray:
    if name not in table.column_names:
        return default
    return table[name].fill_null(False).to_numpy(zero_copy_only=False).astype(bool)


def watched(bars: pa.Table) -> pa.Table:
    """The rows of seconds the recorder watched (not ``is_outage``); bars without the flag
    (synthetic days) are watched throughout."""
    if "is_outage" not in bars.column_names or not bars.num_rows:
        return bars
    return bars.filter(pc.invert(pc.fill_null(bars["is_outage"], False)))


def bar_features(bars: pa.Table) -> BarFeatures:
    """Compute the detector features of one symbol's watched seconds (any order; sorted)."""
    bars = watched(bars)
    if bars.num_rows and "window_start" in bars.column_names:
        bars = bars.take(pc.sort_indices(bars, [("window_start", "ascending")]))
    ts = epoch_seconds(bars["window_start"]) if bars.num_rows else np.zeros(0, np.int64)
    count = np.nan_to_num(_float(bars, "trade_count")).astype(np.int64)
    close, vwap = _float(bars, "close"), _float(bars, "vwap")
    bid, ask = _float(bars, "bid"), _float(bars, "ask")
    mid = _float(bars, "mid") if "mid" in bars.column_names else (bid + ask) / 2
    spread = _float(bars, "spread_bps")
    traded = _flag(bars, "is_live", count > 0) & (count > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        if "spread_bps" not in bars.column_names:
            spread = (ask - bid) / mid * 1e4
        good = np.isfinite(close) & (close > 0)
        prev = np.concatenate([[np.nan], close[:-1]])
        adjacent = np.concatenate([[False], np.diff(ts) == 1])
        prev_good = np.concatenate([[False], good[:-1]]) & adjacent
        ret = np.where(good & prev_good, np.log(close / prev) * 1e4, np.nan)
        drift = np.where(traded & (mid > 0), (vwap - mid) / mid * 1e4, np.nan)
        volume = _float(bars, "volume_quote")
        log_volume = np.where(traded & (volume >= 0), np.log1p(volume), np.nan)
    values = {
        "spread_bps": spread,
        "log_volume": log_volume,
        "vwap_drift_bps": drift,
        "ret_bps": ret,
    }
    return BarFeatures(ts=ts, trade_count=count, values=values)


def trailing_mean_std(
    ts: np.ndarray, x: np.ndarray, window: int, min_periods: int
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of the finite values in the trailing ``window`` seconds *before* each row.

    Excluding the row itself keeps an outlier from inflating its own yardstick. Values are
    centred on their median first so the cumulative sums do not lose precision.
    """
    valid = np.isfinite(x)
    center = float(np.median(x[valid])) if valid.any() else 0.0
    v = np.where(valid, x - center, 0.0)
    cs = np.concatenate([[0.0], np.cumsum(v)])
    cs2 = np.concatenate([[0.0], np.cumsum(v * v)])
    cn = np.concatenate([[0], np.cumsum(valid)])
    idx = np.arange(len(x))
    lo = np.searchsorted(ts, ts - window, side="left")
    n = (cn[idx] - cn[lo]).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = (cs[idx] - cs[lo]) / n
        var = np.maximum((cs2[idx] - cs2[lo]) / n - mean * mean, 0.0)
    enough = n >= min_periods
    return np.where(enough, mean + center, np.nan), np.where(enough, np.sqrt(var), np.nan)


def _zscores(
    ts: np.ndarray, x: np.ndarray, window: int, min_periods: int, upper_only: bool = False
) -> np.ndarray:
    mean, std = trailing_mean_std(ts, x, window, min_periods)
    # A window of identical values has no spread: nothing can be measured against it.
    tiny = 1e-12 * (1.0 + np.abs(np.nan_to_num(mean)))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (x - mean) / std
    z = np.maximum(z, 0.0) if upper_only else np.abs(z)
    return np.where(std > tiny, z, np.nan)


def zscore_flags(f: BarFeatures, cfg: ZScoreConfig) -> Flags:
    """|x - trailing mean| / trailing std > k on any feature (high side only for some)."""
    z = np.column_stack(
        [
            _zscores(
                f.ts, f.values[name], cfg.window_seconds, cfg.min_periods, name in cfg.upper_only
            )
            for name in FEATURES
        ]
    )
    z = np.nan_to_num(z, nan=0.0)
    best = np.argmax(z, axis=1).astype(np.int8)
    score = z[np.arange(len(f)), best]
    return Flags(flag=score > cfg.k, score=score, feature=best)


def _trailing_max(x: np.ndarray, lookback: int) -> np.ndarray:
    """max(x[t - lookback .. t]) by rows; NaN anywhere in the window gives NaN."""
    if len(x) == 0:
        return x.copy()
    padded = np.concatenate([np.full(lookback, np.nan), x])
    windows = np.lib.stride_tricks.sliding_window_view(padded, lookback + 1)
    out = windows.max(axis=1)
    # The first rows have no history: judge them on what exists.
    head = min(lookback, len(x))
    for i in range(head):
        out[i] = x[: i + 1].max()
    return out


def jump_flags(f: BarFeatures, cfg: JumpConfig) -> Flags:
    """Returns beyond ``k_sigma`` robust sigmas, in a busy second, with a stable tight spread.

    Sigma is the trailing std of returns winsorised at 5 first-pass sigmas, so one jump does
    not hide the next for a whole window; the spread must have stayed below
    ``spread_stable_bps`` over the lookback (a wide or jumping book makes prices unreliable).
    """
    ret = f.values["ret_bps"]
    w = cfg.sigma_window_seconds
    _, sigma0 = trailing_mean_std(f.ts, ret, w, min_periods=60)
    clipped = np.where(np.isfinite(sigma0), np.clip(ret, -5 * sigma0, 5 * sigma0), ret)
    _, sigma = trailing_mean_std(f.ts, clipped, w, min_periods=60)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.abs(ret) / sigma
    z = np.where(np.isfinite(z) & (sigma > 0), z, 0.0)
    spread_max = _trailing_max(f.values["spread_bps"], cfg.spread_lookback_seconds)
    stable = np.isfinite(spread_max) & (spread_max >= 0) & (spread_max < cfg.spread_stable_bps)
    busy = f.trade_count >= cfg.min_trade_count
    flag = (z > cfg.k_sigma) & stable & busy
    feature = np.full(len(f), FEATURES.index("ret_bps"), dtype=np.int8)
    return Flags(flag=flag, score=z, feature=feature)


def iforest_flags(f: BarFeatures, cfg: IsolationForestConfig) -> Flags:
    """IsolationForest over the four features; the ``contamination`` share scores as outliers.

    The model is fitted with sklearn's "auto" offset and the threshold is then the
    ``contamination`` quantile of the scores, which is what sklearn does internally but
    scores the data once instead of twice (half the cost on a full day).
    """
    n = len(f)
    none = Flags(np.zeros(n, bool), np.zeros(n), np.zeros(n, np.int8))
    if n < cfg.min_rows:
        return none
    from sklearn.ensemble import IsolationForest  # heavy import, only when a model runs

    cols = []
    for name in FEATURES:
        x = f.values[name]
        finite = np.isfinite(x)
        fill = float(np.median(x[finite])) if name == "spread_bps" and finite.any() else 0.0
        cols.append(np.where(finite, x, fill))
    features = np.column_stack(cols)
    model = IsolationForest(
        n_estimators=cfg.n_estimators,
        max_samples=min(cfg.max_samples, n),
        contamination="auto",
        random_state=cfg.random_state,
    )
    sample = features
    if n > cfg.fit_rows:
        rows = np.random.default_rng(cfg.random_state).choice(n, cfg.fit_rows, replace=False)
        sample = features[np.sort(rows)]
    model.fit(sample)
    score = -model.score_samples(features)  # in (0, 1]; higher = more anomalous
    threshold = np.quantile(score, 1.0 - cfg.contamination)
    # The feature furthest from its median (in robust units) names what made it odd.
    med = np.median(features, axis=0)
    mad = np.median(np.abs(features - med), axis=0) + 1e-12
    feature = np.argmax(np.abs(features - med) / mad, axis=1).astype(np.int8)
    return Flags(flag=score > threshold, score=score, feature=feature)


def events(symbol: str, detector: str, f: BarFeatures, flags: Flags, gap_seconds: int) -> pa.Table:
    """Cluster flagged seconds less than ``gap_seconds`` apart into anomaly rows."""
    idx = np.flatnonzero(flags.flag)
    if not len(idx):
        return ANOMALY_SCHEMA.empty_table()
    t = f.ts[idx]
    new = np.concatenate([[True], np.diff(t) > gap_seconds])
    starts = np.flatnonzero(new)
    cluster = np.cumsum(new) - 1
    score = flags.score[idx]
    peak_score = np.maximum.reduceat(score, starts)
    # First second of each cluster that reaches the cluster's peak score.
    is_peak = score >= peak_score[cluster]
    peak_pos = idx[np.flatnonzero(is_peak)[np.unique(cluster[is_peak], return_index=True)[1]]]
    feat = flags.feature[peak_pos]
    value = np.array([f.values[FEATURES[k]][p] for k, p in zip(feat, peak_pos, strict=True)])
    ends = t[np.concatenate([starts[1:] - 1, [len(t) - 1]])]
    return pa.table(
        {
            "symbol": pa.array([symbol] * len(starts), pa.string()),
            "detector": pa.array([detector] * len(starts), pa.string()),
            "start": pa.array(t[starts], pa.int64()).cast(pa.timestamp("s", tz="UTC")),
            "end": pa.array(ends, pa.int64()).cast(pa.timestamp("s", tz="UTC")),
            "seconds": pa.array(np.bincount(cluster), pa.int32()),
            "feature": pa.array([FEATURES[k] for k in feat], pa.string()),
            "score": pa.array(peak_score, pa.float64()),
            "value": pa.array(value, pa.float64()),
        },
        schema=ANOMALY_SCHEMA,
    )
