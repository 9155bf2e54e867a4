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
``files_for`` first records what is on disk in the day's folder and its two neighbours, so
a run never depends on whether the raw sensor has looked yet; files recorded that way are
still returned once by the next :meth:`RawCatalog.refresh` (the sensor announces them).
Both write under a file lock (``state/raw_catalog/lock``): the sensor and partition runs
record files concurrently.

A file DuckDB cannot read whole (a line longer than its maximum object size, a damaged
compressed stream) is read line by line instead: its unusable lines are counted as bad and
quarantined to ``raw/_quarantine/{SYMBOL}/{DAY}/part-NNNNNN.catalog.jsonl``; other files and
symbols are not held up.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from crypto_lake.lib.core.duck import connect
from crypto_lake.lib.core.fsutil import FILE_MODE, atomic_path, atomic_write_bytes, make_dirs
from crypto_lake.lib.core.logs import get_logger
from crypto_lake.lib.core.paths import LakeLayout, parse_part_name
from crypto_lake.lib.core.symbols import InvalidNameError, validate_day, validate_symbol
from crypto_lake.lib.raw import binance
from crypto_lake.lib.raw.lines import open_raw

log = get_logger("raw_catalog")

US_PER_DAY = 86_400_000_000
# DuckDB's default maximum_object_size. Its JSON reader fails a whole scan on a longer line
# (in practice from twice this, depending on its buffers), so every reader here sets such a
# line aside as bad, at this one deterministic limit.
MAX_LINE_BYTES = 16 * 1024 * 1024
_NO_LINES = (0, 0, None, None, None, None)
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


def scan_raw_files(
    paths: list[Path],
    con: duckdb.DuckDBPyConnection | None = None,
    rejected: dict[str, list[bytes]] | None = None,
) -> dict:
    """Per file: lines, bad lines, exchange-time and receive-time ranges (one DuckDB scan).

    When DuckDB cannot read the batch, it is split until the file it cannot read is alone;
    that file is read line by line (``_scan_lines``): lines it could not use count as bad
    and their quarantine records go to ``rejected[path]``. A file that cannot be opened at
    all maps to None.
    """
    if not paths:
        return {}
    con = con or connect()
    try:
        return _scan(con, paths)
    except duckdb.Error as exc:
        if len(paths) > 1:
            half = len(paths) // 2
            return {**scan_raw_files(paths[:half], con, rejected),
                    **scan_raw_files(paths[half:], con, rejected)}  # fmt: skip
        path = Path(paths[0])
        log.warning("raw catalog: %s is read line by line (%s)", path, str(exc)[:200])
        stats, records = _scan_lines(con, path)
        if records and rejected is not None:
            rejected[str(path)] = records
        return {str(path): stats}


# Trade time: @trade/@aggTrade use T, REST historicalTrades uses time (the Binance map)
_TRADE_MESSAGES = (*binance.TRADE_STREAMS.values(), *binance.REPAIR_SOURCES.values())
_TRADE_TIME_PATHS = [f"$.{key}" for key in binance.keys_of("ts_event", _TRADE_MESSAGES)]
_IS_TRADE_STREAM = " OR ".join(f"stream LIKE '%@{name}'" for name in binance.TRADE_STREAMS)


def _scan(con: duckdb.DuckDBPyConnection, paths: list[Path]) -> dict:
    # times in ms or µs, by the line's unit
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
                   CASE WHEN session IS NULL AND ({_IS_TRADE_STREAM})
                        THEN TRY_CAST(list_max(json_extract_string(data, {_TRADE_TIME_PATHS}))
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


def _scan_lines(con: duckdb.DuckDBPyConnection, path: Path) -> tuple[tuple | None, list[bytes]]:
    """Scan one file DuckDB could not read whole: its lines over MAX_LINE_BYTES and whatever
    follows a damaged compressed stream are bad lines with quarantine records; the rest is
    scanned as usual. (None, []) when the file cannot be opened."""
    try:
        data, error = _read_all(path)
    except OSError as exc:
        log.warning("raw catalog: cannot read %s: %s", path, exc)
        return None, []
    rest, long_lines = cut_long_lines(data)
    records = [long_line_record(path, n, line) for n, line in long_lines]
    with tempfile.TemporaryDirectory(prefix="raw-scan-") as tmp:
        copy = Path(tmp) / "lines.jsonl"
        copy.write_bytes(rest)
        try:
            lines, bad, *ranges = next(iter(_scan(con, [copy]).values()), _NO_LINES)
        except duckdb.Error as exc:  # not expected: every line is then bad
            lines = bad = len(rest.splitlines())
            ranges = [None] * 4
            records.append(_file_record(path, f"unreadable by DuckDB: {exc}"))
    if error is not None:
        records.append(_file_record(path, f"unreadable after byte {len(data)}: {error!r}"))
    extra = len(long_lines) + (error is not None)
    return (lines + extra, bad + extra, *ranges), records


def _read_all(path: Path) -> tuple[bytes, Exception | None]:
    """A raw file's bytes (decompressed), and the error that cut them short, if any."""
    chunks = []
    with open_raw(path) as fh:
        try:
            while chunk := fh.read1(1 << 20):  # read1: what came before an error is kept
                chunks.append(chunk)
        except (OSError, EOFError, zlib.error, zstandard.ZstdError) as exc:
            return b"".join(chunks), exc
    return b"".join(chunks), None


def cut_long_lines(data: bytes) -> tuple[bytes, list[tuple[int, bytes]]]:
    """``data`` without its lines longer than MAX_LINE_BYTES (newline excluded), and those
    lines as (line number, bytes); ``data`` itself when there are none."""
    if len(data) <= MAX_LINE_BYTES:
        return data, []
    newlines = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10)
    starts = np.concatenate(([0], newlines + 1))
    ends = np.concatenate((newlines, [len(data)]))
    long = np.flatnonzero(ends - starts > MAX_LINE_BYTES)
    if not len(long):
        return data, []
    kept, cut, at = [], [], 0
    for i in long.tolist():  # a few lines at most
        s, e = int(starts[i]), int(ends[i])
        kept.append(data[at:s])
        cut.append((i + 1, data[s:e]))
        at = e + 1
    kept.append(data[at:])
    return b"".join(kept), cut


def long_line_record(path: Path | str, line_no: int | None, line: bytes) -> bytes:
    """The quarantine record of a raw line longer than MAX_LINE_BYTES (its text kept)."""
    return orjson.dumps({"file": str(path), "line_no": line_no, "bytes": len(line),
                         "reason": f"line longer than {MAX_LINE_BYTES} bytes",
                         "line": line.decode("utf-8", "replace")})  # fmt: skip


def _file_record(path: Path, reason: str) -> bytes:
    return orjson.dumps({"file": str(path), "line_no": None, "reason": reason})


class RawCatalog:
    """Catalog of sealed raw files under ``layout.raw_root``, persisted in ``state/raw_catalog``."""

    def __init__(self, layout: LakeLayout) -> None:
        self.layout = layout
        self.state_dir = layout.state_dir / "raw_catalog"
        self._dirs_path = self.state_dir / "dirs.json"
        self._unreported_path = self.state_dir / "unreported.json"
        self._dirs: dict = self._load_dirs()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Exclusive use of the persisted state (the raw sensor and partition runs record
        files concurrently, in other processes), starting from its latest version."""
        make_dirs(self.state_dir)
        fd = os.open(self.state_dir / "lock", os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
        with os.fdopen(fd, "ab") as fh:  # closing it releases the lock
            fcntl.flock(fh, fcntl.LOCK_EX)
            self._dirs = self._load_dirs()
            loaded = json.loads(json.dumps(self._dirs))
            yield
            self._save_dirs(loaded)

    # persistence ------------------------------------------------------------------------------
    def _load_dirs(self) -> dict:
        try:
            return json.loads(self._dirs_path.read_text())
        except (OSError, ValueError):
            return {"symbols": {}, "days": {}}

    def _save_dirs(self, loaded: dict) -> None:
        if self._dirs != loaded:
            data = json.dumps(self._dirs, sort_keys=True).encode()
            atomic_write_bytes(self._dirs_path, data, durable=False)

    def _day_file(self, day: str) -> Path:
        return self.state_dir / "files" / f"day={validate_day(day)}.parquet"

    def _read_day(self, day: str, symbol: str | None = None) -> list[RawFileInfo]:
        path = self._day_file(day)
        if not path.exists():
            return []
        filters = [("symbol", "=", symbol)] if symbol else None
        return [RawFileInfo(**row) for row in pq.read_table(path, filters=filters).to_pylist()]

    def _day_paths(self, day: str) -> set[str]:
        path = self._day_file(day)
        if not path.exists():
            return set()
        return set(pq.read_table(path, columns=["path"]).column(0).to_pylist())

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
        """Scan for newly sealed files, record them and return them (oldest part first).

        Files that ``files_for`` recorded since the last refresh are returned too, so every
        sealed file is returned exactly once."""
        with self._locked():
            new_infos = self._record(self._changed_day_dirs(full))
            found = {i.path for i in new_infos}
            new_infos += [i for i in self._take_unreported() if i.path not in found]
        new_infos.sort(key=lambda i: (i.file_day, i.symbol, i.part))
        if new_infos:
            log.info("raw catalog: %d new sealed files", len(new_infos))
        return new_infos

    def _record(
        self, changed: list[tuple[str, str, Path, int]], *, reported: bool = True
    ) -> list[RawFileInfo]:
        """List the ``changed`` day folders, record the files not catalogued yet and the
        folders' mtimes; the new files' infos. Inside ``_locked()``, which saves the mtimes.
        ``reported=False``: the caller does not report them, the next ``refresh`` will (noted
        before they are recorded, so a crash in between cannot lose the report)."""
        seen_by_day: dict[str, set[str]] = {}
        new_files: list[tuple[str, str, Path, int, int]] = []
        for symbol, day, d, _ in changed:
            if day not in seen_by_day:
                seen_by_day[day] = self._day_paths(day)
            seen = seen_by_day[day]
            for e in os.scandir(d):
                pn = parse_part_name(e.name)
                if pn is None or pn.is_open or e.path in seen:
                    continue
                new_files.append((symbol, day, Path(e.path), pn.number, e.stat().st_size))
        new_infos: list[RawFileInfo] = []
        if new_files:
            by_day = {day: self._read_day(day) for day in {f[1] for f in new_files}}
            rejected: dict[str, list[bytes]] = {}
            scanned = scan_raw_files([f[2] for f in new_files], rejected=rejected)
            for symbol, day, path, part, size in new_files:
                stats = scanned.get(str(path), _NO_LINES)
                if stats is None:
                    continue  # could not be opened: tried again when its folder changes
                info = RawFileInfo(str(path), symbol, day, part, size, *stats)
                by_day[day].append(info)
                new_infos.append(info)
                if str(path) in rejected:
                    self._quarantine(info, rejected[str(path)])
            if not reported:
                paths = [*self._load_unreported(), *(i.path for i in new_infos)]
                atomic_write_bytes(self._unreported_path, json.dumps(paths).encode(),
                                   durable=False)  # fmt: skip
            for day in {f[1] for f in new_files}:
                self._write_day(day, by_day[day])
        for symbol, day, _, dm in changed:
            self._dirs["days"][f"{symbol}/{day}"] = dm
        return new_infos

    def _quarantine(self, info: RawFileInfo, records: list[bytes]) -> None:
        """The lines of one file that the scan could not use, beside the day's other
        quarantined input."""
        name = Path(info.path).name.split(".")[0] + ".catalog.jsonl"
        out = self.layout.quarantine_root / info.symbol / info.file_day / name
        with atomic_path(out, durable=False) as tmp:
            tmp.write_bytes(b"\n".join(records) + b"\n")
        log.warning("raw catalog: %d unusable lines of %s quarantined to %s", len(records),
                    info.path, out)  # fmt: skip

    def _record_days(self, symbol: str, days: list[str]) -> None:
        """Record the sealed files of ``symbol``'s ``days`` folders now (each folder is listed:
        a folder mtime can miss a file sealed within the same clock tick); the sensor's next
        refresh still returns them."""
        with self._locked():
            changed = []
            for day in days:
                d = self.layout.raw_day_dir(symbol, day)
                try:
                    changed.append((symbol, day, d, d.stat().st_mtime_ns))
                except FileNotFoundError:
                    continue
            self._record(changed, reported=False)

    def _load_unreported(self) -> list[str]:
        try:
            return list(json.loads(self._unreported_path.read_text()))
        except (OSError, ValueError, TypeError):
            return []

    def _take_unreported(self) -> list[RawFileInfo]:
        """Files ``files_for`` recorded that no refresh has returned yet; forgets them (paths
        not catalogued, after a crash, are found by the refresh itself)."""
        paths = set(self._load_unreported())
        if not paths:
            return []
        days = {Path(p).parent.name for p in paths}
        out = [i for d in sorted(days) for i in self._read_day(d) if i.path in paths]
        self._unreported_path.unlink(missing_ok=True)
        return out

    # queries ----------------------------------------------------------------------------------
    def files(self, symbol: str | None = None, day: str | None = None) -> list[RawFileInfo]:
        """Catalogued files, optionally of one symbol and/or one folder day."""
        days = [validate_day(day)] if day else self.days()
        out = []
        for d in days:
            out.extend(self._read_day(d, symbol))
        return out

    def recorded_after(self, symbol: str, day: str) -> bool:
        """Whether a sealed file of ``symbol`` sits in a folder after ``day`` (catalogued;
        ``files_for`` records the next day's folder first): the collector wrote on after it."""
        return any(self._read_day(d, symbol) for d in self.days() if d > day)

    def days(self) -> list[str]:
        """Folder days that have catalogued files, ascending."""
        folder = self.state_dir / "files"
        if not folder.is_dir():
            return []
        return sorted(p.name[4:14] for p in folder.glob("day=*.parquet"))

    def files_for(self, symbol: str, day: str | date, *, refresh: bool = True) -> list[Path]:
        """Every sealed file of ``symbol`` that can hold data of UTC ``day``.

        Files of the day's own folder, plus files of any other folder whose exchange-time or
        receive-time range overlaps the day (the next day's first files, late repairs, and
        the previous folder when the local clock ran behind the exchange's at midnight).
        With ``refresh`` (the default) the day's folder and both neighbours are recorded
        first, so files the raw sensor has not catalogued yet are included; later folders
        (repairs delivered days late) come from the catalog as the sensor keeps it.
        """
        symbol, day = validate_symbol(symbol), validate_day(day)
        start_us, end_us = day_bounds_us(day)
        prev_day = (date.fromisoformat(day) - timedelta(days=1)).isoformat()
        if refresh:
            next_day = (date.fromisoformat(day) + timedelta(days=1)).isoformat()
            self._record_days(symbol, [prev_day, day, next_day])
        out = []
        for d in (x for x in self.days() if x >= prev_day):
            for i in self._read_day(d, symbol):
                if d == day or _overlaps(i, start_us, end_us):
                    out.append(Path(i.path))
        return sorted(out, key=lambda p: (p.parent.name, p.name))


def _overlaps(i: RawFileInfo, start_us: int, end_us: int) -> bool:
    if i.min_event_us is not None and i.min_event_us < end_us and i.max_event_us >= start_us:
        return True
    if i.min_recv_ns is None:
        return False
    return i.min_recv_ns // 1000 < end_us and i.max_recv_ns // 1000 >= start_us
