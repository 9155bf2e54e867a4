"""Atomic file writes: a reader never sees half a file, a re-run replaces rather than duplicates."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path


def advise(paths: Iterable[Path], advice: int) -> None:
    """posix_fadvise(``advice``) over the whole of each file (e.g. os.POSIX_FADV_WILLNEED to
    read ahead, POSIX_FADV_DONTNEED to drop from the page cache); missing files are skipped."""
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue  # whoever reads it reports it
        try:
            os.posix_fadvise(fd, 0, 0, advice)
        finally:
            os.close(fd)


def fsync_dir(directory: Path) -> None:
    """Make a rename inside ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(final: Path, *, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; on success rename it into place.

    The temporary name starts with a dot and ends in ``.tmp`` so globbing readers skip it.
    On failure the temporary file is removed and ``final`` is left untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if durable:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, final)
        if durable:
            fsync_dir(final.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(final: Path, data: bytes, *, durable: bool = True) -> None:
    """Write ``data`` to ``final`` atomically."""
    with atomic_path(final, durable=durable) as tmp:
        tmp.write_bytes(data)
