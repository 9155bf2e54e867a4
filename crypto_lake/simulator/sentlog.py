"""SentLog: every data message actually written to a socket, so tests can prove no loss."""

from __future__ import annotations

import threading
from collections import defaultdict

from crypto_lake.lib.raw.binance import DEPTH_STREAM_SUFFIX
from crypto_lake.simulator.market import Event


class SentLog:
    """Ids per symbol and stream kind of messages whose frame was written to a socket.

    Recorded after the write returns. Duplicated frames are counted twice in :meth:`count`;
    malformed (truncated) frames are not data and only appear in :attr:`malformed`.
    """

    def __init__(self, record_ids: bool = True) -> None:
        self.record_ids = record_ids
        self._lock = threading.Lock()
        self._ids: dict[str, set[int]] = defaultdict(set)  # by stream name, e.g. btcusdt@trade
        self._count = 0
        self.malformed = 0

    def record_many(self, events: list[Event]) -> None:
        with self._lock:
            self._count += len(events)
            if not self.record_ids:
                return
            ids = self._ids
            for ev in events:
                ids[ev.stream].add(ev.ident)

    def record_malformed(self, n: int = 1) -> None:
        with self._lock:
            self.malformed += n

    def _require_ids(self) -> None:
        if not self.record_ids:
            raise RuntimeError("this simulator was started with record_sent_ids=False")

    def trade_ids(self, symbol: str) -> set[int]:
        """Trade ids (``t`` of @trade) sent on any socket."""
        return self._copy(symbol, "trade")

    def agg_ids(self, symbol: str) -> set[int]:
        """Aggregate trade ids (``a`` of @aggTrade) sent on any socket."""
        return self._copy(symbol, "aggTrade")

    def update_ids(self, symbol: str) -> set[int]:
        """bookTicker update ids (``u``) sent on any socket."""
        return self._copy(symbol, "bookTicker")

    def depth_update_ids(self, symbol: str, speed_ms: int = 100) -> set[int]:
        """Last update ids (``u``) of the diff events sent on ``@depth@100ms`` (or ``@depth``
        with ``speed_ms=1000``) on any socket."""
        return self._copy(symbol, DEPTH_STREAM_SUFFIX[speed_ms])

    def count(self) -> int:
        """Number of data frames written (duplicates included)."""
        with self._lock:
            return self._count

    def _copy(self, symbol: str, kind: str) -> set[int]:
        self._require_ids()
        with self._lock:
            return set(self._ids.get(f"{symbol.lower()}@{kind}", ()))
