"""The QA pipeline for one symbol and time window, and its files in the lake.

``run_qa_files`` is what the QA assets run for each (day, symbol) partition: the R1–R7 rows
of lib.qa.rules over the day's bars_1s (the very files the asset checks read), detector events
over the watched seconds of the window plus enough history for their trailing windows, then
fusion. Results are stored per day and symbol as
``qa/{violations,anomalies,verdicts}/date=D/{SYMBOL}.parquet``.

QA evaluates what the market assets built, nothing else: a run's window is cut to the seconds
the partition's bars_1s covers (``evaluation_window``), and a partition without bars in the
window, or with nothing recorded (every second an outage), is not evaluated at all: no rows,
no verdict, no file written; the report lists it as not evaluated. So a run made before the
bars exist leaves no "missing data" findings behind. ``merge_window`` replaces every stored
row of the window a run asked for with what it found, so the hourly run (last 90 minutes),
the daily run and the re-run after a bars refresh (``qa_after_bars_refresh``) converge on the
same files and never keep stale rows.
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

from crypto_lake.lib.core.fsutil import atomic_path
from crypto_lake.lib.core.logs import get_logger
from crypto_lake.lib.core.paths import LakeLayout
from crypto_lake.lib.core.schema import QA_ANOMALIES, QA_VERDICTS, QA_VIOLATIONS, check_schema
from crypto_lake.lib.core.symbols import validate_day, validate_symbol
from crypto_lake.lib.qa import detectors as det
from crypto_lake.lib.qa.config import QAConfig
from crypto_lake.lib.qa.fusion import VERDICT_SCHEMA, fuse
from crypto_lake.lib.qa.violations import find_violations

log = get_logger("qa.pipeline")
NO_BARS = "not evaluated (no bars yet)"
NO_BARS_IN_WINDOW = "not evaluated (no bars in the window yet)"
NOT_RECORDED = "not evaluated (nothing recorded: every second is an outage)"
# The QA datasets by kind (their definitions: lib/core/schema.py).
DATASETS = {"violations": QA_VIOLATIONS, "anomalies": QA_ANOMALIES, "verdicts": QA_VERDICTS}
SCHEMAS = {kind: d.arrow_schema() for kind, d in DATASETS.items()}
# The column that places each QA row in time (what merge_window filters on).
TIME_COLUMN = {"violations": "ts", "anomalies": "start", "verdicts": "window_start"}
# A total order per dataset, so merged files are identical whatever the run history.
SORT_KEYS = {kind: list(d.sort_keys) for kind, d in DATASETS.items()}


@dataclass
class QAResult:
    """Everything one QA run produced for one symbol."""

    symbol: str
    window: tuple[int, int]  # epoch seconds, end exclusive
    violations: pa.Table
    anomalies: pa.Table
    verdicts: pa.Table
    timings: dict[str, float] = field(default_factory=dict)
    note: str = ""  # why nothing was evaluated (NO_BARS, NOT_RECORDED, ...); "" = evaluated

    @property
    def evaluated(self) -> bool:
        return not self.note

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


def partition_glob(layout: LakeLayout, dataset: str, symbol: str, day: str) -> str | None:
    """The Parquet glob of one market partition, or None when it has no file."""
    directory = layout.market_partition_dir(dataset, symbol, day)
    return str(directory / "*.parquet") if _parquet_files(directory) else None


def bars_coverage(layout: LakeLayout, symbol: str, day: str) -> tuple[int, int] | None:
    """[first second, last second + 1) of the day's stored bars_1s, or None without bars."""
    covered, _ = partition_state(layout, symbol, day)
    return covered


def partition_state(
    layout: LakeLayout, symbol: str, day: str
) -> tuple[tuple[int, int] | None, str]:
    """(the seconds the day's bars_1s cover, "") or (None, NO_BARS / NOT_RECORDED): a
    partition whose every second is an outage has nothing to judge, as in lib.qa.rules."""
    files = _parquet_files(layout.market_partition_dir("bars_1s", symbol, day))
    tables = []
    for f in files:
        names = pq.read_schema(f).names
        tables.append(pq.read_table(f, columns=[c for c in _STATE_COLUMNS if c in names]))
    bars = pa.concat_tables(tables, promote_options="permissive") if tables else None
    if bars is None or not bars.num_rows:
        return None, NO_BARS
    ts = det.epoch_seconds(bars["window_start"])
    lo, hi = day_window(day)
    covered = (max(lo, int(ts.min())), min(hi, int(ts.max()) + 1))
    if covered[1] <= covered[0]:
        return None, NO_BARS
    if not det.watched(bars).num_rows:
        return None, NOT_RECORDED
    return covered, ""


_STATE_COLUMNS = ("window_start", "is_outage")


def evaluation_window(
    layout: LakeLayout, symbol: str, day: str, window: tuple[int, int]
) -> tuple[tuple[int, int] | None, str]:
    """(the part of ``window`` inside ``day`` that the stored bars cover, "") or (None, why
    not): QA judges the seconds the market assets built, never the ones they have not built
    yet (those are not missing data, and the partition's R5 check says whether any are)."""
    window = clip_to_day(day, window)
    covered, note = partition_state(layout, symbol, day)
    if covered is None:
        return None, note
    lo, hi = max(window[0], covered[0]), min(window[1], covered[1])
    if hi <= lo:
        return None, NO_BARS_IN_WINDOW
    return (lo, hi), ""


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
    merged = merged.sort_by(DATASETS[kind].sort_order())
    check_schema(DATASETS[kind].name, merged.schema)
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


def violations_step(
    layout: LakeLayout, symbol: str, day: str, window: tuple[int, int], cfg: QAConfig
) -> pa.Table | None:
    """R1–R7 rows of the window -> the day's file; the window's rows, or None when the window
    has no bars (nothing evaluated, nothing written)."""
    evaluated, _ = evaluation_window(layout, symbol, day, window)
    if evaluated is None:
        return None
    rows = find_violations(
        symbol,
        partition_glob(layout, "bars_1s", symbol, day),
        klines_1m=partition_glob(layout, "klines_1m", symbol, day),
        trades=partition_glob(layout, "trades", symbol, day),
        window=evaluated,
    )
    merge_window(layout, "violations", day, symbol, rows, clip_to_day(day, window))
    return rows


def anomalies_step(
    layout: LakeLayout, symbol: str, day: str, window: tuple[int, int], cfg: QAConfig
) -> pa.Table | None:
    """Detector events of the window (with trailing history, across midnight) -> the day's
    file; the window's rows, or None when the window has no bars."""
    evaluated, _ = evaluation_window(layout, symbol, day, window)
    if evaluated is None:
        return None
    history = max(cfg.zscore.window_seconds, cfg.jump.sigma_window_seconds)
    bars = load_bars(layout, symbol, (evaluated[0] - history, evaluated[1]))
    rows, _ = detect_anomalies(symbol, det.bar_features(bars), cfg, evaluated)
    merge_window(layout, "anomalies", day, symbol, rows, clip_to_day(day, window))
    return rows


def day_verdicts(layout: LakeLayout, symbol: str, day: str, until: int, cfg: QAConfig) -> pa.Table:
    """Fusion verdicts of the stored bars up to ``until``, from the stored violations and
    anomalies; no rows for a day without bars (no hour past the bars gets a verdict either)."""
    covered = bars_coverage(layout, symbol, day)
    if covered is None or min(until, covered[1]) <= covered[0]:
        return VERDICT_SCHEMA.empty_table()
    span = (covered[0], min(until, covered[1]))
    bar_ts = day_bar_seconds(layout, symbol, day)
    bar_ts = bar_ts[(bar_ts >= span[0]) & (bar_ts < span[1])]
    violations = read_qa(layout, "violations", day, [symbol])
    anomalies = read_qa(layout, "anomalies", day, [symbol])
    return fuse(symbol, bar_ts, violations, anomalies, span, cfg.fusion)


def verdicts_step(
    layout: LakeLayout, symbol: str, day: str, until: int, cfg: QAConfig
) -> pa.Table | None:
    """Recompute and store the day's verdicts (hours so far + the day); None without bars."""
    verdicts = day_verdicts(layout, symbol, day, until, cfg)
    if not verdicts.num_rows:
        return None
    check_schema(QA_VERDICTS.name, verdicts.schema)
    with atomic_path(qa_file(layout, "verdicts", day, symbol)) as tmp:
        pq.write_table(verdicts, tmp, compression="zstd")
    return verdicts


def run_qa_files(
    layout: LakeLayout, symbol: str, day: str, window: tuple[int, int], cfg: QAConfig
) -> QAResult:
    """All three QA steps for one symbol over ``window`` (inside ``day``), from and to the lake.

    Each step replaces only its window's rows in the day's files, and verdicts are recomputed
    from everything stored for the day so far, so an hourly run also refreshes the day verdict
    and hourly + daily runs converge on the same files. Without bars in the window nothing is
    evaluated or written, and the result's ``note`` says why.
    """
    evaluated, note = evaluation_window(layout, symbol, day, window)
    if evaluated is None:
        empty = [SCHEMAS[k].empty_table() for k in ("violations", "anomalies", "verdicts")]
        return QAResult(symbol, clip_to_day(day, window), *empty, note=note)
    t0 = time.perf_counter()
    violations = violations_step(layout, symbol, day, window, cfg)
    t1 = time.perf_counter()
    anomalies = anomalies_step(layout, symbol, day, window, cfg)
    t2 = time.perf_counter()
    verdicts = verdicts_step(layout, symbol, day, evaluated[1], cfg)
    t3 = time.perf_counter()
    timings = {"violations": t1 - t0, "anomalies": t2 - t1, "verdicts": t3 - t2, "total": t3 - t0}
    return QAResult(symbol, evaluated, violations, anomalies, verdicts, timings)
