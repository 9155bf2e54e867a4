"""The order book of one symbol: ``@depth`` diff events, ``/api/v3/depth`` and ground truth.

Levels live on the instrument's integer grids, keyed so that both sides sort the same way:
key = -ticks for a bid and +ticks for an ask, so ``keys[0]`` is a side's best level and a
larger key is further from the touch (a key's sign also tells its side).

Every change of the book is one *update* taking the next id of the symbol's update id
sequence, which bookTicker's ``u`` shares. There are two kinds:

* the touch, set by the market model (market.py) at each of its bookTickers: best bid/ask
  price and quantity, levels inside the new spread removed. The bookTicker carries that
  update's id, so it always shows the book's best levels after its ``u``, and trades happen at
  them (the model trades at its touch, which is the book's).
* background changes deeper in the book, never at the best level: a level added, resized or
  removed; a Poisson process of ``changes_per_s`` drawn from the book's own random stream, so
  the model's draws (its trades and quotes) are the same with or without a book.

Diff events are collected per update speed in windows on the epoch grid (100 ms and 1 s):
the levels changed in the window with their last quantity (0 = removed), ``U``..``u`` the
window's updates; a window without updates sends nothing. Ground truth: a checkpoint of the
whole book at the start of every second with an update, plus that second's changes, answer
"the book after update id X" and "the book at the end of second S" for the retained time.
"""

from __future__ import annotations

import math
import random
import threading
from array import array
from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable
from dataclasses import dataclass, field

from crypto_lake.lib.raw.binance import DEPTH_STREAM_SUFFIX, DEPTH_UPDATE
from crypto_lake.simulator.instruments import Instrument, format_e8
from crypto_lake.simulator.market import Event

_log = math.log
_NEVER = 1 << 62  # next_change when background changes are off
_LEVEL_LOTS = 4.0  # mean resting size of a deeper level, in mean fills
Level = tuple[str, str]  # (price, qty) as 8-decimal strings


@dataclass(frozen=True)
class BookView:
    """The book right after update ``update_id``: (price, qty) strings, best level first."""

    update_id: int
    bids: list[Level]
    asks: list[Level]


@dataclass(slots=True)
class DiffWindow:
    """The diff events of one update speed, with the faults pending on them."""

    span_us: int
    stream: str  # e.g. btcusdt@depth@100ms
    last_u: int  # u of the last event produced (the next one starts at last_u + 1)
    end_us: int = 0  # end of the window being collected
    levels: dict[int, int] = field(default_factory=dict)  # key -> lots changed in it
    drop_left: int = 0
    reorder: bool = False
    held: Event | None = None  # held back by the reorder fault until the next event


@dataclass(slots=True)
class _Second:
    """Ground truth of one epoch second: the book before it, then its changes in order."""

    second: int
    base_id: int  # the update id the base state is after
    base_keys: array
    base_lots: array
    ids: array = field(default_factory=lambda: array("q"))
    keys: array = field(default_factory=lambda: array("q"))
    lots: array = field(default_factory=lambda: array("q"))


class _Side:
    __slots__ = ("keys", "lots")

    def __init__(self) -> None:
        self.keys: list[int] = []  # sorted; keys[0] is the best level
        self.lots: dict[int, int] = {}


class OrderBook:
    """One symbol's simulated book; mutated by the market loop, read under ``lock``."""

    def __init__(
        self,
        inst: Instrument,
        seed: int,
        start_us: int,
        touch: tuple[int, int],
        update_id: int,
        levels: int,
        changes_per_s: float,
        mean_lots: float,
        price_text: Callable[[int], bytes],
        qty_text: Callable[[int], bytes],
    ) -> None:
        self.inst = inst
        self.symbol = inst.symbol
        self.rng = random.Random(f"{seed}:{inst.symbol}:book")
        self.levels = levels  # target number of levels per side
        self.update_id = update_id
        self.lock = threading.Lock()
        self.advanced_to_us = start_us  # updates up to this time have been applied
        self._mean_lots = mean_lots * _LEVEL_LOTS
        self._reach = float(max(2, levels))  # mean distance (ticks) of a new level from the best
        self._gap_us = 1e6 / changes_per_s if changes_per_s > 0 else 0.0
        self.next_change = start_us + self._gap() if self._gap_us else _NEVER
        self._price_text, self._qty_text = price_text, qty_text
        self.bids, self.asks = _Side(), _Side()
        self._fill(*touch)
        lower = inst.symbol.lower()
        self.windows = [
            DiffWindow(ms * 1000, f"{lower}@{suffix}", update_id)
            for ms, suffix in DEPTH_STREAM_SUFFIX.items()
        ]
        self._seconds: list[_Second] = []
        self._second_starts: list[int] = []  # their epoch seconds, for bisect
        self._second_base_ids: list[int] = []
        self._second_end = 0  # end (µs) of the second being recorded
        self._trimmed = False  # whether trim_before has forgotten anything
        self.stale_left = 0  # stale snapshot answers still to give (fault)
        self.stale_age_us = 0

    # -- random draws (the book's own stream) -----------------------------------------------
    def _gap(self) -> int:
        return 1 + int(-_log(1.0 - self.rng.random()) * self._gap_us)

    def _lots(self) -> int:
        return max(1, int(-_log(1.0 - self.rng.random()) * self._mean_lots))

    def _fill(self, bid: int, ask: int) -> None:
        """The initial book: ``levels`` levels per side from the touch outwards."""
        rng = self.rng.random
        for side, key in ((self.bids, -bid), (self.asks, ask)):
            for _ in range(self.levels):
                if side is self.bids and key >= 0:
                    break  # no bids at or below price 0
                side.keys.append(key)
                side.lots[key] = self._lots()
                key += 1 + int(-_log(1.0 - rng()))  # mean gap 2 ticks

    # -- updates ----------------------------------------------------------------------------
    def _begin(self, t: int) -> int:
        """Start the next update (at time ``t``) and return its id."""
        if t >= self._second_end:
            self._new_second(t)
        self.update_id += 1
        return self.update_id

    def _set(self, key: int, lots: int, uid: int) -> None:
        """Level ``key`` now rests ``lots`` (0: removed), as part of update ``uid``."""
        side = self.bids if key < 0 else self.asks
        if lots:
            if key not in side.lots:
                insort(side.keys, key)
            side.lots[key] = lots
        else:
            del side.lots[key]
            del side.keys[bisect_left(side.keys, key)]
        rec = self._seconds[-1]
        rec.ids.append(uid)
        rec.keys.append(key)
        rec.lots.append(lots)
        for w in self.windows:
            w.levels[key] = lots

    def set_touch(
        self, t: int, bid: int, bid_lots: int, ask: int, ask_lots: int
    ) -> tuple[int, int, int]:
        """One update making (bid, ask) the best levels with these sizes (the model's quote).

        Returns (update id, bid lots, ask lots): an update always changes something, so when
        nothing would change the best bid grows by one lot.
        """
        uid = self._begin(t)
        bids, asks = self.bids.keys, self.asks.keys
        changed = False
        while bids and bids[0] < -bid:  # bids above the new best were taken or cancelled
            self._set(bids[0], 0, uid)
            changed = True
        while asks and asks[0] < ask:
            self._set(asks[0], 0, uid)
            changed = True
        if self.bids.lots.get(-bid) != bid_lots:
            self._set(-bid, bid_lots, uid)
            changed = True
        if self.asks.lots.get(ask) != ask_lots:
            self._set(ask, ask_lots, uid)
            changed = True
        if not changed:
            bid_lots += 1
            self._set(-bid, bid_lots, uid)
        return uid, bid_lots, ask_lots

    def background_change(self, t: int) -> None:
        """One update deeper in the book at time ``t``: a level added, resized or removed."""
        self.next_change = t + self._gap()
        rng = self.rng.random
        side = self.bids if rng() < 0.5 else self.asks
        keys = side.keys
        n = len(keys)
        r = rng()
        below_target = n < self.levels
        if n < 2 or r < (0.5 if below_target else 0.2):
            key = keys[0] + 1 + int(-_log(1.0 - rng()) * self._reach) if keys else 0
            if not keys or (side is self.bids and key >= 0):
                return  # nowhere to add (a bid side at price 0): no update
            lots = self._lots()
        else:
            key = keys[1 + int(rng() * (n - 1))]
            lots = self._lots() if r < (0.8 if below_target else 0.5) else 0
        if lots and side.lots.get(key) == lots:
            lots += 1
        self._set(key, lots, self._begin(t))

    # -- diff events ------------------------------------------------------------------------
    def flush_windows(self, t: int, out: list[Event], force: bool = False) -> None:
        """Emit the diff event of every window that ended at or before ``t`` (every open one
        with ``force``); must be called before applying an update at ``t``."""
        for w in self.windows:
            if not (force or t >= w.end_us):
                continue
            if w.levels:
                self._emit(w, t if force else w.end_us, out)
            w.end_us = t - t % w.span_us + w.span_us

    def _emit(self, w: DiffWindow, time_us: int, out: list[Event]) -> None:
        levels = w.levels
        bids = sorted(k for k in levels if k < 0)
        asks = sorted(k for k in levels if k > 0)
        ev = Event(
            DEPTH_UPDATE.name, self.symbol, w.stream, self.update_id, time_us,
            first_id=w.last_u + 1, bids=self._levels_text(bids, levels),
            asks=self._levels_text(asks, levels),
        )  # fmt: skip
        w.last_u = self.update_id
        w.levels = {}
        if w.drop_left > 0:
            w.drop_left -= 1
            ev.hidden = True  # generated, never sent: its ids are lost to every client
            out.append(ev)
        elif w.reorder:
            w.reorder, w.held = False, ev
        elif w.held is not None:
            held, w.held = w.held, None
            held.time_us = time_us
            out.append(ev)
            out.append(held)
        else:
            out.append(ev)

    def _levels_text(self, keys: list[int], levels: dict[int, int]) -> bytes:
        price, qty = self._price_text, self._qty_text
        pairs = [b'["%s","%s"]' % (price(abs(k)), qty(levels[k])) for k in keys]
        return b"[" + b",".join(pairs) + b"]"

    # -- ground truth -----------------------------------------------------------------------
    def _new_second(self, t: int) -> None:
        second = t // 1_000_000
        keys = self.bids.keys + self.asks.keys
        lots = [*map(self.bids.lots.__getitem__, self.bids.keys)]
        lots += map(self.asks.lots.__getitem__, self.asks.keys)
        self._seconds.append(_Second(second, self.update_id, array("q", keys), array("q", lots)))
        self._second_starts.append(second)
        self._second_base_ids.append(self.update_id)
        self._second_end = (second + 1) * 1_000_000

    def _view(self, uid: int, state: dict[int, int], limit: int | None) -> BookView:
        bids = sorted(k for k in state if k < 0)[:limit]
        asks = sorted(k for k in state if k > 0)[:limit]
        return BookView(uid, self._levels(bids, state), self._levels(asks, state))

    def _levels(self, keys: list[int], lots: dict[int, int]) -> list[Level]:
        tick, lot = self.inst.tick_e8, self.inst.lot_e8
        return [(format_e8(abs(k) * tick), format_e8(lots[k] * lot)) for k in keys]

    def _state_in(self, rec: _Second, upto_id: int) -> tuple[int, dict[int, int]]:
        """(last update id applied, book) after ``rec``'s updates with id <= upto_id."""
        state = dict(zip(rec.base_keys, rec.base_lots, strict=True))
        n = bisect_right(rec.ids, upto_id)
        for key, lots in zip(rec.keys[:n], rec.lots[:n], strict=True):
            if lots:
                state[key] = lots
            else:
                del state[key]
        return (rec.ids[n - 1] if n else rec.base_id), state

    def view(self, limit: int | None = None) -> BookView:
        """The book now (after :attr:`update_id`), ``limit`` levels per side (None: all)."""
        with self.lock:
            return self._live_view(limit)

    def _live_view(self, limit: int | None) -> BookView:
        bids, asks = self.bids, self.asks
        return BookView(
            self.update_id,
            self._levels(bids.keys[:limit], bids.lots),
            self._levels(asks.keys[:limit], asks.lots),
        )

    def at_update(self, update_id: int, limit: int | None = None) -> BookView:
        """The book right after update ``update_id`` (LookupError if not retained or not yet
        made)."""
        with self.lock:
            if update_id > self.update_id:
                raise LookupError(f"{self.symbol}: update {update_id} has not happened yet")
            i = bisect_right(self._second_base_ids, update_id) - 1
            if i < 0 and not self._seconds and update_id == self.update_id:
                return self._live_view(limit)  # the initial book: nothing happened yet
            if i < 0:
                raise LookupError(f"{self.symbol}: update {update_id} is no longer retained")
            _, state = self._state_in(self._seconds[i], update_id)
            return self._view(update_id, state, limit)

    def at_second_end(self, second: int, limit: int | None = None) -> BookView:
        """The book at the end of epoch second ``second`` (after its last update), which must
        have ended in the market's time (LookupError if not retained)."""
        with self.lock:
            if (second + 1) * 1_000_000 > self.advanced_to_us + 1:
                raise LookupError(f"{self.symbol}: second {second} has not ended yet")
            return self._at_second_end(second, limit)

    def _at_second_end(self, second: int, limit: int | None) -> BookView:
        i = bisect_right(self._second_starts, second) - 1
        if i < 0 and not self._trimmed:
            return self._oldest_view(limit)  # before the first update: the initial book
        if i < 0:
            raise LookupError(f"{self.symbol}: second {second} is no longer retained")
        uid, state = self._state_in(self._seconds[i], self.update_id)
        return self._view(uid, state, limit)

    def rest_view(self, limit: int) -> BookView:
        """What ``/api/v3/depth`` answers: the book now, or an old one while the stale fault
        lasts (the end of the second ``stale_age_us`` ago, else the oldest retained)."""
        with self.lock:
            if self.stale_left <= 0:
                return self._live_view(limit)
            self.stale_left -= 1
            second = (self.advanced_to_us - self.stale_age_us) // 1_000_000 - 1
            try:
                return self._at_second_end(second, limit)
            except LookupError:
                return self._oldest_view(limit)

    def _oldest_view(self, limit: int | None) -> BookView:
        """The oldest book retained: before the first second kept (now when none is)."""
        if not self._seconds:
            return self._live_view(limit)
        rec = self._seconds[0]
        return self._view(rec.base_id, self._state_in(rec, rec.base_id)[1], limit)

    def trim_before(self, time_us: int) -> None:
        """Forget ground truth older than ``time_us`` (the second holding it stays whole)."""
        with self.lock:
            k = bisect_right(self._second_starts, time_us // 1_000_000) - 1
            if k > 0:
                del self._seconds[:k], self._second_starts[:k], self._second_base_ids[:k]
                self._trimmed = True

    @property
    def retained_from_id(self) -> int | None:
        """The oldest update id :meth:`at_update` can answer (None before any update)."""
        with self.lock:
            return self._second_base_ids[0] if self._seconds else None
