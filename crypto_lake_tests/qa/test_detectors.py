"""Detectors find injected anomalies, stay quiet on clean data, and are deterministic."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from crypto_lake.lib.qa import detectors as det
from crypto_lake.lib.qa.config import JumpConfig, QAConfig
from crypto_lake.lib.qa.pipeline import day_window, run_qa_files
from crypto_lake_tests.lib import rawgen
from crypto_lake_tests.qa.conftest import make_day, overlaps, sparse_day_lines

CFG = QAConfig()


def _events(bars: pa.Table, name: str) -> pa.Table:
    f = det.bar_features(bars)
    flags = {
        "jump": lambda: det.jump_flags(f, CFG.jump),
        "zscore": lambda: det.zscore_flags(f, CFG.zscore),
        "iforest": lambda: det.iforest_flags(f, CFG.iforest),
    }[name]()
    return det.events("SOLUSDT", name, f, flags, CFG.jump.cooldown_seconds)


def _truth(truth: pa.Table, kind: str) -> list[dict]:
    return truth.filter(pc.equal(truth["kind"], kind)).to_pylist()


def test_jump_detector_finds_every_injected_jump_and_nothing_else(anomalous_day):
    bars, truth = anomalous_day
    events = _events(bars, "jump")
    jumps = _truth(truth, "price_jump")
    assert len(jumps) == 6
    for j in jumps:
        assert overlaps(events, j["start"], j["end"]), f"missed jump at {j['start']}"
    # Every event is one of the injected jumps (precision 1 on this day).
    for e in events.to_pylist():
        start = int(e["start"].timestamp())
        assert any(abs(start - j["start"]) <= 5 for j in jumps), f"false jump at {start}"
    assert events["score"].to_numpy().min() > CFG.jump.k_sigma


def test_jump_needs_a_stable_spread_and_enough_trades():
    bars, _ = make_day("SOLUSDT", None)
    f = det.bar_features(bars)
    t = 4 * 3600
    ret = f.values["ret_bps"].copy()
    ret[t] = 200.0  # a 200 bps move in one second, far beyond 6.8 sigma
    count = f.trade_count.copy()
    count[t] = 20
    spread = f.values["spread_bps"].copy()

    def flagged(spread_at: float, trades: int) -> bool:
        s = spread.copy()
        s[t - 3] = spread_at
        c = count.copy()
        c[t] = trades
        values = {**f.values, "ret_bps": ret, "spread_bps": s}
        feats = det.BarFeatures(f.ts, c, values)
        return bool(det.jump_flags(feats, JumpConfig()).flag[t])

    assert flagged(1.0, 20)
    assert not flagged(80.0, 20), "spread above 50 bps within the lookback must suppress"
    assert not flagged(1.0, 4), "fewer than 5 trades must suppress"


def test_jump_cooldown_clusters_nearby_seconds():
    ts = np.arange(100, dtype=np.int64)
    flag = np.zeros(100, bool)
    flag[[10, 12, 16, 30]] = True
    f = det.BarFeatures(ts, np.full(100, 10), {k: np.zeros(100) for k in det.FEATURES})
    flags = det.Flags(flag, flag * 9.0, np.full(100, 3, np.int8))
    events = det.events("BTCUSDT", "jump", f, flags, gap_seconds=5)
    starts = events["start"].cast(pa.int64()).to_pylist()
    assert starts == [10, 30]
    assert events["seconds"].to_pylist() == [3, 1]
    assert events["end"].cast(pa.int64()).to_pylist() == [16, 30]


def test_zscore_finds_spread_blowouts_volume_spikes_and_stale_quotes(anomalous_day):
    bars, truth = anomalous_day
    events = _events(bars, "zscore")
    for kind in ("spread_blowout", "volume_spike", "stale_quotes"):
        for row in _truth(truth, kind):
            assert overlaps(events, row["start"], row["end"]), f"missed {kind} at {row['start']}"


def test_zscore_flags_a_spread_outlier_against_its_trailing_hour():
    n = 7200
    ts = np.arange(n, dtype=np.int64)
    spread = 2.0 + 0.1 * np.sin(ts / 7.0)
    spread[5000] = 30.0
    values = {k: np.zeros(n) for k in det.FEATURES} | {"spread_bps": spread}
    flags = det.zscore_flags(det.BarFeatures(ts, np.ones(n, np.int64), values), CFG.zscore)
    assert np.flatnonzero(flags.flag).tolist() == [5000]
    assert det.FEATURES[flags.feature[5000]] == "spread_bps"


def test_zscore_ignores_quiet_seconds_for_volume():
    n = 7200
    ts = np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(1)
    volume = rng.normal(8.0, 0.3, n)
    volume[6000] = 1.0  # a very quiet second: not a data fault
    volume[6500] = 20.0  # a spike: flagged
    values = {k: np.zeros(n) for k in det.FEATURES} | {"log_volume": volume}
    flags = det.zscore_flags(det.BarFeatures(ts, np.ones(n, np.int64), values), CFG.zscore)
    assert not flags.flag[6000]
    assert flags.flag[6500]


def test_iforest_flags_its_contamination_share_and_is_deterministic():
    bars, _ = make_day("SOLUSDT", None, seconds=7200)
    f = det.bar_features(bars)
    first = det.iforest_flags(f, CFG.iforest)
    second = det.iforest_flags(det.bar_features(bars), CFG.iforest)
    share = first.flag.mean()
    assert abs(share - CFG.iforest.contamination) < 0.002
    np.testing.assert_array_equal(first.flag, second.flag)
    np.testing.assert_array_equal(first.score, second.score)


def test_iforest_scores_an_extreme_second_as_an_outlier():
    bars, _ = make_day("BTCUSDT", None, seconds=7200)
    f = det.bar_features(bars)
    values = {k: v.copy() for k, v in f.values.items()}
    values["spread_bps"][3000] = 400.0
    values["vwap_drift_bps"][3000] = 150.0
    flags = det.iforest_flags(det.BarFeatures(f.ts, f.trade_count, values), CFG.iforest)
    assert flags.flag[3000]
    assert flags.score[3000] >= np.quantile(flags.score, 0.999)


def test_features_handle_nan_zero_and_missing_quotes():
    bars, _ = make_day("ETHUSDT", None, seconds=600)
    close = bars["close"].to_numpy().copy()
    close[100], close[200] = np.nan, 0.0
    bars = bars.set_column(bars.schema.get_field_index("close"), "close", pa.array(close))
    bid = pa.nulls(bars.num_rows, pa.float64())
    bars = bars.set_column(bars.schema.get_field_index("bid"), "bid", bid)
    f = det.bar_features(bars.drop_columns(["spread_bps", "mid"]))
    assert np.isnan(f.values["ret_bps"][[100, 101, 200, 201]]).all()
    assert np.isnan(f.values["spread_bps"]).all()
    # Nothing raises and nothing is flagged on undefined values.
    assert not det.jump_flags(f, CFG.jump).flag[[100, 101, 200, 201]].any()


def test_epoch_seconds_accepts_any_timestamp_unit():
    for unit, scale in (("s", 1), ("ms", 1_000), ("us", 1_000_000), ("ns", 1_000_000_000)):
        col = pa.array([1_700_000_000 * scale], pa.int64()).cast(pa.timestamp(unit, tz="UTC"))
        assert det.epoch_seconds(col).tolist() == [1_700_000_000]


@pytest.fixture(scope="module")
def sparse_day(tmp_path_factory) -> rawgen.Partition:
    """A real BTCUSDT day recorded 10:00-10:30 only: every other second is an outage."""
    start = rawgen.DAY_START_MS + 10 * 3_600_000
    return rawgen.build_partition(tmp_path_factory.mktemp("lake"), sparse_day_lines(start, 30))


def test_detectors_judge_only_the_watched_seconds_of_a_sparse_day(sparse_day):
    """Outage seconds repeat the last close and quote: fitted on them, the IsolationForest
    took the whole recorded half hour for the outlier. They must be neither fitted nor
    scored, and the recorded window is flagged no more than the contamination share."""
    bars = pq.read_table(sparse_day.bars)
    outage = bars["is_outage"].to_numpy(zero_copy_only=False)
    ts = det.epoch_seconds(bars["window_start"])
    watched_ts = ts[~outage]
    assert outage.sum() > 80_000 and 1_700 < len(watched_ts) < 1_900

    result = run_qa_files(sparse_day.layout, "BTCUSDT", rawgen.DAY, day_window(rawgen.DAY), CFG)
    events = result.anomalies
    starts = events["start"].cast(pa.int64()).to_numpy()
    ends = events["end"].cast(pa.int64()).to_numpy()
    assert ((starts >= watched_ts.min()) & (ends <= watched_ts.max())).all(), "outage flagged"
    iforest = events.filter(pc.equal(events["detector"], "iforest"))
    flagged = int(pc.sum(iforest["seconds"]).as_py() or 0)
    assert flagged <= 2 * CFG.iforest.contamination * len(watched_ts)
    day = result.verdicts.filter(pc.equal(result.verdicts["scope"], "day")).to_pylist()[0]
    assert day["ai_confidence"] >= 1 - 2 * CFG.iforest.contamination * len(watched_ts) / 86_400
    assert det.bar_features(bars).ts.tolist() == watched_ts.tolist()
