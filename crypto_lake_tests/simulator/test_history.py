"""Deep history before the live start: ids, prices, determinism, and REST across the boundary."""

from __future__ import annotations

import asyncio
import math
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import aiohttp
import numpy as np
import pytest

from crypto_lake.lib.core.config import DEFAULT_SYMBOLS
from crypto_lake.simulator import SimConfig, queries
from crypto_lake.simulator.history import DAY_US, DayCache, SymbolHistory, day_start_us
from crypto_lake.simulator.instruments import instrument_for
from crypto_lake.simulator.ledger import SymbolLedger
from crypto_lake.simulator.market import MarketModel
from crypto_lake.simulator.tape import Tape
from crypto_lake_tests.simulator.helpers import aio, get_json, running

S = 1_000_000
START = int(datetime(2025, 6, 15, 13, 27, 41, 123456, tzinfo=UTC).timestamp()) * S + 123456
SYMBOLS = ["BTCUSDT", "EURUSDT"]


def market_with_history(days: int = 3, scale: float = 0.002, seed: int = 7) -> MarketModel:
    """A market started at a fixed instant with history, and a few seconds of live trading."""
    market = MarketModel(SYMBOLS, seed, START, 4.0)
    market.add_history(days, scale)
    market.advance(START + 3 * S)
    return market


def all_trades(piece_lists) -> dict[str, np.ndarray]:
    pieces = [p for p in piece_lists if len(p)]
    return {
        "id": np.concatenate([p.first_id + np.arange(len(p)) for p in pieces]),
        "time": np.concatenate([p.time_us for p in pieces]),
        "ticks": np.concatenate([p.ticks for p in pieces]),
        "lots": np.concatenate([p.lots for p in pieces]),
        "maker": np.concatenate([p.maker for p in pieces]),
    }


def test_history_ids_run_consecutively_into_the_live_ledger() -> None:
    market = market_with_history()
    for symbol in SYMBOLS:
        tape = market.tapes[symbol]
        hist, live = tape.history, tape.live
        assert live.trade_count > 0 and hist.trade_count > 0
        assert hist.first_day == date(2025, 6, 12) and len(hist.day_ends) == 4
        assert hist.end_us == START and hist.day_ends[-2] == day_start_us(date(2025, 6, 15))
        assert hist.first_trade_id + hist.trade_count == live.first_trade_id
        assert hist.first_agg_id + hist.agg_count() == live.first_agg_id
        trades = all_trades(tape.chunks(0, tape.trade_count))
        ids = trades["id"]
        assert (np.diff(ids) == 1).all() and ids[0] == hist.first_trade_id
        assert (np.diff(trades["time"]) >= 0).all()
        assert trades["time"][hist.trade_count - 1] < START <= trades["time"][hist.trade_count]
        assert (trades["lots"] >= 1).all() and (trades["ticks"] >= 1).all()
        for k in range(4):  # every day's trades inside its own span
            day = hist.day(k)
            assert len(day) == hist.n_trades[k] and len(day.agg_starts) == hist.n_aggs[k]
            assert hist.day_starts[k] <= day.time_us.min() and day.time_us.max() < hist.day_ends[k]
        # aggregates: consecutive ids, one price/time/side each, tiling the trades
        aggs = tape.agg_chunks(0, tape.agg_count())
        agg_ids = np.concatenate([p.first_agg_id + np.arange(len(p.agg_starts)) for p in aggs])
        assert (np.diff(agg_ids) == 1).all() and agg_ids[0] == hist.first_agg_id
        for p in aggs:
            group = np.repeat(
                np.arange(len(p.agg_starts)), np.diff(np.append(p.agg_starts, len(p)))
            )
            for col in (p.time_us, p.ticks, p.maker):
                assert (col == col[p.agg_starts][group]).all()
        fills = np.diff(np.append(hist.day(1).agg_starts, hist.n_trades[1]))
        assert 1.5 < fills.mean() < 2.0  # the live model's ~1.74 fills per taker order


def test_history_is_deterministic_whatever_the_cache_does() -> None:
    a, b = market_with_history(), market_with_history()
    hist_b = b.tapes["BTCUSDT"].history
    hist_b.cache = DayCache(max_days=1)  # every other day regenerated
    for k in (3, 0, 2, 1, 0, 3):
        x, y = a.tapes["BTCUSDT"].history.day(k), hist_b.day(k)
        for col in ("time_us", "ticks", "lots", "maker", "agg_starts"):
            assert np.array_equal(getattr(x, col), getattr(y, col)), (k, col)
    other = market_with_history(seed=8).tapes["BTCUSDT"].history
    assert not np.array_equal(other.day(1).ticks[:50], a.tapes["BTCUSDT"].history.day(1).ticks[:50])


def test_history_prices_are_continuous_into_the_live_market() -> None:
    market = market_with_history(days=6)
    for symbol in SYMBOLS:
        hist = market.tapes[symbol].history
        live_first = market.ledger(symbol).slice(0, 1).ticks[0]
        last = hist.last_price_before(START)
        assert abs(int(last) - int(live_first)) <= 3  # bid/ask bounce of the touch
        for k in range(6):  # a day's first trade is near the previous day's last
            prev, cur = hist.day(k), hist.day(k + 1)
            jump = abs(math.log(cur.ticks[0] / prev.ticks[-1]))
            assert jump < 0.02, (symbol, k, jump)


def test_live_ids_make_room_for_a_long_history() -> None:
    market = MarketModel(["BTCUSDT"], 1, START, 1.0)
    market.ledger("BTCUSDT").first_trade_id = 5  # drawn ids too low for the history
    market.add_history(2, 0.001)
    hist = market.tapes["BTCUSDT"].history
    assert hist.first_trade_id == 1
    assert market.ledger("BTCUSDT").first_trade_id == hist.trade_count + 1


def flat_ledger(tape: Tape) -> SymbolLedger:
    """The same trades in one plain ledger, order by order (an independent reference)."""
    flat = SymbolLedger(tape.instrument, tape.first_trade_id, tape.first_agg_id)
    for piece in tape.agg_chunks(0, tape.agg_count()):
        ends = np.append(piece.agg_starts[1:], len(piece))
        for a, b in zip(piece.agg_starts.tolist(), ends.tolist(), strict=True):
            flat.add_order(
                int(piece.time_us[a]), int(piece.ticks[a]), piece.lots[a:b].tolist(),
                bool(piece.maker[a]),
            )  # fmt: skip
    return flat


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_tape_answers_equal_one_flat_ledger(symbol: str) -> None:
    """Every REST query over history + live equals the same query over one plain ledger,
    including klines and pages that span days and the history/live boundary."""
    tape = market_with_history().tapes[symbol]
    flat = flat_ledger(tape)
    assert flat.trade_count == tape.trade_count and flat.agg_count() == tape.agg_count()
    now = START + 3 * S
    day2 = day_start_us(date(2025, 6, 14))
    for interval in (1, 60, 3600, 86_400):
        for start in (None, tape.history.start_us, day2 - 3 * interval * S, START - 90 * S):
            for unit_div in (1000, 1):
                args = (interval, now, start, None, 1000, unit_div)
                assert queries.klines(tape, *args) == queries.klines(flat, *args)
    h_last = tape.first_trade_id + tape.history.trade_count - 1
    day_last = tape.first_trade_id + int(tape.history.trade_off[1]) - 1
    for from_id in (None, tape.first_trade_id - 10, day_last - 3, h_last - 2, h_last + 1):
        got = queries.historical_trades(tape, from_id, 7, 1)
        assert got == queries.historical_trades(flat, from_id, 7, 1)
        assert len(got) == 7
    a_last = tape.first_agg_id + tape.history.agg_count() - 1
    for from_id in (tape.first_agg_id, a_last - 2, a_last + 1):
        assert queries.agg_trades(tape, from_id, None, None, 5, 1) == queries.agg_trades(
            flat, from_id, None, None, 5, 1
        )
    for t0, t1 in ((day2 - 600 * S, day2 + 600 * S), (START - 3000 * S, START + 2 * S)):
        for args in ((None, t0, t1, 1000, 1000), (None, None, t1, 4, 1000)):
            assert queries.agg_trades(tape, *args) == queries.agg_trades(flat, *args)


def test_a_long_history_is_planned_cheaply() -> None:
    market = MarketModel(list(DEFAULT_SYMBOLS), 42, START, 1.0)
    market.add_history(180, 0.01)
    hist = market.tapes["BTCUSDT"].history
    assert len(hist.day_ends) == 181 and hist.cache.generated == 0  # nothing generated yet
    assert 180 * 10_000 < hist.trade_count < 180 * 30_000


def naive_klines(trades: list[dict], step_ms: int, opens: list[int], prev: Decimal) -> list:
    rows, close = [], prev
    for o in opens:
        group = [t for t in trades if o <= t["time"] < o + step_ms]
        px = [Decimal(t["price"]) for t in group]
        if group:
            close = px[-1]
        rows.append([o, px[0] if px else close, max(px, default=close),
                     min(px, default=close), close,
                     sum((Decimal(t["qty"]) for t in group), Decimal(0)), len(group)])  # fmt: skip
    return rows


@aio
async def test_rest_answers_from_history_and_across_the_boundary() -> None:
    cfg = SimConfig(symbols=["BTCUSDT"], rate_scale=4, history_days=1, history_rate_scale=0.001)
    async with running(cfg) as sim, aiohttp.ClientSession() as session:
        await _wait_for_live_trades(sim)
        sim.pause_market()
        tape = sim.tape("BTCUSDT")
        live = sim.trades("BTCUSDT")
        first_live = live[0]["id"]
        assert first_live == tape.first_trade_id + tape.history.trade_count
        base = f"{sim.rest_url}/api/v3"
        hist = await get_json(
            session, f"{base}/historicalTrades",
            params={"symbol": "BTCUSDT", "fromId": str(first_live - 3), "limit": "6"},
        )  # fmt: skip
        assert [h["id"] for h in hist] == list(range(first_live - 3, first_live + 3))
        assert [(h["price"], h["qty"]) for h in hist[3:]] == [
            (t["price"], t["qty"]) for t in live[:3]
        ]
        aggs = await get_json(
            session, f"{base}/aggTrades",
            params={"symbol": "BTCUSDT", "fromId": str(live[0]["agg_id"] - 2), "limit": "4"},
        )  # fmt: skip
        assert [a["a"] for a in aggs] == list(range(live[0]["agg_id"] - 2, live[0]["agg_id"] + 2))
        assert aggs[2]["f"] == first_live and aggs[1]["l"] == first_live - 1
        # 1 m klines over the last history hour and into live, against a Decimal model
        start_ms = (tape.boundary_us // 1000 // 60_000 - 60) * 60_000
        rows = await get_json(
            session, f"{base}/klines",
            params={"symbol": "BTCUSDT", "interval": "1m", "startTime": str(start_ms)},
        )  # fmt: skip
        history = all_trades(tape.history.time_chunks(start_ms * 1000, tape.boundary_us))
        inst = tape.instrument
        trades = [
            {"time": int(t) // 1000, "price": Decimal(int(p)) / 10**inst.tick_decimals,
             "qty": Decimal(int(q)) / 10**inst.lot_decimals}
            for t, p, q in zip(history["time"], history["ticks"], history["lots"], strict=True)
        ]  # fmt: skip
        trades += [{"time": t["time_ms"], "price": t["price"], "qty": t["qty"]} for t in live]
        prev = Decimal(tape.history.last_price_before(start_ms * 1000)) / 10**inst.tick_decimals
        want = naive_klines(trades, 60_000, [r[0] for r in rows], prev)
        got = [[r[0], *(Decimal(x) for x in r[1:6]), r[8]] for r in rows]
        assert got == want
        assert rows[0][0] == start_ms and len(rows) >= 61
        assert sum(r[8] for r in rows) == len(trades)
        # daily klines count every history trade of each day
        days = await get_json(
            session, f"{base}/klines", params={"symbol": "BTCUSDT", "interval": "1d"}
        )
        assert [r[8] for r in days[:1]] == [int(tape.history.n_trades[0])]
        assert days[0][0] * 1000 == tape.history.start_us
        assert sum(r[8] for r in days) == tape.trade_count


async def _wait_for_live_trades(sim, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while sim.market.ledger("BTCUSDT").trade_count < 10 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert sim.market.ledger("BTCUSDT").trade_count >= 10


def test_history_config_is_validated() -> None:
    with pytest.raises(ValueError):
        SimConfig(history_days=-1)
    with pytest.raises(ValueError):
        SimConfig(history_days=1, history_rate_scale=0)
    one = SymbolHistory.one_day(instrument_for("ETHUSDT"), 3, date(2024, 2, 29), 5000)
    assert one.trade_count == 5000 and len(one.day(0)) == 5000
    assert one.end_us - one.start_us == DAY_US
    assert day_start_us(date(2024, 2, 29) + timedelta(days=1)) == one.end_us
