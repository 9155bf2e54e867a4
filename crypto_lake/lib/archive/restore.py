"""Restore a symbol-day from the bucket onto a lake, and prove the archive reproduces it.

    python -m crypto_lake.lib.archive.restore --day 2026-12-04 [--symbols BTCUSDT,ETHUSDT] \\
        [--config crypto_lake.yaml] [--lake /var/lib/crypto-lake] [--force]

``restore_day`` works on any lake root, typically a fresh one:

1. downloads the day's archive files and sidecars (objects ``{prefix}/archive/...``, see
   ``day.object_name``) into the lake's ``archive/`` folder, each checked against the MD5 and
   CRC32C GCS reports (``gcs.download_file``), plus the compacted raw lines and sidecar of the
   day before and after where the bucket has them: trades are filed by the day they were
   received, so the last trades of a day sit in the next day's first lines (and, rarely, the
   first in the previous day's last);
2. verifies each file against its sidecar (size, SHA256; for raw also line count and content
   hash; the sidecar names this symbol and day);
3. rebuilds trades, quotes, bars_1s, bars_1m and coverage from the verified raw lines with the
   functions the market assets use, and the outage intervals and previous close the sidecars
   recorded, in a scratch folder under the lake root;
4. compares each rebuilt table's SHA256 with the archived one, then moves the tables (and the
   state the next Dagster run reads: outages, trade id conflicts, per-second summary) into
   the lake. A local table file holding different bytes is never replaced without ``force``.

The report is ``ok`` only when every file verified and every rebuilt table is byte-identical
to its archived original; a missing object, a hash mismatch or a rebuild that differs is a
problem, named in ``RestoreReport.problems``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.cloud.storage import Bucket

from crypto_lake.lib.archive import gcs
from crypto_lake.lib.archive.day import (
    CODE_VERSION,
    archive_status,
    file_sha256,
    object_name,
    read_sidecar,
)
from crypto_lake.lib.core.config import ConfigError, load_config
from crypto_lake.lib.core.fsutil import make_dirs
from crypto_lake.lib.core.logs import get_logger, setup_logging
from crypto_lake.lib.core.paths import ARCHIVE_DATASETS, ARCHIVE_TABLES, RAW_ARCHIVE, LakeLayout
from crypto_lake.lib.core.symbols import shift_day, validate_day, validate_symbol
from crypto_lake.lib.market.bars import build_bars_1m, build_bars_1s
from crypto_lake.lib.market.coverage import build_coverage
from crypto_lake.lib.market.dedup import trade_conflicts_path
from crypto_lake.lib.market.outages import save_outage_intervals
from crypto_lake.lib.market.ticks import build_ticks

_log = get_logger("archive.restore")

CONTEXT_KEYS = ("outage_intervals", "previous_close")


@dataclass
class FileRestore:
    """One archive file of the restore: where it came from, whether it verified, and for a
    table whether the rebuild reproduced it."""

    dataset: str
    day: str
    uri: str | None = None  # the object downloaded, gs://bucket/name
    md5: str | None = None  # its MD5 as GCS reports it (base64)
    action: str | None = None  # "downloaded" | "present" (already local, same bytes)
    verified: bool = False  # the file matches its sidecar (deep check)
    archived_sha256: str | None = None  # what the sidecar says
    rebuilt_sha256: str | None = None  # tables only
    identical: bool | None = None  # tables only: rebuilt_sha256 == archived_sha256


@dataclass
class RestoreReport:
    symbol: str
    day: str
    files: dict[str, FileRestore] = field(default_factory=dict)  # the day's, by dataset
    neighbours: dict[str, FileRestore] = field(default_factory=dict)  # raw of D±1, by day
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # facts worth knowing, not failures
    installed: list[Path] = field(default_factory=list)  # lake files written by the rebuild
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            not self.problems
            and set(self.files) == set(ARCHIVE_DATASETS)
            and all(f.verified for f in self.files.values())
            and all(self.files[n].identical for n in ARCHIVE_TABLES)
        )


class _Refused(RuntimeError):
    """A local file holds other bytes than the object and ``force`` was not given."""


def restore_day(
    layout: LakeLayout,
    bucket: Bucket,
    prefix: str,
    symbol: str,
    day: str,
    *,
    attempts: int = 5,
    backoff_seconds: float = 0.5,
    backoff_cap_seconds: float = 30.0,
    timeout_seconds: float = 120.0,
    force: bool = False,
    log: logging.Logger | None = None,
) -> RestoreReport:
    """Restore (symbol, day) from ``bucket`` (a google.cloud.storage Bucket) into ``layout``
    and rebuild its tables from the raw lines (see the module docstring)."""
    symbol, day = validate_symbol(symbol), validate_day(day)
    t0 = time.perf_counter()
    report = RestoreReport(symbol, day)
    opts = {"attempts": attempts, "backoff_seconds": backoff_seconds,
            "backoff_cap_seconds": backoff_cap_seconds, "timeout_seconds": timeout_seconds,
            "log": log or _log}  # fmt: skip
    fetch = _Fetcher(layout, bucket, prefix, symbol, force, opts, report.problems)
    for name in ARCHIVE_DATASETS:
        report.files[name] = fetch.archive_file(name, day)
    for other in (shift_day(day, -1), shift_day(day, 1)):
        if fetch.in_bucket(RAW_ARCHIVE, other):
            report.neighbours[other] = fetch.archive_file(RAW_ARCHIVE, other)
        else:
            report.notes.append(f"raw {other}: not in the bucket; its lines are not read")
    if report.files[RAW_ARCHIVE].verified:
        _rebuild_and_compare(layout, report, force)
    else:
        report.problems.append(
            f"tables of {day} not rebuilt: the raw archive of {day} is not restored and verified"
        )
    report.seconds = time.perf_counter() - t0
    return report


@dataclass
class _Fetcher:
    """Brings one symbol's archive files from the bucket into the lake, verified; each
    failure becomes a line of ``problems``."""

    layout: LakeLayout
    bucket: Bucket
    prefix: str
    symbol: str
    force: bool
    opts: dict[str, Any]
    problems: list[str]

    def object_of(self, path: Path) -> str:
        return object_name(self.prefix, self.layout, path)

    def in_bucket(self, dataset: str, day: str) -> bool:
        name = self.object_of(self.layout.archive_file(dataset, self.symbol, day))
        try:
            return self._stat(name) is not None
        except gcs.CopyError as exc:
            self.problems.append(f"{dataset} {day}: {exc}")
            return False

    def archive_file(self, dataset: str, day: str) -> FileRestore:
        """Download a file and its sidecar, then check the file against the sidecar."""
        entry = FileRestore(dataset, day)
        data = self.layout.archive_file(dataset, self.symbol, day)
        sidecar = self.layout.archive_sidecar(dataset, self.symbol, day)
        try:
            copy = self._fetch(self.object_of(data), data)
            entry.uri, entry.md5, entry.action = copy.uri, copy.md5, copy.action
            self._fetch(self.object_of(sidecar), sidecar)
        except (gcs.CopyError, _Refused, OSError) as exc:
            self.problems.append(f"{dataset} {day}: {exc}")
            return entry
        _verify(self.layout, self.symbol, entry, self.problems)
        return entry

    def _stat(self, name: str) -> gcs.ObjectCopy | None:
        return gcs.stat_object(
            self.bucket,
            name,
            attempts=self.opts["attempts"],
            backoff_seconds=self.opts["backoff_seconds"],
        )

    def _fetch(self, name: str, dest: Path) -> gcs.ObjectCopy:
        """``gcs.download_file``, except that a local file already holding the object's
        bytes is kept, and one holding other bytes is replaced only with ``force``."""
        if dest.exists():
            found = self._stat(name)
            if found is None:
                raise gcs.CopyError(f"gs://{self.bucket.name}/{name} does not exist")
            md5, crc, size = gcs.local_hashes(dest)
            if (found.md5, found.crc32c, found.size) == (md5, crc, size):
                return found
            if not self.force:
                raise _Refused(
                    f"{dest} exists with other bytes than {found.uri}; kept (re-run with "
                    "--force to replace it)"
                )
        return gcs.download_file(self.bucket, name, dest, **self.opts)


def _verify(layout: LakeLayout, symbol: str, entry: FileRestore, problems: list[str]) -> None:
    """Check a restored file against its sidecar (deep: raw lines and content hash)."""
    status = archive_status(layout, symbol, entry.day, deep=True, datasets=(entry.dataset,))
    sidecar = read_sidecar(layout.archive_sidecar(entry.dataset, symbol, entry.day)) or {}
    entry.archived_sha256 = sidecar.get("sha256")
    found = list(status.problems)
    if sidecar and sidecar.get("dataset") != entry.dataset:
        found.append(f"sidecar is for dataset {sidecar.get('dataset')!r}, not {entry.dataset!r}")
    entry.verified = not found and entry.dataset in status.sidecars
    problems += [
        f"{entry.dataset} {entry.day}: {p} (the archive in the bucket is damaged: "
        "re-upload it from a lake that still has it)"
        for p in found
    ]


def _rebuild_and_compare(layout: LakeLayout, report: RestoreReport, force: bool) -> None:
    """Rebuild the day's tables in a scratch lake, compare them, move them into ``layout``."""
    symbol, day = report.symbol, report.day
    raw = [layout.archive_file(RAW_ARCHIVE, symbol, day)]
    raw += [
        layout.archive_file(RAW_ARCHIVE, symbol, d)
        for d, f in sorted(report.neighbours.items())
        if f.verified
    ]
    make_dirs(layout.root)
    with tempfile.TemporaryDirectory(prefix=".restore-", dir=layout.root) as tmp:
        scratch = LakeLayout(Path(tmp))
        try:
            context, missing = _build_context(layout, report)
            built = rebuild_tables(scratch, symbol, day, raw, **context)
        except Exception as exc:  # a build error is a finding of the restore, not a crash
            report.problems.append(f"rebuild of {day} failed: {exc!r}")
            return
        if missing:
            report.notes.append(f"the sidecars of {day} do not record {', '.join(missing)}")
        for name, path in built.items():
            entry = report.files[name]
            entry.rebuilt_sha256 = file_sha256(path)[0]
            if entry.archived_sha256 is None:
                continue  # its sidecar is missing: reported, nothing to compare with
            entry.identical = entry.rebuilt_sha256 == entry.archived_sha256
            if not entry.identical:
                report.problems.append(_differs(layout, report, entry, missing))
        _install(scratch, layout, built, force, report)


def _build_context(layout: LakeLayout, report: RestoreReport) -> tuple[dict[str, Any], list[str]]:
    """The outage intervals and previous close the day's sidecars recorded (every sidecar
    carries the same context; the verified ones are read)."""
    sidecars = [
        read_sidecar(layout.archive_sidecar(n, report.symbol, report.day)) or {}
        for n in ("bars_1s", "coverage", RAW_ARCHIVE)
        if report.files[n].verified
    ]
    found = {k: next((s[k] for s in sidecars if k in s), None) for k in CONTEXT_KEYS}
    missing = [k for k in CONTEXT_KEYS if not any(k in s for s in sidecars)]
    previous = found["previous_close"]
    intervals = [(int(a), int(b), str(k)) for a, b, k in found["outage_intervals"] or []]
    return {
        "outage_intervals": intervals,
        "previous_close": None if previous in (None, "none") else str(previous),
    }, missing


def rebuild_tables(
    layout: LakeLayout,
    symbol: str,
    day: str,
    raw_files: list[Path],
    *,
    outage_intervals: list[tuple[int, int, str]],
    previous_close: str | None,
) -> dict[str, Path]:
    """Build the (symbol, day) tables in ``layout`` from ``raw_files`` as the market assets do
    (``ticks``, ``bars_1s``, ``bars_1m``, ``coverage``), with the outages and previous close
    given instead of the ones the lake would hold. Returns dataset -> partition file."""
    out = {n: layout.market_file(n, symbol, day) for n in ARCHIVE_TABLES}
    seconds = layout.tick_seconds_path(symbol, day)
    build_ticks(raw_files, symbol, day, out["trades"], out["quotes"],
                layout.quarantine_root / symbol / day, seconds_out=seconds,
                conflicts_out=trade_conflicts_path(layout, symbol, day))  # fmt: skip
    save_outage_intervals(layout, symbol, day, outage_intervals)
    build_bars_1s(out["trades"], out["quotes"], symbol, day, out["bars_1s"],
                  outages=[(a, b) for a, b, _ in outage_intervals],
                  previous_close=previous_close, seconds=seconds)  # fmt: skip
    build_bars_1m(out["bars_1s"], out["bars_1m"])
    build_coverage(out["bars_1s"], out["quotes"], symbol, day, out["coverage"], outage_intervals)
    return out


def _differs(
    layout: LakeLayout, report: RestoreReport, entry: FileRestore, missing: list[str]
) -> str:
    """Why a rebuilt table may differ from its archived original, as far as can be told."""
    text = (
        f"{entry.dataset} {entry.day}: the rebuilt file (sha256 "
        f"{(entry.rebuilt_sha256 or '')[:16]}) differs from the archived one (sha256 "
        f"{(entry.archived_sha256 or '')[:16]})"
    )
    hints = []
    absent = [
        d
        for d in (shift_day(entry.day, -1), shift_day(entry.day, 1))
        if not (d in report.neighbours and report.neighbours[d].verified)
    ]
    if absent:
        hints.append(
            f"raw of {' and '.join(absent)} not restored (lines of {entry.day} "
            "received then are missing)"
        )
    sidecar = read_sidecar(layout.archive_sidecar(entry.dataset, report.symbol, entry.day)) or {}
    if sidecar.get("code_version") not in (None, CODE_VERSION):
        hints.append(f"archived by code {sidecar['code_version']}, rebuilt by {CODE_VERSION}")
    if missing:
        hints.append(f"sidecars lack {', '.join(missing)}")
    hint = f"; likely cause: {'; '.join(hints)}" if hints else ""
    original = layout.archive_file(entry.dataset, report.symbol, entry.day)
    return f"{text}{hint}. The archived original is {original}"


def _install(
    scratch: LakeLayout,
    layout: LakeLayout,
    built: dict[str, Path],
    force: bool,
    report: RestoreReport,
) -> None:
    """Move every file the rebuild wrote into ``layout``. All or nothing: a table file that
    exists there with other bytes is kept (a problem) unless ``force``; the state files the
    build writes (outages, conflicts, per-second summary, quarantine) follow the tables."""
    moves = [
        (src, layout.root / src.relative_to(scratch.root))
        for src in sorted(scratch.root.rglob("*"))
        if src.is_file()
    ]
    tables = set(built.values())
    clash = [
        dest
        for src, dest in moves
        if src in tables and dest.exists() and file_sha256(dest)[0] != file_sha256(src)[0]
    ]
    if clash and not force:
        report.problems += [
            f"{dest} exists with other content than the rebuild; nothing "
            "installed (re-run with --force to replace it)"
            for dest in clash
        ]
        return
    for src, dest in moves:
        make_dirs(dest.parent)
        os.replace(src, dest)
        report.installed.append(dest)


# CLI -----------------------------------------------------------------------------------------
def render_report(report: RestoreReport) -> str:
    """A plain-text summary of one symbol-day: a row per file, then problems and notes."""
    verdict = "OK: verified, rebuilt byte-identical" if report.ok else "FAILED"
    lines = [
        f"{report.day} {report.symbol}: {verdict} ({report.seconds:.1f} s)",
        f"  {'dataset':<16} {'verified':<9} {'identical':<10} {'archived sha256':<17} "
        f"{'rebuilt sha256':<17} object (md5)",
    ]
    rows = [(n, f) for n, f in report.files.items()]
    rows += [(f"raw {d}", f) for d, f in sorted(report.neighbours.items())]
    for label, f in rows:
        identical = "-" if f.identical is None else ("yes" if f.identical else "NO")
        obj = f"{f.uri} ({f.md5})" if f.uri else "not restored"
        lines.append(
            f"  {label:<16} {'yes' if f.verified else 'NO':<9} {identical:<10} "
            f"{(f.archived_sha256 or '-')[:16]:<17} {(f.rebuilt_sha256 or '-')[:16]:<17} "
            f"{obj}"
        )
    lines += [f"  problem: {p}" for p in report.problems]
    lines += [f"  note: {n}" for n in report.notes]
    return "\n".join(lines)


def _bucket(project: str | None, name: str):
    from dagster_gcp import GCSResource  # the client the Dagster assets use; a heavy import

    return gcs.bucket_from(GCSResource(project=project).get_client(), name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Restore symbol-days from the GCS archive into a lake and prove them: "
        "every file verified against its sidecar, every table rebuilt from the raw lines "
        "byte-identical to the archived one. Exit 0: all ok; 1: problems; 2: usage/config."
    )
    parser.add_argument("--day", required=True, help="UTC day, YYYY-MM-DD")
    parser.add_argument(
        "--symbols", help="comma-separated, e.g. BTCUSDT,ETHUSDT (default: the configured symbols)"
    )
    parser.add_argument(
        "--config", help="config file (default: $CRYPTO_LAKE_CONFIG, else ./crypto_lake.yaml)"
    )
    parser.add_argument("--lake", help="lake root to restore into (default: lake_root)")
    parser.add_argument(
        "--force", action="store_true", help="replace local files that hold other bytes"
    )
    args = parser.parse_args(argv)
    setup_logging()
    try:
        day = validate_day(args.day)
        cfg = load_config(args.config)
        symbols = (
            [validate_symbol(s.strip()) for s in args.symbols.split(",") if s.strip()]
            if args.symbols
            else cfg.symbols
        )
    except (ValueError, ConfigError) as exc:
        parser.error(str(exc))
    a = cfg.archive
    if not a.bucket:
        print(
            "restore: no bucket configured: set archive.bucket in the config file or "
            "CRYPTO_LAKE__ARCHIVE__BUCKET",
            file=sys.stderr,
        )
        return 2
    try:
        bucket = _bucket(a.gcs_project, a.bucket)
    except Exception as exc:  # credentials, project: configuration, not data
        print(f"restore: cannot make a GCS client: {exc}", file=sys.stderr)
        return 2
    layout = LakeLayout(Path(args.lake) if args.lake else cfg.lake_root)
    failed = 0
    for symbol in symbols:
        try:
            report = restore_day(layout, bucket, a.prefix, symbol, day,
                                 attempts=a.upload_attempts, backoff_seconds=a.backoff_base_seconds,
                                 backoff_cap_seconds=a.backoff_cap_seconds,
                                 timeout_seconds=a.timeout_seconds, force=args.force)  # fmt: skip
        except Exception as exc:  # one symbol's surprise must not hide the others' results
            _log.exception("restore of %s %s failed", symbol, day)
            report = RestoreReport(symbol, day, problems=[f"restore failed: {exc!r}"])
        print(render_report(report), flush=True)
        failed += not report.ok
    if failed:
        print(
            f"restore of {day}: {failed} of {len(symbols)} symbol-day(s) FAILED (problems "
            f"above). Re-upload missing or damaged objects (gcs_archive_copy from a lake "
            f"that still has them) and re-run; --force replaces local files that differ.",
            file=sys.stderr,
        )
        return 1
    print(
        f"restore of {day}: {len(symbols)} symbol-day(s) restored into {layout.root}, "
        "every file verified and every table rebuilt byte-identical"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
