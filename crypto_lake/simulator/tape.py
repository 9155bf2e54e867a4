"""A symbol's whole tape: the generated history (history.py) followed by the live ledger.

``Tape`` is a trade source (see ledger.py) over one index space: history trades first
(indices 0..H-1), then the live ledger's. Ids run straight from history into live, so
``first_trade_id + index`` is every trade's id, unless the live ledger has forgotten its
oldest trades (``SimConfig.history_s``): then ids jump where live begins, and an id in the
forgotten stretch answers from the oldest retained live trade, as a pruned exchange would.
"""

from __future__ import annotations

from crypto_lake.simulator.history import SymbolHistory
from crypto_lake.simulator.ledger import SymbolLedger, TradeSlice


class Tape:
    """History then live, for REST queries and public files that span both."""

    def __init__(self, history: SymbolHistory, live: SymbolLedger) -> None:
        self.history = history
        self.live = live
        self.instrument = live.instrument
        self.boundary_us = history.end_us  # the live start instant: every live trade is later

    @property
    def first_trade_id(self) -> int:
        return self.history.first_trade_id

    @property
    def first_agg_id(self) -> int:
        return self.history.first_agg_id

    @property
    def trade_count(self) -> int:
        return self.history.trade_count + self.live.trade_count

    def agg_count(self) -> int:
        return self.history.agg_count() + self.live.agg_count()

    @property
    def retained_from_us(self) -> int:
        return self.live.retained_from_us

    def trade_index_of(self, trade_id: int) -> int:
        if trade_id < self.live.first_trade_id:
            return min(self.history.trade_index_of(trade_id), self.history.trade_count)
        return self.history.trade_count + self.live.trade_index_of(trade_id)

    def agg_index_of(self, agg_id: int) -> int:
        if agg_id < self.live.first_agg_id:
            return min(self.history.agg_index_of(agg_id), self.history.agg_count())
        return self.history.agg_count() + self.live.agg_index_of(agg_id)

    def chunks(self, lo: int, hi: int) -> list[TradeSlice]:
        h = self.history.trade_count
        out = self.history.chunks(lo, min(hi, h)) if lo < h else []
        if hi > h:
            out += [c for c in self.live.chunks(max(lo, h) - h, hi - h) if len(c)]
        return out

    def agg_chunks(self, lo: int, hi: int) -> list[TradeSlice]:
        h = self.history.agg_count()
        out = self.history.agg_chunks(lo, min(hi, h)) if lo < h else []
        if hi > h:
            out += self.live.agg_chunks(max(lo, h) - h, hi - h)
        return out

    def time_chunks(self, t0_us: int, t1_us: int, aggs: bool = False) -> list[TradeSlice]:
        b = self.boundary_us
        out = self.history.time_chunks(t0_us, min(t1_us, b), aggs) if t0_us < b else []
        if t1_us > b:
            out += [c for c in self.live.time_chunks(max(t0_us, b), t1_us, aggs) if len(c)]
        return out

    def index_at_time(self, time_us: int, right: bool = False) -> int:
        if time_us < self.boundary_us:
            return self.history.index_at_time(time_us, right)
        return self.history.trade_count + self.live.index_at_time(time_us, right)

    def agg_index_at_time(self, time_us: int, right: bool = False) -> int:
        if time_us < self.boundary_us:
            return self.history.agg_index_at_time(time_us, right)
        return self.history.agg_count() + self.live.agg_index_at_time(time_us, right)

    def last_price_before(self, time_us: int) -> int | None:
        if time_us > self.boundary_us:
            price = self.live.last_price_before(time_us)
            if price is not None:
                return price
        return self.history.last_price_before(min(time_us, self.boundary_us))

    def first_time(self) -> int | None:
        first = self.history.first_time()
        return first if first is not None else self.live.first_time()
