"""The ground-truth ledger: exact REST queries, and bounded history for long runs."""

from __future__ import annotations

from crypto_lake.simulator import queries
from crypto_lake.simulator.instruments import instrument_for
from crypto_lake.simulator.ledger import SymbolLedger
from crypto_lake.simulator.server import _retention_cutoff

S = 1_000_000  # µs


def filled_ledger() -> SymbolLedger:
    led = SymbolLedger(instrument_for("BTCUSDT"), first_trade_id=1000, first_agg_id=50)
    for i in range(10):  # one order per second, i+1 fills, price rising one tick per second
        led.add_order(100 * S + i * S, 6_500_000 + i, [10] * (i + 1), maker=i % 2 == 0)
    return led


def test_orders_tile_trade_and_agg_ids() -> None:
    led = filled_ledger()
    assert led.trade_count == 55 and led.agg_count() == 10
    aggs = queries.agg_trades(led, 50, None, None, 1000, 1000)
    assert [a["a"] for a in aggs] == list(range(50, 60))
    assert [(a["f"], a["l"]) for a in aggs][:3] == [(1000, 1000), (1001, 1002), (1003, 1005)]
    assert aggs[2]["q"] == "0.00030000" and aggs[2]["p"] == "65000.02000000"


def test_trim_keeps_ids_and_answers_consistent() -> None:
    led = filled_ledger()
    dropped = led.trim_before(103 * S)  # forget the orders of seconds 100..102
    assert dropped == 1 + 2 + 3
    assert led.first_trade_id == 1006 and led.first_agg_id == 53
    hist = queries.historical_trades(led, 1006, 3, 1000)
    assert [h["id"] for h in hist] == [1006, 1007, 1008]
    assert hist[0]["price"] == "65000.03000000"
    aggs = queries.agg_trades(led, 53, None, None, 2, 1000)
    assert [(a["a"], a["f"], a["l"]) for a in aggs] == [(53, 1006, 1009), (54, 1010, 1014)]
    # ids no longer retained answer from the oldest retained one, as a pruned history would
    assert queries.historical_trades(led, 1000, 1, 1000)[0]["id"] == 1006
    rows = queries.klines(led, 1, 109 * S + 1, None, None, 1000, 1000)
    assert [r[0] for r in rows] == [t * 1000 for t in range(103, 110)]
    assert [r[8] for r in rows] == [4, 5, 6, 7, 8, 9, 10]
    assert led.trim_before(103 * S) == 0  # idempotent
    assert led.trim_before(200 * S) == 49 and led.trade_count == 0
    assert queries.klines(led, 1, 200 * S, None, None, 10, 1000) == []


def test_retention_cutoff_keeps_klines_whole() -> None:
    now = 1_800_000_123 * S
    day = _retention_cutoff(now, 26 * 3600 * S)
    assert day % (86_400 * S) == 0 and now - day >= 26 * 3600 * S
    minute = _retention_cutoff(now, 120 * S)
    assert minute % (60 * S) == 0 and now - minute >= 120 * S
