"""SimulatorThread: an ExchangeSimulator on its own event loop in a background thread.

For tests that drive a collector running as a subprocess (or any synchronous code). The
object API is the simulator's: attributes are forwarded, fault methods are applied on the
simulator's loop, and SentLog / ledger reads are lock-protected.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from crypto_lake.simulator.config import SimConfig
from crypto_lake.simulator.server import ExchangeSimulator


class SimulatorThread:
    """``with SimulatorThread(cfg) as sim: ...`` runs the simulator until the block ends."""

    def __init__(self, cfg: SimConfig, host: str = "127.0.0.1", port: int = 0) -> None:
        self.cfg = cfg
        self.sim = ExchangeSimulator(cfg)
        self._host, self._port = host, port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    def start(self, timeout: float = 10.0) -> SimulatorThread:
        self._thread = threading.Thread(target=self._run, name="exchange-simulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("simulator did not start in time")
        if self._error is not None:
            raise RuntimeError("simulator failed to start") from self._error
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:  # surfaced to start() / stop()
            self._error = exc
            self._ready.set()
        finally:
            loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        await self.sim.start(self._host, self._port)
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await self.sim.stop()

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def call(self, fn: Any, *args: Any, timeout: float = 10.0) -> Any:
        """Run a plain function on the simulator's loop and return its result."""

        async def run() -> Any:
            return fn(*args)

        assert self._loop is not None, "simulator thread is not running"
        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    def __enter__(self) -> SimulatorThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __getattr__(self, name: str) -> Any:
        # ws_url, rest_url, faults, sent, trades, market, connections... come from the simulator.
        return getattr(self.sim, name)
