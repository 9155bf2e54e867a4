"""The ground-truth ledger: exact REST queries, and bounded history for long runs."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

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


@settings(max_examples=60, deadline=None)
@given(
    orders=st.lists(
        st.tuples(
            st.integers(0, 5_000_000),  # µs offset of the order
            st.integers(1, 40),  # price in ticks above a base
            st.lists(st.integers(1, 500), min_size=1, max_size=4),  # fills in lots
            st.booleans(),
        ),
        min_size=1,
        max_size=60,
    ),
    interval=st.sampled_from([1, 60]),
    start=st.one_of(st.none(), st.integers(0, 6_000)),  # ms offsets
    limit=st.integers(1, 8),
)
def test_klines_match_a_naive_decimal_model(orders, interval, start, limit) -> None:
    base_ms = 1_800_000_000_000
    led = SymbolLedger(instrument_for("ETHUSDT"), 1, 1)
    for off, ticks, fills, maker in sorted(orders, key=lambda o: o[0]):
        led.add_order(base_ms * 1000 + off, 320_000 + ticks, fills, maker)
    now_us = base_ms * 1000 + 6_000_000
    start_ms = None if start is None else base_ms + start
    rows = queries.klines(
        led, interval, now_us, None if start_ms is None else start_ms * 1000, None, limit, 1000
    )
    expected = naive_klines(led, interval * 1000, now_us // 1000, start_ms, limit)
    assert [[Decimal(x) if isinstance(x, str) else x for x in r] for r in rows] == expected


def notional(trade: dict) -> Decimal:
    return Decimal(trade["price"]) * Decimal(trade["qty"])


def naive_klines(led, step_ms, now_ms, start_ms, limit) -> list[list]:
    """Row-by-row Decimal klines from the ledger's own trades (an independent model)."""
    trades = led.trade_dicts()
    first_open = trades[0]["time_ms"] - trades[0]["time_ms"] % step_ms
    opens = list(range(first_open, now_ms - now_ms % step_ms + 1, step_ms))
    opens = [o for o in opens if o >= start_ms][:limit] if start_ms is not None else opens[-limit:]
    rows, close = [], None
    for t in trades:
        if opens and t["time_ms"] < opens[0]:
            close = Decimal(t["price"])
    for o in opens:
        group = [t for t in trades if o <= t["time_ms"] < o + step_ms]
        px = [Decimal(t["price"]) for t in group]
        if group:
            close = px[-1]
        buys = [t for t in group if not t["is_buyer_maker"]]
        rows.append([
            o, px[0] if px else close, max(px, default=close), min(px, default=close),
            close, sum((Decimal(t["qty"]) for t in group), Decimal(0)), o + step_ms - 1,
            sum((notional(t) for t in group), Decimal(0)), len(group),
            sum((Decimal(t["qty"]) for t in buys), Decimal(0)),
            sum((notional(t) for t in buys), Decimal(0)), Decimal(0),
        ])  # fmt: skip
    return rows
