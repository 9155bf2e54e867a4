"""Seeded market model: per symbol a random walk on the tick grid driving trades and quotes.

Deterministic given the seed and the clock: each symbol owns a ``random.Random`` seeded from
``"{seed}:{symbol}"``, and event times are the model's start time plus drawn gaps, so the same
seed started at the same instant produces the same market. Events are generated lazily up to
"now" by :meth:`MarketModel.advance`, in wall-clock time, exactly as a live exchange would.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from crypto_lake.simulator.history import DayCache, SymbolHistory
from crypto_lake.simulator.instruments import Instrument, format_e8, instrument_for
from crypto_lake.simulator.ledger import SymbolLedger, TradeSource
from crypto_lake.simulator.tape import Tape

QUOTES_PER_ORDER = 7.0  # extra bookTicker updates per taker order (plus one after each order)
BURSTS_PER_S = 1 / 60  # a burst of activity starts about once a minute per symbol
_CACHE_MAX = 50_000  # formatted decimal strings kept per symbol (prices repeat constantly)
_BOOK_SIZES = 512
_log = math.log


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
    price: bytes = b""  # decimal strings, pre-encoded for the wire
    qty: bytes = b""
    maker: bool = False
    first_id: int = 0  # aggTrade f
    last_id: int = 0  # aggTrade l
    bid: bytes = b""
    bid_qty: bytes = b""
    ask: bytes = b""
    ask_qty: bytes = b""
    hidden: bool = False  # withheld from sockets by the skip_trade_ids fault
    event_us: int = 0  # E: when the exchange published it
    # Rendered WebSocket frames per time unit, cached: every connection shares them.
    wire_ms: bytes | None = None
    wire_us: bytes | None = None


class SymbolMarket:
    """State of one symbol: best bid/ask in ticks, next event times, burst regime."""

    def __init__(self, inst: Instrument, seed: int, start_us: int, rate_scale: float) -> None:
        self.inst = inst
        self.symbol = inst.symbol
        self.rng = random.Random(f"{seed}:{inst.symbol}")
        rng = self.rng
        lower = inst.symbol.lower()
        self.streams = (f"{lower}@trade", f"{lower}@aggTrade", f"{lower}@bookTicker")
        self.book_stream = self.streams[2]
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
        self.skip_remaining = 0  # trades still to withhold from sockets
        # Burst starts are a Poisson process in time, so rate_scale does not make them common.
        self.burst_prob = BURSTS_PER_S / self.order_rate
        self._order_gap_us = 1e6 / self.order_rate  # mean gaps; bursts divide them
        self._quote_gap_us = 1e6 / self.quote_rate
        self._tick_e8, self._lot_e8 = inst.tick_e8, inst.lot_e8
        self._prices: dict[int, bytes] = {}
        self._qtys: dict[int, bytes] = {}
        # Resting sizes shown in bookTicker: a seeded table keeps the hot path cheap.
        self._book_sizes = [self._qty(self._lots(3.0)) for _ in range(_BOOK_SIZES)]
        self.next_order = start_us + self._gap(self._order_gap_us, start_us)
        self.next_quote = start_us + self._gap(self._quote_gap_us, start_us)

    def _price(self, ticks: int) -> bytes:
        s = self._prices.get(ticks)
        if s is None:
            if len(self._prices) > _CACHE_MAX:
                self._prices.clear()
            s = self._prices[ticks] = format_e8(ticks * self._tick_e8).encode()
        return s

    def _qty(self, lots: int) -> bytes:
        s = self._qtys.get(lots)
        if s is None:
            if len(self._qtys) > _CACHE_MAX:
                self._qtys.clear()
            s = self._qtys[lots] = format_e8(lots * self._lot_e8).encode()
        return s

    def _lots(self, scale: float = 1.0) -> int:
        return max(1, int(-_log(1.0 - self.rng.random()) * self.mean_lots * scale))

    def _gap(self, mean_us: float, t: int) -> int:
        """An exponential inter-arrival time in µs (a Poisson process), at least 1 µs."""
        if t < self.burst_until:
            mean_us /= self.burst_mult
        return 1 + int(-_log(1.0 - self.rng.random()) * mean_us)

    def advance(self, now_us: int, out: list[Event]) -> None:
        """Append every event with time <= now_us to ``out`` in time order."""
        append = out.append
        while True:
            if self.next_order <= self.next_quote:
                t = self.next_order
                if t > now_us:
                    return
                self._order(t, out)
                self.next_order = t + self._gap(self._order_gap_us, t)
            else:
                t = self.next_quote
                if t > now_us:
                    return
                append(self._quote_event(t))
                self.next_quote = t + self._gap(self._quote_gap_us, t)

    def _quote_event(self, t: int) -> Event:
        # The hottest function of the simulator (most messages are quotes): locals, no calls.
        rng = self.rng.random
        bid, ask = self.bid, self.ask
        r = rng()
        # random walk of the touch on the tick grid; the spread stays 1..3 ticks
        if r < 0.12:
            bid += 1
            if ask <= bid:
                ask = bid + 1
        elif r < 0.24:
            if bid > 1:
                bid -= 1
        elif r < 0.36:
            if ask - 1 > bid:
                ask -= 1
        elif r < 0.48 and ask - bid < 3:
            ask += 1
        self.bid, self.ask = bid, ask
        # real u skips values: useless for gap detection, fine for ordering
        self.update_id = uid = self.update_id + 1 + int(rng() * 5)
        prices, sizes = self._prices, self._book_sizes
        return Event(
            "bookTicker",
            self.symbol,
            self.book_stream,
            uid,
            t,
            bid=prices.get(bid) or self._price(bid),
            bid_qty=sizes[int(rng() * _BOOK_SIZES)],
            ask=prices.get(ask) or self._price(ask),
            ask_qty=sizes[int(rng() * _BOOK_SIZES)],
        )

    def _order(self, t: int, out: list[Event]) -> None:
        rng, inst = self.rng, self.inst
        if t >= self.burst_until and rng.random() < self.burst_prob:
            self.burst_until = t + int(rng.uniform(1.0, 5.0) * 1e6)
            self.burst_mult = rng.uniform(3.0, 8.0)
        taker_sells = rng.random() < 0.5
        ticks = self.bid if taker_sells else self.ask
        n = 1
        while n < inst.max_fills and rng.random() < 0.45:
            n += 1
        fills = [self._lots() for _ in range(n)]
        agg_id, first = self.ledger.add_order(t, ticks, fills, taker_sells)
        price = self._price(ticks)
        for k, lots in enumerate(fills):
            hidden = self.skip_remaining > 0
            if hidden:
                self.skip_remaining -= 1
            out.append(
                Event(
                    "trade", inst.symbol, self.streams[0], first + k, t, price,
                    self._qty(lots), taker_sells, hidden=hidden,
                )
            )  # fmt: skip
        # An aggregate is withheld when any of its trades is, so its id gap is visible too.
        hidden_agg = any(e.hidden for e in out[-n:])
        out.append(
            Event(
                "aggTrade", inst.symbol, self.streams[1], agg_id, t, price,
                self._qty(sum(fills)), taker_sells, first, first + n - 1,
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
        self.seed = seed
        self.start_us = start_us
        self.events_generated = 0  # every event ever produced (for throughput figures)
        self.symbols = {
            s: SymbolMarket(instrument_for(s), seed, start_us, rate_scale) for s in symbols
        }
        self.tapes: dict[str, Tape] = {}  # history then live, once add_history ran

    def add_history(self, days: int, rate_scale: float) -> None:
        """Generate (lazily) ``days`` days of history before the start (see history.py).

        Call before the market trades. Live ids are raised only if the history would not
        fit below them, so history ids end exactly one before the live ledger's first.
        """
        cache = DayCache()
        for symbol, market in self.symbols.items():
            led = market.ledger
            if led.trade_count:
                raise RuntimeError("history must be added before the market trades")
            hist = SymbolHistory.before_live(
                market.inst, self.seed, self.start_us, days, rate_scale, market.bid, cache
            )
            led.first_trade_id = max(led.first_trade_id, hist.trade_count + 1)
            led.first_agg_id = max(led.first_agg_id, hist.agg_count() + 1)
            hist.end_ids_at(led.first_trade_id, led.first_agg_id)
            self.tapes[symbol] = Tape(hist, led)

    def source(self, symbol: str) -> TradeSource:
        """What REST and public files answer from: the tape with history, else the ledger."""
        tape = self.tapes.get(symbol)
        return tape if tape is not None else self.symbols[symbol].ledger

    def advance(self, now_us: int) -> list[Event]:
        """Every event of every symbol up to ``now_us``, merged in time order."""
        out: list[Event] = []
        for market in self.symbols.values():
            market.advance(now_us, out)
        if len(self.symbols) > 1:
            out.sort(key=_event_time)  # stable: keeps per-symbol order for equal times
        for ev in out:
            ev.event_us = now_us
        self.events_generated += len(out)
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

    def trim_before(self, time_us: int) -> int:
        """Forget trades older than ``time_us`` in every symbol's ledger."""
        return sum(m.ledger.trim_before(time_us) for m in self.symbols.values())

    def ledger(self, symbol: str) -> SymbolLedger:
        return self.symbols[symbol].ledger


def _event_time(ev: Event) -> int:
    return ev.time_us
