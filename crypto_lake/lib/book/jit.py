"""``njit``: the compiler settings of every compiled function of the book package.

Numba's on-disk cache checks only the source file of the function it caches, but a compiled
function carries the code and constants of what it calls from other modules (the engine
calls ``levels``, ``rows``, ``verify``, ``state``; the scanner bakes in Binance's message
map). So every compiled function of the reconstruction is cached under one digest of its
modules' sources, the constants' modules and the map: a change to any of them recompiles
them all, never a stale mix.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numba
from numba.core.caching import CacheImpl, InTreeCacheLocator, UserProvidedCacheLocator

from crypto_lake.lib.raw import binance

_HERE = Path(__file__).resolve().parent
# the reconstruction's compiled modules, calling each other (the simulator's modules, sim and
# synthetic, call only their own: numba's per-file stamp is right for them)
_COMPILED = ("jit", "levels", "state", "rows", "verify", "engine", "scan")
# and the modules whose constants the compiled code bakes in
_SOURCES = [*(_HERE / f"{m}.py" for m in (*_COMPILED, "model", "lines")),
            Path(binance.__file__).resolve()]  # fmt: skip
_STAMPED = {_HERE / f"{m}.py" for m in _COMPILED}
DIGEST = hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in _SOURCES)).digest()


class _Stamped:
    """A locator of the reconstruction's modules, stamped with the package's digest."""

    def get_source_stamp(self):
        return DIGEST

    @classmethod
    def from_function(cls, py_func, py_file):
        if Path(py_file).resolve() not in _STAMPED:
            return None  # numba's own locators decide
        return super().from_function(py_func, py_file)


class _PackageDirLocator(_Stamped, UserProvidedCacheLocator):
    """``NUMBA_CACHE_DIR`` when it is set (the container's build-time cache)."""


class _PackageLocator(_Stamped, InTreeCacheLocator):
    """Otherwise the in-tree cache (``__pycache__``), as numba's own order has it."""


for _locator in (_PackageLocator, _PackageDirLocator):  # the first inserted ends up second
    if _locator not in CacheImpl._locator_classes:
        CacheImpl._locator_classes.insert(0, _locator)

njit = numba.njit(cache=True, nogil=True)
