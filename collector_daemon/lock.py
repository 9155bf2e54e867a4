"""One collector per lake: an exclusive ``flock`` on ``state/collector.lock``.

The kernel drops the lock when the process dies (even by kill -9), so a stale lock file
never blocks a restart; the pid written into it only serves the error message.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from crypto_lake.lib.core.fsutil import FILE_MODE, make_dirs, set_file_mode


class LockHeld(RuntimeError):
    """Another collector holds the lake's lock."""


class LakeLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def acquire(self) -> None:
        make_dirs(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise LockHeld(
                f"another collector (pid {holder}) is already writing to this lake "
                f"(lock {self.path}); refusing to start: stop it first, or give this one "
                "another lake root"
            ) from None
        try:
            set_file_mode(fd)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            raise
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
