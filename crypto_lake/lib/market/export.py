"""Slice export: bars or klines of some symbols over a time range, to one Parquet or CSV file.

    python -m crypto_lake.lib.market.export --lake ./lake --symbols BTCUSDT,ETHUSDT \\
        --start 2024-03-01 --end 2024-03-03T12:00 --interval 1m --kind bars --format csv \\
        --out slice.csv

``start`` is inclusive and ``end`` exclusive (ISO dates or datetimes, UTC unless an offset is
given). Partitions are read one at a time and streamed into the output, so memory stays
bounded for long ranges; a progress bar counts partitions. The output is written under a
temporary name and renamed when complete.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from crypto_lake.lib.core.duck import connect
from crypto_lake.lib.core.fsutil import atomic_path
from crypto_lake.lib.core.logs import get_logger, setup_logging
from crypto_lake.lib.core.paths import LakeLayout
from crypto_lake.lib.core.symbols import validate_symbol

log = get_logger("export")

DATASETS = {
    ("bars", "1s"): ("bars_1s", "window_start"),
    ("bars", "1m"): ("bars_1m", "window_start"),
    ("klines", "1m"): ("klines_1m", "open_time"),
}


def parse_time(value: str) -> datetime:
    """ISO date or datetime -> aware UTC datetime (naive values are UTC)."""
    dt = datetime.fromisoformat(value)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def _days(start: datetime, end: datetime) -> list[str]:
    d, last = start.date(), (end - timedelta(microseconds=1)).date()
    out = []
    while d <= last:
        out.append(d.isoformat())
        d += timedelta(days=1)
    return out


def _partitions(layout, dataset, symbols, start, end) -> list[tuple[str, str, list[Path]]]:
    out = []
    for symbol in symbols:
        for day in _days(start, end):
            files = sorted(layout.market_partition_dir(dataset, symbol, day).glob("*.parquet"))
            if files:
                out.append((symbol, day, files))
    return out


class _Sink:
    """Streams Arrow batches into one Parquet or CSV file."""

    def __init__(self, path: Path, fmt: str) -> None:
        self.path, self.fmt, self.writer = path, fmt, None

    def write(self, table: pa.Table) -> None:
        if self.writer is None:
            if self.fmt == "parquet":
                self.writer = pq.ParquetWriter(self.path, table.schema, compression="zstd")
            else:
                self.writer = pacsv.CSVWriter(self.path, table.schema)
        self.writer.write_table(table)

    def close(self, schema: pa.Schema | None) -> None:
        if self.writer is None and schema is not None:  # no rows: still a valid, empty file
            self.write(schema.empty_table())
        if self.writer is not None:
            self.writer.close()


def export_slice(
    layout: LakeLayout,
    symbols: list[str],
    start: datetime,
    end: datetime,
    *,
    interval: str = "1m",
    kind: str = "bars",
    fmt: str = "parquet",
    out: Path,
    progress: bool = True,
) -> int:
    """Export rows with start <= time < end; returns the number of rows written."""
    if (kind, interval) not in DATASETS:
        raise ValueError(f"no {kind} at {interval}; available: {sorted(DATASETS)}")
    if fmt not in ("parquet", "csv"):
        raise ValueError(f"format must be parquet or csv, not {fmt!r}")
    if end <= start:
        raise ValueError("end must be after start")
    symbols = [validate_symbol(s) for s in symbols]
    dataset, time_col = DATASETS[(kind, interval)]
    parts = _partitions(layout, dataset, symbols, start, end)
    con = connect()
    rows, schema = 0, None
    from tqdm import tqdm  # imported here: only the CLI path needs it

    with atomic_path(Path(out), durable=False) as tmp:
        sink = _Sink(tmp, fmt)
        bar = tqdm(parts, desc=f"export {dataset}", unit="partition", disable=not progress)
        for _symbol, _day, files in bar:
            table = con.sql(
                f"SELECT * FROM read_parquet($files) WHERE {time_col} >= $start "
                f"AND {time_col} < $end ORDER BY {time_col}",
                params={"files": [str(f) for f in files], "start": start, "end": end},
            ).to_arrow_table()
            schema = schema or table.schema
            if table.num_rows:
                sink.write(table.cast(schema))
                rows += table.num_rows
        sink.close(schema)
        if schema is None:
            raise FileNotFoundError(f"no {dataset} partitions for {symbols} in [{start}, {end})")
    log.info("exported %d rows of %s to %s", rows, dataset, out)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Export a slice of bars or klines")
    parser.add_argument("--lake", required=True, help="lake root directory")
    parser.add_argument("--symbols", required=True, help="comma-separated, e.g. BTCUSDT,ETHUSDT")
    parser.add_argument("--start", required=True, help="inclusive, ISO date or datetime (UTC)")
    parser.add_argument("--end", required=True, help="exclusive, ISO date or datetime (UTC)")
    parser.add_argument("--interval", choices=["1s", "1m"], default="1m")
    parser.add_argument("--kind", choices=["bars", "klines"], default="bars")
    parser.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    parser.add_argument("--out", required=True)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        rows = export_slice(
            LakeLayout(Path(args.lake)),
            [s.strip() for s in args.symbols.split(",") if s.strip()],
            parse_time(args.start),
            parse_time(args.end),
            interval=args.interval,
            kind=args.kind,
            fmt=args.format,
            out=Path(args.out),
            progress=not args.no_progress,
        )
    except (ValueError, FileNotFoundError, duckdb.Error) as exc:
        print(f"export failed: {exc}", file=sys.stderr)
        return 2
    print(f"{rows} rows written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
