"""A public trades (aggTrades) zip straight into the tick builder's rows: the compiled path of
``public_csv.read_trades`` (``read_agg_trades``) followed by ``archive_trades.archive_rows``.

A busy day is 6.5 M trades, 500 MB of CSV. pyarrow's reader parses it into decimals with both
cores (1.8 s of CPU) and ``archive_rows`` then copies the table into rows; here one compiled
pass over the bytes writes the rows (0.75 s on one core) while the main thread inflates the
next piece of the zip, so the read takes about as long as the inflate alone.

The kernel is strict: it takes only lines of exactly Binance's shape (unsigned integers of at
most 18 digits, prices and quantities of at most 10 integer and 8 decimal digits, ``True`` or
``False``, the expected number of fields, ids rising and times never falling, prices above
zero, times inside the day in Binance's unit for it). Anything else makes :func:`read_rows`
give up (None) and the caller reads the file with the general reader, which accepts what
pyarrow accepts, sorts, and names every problem it refuses. So this path never decides an
error and never accepts what the general reader would not; it is fuzzed against it
(``crypto_lake_tests/lib/test_fast_trades.py``).
"""

from __future__ import annotations

import zipfile
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import date
from pathlib import Path

import numba
import numpy as np

from crypto_lake.lib.core.logs import get_logger
from crypto_lake.lib.history import public_csv
from crypto_lake.lib.history.public_files import HEADER_LINE_BYTES, csv_member, has_header
from crypto_lake.lib.history.zip_member import open_member
from crypto_lake.lib.market import archive_trades
from crypto_lake.lib.market.archive_trades import ArchiveRows
from crypto_lake.lib.raw import fastparse

log = get_logger("history.fast_trades")

CHUNK = 8 << 20  # CSV bytes inflated, then parsed, at a time
# what a CSV field is and the parse row it goes to
SKIP, INT, UNITS, BOOL = 0, 1, 2, 3
ID, FIRST, LAST, TS, PRICE, QTY, FLAGS = range(7)  # the parse rows
_FIELDS = {
    "trades": ((INT, ID), (UNITS, PRICE), (UNITS, QTY), (SKIP, 0), (INT, TS), (BOOL, FLAGS),
               (SKIP, 0)),
    "aggTrades": ((INT, ID), (UNITS, PRICE), (UNITS, QTY), (INT, FIRST), (INT, LAST), (INT, TS),
                  (BOOL, FLAGS), (SKIP, 0)),
}  # fmt: skip
# where the parse rows go in the tick rows (fastparse.TRADE_COLUMNS)
_TICK_ROW = {ID: 2, FIRST: 3, LAST: 4, TS: 5, PRICE: 6, QTY: 7, FLAGS: 8}
# the shortest line the kernel takes: a digit per number, "True", a separator per field
_MIN_LINE = {kind: sum(4 if c == BOOL else c != SKIP for c, _ in f) + len(f)
             for kind, f in _FIELDS.items()}  # fmt: skip
OK, REFUSED, FULL = 0, 1, 2  # kernel outcomes (FULL cannot happen: see _Reader's capacity)


_TRUE, _FALSE = np.frombuffer(b"True", np.uint8), np.frombuffer(b"False", np.uint8)


@numba.njit(cache=True, nogil=True, inline="always")
def _word(buf, p, word):  # pragma: no cover
    """Whether ``buf`` holds ``word`` at ``p``."""
    if p + len(word) > len(buf):
        return False
    for i in range(len(word)):  # noqa: SIM110 - a loop compiles, a generator does not
        if buf[p + i] != word[i]:
            return False
    return True


@numba.njit(cache=True, nogil=True)
def _parse(buf, rows, state, codes, targets, flag_ibm, flag_archive):  # pragma: no cover
    """Parse whole lines of ``buf`` into ``rows`` (parse rows x capacity) from row
    ``state[_N]`` on; OK, or REFUSED at the first line not of the strict shape (or out of
    order), or FULL. The last line may lack its newline (the end of the file)."""
    end, cap, nf = len(buf), rows.shape[1], len(codes)
    n, last_id, last_ts = state[0], state[1], state[2]
    p, status = 0, OK
    while p < end:
        if n == cap:
            status = FULL
            break
        for f in range(nf):
            code = codes[f]
            if code == 0:  # skipped: anything up to the next separator
                while p < end and buf[p] != 44 and buf[p] != 10:
                    p += 1
            elif code == 3:  # True or False
                if _word(buf, p, _TRUE):
                    rows[targets[f], n] = flag_ibm | flag_archive
                    p += 4
                elif _word(buf, p, _FALSE):
                    rows[targets[f], n] = flag_archive
                    p += 5
                else:
                    status = REFUSED
                    break
            else:
                v, digits = 0, 0
                while p < end and 48 <= buf[p] <= 57:
                    v = v * 10 + (buf[p] - 48)
                    p += 1
                    digits += 1
                if digits == 0 or digits > (18 if code == 1 else 10):
                    status = REFUSED
                    break
                if code == 2:
                    decimals = 0
                    if p < end and buf[p] == 46:  # "."
                        p += 1
                        while p < end and 48 <= buf[p] <= 57 and decimals < 9:
                            v = v * 10 + (buf[p] - 48)
                            p += 1
                            decimals += 1
                        if decimals == 0 or decimals > 8:
                            status = REFUSED
                            break
                    for _ in range(8 - decimals):
                        v *= 10
                rows[targets[f], n] = v
            # the separator: a comma between fields, a newline (or the end) after the last
            if f < nf - 1:
                if p >= end or buf[p] != 44:
                    status = REFUSED
                    break
            elif p < end and buf[p] != 10:
                status = REFUSED
                break
            p += 1
        if status:
            break
        # ids rising, times never falling (state starts at -1: below any unsigned value),
        # prices above zero
        if rows[ID, n] <= last_id or rows[TS, n] < last_ts or rows[PRICE, n] <= 0:
            status = REFUSED
            break
        last_id, last_ts = rows[ID, n], rows[TS, n]
        n += 1
    state[0], state[1], state[2] = n, last_id, last_ts
    return status


class _Reader:
    """The parse of one file, fed whole-line pieces in order (by one worker thread)."""

    def __init__(self, kind: str, capacity: int) -> None:
        fields = _FIELDS[kind]
        self.codes = np.array([c for c, _ in fields], dtype=np.int64)
        self.targets = np.array([t for _, t in fields], dtype=np.int64)
        self.rows = archive_trades.zeros(len(_TICK_ROW), capacity)
        # rows so far, the last id and time (-1 before the first row: below any value taken)
        self.state = np.array([0, -1, -1], dtype=np.int64)
        self.status = OK

    def parse(self, piece: bytes) -> int:
        if self.status == OK and piece:
            self.status = _parse(np.frombuffer(piece, dtype=np.uint8), self.rows, self.state,
                                 self.codes, self.targets, fastparse.FLAG_IBM,
                                 fastparse.FLAG_ARCHIVE)  # fmt: skip
        return self.status


def read_rows(zip_path: Path, kind: str, day: str | date, *, chunk: int = CHUNK,
              ) -> ArchiveRows | None:  # fmt: skip
    """The public ``kind`` (trades or aggTrades) zip of ``day`` as tick rows, or None when a
    line is not of the strict shape (the general reader then decides). Raises what the
    general reader raises for a wrong file name, a wrong header row, or (trades) a quote_qty
    column that does not agree with price x qty. ``chunk``: CSV bytes inflated at a time."""
    where = str(zip_path)
    public_csv.symbol_of(zip_path, day, kind)
    if kind == "trades":
        public_csv.check_file_quote(Path(zip_path))
    try:
        with zipfile.ZipFile(zip_path) as zf:
            info = csv_member(zf, Path(zip_path).name[: -len(".zip")] + ".csv", where)
        with open_member(zip_path, info) as stream:
            reader = _read(stream, kind, info.file_size, where, chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError):
        return None  # the general reader reads it again and says what is wrong
    if reader is None:
        return None
    return _tick_rows(reader, kind, day)


def _read(stream, kind: str, size: int, where: str, chunk: int) -> _Reader | None:
    """Inflate ``stream`` piece by piece in this thread while a worker parses the piece
    before (both release the GIL)."""
    reader = _Reader(kind, size // _MIN_LINE[kind] + 1)  # lines it could take, at most
    first = stream.read(max(chunk, HEADER_LINE_BYTES))  # has_header's first row in it
    if has_header(_Head(first), kind, where):
        first = first[first.index(b"\n") + 1 :] if b"\n" in first else b""
    tail, piece = b"", first
    pending: list[Future] = []
    with ThreadPoolExecutor(1) as worker:
        while piece:
            data = tail + piece
            cut = data.rfind(b"\n") + 1
            tail = data[cut:]
            pending.append(worker.submit(reader.parse, data[:cut]))
            if len(pending) > 1 and pending.pop(0).result() != OK:
                break
            piece = stream.read(chunk)
        else:
            pending.append(worker.submit(reader.parse, tail))  # the last line, no newline
        for f in pending:
            f.result()
    if reader.status != OK:
        log.info("%s: a line the fast reader does not take (%s); read by pyarrow instead",
                 where, "capacity" if reader.status == FULL else "shape or order")  # fmt: skip
        return None
    return reader


class _Head:
    """``has_header``'s view of the first piece: its first line."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def readline(self, limit: int) -> bytes:
        end = self._data.find(b"\n", 0, limit)
        return self._data[: limit if end < 0 else end + 1]


def _tick_rows(reader: _Reader, kind: str, day: str | date) -> ArchiveRows | None:
    """The parsed rows as tick rows (a fresh matrix of exactly their number), times in µs;
    None when the times do not lie inside the day in Binance's unit for it."""
    n = int(reader.state[0])
    parsed = reader.rows[:, :n]
    start, end = public_csv.period_bounds_us(day)
    scale = public_csv.US_PER[public_csv.public_time_unit(day)]
    # the times never fall: the first and the last are the least and the greatest
    if n and not (start <= int(parsed[TS, 0]) * scale and int(parsed[TS, n - 1]) * scale < end):
        return None
    agg = kind == "aggTrades"
    if agg and n and (np.any(parsed[FIRST] > parsed[LAST])):
        return None
    m = archive_trades.zeros(len(fastparse.TRADE_COLUMNS), n)
    if not n:
        return ArchiveRows(archive_trades.AGG_TRADE if agg else archive_trades.TRADE, m)

    def fill(row: int) -> None:
        out = m[_TICK_ROW[row]]
        if row == TS and scale != 1:
            np.multiply(parsed[TS], scale, out=out)
        elif row in (FIRST, LAST) and not agg:
            out[:] = parsed[ID]
        else:
            out[:] = parsed[row]

    with ThreadPoolExecutor(archive_trades.FILL_THREADS) as pool:  # copies release the GIL
        list(pool.map(fill, range(len(_TICK_ROW))))
        m[0] = fastparse.KIND_AGG if agg else fastparse.KIND_TRADE
    return ArchiveRows(archive_trades.AGG_TRADE if agg else archive_trades.TRADE, m)
