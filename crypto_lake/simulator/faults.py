"""Fault knobs: everything that goes wrong with a real exchange, on demand.

Plain attributes (probabilities, flags) are read by the server on every message/request.
Methods that act on live connections run on the simulator's event loop; when called from
another thread (SimulatorThread) they are handed to that loop and return once applied.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, Protocol

from crypto_lake.lib.core.symbols import validate_symbol


class FaultTarget(Protocol):
    """What the faults act on (implemented by ExchangeSimulator)."""

    def _skip_trades(self, symbol: str, n: int) -> None: ...
    def _drop_all(self) -> None: ...
    def _stall_all(self, seconds: float) -> None: ...


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

    def _target_call(self, name: str) -> Callable[..., None]:
        def call(*args: Any) -> None:
            getattr(self._target, name)(*args)

        return call
