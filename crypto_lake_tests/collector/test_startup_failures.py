"""Issue 18, item 2: a collector that cannot start says why in ONE line and exits with the
documented code (collector_daemon/exits.py), never a traceback (a restart loop of
tracebacks under systemd otherwise).

Real failures, no mocks: a lake root under a regular file (ENOTDIR), a checkpoint path taken
by a directory (EISDIR), a read-only and a full tmpfs (mounted in a private user+mount
namespace with ``unshare``, so no privileges are needed), a file-size limit of 0 (EFBIG),
a lock held by another process, an invalid and a secret-carrying configuration.
"""

from __future__ import annotations

import base64
import os
import random
import resource
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from collector_daemon.exits import EXIT_CANTCREAT, EXIT_CONFIG, EXIT_IOERR, EXIT_TEMPFAIL
from collector_daemon.lock import LakeLock
from crypto_lake.lib.core.paths import LakeLayout
from crypto_lake.lib.raw.lines import session_line
from crypto_lake_tests.collector.conftest import REPO, free_port

CANARY = "canary-s3cr3t-7f3a9"


def collector_cmd(lake: Path | str) -> list[str]:
    """The collector CLI on ``lake``, pointed at a closed loopback port (it never gets to
    connect: every case here fails before)."""
    port = free_port()
    return [sys.executable, "-m", "collector_daemon", "--lake-root", str(lake),
            "--ws-url", f"ws://127.0.0.1:{port}", "--rest-url", f"http://127.0.0.1:{port}",
            "--symbols", "BTCUSDT", "--metrics-port", "0"]  # fmt: skip


def run(cmd: list[str], env: dict[str, str] | None = None, **popen) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CRYPTO_LAKE")}
    base["CRYPTO_LAKE_CONFIG"] = os.devnull
    base.update(env or {})
    return subprocess.run(cmd, cwd=REPO, env=base, capture_output=True, text=True, timeout=60,
                          **popen)  # fmt: skip


def assert_one_line(proc: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    """Exit ``code``, no traceback, exactly one ERROR line holding every needle; returns it."""
    err = proc.stderr
    assert proc.returncode == code, f"exit {proc.returncode}, expected {code}\n{err}"
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if " ERROR " in line or " CRITICAL " in line]
    assert len(errors) == 1, err
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def in_private_tmpfs(mount_opts: str, script: str, cmd: list[str]) -> list[str]:
    """``cmd`` run after ``script`` in a private user+mount namespace whose $MNT is a fresh
    tmpfs (``mount_opts``); unprivileged, and invisible outside."""
    shell = f'mount -t tmpfs -o {mount_opts} tmpfs "$MNT" && {script} && exec "$@"'
    return ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", shell, "sh", *cmd]


def previous_lake(root: Path, leftover: bool) -> Path:
    """A lake a previous collector wrote: its lock file and, with ``leftover``, an unsealed
    ``.open`` part (a crash) of ~200 KB that zstd cannot shrink much, for the next start to
    seal."""
    layout = LakeLayout(root)
    layout.state_dir.mkdir(parents=True)
    layout.collector_lock_path.write_text("12345\n")
    if leftover:
        day = datetime.now(UTC).date().isoformat()
        folder = layout.raw_day_dir("BTCUSDT", day)
        folder.mkdir(parents=True)
        now = datetime.now(UTC).timestamp()
        rng = random.Random(18)
        lines = [session_line(int((now - 60 + i) * 1e9), "ws-1", "connect",
                              url=base64.b64encode(rng.randbytes(3000)).decode())
                 for i in range(50)]  # fmt: skip
        (folder / "part-000000.jsonl.open").write_bytes(b"".join(lines))
    return root


def test_lake_root_under_a_regular_file_exits_73(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("not a folder")
    proc = run(collector_cmd(tmp_path / "afile" / "lake"))
    assert_one_line(proc, EXIT_CANTCREAT, "cannot start", "lake lock", "afile", "Not a directory")


def test_failed_start_says_failed_in_the_heartbeat(tmp_path: Path) -> None:
    """A failure after the lock is taken: sealing a crashed run's leftover part hits the
    file-size limit (EFBIG, like a full disk); the small heartbeat still fits, and says
    "failed" with the one-line reason and exit code 74."""
    lake = previous_lake(tmp_path / "lake", leftover=True)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (32 * 1024, 32 * 1024))

    proc = run(collector_cmd(lake), preexec_fn=limit)
    line = assert_one_line(proc, EXIT_IOERR, "recovering leftover .open files", "File too large")
    hb = orjson.loads((lake / "state" / "heartbeat.json").read_bytes())
    assert hb["status"] == "failed" and hb["exit_code"] == EXIT_IOERR
    assert "\n" not in hb["error"] and hb["error"] in line
    assert list(lake.rglob("*.open")), "the leftover part is kept for the next start"


def test_read_only_lake_exits_73(tmp_path: Path) -> None:
    """The lake's filesystem went read-only (e.g. remounted after disk errors)."""
    src = previous_lake(tmp_path / "src", leftover=True)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    script = 'cp -a "$SRC" "$MNT/lake" && mount -o remount,ro "$MNT"'
    cmd = in_private_tmpfs("size=1m", script, collector_cmd(mnt / "lake"))
    proc = run(cmd, env={"MNT": str(mnt), "SRC": str(src)})
    assert_one_line(proc, EXIT_CANTCREAT, "lake lock", "Read-only file system")


@pytest.mark.parametrize("leftover", [True, False], ids=["open-part-to-seal", "clean-stop"])
def test_full_disk_exits_74(tmp_path: Path, leftover: bool) -> None:
    """A full disk at start: sealing the leftover part (or saving the id checkpoint) fails
    with ENOSPC: one line naming the path and what to do, exit 74 (retried by systemd)."""
    src = previous_lake(tmp_path / "src", leftover=leftover)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    script = (
        'cp -a "$SRC" "$MNT/lake" && { dd if=/dev/zero of="$MNT/fill" bs=4k 2>/dev/null; true; }'
    )
    cmd = in_private_tmpfs("size=512k", script, collector_cmd(mnt / "lake"))
    proc = run(cmd, env={"MNT": str(mnt), "SRC": str(src)}, stdin=subprocess.DEVNULL)
    step = "recovering leftover .open files" if leftover else "trade-id checkpoint"
    assert_one_line(proc, EXIT_IOERR, step, "No space left on device", "free space")


def test_file_size_limit_exits_74(tmp_path: Path) -> None:
    """RLIMIT_FSIZE 0: the first byte written fails with EFBIG (like a full disk)."""

    def no_bytes() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))

    proc = run(collector_cmd(tmp_path / "lake"), preexec_fn=no_bytes)
    assert_one_line(proc, EXIT_IOERR, "File too large", str(tmp_path / "lake"))


def test_lock_held_exits_75_and_leaves_the_heartbeat_alone(tmp_path: Path) -> None:
    layout = LakeLayout(tmp_path / "lake")
    lock = LakeLock(layout.collector_lock_path)
    lock.acquire()  # this test process plays the running collector
    try:
        layout.heartbeat_path.write_bytes(b'{"status": "running", "pid": 1}')
        proc = run(collector_cmd(layout.root))
        assert_one_line(proc, EXIT_TEMPFAIL, "another collector", f"pid {os.getpid()}")
        assert layout.heartbeat_path.read_bytes() == b'{"status": "running", "pid": 1}'
    finally:
        lock.release()


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"CRYPTO_LAKE__COLLECTOR__ROTATE_SECONDS": "-1"}, "collector.rotate_seconds"),
        ({"CRYPTO_LAKE__COLLECTOR__ROTATE_SECONDS": CANARY}, "collector.rotate_seconds"),
        ({"CRYPTO_LAKE__COLLECTOR__PASSWORD": CANARY}, "CRYPTO_LAKE__COLLECTOR__PASSWORD"),
        ({"CRYPTO_LAKE_WEBHOOK_URL_FILE": "/nonexistent/hook"}, "/nonexistent/hook"),
    ],
    ids=["bad-value", "bad-value-canary", "secret-env-key", "missing-secret-file"],
)
def test_invalid_configuration_exits_78_without_values(
    tmp_path: Path, env: dict[str, str], needle: str
) -> None:
    proc = run(collector_cmd(tmp_path / "lake"), env=env)
    assert_one_line(proc, EXIT_CONFIG, "cannot start", needle)
    assert CANARY not in proc.stderr + proc.stdout
    assert not (tmp_path / "lake").exists()  # nothing written before the config is valid
