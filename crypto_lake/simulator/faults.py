"""Fault knobs: everything that goes wrong with a real exchange, on demand.

Plain attributes (probabilities, flags) are read by the server on every message/request.
Methods that act on live connections run on the simulator's event loop; when called from
another thread (SimulatorThread) they are handed to that loop and return once applied.

Order book faults (``depth_*``) act on one symbol's book (SimConfig.depth_symbols) and are
applied on the loop like ``skip_trade_ids``: diff events dropped or swapped for every client
(on both update speeds), snapshots answered from an older book.

Public-file faults (``public_file_*``) apply per file: (kind, symbol, period), where kind is
``trades``, ``aggTrades`` or ``klines`` (every interval), period a day ``YYYY-MM-DD`` or a
month ``YYYY-MM`` (daily and monthly files are separate), and ``symbol=None`` means every
symbol. They are plain thread-safe bookkeeping, settable from any thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import date
from typing import Any, Protocol

from crypto_lake.lib.core.symbols import validate_symbol

Period = str | date  # "YYYY-MM-DD" (a daily file) or "YYYY-MM" (a monthly one)


class FaultTarget(Protocol):
    """What the faults act on (implemented by ExchangeSimulator)."""

    def _skip_trades(self, symbol: str, n: int) -> None: ...
    def _drop_all(self) -> None: ...
    def _stall_all(self, seconds: float) -> None: ...
    def _depth_drop(self, symbol: str, n: int) -> None: ...
    def _depth_reorder(self, symbol: str) -> None: ...
    def _depth_stale(self, symbol: str, n: int, age_s: float) -> None: ...


class Faults:
    """Knobs of one simulator; see the module docstring of crypto_lake.simulator."""

    def __init__(self) -> None:
        self.refuse_connections = False  # new WS connections get HTTP 503 before the upgrade
        self.duplicate_prob = 0.0  # a data message is sent twice
        self.reorder_prob = 0.0  # a data message is swapped with the one before it
        self.malformed_prob = 0.0  # a truncated (invalid JSON) frame is sent before a message
        self.rest_418_after_ignored: int | None = None  # requests inside a 429 ban -> 418
        self.ban_418_s = 120.0  # Retry-After of a 418 ban
        self._rest_429_left = 0
        self._rest_429_retry_after = 1
        self._lock = threading.Lock()
        self._public_missing: dict[tuple[str, str, str], int] = {}
        self._public_flags: dict[str, set[tuple[str, str, str]]] = {
            "bad_checksum": set(), "truncated": set(), "header_row": set(),
        }  # fmt: skip
        self._target: FaultTarget | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _bind(self, target: FaultTarget, loop: asyncio.AbstractEventLoop | None) -> None:
        self._target, self._loop = target, loop

    def _run(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn`` on the simulator loop, waiting for it when called from another thread."""
        if self._target is None:
            raise RuntimeError("faults are not attached to a simulator")
        if self._loop is None or self._loop.is_closed():
            fn(*args)  # not started yet (or stopped): nothing runs concurrently
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            fn(*args)
            return

        async def apply() -> None:
            fn(*args)

        asyncio.run_coroutine_threadsafe(apply(), self._loop).result(timeout=10)

    def skip_trade_ids(self, symbol: str, n: int) -> None:
        """The next ``n`` trades of ``symbol`` are not sent on any socket (REST still has them)."""
        validate_symbol(symbol)
        if n < 0:
            raise ValueError("n must be >= 0")
        self._run(self._target_call("_skip_trades"), symbol, n)

    def drop_connections(self) -> None:
        """Abort every open WebSocket connection now, without a close frame."""
        self._run(self._target_call("_drop_all"))

    def stall_connections(self, seconds: float) -> None:
        """Open connections send nothing (no data, no pings, no pongs) for ``seconds``."""
        self._run(self._target_call("_stall_all"), float(seconds))

    # -- order book (@depth streams and /api/v3/depth) ---------------------------------------
    def depth_drop(self, symbol: str, n: int = 1) -> None:
        """The next ``n`` diff events of ``symbol`` are not sent: the update ids they covered
        are lost, so the next event's U is above the previous u + 1."""
        validate_symbol(symbol)
        if n < 0:
            raise ValueError("n must be >= 0")
        self._run(self._target_call("_depth_drop"), symbol, int(n))

    def depth_reorder(self, symbol: str) -> None:
        """The next two diff events of ``symbol`` are delivered in swapped order."""
        validate_symbol(symbol)
        self._run(self._target_call("_depth_reorder"), symbol)

    def depth_stale_snapshot(self, symbol: str, n: int = 1, age_s: float = 5.0) -> None:
        """The next ``n`` depth snapshots of ``symbol`` are stale: the book (and its
        lastUpdateId) at the end of a second at least ``age_s`` ago, or the oldest one kept."""
        validate_symbol(symbol)
        if n < 0 or age_s < 0:
            raise ValueError("n and age_s must be >= 0")
        self._run(self._target_call("_depth_stale"), symbol, int(n), float(age_s))

    def rest_429(self, n: int, retry_after_s: int = 1) -> None:
        """The next ``n`` REST requests answer 429 with ``Retry-After: retry_after_s``."""
        with self._lock:
            self._rest_429_left = int(n)
            self._rest_429_retry_after = int(retry_after_s)

    def _take_forced_429(self) -> int | None:
        """Consume one forced 429; returns its Retry-After or None when none is pending."""
        with self._lock:
            if self._rest_429_left <= 0:
                return None
            self._rest_429_left -= 1
            return self._rest_429_retry_after

    # -- public files (data.binance.vision) ------------------------------------------------
    def public_file_missing(self, kind: str, symbol: str | None, period: Period, n: int) -> None:
        """The file answers 404 to its next ``n`` requests, then 200 (not yet published).

        Its ``.CHECKSUM`` answers 404 too while the file does, without using up the count.
        """
        with self._lock:
            self._public_missing[_public_key(kind, symbol, period)] = int(n)

    def public_file_bad_checksum(self, kind: str, symbol: str | None, period: Period) -> None:
        """The file's ``.CHECKSUM`` names a wrong SHA256 (the zip itself is fine)."""
        self._set_public_flag("bad_checksum", kind, symbol, period)

    def public_file_truncated(self, kind: str, symbol: str | None, period: Period) -> None:
        """The zip is cut to half its bytes (its ``.CHECKSUM`` still names the whole file's)."""
        self._set_public_flag("truncated", kind, symbol, period)

    def public_file_header_row(self, kind: str, symbol: str | None, period: Period) -> None:
        """The CSV starts with a header row (zip and checksum consistent with it)."""
        self._set_public_flag("header_row", kind, symbol, period)

    def clear_public_file_faults(self) -> None:
        with self._lock:
            self._public_missing.clear()
            for keys in self._public_flags.values():
                keys.clear()

    def _set_public_flag(self, flag: str, kind: str, symbol: str | None, period: Period) -> None:
        with self._lock:
            self._public_flags[flag].add(_public_key(kind, symbol, period))

    def _public_flag(self, flag: str, kind: str, symbol: str, period: str) -> bool:
        with self._lock:
            keys = self._public_flags[flag]
            return (kind, symbol, period) in keys or (kind, "*", period) in keys

    def _take_public_missing(self, kind: str, symbol: str, period: str, take: bool) -> bool:
        """Whether the file is still missing; ``take`` uses up one of its 404s."""
        with self._lock:
            for key in ((kind, symbol, period), (kind, "*", period)):
                left = self._public_missing.get(key, 0)
                if left > 0:
                    if take:
                        self._public_missing[key] = left - 1
                    return True
            return False

    def _target_call(self, name: str) -> Callable[..., None]:
        def call(*args: Any) -> None:
            getattr(self._target, name)(*args)

        return call


PUBLIC_KINDS = ("trades", "aggTrades", "klines")


def _public_key(kind: str, symbol: str | None, period: Period) -> tuple[str, str, str]:
    if kind not in PUBLIC_KINDS:
        raise ValueError(f"kind must be one of {PUBLIC_KINDS}, got {kind!r}")
    sym = "*" if symbol is None else validate_symbol(symbol)
    text = period.isoformat() if isinstance(period, date) else str(period)
    if len(text) not in (7, 10):
        raise ValueError(f"period must be YYYY-MM-DD or YYYY-MM, got {period!r}")
    return kind, sym, text
