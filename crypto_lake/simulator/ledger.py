"""Ground truth of every trade the simulated market generated, kept columnar per symbol.

The streams and the REST API both read from here, so REST answers are consistent with what
was streamed by construction. Columns are ``array.array`` (8 bytes per value, appended in
time order); queries copy a slice into numpy and aggregate with integer arithmetic, so kline
volumes are exact.

Queries (queries.py, public_files.py) read any *trade source* through the same few methods:
``SymbolLedger`` (the live market), ``SymbolHistory`` (history.py, the generated past) and
``Tape`` (tape.py, history followed by the live ledger) all provide them. Each returns
:class:`TradeSlice` pieces whose trade ids are consecutive within the piece.
"""

from __future__ import annotations

import threading
from array import array
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from crypto_lake.simulator.instruments import Instrument, format_e8


@dataclass(frozen=True)
class TradeSlice:
    """A contiguous run of trades as numpy columns (times in µs, prices in ticks).

    Trade ids are ``first_id + index``. When a piece holds whole aggregates, ``agg_starts``
    gives the index of each aggregate's first trade and ``first_agg_id`` the first one's id.
    """

    first_id: int
    time_us: np.ndarray
    ticks: np.ndarray
    lots: np.ndarray
    maker: np.ndarray  # 1 when the buyer was the maker (taker sold)
    agg_starts: np.ndarray | None = None
    first_agg_id: int = 0

    def __len__(self) -> int:
        return len(self.time_us)

    def part(self, lo: int, hi: int) -> TradeSlice:
        """Trades lo..hi-1 of this piece (aggregate starts kept when lo and hi fall on them)."""
        starts, first_agg = None, 0
        if self.agg_starts is not None:
            a0, a1 = np.searchsorted(self.agg_starts, [lo, hi])
            starts = self.agg_starts[a0:a1] - lo
            first_agg = self.first_agg_id + int(a0)
        return TradeSlice(
            self.first_id + lo, self.time_us[lo:hi], self.ticks[lo:hi], self.lots[lo:hi],
            self.maker[lo:hi], starts, first_agg,
        )  # fmt: skip


class TradeSource(Protocol):
    """What queries read: SymbolLedger, SymbolHistory (history.py) and Tape (tape.py).

    Indices count trades (or aggregates) from the source's oldest retained one; ``*_of``
    maps an id to its index (older ids map to 0); ``chunks`` take index ranges,
    ``time_chunks`` the trades with t0 <= time < t1.
    """

    instrument: Instrument
    first_trade_id: int
    first_agg_id: int
    retained_from_us: int

    @property
    def trade_count(self) -> int: ...
    def agg_count(self) -> int: ...
    def trade_index_of(self, trade_id: int) -> int: ...
    def agg_index_of(self, agg_id: int) -> int: ...
    def chunks(self, lo: int, hi: int) -> list[TradeSlice]: ...
    def agg_chunks(self, lo: int, hi: int) -> list[TradeSlice]: ...
    def time_chunks(self, t0_us: int, t1_us: int, aggs: bool = False) -> list[TradeSlice]: ...
    def index_at_time(self, time_us: int, right: bool = False) -> int: ...
    def agg_index_at_time(self, time_us: int, right: bool = False) -> int: ...
    def last_price_before(self, time_us: int) -> int | None: ...
    def first_time(self) -> int | None: ...


class SymbolLedger:
    """Every trade and aggregate trade of one symbol; thread-safe appends and reads."""

    def __init__(self, instrument: Instrument, first_trade_id: int, first_agg_id: int) -> None:
        self.instrument = instrument
        self.first_trade_id = first_trade_id
        self.first_agg_id = first_agg_id
        self._time = array("q")
        self._ticks = array("q")
        self._lots = array("q")
        self._maker = array("b")
        self._agg_start = array("q")  # index of each aggregate's first trade
        self._agg_time = array("q")
        self._lock = threading.Lock()
        self.retained_from_us = 0  # trades before this time were forgotten (trim_before)

    # -- writing (market loop only) ---------------------------------------------------------
    def add_order(self, time_us: int, ticks: int, fills: list[int], maker: bool) -> tuple[int, int]:
        """Record one taker order (``fills`` lots at one price); returns (agg id, first id)."""
        with self._lock:
            start = len(self._time)
            self._agg_start.append(start)
            self._agg_time.append(time_us)
            n = len(fills)
            self._time.extend([time_us] * n)
            self._ticks.extend([ticks] * n)
            self._lots.extend(fills)
            self._maker.extend([int(maker)] * n)
            return self.first_agg_id + len(self._agg_start) - 1, self.first_trade_id + start

    def trim_before(self, time_us: int) -> int:
        """Forget whole aggregates older than ``time_us`` (bounded memory for long runs).

        Ids stay as they were: REST simply no longer finds the forgotten ones, like an
        exchange answering from its retained history. Returns the number of trades dropped.
        """
        with self._lock:
            j = bisect_left(self._agg_time, time_us)
            if j == 0:
                return 0
            k = self._agg_start[j] if j < len(self._agg_start) else len(self._time)
            for col in (self._time, self._ticks, self._lots, self._maker):
                del col[:k]
            rest = np.frombuffer(self._agg_start[j:], dtype=np.int64) - k
            self._agg_start = array("q", rest.tobytes())
            del self._agg_time[:j]
            self.first_trade_id += k
            self.first_agg_id += j
            self.retained_from_us = max(self.retained_from_us, time_us)
            return k

    # -- reading ----------------------------------------------------------------------------
    @property
    def trade_count(self) -> int:
        return len(self._time)

    @property
    def next_trade_id(self) -> int:
        return self.first_trade_id + len(self._time)

    def slice(self, lo: int, hi: int) -> TradeSlice:
        """Trades with index lo..hi-1 (clipped) as numpy copies."""
        with self._lock:
            lo, hi = max(lo, 0), min(hi, len(self._time))
            return self._slice_locked(lo, max(hi, lo))

    def trade_index_of(self, trade_id: int) -> int:
        """Index of trade ``trade_id`` (an older, forgotten id maps to the oldest retained)."""
        return max(0, trade_id - self.first_trade_id)

    def agg_index_of(self, agg_id: int) -> int:
        return max(0, agg_id - self.first_agg_id)

    def chunks(self, lo: int, hi: int) -> list[TradeSlice]:
        """Trades with index lo..hi-1 (clipped), as pieces of consecutive ids (here: one)."""
        return [self.slice(lo, hi)]

    def time_chunks(self, t0_us: int, t1_us: int, aggs: bool = False) -> list[TradeSlice]:
        """Trades with t0 <= time < t1 (whole aggregates: fills share one time), in one lock."""
        with self._lock:
            lo, hi = bisect_left(self._time, t0_us), bisect_left(self._time, t1_us)
            starts, first_agg = None, 0
            if aggs:
                a0, a1 = bisect_left(self._agg_time, t0_us), bisect_left(self._agg_time, t1_us)
                starts = np.frombuffer(self._agg_start[a0:a1], dtype=np.int64) - lo
                first_agg = self.first_agg_id + a0
            return [self._slice_locked(lo, hi, starts, first_agg)]

    def agg_chunks(self, lo: int, hi: int) -> list[TradeSlice]:
        """Aggregates lo..hi-1 (clipped) with their trades, as one piece with agg_starts."""
        with self._lock:
            n = len(self._agg_start)
            lo, hi = max(lo, 0), min(hi, n)
            if hi <= lo:
                return []
            first = self._agg_start[lo]
            end = self._agg_start[hi] if hi < n else len(self._time)
            starts = np.frombuffer(self._agg_start[lo:hi], dtype=np.int64) - first
            return [self._slice_locked(first, end, starts, self.first_agg_id + lo)]

    def _slice_locked(
        self, lo: int, hi: int, starts: np.ndarray | None = None, first_agg: int = 0
    ) -> TradeSlice:
        return TradeSlice(
            self.first_trade_id + lo,
            np.frombuffer(self._time[lo:hi], dtype=np.int64),
            np.frombuffer(self._ticks[lo:hi], dtype=np.int64),
            np.frombuffer(self._lots[lo:hi], dtype=np.int64),
            np.frombuffer(self._maker[lo:hi], dtype=np.int8),
            starts,
            first_agg,
        )

    def index_at_time(self, time_us: int, right: bool = False) -> int:
        with self._lock:
            return (bisect_right if right else bisect_left)(self._time, time_us)

    def last_price_before(self, time_us: int) -> int | None:
        """Ticks of the last trade strictly before ``time_us`` (carried into empty klines)."""
        with self._lock:
            i = bisect_left(self._time, time_us)
            return self._ticks[i - 1] if i > 0 else None

    def first_time(self) -> int | None:
        with self._lock:
            return self._time[0] if self._time else None

    def agg_bounds(self, lo: int, hi: int) -> tuple[int, list[int], list[int]]:
        """Aggregates lo..hi-1 (clipped): (first agg index, trade start indices, trade ends)."""
        with self._lock:
            n = len(self._agg_start)
            lo, hi = max(lo, 0), min(hi, n)
            hi = max(hi, lo)
            starts = list(self._agg_start[lo:hi])
            ends = [*starts[1:], self._agg_start[hi] if hi < n else len(self._time)]
            return lo, starts, ends

    def agg_count(self) -> int:
        return len(self._agg_start)

    def agg_index_at_time(self, time_us: int, right: bool = False) -> int:
        with self._lock:
            return (bisect_right if right else bisect_left)(self._agg_time, time_us)

    def trade_dicts(self) -> list[dict]:
        """Every trade as a plain dict (ids, decimal strings, µs time, aggregate id)."""
        agg_lo, starts, ends = self.agg_bounds(0, self.agg_count())
        trades = self.slice(0, self.trade_count)
        inst = self.instrument
        out: list[dict] = []
        for k, (s, e) in enumerate(zip(starts, ends, strict=True)):
            for i in range(s, e):
                ticks, lots = int(trades.ticks[i]), int(trades.lots[i])
                out.append(
                    {
                        "id": self.first_trade_id + i,
                        "agg_id": self.first_agg_id + agg_lo + k,
                        "price": format_e8(ticks * inst.tick_e8),
                        "qty": format_e8(lots * inst.lot_e8),
                        "quote_qty": format_e8(ticks * lots * inst.notional_e8),
                        "time_us": int(trades.time_us[i]),
                        "time_ms": int(trades.time_us[i]) // 1000,
                        "is_buyer_maker": bool(trades.maker[i]),
                    }
                )
        return out
