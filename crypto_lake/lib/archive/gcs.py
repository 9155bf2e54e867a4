"""Verified copies between local files and Google Cloud Storage.

Guarantees:

* An object that :func:`copy_file` reports is byte-identical to the local file: GCS's own
  md5Hash and crc32c for it (computed server-side from the stored bytes) equal the local file's.
* The target name never holds unverified bytes. New bytes go to a temporary object
  ``<name>.incoming-<uuid>`` first; only once its server-reported hashes match is it copied
  server-side onto ``<name>`` (a rewrite: no bytes cross the network again), checked again,
  and deleted. A corrupted upload therefore leaves an existing good object untouched. This is
  verification by reading hashes back, not by preconditions alone (the test emulator ignores
  ``if_generation_match``).
* Re-running is cheap: an object already holding the same md5 and crc32c is not uploaded again.
  A process killed mid-copy can leave a ``*.incoming-*`` object behind; it is never read as
  data and is safe to delete.
* :func:`download_file` writes a temporary file beside the destination and renames it into place
  only when the downloaded bytes hash to what GCS reports, so a reader never sees a partial or
  corrupted restore.

Each network step (stat, upload+verify, promote+verify, download+verify) gets ``attempts``
tries. Transient failures (429, 408, 5xx, connection errors, timeouts) and hash mismatches are
retried with capped exponential backoff and jitter; anything else (403, a missing bucket) raises
:class:`CopyError` at once. The client library's own retries and checksums are switched off
(``retry=None``, ``checksum=None``) so the attempt count is ours and the single check is ours.
Uploads up to 8 MiB go as one multipart request, larger ones as a resumable upload (the
library's choice; both are exercised by the tests).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import google_crc32c
import requests
from google.api_core import exceptions as api_exceptions
from google.auth import exceptions as auth_exceptions
from google.cloud.storage import Bucket, Client

from crypto_lake.lib.core.fsutil import atomic_path
from crypto_lake.lib.core.logs import get_logger

_CHUNK = 8 * 1024 * 1024
_T = TypeVar("_T")

# HTTP answers worth another try (408 has no exception class of its own in api_core)
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
# Failures below HTTP: connection refused/reset, timeouts, a body cut short
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    auth_exceptions.TransportError,
    ConnectionError,
    TimeoutError,
)


@dataclass(frozen=True)
class ObjectCopy:
    name: str  # object name in the bucket
    uri: str  # gs://bucket/name
    size: int
    md5: str  # base64, as GCS reports md5Hash
    crc32c: str  # base64, as GCS reports crc32c
    generation: int | None
    action: str  # "uploaded" | "present" | "downloaded"


class CopyError(RuntimeError):
    """A copy could not be made and verified; the message says what to do."""


class HashMismatch(CopyError):
    """The hashes GCS reports differ from the bytes sent or received."""


def local_hashes(path: Path) -> tuple[str, str, int]:
    """(md5 base64, crc32c base64, size) of a local file, read in chunks."""
    md5, crc, size = hashlib.md5(), google_crc32c.Checksum(), 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            md5.update(chunk)
            crc.update(chunk)
            size += len(chunk)
    return _b64(md5.digest()), _b64(crc.digest()), size


def bucket_from(client: Client, name: str) -> Bucket:
    """The bucket ``name`` (no request is made; a missing bucket shows on first use)."""
    return client.bucket(name)


@dataclass(frozen=True)
class _Retry:
    attempts: int
    backoff_seconds: float
    backoff_cap_seconds: float
    log: logging.Logger

    def run(self, what: str, step: Callable[[], _T]) -> _T:
        """``step()``, tried up to ``attempts`` times while it fails transiently."""
        last: BaseException | None = None
        for attempt in range(1, self.attempts + 1):
            try:
                return step()
            except (HashMismatch, *TRANSIENT_ERRORS) as exc:
                last = exc
            except api_exceptions.GoogleAPICallError as exc:
                if exc.code not in TRANSIENT_STATUS:
                    raise CopyError(
                        f"{what}: GCS answered {exc.code} {exc.message}; not retried. Check the "
                        "bucket name and that the service account may read/write objects in it."
                    ) from exc
                last = exc
            if attempt < self.attempts:
                delay = min(self.backoff_cap_seconds, self.backoff_seconds * 2 ** (attempt - 1))
                delay *= random.uniform(0.5, 1.0)
                self.log.warning(
                    "%s: attempt %d/%d failed (%s); retrying in %.2fs",
                    what, attempt, self.attempts, last, delay,
                )  # fmt: skip
                time.sleep(delay)
        if isinstance(last, HashMismatch):
            raise HashMismatch(
                f"{what}: {last} (all {self.attempts} attempts). Bytes are being corrupted in "
                "transit or on disk; check the disk and network before retrying."
            ) from last
        raise CopyError(
            f"{what}: gave up after {self.attempts} attempts, last error: {last!r}. "
            "GCS or the network is failing; re-run later (finished copies are not redone)."
        ) from last


def stat_object(
    bucket: Bucket, name: str, *, attempts: int = 5, backoff_seconds: float = 0.5
) -> ObjectCopy | None:
    """What GCS holds under ``name`` (action="present"), or None when there is no such object."""
    retry = _Retry(attempts, backoff_seconds, 30.0, get_logger("gcs"))
    return retry.run(f"stat gs://{bucket.name}/{name}", lambda: _stat_once(bucket, name, 120.0))


def verify_copy(
    bucket: Bucket, name: str, local: Path, *, attempts: int = 5, backoff_seconds: float = 0.5
) -> bool:
    """True only if the object exists and its server-reported md5 and crc32c equal the file's."""
    found = stat_object(bucket, name, attempts=attempts, backoff_seconds=backoff_seconds)
    return found is not None and _same(found, *local_hashes(local))


def copy_file(
    bucket: Bucket,
    local: Path,
    name: str,
    *,
    attempts: int = 5,
    backoff_seconds: float = 0.5,
    backoff_cap_seconds: float = 30.0,
    timeout_seconds: float = 120.0,
    log: logging.Logger | None = None,
) -> ObjectCopy:
    """Upload ``local`` as object ``name``, verified (see the module docstring)."""
    retry = _Retry(attempts, backoff_seconds, backoff_cap_seconds, log or get_logger("gcs"))
    uri, timeout = f"gs://{bucket.name}/{name}", timeout_seconds
    md5, crc, size = local_hashes(local)
    existing = retry.run(f"stat {uri}", lambda: _stat_once(bucket, name, timeout))
    if existing is not None and _same(existing, md5, crc, size):
        retry.log.debug("%s already holds %s (%d bytes)", uri, local, size)
        return existing
    if existing is not None:
        retry.log.warning("%s holds different bytes (md5 %s); replacing it", uri, existing.md5)
    temp = f"{name}.incoming-{uuid.uuid4().hex}"
    started = time.monotonic()

    def upload_temp() -> ObjectCopy:
        try:
            bucket.blob(temp).upload_from_filename(
                str(local), timeout=timeout, retry=None, checksum=None
            )
            return _checked(_stat_once(bucket, temp, timeout), md5, crc, size, f"uploaded {temp}")
        except BaseException:
            _delete_quietly(bucket, temp, timeout, retry.log)  # the next attempt starts clean
            raise

    def promote(source: ObjectCopy) -> ObjectCopy:
        token = None  # rewrite may take several calls for big objects on real GCS
        while True:
            token, _, _ = bucket.blob(name).rewrite(
                bucket.blob(temp, generation=source.generation),  # exactly the verified bytes
                token=token,
                timeout=timeout,
                retry=None,
            )
            if token is None:
                break
        return _checked(_stat_once(bucket, name, timeout), md5, crc, size, f"promoted {uri}")

    try:
        verified = retry.run(f"upload {local} to gs://{bucket.name}/{temp}", upload_temp)
        final = retry.run(f"copy {temp} to {uri}", lambda: promote(verified))
    finally:
        _delete_quietly(bucket, temp, timeout, retry.log)
    elapsed = time.monotonic() - started
    retry.log.info("uploaded %s to %s (%d bytes, %.1fs)", local, uri, size, elapsed)
    return ObjectCopy(name, uri, size, md5, crc, final.generation, "uploaded")


def download_file(
    bucket: Bucket,
    name: str,
    dest: Path,
    *,
    attempts: int = 5,
    backoff_seconds: float = 0.5,
    backoff_cap_seconds: float = 30.0,
    timeout_seconds: float = 120.0,
    log: logging.Logger | None = None,
) -> ObjectCopy:
    """Download object ``name`` to ``dest`` atomically, with md5 and crc32c checked."""
    retry = _Retry(attempts, backoff_seconds, backoff_cap_seconds, log or get_logger("gcs"))
    uri = f"gs://{bucket.name}/{name}"

    def step() -> ObjectCopy:
        info = _stat_once(bucket, name, timeout_seconds)
        if info is None:
            raise CopyError(f"{uri} does not exist; nothing to restore to {dest}")
        blob = bucket.blob(name, generation=info.generation)  # the generation we checked
        with atomic_path(Path(dest)) as tmp:
            blob.download_to_filename(str(tmp), timeout=timeout_seconds, retry=None, checksum=None)
            md5, crc, size = local_hashes(tmp)
            _checked(info, md5, crc, size, f"downloaded {uri}")
        return ObjectCopy(name, uri, size, md5, crc, info.generation, "downloaded")

    copied = retry.run(f"download {uri} to {dest}", step)
    retry.log.info("downloaded %s to %s (%d bytes)", uri, dest, copied.size)
    return copied


def _stat_once(bucket: Bucket, name: str, timeout: float) -> ObjectCopy | None:
    blob = bucket.get_blob(name, timeout=timeout, retry=None)
    if blob is None:
        return None
    uri = f"gs://{bucket.name}/{name}"
    md5, crc, size = blob.md5_hash or "", blob.crc32c or "", int(blob.size or 0)
    return ObjectCopy(name, uri, size, md5, crc, blob.generation, "present")


def _same(found: ObjectCopy, md5: str, crc: str, size: int) -> bool:
    return (found.md5, found.crc32c, found.size) == (md5, crc, size)


def _checked(found: ObjectCopy | None, md5: str, crc: str, size: int, what: str) -> ObjectCopy:
    if found is None:
        raise HashMismatch(f"{what}: the object vanished before it could be verified")
    if not _same(found, md5, crc, size):
        raise HashMismatch(
            f"{what}: GCS reports md5 {found.md5} crc32c {found.crc32c} size {found.size}, "
            f"the local bytes have md5 {md5} crc32c {crc} size {size}"
        )
    return found


def _delete_quietly(bucket: Bucket, name: str, timeout: float, log: logging.Logger) -> None:
    try:
        bucket.blob(name).delete(timeout=timeout, retry=None)
    except api_exceptions.NotFound:
        pass
    except Exception as exc:  # cleanup must not hide the real outcome
        log.warning("could not delete temporary gs://%s/%s: %s", bucket.name, name, exc)


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")
