"""The collector's health in the UI: the ``collector_health`` sensor records an observation of
the ``collector`` asset and its ``collector_recording`` check when something changed."""

import dagster as dg

from crypto_lake.defs.ops.health import (
    CHECK_NAME,
    COLLECTOR,
    CONFIRM_SECONDS,
    collector_health_sensor,
    collector_recording,
    health_tick,
)
from crypto_lake_tests.ops import heartbeats as hb
from crypto_lake_tests.ops.conftest import Env
from crypto_lake_tests.ops.heartbeats import NOW_NS, S


def beat(env: Env, now_ns: int, **kw) -> None:
    hb.write(env.layout.heartbeat_path, hb.heartbeat(updated_ns=now_ns, **kw))


def events(result) -> tuple[dg.AssetObservation, dg.AssetCheckEvaluation]:
    assert isinstance(result, dg.SensorResult), result
    observation, evaluation = result.asset_events
    return observation, evaluation


def test_observes_on_change_and_confirms_every_ten_minutes(env: Env) -> None:
    lake = env.lake()
    beat(env, NOW_NS, gaps=[hb.open_gap("BTCUSDT", 30)], disk=(1000, 250))
    first = health_tick(lake, None, now_ns=NOW_NS)
    observation, evaluation = events(first)
    meta = {k: v.value for k, v in observation.metadata.items()}
    assert (meta["state"], meta["recording"], meta["groups_connected"]) == ("running", True, 2)
    assert meta["open_gaps"] == 1 and meta["oldest_open_gap_minutes"] == 0.5
    assert meta["disk_used_pct"] == 75.0 and meta["heartbeat_age_seconds"] == 0.0
    assert "| 0 | BTCUSDT, ETHUSDT | yes |" in meta["groups"]
    assert "| BTCUSDT | 100–109 | 10 | reconnect |" in meta["open_gap_list"]
    assert (evaluation.check_name, evaluation.passed) == (CHECK_NAME, True)

    beat(env, NOW_NS + 60 * S, gaps=[hb.open_gap("BTCUSDT", 30)], disk=(1000, 250))
    same = health_tick(lake, first.cursor, now_ns=NOW_NS + 60 * S)
    assert isinstance(same, dg.SkipReason) and "unchanged: running" in same.skip_message

    groups = [hb.group(0, ["BTCUSDT", "ETHUSDT"]), hb.group(1, ["SOLUSDT"], down_for_s=90)]
    beat(env, NOW_NS + 120 * S, groups=groups, disk=(1000, 250))
    changed = health_tick(lake, first.cursor, now_ns=NOW_NS + 120 * S)
    observation, evaluation = events(changed)
    assert observation.metadata["groups_connected"].value == 1
    assert observation.metadata["symbols_not_connected"].value == "SOLUSDT"
    assert (evaluation.passed, evaluation.severity) == (False, dg.AssetCheckSeverity.WARN)
    assert "connection group(s) 1 down" in evaluation.description

    later = NOW_NS + 120 * S + CONFIRM_SECONDS * S
    beat(env, later, groups=groups, disk=(1000, 250))
    assert isinstance(health_tick(lake, changed.cursor, now_ns=later), dg.SensorResult)


def test_stopped_collector_fails_the_check_and_is_recorded(env: Env) -> None:
    beat(env, NOW_NS - 3600 * S, status="stopped")
    with dg.build_sensor_context(instance=env.instance, resources={"lake": env.lake()}) as ctx:
        result = collector_health_sensor(ctx)
    observation, evaluation = events(result)
    assert observation.metadata["state"].value == "stopped"
    assert (evaluation.passed, evaluation.severity) == (False, dg.AssetCheckSeverity.ERROR)
    for event in result.asset_events:  # what the daemon does with a sensor's asset events
        env.instance.report_runless_asset_event(event)
    stored = env.instance.fetch_observations(COLLECTOR, limit=1).records[0]
    assert stored.asset_observation.metadata["state"].value == "stopped"
    # the check, executed on its own (from the UI), says the same
    check = collector_recording(lake=env.lake())
    assert (check.passed, check.severity) == (False, dg.AssetCheckSeverity.ERROR)


def test_old_heartbeat_without_groups(env: Env) -> None:
    hb.write(env.layout.heartbeat_path, hb.old_format(hb.heartbeat(updated_ns=NOW_NS)))
    observation, evaluation = events(health_tick(env.lake(), None, now_ns=NOW_NS))
    assert observation.metadata["groups_total"].value == 2 and evaluation.passed
    assert "disk_used_pct" not in observation.metadata
