"""The webhook URL is a secret: a canary token in it appears in no log line, no Dagster event or
metadata, no file under the lake or DAGSTER_HOME, no exception message, on the success paths
and the failure paths (HTTP 500, closed port, malformed URL, a failed run)."""

import logging
import uuid
from pathlib import Path

import dagster as dg
import pytest
from dagster._serdes import serialize_value

from crypto_lake.defs.ops.alerts import alert_on_run_failure, alert_tick, alerts_sensor
from crypto_lake.defs.ops.health import collector_health_sensor
from crypto_lake_tests.ops.conftest import Env
from crypto_lake_tests.ops.test_alert_conditions import checks, run_flaky
from crypto_lake_tests.ops.webhook_server import WebhookServer


def test_canary_never_leaks(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    canary = f"CANARY-{uuid.uuid4().hex}"
    caplog.set_level(logging.DEBUG)
    raised: list[str] = []
    instance, lake_resource = env.instance, env.lake

    def use(url: str) -> None:
        """Exercise every sender with this URL."""
        monkeypatch.setenv("CRYPTO_LAKE_WEBHOOK_URL", url)
        lake = lake_resource()
        try:
            with dg.build_sensor_context(instance=instance, resources={"lake": lake}) as ctx:
                result = alerts_sensor(ctx)
                raised.append(result.skip_message or "")  # the tick's text is shown in the UI
            with dg.build_sensor_context(instance=instance, resources={"lake": lake}) as ctx:
                health = collector_health_sensor(ctx)
            for event in getattr(health, "asset_events", []):
                instance.report_runless_asset_event(event)
            failed = run_flaky(env, fail=True)
            alert_on_run_failure(dg.build_run_status_sensor_context(
                sensor_name="alert_on_run_failure", dagster_event=failed.get_run_failure_event(),
                dagster_instance=instance, dagster_run=failed.dagster_run,
                resources={"lake": lake},
            ).for_run_failure())  # fmt: skip
            alert_tick(instance, lake)
        except Exception as exc:  # none is expected; if one is, it must not leak either
            raised.append(f"{type(exc).__name__}: {exc!r} {exc}")

    checks(env, ("bars_1s", "r1_ohlc_order", "2024-03-01|BTCUSDT", False))
    with WebhookServer(path=f"/hook/{canary}") as hook:
        use(hook.url)  # success: delivered
        assert hook.bodies and all(p == f"/hook/{canary}" for p in hook.paths)
        # forget what was sent, so the failure paths below have everything to deliver again
        (env.layout.state_dir / "alerts.json").unlink()
        hook.status = 500
        use(hook.url)  # HTTP 500
        port = hook.port
    use(f"http://127.0.0.1:{port}/hook/{canary}")  # connection refused
    use(f"http://127.0.0.1:x{canary}/hook/{canary}")  # malformed
    use(f"http://[{canary}/hook")  # malformed (urlsplit refuses it)

    out = capsys.readouterr()
    texts = {"logs": caplog.text, "stdout": out.out, "stderr": out.err,
             "exceptions": "\n".join(raised)}  # fmt: skip
    records = []
    for run in instance.get_runs():
        records += [serialize_value(e) for e in instance.all_logs(run.run_id)]
    observations = instance.fetch_observations(dg.AssetKey("collector"), limit=100).records
    records += [serialize_value(r.event_log_entry) for r in observations]
    texts["events"] = "\n".join(records)
    for name, text in texts.items():
        assert canary not in text, name
    logged = caplog.text + out.err + out.out  # sensor logs go to Dagster's console logger
    assert "not delivered: webhook POST failed: HTTP 500" in logged  # logged, URL-free
    assert "connection refused" in logged and "the webhook URL is malformed" in logged
    for root in (env.root, tmp_path / "home"):
        files = [p for p in root.rglob("*") if p.is_file()]
        assert files
        for path in files:
            assert canary.encode() not in path.read_bytes(), path
