"""Sealing one raw part file: the only way a ``.open`` file becomes a sealed part.

Sealing = fsync the ``.open`` file, optionally compress it to a temporary name beside the
sealed name, atomically rename into place, fsync the directory. The sealed file has the
policy mode (``fsutil.FILE_MODE``) either way. A reader therefore sees
either no sealed file or a complete one; a crash at any point leaves the ``.open`` file for
recovery (or, after the rename of a compressed copy, a complete sealed file plus a stale
``.open`` that recovery deletes).
"""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path
from typing import BinaryIO

import zstandard

from crypto_lake.lib.core.fsutil import atomic_path, fsync_dir, set_file_mode
from crypto_lake.lib.core.paths import parse_part_name, part_file_name

COPY_CHUNK = 1 << 20


class SealError(OSError):
    """A part could not be sealed; its ``.open`` file is left untouched for recovery."""


def sealed_path(open_path: Path, compression: str) -> Path:
    """The sealed name of ``part-NNNNNN.jsonl.open`` for the given compression."""
    parsed = parse_part_name(open_path.name)
    if parsed is None or not parsed.is_open:
        raise ValueError(f"not an open part file: {open_path}")
    return open_path.with_name(part_file_name(parsed.number, compression=compression))


def compress_stream(fin: BinaryIO, fout: BinaryIO, compression: str) -> None:
    """Copy ``fin`` to ``fout`` compressed as a sealed part is ("gzip" or "zstd")."""
    if compression == "gzip":
        # mtime=0 keeps the output a pure function of the input
        with gzip.GzipFile(fileobj=fout, mode="wb", compresslevel=6, mtime=0) as gz:
            shutil.copyfileobj(fin, gz, COPY_CHUNK)
    elif compression == "zstd":
        zstandard.ZstdCompressor(level=3).copy_stream(fin, fout, read_size=COPY_CHUNK)
    else:
        raise ValueError(f"unknown compression {compression!r}")


def _compress(src: Path, dst: Path, compression: str) -> None:
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        compress_stream(fin, fout, compression)


def seal_file(open_path: Path, compression: str, *, durable: bool = True) -> Path:
    """Seal ``open_path`` (see module docstring) and return the sealed path.

    Refuses to overwrite an existing sealed part: part numbers are never reused.
    """
    final = sealed_path(open_path, compression)
    if final.exists():
        raise SealError(f"refusing to overwrite sealed part {final}")
    try:
        if durable:
            fd = os.open(open_path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        if compression == "none":
            set_file_mode(open_path)  # a leftover of an older version may have another mode
            os.rename(open_path, final)
            if durable:
                fsync_dir(final.parent)
            return final
        with atomic_path(final, durable=durable) as tmp:
            _compress(open_path, tmp, compression)
        os.unlink(open_path)
        if durable:
            fsync_dir(final.parent)
        return final
    except OSError as exc:
        raise SealError(f"cannot seal {open_path}: {exc}") from exc
