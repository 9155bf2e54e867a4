"""The collector's exit codes and the one-line reason of a failed start.

- 0 ``EXIT_OK``: clean stop (SIGTERM/SIGINT): every file sealed, final heartbeat "stopped".
- 1 ``EXIT_SOFTWARE``: an unexpected error, i.e. a bug: the log has the traceback.
- 2 ``EXIT_USAGE``: a bad command-line flag (argparse).
- 73 ``EXIT_CANTCREAT``: the lake root is not writable (read-only filesystem, permissions, a
  file where a folder belongs): restarting helps only once an administrator fixed it.
- 74 ``EXIT_IOERR``: a write failed (disk full, file too large, I/O error), at start or
  mid-run: restarting helps once space is back.
- 75 ``EXIT_TEMPFAIL``: another collector holds the lake's lock: try again later.
- 78 ``EXIT_CONFIG``: invalid configuration (file, environment, secret file): restarting
  cannot help.

The numbers are the BSD ``sysexits.h`` ones, so a supervisor (systemd's
``RestartPreventExitStatus=``) can tell "fix the configuration" from "try again later".
A start-up failure logs exactly one line saying what failed, on which path, and what to do;
no traceback (only EXIT_SOFTWARE, a bug, comes with one).
"""

from __future__ import annotations

import errno
from collections.abc import Iterator

EXIT_OK = 0
EXIT_SOFTWARE = 1
EXIT_USAGE = 2
EXIT_CANTCREAT = 73
EXIT_IOERR = 74
EXIT_TEMPFAIL = 75
EXIT_CONFIG = 78

# the lake root (or a folder in it) cannot be written at all: an administrator has to act
_NOT_WRITABLE = {
    errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR, errno.ENOENT,
    errno.ELOOP, errno.EEXIST, errno.ENAMETOOLONG,
}  # fmt: skip
# the disk is full or the file too large: retried until space is back
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class StartupError(Exception):
    """The collector cannot start; ``str()`` is the one line to log, ``exit_code`` the code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _os_errors(exc: BaseException) -> Iterator[OSError]:
    """``exc`` and the exceptions it was raised from (e.g. a SealError's cause), the OSErrors."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError):
            yield seen
        seen = seen.__cause__ or seen.__context__


def os_errno(exc: BaseException) -> int | None:
    """The errno of ``exc`` or of the OSError it was raised from (e.g. a SealError)."""
    return next((e.errno for e in _os_errors(exc) if e.errno is not None), None)


def lake_refuses_writes(exc: BaseException) -> bool:
    """True when ``exc`` says the lake cannot take writes at all (full, read-only, not a
    directory, no permission) rather than that one file is bad."""
    return os_errno(exc) in _NO_SPACE | (_NOT_WRITABLE - {errno.ENOENT, errno.EEXIST})


def _failed_path(exc: BaseException, fallback: object) -> object:
    return next((e.filename for e in _os_errors(exc) if e.filename is not None), fallback)


def startup_error(exc: OSError, step: str, path: object) -> StartupError:
    """Turn an OSError raised while ``step`` (e.g. "taking the lake lock") into the one-line
    reason and exit code of a failed start; ``path`` names the file when the error does not."""
    code = os_errno(exc)
    where = _failed_path(exc, path)
    reason = errno.errorcode.get(code, "error") if code is not None else "error"
    what = f"{exc.strerror}" if isinstance(exc, OSError) and exc.strerror else str(exc)
    if code in _NO_SPACE:
        return StartupError(
            f"cannot start: {step} failed: {where}: {what} ({reason}); the lake's disk is full "
            "or a file-size limit is reached: free space there (or raise the limit) and start "
            "again",
            EXIT_IOERR,
        )
    if code in _NOT_WRITABLE:
        return StartupError(
            f"cannot start: {step} failed: {where}: {what} ({reason}); the lake root is not a "
            "writable directory: make it one for this user (LAKE_ROOT / lake_root, mount it "
            "read-write) and start again",
            EXIT_CANTCREAT,
        )
    return StartupError(
        f"cannot start: {step} failed: {where}: {what} ({reason}); the lake's disk reported an "
        "I/O error: check the disk (dmesg, SMART) and start again",
        EXIT_IOERR,
    )
