"""Each alert condition fires once, is not repeated within the hour and is resolved when it
clears: real heartbeat and state files, a real Dagster instance, a loopback webhook."""

import time

import dagster as dg
import orjson
import pytest

from crypto_lake.defs.ops.alerts import alert_on_run_failure, alert_tick, alerts_sensor
from crypto_lake_tests.ops import heartbeats as hb
from crypto_lake_tests.ops.conftest import Env
from crypto_lake_tests.ops.heartbeats import NOW_NS, S
from crypto_lake_tests.ops.webhook_server import WebhookServer

P1, P2 = "2024-03-01|BTCUSDT", "2024-03-01|ETHUSDT"


def beat(env: Env, now_ns: int, **kw) -> None:
    hb.write(env.layout.heartbeat_path, hb.heartbeat(updated_ns=now_ns, **kw))


def tick(env: Env, now_ns: int, lake=None):
    report = alert_tick(env.instance, lake or env.lake(), now_ns=now_ns)
    assert not report.errors, report.errors
    return report


def test_collector_down_fires_once_and_resolves(env: Env) -> None:
    tick(env, NOW_NS)  # no heartbeat at all
    (body,) = env.hook.bodies
    assert (body["key"], body["state"], body["severity"]) == ("collector_down", "firing",
                                                              "critical")  # fmt: skip
    assert body["details"]["state"] == "missing"
    tick(env, NOW_NS + 60 * S)
    beat(env, NOW_NS + 100 * S, status="stale-ish")  # an unknown status: still down
    tick(env, NOW_NS + 120 * S)
    assert len(env.hook.bodies) == 1  # not repeated within the hour
    beat(env, NOW_NS + 180 * S)
    tick(env, NOW_NS + 181 * S)
    assert env.hook.states() == [("collector_down", "firing"), ("collector_down", "resolved")]


@pytest.mark.parametrize(("kw", "state", "severity"), [
    ({"status": "stopped"}, "stopped", "warning"),
    ({"status": "failed", "error": "lake not writable", "exit_code": 74}, "failed", "critical"),
    ({"age_s": 30}, "stale", "critical"),
])  # fmt: skip
def test_collector_states_alert(env: Env, kw: dict, state: str, severity: str) -> None:
    age = kw.pop("age_s", 0)
    beat(env, NOW_NS - age * S, **kw)
    tick(env, NOW_NS)
    (body,) = env.hook.bodies
    assert (body["details"]["state"], body["severity"]) == (state, severity)
    assert body["summary"].startswith(f"collector {state}: ")
    if state == "failed":
        assert body["details"]["exit_code"] == 74 and "lake not writable" in body["summary"]


def test_connection_group_down_over_a_minute(env: Env) -> None:
    groups = [hb.group(0, ["BTCUSDT"]), hb.group(1, ["ETHUSDT"], down_for_s=30)]
    beat(env, NOW_NS, groups=groups)
    tick(env, NOW_NS)
    assert env.hook.bodies == []  # 30 s: not yet
    groups[1] = hb.group(1, ["ETHUSDT"], down_for_s=30)  # down_since is fixed
    beat(env, NOW_NS + 40 * S, groups=groups)
    tick(env, NOW_NS + 40 * S)
    (body,) = env.hook.bodies
    assert (body["key"], body["details"]["symbols"]) == ("connection_down:group-1", ["ETHUSDT"])
    assert body["details"]["down_seconds"] == pytest.approx(70.0)
    beat(env, NOW_NS + 100 * S, groups=groups)
    tick(env, NOW_NS + 100 * S)
    assert len(env.hook.bodies) == 1
    beat(env, NOW_NS - 60 * S, groups=groups)  # the collector went stale: the group is not
    tick(env, NOW_NS + 160 * S)  # judged (neither resolved nor repeated); collector_down is
    assert env.hook.states()[-1] == ("collector_down", "firing")
    beat(env, NOW_NS + 200 * S)  # back, every group connected
    tick(env, NOW_NS + 200 * S)
    assert sorted(env.hook.states()[-2:]) == [("collector_down", "resolved"),
                                              ("connection_down:group-1", "resolved")]  # fmt: skip


def test_open_gap_over_five_minutes(env: Env) -> None:
    beat(env, NOW_NS, gaps=[hb.open_gap("BTCUSDT", 200)])
    tick(env, NOW_NS)
    assert env.hook.bodies == []
    beat(env, NOW_NS + 120 * S, gaps=[hb.open_gap("BTCUSDT", 200)])  # now 320 s old
    tick(env, NOW_NS + 120 * S)
    (body,) = env.hook.bodies
    assert body["key"] == "open_gap:BTCUSDT" and body["details"]["missing_ids"] == 10
    beat(env, NOW_NS + 180 * S, gaps=[hb.open_gap("BTCUSDT", 200)])
    tick(env, NOW_NS + 180 * S)
    beat(env, NOW_NS + 240 * S)  # repaired
    tick(env, NOW_NS + 240 * S)
    assert env.hook.states() == [("open_gap:BTCUSDT", "firing"), ("open_gap:BTCUSDT", "resolved")]


def test_disk_above_the_warning_level(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    beat(env, NOW_NS)
    monkeypatch.setenv("CRYPTO_LAKE__ARCHIVE__DISK_WARN_FRACTION", "0.0001")
    full = env.lake()
    tick(env, NOW_NS, full)
    beat(env, NOW_NS + 60 * S)
    tick(env, NOW_NS + 60 * S, full)
    (body,) = env.hook.bodies
    assert body["key"] == "disk" and body["details"]["threshold"] == 0.0001
    assert body["details"]["path"] == str(env.root)
    monkeypatch.setenv("CRYPTO_LAKE__ARCHIVE__DISK_WARN_FRACTION", "1.0")
    beat(env, NOW_NS + 120 * S)
    tick(env, NOW_NS + 120 * S)
    assert env.hook.states() == [("disk", "firing"), ("disk", "resolved")]


def test_macro_source_down_over_an_hour(env: Env) -> None:
    """The macro source's state file (state/macro_source.json, the macro module's format)."""
    path = env.layout.state_dir / "macro_source.json"

    def source(down_since_ns: int | None, now_ns: int) -> None:
        beat(env, now_ns)
        path.write_bytes(orjson.dumps({
            "down_since_ns": down_since_ns, "last_ok_ns": NOW_NS - 7200 * S,
            "last_error": "HTTP 503 from query1.finance.yahoo.com\ntraceback...",
            "consecutive_failures": 9, "updated_ns": now_ns}))  # fmt: skip

    source(NOW_NS - 1800 * S, NOW_NS)
    tick(env, NOW_NS)
    assert env.hook.bodies == []
    source(NOW_NS - 1800 * S, NOW_NS + 1900 * S)
    tick(env, NOW_NS + 1900 * S)
    (body,) = env.hook.bodies
    assert body["key"] == "macro_source_down" and body["details"]["consecutive_failures"] == 9
    assert body["details"]["last_error"] == "HTTP 503 from query1.finance.yahoo.com"
    source(None, NOW_NS + 2000 * S)
    tick(env, NOW_NS + 2000 * S)
    assert env.hook.states()[-1] == ("macro_source_down", "resolved")


@dg.op(config_schema={"evaluations": list})
def log_evaluations(context: dg.OpExecutionContext) -> None:
    """Logs the check evaluations it is given, one per partition, as the market checks do."""
    for asset, name, partition, passed, severity, description in context.op_config["evaluations"]:
        context.log_event(dg.AssetCheckEvaluation(
            asset_key=dg.AssetKey(asset), check_name=name, passed=passed, partition=partition,
            severity=dg.AssetCheckSeverity(severity), description=description,
        ))  # fmt: skip


@dg.job
def checks_job() -> None:
    log_evaluations()


def checks(env: Env, *evaluations: tuple) -> None:
    """Record check results in a run: (asset, check, partition, passed[, severity, text])."""
    rows = [[*e, "ERROR", "12 violations"][:6] if len(e) == 4 else list(e) for e in evaluations]
    config = {"ops": {"log_evaluations": {"config": {"evaluations": rows}}}}
    assert checks_job.execute_in_process(run_config=config, instance=env.instance).success


def test_blocking_check_failure_and_qa_fail_verdict(env: Env) -> None:
    beat(env, NOW_NS)
    checks(
        env,
        ("bars_1s", "r1_ohlc_order", P1, False),
        # a skipped rule is not a failed one; R3 does not block
        ("bars_1s", "r1_ohlc_order", P2, False, "WARN", "Skipped: nothing recorded"),
        ("bars_1s", "r3_ask_ge_bid", P1, False),
        ("qa_verdicts", "no_fail_verdict", P2, False, "ERROR", "verdict FAIL (score 0.41)"),
        ("qa_verdicts", "no_fail_verdict", P1, False, "WARN", "Skipped: no verdict"),
    )
    tick(env, NOW_NS)
    beat(env, NOW_NS + 60 * S)
    tick(env, NOW_NS + 60 * S)
    assert sorted(env.hook.states()) == [
        (f"blocking_check:r1_ohlc_order:{P1}", "firing"), (f"qa_fail:no_fail_verdict:{P2}",
                                                          "firing")]  # fmt: skip
    qa = next(b for b in env.hook.bodies if b["condition"] == "qa_fail")
    assert "verdict FAIL (score 0.41)" in qa["summary"] and qa["details"]["partition"] == P2
    checks(env, ("bars_1s", "r1_ohlc_order", P1, True),
           ("qa_verdicts", "no_fail_verdict", P2, True))  # fmt: skip
    beat(env, NOW_NS + 120 * S)
    tick(env, NOW_NS + 120 * S)
    assert sorted(env.hook.states()[2:]) == [
        (f"blocking_check:r1_ohlc_order:{P1}", "resolved"), (f"qa_fail:no_fail_verdict:{P2}",
                                                            "resolved")]  # fmt: skip


def test_archive_copy_missing_over_six_hours(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRYPTO_LAKE__ARCHIVE__BUCKET", "lake-bucket")
    env.instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key="daily_archive", partition=P1)
    )
    now = time.time_ns()
    beat(env, now + 5 * 3600 * S)
    tick(env, now + 5 * 3600 * S)
    assert env.hook.bodies == []
    beat(env, now + 7 * 3600 * S)
    tick(env, now + 7 * 3600 * S)
    (body,) = env.hook.bodies
    assert body["key"] == "archive_copy" and body["details"]["partitions"] == [P1]
    env.instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key="gcs_archive_copy", partition=P1)
    )
    beat(env, now + 7 * 3600 * S + 60 * S)
    tick(env, now + 7 * 3600 * S + 60 * S)
    assert env.hook.states()[-1] == ("archive_copy", "resolved")


@dg.op(config_schema={"fail": bool})
def maybe_fail(context: dg.OpExecutionContext) -> None:
    if context.op_config["fail"]:
        raise RuntimeError("lake disk is read-only\nsecond line")


@dg.job
def flaky_job() -> None:
    maybe_fail()


def run_flaky(env: Env, fail: bool) -> dg.ExecuteInProcessResult:
    return flaky_job.execute_in_process(
        run_config={"ops": {"maybe_fail": {"config": {"fail": fail}}}}, instance=env.instance,
        raise_on_error=False, tags={"dagster/partition": P1},
    )  # fmt: skip


def report_failure(env: Env, result: dg.ExecuteInProcessResult) -> None:
    ctx = dg.build_run_status_sensor_context(
        sensor_name="alert_on_run_failure", dagster_event=result.get_run_failure_event(),
        dagster_instance=env.instance, dagster_run=result.dagster_run,
        resources={"lake": env.lake()},
    ).for_run_failure()  # fmt: skip
    alert_on_run_failure(ctx)


def test_run_failure_reaches_the_webhook_and_resolves(env: Env) -> None:
    beat(env, time.time_ns())
    failed = run_flaky(env, fail=True)
    assert not failed.success
    report_failure(env, failed)
    (body,) = env.hook.bodies
    assert (body["key"], body["state"]) == ("run_failure:flaky_job", "firing")
    details = body["details"]
    assert details["run_id"] == failed.run_id and details["job"] == "flaky_job"
    assert details["partition_tags"] == {"dagster/partition": P1}
    assert "lake disk is read-only" in details["error"] and "second line" not in details["error"]
    report_failure(env, run_flaky(env, fail=True))  # again within the hour: held back
    assert len(env.hook.bodies) == 1
    assert run_flaky(env, fail=False).success
    now = time.time_ns()
    beat(env, now)
    tick(env, now)
    assert env.hook.states() == [("run_failure:flaky_job", "firing"),
                                 ("run_failure:flaky_job", "resolved")]  # fmt: skip


def test_failing_webhook_is_retried_and_never_crashes_the_sensor(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 500, then a closed port: the sensor reports it, the next tick delivers."""
    env.hook.status = 500
    with dg.build_sensor_context(instance=env.instance, resources={"lake": env.lake()}) as ctx:
        result = alerts_sensor(ctx)
    assert "not delivered (webhook POST failed: HTTP 500)" in result.skip_message
    env.hook.close()
    with dg.build_sensor_context(instance=env.instance, resources={"lake": env.lake()}) as ctx:
        result = alerts_sensor(ctx)
    assert "connection refused" in result.skip_message
    with WebhookServer() as hook:
        monkeypatch.setenv("CRYPTO_LAKE_WEBHOOK_URL", hook.url)
        with dg.build_sensor_context(instance=env.instance, resources={"lake": env.lake()}) as ctx:
            result = alerts_sensor(ctx)
        assert "sent: firing collector_down" in result.skip_message
        assert hook.states() == [("collector_down", "firing")]
