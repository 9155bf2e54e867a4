"""The archive of one symbol-day (SPEC §9): its files, their sidecars, and whether it is whole.

``archive_day`` writes, under ``archive/``:

* ``raw/symbol={S}/{DAY}.jsonl.zst``: the day folder's raw lines, compacted (``compact``);
* ``{dataset}/symbol={S}/{DAY}.parquet`` for trades, quotes, bars_1s, bars_1m and coverage:
  a verified copy of the partition's file (already one sorted, deterministic zstd file);
* beside each, ``{DAY}.meta.json``, written after its file and atomically: rows (lines), time
  range, schema and schema version, SHA256 and size, coverage summary, gap counts, the QA
  verdict (and the override that let a FAIL through), the code version.

A file counts as archived only when its sidecar exists and the file's size and SHA256 match
it (``check_file``; ``deep`` also re-reads a compacted raw file's lines and content hash). A
missing, truncated or altered file is reported, never counted.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq
import zstandard

from crypto_lake.lib.archive.compact import (
    CHUNK,
    Compacted,
    CompactError,
    compact_raw,
    raw_file_day,
    read_raw_hashes,
)
from crypto_lake.lib.core.fsutil import atomic_path, atomic_write_bytes
from crypto_lake.lib.core.paths import (
    ARCHIVE_DATASETS,
    ARCHIVE_TABLES,
    RAW_ARCHIVE,
    LakeLayout,
    parse_part_name,
)
from crypto_lake.lib.core.schema import dataset
from crypto_lake.lib.core.symbols import shift_day
from crypto_lake.lib.raw.lines import RAW_SCHEMA_VERSION

SIDECAR_VERSION = 1
_CODE_DIRS = ("market", "raw")  # the code that turns raw lines into the tables


def _code_version() -> str:
    """The package version and a hash of the code that turns raw lines into the tables."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    files = [f for name in _CODE_DIRS for f in sorted((root / name).glob("*.py"))]
    for f in [*files, root / "archive" / "compact.py"]:
        digest.update(f.name.encode() + f.read_bytes())
    try:
        pkg = version("crypto_lake")
    except PackageNotFoundError:
        pkg = "0"
    return f"{pkg}+{digest.hexdigest()[:12]}"


CODE_VERSION = _code_version()


def file_sha256(path: Path) -> tuple[str, int]:
    """(SHA256 hex, size) of a file, read in chunks."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


@dataclass
class DayArchive:
    """What ``archive_day`` wrote (or found already archived) for one symbol-day."""

    symbol: str
    day: str
    files: dict[str, Path] = field(default_factory=dict)  # dataset -> archive file
    sidecars: dict[str, dict[str, Any]] = field(default_factory=dict)  # dataset -> sidecar
    written: list[str] = field(default_factory=list)  # datasets whose file was (re)written
    seconds: float = 0.0

    @property
    def raw(self) -> dict[str, Any]:
        return self.sidecars[RAW_ARCHIVE]


# A sidecar's keys that describe its own file (the rest is the partition's context).
RAW_KEYS = ("dataset", "file", "source", "format", "rows", "bytes", "sha256", "content_bytes",
            "content_sha256", "input_bytes", "parts", "newlines_added", "schema",
            "schema_version")  # fmt: skip
TABLE_KEYS = ("dataset", "file", "source", "format", "rows", "bytes", "sha256", "time_column",
              "time_range", "sort_keys", "schema", "schema_version")  # fmt: skip
# Sidecar keys that say when and by which run, not what: a re-run that changes nothing else
# leaves the sidecars as they are (so their copies in the bucket stay valid).
_WHEN = ("archived_at", "run_id")


def archive_day(
    layout: LakeLayout,
    symbol: str,
    day: str,
    *,
    context: dict[str, Any] | None = None,
    zstd_threads: int = 0,
) -> DayArchive:
    """Archive one symbol-day: compact its raw lines, copy its table files, then write the
    sidecars. ``context`` is recorded in every sidecar (QA verdict, override, coverage
    summary, gap counts, run id).

    A re-run writes only what changed: a table file whose source has the sidecar's hash is
    kept, and so is the compacted raw file while the day folder holds no part it lacks (its
    minute files may be gone: retention deletes them once archived); a sidecar is rewritten
    only when its content changes. CompactError when the folder holds new parts but lost
    some the archive has (no complete raw archive can be made). Raises when a source is
    missing or a copy does not match its source; its sidecar is then not written, so the
    day does not count as archived."""
    t0 = time.perf_counter()
    out = DayArchive(symbol, day)
    common = {**(context or {}), "symbol": symbol, "date": day, "code_version": CODE_VERSION,
              "sidecar_version": SIDECAR_VERSION}  # fmt: skip
    old = {n: read_sidecar(layout.archive_sidecar(n, symbol, day)) for n in ARCHIVE_DATASETS}
    raw = _current_raw(layout, symbol, day, old[RAW_ARCHIVE])
    if raw is None:
        if not layout.raw_day_dir(symbol, day).is_dir():
            raise CompactError(
                f"raw/binance/{symbol}/{day} does not exist: no raw lines to archive (restore "
                "the day from the bucket if it was archived)"
            )
        compacted = compact_raw(layout, symbol, day, threads=zstd_threads)
        raw = _raw_sidecar(layout, compacted)
        out.written.append(RAW_ARCHIVE)
    out.files[RAW_ARCHIVE] = layout.archive_file(RAW_ARCHIVE, symbol, day)
    out.sidecars[RAW_ARCHIVE] = {**common, **raw}
    for name in ARCHIVE_TABLES:
        src = layout.market_file(name, symbol, day)
        dest = layout.archive_file(name, symbol, day)
        if not src.exists():
            raise FileNotFoundError(f"{src} is missing: materialize {name} for {day}|{symbol}")
        out.files[name] = dest
        kept = old[name]
        if (
            kept is not None
            and not check_file(dest, kept)
            and file_sha256(src)[0] == kept["sha256"]
        ):
            table = {k: kept[k] for k in TABLE_KEYS if k in kept}
        else:
            table = _copy_table(name, src, dest, layout)
            out.written.append(name)
        out.sidecars[name] = {**common, **table}
    for name, meta in out.sidecars.items():  # last: a sidecar vouches for a finished file
        before = old[name]
        if before is not None and _same(before, meta):  # the file it vouches for is unchanged
            out.sidecars[name] = before
            continue
        meta["archived_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        write_sidecar(layout.archive_sidecar(name, symbol, day), meta)
    out.seconds = time.perf_counter() - t0
    return out


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    strip = lambda d: {k: v for k, v in d.items() if k not in _WHEN}  # noqa: E731
    return json.loads(json.dumps(strip(a), default=str)) == json.loads(
        json.dumps(strip(b), default=str)
    )


def _current_raw(layout: LakeLayout, symbol: str, day: str,
                 sidecar: dict[str, Any] | None) -> dict[str, Any] | None:  # fmt: skip
    """The raw sidecar's own fields when the existing compacted file still stands for the
    day folder (verified, holding every part on disk); None when it must be (re)made."""
    if sidecar is None:
        return None
    path = layout.archive_file(RAW_ARCHIVE, symbol, day)
    on_disk = {p.name for p in _folder_parts(layout, symbol, day) if not p.name.endswith(".open")}
    held = set(sidecar.get("parts") or ())
    if on_disk - held and held - on_disk:
        raise CompactError(
            f"raw {symbol} {day}: the folder holds parts the archive lacks, and the archive "
            f"parts the folder lost; a complete raw archive cannot be made "
            f"(new: {sorted(on_disk - held)[:3]}, gone: {sorted(held - on_disk)[:3]})"
        )
    if on_disk - held:
        return None  # parts sealed after the archive was made: compact again
    if check_file(path, sidecar, deep=True):
        if held - on_disk:
            raise CompactError(f"raw {symbol} {day}: the compacted file does not verify and "
                               "minute files are gone: restore it from the bucket")  # fmt: skip
        return None
    return {k: sidecar[k] for k in RAW_KEYS if k in sidecar}


def _raw_sidecar(layout: LakeLayout, c: Compacted) -> dict[str, Any]:
    return {
        "dataset": RAW_ARCHIVE,
        "file": c.path.name,
        "source": str(c.path.relative_to(layout.root)),
        "format": "jsonl+zstd",
        "rows": c.lines,
        "bytes": c.bytes,
        "sha256": c.sha256,
        "content_bytes": c.content_bytes,
        "content_sha256": c.content_sha256,
        "input_bytes": c.input_bytes,
        "parts": c.parts,
        "newlines_added": c.newlines_added,
        "schema": "raw line (crypto_lake.lib.raw.lines)",
        "schema_version": RAW_SCHEMA_VERSION,
    }


def _copy_table(name: str, src: Path, dest: Path, layout: LakeLayout) -> dict[str, Any]:
    """Copy one partition file into the archive; verify the copy against the source's hash."""
    want, size = file_sha256(src)
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
        got, _ = file_sha256(tmp)
        if got != want:
            raise OSError(f"copy of {src} to {dest} does not match its source; try again")
    spec = dataset(name)
    meta = pq.read_metadata(dest)
    time_col = spec.sort_keys[0]
    column = pq.read_table(dest, columns=[time_col]).column(0)
    lo, hi = (pc.min(column).as_py(), pc.max(column).as_py()) if len(column) else (None, None)
    return {
        "dataset": name,
        "file": dest.name,
        "source": str(src.relative_to(layout.root)),
        "format": "parquet+zstd",
        "rows": meta.num_rows,
        "bytes": size,
        "sha256": want,
        "time_column": time_col,
        "time_range": [_iso(lo), _iso(hi)],
        "sort_keys": list(spec.sort_keys),
        "schema": [{"name": f.name, "type": str(f.type)} for f in meta.schema.to_arrow_schema()],
        "schema_version": spec.version,
    }


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def write_sidecar(path: Path, meta: dict[str, Any]) -> None:
    atomic_write_bytes(path, json.dumps(meta, indent=1, sort_keys=True, default=str).encode())


def read_sidecar(path: Path) -> dict[str, Any] | None:
    """A sidecar's content; None when missing or unreadable."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def check_file(path: Path, sidecar: dict[str, Any] | None, *, deep: bool = False) -> list[str]:
    """Why ``path`` does not match its sidecar (empty: it does). ``deep`` also re-reads a
    compacted raw file's lines and content hash."""
    if sidecar is None:
        return [f"{path.name}: no sidecar (not archived)"]
    if not path.exists():
        return [f"{path}: missing"]
    try:
        if deep and sidecar.get("dataset") == RAW_ARCHIVE:
            got = read_raw_hashes(path)
            checks = [("bytes", got.bytes), ("sha256", got.sha256),
                      ("rows", got.lines), ("content_sha256", got.content_sha256)]  # fmt: skip
        else:
            sha, size = file_sha256(path)
            checks = [("bytes", size), ("sha256", sha)]
    except (OSError, zstandard.ZstdError) as exc:
        return [f"{path}: unreadable ({exc})"]
    return [f"{path}: {key} is {value}, sidecar says {sidecar.get(key)}"
            for key, value in checks if sidecar.get(key) != value]  # fmt: skip


@dataclass
class ArchiveStatus:
    """Whether a symbol-day's archive is whole: every file present with its sidecar, matching."""

    symbol: str
    day: str
    datasets: tuple[str, ...] = ARCHIVE_DATASETS  # the files asked about
    problems: list[str] = field(default_factory=list)
    sidecars: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return not self.problems and set(self.sidecars) == set(self.datasets)


def archive_status(layout: LakeLayout, symbol: str, day: str, *, deep: bool = False,
                   datasets: tuple[str, ...] = ARCHIVE_DATASETS) -> ArchiveStatus:  # fmt: skip
    """Check every archive file of a symbol-day against its sidecar; each problem starts with
    the dataset it concerns."""
    status = ArchiveStatus(symbol, day, tuple(datasets))
    for name in datasets:
        path = layout.archive_file(name, symbol, day)
        sidecar = read_sidecar(layout.archive_sidecar(name, symbol, day))
        problems = check_file(path, sidecar, deep=deep)
        if sidecar is not None and (sidecar.get("symbol"), sidecar.get("date")) != (symbol, day):
            problems.append(f"{path.name}: sidecar is for another partition")
        status.problems += [f"{name}: {p}" for p in problems]
        if not problems:
            status.sidecars[name] = sidecar
    return status


def archive_files(layout: LakeLayout, symbol: str, day: str) -> list[Path]:
    """Every file of a symbol-day's archive, sidecars last (the upload order)."""
    files = [layout.archive_file(n, symbol, day) for n in ARCHIVE_DATASETS]
    return files + [layout.archive_sidecar(n, symbol, day) for n in ARCHIVE_DATASETS]


def with_compacted(layout: LakeLayout, symbol: str, day: str, files: list[Path]) -> list[Path]:
    """The raw files to read for (symbol, day): ``files`` (its part files, e.g.
    ``RawCatalog.files_for``) with each day folder's parts replaced by the day's compacted
    file wherever that holds them all: a verified file (size and SHA256 as its sidecar says)
    whose parts include every part of the folder still on disk. Minute files deleted by
    retention are read from it; without a good compacted file the parts stay as they are.
    When ``files`` has no part of the day's own folder (a lake restored from the bucket, a
    lost catalog), the verified compacted files of the day and its neighbours are read."""
    by_day: dict[str | None, list[Path]] = {}
    for f in files:
        by_day.setdefault(raw_file_day(f), []).append(Path(f))
    if day not in by_day:  # nothing catalogued for the day: what the archive holds
        for d in (shift_day(day, -1), day, shift_day(day, 1)):
            by_day.setdefault(d, [])
    out: list[Path] = []
    for d, paths in sorted(by_day.items(), key=lambda item: item[0] or ""):
        compacted = _usable_compacted(layout, symbol, d, paths) if d else None
        out.extend([compacted] if compacted is not None else paths)
    return out


def _usable_compacted(layout: LakeLayout, symbol: str, day: str, paths: list[Path]) -> Path | None:
    """The day's compacted file if it holds ``paths`` and every part of the folder on disk,
    and matches its sidecar (hashed last: only a file that would be used is read)."""
    try:
        path = layout.archive_file(RAW_ARCHIVE, symbol, day)
    except ValueError:
        return None
    sidecar = read_sidecar(layout.archive_sidecar(RAW_ARCHIVE, symbol, day))
    if sidecar is None:
        return None
    parts = set(sidecar.get("parts") or ())
    on_disk = {p.name for p in _folder_parts(layout, symbol, day)}
    if not (on_disk <= parts and {p.name for p in paths} <= parts):
        return None
    return None if check_file(path, sidecar) else path


def _folder_parts(layout: LakeLayout, symbol: str, day: str) -> list[Path]:
    folder = layout.raw_day_dir(symbol, day)
    if not folder.is_dir():
        return []
    return [p for p in folder.iterdir() if parse_part_name(p.name) is not None]


def object_name(prefix: str, layout: LakeLayout, path: Path) -> str:
    """The bucket object of a lake file: ``{prefix}/{path under the lake root}``, e.g.
    ``crypto-lake/archive/trades/symbol=BTCUSDT/2026-12-04.parquet``."""
    relative = Path(path).resolve().relative_to(layout.root.resolve()).as_posix()
    return f"{prefix.strip('/')}/{relative}" if prefix.strip("/") else relative
