"""The lake layout (SPEC §2): every path the system writes is built here from validated parts."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from urllib.parse import quote

from crypto_lake.lib.core.symbols import validate_day, validate_symbol, validate_ticker

EXCHANGE = "binance"
MARKET_DATASETS = ("trades", "quotes", "bars_1s", "bars_1m", "klines_1m", "klines_1s",
                   "coverage", "book_1s", "coverage_book")  # fmt: skip
QA_DATASETS = ("violations", "anomalies", "verdicts")
# What the archive keeps per symbol-day (SPEC §9): the raw lines compacted into one zstd file,
# and a copy of each table's partition file; each file has a .meta.json sidecar.
PART_FILE = "part-0.parquet"  # one file per market partition; a rebuild replaces it
RAW_ARCHIVE = "raw"
ARCHIVE_TABLES = ("trades", "quotes", "bars_1s", "bars_1m", "coverage")
ARCHIVE_DATASETS = (RAW_ARCHIVE, *ARCHIVE_TABLES)

# Binance's public daily/monthly files (data.binance.vision, SPEC §8a), kept as downloaded
# under history/ in Binance's own folder layout.
PUBLIC_FILE_KINDS = ("trades", "aggTrades", "klines")
PUBLIC_KLINE_INTERVALS = ("1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h",
                          "12h", "1d")  # fmt: skip
_MONTH_RE = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")

# part-000042.jsonl, part-000042.jsonl.gz, part-000042.jsonl.zst, part-000042.jsonl.open
_PART_RE = re.compile(r"^part-(\d{6,})\.jsonl(\.gz|\.zst)?(\.open)?$")
COMPRESSION_SUFFIX = {"none": "", "gzip": ".gz", "zstd": ".zst"}


@dataclass(frozen=True)
class PartName:
    """A parsed raw part file name."""

    number: int
    compression: str  # none | gzip | zstd
    is_open: bool


def parse_part_name(name: str) -> PartName | None:
    """Parse a raw part file name; ``None`` for anything that is not one."""
    m = _PART_RE.fullmatch(name)
    if not m:
        return None
    suffix = m.group(2) or ""
    compression = {v: k for k, v in COMPRESSION_SUFFIX.items()}[suffix]
    return PartName(int(m.group(1)), compression, bool(m.group(3)))


def part_file_name(number: int, *, compression: str = "none", is_open: bool = False) -> str:
    """``part-000042.jsonl`` (sealed) or ``part-000042.jsonl.open`` (being written)."""
    if number < 0:
        raise ValueError(f"part number must be >= 0, got {number}")
    if is_open:
        return f"part-{number:06d}.jsonl.open"
    return f"part-{number:06d}.jsonl{COMPRESSION_SUFFIX[compression]}"


def public_period(period: str | date) -> tuple[str, str]:
    """("daily", "YYYY-MM-DD") for a day, ("monthly", "YYYY-MM") for a month: which of
    Binance's public files covers ``period``."""
    if isinstance(period, str) and _MONTH_RE.fullmatch(period):
        return "monthly", period
    return "daily", validate_day(period)


def public_file_key(kind: str, symbol: str, period: str | date, interval: str | None = None
                    ) -> str:  # fmt: skip
    """Binance's path of a public zip below ``{base}/data/``, e.g.
    ``spot/daily/trades/BTCUSDT/BTCUSDT-trades-2025-03-01.zip`` or
    ``spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2024-12.zip``."""
    if kind not in PUBLIC_FILE_KINDS:
        raise ValueError(f"unknown public file kind {kind!r}; known: {PUBLIC_FILE_KINDS}")
    if (interval is not None) != (kind == "klines"):
        raise ValueError(f"an interval is required for klines and only for them (got {kind!r}, "
                         f"interval {interval!r})")  # fmt: skip
    if interval is not None and interval not in PUBLIC_KLINE_INTERVALS:
        raise ValueError(f"unknown kline interval {interval!r}; known: {PUBLIC_KLINE_INTERVALS}")
    frequency, period = public_period(period)
    symbol = validate_symbol(symbol)
    folder = f"spot/{frequency}/{kind}/{symbol}" + (f"/{interval}" if interval else "")
    return f"{folder}/{symbol}-{interval or kind}-{period}.zip"


@dataclass(frozen=True)
class LakeLayout:
    """All paths under one lake root."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    # raw capture -----------------------------------------------------------------------------
    @property
    def raw_root(self) -> Path:
        return self.root / "raw" / EXCHANGE

    def raw_symbol_dir(self, symbol: str) -> Path:
        return self.raw_root / validate_symbol(symbol)

    def raw_day_dir(self, symbol: str, day: str | date) -> Path:
        return self.raw_symbol_dir(symbol) / validate_day(day)

    @property
    def quarantine_root(self) -> Path:
        return self.root / "raw" / "_quarantine"

    # tables ----------------------------------------------------------------------------------
    def dataset_root(self, dataset: str) -> Path:
        if dataset not in MARKET_DATASETS:
            raise ValueError(f"unknown market dataset {dataset!r}; known: {MARKET_DATASETS}")
        return self.root / dataset

    def market_partition_dir(self, dataset: str, symbol: str, day: str | date) -> Path:
        return (
            self.dataset_root(dataset)
            / f"exchange={EXCHANGE}"
            / f"symbol={validate_symbol(symbol)}"
            / f"date={validate_day(day)}"
        )

    def market_file(self, dataset: str, symbol: str, day: str | date) -> Path:
        """The one Parquet file of a market partition."""
        return self.market_partition_dir(dataset, symbol, day) / PART_FILE

    def macro_partition_dir(self, ticker: str, day: str | date) -> Path:
        # '=' and '^' are percent-encoded (ticker=ES%3DF): DuckDB's hive reader rejects a raw
        # '=' inside a value, and both DuckDB and pyarrow decode %XX back to ES=F.
        return (
            self.root
            / "macro_1m"
            / f"ticker={quote(validate_ticker(ticker), safe='')}"
            / f"date={validate_day(day)}"
        )

    def dxy_partition_dir(self, day: str | date) -> Path:
        return self.root / "dxy_synthetic_1m" / f"date={validate_day(day)}"

    def qa_partition_dir(self, kind: str, day: str | date) -> Path:
        if kind not in QA_DATASETS:
            raise ValueError(f"unknown QA dataset {kind!r}; known: {QA_DATASETS}")
        return self.root / "qa" / kind / f"date={validate_day(day)}"

    def qa_report_path(self, day: str | date) -> Path:
        return self.root / "qa" / "reports" / f"{validate_day(day)}.md"

    # archive ---------------------------------------------------------------------------------
    @property
    def archive_root(self) -> Path:
        return self.root / "archive"

    def archive_file(self, dataset: str, symbol: str, day: str | date) -> Path:
        """``archive/{dataset}/symbol={SYMBOL}/{DAY}.parquet``; the raw lines' compacted file is
        ``archive/raw/symbol={SYMBOL}/{DAY}.jsonl.zst``."""
        if dataset not in ARCHIVE_DATASETS:
            raise ValueError(f"unknown archive dataset {dataset!r}; known: {ARCHIVE_DATASETS}")
        suffix = ".jsonl.zst" if dataset == RAW_ARCHIVE else ".parquet"
        folder = self.archive_root / dataset / f"symbol={validate_symbol(symbol)}"
        return folder / f"{validate_day(day)}{suffix}"

    def archive_sidecar(self, dataset: str, symbol: str, day: str | date) -> Path:
        """The ``{DAY}.meta.json`` beside an archive file."""
        return self.archive_file(dataset, symbol, day).with_name(f"{validate_day(day)}.meta.json")

    # history ---------------------------------------------------------------------------------
    def public_file(self, kind: str, symbol: str, period: str | date,
                    interval: str | None = None) -> Path:  # fmt: skip
        """Where a verified public zip of Binance is kept (its ``.CHECKSUM`` beside it):
        ``history/binance/`` + Binance's path below ``data/`` (``public_file_key``), e.g.
        ``history/binance/spot/daily/trades/BTCUSDT/BTCUSDT-trades-2025-03-01.zip``."""
        return self.root / "history" / EXCHANGE / public_file_key(kind, symbol, period, interval)

    # state -----------------------------------------------------------------------------------
    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    def tick_seconds_path(self, symbol: str, day: str | date) -> Path:
        """Where the ticks step leaves a day's per-second summary for the bars step (a cache:
        the bars step recomputes it from the tick tables when it is missing or stale)."""
        name = f"{validate_day(day)}.parquet"
        return self.state_dir / "seconds" / f"symbol={validate_symbol(symbol)}" / name

    def outages_path(self, symbol: str, day: str | date) -> Path:
        """A partition's unrecorded intervals (JSON), saved by the ticks step for the bars and
        coverage steps; outside the table folders, so hive readers see only Parquet."""
        return self.state_dir / "outages" / f"symbol={validate_symbol(symbol)}" / (
            f"{validate_day(day)}.json")  # fmt: skip

    def book_checks_path(self, symbol: str, day: str | date) -> Path:
        """What the book_1s step found while rebuilding a partition's order book (JSON: the
        checks' inputs, gaps, snapshots), read by its asset checks."""
        return self.state_dir / "book" / f"symbol={validate_symbol(symbol)}" / (
            f"{validate_day(day)}.json")  # fmt: skip

    @property
    def heartbeat_path(self) -> Path:
        return self.state_dir / "heartbeat.json"

    @property
    def collector_lock_path(self) -> Path:
        return self.state_dir / "collector.lock"

    @property
    def gaps_path(self) -> Path:
        return self.state_dir / "gaps.json"

    @property
    def duckdb_path(self) -> Path:
        return self.state_dir / "lake.duckdb"
