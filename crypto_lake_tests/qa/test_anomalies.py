"""Labelled anomaly injection: the ground truth says exactly what was changed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crypto_lake.simulator.anomalies import (
    AnomalyPlan,
    inject_trade_quote_anomalies,
    read_ground_truth,
    write_ground_truth,
)
from crypto_lake.simulator.synthetic_bars import synthetic_bars_columns
from crypto_lake_tests.qa.conftest import make_day, window_of

ALL = AnomalyPlan.market(jumps=2, blowouts=2, spikes=2, stale=1).with_counts(
    crossed_book=1, r1_ohlc_order=1, r2_nonpositive_price=1, r4_nan_ohlc=1
)


def test_ground_truth_describes_each_injected_event(tmp_path: Path):
    clean, _ = make_day("LINKUSDT", None, seconds=4 * 3600)
    bars, truth = make_day("LINKUSDT", ALL, seconds=4 * 3600)
    assert sorted(truth["kind"].to_pylist()) == sorted(
        k for k, c in ALL.counts.items() for _ in range(c)
    )
    lo, _ = window_of(bars)
    starts = truth["start"].to_numpy() - lo
    ends = truth["end"].to_numpy() - lo
    assert (starts >= ALL.warmup_seconds).all() and (ends >= starts).all()
    assert (starts[1:] > ends[:-1]).all(), "events must not overlap"
    for row in truth.to_pylist():
        s, e = row["start"] - lo, row["end"] - lo + 1
        kind = row["kind"]
        if kind == "crossed_book":
            assert (bars["ask"].to_numpy()[s:e] < bars["bid"].to_numpy()[s:e]).all()
            assert row["severity"] == "major"
        elif kind == "spread_blowout":
            wide, base = bars["spread"].to_numpy()[s:e], clean["spread"].to_numpy()[s:e]
            # Earlier jumps rescale all prices, so compare the widening, not the level.
            ratio = wide / base
            np.testing.assert_allclose(ratio, ratio[0], rtol=1e-6)
            assert ratio[0] > 0.9 * row["magnitude"]
        elif kind == "stale_quotes":
            assert len(set(bars["bid"].to_numpy()[s:e])) == 1
        elif kind == "r4_nan_ohlc":
            assert np.isnan(bars["open"].to_numpy()[s:e]).all()
            assert row["severity"] == "critical"
        elif kind == "r2_nonpositive_price":
            assert (bars["close"].to_numpy()[s:e] == 0).all()
    path = write_ground_truth(tmp_path / "truth.parquet", truth)
    assert read_ground_truth(path).equals(truth)


def test_injection_is_deterministic_and_keeps_trade_ids_consecutive():
    a, ta = make_day("BNBUSDT", ALL, seconds=4 * 3600)
    b, tb = make_day("BNBUSDT", ALL, seconds=4 * 3600)
    assert ta.equals(tb)
    np.testing.assert_array_equal(a["close"].to_numpy(), b["close"].to_numpy())
    traded = a.filter(pc.greater(a["trade_count"], 0))
    first, last = traded["first_trade_id"].to_numpy(), traded["last_trade_id"].to_numpy()
    np.testing.assert_array_equal(first[1:], last[:-1] + 1)


def test_price_jump_shifts_every_later_price():
    cols = synthetic_bars_columns("SOLUSDT", "2026-11-20", 3, seconds=7200)
    _, truth = make_day("SOLUSDT", AnomalyPlan({"price_jump": 1}), seconds=7200)
    bars, _ = make_day("SOLUSDT", AnomalyPlan({"price_jump": 1}), seconds=7200)
    t = truth["start"][0].as_py() - window_of(bars)[0]
    ratio = bars["close"].to_numpy()[t:] / cols["close"][t:]
    assert np.allclose(ratio, ratio[0]) and abs(np.log(ratio[0])) > 0
    np.testing.assert_array_equal(bars["close"].to_numpy()[: t - 1], cols["close"][: t - 1])


def test_trade_and_quote_stream_injection():
    ns = 1_000_000_000
    ts = pa.array(np.arange(10, dtype=np.int64) * ns).cast(pa.timestamp("ns", tz="UTC"))
    trades = pa.table(
        {
            "ts_event": ts,
            "price": np.full(10, 100.0),
            "qty": np.ones(10),
            "quote_qty": np.full(10, 100.0),
        }
    )
    quotes = pa.table({"ts_recv": ts, "bid": np.full(10, 99.9), "ask": np.full(10, 100.1)})
    events = [
        ("price_jump", 5 * ns, 5 * ns, 0.02),
        ("volume_spike", 2 * ns, 2 * ns, 50.0),
        ("crossed_book", 7 * ns, 7 * ns, 0.5),
        ("stale_quotes", 8 * ns, 9 * ns, 0.0),
    ]
    t2, q2, truth = inject_trade_quote_anomalies("SOLUSDT", trades, quotes, events)
    assert t2["price"].to_pylist() == [100.0] * 5 + [102.0] * 5
    assert t2["qty"].to_pylist()[2] == 50.0
    assert q2.num_rows == 8  # the stale window's updates are gone
    crossed = q2.filter(pc.equal(q2["ts_recv"].cast(pa.int64()), 7 * ns))
    assert crossed["ask"][0].as_py() < crossed["bid"][0].as_py()
    assert truth["kind"].to_pylist() == [
        "volume_spike",
        "price_jump",
        "crossed_book",
        "stale_quotes",
    ]
