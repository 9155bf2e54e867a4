"""SentLog: every data message actually written to a socket, so tests can prove no loss."""

from __future__ import annotations

import threading
from collections import defaultdict

from crypto_lake.simulator.market import Event


class SentLog:
    """Ids per symbol and stream kind of messages whose frame was written to a socket.

    Recorded after the write returns. Duplicated frames are counted twice in :meth:`count`;
    malformed (truncated) frames are not data and only appear in :attr:`malformed`.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: dict[tuple[str, str], set[int]] = defaultdict(set)
        self._count = 0
        self.malformed = 0
        self.replayed = 0  # frames sent from a replay file (not model events)

    def record(self, ev: Event) -> None:
        with self._lock:
            self._ids[(ev.symbol, ev.kind)].add(ev.ident)
            self._count += 1

    def record_many(self, events: list[Event]) -> None:
        with self._lock:
            ids = self._ids
            for ev in events:
                ids[(ev.symbol, ev.kind)].add(ev.ident)
            self._count += len(events)

    def record_raw(self, n: int = 1) -> None:
        with self._lock:
            self._count += n
            self.replayed += n

    def record_malformed(self) -> None:
        with self._lock:
            self.malformed += 1

    def trade_ids(self, symbol: str) -> set[int]:
        """Trade ids (``t`` of @trade) sent on any socket."""
        return self._copy(symbol, "trade")

    def agg_ids(self, symbol: str) -> set[int]:
        """Aggregate trade ids (``a`` of @aggTrade) sent on any socket."""
        return self._copy(symbol, "aggTrade")

    def update_ids(self, symbol: str) -> set[int]:
        """bookTicker update ids (``u``) sent on any socket."""
        return self._copy(symbol, "bookTicker")

    def count(self) -> int:
        """Number of data frames written (duplicates included)."""
        with self._lock:
            return self._count

    def _copy(self, symbol: str, kind: str) -> set[int]:
        with self._lock:
            return set(self._ids.get((symbol, kind), ()))
