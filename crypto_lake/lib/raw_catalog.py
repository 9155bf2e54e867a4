"""An incrementally updated catalog of sealed raw part files.

The raw lake grows by ~13 files a minute and is never rewritten, so a catalog that re-lists
everything on each sensor tick would get slower every day. This one remembers, per symbol
and per day folder, what it has already seen:

* a symbol folder is re-listed only when its mtime changed (a new day folder appeared);
* a day folder is re-listed only when its mtime changed (a file was sealed or removed);
* only files never seen before are opened, once, to record their line count and their
  exchange-time / receive-time ranges.

State lives under ``state/raw_catalog/``: ``dirs.json`` (folder mtimes) and one Parquet
file per folder day (``files/day=YYYY-MM-DD.parquet``), each rewritten atomically, so a
refresh rewrites at most the folders that received files since the last refresh.

The time ranges make :meth:`RawCatalog.files_for` complete: a trade belongs to the UTC day
of its exchange time, but files are filed by receive time, so a day's last trades sit in
the next day's first files and REST repairs can deliver old trades days later.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from crypto_lake.lib.fsutil import atomic_path, atomic_write_bytes
from crypto_lake.lib.logs import get_logger
from crypto_lake.lib.paths import LakeLayout, parse_part_name
from crypto_lake.lib.symbols import InvalidNameError, validate_day, validate_symbol

log = get_logger("raw_catalog")

US_PER_DAY = 86_400_000_000
_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("symbol", pa.string()),
        ("file_day", pa.string()),
        ("part", pa.int64()),
        ("bytes", pa.int64()),
        ("lines", pa.int64()),
        ("bad_lines", pa.int64()),
        ("min_event_us", pa.int64()),
        ("max_event_us", pa.int64()),
        ("min_recv_ns", pa.int64()),
        ("max_recv_ns", pa.int64()),
    ]
)


@dataclass(frozen=True)
class RawFileInfo:
    """One sealed raw part file and what it holds."""

    path: str
    symbol: str
    file_day: str
    part: int
    bytes: int
    lines: int
    bad_lines: int
    min_event_us: int | None  # exchange trade time (µs since epoch); None if no trades
    max_event_us: int | None
    min_recv_ns: int | None  # local receive time; None if the file holds no valid line
    max_recv_ns: int | None


def day_bounds_us(day: str | date) -> tuple[int, int]:
    """[start, end) of a UTC day in µs since the epoch."""
    d = date.fromisoformat(validate_day(day))
    start = datetime(d.year, d.month, d.day, tzinfo=UTC)
    start_us = int(start.timestamp()) * 1_000_000
    return start_us, start_us + US_PER_DAY


# The columns DuckDB reads from a raw line, and their types.
RAW_COLUMNS = {"recv_ns": "BIGINT", "conn": "VARCHAR", "unit": "VARCHAR", "stream": "VARCHAR",
               "rest": "VARCHAR", "session": "VARCHAR", "data": "JSON"}  # fmt: skip


def ndjson_source(param: str = "paths", filename: bool = True) -> str:
    """A read_ndjson call with explicit columns over the bound list parameter ``$param``.

    ``data`` stays JSON text: its keys differ only by case (b/B, a/A, t/T), which DuckDB
    struct fields cannot represent. Malformed lines come back as all-NULL rows.
    """
    fn = "true" if filename else "false"
    columns = "{" + ", ".join(f"{k}: '{t}'" for k, t in RAW_COLUMNS.items()) + "}"
    return f"read_ndjson(${param}, columns={columns}, ignore_errors=true, filename={fn})"


def scan_raw_files(paths: list[Path], con: duckdb.DuckDBPyConnection | None = None) -> dict:
    """Per file: lines, bad lines, exchange-time and receive-time ranges (one DuckDB scan)."""
    if not paths:
        return {}
    con = con or duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    # Trade time: @trade/@aggTrade use T, REST historicalTrades uses time; unit ms or µs.
    sql = f"""
        SELECT filename,
               count(*) AS lines,
               count(*) FILTER (WHERE recv_ns IS NULL
                                OR (session IS NULL AND (stream IS NULL
                                    OR NOT starts_with(data::VARCHAR, '{{')))) AS bad_lines,
               min(ev) AS min_event_us, max(ev) AS max_event_us,
               min(recv_ns) AS min_recv_ns, max(recv_ns) AS max_recv_ns
        FROM (
            SELECT filename, recv_ns, session, stream, data,
                   -- only trade payloads are parsed (quotes have no exchange time)
                   CASE WHEN session IS NULL AND (stream LIKE '%@trade' OR stream LIKE '%@aggTrade')
                        THEN TRY_CAST(list_max(json_extract_string(data, ['$.T', '$.time']))
                                      AS BIGINT)
                             * CASE WHEN coalesce(unit, 'ms') = 'us' THEN 1 ELSE 1000 END
                   END AS ev
            FROM {ndjson_source()}
        )
        GROUP BY filename
    """
    rows = con.execute(sql, {"paths": [str(p) for p in paths]}).fetchall()
    out = {}
    for fn, lines, bad, mn_ev, mx_ev, mn_rc, mx_rc in rows:
        out[str(Path(fn))] = (lines, bad, mn_ev, mx_ev, mn_rc, mx_rc)
    return out


class RawCatalog:
    """Catalog of sealed raw files under ``layout.raw_root``, persisted in ``state/raw_catalog``."""

    def __init__(self, layout: LakeLayout) -> None:
        self.layout = layout
        self.state_dir = layout.state_dir / "raw_catalog"
        self._dirs_path = self.state_dir / "dirs.json"
        self._dirs: dict = self._load_dirs()

    # persistence ------------------------------------------------------------------------------
    def _load_dirs(self) -> dict:
        try:
            return json.loads(self._dirs_path.read_text())
        except (OSError, ValueError):
            return {"symbols": {}, "days": {}}

    def _day_file(self, day: str) -> Path:
        return self.state_dir / "files" / f"day={validate_day(day)}.parquet"

    def _read_day(self, day: str) -> list[RawFileInfo]:
        path = self._day_file(day)
        if not path.exists():
            return []
        return [RawFileInfo(**row) for row in pq.read_table(path).to_pylist()]

    def _write_day(self, day: str, infos: list[RawFileInfo]) -> None:
        infos = sorted(infos, key=lambda i: (i.symbol, i.part, i.path))
        table = pa.Table.from_pylist([asdict(i) for i in infos], schema=_SCHEMA)
        with atomic_path(self._day_file(day), durable=False) as tmp:
            pq.write_table(table, tmp, compression="zstd")

    # scanning ---------------------------------------------------------------------------------
    def _changed_day_dirs(self, full: bool) -> list[tuple[str, str, Path, int]]:
        """(symbol, day, dir, mtime_ns) of day folders whose content may have changed."""
        raw_root = self.layout.raw_root
        if not raw_root.is_dir():
            return []
        changed = []
        for sym_entry in sorted(os.scandir(raw_root), key=lambda e: e.name):
            try:
                symbol = validate_symbol(sym_entry.name)
            except InvalidNameError:
                continue  # not a symbol folder (e.g. _quarantine lives elsewhere)
            if not sym_entry.is_dir():
                continue
            known = self._dirs["symbols"].setdefault(symbol, {"mtime_ns": -1, "days": []})
            mtime = sym_entry.stat().st_mtime_ns
            if full or mtime != known["mtime_ns"]:
                days = []
                for e in os.scandir(sym_entry.path):
                    try:
                        days.append(validate_day(e.name))
                    except InvalidNameError:
                        continue
                known["days"], known["mtime_ns"] = sorted(days), mtime
            # Old day folders receive no new files (late data is filed under the day it is
            # received), so only the newest two and never-seen folders are stat'ed.
            candidates = known["days"] if full else known["days"][-2:]
            for day in known["days"]:
                key = f"{symbol}/{day}"
                if key not in self._dirs["days"] and day not in candidates:
                    candidates = [*candidates, day]
            for day in candidates:
                d = Path(sym_entry.path) / day
                try:
                    dm = d.stat().st_mtime_ns
                except FileNotFoundError:
                    continue
                key = f"{symbol}/{day}"
                if full or self._dirs["days"].get(key) != dm:
                    changed.append((symbol, day, d, dm))
        return changed

    def refresh(self, *, full: bool = False) -> list[RawFileInfo]:
        """Scan for newly sealed files, record them and return them (oldest part first)."""
        changed = self._changed_day_dirs(full)
        by_day: dict[str, list[RawFileInfo]] = {}
        new_files: list[tuple[str, str, Path, int, int]] = []
        for symbol, day, d, _ in changed:
            if day not in by_day:
                by_day[day] = self._read_day(day)
            seen = {i.path for i in by_day[day]}
            for e in os.scandir(d):
                pn = parse_part_name(e.name)
                if pn is None or pn.is_open or e.path in seen:
                    continue
                new_files.append((symbol, day, Path(e.path), pn.number, e.stat().st_size))
        new_infos: list[RawFileInfo] = []
        if new_files:
            scanned = scan_raw_files([f[2] for f in new_files])
            for symbol, day, path, part, size in new_files:
                stats = scanned.get(str(path), (0, 0, None, None, None, None))
                info = RawFileInfo(str(path), symbol, day, part, size, *stats)
                by_day[day].append(info)
                new_infos.append(info)
            for day in {f[1] for f in new_files}:
                self._write_day(day, by_day[day])
        for symbol, day, _, dm in changed:
            self._dirs["days"][f"{symbol}/{day}"] = dm
        if changed:
            atomic_write_bytes(
                self._dirs_path, json.dumps(self._dirs, sort_keys=True).encode(), durable=False
            )
        new_infos.sort(key=lambda i: (i.file_day, i.symbol, i.part))
        if new_infos:
            log.info("raw catalog: %d new sealed files", len(new_infos))
        return new_infos

    # queries ----------------------------------------------------------------------------------
    def files(self, symbol: str | None = None, day: str | None = None) -> list[RawFileInfo]:
        """Catalogued files, optionally of one symbol and/or one folder day."""
        days = [validate_day(day)] if day else self.days()
        out = []
        for d in days:
            out.extend(i for i in self._read_day(d) if symbol is None or i.symbol == symbol)
        return out

    def days(self) -> list[str]:
        """Folder days that have catalogued files, ascending."""
        folder = self.state_dir / "files"
        if not folder.is_dir():
            return []
        return sorted(p.name[4:14] for p in folder.glob("day=*.parquet"))

    def files_for(self, symbol: str, day: str | date) -> list[Path]:
        """Every sealed file of ``symbol`` that can hold data of UTC ``day``.

        Files of the day's own folder, plus files of any other folder whose exchange-time or
        receive-time range overlaps the day (the next day's first files, late repairs, and
        the previous folder when the local clock ran behind the exchange's at midnight).
        """
        symbol, day = validate_symbol(symbol), validate_day(day)
        start_us, end_us = day_bounds_us(day)
        prev_day = (date.fromisoformat(day) - timedelta(days=1)).isoformat()
        out = []
        for d in (x for x in self.days() if x >= prev_day):
            for i in self._read_day(d):
                if i.symbol != symbol:
                    continue
                if d == day or _overlaps(i, start_us, end_us):
                    out.append(Path(i.path))
        return sorted(out, key=lambda p: (p.parent.name, p.name))


def _overlaps(i: RawFileInfo, start_us: int, end_us: int) -> bool:
    if i.min_event_us is not None and i.min_event_us < end_us and i.max_event_us >= start_us:
        return True
    if i.min_recv_ns is None:
        return False
    return i.min_recv_ns // 1000 < end_us and i.max_recv_ns // 1000 >= start_us
