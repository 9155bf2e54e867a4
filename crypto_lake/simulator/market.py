"""Seeded market model: per symbol a random walk on the tick grid driving trades and quotes.

Deterministic given the seed and the clock: each symbol owns a ``random.Random`` seeded from
``"{seed}:{symbol}"``, and event times are the model's start time plus drawn gaps, so the same
seed started at the same instant produces the same market. Events are generated lazily up to
"now" by :meth:`MarketModel.advance`, in wall-clock time, exactly as a live exchange would.

A symbol with an order book (:meth:`MarketModel.add_books`, book.py) takes its bookTicker ids
and sizes from the book, which follows the model's touch; the model's own draws stay the same,
so its trades and touch prices do not depend on whether the symbol has a book.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from crypto_lake.simulator.history import DayCache, SymbolHistory
from crypto_lake.simulator.instruments import Instrument, format_e8, instrument_for
from crypto_lake.simulator.ledger import SymbolLedger, TradeSource
from crypto_lake.simulator.tape import Tape

if TYPE_CHECKING:
    from crypto_lake.simulator.book import OrderBook

QUOTES_PER_ORDER = 7.0  # extra bookTicker updates per taker order (plus one after each order)
BURSTS_PER_S = 1 / 60  # a burst of activity starts about once a minute per symbol
_CACHE_MAX = 50_000  # formatted decimal strings kept per symbol (prices repeat constantly)
_BOOK_SIZES = 512
_log = math.log


@dataclass(slots=True)
class Event:
    """One market event, rendered to wire frames on demand (see wire.py).

    kind is "trade", "aggTrade", "bookTicker" or "depthUpdate"; ``ident`` is t, a or u
    respectively (u, the last update id, for depthUpdate, whose U is ``first_id``).
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
    bids: bytes = b""  # depthUpdate b and a: the changed levels as JSON arrays
    asks: bytes = b""


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
        self.book: OrderBook | None = None  # the symbol's order book (MarketModel.add_books)
        # Burst starts are a Poisson process in time, so rate_scale does not make them common.
        self.burst_prob = BURSTS_PER_S / self.order_rate
        self._order_gap_us = 1e6 / self.order_rate  # mean gaps; bursts divide them
        self._quote_gap_us = 1e6 / self.quote_rate
        self._tick_e8, self._lot_e8 = inst.tick_e8, inst.lot_e8
        self._prices: dict[int, bytes] = {}
        self._qtys: dict[int, bytes] = {}
        # Resting sizes shown in bookTicker: a seeded table keeps the hot path cheap.
        self._book_lots = [self._lots(3.0) for _ in range(_BOOK_SIZES)]
        self._book_sizes = [self._qty(lots) for lots in self._book_lots]
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
        if self.book is not None:
            self._advance_with_book(self.book, now_us, out)
            return
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

    def _advance_with_book(self, book: OrderBook, now_us: int, out: list[Event]) -> None:
        """:meth:`advance` with the book's background updates and diff events interleaved."""
        with book.lock:
            while True:
                t = self.next_order if self.next_order <= self.next_quote else self.next_quote
                tb = book.next_change
                if tb < t:
                    if tb > now_us:
                        break
                    book.flush_windows(tb, out)
                    book.background_change(tb)
                    continue
                if t > now_us:
                    break
                book.flush_windows(t, out)
                if self.next_order <= self.next_quote:
                    self._order(t, out)
                    self.next_order = t + self._gap(self._order_gap_us, t)
                else:
                    out.append(self._quote_event(t))
                    self.next_quote = t + self._gap(self._quote_gap_us, t)
            book.flush_windows(now_us, out)
            book.advanced_to_us = now_us

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
        bid_size = int(rng() * _BOOK_SIZES)
        ask_size = int(rng() * _BOOK_SIZES)
        if self.book is not None:
            return self._book_ticker(t, bid, bid_size, ask, ask_size)
        prices, sizes = self._prices, self._book_sizes
        return Event(
            "bookTicker",
            self.symbol,
            self.book_stream,
            uid,
            t,
            bid=prices.get(bid) or self._price(bid),
            bid_qty=sizes[bid_size],
            ask=prices.get(ask) or self._price(ask),
            ask_qty=sizes[ask_size],
        )

    def _book_ticker(self, t: int, bid: int, bid_size: int, ask: int, ask_size: int) -> Event:
        """The quote as one book update: the bookTicker shows the book after it (its u)."""
        assert self.book is not None
        uid, bid_lots, ask_lots = self.book.set_touch(
            t, bid, self._book_lots[bid_size], ask, self._book_lots[ask_size]
        )
        return Event(
            "bookTicker", self.symbol, self.book_stream, uid, t,
            bid=self._price(bid), bid_qty=self._qty(bid_lots),
            ask=self._price(ask), ask_qty=self._qty(ask_lots),
        )  # fmt: skip

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

    def add_books(self, symbols: list[str], levels: int, changes_per_s: float) -> None:
        """Give ``symbols`` an order book (book.py) behind their bookTicker; call before the
        market trades. ``levels`` per side, ``changes_per_s`` background updates per second."""
        from crypto_lake.simulator.book import OrderBook

        for symbol in symbols:
            market = self.symbols[symbol]
            if market.ledger.trade_count:
                raise RuntimeError("books must be added before the market trades")
            market.book = OrderBook(
                market.inst, self.seed, self.start_us, (market.bid, market.ask),
                market.update_id, levels, changes_per_s, market.mean_lots, market._price,
                market._qty,
            )  # fmt: skip

    def books(self) -> dict[str, OrderBook]:
        """The order books by symbol (symbols without one are left out)."""
        return {s: m.book for s, m in self.symbols.items() if m.book is not None}

    def close_depth_windows(self, now_us: int) -> list[Event]:
        """The diff events of every book's open windows now, without waiting for their end
        (before a pause, so everything that happened has been published)."""
        out: list[Event] = []
        for book in self.books().values():
            with book.lock:
                book.flush_windows(now_us, out, force=True)
        for ev in out:
            ev.event_us = now_us
        self.events_generated += len(out)
        return out

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
            if market.book is not None:
                market.book.next_change += delta_us
                market.book.advanced_to_us += delta_us

    def trim_before(self, time_us: int) -> int:
        """Forget trades older than ``time_us`` in every symbol's ledger."""
        return sum(m.ledger.trim_before(time_us) for m in self.symbols.values())

    def ledger(self, symbol: str) -> SymbolLedger:
        return self.symbols[symbol].ledger


def _event_time(ev: Event) -> int:
    return ev.time_us
