"""The verified GCS copy layer against gcp-storage-emulator, through a fault-injecting proxy.

Small files take the client's multipart upload (one POST ``uploadType=multipart``), the 20 MB
file its resumable upload (POST to open a session, PUT of the bytes); both are checked.
"""

from __future__ import annotations

import base64
import hashlib
import math
import os
from collections.abc import Iterator
from pathlib import Path

import google_crc32c
import pytest

from crypto_lake.lib.archive import gcs
from crypto_lake_tests.archive.gcs_server import (
    Emulator,
    FaultProxy,
    GcsTestEnv,
    fresh_bucket,
    running_emulator,
    running_proxy,
)

FAST = {"backoff_seconds": 0.01, "backoff_cap_seconds": 0.05}


@pytest.fixture(scope="module")
def gcs_emulator() -> Iterator[Emulator]:
    with running_emulator() as emulator:
        yield emulator


@pytest.fixture(scope="module")
def gcs_proxy(gcs_emulator: Emulator) -> Iterator[FaultProxy]:
    with running_proxy(gcs_emulator.port) as proxy:
        yield proxy


@pytest.fixture
def gcs_env(
    gcs_emulator: Emulator, gcs_proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> Iterator[GcsTestEnv]:
    with fresh_bucket(gcs_emulator, gcs_proxy, monkeypatch) as env:
        yield env


def _file(tmp_path: Path, name: str, size: int) -> Path:
    path = tmp_path / name
    path.write_bytes(os.urandom(size))
    return path


def _object_bytes(env: GcsTestEnv, name: str) -> bytes:
    return env.bucket.blob(name).download_as_bytes(checksum=None)


def _names(env: GcsTestEnv) -> list[str]:
    return sorted(b.name for b in env.client.list_blobs(env.bucket_name))


def test_local_hashes_match_gcs_encoding_across_chunks(tmp_path: Path) -> None:
    known = tmp_path / "known"
    known.write_bytes(b"123456789")
    md5, crc, size = gcs.local_hashes(known)
    assert crc == base64.b64encode(bytes.fromhex("e3069283")).decode()  # CRC-32C check value
    assert md5 == base64.b64encode(hashlib.md5(b"123456789").digest()).decode()
    assert size == 9

    data = os.urandom(9 * 1024 * 1024 + 7)  # more than one read chunk
    big = tmp_path / "big"
    big.write_bytes(data)
    md5, crc, size = gcs.local_hashes(big)
    assert (size, crc) == (
        len(data),
        base64.b64encode(google_crc32c.Checksum(data).digest()).decode(),
    )
    assert md5 == base64.b64encode(hashlib.md5(data).digest()).decode()


def test_upload_then_rerun_uploads_nothing(gcs_env: GcsTestEnv, tmp_path: Path) -> None:
    local = _file(tmp_path, "part.parquet", 300_000)
    md5, crc, size = gcs.local_hashes(local)

    copied = gcs.copy_file(gcs_env.bucket, local, "raw/2026/part.parquet", **FAST)

    assert copied.action == "uploaded"
    assert (copied.name, copied.uri) == (
        "raw/2026/part.parquet",
        f"gs://{gcs_env.bucket_name}/raw/2026/part.parquet",
    )
    assert (copied.md5, copied.crc32c, copied.size) == (md5, crc, size)
    assert copied.generation is not None
    assert _object_bytes(gcs_env, copied.name) == local.read_bytes()
    assert _names(gcs_env) == ["raw/2026/part.parquet"]  # the temporary object is gone
    uploads = [r for r in gcs_env.proxy.records if r.kind == "upload"]
    assert [r.query.get("uploadType") for r in uploads] == [["multipart"]]
    assert gcs.verify_copy(gcs_env.bucket, copied.name, local)
    assert gcs.stat_object(gcs_env.bucket, copied.name) == gcs.ObjectCopy(
        copied.name, copied.uri, size, md5, crc, copied.generation, "present"
    )

    gcs_env.proxy.reset()
    again = gcs.copy_file(gcs_env.bucket, local, "raw/2026/part.parquet", **FAST)

    assert again.action == "present"
    assert (again.md5, again.crc32c, again.generation) == (md5, crc, copied.generation)
    assert gcs_env.proxy.count("upload") == 0
    assert {(r.method, r.kind) for r in gcs_env.proxy.records} <= {
        ("GET", "object"),
        ("GET", "other"),
    }


def test_changed_file_replaces_object(gcs_env: GcsTestEnv, tmp_path: Path) -> None:
    local = _file(tmp_path, "f.bin", 1000)
    gcs.copy_file(gcs_env.bucket, local, "f.bin", **FAST)
    local.write_bytes(b"new content")

    copied = gcs.copy_file(gcs_env.bucket, local, "f.bin", **FAST)

    assert copied.action == "uploaded"
    assert _object_bytes(gcs_env, "f.bin") == b"new content"


def test_empty_file_round_trips(gcs_env: GcsTestEnv, tmp_path: Path) -> None:
    local = _file(tmp_path, "empty", 0)
    copied = gcs.copy_file(gcs_env.bucket, local, "empty", **FAST)
    assert copied.size == 0
    dest = tmp_path / "restored" / "empty"
    assert gcs.download_file(gcs_env.bucket, "empty", dest, **FAST).action == "downloaded"
    assert dest.read_bytes() == b""


def test_corrupted_upload_is_not_promoted_and_retried(gcs_env: GcsTestEnv, tmp_path: Path) -> None:
    local = _file(tmp_path, "f.bin", 200_000)
    gcs_env.proxy.corrupt_uploads(1)

    copied = gcs.copy_file(gcs_env.bucket, local, "f.bin", **FAST)

    assert gcs_env.proxy.count("upload", fault="corrupt_upload") == 1
    assert gcs_env.proxy.count("upload") == 2  # the corrupted one and the retry
    assert copied.action == "uploaded"
    assert _object_bytes(gcs_env, "f.bin") == local.read_bytes()
    assert _names(gcs_env) == ["f.bin"]
    # the corrupted temporary object was checked and deleted before the retry, never copied
    rewrites = [r for r in gcs_env.proxy.records if "rewriteTo" in r.path]
    assert len(rewrites) == 1
    deletes = [r.path for r in gcs_env.proxy.records if r.method == "DELETE" and r.status == 200]
    assert len(deletes) == 2 and all(".incoming-" in p for p in deletes)


def test_always_corrupted_upload_leaves_existing_object_intact(
    gcs_env: GcsTestEnv, tmp_path: Path
) -> None:
    version_a = _file(tmp_path, "a.bin", 50_000)
    gcs.copy_file(gcs_env.bucket, version_a, "day.parquet", **FAST)
    version_b = _file(tmp_path, "b.bin", 60_000)
    gcs_env.proxy.corrupt_uploads(math.inf)

    with pytest.raises(gcs.HashMismatch, match="all 3 attempts"):
        gcs.copy_file(gcs_env.bucket, version_b, "day.parquet", attempts=3, **FAST)

    assert gcs_env.proxy.count("upload", fault="corrupt_upload") == 3
    assert _object_bytes(gcs_env, "day.parquet") == version_a.read_bytes()
    assert _names(gcs_env) == ["day.parquet"]  # no temporary objects left behind
    assert gcs.verify_copy(gcs_env.bucket, "day.parquet", version_a)


def test_always_corrupted_upload_of_new_name_creates_nothing(
    gcs_env: GcsTestEnv, tmp_path: Path
) -> None:
    gcs_env.proxy.corrupt_uploads(math.inf)
    with pytest.raises(gcs.HashMismatch):
        gcs.copy_file(gcs_env.bucket, _file(tmp_path, "f", 10_000), "f", attempts=2, **FAST)
    assert _names(gcs_env) == []
    assert gcs.stat_object(gcs_env.bucket, "f") is None


@pytest.mark.parametrize("status", [503, 429])
def test_transient_errors_are_retried(gcs_env: GcsTestEnv, tmp_path: Path, status: int) -> None:
    local = _file(tmp_path, "f.bin", 10_000)
    gcs_env.proxy.fail_next(3, status=status)  # stat, stat, stat: then through

    copied = gcs.copy_file(gcs_env.bucket, local, "f.bin", attempts=4, **FAST)

    assert copied.action == "uploaded"
    assert gcs_env.proxy.count(fault="status") == 3
    assert [r.status for r in gcs_env.proxy.records if r.kind == "object"][:4] == [status] * 3 + [
        404
    ]
    assert _object_bytes(gcs_env, "f.bin") == local.read_bytes()


def test_transient_errors_on_upload_requests_are_retried(
    gcs_env: GcsTestEnv, tmp_path: Path
) -> None:
    local = _file(tmp_path, "f.bin", 10_000)
    gcs_env.proxy.fail_next(2, status=503, path=r"^/upload/")

    gcs.copy_file(gcs_env.bucket, local, "f.bin", attempts=3, **FAST)

    assert [r.status for r in gcs_env.proxy.records if r.kind == "upload"] == [503, 503, 200]
    assert _object_bytes(gcs_env, "f.bin") == local.read_bytes()
    assert _names(gcs_env) == ["f.bin"]


def test_dropped_connections_and_timeouts_are_retried(gcs_env: GcsTestEnv, tmp_path: Path) -> None:
    local = _file(tmp_path, "f.bin", 10_000)
    gcs_env.proxy.drop_next(1, path=r"^/upload/")  # connection closed unanswered
    gcs_env.proxy.stall_next(1, 1.0, method="GET")  # the first stat answers after the timeout

    copied = gcs.copy_file(gcs_env.bucket, local, "f.bin", timeout_seconds=0.3, **FAST)

    assert copied.action == "uploaded"
    assert gcs_env.proxy.count(fault="drop") == 1
    assert gcs_env.proxy.count(fault="stall") == 1
    assert gcs_env.proxy.count("upload") == 2
    assert _object_bytes(gcs_env, "f.bin") == local.read_bytes()


def test_more_failures_than_attempts_is_copy_error(gcs_env: GcsTestEnv, tmp_path: Path) -> None:
    gcs_env.proxy.fail_next(math.inf, status=503, path=r"^/upload/")

    with pytest.raises(gcs.CopyError, match="gave up after 3 attempts") as info:
        gcs.copy_file(gcs_env.bucket, _file(tmp_path, "f", 1000), "f", attempts=3, **FAST)

    assert not isinstance(info.value, gcs.HashMismatch)
    assert gcs_env.proxy.count("upload") == 3
    assert _names(gcs_env) == []


def test_permanent_errors_are_not_retried(gcs_env: GcsTestEnv, tmp_path: Path) -> None:
    local = _file(tmp_path, "f", 1000)
    gcs_env.proxy.fail_next(1, status=403, path=r"^/upload/")
    with pytest.raises(gcs.CopyError, match="403"):
        gcs.copy_file(gcs_env.bucket, local, "f", attempts=5, **FAST)
    assert gcs_env.proxy.count("upload") == 1

    gcs_env.proxy.reset()
    missing = gcs.bucket_from(gcs_env.client, "no-such-bucket-here")
    with pytest.raises(gcs.CopyError, match="404"):
        gcs.copy_file(missing, local, "f", attempts=5, **FAST)
    assert gcs_env.proxy.count("upload") == 1


def test_download_verifies_bytes(gcs_env: GcsTestEnv, tmp_path: Path) -> None:
    local = _file(tmp_path, "f.bin", 100_000)
    copied = gcs.copy_file(gcs_env.bucket, local, "d/f.bin", **FAST)
    dest = tmp_path / "restore" / "f.bin"

    got = gcs.download_file(gcs_env.bucket, "d/f.bin", dest, **FAST)

    assert got.action == "downloaded"
    assert (got.md5, got.crc32c, got.size, got.generation) == (
        copied.md5,
        copied.crc32c,
        copied.size,
        copied.generation,
    )
    assert dest.read_bytes() == local.read_bytes()

    # one corrupted response, then a good one
    dest2 = tmp_path / "restore" / "g.bin"
    gcs_env.proxy.reset()
    gcs_env.proxy.corrupt_downloads(1)
    gcs.download_file(gcs_env.bucket, "d/f.bin", dest2, **FAST)
    assert gcs_env.proxy.count("download") == 2
    assert gcs_env.proxy.count("download", fault="corrupt_download") == 1
    assert dest2.read_bytes() == local.read_bytes()


def test_download_retries_transient_errors(gcs_env: GcsTestEnv, tmp_path: Path) -> None:
    local = _file(tmp_path, "f.bin", 10_000)
    gcs.copy_file(gcs_env.bucket, local, "f.bin", **FAST)
    gcs_env.proxy.reset()
    gcs_env.proxy.fail_next(2, status=503, path=r"^/download/")

    gcs.download_file(gcs_env.bucket, "f.bin", tmp_path / "out" / "f.bin", attempts=3, **FAST)

    assert [r.status for r in gcs_env.proxy.records if r.kind == "download"] == [503, 503, 200]
    assert (tmp_path / "out" / "f.bin").read_bytes() == local.read_bytes()
    assert list((tmp_path / "out").iterdir()) == [tmp_path / "out" / "f.bin"]  # no temp left


def test_always_corrupted_download_creates_nothing(gcs_env: GcsTestEnv, tmp_path: Path) -> None:
    gcs.copy_file(gcs_env.bucket, _file(tmp_path, "f.bin", 30_000), "f.bin", **FAST)
    restore = tmp_path / "restore"
    gcs_env.proxy.corrupt_downloads(math.inf)

    with pytest.raises(gcs.HashMismatch):
        gcs.download_file(gcs_env.bucket, "f.bin", restore / "f.bin", attempts=3, **FAST)

    assert gcs_env.proxy.count("download", fault="corrupt_download") == 3
    assert list(restore.iterdir()) == []  # neither the file nor a temporary one


def test_download_of_missing_object_is_copy_error(gcs_env: GcsTestEnv, tmp_path: Path) -> None:
    with pytest.raises(gcs.CopyError, match="does not exist"):
        gcs.download_file(gcs_env.bucket, "nope", tmp_path / "nope", **FAST)
    assert not (tmp_path / "nope").exists()


def test_verify_copy(gcs_env: GcsTestEnv, tmp_path: Path) -> None:
    local = _file(tmp_path, "f.bin", 5000)
    assert not gcs.verify_copy(gcs_env.bucket, "f.bin", local)  # missing
    gcs.copy_file(gcs_env.bucket, local, "f.bin", **FAST)
    assert gcs.verify_copy(gcs_env.bucket, "f.bin", local)
    other = _file(tmp_path, "g.bin", 5000)
    assert not gcs.verify_copy(gcs_env.bucket, "f.bin", other)  # same size, other content
    assert gcs.stat_object(gcs_env.bucket, "g.bin") is None


def test_big_file_takes_resumable_upload_and_round_trips(
    gcs_env: GcsTestEnv, tmp_path: Path
) -> None:
    local = _file(tmp_path, "big.bin", 20 * 1024 * 1024)  # above the 8 MiB multipart limit
    gcs_env.proxy.corrupt_uploads(1)  # corrupts the PUT carrying the bytes

    copied = gcs.copy_file(gcs_env.bucket, local, "big.bin", **FAST)

    uploads = [(r.method, r.query.get("uploadType"), r.fault) for r in gcs_env.proxy.records]
    uploads = [u for u, r in zip(uploads, gcs_env.proxy.records, strict=True) if r.kind == "upload"]
    assert uploads == [
        ("POST", ["resumable"], None),
        ("PUT", ["resumable"], "corrupt_upload"),
        ("POST", ["resumable"], None),
        ("PUT", ["resumable"], None),
    ]
    dest = tmp_path / "restore" / "big.bin"
    got = gcs.download_file(gcs_env.bucket, "big.bin", dest, **FAST)
    assert (got.md5, got.crc32c) == (copied.md5, copied.crc32c)
    assert dest.read_bytes() == local.read_bytes()
    assert _names(gcs_env) == ["big.bin"]
