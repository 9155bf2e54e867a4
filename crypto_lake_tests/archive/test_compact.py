"""The compacted raw day: verbatim, exactly once, verified; and a full substitute for the minute
files (trades, quotes and bars built from it are byte-identical, whatever its read pieces)."""

import gzip
import hashlib
from pathlib import Path

import pytest
import zstandard

from crypto_lake.lib.archive import compact
from crypto_lake.lib.archive.compact import CompactError, compact_raw, read_raw_hashes
from crypto_lake.lib.archive.day import with_compacted, write_sidecar
from crypto_lake.lib.core.paths import LakeLayout, part_file_name
from crypto_lake.lib.market import tick_reader
from crypto_lake.lib.raw.catalog import RawCatalog
from crypto_lake_tests.lib import rawgen


def _lines() -> list[tuple[int, bytes]]:
    trades = rawgen.make_trades(3000)
    lines = rawgen.clean_lines(trades, rawgen.make_quotes(2000))
    t0 = rawgen.DAY_START_MS + 3_600_000
    lines += rawgen.disconnect_lines(t0, t0 + 4_000)  # session records: the general path
    lines += [(t0 + 10, rawgen.rest_line(trades[5], t0 + 10))]  # a REST repair (duplicate id)
    lines += [(t0 + 20, b'{"recv_ns": 1, "not json\n')]  # a bad line
    return sorted(lines, key=lambda x: x[0])


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_compacted_day_holds_every_line_once_in_part_order(tmp_path):
    layout = LakeLayout(tmp_path)
    day = rawgen.DAY
    paths = [p for p in rawgen.write_raw(layout, _lines()) if p.parent.name == day]
    # mixed compressions, and a part whose last line has no newline
    gz = paths[1].with_name(part_file_name(1, compression="gzip"))
    gz.write_bytes(gzip.compress(paths[1].read_bytes()))
    paths[1].unlink()
    zs = paths[2].with_name(part_file_name(2, compression="zstd"))
    zs.write_bytes(zstandard.ZstdCompressor().compress(paths[2].read_bytes()))
    paths[2].unlink()
    paths[3].write_bytes(paths[3].read_bytes().rstrip(b"\n"))
    day_parts = compact.sealed_parts(layout.raw_day_dir("BTCUSDT", day))
    expected = b""
    for p in day_parts:
        data = gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else (
            zstandard.ZstdDecompressor().decompress(p.read_bytes(), max_output_size=1 << 30)
            if p.suffix == ".zst" else p.read_bytes())  # fmt: skip
        expected += data if data.endswith(b"\n") else data + b"\n"
    c = compact_raw(layout, "BTCUSDT", day)
    content = zstandard.ZstdDecompressor().stream_reader(c.path.open("rb")).read()
    assert content == expected
    assert c.lines == expected.count(b"\n") and c.newlines_added == 1
    assert c.content_sha256 == hashlib.sha256(expected).hexdigest() and c.sha256 == _sha(c.path)
    assert c.parts == [p.name for p in day_parts]
    check = read_raw_hashes(c.path)
    assert (check.lines, check.content_sha256, check.sha256, check.bytes) == (
        c.lines, c.content_sha256, c.sha256, c.path.stat().st_size)  # fmt: skip


def test_an_open_or_unreadable_part_refuses_compaction(tmp_path):
    layout = LakeLayout(tmp_path)
    day = rawgen.DAY
    paths = [p for p in rawgen.write_raw(layout, _lines()) if p.parent.name == day]
    open_part = paths[0].with_name(part_file_name(99, is_open=True))
    open_part.write_bytes(b"")
    with pytest.raises(CompactError, match="still being written"):
        compact_raw(layout, "BTCUSDT", day)
    open_part.unlink()
    torn = paths[0].with_name(part_file_name(98, compression="gzip"))
    torn.write_bytes(gzip.compress(b'{"recv_ns": 1}\n' * 100)[:-12])
    with pytest.raises(CompactError, match="cannot be read whole"):
        compact_raw(layout, "BTCUSDT", day)
    assert not layout.archive_file("raw", "BTCUSDT", day).exists()


@pytest.mark.parametrize("chunk", [4096, 1 << 26])
def test_ticks_from_the_compacted_day_equal_those_from_its_minute_files(
    tmp_path, monkeypatch, chunk
):
    """Pieces of 4 KiB cut lines everywhere a piece can end (a unit test of the reader's
    piece logic: the constant is the only knob, so it is set here)."""
    monkeypatch.setattr(tick_reader, "_CHUNK_BYTES", chunk)
    parts = rawgen.build_partition(tmp_path / "parts", _lines())
    layout = parts.layout
    days = sorted({p.parent.name for p in parts.files})
    for day in days:
        c = compact_raw(layout, "BTCUSDT", day)
        write_sidecar(layout.archive_sidecar("raw", "BTCUSDT", day),
                      {"dataset": "raw", "bytes": c.bytes, "sha256": c.sha256, "parts": c.parts,
                       "symbol": "BTCUSDT", "date": day})  # fmt: skip
    files = with_compacted(
        layout, "BTCUSDT", rawgen.DAY, RawCatalog(layout).files_for("BTCUSDT", rawgen.DAY)
    )
    assert all(f.name.endswith(".jsonl.zst") and "archive" in f.parts for f in files)
    for day in days:  # the minute files are gone (retention); the compacted days stand in
        for p in layout.raw_day_dir("BTCUSDT", day).iterdir():
            p.unlink()
    again = rawgen.build_partition(tmp_path / "again", [])
    from crypto_lake.lib.market.bars import build_bars_1m, build_bars_1s
    from crypto_lake.lib.market.ticks import build_ticks

    out = again.layout.root / "out"
    stats = build_ticks(files, "BTCUSDT", rawgen.DAY, out / "t.pq", out / "q.pq", out / "q")
    build_bars_1s(out / "t.pq", out / "q.pq", "BTCUSDT", rawgen.DAY, out / "b.pq", stats.outages)
    build_bars_1m(out / "b.pq", out / "m.pq")
    assert stats.bad_lines == parts.stats.bad_lines == 1
    assert stats.outages == parts.stats.outages
    for mine, theirs in ((out / "t.pq", parts.trades), (out / "q.pq", parts.quotes),
                         (out / "b.pq", parts.bars), (out / "m.pq", parts.bars_1m)):  # fmt: skip
        assert _sha(mine) == _sha(theirs)


def test_a_damaged_or_incomplete_compacted_day_is_not_used(tmp_path):
    layout = LakeLayout(tmp_path)
    day = rawgen.DAY
    paths = [p for p in rawgen.write_raw(layout, _lines()) if p.parent.name == day]
    c = compact_raw(layout, "BTCUSDT", day)
    side = {"dataset": "raw", "bytes": c.bytes, "sha256": c.sha256, "parts": c.parts,
            "symbol": "BTCUSDT", "date": day}  # fmt: skip
    write_sidecar(layout.archive_sidecar("raw", "BTCUSDT", day), side)
    day_files = paths
    assert with_compacted(layout, "BTCUSDT", day, day_files) == [c.path]
    late = paths[0].with_name(part_file_name(99_999))  # sealed after compaction
    late.write_bytes(paths[0].read_bytes())
    assert with_compacted(layout, "BTCUSDT", day, day_files) == day_files
    late.unlink()
    data = bytearray(c.path.read_bytes())
    data[-5] ^= 1
    c.path.write_bytes(bytes(data))
    assert with_compacted(layout, "BTCUSDT", day, day_files) == day_files
