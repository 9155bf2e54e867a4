"""Start-up recovery: cut torn tails off leftover ``.open`` files and seal them.

After a crash (kill -9, power loss, disk full) the lake may hold:

* ``part-N.jsonl.open`` files whose last line is torn: the torn tail is cut off and counted,
  the rest is sealed under its own number;
* a stale ``.open`` beside its already-sealed compressed copy (crash between the rename and
  the unlink): the sealed file is complete, the ``.open`` is deleted;
* ``.part-*.tmp`` leftovers of an interrupted compression: deleted.

A file that cannot be recovered is left for the next start and the others are recovered;
but when the lake itself refuses writes (disk full, read-only), recovery stops and raises:
nothing can be recorded then, and the collector exits with a one-line reason (exits.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from collector_daemon.exits import lake_refuses_writes
from collector_daemon.sealing import SealError, seal_file, sealed_path
from crypto_lake.lib.core.logs import get_logger
from crypto_lake.lib.core.paths import COMPRESSION_SUFFIX, LakeLayout, parse_part_name

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
                if lake_refuses_writes(exc):
                    raise  # the whole lake, not this file: the caller stops the start
                # Leave the file for the next start rather than lose it.
                log.error("cannot recover %s: %s", path, exc)
    return report
