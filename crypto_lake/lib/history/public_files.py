"""Binance's public daily and monthly files (data.binance.vision): fetch, verify, store.

Binance publishes every spot symbol's trades, aggTrades and klines as one zip per UTC day and
per month, each holding one header-less CSV of the same name, with a ``.CHECKSUM`` beside it
(``sha256sum`` output). A day appears some hours after it ends. The files fill the lake's
history before the collector ran and over its outages (SPEC §8a).

``fetch_public_file`` downloads a zip and its checksum and verifies, before anything is stored,
the SHA256, every CRC inside the zip and the CSV's first row; then it keeps both files under
``history/binance/`` in Binance's own folder layout (``LakeLayout.public_file``), written
atomically. A stored zip that still matches Binance's checksum is not downloaded again, so a
backfill that stopped halfway resumes where it stopped. ``lib/history/public_csv.py`` parses
the stored zips into tables.

Every failure is a :class:`PublicFileError` whose message names the file's URL (or path) and
what to do; :class:`PublicFileMissing` (HTTP 404) is the expected one for a day Binance has not
published yet: try again later.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import re
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import BinaryIO

from crypto_lake.lib.core.fsutil import atomic_path, atomic_write_bytes
from crypto_lake.lib.core.logs import get_logger
from crypto_lake.lib.core.paths import LakeLayout, public_file_key
from crypto_lake.lib.history.zip_member import open_member

log = get_logger("history.public_files")

CHUNK = 1 << 20
CHECKSUM_SUFFIX = ".CHECKSUM"
_CHECKSUM_RE = re.compile(rb"^([0-9a-fA-F]{64}) [ *](\S+)\s*$")
_NUMBER_RE = re.compile(r"^-?\d+(\.\d*)?$")

# The CSV columns of each kind, in Binance's order (no header row in spot files).
CSV_COLUMNS: dict[str, tuple[str, ...]] = {
    "trades": ("id", "price", "qty", "quote_qty", "time", "is_buyer_maker", "is_best_match"),
    "aggTrades": ("agg_id", "price", "qty", "first_trade_id", "last_trade_id", "time",
                  "is_buyer_maker", "is_best_match"),
    "klines": ("open_time", "open", "high", "low", "close", "volume", "close_time",
               "quote_volume", "count", "taker_buy_base", "taker_buy_quote", "ignore"),
}  # fmt: skip
# Other names a header row may give a column (Binance's futures files and some newer files
# start with one); a first row of these names is skipped, any other text is an error.
HEADER_ALIASES: dict[str, tuple[str, ...]] = {
    "id": ("trade_id",), "agg_id": ("agg_trade_id", "a"), "qty": ("quantity",),
    "time": ("transact_time", "timestamp"), "first_trade_id": ("first_id",),
    "last_trade_id": ("last_id",), "quote_volume": ("quote_asset_volume",),
    "count": ("trade_count", "number_of_trades", "trades"),
    "taker_buy_base": ("taker_buy_volume", "taker_buy_base_volume",
                       "taker_buy_base_asset_volume"),
    "taker_buy_quote": ("taker_buy_quote_volume", "taker_buy_quote_asset_volume"),
}  # fmt: skip


# --- errors -----------------------------------------------------------------------------------
class PublicFileError(RuntimeError):
    """A public file could not be fetched, verified or read; ``url`` names it (the local path
    when a stored file is read)."""

    def __init__(self, message: str, url: str) -> None:
        super().__init__(message)
        self.url = url


class PublicFileMissing(PublicFileError):
    """HTTP 404: Binance has not published the file (yet). A day appears some hours after it
    ends; retry later. A symbol that did not trade that day never gets one."""


class PublicFileUnavailable(PublicFileError):
    """The server kept failing through every retry (5xx, 429, connection errors, transfers cut
    short) or answered with an HTTP status this client does not retry."""


class PublicFileInvalid(PublicFileError):
    """The file's content is not what Binance publishes: a checksum that does not match, a
    corrupt zip, an unexpected CSV. Nothing of it was stored."""


class ChecksumMismatch(PublicFileInvalid):
    """The SHA256 of the zip differs from its ``.CHECKSUM`` (or the checksum file is not one)."""


class CorruptZip(PublicFileInvalid):
    """The zip does not open, is cut short, fails a CRC, or does not hold the one CSV expected."""


class UnexpectedCsv(PublicFileInvalid):
    """The CSV does not have the expected layout or values: column count, a header row that
    names other columns, unparsable or out-of-range values, duplicate ids."""


class WrongTimeUnits(UnexpectedCsv):
    """The times are not inside the file's day or month in the unit Binance uses for its
    date (milliseconds before 2025-01-01, microseconds from then on)."""


# --- names --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PublicFile:
    """A verified public zip in the lake."""

    url: str
    path: Path
    sha256: str
    size_bytes: int
    downloaded: bool  # False: the stored copy already matched Binance's checksum


def public_file_url(base_url: str, kind: str, symbol: str, day: str | date,
                    interval: str | None = None) -> str:  # fmt: skip
    """The URL of a public zip: ``{base}/data/spot/daily/trades/BTCUSDT/BTCUSDT-trades-
    2025-03-01.zip``; ``day`` a ``YYYY-MM`` month selects the monthly file."""
    return f"{base_url.rstrip('/')}/data/{public_file_key(kind, symbol, day, interval)}"


def checksum_path(zip_path: Path) -> Path:
    """The stored ``.CHECKSUM`` beside a stored zip."""
    return Path(zip_path).with_name(Path(zip_path).name + CHECKSUM_SUFFIX)


# --- HTTP ---------------------------------------------------------------------------------------
class _ShortTransfer(OSError):
    """The connection ended before Content-Length bytes arrived."""


def _download(url: str, sink: BinaryIO, *, timeout: float, max_retries: int, sleep=time.sleep,
              ) -> tuple[str, int]:  # fmt: skip
    """GET ``url`` into ``sink`` (rewound and truncated before each attempt) with retries and
    exponential backoff on 429, 5xx, connection errors and short transfers; returns (SHA256,
    bytes). 404 raises PublicFileMissing at once, any other client error
    PublicFileUnavailable."""
    delay, reason = 1.0, "no attempt"
    for attempt in range(max_retries + 1):
        sink.seek(0)
        sink.truncate()
        try:
            return _get_once(url, sink, timeout)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise PublicFileMissing(
                    f"{url}: not published (HTTP 404). Binance publishes a day some hours "
                    "after it ends: retry later; a symbol that did not trade that day (not "
                    "listed yet, or delisted) never gets a file",
                    url,
                ) from None
            if exc.code != 429 and exc.code < 500:
                raise PublicFileUnavailable(
                    f"{url}: HTTP {exc.code}, not retried; check binance.public_data_url and "
                    "that the host serves Binance's layout",
                    url,
                ) from None
            wait = _retry_after(exc) or delay
            reason = f"HTTP {exc.code}"
        except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException,
                _ShortTransfer) as exc:  # fmt: skip
            wait, reason = delay, str(exc)
        if attempt == max_retries:
            break
        log.warning("%s: %s, retrying in %.1f s", url, reason, wait)
        sleep(wait)
        delay = min(delay * 2, 30.0)
    raise PublicFileUnavailable(
        f"{url}: giving up after {max_retries + 1} attempts (last: {reason}); the server or "
        "the network is failing: retry later",
        url,
    )


def _get_once(url: str, sink: BinaryIO, timeout: float) -> tuple[str, int]:
    sha, n = hashlib.sha256(), 0
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        expected = resp.headers.get("Content-Length")
        while chunk := resp.read(CHUNK):
            sink.write(chunk)
            sha.update(chunk)
            n += len(chunk)
    if expected is not None and expected.isdigit() and n != int(expected):
        raise _ShortTransfer(f"transfer cut short: {n} of {expected} bytes")
    return sha.hexdigest(), n


def _retry_after(exc: urllib.error.HTTPError) -> float | None:
    value = exc.headers.get("Retry-After") if exc.headers else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


# --- verification -------------------------------------------------------------------------------
def parse_checksum(text: bytes, zip_name: str, where: str) -> str:
    """The SHA256 (lower-case hex) of a ``.CHECKSUM`` file's ``<64 hex>  <name>`` line, which
    must name ``zip_name``."""
    m = _CHECKSUM_RE.fullmatch(text.strip())
    if m is None:
        raise ChecksumMismatch(
            f"{where}: not a sha256sum line ({text[:120]!r}); the checksum file is damaged or "
            "the host is not Binance's file site: check binance.public_data_url",
            where,
        )
    if m.group(2).decode(errors="replace") != zip_name:
        raise ChecksumMismatch(
            f"{where}: the checksum is for {m.group(2).decode(errors='replace')}, not "
            f"{zip_name}; check binance.public_data_url",
            where,
        )
    return m.group(1).decode().lower()


def sha256_file(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            sha.update(chunk)
    return sha.hexdigest()


def verify_stored_file(zip_path: Path) -> str:
    """Check a stored zip against its stored ``.CHECKSUM`` (no network); returns the SHA256.
    Raises ChecksumMismatch (fetch it again: ``fetch_public_file`` replaces a stored file
    that no longer matches) or PublicFileError when the checksum file is missing."""
    zip_path = Path(zip_path)
    try:
        text = checksum_path(zip_path).read_bytes()
    except FileNotFoundError:
        raise PublicFileError(
            f"{zip_path}: no {CHECKSUM_SUFFIX} beside it; fetch it with fetch_public_file, "
            "which stores both",
            str(zip_path),
        ) from None
    expected = parse_checksum(text, zip_path.name, str(checksum_path(zip_path)))
    actual = sha256_file(zip_path)
    if actual != expected:
        raise ChecksumMismatch(
            f"{zip_path}: SHA256 {actual} differs from its {CHECKSUM_SUFFIX} ({expected}); the "
            "stored copy is damaged: fetch it again",
            str(zip_path),
        )
    return actual


def csv_member(zf: zipfile.ZipFile, csv_name: str, where: str) -> zipfile.ZipInfo:
    """The one CSV of a public zip, which has the zip's name with ``.csv``."""
    infos = [i for i in zf.infolist() if not i.is_dir()]
    if len(infos) != 1 or infos[0].filename != csv_name:
        raise CorruptZip(
            f"{where}: expected one file {csv_name} in the zip, found "
            f"{[i.filename for i in infos][:5]}; not a Binance public file: check "
            "binance.public_data_url",
            where,
        )
    return infos[0]


HEADER_LINE_BYTES = 64 << 10  # of a CSV's first row, at most, that has_header reads


def has_header(stream: BinaryIO, kind: str, where: str) -> bool:
    """Read a CSV's first row: True for a header naming the expected columns (to skip),
    False for data; UnexpectedCsv for anything else, an empty file too (Binance publishes no
    file rather than an empty one: taken as a day without trades, it would be a false
    record)."""
    columns = CSV_COLUMNS[kind]
    text = stream.readline(HEADER_LINE_BYTES).decode("utf-8-sig", errors="replace").strip()
    if not text:
        raise UnexpectedCsv(
            f"{where}: the CSV is empty or starts with an empty line; Binance's files have a "
            "row per trade (kline): the file is not one of them",
            where,
        )
    fields = [f.strip().strip('"').lower() for f in text.split(",")]
    if len(fields) != len(columns):
        raise UnexpectedCsv(
            f"{where}: the first row has {len(fields)} columns, expected {len(columns)} "
            f"({','.join(columns)}): {text[:160]!r}; Binance's {kind} format may have changed: "
            "update crypto_lake/lib/history/public_files.py (CSV_COLUMNS)",
            where,
        )
    if _NUMBER_RE.fullmatch(fields[0]):
        return False
    if all(f in (c, *HEADER_ALIASES.get(c, ())) for f, c in zip(fields, columns, strict=True)):
        return True
    raise UnexpectedCsv(
        f"{where}: the first row is neither data nor the header {','.join(columns)}: "
        f"{text[:160]!r}; Binance's {kind} format may have changed: update "
        "crypto_lake/lib/history/public_files.py (CSV_COLUMNS, HEADER_ALIASES)",
        where,
    )


def verify_zip(path: Path, csv_name: str, kind: str, where: str) -> None:
    """The zip opens, holds the one CSV expected, every CRC is good (reads it all) and the
    CSV's first row is data or the expected header."""
    try:
        with zipfile.ZipFile(path) as zf:
            info = csv_member(zf, csv_name, where)
        with open_member(path, info) as stream:
            has_header(stream, kind, where)
            while stream.read(CHUNK):  # to the end: the CRC-32 is checked there
                pass
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise CorruptZip(
            f"{where}: corrupt or truncated zip ({exc}); Binance's checksum matched, so the "
            "file on the server is damaged: retry later, and report it to Binance if it stays",
            where,
        ) from None


# --- fetch --------------------------------------------------------------------------------------
def fetch_public_file(
    base_url: str, kind: str, symbol: str, day: str | date, interval: str | None = None, *,
    layout: LakeLayout, timeout: float = 60.0, max_retries: int = 5, sleep=time.sleep,
) -> PublicFile:  # fmt: skip
    """Download one public zip (``kind`` trades, aggTrades or klines with ``interval``; a
    ``YYYY-MM`` ``day`` for the monthly file) and its ``.CHECKSUM`` into ``layout``, verified.

    The checksum is fetched first. A stored zip with that SHA256 is kept as it is
    (``downloaded`` False). Otherwise the zip is downloaded to a temporary file beside its
    final name, and renamed into place only when its SHA256 matches and the zip checks out
    (``verify_zip``); the checksum file is stored after it. Raises PublicFileMissing (HTTP
    404: retry later), PublicFileUnavailable (retries exhausted) or PublicFileInvalid; on
    any error nothing is stored or changed.
    """
    url = public_file_url(base_url, kind, symbol, day, interval)
    final = layout.public_file(kind, symbol, day, interval)
    fetch = {"timeout": timeout, "max_retries": max_retries, "sleep": sleep}
    buf = io.BytesIO()
    _download(url + CHECKSUM_SUFFIX, buf, **fetch)
    checksum_text = buf.getvalue()
    expected = parse_checksum(checksum_text, final.name, url + CHECKSUM_SUFFIX)
    if final.exists() and sha256_file(final) == expected:
        _store_checksum(final, checksum_text)
        return PublicFile(url, final, expected, final.stat().st_size, downloaded=False)
    if final.exists():
        log.warning("%s: the stored copy differs from Binance's checksum; downloading again", final)
    with atomic_path(final) as tmp:
        with open(tmp, "w+b") as sink:
            actual, size = _download(url, sink, **fetch)
        if actual != expected:
            raise ChecksumMismatch(
                f"{url}: SHA256 {actual} of the {size} bytes received differs from its "
                f"{CHECKSUM_SUFFIX} ({expected}); nothing stored. Retry later (Binance may be "
                "replacing the file); if it stays, the server's file is damaged",
                url,
            )
        verify_zip(tmp, final.name[: -len(".zip")] + ".csv", kind, url)
    _store_checksum(final, checksum_text)
    log.info("stored %s (%d bytes, sha256 %s)", final, size, actual)
    return PublicFile(url, final, actual, size, downloaded=True)


def _store_checksum(zip_path: Path, text: bytes) -> None:
    side = checksum_path(zip_path)
    if not side.exists() or side.read_bytes() != text:
        atomic_write_bytes(side, text)
