"""Start-up recovery: seal leftover ``.open`` files and find where each symbol's ids stopped.

After a crash (kill -9, power loss, disk full) the lake may hold:

* ``part-N.jsonl.open`` files whose last line is torn: the torn tail is cut off and counted,
  the rest is sealed under its own number;
* a stale ``.open`` beside its already-sealed compressed copy (crash between the rename and
  the unlink): the sealed file is complete, the ``.open`` is deleted;
* ``.part-*.tmp`` leftovers of an interrupted compression: deleted.

``last_ids`` reads the newest raw files of a symbol and returns the last trade (or aggTrade)
id written plus any holes inside them, so a restart can detect the ids it missed while down.
"""

from __future__ import annotations

import gzip
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import zstandard

from collector_daemon.sealing import SealError, seal_file, sealed_path
from crypto_lake.lib.logs import get_logger
from crypto_lake.lib.paths import COMPRESSION_SUFFIX, LakeLayout, parse_part_name

log = get_logger("collector.recovery")

TAIL_CHECK_LINES = 8  # whole lines at the end of a file that must parse, else they are cut


@dataclass
class RecoveryReport:
    sealed: list[Path] = field(default_factory=list)
    torn_lines: int = 0
    removed: list[Path] = field(default_factory=list)


def _valid_end(data: bytes) -> int:
    """Length of the longest prefix of ``data`` made of whole, parseable lines (tail-checked)."""
    end = data.rfind(b"\n") + 1  # bytes after the last newline are a torn line
    for _ in range(TAIL_CHECK_LINES):
        if end == 0:
            break
        start = data.rfind(b"\n", 0, end - 1) + 1
        try:
            orjson.loads(data[start : end - 1])
            break
        except orjson.JSONDecodeError:
            end = start  # garbage (e.g. zeros after power loss): cut this line too
    return end


def recover_open_file(path: Path, compression: str, report: RecoveryReport) -> None:
    """Cut a torn tail off one ``.open`` file and seal it (see module docstring)."""
    number = parse_part_name(path.name).number  # type: ignore[union-attr]
    for comp in COMPRESSION_SUFFIX:
        other = sealed_path(path, comp)
        if other.exists():
            log.warning("removing stale %s: %s is already sealed", path.name, other.name)
            path.unlink()
            report.removed.append(path)
            return
    data = path.read_bytes()
    keep = _valid_end(data)
    if keep < len(data):
        cut = data[keep:]
        torn = cut.count(b"\n") + (0 if cut.endswith(b"\n") else 1)
        report.torn_lines += torn
        log.warning("%s: cut %d torn line(s) (%d bytes)", path, torn, len(cut))
        with open(path, "rb+") as fh:
            fh.truncate(keep)
            os.fsync(fh.fileno())
    if keep == 0:
        path.unlink()
        report.removed.append(path)
        return
    final = seal_file(path, compression)
    log.info("recovered part %d -> %s", number, final)
    report.sealed.append(final)


def recover_lake(layout: LakeLayout, compression: str) -> RecoveryReport:
    """Recover every leftover under raw/ (market data and quarantine)."""
    report = RecoveryReport()
    raw = layout.root / "raw"
    if not raw.is_dir():
        return report
    for dirpath, _dirs, files in os.walk(raw):
        for name in sorted(files):
            path = Path(dirpath) / name
            if name.startswith(".part-") and name.endswith(".tmp"):
                path.unlink(missing_ok=True)
                report.removed.append(path)
                continue
            parsed = parse_part_name(name)
            if parsed is None or not parsed.is_open:
                continue
            try:
                recover_open_file(path, compression, report)
            except (OSError, SealError) as exc:
                # Leave the file for the next start rather than lose it.
                log.error("cannot recover %s: %s", path, exc)
    return report


# last ids ------------------------------------------------------------------------------------
def read_part_lines(path: Path) -> Iterator[bytes]:
    """Lines of a sealed (possibly compressed) part file."""
    parsed = parse_part_name(path.name)
    comp = parsed.compression if parsed else "none"
    with open(path, "rb") as raw:
        if comp == "gzip":
            stream: io.BufferedIOBase = gzip.GzipFile(fileobj=raw)  # type: ignore[assignment]
        elif comp == "zstd":
            stream = io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw))  # type: ignore[arg-type]
        else:
            stream = raw  # type: ignore[assignment]
        yield from stream


def _ids_in(path: Path, stream: str) -> list[tuple[int, int | None]]:
    """(id, event time) of every trade line of ``stream`` in one part, live or repaired."""
    marker = b'"stream":"' + stream.encode() + b'"'
    out: list[tuple[int, int | None]] = []
    for line in read_part_lines(path):
        if marker not in line:
            continue
        try:
            obj = orjson.loads(line)
            data = obj["data"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            continue
        if not isinstance(data, dict):
            continue
        rest = obj.get("rest")
        key = "id" if rest == "historicalTrades" else ("a" if "aggTrade" in stream else "t")
        ident = data.get(key)
        if isinstance(ident, int):
            t = data.get("time") if rest == "historicalTrades" else data.get("T")
            out.append((ident, t if isinstance(t, int) else None))
    return out


@dataclass
class LastIds:
    last_id: int | None
    last_time: int | None
    holes: list[tuple[int, int]]  # missing ranges found inside the files read


def _sealed_parts_newest_first(layout: LakeLayout, symbol: str) -> Iterator[Path]:
    sym_dir = layout.raw_symbol_dir(symbol)
    if not sym_dir.is_dir():
        return
    for day in sorted((d for d in os.listdir(sym_dir) if not d.startswith(".")), reverse=True):
        day_dir = sym_dir / day
        parts = []
        for name in os.listdir(day_dir):
            parsed = parse_part_name(name)
            if parsed is not None and not parsed.is_open:
                parts.append((parsed.number, day_dir / name))
        for _, path in sorted(parts, reverse=True):
            yield path


def last_ids(layout: LakeLayout, symbol: str, stream: str, files_with_ids: int = 2) -> LastIds:
    """Last id and internal holes from the newest ``files_with_ids`` parts holding trades."""
    ids: list[tuple[int, int | None]] = []
    found = 0
    for scanned, path in enumerate(_sealed_parts_newest_first(layout, symbol), start=1):
        got = _ids_in(path, stream)
        if got:
            ids.extend(got)
            found += 1
        if found >= files_with_ids or scanned >= 50:
            break
    if not ids:
        return LastIds(None, None, [])
    ids.sort()
    holes: list[tuple[int, int]] = []
    prev = ids[0][0]
    for ident, _ in ids[1:]:
        if ident > prev + 1:
            holes.append((prev + 1, ident - 1))
        prev = max(prev, ident)
    return LastIds(ids[-1][0], ids[-1][1], holes)
