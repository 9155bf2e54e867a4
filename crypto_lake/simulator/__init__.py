"""A loopback Binance spot exchange for the demo, the tests and the benchmarks (SPEC §4).

``ExchangeSimulator`` serves combined WebSocket streams (``/stream?streams=...``) and REST
(``/api/v3/...``) on one aiohttp port, driven by a seeded market model (market.py) or by a
replayed raw file (replay.py), with fault knobs (faults.py) and a log of what it sent
(sentlog.py). ``SimulatorThread`` runs it on a background event loop.
"""

from crypto_lake.simulator.config import SimConfig
from crypto_lake.simulator.server import ExchangeSimulator
from crypto_lake.simulator.thread import SimulatorThread

__all__ = ["ExchangeSimulator", "SimConfig", "SimulatorThread"]
