"""Alerts with the configuration's ``alerts`` section and the webhook URL from a secret file
(``CRYPTO_LAKE_WEBHOOK_URL_FILE``): both come from ``crypto_lake.lib.core.config``."""

import uuid
from pathlib import Path

import dagster as dg
import pytest

from crypto_lake.defs.ops.alerts import alert_tick, alerts_sensor
from crypto_lake_tests.ops import heartbeats as hb
from crypto_lake_tests.ops.conftest import Env
from crypto_lake_tests.ops.heartbeats import NOW_NS


def test_thresholds_come_from_the_alerts_section(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRYPTO_LAKE__ALERTS__OPEN_GAP_SECONDS", "100")
    hb.write(env.layout.heartbeat_path,
             hb.heartbeat(updated_ns=NOW_NS, gaps=[hb.open_gap("BTCUSDT", 200)]))  # fmt: skip
    alert_tick(env.instance, env.lake(), now_ns=NOW_NS)
    assert env.hook.states() == [("open_gap:BTCUSDT", "firing")]  # 200 s > 100 s


def test_url_from_a_secret_file_never_leaks(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """Delivered through the file; when the file vanishes after the configuration was loaded,
    the tick says so (without the URL) and delivers once it is back."""
    canary = f"CANARY-{uuid.uuid4().hex}"
    secret = tmp_path / "secrets" / "webhook_url"  # outside the lake and DAGSTER_HOME
    secret.parent.mkdir()
    url = f"http://127.0.0.1:{env.hook.port}/hook/{canary}"
    secret.write_text(url + "\n")
    monkeypatch.delenv("CRYPTO_LAKE_WEBHOOK_URL")
    monkeypatch.setenv("CRYPTO_LAKE_WEBHOOK_URL_FILE", str(secret))
    lake = env.lake()
    assert lake.config is not None  # loaded while the file is there
    secret.unlink()
    (sent,) = alert_tick(env.instance, lake, now_ns=NOW_NS).sent
    assert sent.key == "collector_down" and sent.error.startswith("webhook not usable: ")
    secret.write_text(url + "\n")
    with dg.build_sensor_context(instance=env.instance, resources={"lake": lake}) as ctx:
        text = alerts_sensor(ctx).skip_message
    assert env.hook.states() == [("collector_down", "firing")]
    assert env.hook.paths == [f"/hook/{canary}"]
    out = capsys.readouterr()
    assert canary not in text + sent.error + out.out + out.err
    for path in [p for p in env.root.rglob("*") if p.is_file()]:
        assert canary.encode() not in path.read_bytes(), path
