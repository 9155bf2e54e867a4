"""The compiled public trades reader (``history.fast_trades``) against the plain reference it
stands in for: pyarrow's reader (``read_trades`` / ``read_agg_trades``) followed by
``archive_rows``. Whenever the fast reader takes a file, its rows are exactly the reference's;
a file it does not take, it leaves to the reference (None), never an error of its own and
never rows the reference would refuse. Fuzzed over Binance-shaped files in both time units
and both kinds, with one line bent in a random way, cut into pieces of random sizes."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from crypto_lake.lib.core.paths import LakeLayout
from crypto_lake.lib.history import fast_trades
from crypto_lake.lib.history.public_csv import read_agg_trades, read_trades
from crypto_lake.lib.history.public_files import PublicFileError, checksum_path, sha256_file
from crypto_lake.lib.market.archive_trades import AGG_TRADE, TRADE, ArchiveRows, archive_rows
from crypto_lake.lib.raw.catalog import day_bounds_us

SYMBOL = "BTCUSDT"
DAYS = {"us": "2025-03-01", "ms": "2024-06-30"}  # Binance's unit by date: µs from 2025 on
HEADERS = {
    "trades": "id,price,qty,quote_qty,time,is_buyer_maker,is_best_match",
    "aggTrades": "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,"
    "is_buyer_maker,is_best_match",
}


def public_lines(kind: str, day: str, n: int, rng: np.random.Generator) -> list[str]:
    """``n`` rows of a public ``kind`` file of ``day`` in Binance's shape, sorted."""
    start, end = day_bounds_us(day)
    scale = 1000 if day < "2025" else 1
    times = np.sort(rng.integers(start // scale, end // scale, n))
    ids = 7_000_000_000 + np.cumsum(rng.integers(1, 3, n))
    lines = []
    for i in range(n):
        cents = int(rng.integers(1, 10**12))
        qty = int(rng.integers(0, 10**17))
        price = f"{cents // 10**8}.{cents % 10**8:08d}"
        amount = f"{qty // 10**8}.{qty % 10**8:08d}"
        quote = f"{cents * qty / 1e16:.8f}"
        maker = "True" if rng.random() < 0.5 else "False"
        t = int(times[i])
        if kind == "trades":
            lines.append(f"{ids[i]},{price},{amount},{quote},{t},{maker},True")
        else:
            first = 3 * int(ids[i])
            last = first + int(rng.integers(0, 3))
            lines.append(f"{ids[i]},{price},{amount},{first},{last},{t},{maker},True")
    return lines


BENDS = [
    lambda f: "-" + f, lambda f: "+" + f, lambda f: " " + f, lambda f: f + " ",
    lambda f: f + "0", lambda f: f + "1", lambda f: f.split(".")[0], lambda f: f + ".",
    lambda f: "0" + f, lambda f: f.lower(), lambda f: "", lambda f: "1e3",
    lambda f: f.replace(".", ""), lambda f: "0.00000000", lambda f: "9" * 19,
    lambda f: "9" * 11 + ".5", lambda f: f'"{f}"', lambda f: "1", lambda f: "0",
    lambda f: "0" * 30 + f, lambda f: f + "0" * 3, lambda f: "-1", lambda f: "9" * 18,
]  # fmt: skip


def bend_field(lines: list[str], j: int, i: int, how: int) -> list[str]:
    """``lines`` with field ``i`` of line ``j`` changed by ``BENDS[how]``."""
    fields = lines[j].split(",")
    fields[i] = BENDS[how](fields[i])
    return [*lines[:j], ",".join(fields), *lines[j + 1 :]]


def bend_file(lines: list[str], what: int, j: int) -> list[str]:
    """``lines`` with one change of the file's shape at line ``j``."""
    lines = list(lines)
    if what == 0:  # a swapped pair: out of order
        k = min(j + 1, len(lines) - 1)
        lines[j], lines[k] = lines[k], lines[j]
    elif what == 1:  # a duplicate
        lines.insert(j, lines[j])
    elif what == 2:
        lines.insert(j, "")
    elif what == 3:
        lines[j] = lines[j] + ",True"
    elif what == 4:
        lines[j] = lines[j].rsplit(",", 1)[0]
    elif what == 5:
        lines = [line + "\r" for line in lines]
    elif what == 6:
        lines[j] = lines[j].replace(",", ";", 1)
    elif what == 7:  # the times of the whole file a day later
        lines = [",".join(f if k != len(line.split(",")) - 3 else str(int(f) + 86_400_000)
                          for k, f in enumerate(line.split(","))) for line in lines]  # fmt: skip
    return lines


def store(root: Path, kind: str, day: str, lines: list[str], *, header: bool = False,
          newline_at_end: bool = True) -> Path:  # fmt: skip
    path = LakeLayout(root).public_file(kind, SYMBOL, day)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(([HEADERS[kind]] if header else []) + lines)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(path.name[:-4] + ".csv", text + ("\n" if newline_at_end else ""))
    checksum_path(path).write_text(f"{sha256_file(path)}  {path.name}\n")
    return path


def reference(path: Path, kind: str, day: str) -> np.ndarray | Exception:
    """The plain path's rows, or what it raised."""
    try:
        read = read_trades if kind == "trades" else read_agg_trades
        return archive_rows(read(path, day, quote_qty=False), *day_bounds_us(day))
    except (PublicFileError, ValueError) as exc:
        return exc


def assert_agrees(path: Path, kind: str, day: str, chunk: int) -> ArchiveRows | None:
    ref = reference(path, kind, day)
    try:
        fast = fast_trades.read_rows(path, kind, day, chunk=chunk)
    except (PublicFileError, ValueError) as exc:  # only what the reference raises too
        assert isinstance(ref, Exception), f"fast raised {exc!r}, the reference read the file"
        assert type(exc) is type(ref)
        return None
    if fast is not None:
        assert not isinstance(ref, Exception), f"fast took a file the reference refused: {ref!r}"
        assert fast.kind == (TRADE if kind == "trades" else AGG_TRADE)
        assert fast.rows.flags.c_contiguous
        np.testing.assert_array_equal(fast.rows, ref)
    return fast


@pytest.mark.parametrize("kind", ["trades", "aggTrades"])
@pytest.mark.parametrize("unit", ["us", "ms"])
def test_binance_shaped_files_are_read_exactly(tmp_path, kind, unit):
    rng = np.random.default_rng(11)
    day = DAYS[unit]
    for case in range(6):
        lines = public_lines(kind, day, int(rng.integers(1, 3_000)), rng)
        path = store(tmp_path / f"{case}", kind, day, lines, header=case % 2 == 1,
                     newline_at_end=case % 3 != 2)  # fmt: skip
        chunk = int(rng.integers(1, 50_000))
        fast = assert_agrees(path, kind, day, chunk)
        assert fast is not None, "a file of Binance's shape fell back to the general reader"
        assert fast.rows.shape[1] == len(lines)


@pytest.mark.parametrize("kind", ["trades", "aggTrades"])
def test_bent_fields_are_read_exactly_or_left_to_the_general_reader(tmp_path, kind):
    """Every field of a line bent in every way of BENDS."""
    rng = np.random.default_rng(5)
    taken = left = 0
    for i in range(len(HEADERS[kind].split(","))):
        for how in range(len(BENDS)):
            day = DAYS["us" if (i + how) % 2 else "ms"]
            lines = public_lines(kind, day, 12, rng)
            lines = bend_field(lines, int(rng.integers(0, len(lines))), i, how)
            path = store(tmp_path / f"{i}-{how}", kind, day, lines)
            fast = assert_agrees(path, kind, day, int(rng.integers(1, 600)))
            taken, left = taken + (fast is not None), left + (fast is None)
    assert taken > 20 and left > 60, (taken, left)  # both sides of the strict shape seen


@pytest.mark.parametrize("kind", ["trades", "aggTrades"])
def test_bent_files_are_read_exactly_or_left_to_the_general_reader(tmp_path, kind):
    rng = np.random.default_rng(8)
    for case in range(48):
        day = DAYS["us" if case % 2 else "ms"]
        lines = public_lines(kind, day, int(rng.integers(2, 40)), rng)
        lines = bend_file(lines, case % 8, int(rng.integers(0, len(lines) - 1)))
        path = store(tmp_path / f"{case}", kind, day, lines)
        assert_agrees(path, kind, day, int(rng.integers(1, 3_000)))


def test_a_file_in_the_other_unit_is_left_to_the_general_reader(tmp_path):
    rng = np.random.default_rng(2)
    lines = public_lines("trades", DAYS["ms"], 50, rng)
    path = store(tmp_path, "trades", DAYS["us"], [])  # the name of the µs day ...
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:  # ... holding ms times
        zf.writestr(path.name[:-4] + ".csv", "\n".join(lines) + "\n")
    assert fast_trades.read_rows(path, "trades", DAYS["us"]) is None
    assert isinstance(reference(path, "trades", DAYS["us"]), PublicFileError)


def test_a_truncated_zip_is_left_to_the_general_reader_or_refused_as_it(tmp_path):
    rng = np.random.default_rng(4)
    path = store(tmp_path, "trades", DAYS["us"], public_lines("trades", DAYS["us"], 5000, rng))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] + data[-200:])  # the directory kept, data cut
    assert assert_agrees(path, "trades", DAYS["us"], fast_trades.CHUNK) is None
    assert isinstance(reference(path, "trades", DAYS["us"]), PublicFileError)
