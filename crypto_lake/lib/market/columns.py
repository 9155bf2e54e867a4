"""Integer tick columns -> Arrow arrays, in buffers that keep their memory between days.

Building one symbol-day needs a few hundred MB of columns (BTCUSDT: ~2 M trades, ~4.5 M
quotes; every decimal is 16 bytes in Arrow). Memory a process has just been given is slow to
touch the first time: the kernel zeroes each page, and on a virtual machine the host backs it
too (measured on the 2-core benchmark VM: ~0.4 GB/s on first touch against > 10 GB/s for memory
in use). Inside ``reuse_buffers()`` every named buffer is kept after a build and handed to the
next one, so a run over many symbol-days touches fresh memory about once. Outside it, each
build gets new buffers that are freed with it.

The Arrow arrays are built over these buffers without copies; the numba kernels fill them
without numpy temporaries.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import numba
import numpy as np
import pyarrow as pa

from crypto_lake.lib.core import schema

T = TypeVar("T")

# The tick tables' types, as lib/core/schema.py declares them.
TS_US = schema.TS
INT64 = pa.int64()
PRICE = schema.PRICE
QTY = schema.QTY
PRICE_T, QTY_T = schema.duckdb_type(PRICE), schema.duckdb_type(QTY)  # the same in DuckDB SQL
QUOTE_QTY = schema.QUOTE_VOLUME

_local = threading.local()


class Buffers:
    """Named, growable numpy buffers. ``matrix`` and ``vector`` hand out uninitialised
    memory: the same memory as the last request of that name whenever it is big enough."""

    def __init__(self) -> None:
        self._flat: dict[str, np.ndarray] = {}
        self._objects: dict[str, list] = {}

    def objects(self, name: str, n: int, make: Callable[[], T]) -> list[T]:
        """``n`` reusable helper objects of kind ``name`` (made by ``make`` the first time)."""
        have = self._objects.setdefault(name, [])
        while len(have) < n:
            have.append(make())
        return have[:n]

    def vector(self, name: str, n: int, dtype=np.int64) -> np.ndarray:
        flat = self._flat.get(name)
        if flat is None or flat.dtype != dtype or flat.size < n:
            flat = self._flat[name] = np.empty(max(n, 1), dtype=dtype)
        return flat[:n]

    def matrix(self, name: str, rows: int, cols: int, keep: int = 0) -> np.ndarray:
        """A (rows, C) int64 array with C >= cols, each row contiguous. When it has to grow,
        the first ``keep`` columns of the previous matrix of this name are carried over."""
        flat = self._flat.get(name)
        if flat is not None and flat.size // rows >= cols:
            return flat[: flat.size // rows * rows].reshape(rows, -1)
        new = np.empty(rows * max(cols, 1), dtype=np.int64).reshape(rows, -1)
        if keep and flat is not None:
            new[:, :keep] = flat[: flat.size // rows * rows].reshape(rows, -1)[:, :keep]
        self._flat[name] = new.reshape(-1)
        return new


@contextmanager
def reuse_buffers() -> Iterator[Buffers]:
    """Keep the tick builders' buffers for every build in this block (this thread only)."""
    previous = getattr(_local, "buffers", None)
    _local.buffers = previous or Buffers()
    try:
        yield _local.buffers
    finally:
        _local.buffers = previous


def keep_buffers() -> None:
    """Keep the tick builders' buffers for every build in this thread from now on (a worker
    thread's initializer; they are freed with the thread)."""
    _local.buffers = Buffers()


def buffers() -> Buffers:
    """The buffers of the enclosing ``reuse_buffers()`` block, or new ones for this build."""
    return getattr(_local, "buffers", None) or Buffers()


class Rows:
    """A growable int64 matrix of ``rows`` rows, appended to block by block."""

    def __init__(self, bufs: Buffers, name: str, rows: int, cap: int = 1 << 16) -> None:
        self._bufs, self._name, self._rows = bufs, name, rows
        self._m = bufs.matrix(name, rows, cap)
        self.n = 0

    def reserve(self, more: int) -> None:
        need = self.n + more
        if need > self._m.shape[1]:
            cap = max(need, self._m.shape[1] * 3 // 2)
            self._m = self._bufs.matrix(self._name, self._rows, cap, keep=self.n)

    def append(self, block: np.ndarray) -> None:
        k = block.shape[1]
        self.reserve(k)
        self._m[:, self.n : self.n + k] = block
        self.n += k

    @property
    def view(self) -> np.ndarray:
        """The rows so far, (rows, n); each row contiguous."""
        return self._m[:, : self.n]


# --- numba kernels ------------------------------------------------------------------------------
_M32 = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)
_ONE = np.uint64(1)
_ZERO = np.uint64(0)


@numba.njit(cache=True, nogil=True)
def _widen(units, out):
    for i in range(len(units)):
        out[2 * i] = units[i]
        out[2 * i + 1] = units[i] >> 63


@numba.njit(cache=True, nogil=True)
def _magnitude(x):
    return numba.uint64(x) if x >= 0 else ~numba.uint64(x) + _ONE


@numba.njit(cache=True, nogil=True)
def product128(a, b):
    """The exact 128-bit product of two int64 values as (low, high) uint64 words."""
    ua, ub = _magnitude(a), _magnitude(b)
    a0, a1, b0, b1 = ua & _M32, ua >> _S32, ub & _M32, ub >> _S32
    p00, p01, p10 = a0 * b0, a0 * b1, a1 * b0
    mid = (p00 >> _S32) + (p01 & _M32) + (p10 & _M32)
    lo = (p00 & _M32) | (mid << _S32)
    hi = a1 * b1 + (p01 >> _S32) + (p10 >> _S32) + (mid >> _S32)
    if (a < 0) != (b < 0):  # two's complement of the 128-bit magnitude
        hi = ~hi + (_ONE if lo == _ZERO else _ZERO)
        lo = ~lo + _ONE
    return lo, hi


@numba.njit(cache=True, nogil=True)
def _products(a, b, out):
    """out (uint64 words, lo/hi per value) = the exact 128-bit products a * b."""
    for i in range(len(a)):
        out[2 * i], out[2 * i + 1] = product128(a[i], b[i])


@numba.njit(cache=True, nogil=True)
def _span(first, last, out):
    for i in range(len(first)):
        out[i] = last[i] - first[i] + 1


@numba.njit(cache=True, nogil=True)
def _bit(flags, bit, out):
    for i in range(len(flags)):
        out[i] = (flags[i] & bit) != 0


@numba.njit(cache=True, nogil=True)
def _shifted(flags, shift, out):
    for i in range(len(flags)):
        out[i] = flags[i] >> shift


# --- Arrow arrays over the buffers --------------------------------------------------------------
def _validity(valid: np.ndarray | None) -> pa.Buffer | None:
    return None if valid is None else bitmap(valid)


def int64(values: np.ndarray, dtype: pa.DataType = INT64, valid: np.ndarray | None = None,
          ) -> pa.Array:  # fmt: skip
    """int64 values as an arrow array of ``dtype`` over the same buffer (pa.array takes a
    slow element-wise path for these); ``valid``: False where the value is null."""
    values = np.ascontiguousarray(values, dtype=np.int64)
    return pa.Array.from_buffers(dtype, len(values), [_validity(valid), pa.py_buffer(values)])


def decimal(words: np.ndarray, dtype: pa.DataType, valid: np.ndarray | None = None) -> pa.Array:
    """An arrow decimal array over the two 64-bit words (low, high) of each value."""
    return pa.Array.from_buffers(dtype, len(words) // 2, [_validity(valid), pa.py_buffer(words)])


def timestamps(us: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    """Microseconds since the epoch as timestamp[us, UTC] (null where ``valid`` is False)."""
    return int64(us, TS_US, valid)


def units(bufs: Buffers | None, name: str, values: np.ndarray, dtype: pa.DataType,
          valid: np.ndarray | None = None) -> pa.Array:  # fmt: skip
    """Integers of 1e-8 as an arrow decimal with scale 8, without arithmetic (in a new array
    when ``bufs`` is None)."""
    n = 2 * len(values)
    words = np.empty(n, dtype=np.int64) if bufs is None else bufs.vector(name, n)
    _widen(np.ascontiguousarray(values), words)
    return decimal(words, dtype, valid)


def products(bufs: Buffers, name: str, a: np.ndarray, b: np.ndarray) -> pa.Array:
    """The exact 128-bit products a * b of int64 values as decimal(38, 16) (scale 8 + 8)."""
    words = bufs.vector(name, 2 * len(a), np.uint64)
    _products(np.ascontiguousarray(a), np.ascontiguousarray(b), words)
    return decimal(words, QUOTE_QTY)


def span(bufs: Buffers, name: str, first: np.ndarray, last: np.ndarray) -> pa.Array:
    """last - first + 1 per row (the underlying trades of an aggregate)."""
    out = bufs.vector(name, len(first))
    _span(np.ascontiguousarray(first), np.ascontiguousarray(last), out)
    return int64(out)


def flag(bufs: Buffers, name: str, flags: np.ndarray, bit: int) -> pa.Array:
    """Whether ``bit`` is set in each of ``flags``, as an arrow boolean array."""
    out = bufs.vector(name, len(flags), np.bool_)
    _bit(np.ascontiguousarray(flags), bit, out)
    return booleans(out)


def codes(bufs: Buffers, name: str, flags: np.ndarray, shift: int,
          dictionary: tuple[str, ...]) -> pa.Array:  # fmt: skip
    """``dictionary[flags >> shift]`` per row, as a dictionary array over the buffers (the
    Parquet writer keeps it dictionary encoded when asked: see ``repeat``)."""
    indices = bufs.vector(name, len(flags), np.int32)
    _shifted(np.ascontiguousarray(flags), shift, indices)
    return pa.DictionaryArray.from_arrays(pa.Array.from_buffers(pa.int32(), len(flags), [
        None, pa.py_buffer(indices)]), strings(dictionary))  # fmt: skip


def booleans(values: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    """A numpy bool array (and optional validity) as an arrow boolean array, bit-packed here
    (pa.array would first import pyarrow's pandas layer)."""
    return pa.Array.from_buffers(pa.bool_(), len(values), [_validity(valid), bitmap(values)])


def bitmap(values: np.ndarray) -> pa.Buffer:
    """Arrow's bit layout (least significant bit first) of a numpy bool array."""
    return pa.py_buffer(np.packbits(values, bitorder="little"))


def repeat(bufs: Buffers, name: str, value: str, n: int) -> pa.Array:
    """``value`` n times as a one-entry dictionary array. The Parquet writer stores a
    dictionary array's dictionary and indices as they are, without hashing every value; the
    file reads back as plain strings (``parquet_out`` leaves the Arrow schema out for it)."""
    indices = bufs.vector(name, n, np.int32)
    indices[:] = 0
    return pa.DictionaryArray.from_arrays(pa.Array.from_buffers(pa.int32(), n, [
        None, pa.py_buffer(indices)]), string(value))  # fmt: skip


def string(value: str) -> pa.Array:
    """A one-element string array, built from its buffers: ``pa.array([value])`` would first
    import pandas (to ask whether the list is a pandas object), about a second of a tick
    build's process when nothing else imported it."""
    return strings((value,))


def strings(values: tuple[str, ...]) -> pa.Array:
    """A string array of ``values``, built from its buffers (see ``string``)."""
    data = [v.encode() for v in values]
    offsets = np.cumsum([0, *map(len, data)], dtype=np.int32)
    buffers = [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(data))]
    return pa.Array.from_buffers(pa.string(), len(values), buffers)
