"""Raw retention deletes only what the archive provably holds (crypto_lake.lib.archive.retention).

The property test builds random lakes (symbols x days, sealed parts in every compression, open
and stray files, archived or not, then damaged in one of many ways, bucket copies verified or
not, ``today`` anywhere around the folders' days) and checks every deletion independently of
the library: the archive files re-hashed against their sidecars, each deleted part's bytes
found in the decompressed compacted file. Reproducible by default; ``CRYPTO_LAKE_FUZZ_EXAMPLES``
sets the example count and ``CRYPTO_LAKE_FUZZ_RANDOM=1`` draws new examples on every run.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tempfile
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import zstandard
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from crypto_lake.lib.archive.compact import CompactError
from crypto_lake.lib.archive.day import archive_day, archive_files, archive_status
from crypto_lake.lib.archive.retention import (
    RetentionPlan,
    apply_retention,
    disk_usage,
    disk_verdict,
    plan_retention,
)
from crypto_lake.lib.core.paths import (
    ARCHIVE_DATASETS,
    ARCHIVE_TABLES,
    LakeLayout,
    parse_part_name,
    part_file_name,
)
from crypto_lake.lib.core.schema import dataset

EXAMPLES = int(os.environ.get("CRYPTO_LAKE_FUZZ_EXAMPLES", "60"))
RANDOM = os.environ.get("CRYPTO_LAKE_FUZZ_RANDOM") == "1"
# archive_day fsyncs every file it writes: in memory that costs nothing (5x faster here)
FAST_TMP = "/dev/shm" if os.path.isdir("/dev/shm") else None
BASE = date(2026, 11, 20)
SYMBOLS = ("BTCUSDT", "ETHUSDT")
COMPRESSIONS = ("none", "gzip", "zstd")


# building a lake ---------------------------------------------------------------------------
def part_lines(symbol: str, day: str, number: int, extra: str = "") -> bytes:
    return b'{"recv_ns":%d,"conn":"t","session":"connect","tag":"%s/%s/%d%s"}\n' % (
        number,
        symbol.encode(),
        day.encode(),
        number,
        extra.encode(),
    )


def write_part(layout: LakeLayout, symbol: str, day: str, number: int, compression: str,
               content: bytes) -> Path:  # fmt: skip
    folder = layout.raw_day_dir(symbol, day)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / part_file_name(number, compression=compression)
    if compression == "gzip":
        content = gzip.compress(content)
    elif compression == "zstd":
        content = zstandard.ZstdCompressor().compress(content)
    path.write_bytes(content)
    return path


@cache
def empty_table(name: str) -> bytes:
    buf = io.BytesIO()
    pq.write_table(dataset(name).arrow_schema().empty_table(), buf, compression="zstd")
    return buf.getvalue()


def archive(layout: LakeLayout, symbol: str, day: str) -> None:
    """The day's table files (empty, valid) and then its archive."""
    for name in ARCHIVE_TABLES:
        folder = layout.market_partition_dir(name, symbol, day)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "part-0.parquet").write_bytes(empty_table(name))
    archive_day(layout, symbol, day)


def make_folder(layout: LakeLayout, symbol: str, day: str, parts=(("none", True),),
                archived: bool = True) -> list[Path]:  # fmt: skip
    """Sealed parts ``(compression, ends_with_newline)``, then maybe the archive."""
    paths = []
    for n, (compression, newline) in enumerate(parts):
        content = part_lines(symbol, day, n)
        paths.append(write_part(layout, symbol, day, n, compression,
                                content if newline else content[:-1]))  # fmt: skip
    layout.raw_day_dir(symbol, day).mkdir(parents=True, exist_ok=True)
    if archived:
        archive(layout, symbol, day)
    return paths


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-1])


def edit_sidecar(layout: LakeLayout, name: str, symbol: str, day: str, **changes) -> None:
    path = layout.archive_sidecar(name, symbol, day)
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() or p.is_symlink()}


def uncompressed(path: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix == ".gz":
        return gzip.decompress(data)
    if path.suffix == ".zst":
        return zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True).read()
    return data


# the property ------------------------------------------------------------------------------
# damage done to an archived folder: "{kind}:{dataset}" for the archive files, or to its parts
ARCHIVE_DAMAGES = ("drop_sidecar", "delete", "truncate", "flip", "wrong_hash")
PART_DAMAGES = ("new_part", "grow_part")
LATE_DAMAGES = (None, "truncate:raw", "flip:bars_1m", "drop_sidecar:coverage", "new_part")


@dataclass
class FolderSpec:
    symbol: str
    offset: int  # day = BASE + offset
    parts: list[tuple[str, bool]]  # (compression, ends with a newline)
    archived: bool
    open_file: bool
    stray: bool
    damage: str | None
    late_damage: str | None
    copy: str  # "all", "none" or the archive file (dataset, "file"|"sidecar") left unverified

    @property
    def day(self) -> str:
        return (BASE + timedelta(days=self.offset)).isoformat()


def rarely(strategy, none_weight: int = 3):
    """``None`` most of the time, else a draw from ``strategy``."""
    return st.integers(0, none_weight).flatmap(lambda n: strategy if n == 0 else st.none())


COPY_GAPS = [f"{d}:{k}" for d in ARCHIVE_DATASETS for k in ("file", "sidecar")]


def damages():
    on_archive = st.builds("{}:{}".format, st.sampled_from(ARCHIVE_DAMAGES),
                           st.sampled_from(ARCHIVE_DATASETS))  # fmt: skip
    # content_hash: a sidecar whose content hash lies; only a deep plan re-reads the content
    return st.one_of(on_archive, st.sampled_from([*PART_DAMAGES, "content_hash:raw"]))


@st.composite
def folder_specs(draw, symbol: str, offset: int) -> FolderSpec:
    some = draw(st.integers(0, 5)) > 0  # most folders hold parts
    part = st.tuples(st.sampled_from(COMPRESSIONS), st.booleans())
    parts = draw(st.lists(part, min_size=int(some), max_size=3))
    archived = draw(st.integers(0, 3)) > 0
    return FolderSpec(
        symbol,
        offset,
        parts,
        archived,
        open_file=draw(st.integers(0, 5)) == 0,
        stray=draw(st.booleans()),
        damage=draw(rarely(damages(), 2)) if archived else None,
        late_damage=draw(rarely(st.sampled_from(LATE_DAMAGES[1:]), 4)) if archived else None,
        copy=draw(rarely(st.sampled_from(["none", *COPY_GAPS]), 2)) or "all",
    )


@st.composite
def lakes(draw) -> tuple[list[FolderSpec], int, int, bool, bool]:
    """Folders of days BASE..BASE+3; ``today`` such that from none to all of them are old
    enough, and sometimes on or before some of them (a clock set back)."""
    # 0 is invalid in the config, and must still never touch today's folder
    retention_days = draw(st.sampled_from([0, 0, *range(1, 11)]))
    newest_old_enough = draw(st.integers(-1, 3))  # the newest offset old enough, maybe none
    today = newest_old_enough + retention_days  # < 3 when a small N meets a clock set back
    bucket, deep = draw(st.booleans()), draw(st.booleans())
    folders = []
    for symbol in SYMBOLS:
        for offset in range(4):
            if draw(st.integers(0, 3)) > 0:
                folders.append(draw(folder_specs(symbol, offset)))
    return folders, today, retention_days, bucket, deep


def damage(layout: LakeLayout, f: FolderSpec, kind: str) -> None:
    if kind == "new_part":
        write_part(layout, f.symbol, f.day, 90 + len(f.parts), "zstd",
                   part_lines(f.symbol, f.day, 90, "late"))  # fmt: skip
        return
    if kind == "grow_part":
        if f.parts:  # the first part rewritten with one more line, same name
            compression = f.parts[0][0]
            content = part_lines(f.symbol, f.day, 0) + part_lines(f.symbol, f.day, 0, "more")
            write_part(layout, f.symbol, f.day, 0, compression, content)
        return
    what, ds = kind.split(":")
    path = layout.archive_file(ds, f.symbol, f.day)
    sidecar = layout.archive_sidecar(ds, f.symbol, f.day)
    if not (sidecar if what in ("drop_sidecar", "wrong_hash", "content_hash") else path).exists():
        return  # already gone (damaged twice)
    if what == "drop_sidecar":
        sidecar.unlink()
    elif what == "delete":
        path.unlink()
    elif what == "truncate":
        truncate(path)
    elif what == "flip":
        flip_byte(path)
    elif what == "wrong_hash":
        edit_sidecar(layout, ds, f.symbol, f.day, sha256="0" * 64)
    elif what == "content_hash":
        edit_sidecar(layout, ds, f.symbol, f.day, content_sha256="0" * 64)


def build(layout: LakeLayout, folders: list[FolderSpec]) -> set[Path]:
    """The lake; returns the archive files (and sidecars) the fake bucket vouches for."""
    verified: set[Path] = set()
    for f in folders:
        make_folder(layout, f.symbol, f.day, f.parts, f.archived)
        folder = layout.raw_day_dir(f.symbol, f.day)
        if f.open_file:
            (folder / part_file_name(len(f.parts), is_open=True)).write_bytes(b'{"open":1}\n')
        if f.stray:
            (folder / "notes.txt").write_text("keep me")
            (folder / "part-000077.jsonl.tmp").write_text("not a part")
        if f.damage:
            damage(layout, f, f.damage)
        if f.copy != "none":
            files = set(archive_files(layout, f.symbol, f.day))
            if f.copy != "all":
                ds, which = f.copy.split(":")
                files.discard(layout.archive_file(ds, f.symbol, f.day) if which == "file"
                              else layout.archive_sidecar(ds, f.symbol, f.day))  # fmt: skip
            verified |= files
    return verified


def assert_archive_holds(layout: LakeLayout, symbol: str, day: str, deleted: dict[Path, bytes],
                         *, deep: bool) -> None:  # fmt: skip
    """Independently of day.py: every archive file hashes to its sidecar, and the compacted
    raw file's content holds each deleted part, by name and by its uncompressed bytes.
    ``deep``: its line count and content hash match the sidecar too (a shallow plan only
    checks the file's size and SHA256)."""
    for name in ARCHIVE_DATASETS:
        meta = json.loads(layout.archive_sidecar(name, symbol, day).read_text())
        data = layout.archive_file(name, symbol, day).read_bytes()
        assert (meta["symbol"], meta["date"]) == (symbol, day)
        assert hashlib.sha256(data).hexdigest() == meta["sha256"] and len(data) == meta["bytes"]
    raw_meta = json.loads(layout.archive_sidecar("raw", symbol, day).read_text())
    content = uncompressed(layout.archive_file("raw", symbol, day))
    if deep:
        assert hashlib.sha256(content).hexdigest() == raw_meta["content_sha256"]
        assert content.count(b"\n") == raw_meta["rows"]
    for part, part_bytes in deleted.items():
        assert part.name in raw_meta["parts"]
        assert part_bytes in content, f"{part.name}'s bytes are not in the compacted file"


def is_sealed_part(layout: LakeLayout, path: Path) -> bool:
    name = parse_part_name(path.name)
    return name is not None and not name.is_open and path.parent.parent.parent == layout.raw_root


@settings(max_examples=EXAMPLES, deadline=None, derandomize=not RANDOM, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
@given(lake=lakes())
def test_retention_deletes_only_what_the_archive_provably_holds(lake):
    folders, today_offset, retention_days, bucket, deep = lake
    today = BASE + timedelta(days=today_offset)
    note(f"today={today} retention_days={retention_days} bucket={bucket} deep={deep}")
    for f in folders:
        note(repr(f))
    with tempfile.TemporaryDirectory(prefix="retention-", dir=FAST_TMP) as tmp:
        layout = LakeLayout(Path(tmp))
        verified = build(layout, folders)
        copy_verified = (lambda p: p in verified) if bucket else None
        plan = plan_retention(layout, today=today, retention_days=retention_days,
                              copy_verified=copy_verified, deep=deep)  # fmt: skip
        for f in folders:
            if f.late_damage:
                damage(layout, f, f.late_damage)
        before = files_under(layout.root)
        contents = {p: uncompressed(p) for p in before if is_sealed_part(layout, p)}
        sizes = {p: p.lstat().st_size for p in before}
        result = apply_retention(layout, plan)
        after = files_under(layout.root)

        # nothing but the reported deletions, all planned, and no file left unexplained
        assert before - after == set(result.deleted) and after <= before
        assert set(result.deleted) <= set(plan.delete) and not result.errors
        assert result.bytes_freed == sum(sizes[p] for p in result.deleted)
        # .open files, stray files, tables and the archive always survive
        assert {p for p in before if not is_sealed_part(layout, p)} <= after
        by_folder: dict[tuple[str, str], dict[Path, bytes]] = {}
        for p in result.deleted:
            assert is_sealed_part(layout, p)  # (a)
            by_folder.setdefault((p.parent.parent.name, p.parent.name), {})[p] = contents[p]
        specs = {(f.symbol, f.day): f for f in folders}
        event(f"folders emptied: {min(len(by_folder), 2)}{'+' if len(by_folder) > 1 else ''}")
        for (symbol, day), deleted in by_folder.items():
            # (b) at least retention_days old, and before today whatever retention_days says
            assert date.fromisoformat(day) <= today - timedelta(days=retention_days)
            assert date.fromisoformat(day) < today
            # (c) the archive is whole and holds each deleted part; not damaged after the plan
            assert specs[(symbol, day)].late_damage is None
            # a day still being written (an .open file) loses nothing
            assert not specs[(symbol, day)].open_file
            assert_archive_holds(layout, symbol, day, deleted, deep=deep)
            # (d) every archive file and sidecar copied, when a bucket is configured
            if bucket:
                assert set(archive_files(layout, symbol, day)) <= verified
        # liveness: an old, untouched, fully archived (and copied) folder is emptied and removed
        for f in folders:
            pristine = (f.archived and f.damage is None and f.late_damage is None
                        and not f.open_file and (not bucket or f.copy == "all")
                        and f.offset <= today_offset - retention_days
                        and f.offset < today_offset)  # fmt: skip
            folder = layout.raw_day_dir(f.symbol, f.day)
            if pristine:
                left = [p for p in after if p.parent == folder and is_sealed_part(layout, p)]
                assert not left, f"{f.symbol} {f.day} should have been deleted: {plan.kept}"
                if f.parts:  # emptied by retention: removed unless stray files remain
                    assert folder.exists() == f.stray


# examples ----------------------------------------------------------------------------------
TODAY = date(2026, 12, 1)


def day_before(n: int) -> str:
    return (TODAY - timedelta(days=n)).isoformat()


def plan(layout: LakeLayout, copy_verified=None, retention_days: int = 7, **kw):
    return plan_retention(layout, today=TODAY, retention_days=retention_days,
                          copy_verified=copy_verified, **kw)  # fmt: skip


def test_deletes_an_old_fully_archived_folder_and_the_emptied_folder(tmp_path):
    layout = LakeLayout(tmp_path)
    day = day_before(10)
    parts = make_folder(layout, "BTCUSDT", day, [("zstd", True), ("gzip", True), ("none", False)])
    sizes = sum(p.stat().st_size for p in parts)
    p = plan(layout)
    assert p.delete == parts and p.delete_bytes == sizes and not p.kept and p.folders == 1
    result = apply_retention(layout, p)
    assert result.deleted == parts and result.bytes_freed == sizes and not result.errors
    assert not layout.raw_day_dir("BTCUSDT", day).exists()
    assert result.folders_removed == [layout.raw_day_dir("BTCUSDT", day)]
    assert all(f.exists() for f in archive_files(layout, "BTCUSDT", day))  # archive untouched


def test_age_rule_keeps_today_yesterday_and_the_future(tmp_path):
    layout = LakeLayout(tmp_path)
    ages = (-1, 0, 1, 6, 7, 8)  # -1: tomorrow (a clock set back)
    for age in ages:
        make_folder(layout, "BTCUSDT", day_before(age))
    p = plan(layout, retention_days=7)
    assert {f.parent.name for f in p.delete} == {day_before(7), day_before(8)}
    for age in (-1, 0, 1, 6):
        assert p.kept[f"BTCUSDT/{day_before(age)}"].endswith("younger than 7 days")
    # one day: yesterday may go (it closed at midnight UTC), today and tomorrow never
    p = plan(layout, retention_days=1)
    assert {f.parent.name for f in p.delete} == {day_before(a) for a in (1, 6, 7, 8)}
    # even a retention of 0 (the config forbids it) never touches today or later
    p = plan(layout, retention_days=0)
    assert {f.parent.name for f in p.delete} == {day_before(a) for a in (1, 6, 7, 8)}


def test_file_times_in_the_future_change_nothing(tmp_path):
    layout = LakeLayout(tmp_path)
    parts = make_folder(layout, "BTCUSDT", day_before(9))
    future = 4_102_444_800  # 2100-01-01
    for f in parts:
        os.utime(f, (future, future))
    assert plan(layout).delete == parts


def test_keeps_a_folder_whose_compacted_file_was_truncated(tmp_path):
    layout = LakeLayout(tmp_path)
    day = day_before(9)
    parts = make_folder(layout, "BTCUSDT", day)
    truncate(layout.archive_file("raw", "BTCUSDT", day))
    p = plan(layout)
    reason = p.kept[f"BTCUSDT/{day}"]
    assert not p.delete and reason.startswith(f"{day} BTCUSDT: archive of raw not verified")
    assert "bytes is" in reason
    apply_retention(layout, p)
    assert all(f.exists() for f in parts)


def test_keeps_a_folder_without_a_compacted_raw_file(tmp_path):
    layout = LakeLayout(tmp_path)
    day = day_before(9)
    make_folder(layout, "BTCUSDT", day, archived=False)
    make_folder(layout, "ETHUSDT", day)
    layout.archive_file("raw", "ETHUSDT", day).unlink()
    p = plan(layout)
    assert not p.delete
    assert (
        "archive of raw, trades, quotes, bars_1s, bars_1m, coverage not verified"
        in (p.kept[f"BTCUSDT/{day}"])
    )
    assert p.kept[f"ETHUSDT/{day}"].endswith(f"{day}.jsonl.zst: missing")


def test_keeps_a_folder_whose_bars_1m_sidecar_is_missing(tmp_path):
    layout = LakeLayout(tmp_path)
    day = day_before(9)
    make_folder(layout, "BTCUSDT", day)
    layout.archive_sidecar("bars_1m", "BTCUSDT", day).unlink()
    p = plan(layout)
    assert not p.delete
    assert "archive of bars_1m not verified" in p.kept[f"BTCUSDT/{day}"]
    assert "no sidecar" in p.kept[f"BTCUSDT/{day}"]


def test_deep_plan_rereads_the_compacted_content(tmp_path):
    layout = LakeLayout(tmp_path)
    day = day_before(9)
    parts = make_folder(layout, "BTCUSDT", day)
    edit_sidecar(layout, "raw", "BTCUSDT", day, content_sha256="0" * 64)
    assert "content_sha256 is" in plan(layout).kept[f"BTCUSDT/{day}"]
    assert plan(layout, deep=False).delete == parts  # the shallow check trusts the file hash


def test_keeps_a_folder_whose_copy_is_not_verified(tmp_path):
    layout = LakeLayout(tmp_path)
    day = day_before(9)
    parts = make_folder(layout, "BTCUSDT", day)
    files = archive_files(layout, "BTCUSDT", day)
    unverified = layout.archive_sidecar("quotes", "BTCUSDT", day)
    p = plan(layout, copy_verified=lambda f: f != unverified)
    assert not p.delete
    assert p.kept[f"BTCUSDT/{day}"] == (
        f"{day} BTCUSDT: copy of archive/quotes/symbol=BTCUSDT/{day}.meta.json "
        "not verified in the bucket"
    )

    def unreachable(f: Path) -> bool:
        raise ConnectionError("bucket unreachable")

    assert "ConnectionError" in plan(layout, copy_verified=unreachable).kept[f"BTCUSDT/{day}"]
    asked: list[Path] = []
    p = plan(layout, copy_verified=lambda f: asked.append(f) or True)
    assert p.delete == parts and asked == files


def test_keeps_a_folder_with_a_part_added_after_compaction(tmp_path):
    layout = LakeLayout(tmp_path)
    day = day_before(9)
    parts = make_folder(layout, "BTCUSDT", day)
    late = write_part(layout, "BTCUSDT", day, 123, "zstd", part_lines("BTCUSDT", day, 123))
    p = plan(layout)
    assert not p.delete
    assert p.kept[f"BTCUSDT/{day}"] == (
        f"{day} BTCUSDT: part-000123.jsonl.zst not in the compacted file (arrived after it)"
    )
    late.unlink()
    parts[0].write_bytes(parts[0].read_bytes() + b'{"recv_ns":9}\n')  # changed after compaction
    assert "were compacted" in plan(layout).kept[f"BTCUSDT/{day}"]


def test_open_and_other_files_survive_and_keep_their_folder(tmp_path):
    layout = LakeLayout(tmp_path)
    day = day_before(9)
    parts = make_folder(layout, "BTCUSDT", day)
    folder = layout.raw_day_dir("BTCUSDT", day)
    others = [folder / "notes.txt", folder / ".part-000001.jsonl.tmp", folder / "part-1.jsonl"]
    for f in others:
        f.write_text("x")
    (folder / "part-000005.jsonl.zst").symlink_to(parts[0])
    result = apply_retention(layout, plan(layout))
    assert result.deleted == parts and folder.is_dir() and not result.errors
    assert all(f.exists() for f in others) and (folder / "part-000005.jsonl.zst").is_symlink()
    # an .open file means the day is still being written: nothing goes
    day2 = day_before(8)
    parts2 = make_folder(layout, "BTCUSDT", day2)
    (layout.raw_day_dir("BTCUSDT", day2) / "part-000009.jsonl.open").write_bytes(b"{}\n")
    p = plan(layout)
    assert p.kept[f"BTCUSDT/{day2}"].endswith("an .open part is still being written")
    assert not p.delete and all(f.exists() for f in parts2)


def test_apply_rechecks_the_archive_before_deleting(tmp_path):
    layout = LakeLayout(tmp_path)
    old, older = day_before(9), day_before(10)
    parts = make_folder(layout, "BTCUSDT", old)
    other = make_folder(layout, "BTCUSDT", older)
    p = plan(layout)
    assert set(p.delete) == {*parts, *other}
    flip_byte(layout.archive_file("raw", "BTCUSDT", old))  # damaged after the plan
    result = apply_retention(layout, p)
    assert all(f.exists() for f in parts) and result.deleted == other
    assert "archive of raw not verified" in result.skipped[f"BTCUSDT/{old}"]


def test_apply_refuses_an_archive_replaced_since_the_plan(tmp_path):
    layout = LakeLayout(tmp_path)
    day = day_before(9)
    parts = make_folder(layout, "BTCUSDT", day)
    p = plan(layout)
    empty = layout.market_partition_dir("trades", "BTCUSDT", day) / "part-0.parquet"
    schema = dataset("trades").arrow_schema()
    pq.write_table(schema.empty_table(), empty, compression="snappy")  # other bytes, re-archived
    archive_day(layout, "BTCUSDT", day)
    result = apply_retention(layout, p)
    assert not result.deleted and all(f.exists() for f in parts)
    assert result.skipped[f"BTCUSDT/{day}"].endswith("archive changed since the plan")


def test_apply_deletes_only_sealed_parts_of_verified_folders(tmp_path):
    layout = LakeLayout(tmp_path)
    day = day_before(9)
    parts = make_folder(layout, "BTCUSDT", day)
    p = plan(layout)
    archived = layout.archive_file("trades", "BTCUSDT", day)
    stray = layout.raw_day_dir("BTCUSDT", day) / "notes.txt"
    stray.write_text("x")
    forged = RetentionPlan(TODAY, 7, delete=[archived, stray, *parts], verified=p.verified)
    result = apply_retention(layout, forged)
    assert result.deleted == parts and archived.exists() and stray.exists()
    assert len(result.errors) == 2


def test_apply_records_an_error_and_continues(tmp_path, monkeypatch):
    layout = LakeLayout(tmp_path)
    day = day_before(9)
    parts = make_folder(layout, "BTCUSDT", day, [("none", True), ("zstd", True)])
    p = plan(layout)
    second = parts[1].stat().st_size
    real_unlink = Path.unlink

    def unlink(self: Path, missing_ok: bool = False) -> None:
        if self == parts[0]:
            raise PermissionError(13, "Permission denied", str(self))
        real_unlink(self, missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink)
    result = apply_retention(layout, p)
    assert result.deleted == parts[1:] and len(result.errors) == 1
    assert "Permission denied" in result.errors[0] and parts[0].exists()
    assert result.bytes_freed == second


@pytest.mark.parametrize(
    ("fraction", "verdict"),
    [(0.0, "ok"), (0.79, "ok"), (0.8, "warn"), (0.89, "warn"), (0.9, "fail"), (1.0, "fail")],
)
def test_disk_verdict_thresholds(fraction: float, verdict: str):
    assert disk_verdict(fraction) == verdict
    assert disk_verdict(fraction, warn=0.5, fail=0.95) == (
        "fail" if fraction >= 0.95 else "warn" if fraction >= 0.5 else "ok"
    )


def test_disk_usage_reads_the_file_system(tmp_path):
    usage = disk_usage(tmp_path)
    assert usage.total > 0 and usage.used + usage.free <= usage.total
    assert usage.fraction == pytest.approx(usage.used / (usage.used + usage.free))
    assert 0 <= usage.fraction <= 1


def test_archiving_again_after_retention_keeps_the_compacted_day(tmp_path):
    """A re-run of the archive after retention deleted the minute files must not replace the
    compacted day with an empty one; a folder that lost parts and gained new ones refuses."""
    layout = LakeLayout(tmp_path)
    day = day_before(10)
    make_folder(layout, "BTCUSDT", day, parts=[("none", True), ("zstd", True)])
    raw = layout.archive_file("raw", "BTCUSDT", day)
    sidecar = layout.archive_sidecar("raw", "BTCUSDT", day)
    first, first_sidecar = raw.read_bytes(), sidecar.read_bytes()
    archive_day(layout, "BTCUSDT", day)  # nothing changed: nothing rewritten
    assert sidecar.read_bytes() == first_sidecar
    apply_retention(layout, plan(layout))
    assert not layout.raw_day_dir("BTCUSDT", day).exists()
    again = archive_day(layout, "BTCUSDT", day)
    assert raw.read_bytes() == first and "raw" not in again.written
    assert (
        sidecar.read_bytes() == first_sidecar
        and archive_status(layout, "BTCUSDT", day, deep=True).complete
    )
    # one of the two parts back, and a new one: neither the old nor a new archive is whole
    write_part(layout, "BTCUSDT", day, 0, "none", part_lines("BTCUSDT", day, 0))
    write_part(layout, "BTCUSDT", day, 7, "none", part_lines("BTCUSDT", day, 7))
    with pytest.raises(CompactError, match="lacks"):
        archive_day(layout, "BTCUSDT", day)
    assert raw.read_bytes() == first


def test_a_day_without_a_raw_folder_is_not_archived(tmp_path):
    """No raw folder and no archive: nothing claims an (empty) raw archive for the day."""
    layout = LakeLayout(tmp_path)
    day = day_before(10)
    with pytest.raises(CompactError, match="does not exist"):
        archive(layout, "BTCUSDT", day)
    assert not layout.archive_sidecar("raw", "BTCUSDT", day).exists()
