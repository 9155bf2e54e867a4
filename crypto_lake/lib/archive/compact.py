"""One symbol-day of raw lines compacted verbatim into one zstd file, and its verification.

The collector seals a part file a minute per symbol into ``raw/binance/{SYMBOL}/{DAY}/``
(the day it received the lines). ``compact_raw`` concatenates every sealed part of one such
folder, in part order (the order the collector wrote them, which is receive order), into
``archive/raw/symbol={SYMBOL}/{DAY}.jsonl.zst``: every line of every part exactly once, byte
for byte. A part whose last line lacks its newline (a truncated file) gets one, so lines of
two parts never merge; the count of such parts is recorded. The result records the line
count and the SHA256 of the uncompressed content, which ``verify_raw`` recomputes.

A folder that still holds an ``.open`` file is being written and is refused, as is a part
that cannot be read whole (a damaged compressed stream): the archive never claims lines it
does not hold. Readers treat the compacted file like the parts it replaces
(``crypto_lake.lib.raw.lines.open_raw`` reads it; ``raw_file_day`` names its day).
"""

from __future__ import annotations

import hashlib
import os
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import zstandard

from crypto_lake.lib.core.fsutil import atomic_path
from crypto_lake.lib.core.paths import RAW_ARCHIVE, LakeLayout, parse_part_name
from crypto_lake.lib.raw.lines import open_raw

CHUNK = 4 << 20
ZSTD_LEVEL = 3
_COMPACTED_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})\.jsonl\.zst$")


class CompactError(RuntimeError):
    """A raw folder that cannot be compacted (still open, unreadable part); says which file."""


@dataclass
class Compacted:
    """What ``compact_raw`` wrote."""

    path: Path
    parts: list[str] = field(default_factory=list)  # part file names, in order
    lines: int = 0
    content_sha256: str = ""  # of the uncompressed lines
    content_bytes: int = 0
    input_bytes: int = 0  # the parts as stored (compressed or not)
    bytes: int = 0  # the compacted file
    sha256: str = ""  # of the compacted file
    newlines_added: int = 0  # parts whose last line had no newline


def raw_file_day(path: Path | str) -> str | None:
    """The receive day a raw file belongs to: its folder for a part file, its name for a
    compacted file; None for anything else."""
    p = Path(path)
    m = _COMPACTED_RE.fullmatch(p.name)
    if m and p.parent.name.startswith("symbol="):
        return m.group(1)
    if parse_part_name(p.name) is not None:
        return p.parent.name
    return None


def sealed_parts(day_dir: Path) -> list[Path]:
    """The sealed part files of one raw day folder, in part order; CompactError while an
    ``.open`` file is still being written there."""
    parts = []
    for entry in os.scandir(day_dir):
        pn = parse_part_name(entry.name)
        if pn is None:
            continue
        if pn.is_open:
            raise CompactError(f"{entry.path} is still being written: the day is not closed")
        parts.append((pn.number, Path(entry.path)))
    return [p for _, p in sorted(parts)]


def compact_raw(layout: LakeLayout, symbol: str, day: str, *, level: int = ZSTD_LEVEL,
                threads: int = 0) -> Compacted:  # fmt: skip
    """Compact the sealed parts of ``raw/binance/{symbol}/{day}/`` into one zstd file
    (atomic; a re-run replaces it). ``threads``: zstd worker threads (0 = none)."""
    folder = layout.raw_day_dir(symbol, day)
    parts = sealed_parts(folder) if folder.is_dir() else []
    out = Compacted(layout.archive_file(RAW_ARCHIVE, symbol, day))
    content, whole = hashlib.sha256(), hashlib.sha256()
    compressor = zstandard.ZstdCompressor(level=level, threads=threads)
    with atomic_path(out.path) as tmp, open(tmp, "wb") as fh:
        hashing = _HashingWriter(fh, whole)
        with compressor.stream_writer(hashing, closefd=False) as zw:
            for part in parts:
                last = b"\n"
                for chunk in _read_part(part):
                    zw.write(chunk)
                    content.update(chunk)
                    out.lines += chunk.count(b"\n")
                    out.content_bytes += len(chunk)
                    last = chunk[-1:]
                if last != b"\n":
                    zw.write(b"\n")
                    content.update(b"\n")
                    out.lines += 1
                    out.content_bytes += 1
                    out.newlines_added += 1
                out.parts.append(part.name)
                out.input_bytes += part.stat().st_size
        out.bytes = hashing.size
    out.content_sha256, out.sha256 = content.hexdigest(), whole.hexdigest()
    return out


def _read_part(path: Path):
    """A part's uncompressed bytes in chunks; CompactError when it cannot be read whole."""
    try:
        with open_raw(path) as fh:
            while chunk := fh.read(CHUNK):
                yield chunk
    except (OSError, EOFError, zlib.error, zstandard.ZstdError) as exc:
        raise CompactError(
            f"{path} cannot be read whole ({exc!r}); move it to raw/_quarantine/ by hand to "
            "archive the rest of the day"
        ) from exc


class _HashingWriter:
    """A file wrapper that hashes and counts what is written through it."""

    def __init__(self, fh, digest) -> None:
        self.fh, self.digest, self.size = fh, digest, 0

    def write(self, data) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.fh.write(data)

    def flush(self) -> None:
        self.fh.flush()


@dataclass(frozen=True)
class RawCheck:
    lines: int
    content_sha256: str
    sha256: str
    bytes: int


def read_raw_hashes(path: Path) -> RawCheck:
    """Recompute a compacted file's line count and hashes (the file's and its content's)."""
    content, whole, lines, size = hashlib.sha256(), hashlib.sha256(), 0, 0
    with open(path, "rb") as fh:
        reader = zstandard.ZstdDecompressor().stream_reader(_HashingReader(fh, whole),
                                                            read_across_frames=True)  # fmt: skip
        while chunk := reader.read(CHUNK):
            content.update(chunk)
            lines += chunk.count(b"\n")
        while rest := fh.read(CHUNK):  # bytes after the last frame still count in the hash
            whole.update(rest)
        size = fh.tell()
    return RawCheck(lines, content.hexdigest(), whole.hexdigest(), size)


class _HashingReader:
    def __init__(self, fh, digest) -> None:
        self.fh, self.digest = fh, digest

    def read(self, n: int = -1) -> bytes:
        data = self.fh.read(n)
        self.digest.update(data)
        return data
