"""Replay mode: stream a lake raw file (lib/raw/lines.py format) at its recorded pace x speed.

Only market lines are replayed (session records and REST-repaired trades are skipped); each
is sent as the combined-stream message ``{"stream":..,"data":..}`` it was recorded from, with
the payload's original time unit (a file recorded in µs is replayed in µs). Lines that are not
valid raw lines are skipped and counted, never fatal.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from crypto_lake.lib.core.logs import get_logger
from crypto_lake.lib.core.symbols import InvalidNameError, stream_symbol
from crypto_lake.lib.raw.binance import (
    AGG_TRADE,
    BOOK_TICKER,
    DEPTH_STREAM_SUFFIX,
    DEPTH_UPDATE,
    TRADE,
)
from crypto_lake.lib.raw.lines import RawLineError, open_raw, parse_line
from crypto_lake.simulator.config import SimConfig
from crypto_lake.simulator.market import Event
from crypto_lake.simulator.wire import ws_text_frame

if TYPE_CHECKING:
    from crypto_lake.simulator.server import ExchangeSimulator

log = get_logger("simulator.replay")
_IDENT_KEY = {  # the key of each stream's id (Event.ident)
    TRADE.name: TRADE.key("trade_id"),
    AGG_TRADE.name: AGG_TRADE.key("trade_id"),
    BOOK_TICKER.name: BOOK_TICKER.key("update_id"),
    **{suffix: DEPTH_UPDATE.key("update_id") for suffix in DEPTH_STREAM_SUFFIX.values()},
}
_EVENT_KIND = {suffix: DEPTH_UPDATE.name for suffix in DEPTH_STREAM_SUFFIX.values()}


def market_events(path: Path, stats: dict[str, int]) -> Iterator[tuple[int, Event]]:
    """(recv_ns, event with its frame pre-rendered) for every market line of ``path``."""
    with open_raw(path) as fh:
        for raw in fh:
            if not raw.strip():
                continue
            try:
                line = parse_line(raw)
                if "session" in line or "rest" in line:
                    stats["skipped"] += 1
                    continue
                stream, data = line["stream"], line["data"]
                symbol = stream_symbol(stream)
            except (RawLineError, InvalidNameError):
                stats["invalid"] += 1
                continue
            kind = stream.partition("@")[2]
            ident = data.get(_IDENT_KEY.get(kind, ""), 0)
            frame = ws_text_frame(orjson.dumps({"stream": stream, "data": data}))
            ident = ident if isinstance(ident, int) else 0
            ev = Event(_EVENT_KIND.get(kind, kind), symbol, stream, ident, 0)
            ev.wire_ms = ev.wire_us = frame  # replayed verbatim whatever the client asked
            yield line["recv_ns"], ev


def replay_symbols(path: Path) -> list[str]:
    """Every symbol with market lines in ``path`` (a first pass, so streams can be validated)."""
    stats = {"skipped": 0, "invalid": 0}
    return sorted({ev.symbol for _, ev in market_events(path, stats)})


async def replay_file(sim: ExchangeSimulator, cfg: SimConfig) -> None:
    """Publish the file's market lines to the simulator's connections at recorded pace."""
    assert cfg.replay_path is not None
    stats = {"skipped": 0, "invalid": 0, "sent": 0}
    start_wall = time.monotonic()
    first_ns: int | None = None
    batch: list[Event] = []
    for recv_ns, ev in market_events(Path(cfg.replay_path), stats):
        if first_ns is None:
            first_ns = recv_ns
        due = start_wall + (recv_ns - first_ns) / 1e9 / cfg.replay_speed
        delay = due - time.monotonic()
        if delay > 0.002:
            if batch:
                sim.publish(batch)
                stats["sent"] += len(batch)
                batch = []
            await asyncio.sleep(delay)
        batch.append(ev)
    if batch:
        sim.publish(batch)
        stats["sent"] += len(batch)
    sim.replay_finished.set()
    log.info("replay of %s finished: %s", cfg.replay_path, stats)
