"""zip_member (ISA-L's inflate of a public zip's CSV) reads what zipfile reads, and refuses
what zipfile refuses: damaged deflate data, a wrong CRC-32, a truncated member."""

from __future__ import annotations

import random
import zipfile
import zlib
from pathlib import Path

import pytest

from crypto_lake.lib.history.public_files import CorruptZip, verify_zip
from crypto_lake.lib.history.zip_member import CHUNK, open_member

CSV_ROW = b"4600000001,85000.01000000,0.00123000,104.55001230,1740787200123456,True,True\n"


def _contents(rng: random.Random) -> list[bytes]:
    rows = b"".join(CSV_ROW.replace(b"01,", f"{i:02d},".encode(), 1) for i in range(40_000))
    return [b"", b"x", rng.randbytes(1000), rng.randbytes(3 * CHUNK + 17), rows,
            rows[: CHUNK + 5]]  # fmt: skip


def _zip(path: Path, data: bytes, method: int, level: int | None = None) -> zipfile.ZipInfo:
    with zipfile.ZipFile(path, "w", method, compresslevel=level) as zf:
        zf.writestr("member.csv", data)
    with zipfile.ZipFile(path) as zf:
        return zf.infolist()[0]


def _read(path: Path, info: zipfile.ZipInfo, sizes: list[int]) -> bytes:
    out = bytearray()
    with open_member(path, info) as stream:
        i = 0
        while chunk := stream.read(sizes[i % len(sizes)]):
            out += chunk
            i += 1
    return bytes(out)


def _data_offset(path: Path, info: zipfile.ZipInfo) -> int:
    head = path.read_bytes()[info.header_offset : info.header_offset + 30]
    return (
        info.header_offset
        + 30
        + int.from_bytes(head[26:28], "little")
        + int.from_bytes(head[28:30], "little")
    )


@pytest.mark.parametrize("method", [zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED])
def test_reads_what_zipfile_reads(tmp_path: Path, method: int) -> None:
    rng = random.Random(7)
    for n, data in enumerate(_contents(rng)):
        for level in (1, 6, 9) if method == zipfile.ZIP_DEFLATED else (None,):
            path = tmp_path / f"m{n}-{level}.zip"
            info = _zip(path, data, method, level)
            with zipfile.ZipFile(path) as zf:
                assert zf.read(info) == data  # the reference
            sizes = [rng.choice([1, 7, 4096, CHUNK, 4 << 20]) for _ in range(5)]
            assert _read(path, info, sizes) == data, (n, level, sizes)
            with open_member(path, info) as stream:
                assert stream.read() == data
            with open_member(path, info) as stream:  # has_header's first-row read
                assert (
                    stream.readline(64 * 1024)
                    == data[: data.find(b"\n") + 1 or len(data)][: 64 * 1024]
                )


def test_damaged_deflate_data_is_refused_like_zipfile(tmp_path: Path) -> None:
    rng = random.Random(11)
    data = _contents(rng)[4]
    refused = 0
    for trial in range(20):
        path = tmp_path / f"d{trial}.zip"
        info = _zip(path, data, zipfile.ZIP_DEFLATED)
        start = _data_offset(path, info)
        raw = bytearray(path.read_bytes())
        at = start + rng.randrange(info.compress_size)
        raw[at] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(raw))
        with pytest.raises((zipfile.BadZipFile, EOFError)):
            _read(path, info, [CHUNK])
        with zipfile.ZipFile(path) as zf, pytest.raises((zipfile.BadZipFile, zlib.error)):
            zf.read(info)  # zipfile refuses it too (its error or zlib's)
        with pytest.raises(CorruptZip):
            verify_zip(path, "member.csv", "trades", str(path))
        refused += 1
    assert refused == 20


def test_a_wrong_crc_or_size_is_refused(tmp_path: Path) -> None:
    data = _contents(random.Random(3))[4]
    for method in (zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED):
        path = tmp_path / f"c{method}.zip"
        info = _zip(path, data, method)
        info.CRC ^= 1
        with pytest.raises(zipfile.BadZipFile, match="CRC"):
            _read(path, info, [CHUNK])
        info.CRC ^= 1
        info.file_size += 1
        with pytest.raises(zipfile.BadZipFile):
            _read(path, info, [CHUNK])


def test_a_truncated_member_is_refused(tmp_path: Path) -> None:
    data = _contents(random.Random(5))[3]
    for method in (zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED):
        path = tmp_path / f"t{method}.zip"
        info = _zip(path, data, method)
        start = _data_offset(path, info)
        path.write_bytes(path.read_bytes()[: start + info.compress_size // 2])
        with pytest.raises(EOFError):
            _read(path, info, [CHUNK])


def test_a_bad_local_header_or_method_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "h.zip"
    info = _zip(path, b"1,2\n", zipfile.ZIP_DEFLATED)
    raw = bytearray(path.read_bytes())
    raw[info.header_offset] = ord("X")
    path.write_bytes(bytes(raw))
    with pytest.raises(zipfile.BadZipFile, match="local file header"):
        open_member(path, info)
    info.compress_type = zipfile.ZIP_BZIP2
    with pytest.raises(NotImplementedError):
        open_member(path, info)


def test_a_zip_cut_out_of_its_middle_is_a_corrupt_zip(tmp_path: Path) -> None:
    """A zip missing bytes before its directory: zipfile still opens it, with the member's
    offset below zero; that is a damaged zip, not an OSError from the seek."""
    path = tmp_path / "BTCUSDT-trades-2025-03-01.zip"
    _zip(path, _contents(random.Random(6))[4], zipfile.ZIP_DEFLATED)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] + data[-200:])
    with zipfile.ZipFile(path) as zf:
        assert zf.infolist()[0].header_offset < 0
    with pytest.raises(zipfile.BadZipFile, match="offset"):
        open_member(path, zipfile.ZipFile(path).infolist()[0])
    with pytest.raises(CorruptZip):
        verify_zip(path, "member.csv", "trades", str(path))


def test_a_local_header_naming_another_file_is_refused_like_zipfile(tmp_path: Path) -> None:
    """The directory points at a member whose local header names another file (a damaged or
    spliced zip): zipfile refuses to read it, and so does open_member."""
    path = tmp_path / "n.zip"
    info = _zip(path, b"1,2\n" * 100, zipfile.ZIP_DEFLATED)
    raw = bytearray(path.read_bytes())
    at = info.header_offset + 30  # the local header's file name
    assert raw[at : at + 10] == b"member.csv"
    raw[at : at + 6] = b"OTHERS"  # same length, another name
    path.write_bytes(bytes(raw))
    with zipfile.ZipFile(path) as zf, pytest.raises(zipfile.BadZipFile):
        zf.read(info.filename)
    with pytest.raises(zipfile.BadZipFile, match="names another file"):
        open_member(path, info)
