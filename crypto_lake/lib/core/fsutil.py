"""Atomic file writes and the one file-mode policy for everything the system writes.

Atomic: a reader never sees half a file, a re-run replaces rather than duplicates.

File modes: every file the system writes into the lake is ``FILE_MODE`` (0640) and every
directory it creates ``DIR_MODE`` (0750): the owner (the service user) reads and writes, its
group (e.g. an ``analysts`` group) reads, others get nothing. The modes are set explicitly
(chmod), so they do not depend on the process umask, nor on ``mkstemp`` creating its
temporary files 0600. Directories that already exist (the lake root an administrator made,
``/tmp``) are left as they are.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

FILE_MODE = 0o640  # rw-r-----: owner writes, the group (analysts) reads, others nothing
DIR_MODE = 0o750  # rwxr-x---


def set_file_mode(target: Path | str | int) -> None:
    """Give a file (a path or an open descriptor) the policy mode ``FILE_MODE``."""
    if isinstance(target, int):
        os.fchmod(target, FILE_MODE)
    else:
        os.chmod(target, FILE_MODE)


def make_dirs(directory: Path | str) -> Path:
    """``mkdir -p`` where every directory created gets ``DIR_MODE`` whatever the umask;
    existing directories keep their mode. Returns ``directory`` as a Path."""
    directory = Path(directory)
    missing = []
    probe = directory
    while not probe.is_dir():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    for path in reversed(missing):
        try:
            path.mkdir(mode=DIR_MODE)
        except FileExistsError:
            if path == directory and not path.is_dir():
                raise  # a file where the directory belongs
            # Made concurrently by another writer (theirs to set up), or a file in the way:
            # then creating the next level fails with ENOTDIR, naming the path.
            continue
        os.chmod(path, DIR_MODE)
    return directory


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
    The file gets ``FILE_MODE`` before the rename (``mkstemp`` creates it 0600), whatever
    wrote it. On failure the temporary file is removed and ``final`` is left untouched.
    """
    final = Path(final)
    make_dirs(final.parent)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        set_file_mode(tmp)
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
