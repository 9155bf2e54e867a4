"""The QA pipeline for one symbol and time window, and its files in the lake.

``run_symbol_qa`` is what every QA asset runs: features and detectors over the window plus
enough history for their trailing windows, R1–R7 rows over the window, then fusion. Results
are stored per day and symbol as ``qa/{violations,anomalies,verdicts}/date=D/{SYMBOL}.parquet``;
``merge_window`` replaces exactly the rows of the window it recomputed, so the hourly run
(last 90 minutes) and the daily run (whole day) can both write the same day's file and a
re-run never duplicates.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from crypto_lake.lib.fsutil import atomic_path
from crypto_lake.lib.logs import get_logger
from crypto_lake.lib.paths import LakeLayout
from crypto_lake.lib.qa import detectors as det
from crypto_lake.lib.qa.config import QAConfig
from crypto_lake.lib.qa.fusion import VERDICT_SCHEMA, fuse
from crypto_lake.lib.qa.violations import VIOLATION_SCHEMA, find_violations
from crypto_lake.lib.symbols import validate_day, validate_symbol

log = get_logger("qa.pipeline")
SCHEMAS = {
    "violations": VIOLATION_SCHEMA,
    "anomalies": det.ANOMALY_SCHEMA,
    "verdicts": VERDICT_SCHEMA,
}
# The column that places each QA row in time (what merge_window filters on).
TIME_COLUMN = {"violations": "ts", "anomalies": "start", "verdicts": "window_start"}
# A total order per dataset, so merged files are identical whatever the run history.
SORT_KEYS = {
    "violations": ["ts", "rule", "detail"],
    "anomalies": ["start", "detector", "end"],
    "verdicts": ["scope", "window_start", "window_end"],
}


@dataclass
class QAResult:
    """Everything one QA run produced for one symbol."""

    symbol: str
    window: tuple[int, int]  # epoch seconds, end exclusive
    violations: pa.Table
    anomalies: pa.Table
    verdicts: pa.Table
    timings: dict[str, float] = field(default_factory=dict)

    def table(self, kind: str) -> pa.Table:
        return {
            "violations": self.violations,
            "anomalies": self.anomalies,
            "verdicts": self.verdicts,
        }[kind]


def day_window(day: str) -> tuple[int, int]:
    """[00:00, 24:00) of a UTC day in epoch seconds."""
    d = date.fromisoformat(validate_day(day))
    start = int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp())
    return start, start + 86_400


def _in_window(table: pa.Table, column: str, window: tuple[int, int]) -> pa.Table:
    ts = table[column].cast(pa.timestamp("s", tz="UTC")).cast(pa.int64())
    keep = pc.and_(pc.greater_equal(ts, window[0]), pc.less(ts, window[1]))
    return table.filter(keep)


def _bars_in(bars: pa.Table, window: tuple[int, int]) -> pa.Table:
    ts = det.epoch_seconds(bars["window_start"])
    return bars.filter(pa.array((ts >= window[0]) & (ts < window[1])))


def detect_anomalies(
    symbol: str, features: det.BarFeatures, cfg: QAConfig, window: tuple[int, int]
) -> tuple[pa.Table, dict[str, float]]:
    """Run the three detectors; keep the events that start inside ``window``."""
    timings: dict[str, float] = {}
    gap = cfg.jump.cooldown_seconds
    tables = []
    runs = (
        ("iforest", lambda: det.iforest_flags(features, cfg.iforest)),
        ("zscore", lambda: det.zscore_flags(features, cfg.zscore)),
        ("jump", lambda: det.jump_flags(features, cfg.jump)),
    )
    for name, run in runs:
        t0 = time.perf_counter()
        flags = run()
        tables.append(det.events(symbol, name, features, flags, gap))
        timings[name] = time.perf_counter() - t0
    events = pa.concat_tables(tables)
    events = _in_window(events, "start", window)
    events = events.sort_by([(k, "ascending") for k in SORT_KEYS["anomalies"]])
    return events, timings


def run_symbol_qa(
    symbol: str,
    bars: pa.Table,
    window: tuple[int, int],
    cfg: QAConfig,
    *,
    klines: pa.Table | None = None,
) -> QAResult:
    """QA of one symbol over ``window``; ``bars`` may start earlier (detector history)."""
    validate_symbol(symbol)
    t0 = time.perf_counter()
    features = det.bar_features(bars)
    anomalies, timings = detect_anomalies(symbol, features, cfg, window)
    t1 = time.perf_counter()
    in_window = _bars_in(bars, window) if bars.num_rows else bars
    violations = find_violations(symbol, in_window, window=window, klines=klines)
    t2 = time.perf_counter()
    bar_ts = features.ts[(features.ts >= window[0]) & (features.ts < window[1])]
    verdicts = fuse(symbol, bar_ts, violations, anomalies, window, cfg.fusion)
    timings.update(
        {
            "features_detectors": t1 - t0,
            "violations": t2 - t1,
            "fusion": time.perf_counter() - t2,
            "total": time.perf_counter() - t0,
        }
    )
    log.debug("qa %s %s: %s", symbol, window, timings)
    return QAResult(symbol, window, violations, anomalies, verdicts, timings)


# ---------------------------------------------------------------------------------- lake files
def _parquet_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob("*.parquet") if not p.name.startswith("."))


def load_bars(layout: LakeLayout, symbol: str, window: tuple[int, int]) -> pa.Table:
    """bars_1s rows of ``symbol`` with window_start in ``window``, across day partitions."""
    first = datetime.fromtimestamp(window[0], tz=UTC).date()
    last = datetime.fromtimestamp(max(window[0], window[1] - 1), tz=UTC).date()
    tables = []
    day = first
    while day <= last:
        for path in _parquet_files(layout.market_partition_dir("bars_1s", symbol, day)):
            tables.append(pq.read_table(path))
        day += timedelta(days=1)
    if not tables:
        return pa.table({"window_start": pa.array([], pa.timestamp("us", tz="UTC"))})
    bars = pa.concat_tables(tables, promote_options="permissive")
    bars = _bars_in(bars, window)
    return bars.take(pc.sort_indices(bars, [("window_start", "ascending")]))


def load_klines(layout: LakeLayout, symbol: str, day: str) -> pa.Table | None:
    """The day's official 1-minute klines if the market assets stored them (R7 input)."""
    files = _parquet_files(layout.market_partition_dir("klines_1m", symbol, day))
    if not files:
        return None
    return pa.concat_tables([pq.read_table(f) for f in files], promote_options="permissive")


def qa_file(layout: LakeLayout, kind: str, day: str, symbol: str) -> Path:
    return layout.qa_partition_dir(kind, day) / f"{validate_symbol(symbol)}.parquet"


def read_qa(layout: LakeLayout, kind: str, day: str, symbols: list[str] | None = None) -> pa.Table:
    """All stored rows of one QA dataset for a day (optionally only some symbols)."""
    files = _parquet_files(layout.qa_partition_dir(kind, day))
    if symbols is not None:
        wanted = {f"{validate_symbol(s)}.parquet" for s in symbols}
        files = [f for f in files if f.name in wanted]
    if not files:
        return SCHEMAS[kind].empty_table()
    return pa.concat_tables([pq.read_table(f, schema=SCHEMAS[kind]) for f in files])


def merge_window(
    layout: LakeLayout, kind: str, day: str, symbol: str, rows: pa.Table, window: tuple[int, int]
) -> pa.Table:
    """Replace the stored rows of ``window`` with ``rows`` (atomic); returns the day's rows."""
    path = qa_file(layout, kind, day, symbol)
    column = TIME_COLUMN[kind]
    schema = SCHEMAS[kind]
    kept = schema.empty_table()
    if path.exists():
        old = pq.read_table(path, schema=schema)
        ts = old[column].cast(pa.int64())
        inside = pc.and_(pc.greater_equal(ts, window[0]), pc.less(ts, window[1]))
        # Verdicts of scope "day" describe the whole range that produced them: replace all.
        if kind == "verdicts":
            inside = pc.or_(inside, pc.equal(old["scope"], "day"))
        kept = old.filter(pc.invert(inside))
    merged = pa.concat_tables([kept, rows.cast(schema)])
    merged = merged.sort_by(
        [(k, "descending" if k == "scope" else "ascending") for k in SORT_KEYS[kind]]
    )
    with atomic_path(path) as tmp:
        pq.write_table(merged, tmp, compression="zstd")
    return merged


def day_bar_seconds(layout: LakeLayout, symbol: str, day: str) -> np.ndarray:
    """Epoch seconds of the bars stored for a day (fusion's row counts)."""
    bars = load_bars(layout, symbol, day_window(day))
    return det.epoch_seconds(bars["window_start"]) if bars.num_rows else np.zeros(0, np.int64)


def clip_to_day(day: str, window: tuple[int, int]) -> tuple[int, int]:
    day_lo, day_hi = day_window(day)
    clipped = (max(window[0], day_lo), min(window[1], day_hi))
    if clipped[1] <= clipped[0]:
        raise ValueError(f"window {window} does not overlap {day}")
    return clipped


def clip_to_data(
    layout: LakeLayout, symbol: str, day: str, window: tuple[int, int]
) -> tuple[int, int]:
    """End an intraday window at the newest stored bar, so the seconds the market assets have
    not built yet are not reported as missing (R5) on every hourly run."""
    bars = load_bars(layout, symbol, window)
    if not bars.num_rows:
        return window
    last = int(det.epoch_seconds(bars["window_start"]).max()) + 1
    return (window[0], max(window[0] + 1, min(window[1], last)))


def violations_step(
    layout: LakeLayout, symbol: str, day: str, window: tuple[int, int], cfg: QAConfig
) -> tuple[pa.Table, pa.Table]:
    """R1–R7 rows of the window -> the day's file. Returns (window rows, day rows)."""
    window = clip_to_day(day, window)
    bars = load_bars(layout, symbol, window)
    rows = find_violations(symbol, bars, window=window, klines=load_klines(layout, symbol, day))
    return rows, merge_window(layout, "violations", day, symbol, rows, window)


def anomalies_step(
    layout: LakeLayout, symbol: str, day: str, window: tuple[int, int], cfg: QAConfig
) -> tuple[pa.Table, pa.Table]:
    """Detector events of the window (with trailing history, across midnight) -> the day's
    file. Returns (window rows, day rows)."""
    window = clip_to_day(day, window)
    history = max(cfg.zscore.window_seconds, cfg.jump.sigma_window_seconds)
    bars = load_bars(layout, symbol, (window[0] - history, window[1]))
    rows, _ = detect_anomalies(symbol, det.bar_features(bars), cfg, window)
    return rows, merge_window(layout, "anomalies", day, symbol, rows, window)


def day_verdicts(layout: LakeLayout, symbol: str, day: str, until: int, cfg: QAConfig) -> pa.Table:
    """Fusion verdicts of [day start, ``until``) from the stored violations and anomalies."""
    covered = clip_to_day(day, (day_window(day)[0], until))
    bar_ts = day_bar_seconds(layout, symbol, day)
    bar_ts = bar_ts[(bar_ts >= covered[0]) & (bar_ts < covered[1])]
    violations = read_qa(layout, "violations", day, [symbol])
    anomalies = read_qa(layout, "anomalies", day, [symbol])
    return fuse(symbol, bar_ts, violations, anomalies, covered, cfg.fusion)


def verdicts_step(layout: LakeLayout, symbol: str, day: str, until: int, cfg: QAConfig) -> pa.Table:
    """Recompute and store the day's verdicts (hours so far + the day)."""
    verdicts = day_verdicts(layout, symbol, day, until, cfg)
    with atomic_path(qa_file(layout, "verdicts", day, symbol)) as tmp:
        pq.write_table(verdicts, tmp, compression="zstd")
    return verdicts


def run_qa_files(
    layout: LakeLayout, symbol: str, day: str, window: tuple[int, int], cfg: QAConfig
) -> QAResult:
    """All three QA steps for one symbol over ``window`` (inside ``day``), from and to the lake.

    Each step replaces only its window's rows in the day's files, and verdicts are recomputed
    from everything stored for the day so far, so an hourly run also refreshes the day verdict
    and hourly + daily runs converge on the same files.
    """
    t0 = time.perf_counter()
    violations, _ = violations_step(layout, symbol, day, window, cfg)
    t1 = time.perf_counter()
    anomalies, _ = anomalies_step(layout, symbol, day, window, cfg)
    t2 = time.perf_counter()
    verdicts = verdicts_step(layout, symbol, day, clip_to_day(day, window)[1], cfg)
    t3 = time.perf_counter()
    timings = {"violations": t1 - t0, "anomalies": t2 - t1, "verdicts": t3 - t2, "total": t3 - t0}
    return QAResult(symbol, clip_to_day(day, window), violations, anomalies, verdicts, timings)
