"""The seeded market model: deterministic, realistic rates, consistent ids and quotes."""

from __future__ import annotations

import itertools
from collections import Counter
from decimal import Decimal

import pytest

from crypto_lake.lib.core.symbols import InvalidNameError
from crypto_lake.simulator.instruments import format_e8, instrument_for
from crypto_lake.simulator.market import MarketModel

START = 1_800_000_000_000_000  # µs
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "EURUSDT"]


def simulate(seconds: int, seed: int = 42, symbols: list[str] = SYMBOLS):
    model = MarketModel(symbols, seed, START, 1.0)
    events = []
    for step in range(1, seconds * 10 + 1):  # advance in 100 ms steps, like a live loop
        events.extend(model.advance(START + step * 100_000))
    return model, events


def test_same_seed_and_clock_give_the_same_market() -> None:
    _, a = simulate(20)
    _, b = simulate(20)
    _, c = simulate(20, seed=7)
    key = [(e.kind, e.symbol, e.ident, e.time_us, e.price, e.qty, e.bid, e.ask) for e in a]
    assert key == [(e.kind, e.symbol, e.ident, e.time_us, e.price, e.qty, e.bid, e.ask) for e in b]
    assert key != [(e.kind, e.symbol, e.ident, e.time_us, e.price, e.qty, e.bid, e.ask) for e in c]


def test_rates_are_realistic_per_symbol() -> None:
    seconds = 120
    _, events = simulate(seconds)
    trades = Counter(e.symbol for e in events if e.kind == "trade")
    quotes = Counter(e.symbol for e in events if e.kind == "bookTicker")
    rate = {s: trades[s] / seconds for s in SYMBOLS}
    assert 10 <= rate["BTCUSDT"] <= 80, rate  # tens per second
    assert 4 <= rate["ETHUSDT"] <= 25, rate
    assert 1 <= rate["SOLUSDT"] <= 10, rate  # a few per second
    assert 0.4 <= rate["EURUSDT"] <= 3, rate
    for s in SYMBOLS:
        assert quotes[s] >= 3 * trades[s], (s, quotes[s], trades[s])  # quotes several x trades


def test_btc_has_bursts() -> None:
    _, events = simulate(300)
    per_second = Counter(e.time_us // 1_000_000 for e in events if e.symbol == "BTCUSDT")
    counts = sorted(per_second.values())
    median = counts[len(counts) // 2]
    assert counts[-1] >= 3 * median, (counts[-1], median)


def test_ids_prices_and_quotes_are_consistent() -> None:
    model, events = simulate(60)
    for sym in SYMBOLS:
        inst = instrument_for(sym)
        tick = Decimal(1).scaleb(-inst.tick_decimals)
        evs = [e for e in events if e.symbol == sym]
        trades = [e for e in evs if e.kind == "trade"]
        aggs = [e for e in evs if e.kind == "aggTrade"]
        books = [e for e in evs if e.kind == "bookTicker"]
        ids = [e.ident for e in trades]
        assert ids == list(range(ids[0], ids[0] + len(ids)))  # consecutive trade ids
        assert [e.ident for e in aggs] == list(range(aggs[0].ident, aggs[0].ident + len(aggs)))
        # aggregates tile the trade ids: f..l consecutive, l - f + 1 >= 1, same price/time/side
        assert aggs[0].first_id == ids[0] and aggs[-1].last_id == ids[-1]
        by_id = {e.ident: e for e in trades}
        for prev, agg in itertools.pairwise(aggs):
            assert agg.first_id == prev.last_id + 1
        for agg in aggs:
            assert agg.last_id >= agg.first_id
            fills = [by_id[i] for i in range(agg.first_id, agg.last_id + 1)]
            assert {(f.price, f.time_us, f.maker) for f in fills} == {
                (agg.price, agg.time_us, agg.maker)
            }
            assert sum(Decimal(f.qty.decode()) for f in fills) == Decimal(agg.qty.decode())
        for e in trades:
            assert Decimal(e.price.decode()) % tick == 0 and Decimal(e.price.decode()) > 0
        us = [e.ident for e in books]
        assert all(b > a for a, b in itertools.pairwise(us))  # u increases...
        assert any(b - a > 1 for a, b in itertools.pairwise(us))  # ...but skips values
        assert all(Decimal(e.bid.decode()) < Decimal(e.ask.decode()) for e in books)
        times = [e.time_us for e in evs]
        assert times == sorted(times)
        assert model.ledger(sym).trade_count == len(trades)


def test_invalid_symbol_is_rejected_before_use() -> None:
    with pytest.raises(InvalidNameError):
        MarketModel(["../../etc"], 1, START, 1.0)
    with pytest.raises(InvalidNameError):
        instrument_for("btcusdt")


def test_unknown_valid_symbol_gets_a_stable_profile() -> None:
    assert instrument_for("FOOUSDT") == instrument_for("FOOUSDT")
    assert instrument_for("FOOUSDT").base_quote == ("FOO", "USDT")


def test_format_e8_is_exact() -> None:
    assert format_e8(6500001000000) == "65000.01000000"
    assert format_e8(1) == "0.00000001"
    assert format_e8(0) == "0.00000000"
