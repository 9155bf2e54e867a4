"""Deleting raw minute files once their day is safely archived (SPEC §9), and disk use.

Safety rules. A sealed part file ``raw/binance/{S}/{D}/part-NNNNNN.jsonl[.gz|.zst]`` is deleted
only when all of these hold for its day folder:

* Age: ``D <= today - retention_days`` and ``D < today``, where ``today`` is the UTC date the
  caller passes in. With 7 days on 2026-11-27, folders of 2026-11-20 and earlier may go (the
  day ended at least six days ago). File times (mtime) are never consulted, so a clock that
  jumped or a file dated in the future changes nothing, and a folder dated today or later
  (clock skew) is never touched, whatever ``retention_days`` says.
* The day's archive is complete (``archive_status``): every archive file present and matching
  its sidecar; the plan re-reads the compacted raw file (line count, content SHA256).
* Every sealed part in the folder is listed in the raw sidecar's ``parts`` (a part that
  arrived after compaction blocks the folder), and no ``.open`` file is there (not closed).
  While all listed parts are still present, their total size must equal the sidecar's
  ``input_bytes`` (a part that changed after compaction blocks the folder).
* When a bucket is configured (``copy_verified`` given), it vouches for every archive file
  and sidecar of the day.

Only regular files with a sealed part name are deleted: never an ``.open`` file, a symlink,
another file, or anything outside ``raw/binance/``. ``apply_retention`` re-checks each folder
just before deleting (the archive files must still hash to the sidecars the plan verified),
so a plan made earlier cannot delete after the archive was damaged or replaced in between.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import partial
from pathlib import Path
from typing import Literal

from crypto_lake.lib.archive.day import archive_files, archive_status
from crypto_lake.lib.core.logs import get_logger
from crypto_lake.lib.core.paths import ARCHIVE_DATASETS, RAW_ARCHIVE, LakeLayout, parse_part_name
from crypto_lake.lib.core.symbols import InvalidNameError, validate_day, validate_symbol

log = get_logger("archive.retention")


@dataclass
class FolderCheck:
    """Whether one raw day folder's parts may go: ``reason`` says why not (None: they may)."""

    reason: str | None
    sha256: dict[str, str] = field(default_factory=dict)  # dataset -> archive file as verified
    parts: frozenset[str] = frozenset()  # part names the compacted raw file holds
    files: list[Path] = field(default_factory=list)  # the folder's sealed parts, all held


@dataclass
class RetentionPlan:
    """What ``plan_retention`` decided: the files to delete and why every other folder stays."""

    today: date
    retention_days: int
    delete: list[Path] = field(default_factory=list)  # sealed part files
    kept: dict[str, str] = field(default_factory=dict)  # "S/D" -> why the folder stays
    verified: dict[str, dict[str, str]] = field(default_factory=dict)  # "S/D" -> sha256s
    folders: int = 0  # day folders looked at
    delete_bytes: int = 0


@dataclass
class RetentionResult:
    """What ``apply_retention`` did."""

    deleted: list[Path] = field(default_factory=list)
    bytes_freed: int = 0
    folders_removed: list[Path] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # "S/D" -> why the re-check refused
    errors: list[str] = field(default_factory=list)


def _sealed(folder: Path) -> tuple[list[Path], bool]:
    """The folder's sealed part files (regular files only) and whether an ``.open`` is there."""
    parts, has_open = [], False
    for entry in os.scandir(folder):
        name = parse_part_name(entry.name)
        if name is not None and name.is_open:
            has_open = True
        elif name is not None and entry.is_file(follow_symlinks=False):
            parts.append(Path(entry.path))
    return sorted(parts), has_open


def check_folder(layout: LakeLayout, symbol: str, day: str, *, deep: bool = True,
                 copy_verified: Callable[[Path], bool] | None = None) -> FolderCheck:  # fmt: skip
    """Check the archive rules (all but age) for one raw day folder."""
    parts, has_open = _sealed(layout.raw_day_dir(symbol, day))
    if has_open:
        return FolderCheck("an .open part is still being written")
    status = archive_status(layout, symbol, day, deep=deep)
    if not status.complete:
        bad = [n for n in ARCHIVE_DATASETS if n not in status.sidecars]
        detail = "; ".join(p.replace(f"{layout.root}/", "") for p in status.problems)
        return FolderCheck(f"archive of {', '.join(bad)} not verified: {detail}")
    raw = status.sidecars[RAW_ARCHIVE]
    listed = frozenset(raw.get("parts") or ())
    if extra := [p.name for p in parts if p.name not in listed]:
        return FolderCheck(f"{', '.join(extra)} not in the compacted file (arrived after it)")
    size = sum(p.stat().st_size for p in parts)
    if len(parts) == len(listed) and size != raw.get("input_bytes"):
        return FolderCheck(f"parts hold {size} bytes, {raw.get('input_bytes')} were compacted")
    for path in archive_files(layout, symbol, day) if copy_verified else ():
        try:
            ok, why = copy_verified(path), ""
        except Exception as exc:  # a failed check is an unverified copy, never a deletion
            ok, why = False, f" ({exc!r})"
        if not ok:
            rel = path.relative_to(layout.root)
            return FolderCheck(f"copy of {rel} not verified in the bucket{why}")
    sha = {name: meta["sha256"] for name, meta in status.sidecars.items()}
    return FolderCheck(None, sha, listed, parts)


def _day_folders(layout: LakeLayout) -> list[tuple[str, str]]:
    """(symbol, day) of every real (not symlinked) raw day folder with valid names."""
    out: list[tuple[str, str]] = []
    if not layout.raw_root.is_dir():
        return out
    for s in os.scandir(layout.raw_root):
        if not s.is_dir(follow_symlinks=False) or not _valid(validate_symbol, s.name):
            continue
        for d in os.scandir(s.path):
            if d.is_dir(follow_symlinks=False) and _valid(validate_day, d.name):
                out.append((s.name, d.name))
    return sorted(out)


def _valid(check: Callable[[str], str], name: str) -> bool:
    try:
        return check(name) == name
    except InvalidNameError:
        return False


def plan_retention(layout: LakeLayout, *, today: date, retention_days: int,
                   copy_verified: Callable[[Path], bool] | None,
                   deep: bool = True) -> RetentionPlan:  # fmt: skip
    """Decide which sealed raw part files may be deleted (see the module docstring)."""
    plan = RetentionPlan(today, retention_days)
    newest = min(today - timedelta(days=retention_days), today - timedelta(days=1))
    for symbol, day in _day_folders(layout):
        plan.folders += 1
        key = f"{symbol}/{day}"
        if date.fromisoformat(day) > newest:
            plan.kept[key] = f"{day} {symbol}: younger than {retention_days} days"
            continue
        check = check_folder(layout, symbol, day, deep=deep, copy_verified=copy_verified)
        if check.reason is not None:
            plan.kept[key] = f"{day} {symbol}: {check.reason}"
            continue
        plan.verified[key] = check.sha256
        plan.delete += check.files
        plan.delete_bytes += sum(p.stat().st_size for p in check.files)
    log.info("retention plan: %d of %d day folders may go (%d files, %d bytes)",
             len(plan.verified), plan.folders, len(plan.delete), plan.delete_bytes)  # fmt: skip
    return plan


def apply_retention(layout: LakeLayout, plan: RetentionPlan, *,
                    recheck: Callable[[LakeLayout, str, str], FolderCheck] | None = None,
                    ) -> RetentionResult:  # fmt: skip
    """Delete the plan's files, folder by folder, after re-checking each folder's archive
    (default: ``check_folder`` without the deep re-read and without asking the bucket again;
    the archive files must still hash to what the plan verified). An empty day folder goes
    too. An error on one file is recorded and the rest continue."""
    recheck = recheck or partial(check_folder, deep=False)
    result = RetentionResult()
    by_folder: dict[Path, list[Path]] = {}
    for path in plan.delete:
        by_folder.setdefault(Path(path).parent, []).append(Path(path))
    for folder, paths in sorted(by_folder.items()):
        symbol, day, key = folder.parent.name, folder.name, f"{folder.parent.name}/{folder.name}"
        if folder.parent.parent != layout.raw_root or key not in plan.verified:
            result.errors.append(f"{folder}: not a verified raw day folder of this plan")
            continue
        check = recheck(layout, symbol, day)
        if check.reason is None and check.sha256 != plan.verified[key]:
            check.reason = "archive changed since the plan"
        if check.reason is not None:
            result.skipped[key] = f"{day} {symbol}: {check.reason}"
            log.warning("retention kept %s %s: %s", day, symbol, check.reason)
            continue
        count, freed = 0, 0
        for path in paths:
            name = parse_part_name(path.name)
            if name is None or name.is_open or path.name not in check.parts:
                result.errors.append(f"{path}: not a sealed part held by the archive")
                continue
            try:
                size = path.lstat().st_size
                path.unlink()
            except FileNotFoundError:
                continue  # already gone
            except OSError as exc:
                result.errors.append(f"{path}: {exc}")
                continue
            result.deleted.append(path)
            count, freed = count + 1, freed + size
        result.bytes_freed += freed
        log.info("retention deleted %d raw files (%d bytes) of %s %s", count, freed, day, symbol)
        try:
            folder.rmdir()
            result.folders_removed.append(folder)
        except OSError:
            pass  # not empty: an .open or other file stays, with its folder
    log.info("retention deleted %d files, %d bytes; %d folders removed; %d errors",
             len(result.deleted), result.bytes_freed, len(result.folders_removed),
             len(result.errors))  # fmt: skip
    return result


@dataclass(frozen=True)
class DiskUsage:
    """Bytes of one file system, as ``shutil.disk_usage`` reports them."""

    total: int
    used: int
    free: int  # available to unprivileged users
    fraction: float  # used / (used + free), as ``df`` shows it (reserved blocks excluded)


def disk_usage(path: Path | str) -> DiskUsage:
    """The use of the file system holding ``path``."""
    u = shutil.disk_usage(path)
    seen = u.used + u.free
    return DiskUsage(u.total, u.used, u.free, u.used / seen if seen else 0.0)


Verdict = Literal["ok", "warn", "fail"]


def disk_verdict(fraction: float, warn: float = 0.8, fail: float = 0.9) -> Verdict:
    """``fail`` at or above ``fail``, ``warn`` at or above ``warn``, else ``ok``."""
    if fraction >= fail:
        return "fail"
    return "warn" if fraction >= warn else "ok"
