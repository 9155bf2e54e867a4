"""Seeded market model: per symbol a random walk on the tick grid driving trades and quotes.

Deterministic given the seed and the clock: each symbol owns a ``random.Random`` seeded from
``"{seed}:{symbol}"``, and event times are the model's start time plus drawn gaps, so the same
seed started at the same instant produces the same market. Events are generated lazily up to
"now" by :meth:`MarketModel.advance`, in wall-clock time, exactly as a live exchange would.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from crypto_lake.simulator.instruments import Instrument, format_e8, instrument_for
from crypto_lake.simulator.ledger import SymbolLedger

QUOTES_PER_ORDER = 7.0  # extra bookTicker updates per taker order (plus one after each order)
BURST_START_PROB = 0.003  # chance per taker order that a burst of activity begins


@dataclass(slots=True)
class Event:
    """One market event, rendered to wire frames on demand (see wire.py).

    kind is "trade", "aggTrade" or "bookTicker"; ``ident`` is t, a or u respectively.
    """

    kind: str
    symbol: str
    stream: str
    ident: int
    time_us: int
    price: str = ""
    qty: str = ""
    maker: bool = False
    first_id: int = 0  # aggTrade f
    last_id: int = 0  # aggTrade l
    bid: str = ""
    bid_qty: str = ""
    ask: str = ""
    ask_qty: str = ""
    hidden: bool = False  # withheld from sockets by the skip_trade_ids fault
    event_us: int = 0  # E: when the exchange published it
    frames: dict = field(default_factory=dict)  # unit -> rendered bytes


class SymbolMarket:
    """State of one symbol: best bid/ask in ticks, next event times, burst regime."""

    def __init__(self, inst: Instrument, seed: int, start_us: int, rate_scale: float) -> None:
        self.inst = inst
        self.rng = random.Random(f"{seed}:{inst.symbol}")
        rng = self.rng
        lower = inst.symbol.lower()
        self.streams = (f"{lower}@trade", f"{lower}@aggTrade", f"{lower}@bookTicker")
        self.ledger = SymbolLedger(
            inst, rng.randrange(10**8, 4 * 10**9), rng.randrange(10**8, 3 * 10**9)
        )
        self.bid = max(1, round(inst.price * 10**inst.tick_decimals))
        self.ask = self.bid + 1
        self.update_id = rng.randrange(10**9, 6 * 10**10)
        self.order_rate = inst.orders_per_s * rate_scale
        self.quote_rate = self.order_rate * QUOTES_PER_ORDER
        self.mean_lots = max(1.0, inst.mean_qty * 10**inst.lot_decimals)
        self.burst_until = 0
        self.burst_mult = 1.0
        self.next_order = start_us + self._gap(self.order_rate)
        self.next_quote = start_us + self._gap(self.quote_rate)
        self.skip_remaining = 0  # trades still to withhold from sockets

    def _gap(self, rate: float) -> int:
        return max(1, int(self.rng.expovariate(rate) * 1e6))

    def advance(self, now_us: int, out: list[Event]) -> None:
        """Append every event with time <= now_us to ``out`` in time order."""
        while True:
            t = min(self.next_order, self.next_quote)
            if t > now_us:
                return
            if self.next_order <= self.next_quote:
                self._order(t, out)
                mult = self.burst_mult if t < self.burst_until else 1.0
                self.next_order = t + self._gap(self.order_rate * mult)
            else:
                self._walk_quote()
                out.append(self._quote_event(t))
                mult = self.burst_mult if t < self.burst_until else 1.0
                self.next_quote = t + self._gap(self.quote_rate * mult)

    def _walk_quote(self) -> None:
        r = self.rng.random()
        if r < 0.12:
            self.bid += 1
            self.ask = max(self.ask, self.bid + 1)
        elif r < 0.24 and self.bid > 1:
            self.bid -= 1
        elif r < 0.36:
            self.ask = max(self.bid + 1, self.ask - 1)
        elif r < 0.48 and self.ask - self.bid < 3:
            self.ask += 1

    def _quote_event(self, t: int) -> Event:
        rng, inst = self.rng, self.inst
        self.update_id += rng.randint(1, 5)  # real u skips values: useless for gap detection
        return Event(
            "bookTicker",
            inst.symbol,
            self.streams[2],
            self.update_id,
            t,
            bid=format_e8(self.bid * inst.tick_e8),
            bid_qty=format_e8(max(1, int(rng.expovariate(1 / self.mean_lots) * 3)) * inst.lot_e8),
            ask=format_e8(self.ask * inst.tick_e8),
            ask_qty=format_e8(max(1, int(rng.expovariate(1 / self.mean_lots) * 3)) * inst.lot_e8),
        )

    def _order(self, t: int, out: list[Event]) -> None:
        rng, inst = self.rng, self.inst
        if t >= self.burst_until and rng.random() < BURST_START_PROB:
            self.burst_until = t + int(rng.uniform(1.0, 5.0) * 1e6)
            self.burst_mult = rng.uniform(3.0, 8.0)
        taker_sells = rng.random() < 0.5
        ticks = self.bid if taker_sells else self.ask
        n = 1
        while n < inst.max_fills and rng.random() < 0.45:
            n += 1
        fills = [max(1, int(rng.expovariate(1 / self.mean_lots))) for _ in range(n)]
        agg_id, first = self.ledger.add_order(t, ticks, fills, taker_sells)
        price = format_e8(ticks * inst.tick_e8)
        for k, lots in enumerate(fills):
            hidden = self.skip_remaining > 0
            if hidden:
                self.skip_remaining -= 1
            out.append(
                Event(
                    "trade", inst.symbol, self.streams[0], first + k, t, price,
                    format_e8(lots * inst.lot_e8), taker_sells, hidden=hidden,
                )
            )  # fmt: skip
        # An aggregate is withheld when any of its trades is, so its id gap is visible too.
        hidden_agg = any(e.hidden for e in out[-n:])
        out.append(
            Event(
                "aggTrade", inst.symbol, self.streams[1], agg_id, t, price,
                format_e8(sum(fills) * inst.lot_e8), taker_sells, first, first + n - 1,
                hidden=hidden_agg,
            )
        )  # fmt: skip
        # The taker sometimes consumes the whole level: the touch moves one tick.
        if rng.random() < 0.3:
            spread = self.ask - self.bid
            if taker_sells and self.bid > 1:
                self.ask, self.bid = self.bid, self.bid - max(1, spread)
                self.ask = max(self.ask, self.bid + 1)
            elif not taker_sells:
                self.bid, self.ask = self.ask, self.ask + max(1, spread)
        out.append(self._quote_event(t))


class MarketModel:
    """The whole simulated market: one :class:`SymbolMarket` per configured symbol."""

    def __init__(self, symbols: list[str], seed: int, start_us: int, rate_scale: float) -> None:
        self.start_us = start_us
        self.symbols = {
            s: SymbolMarket(instrument_for(s), seed, start_us, rate_scale) for s in symbols
        }

    def advance(self, now_us: int) -> list[Event]:
        """Every event of every symbol up to ``now_us``, merged in time order."""
        out: list[Event] = []
        for market in self.symbols.values():
            market.advance(now_us, out)
        if len(self.symbols) > 1:
            out.sort(key=_event_time)  # stable: keeps per-symbol order for equal times
        for ev in out:
            ev.event_us = now_us
        return out

    def restart_clock(self, start_us: int) -> None:
        """Move the (not yet advanced) model's start to ``start_us``, keeping its draws."""
        for market in self.symbols.values():
            if market.ledger.trade_count:
                raise RuntimeError("cannot restart the clock of a market that already traded")
        self.shift_clock(start_us - self.start_us)

    def shift_clock(self, delta_us: int) -> None:
        """Postpone every pending event by ``delta_us`` (a pause: no backlog on resume)."""
        self.start_us += delta_us
        for market in self.symbols.values():
            market.next_order += delta_us
            market.next_quote += delta_us
            market.burst_until += delta_us

    def ledger(self, symbol: str) -> SymbolLedger:
        return self.symbols[symbol].ledger


def _event_time(ev: Event) -> int:
    return ev.time_us
