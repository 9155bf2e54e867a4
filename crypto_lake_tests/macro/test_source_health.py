"""The macro source's health and the circuit breaker: Yahoo down (a closed port, or 503 from
the loopback stand-in) opens it, the sensor then queues nothing and says why, one probe run
goes through after the cooldown, and Yahoo answering again closes it."""

import json
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from crypto_lake.defs.macro.assets import macro_minute
from crypto_lake.defs.macro.automation import (
    DAY_TAG,
    REASON_TAG,
    macro_minute_job,
    macro_minute_sensor,
    macro_tick,
)
from crypto_lake.defs.macro.partitions import MACRO_TICKERS, day_range_tags
from crypto_lake.defs.resources import LakeResource
from crypto_lake.lib.core.config import MacroConfig
from crypto_lake.lib.core.paths import LakeLayout
from crypto_lake.lib.macro.source_health import (
    Breaker,
    read_source_health,
    record_failure,
    record_success,
    source_health_path,
)
from crypto_lake.simulator.yahoo import YahooServer

SECOND = 1_000_000_000


def closed_port_url() -> str:
    """A loopback URL nothing listens on: every connection is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        yield inst


def lake_at(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LakeResource:
    """The lake resource with Yahoo at ``url`` and the shipped retry defaults (attempts and
    backoff), so a failing fetch costs what it costs in production."""
    monkeypatch.setenv("CRYPTO_LAKE__MACRO__YAHOO_BASE_URL", url)
    monkeypatch.setenv("CRYPTO_LAKE__MACRO__REQUEST_TIMEOUT_SECONDS", "5")
    return LakeResource(lake_root=str(tmp_path / "lake"))


def run_day(
    instance: dg.DagsterInstance, lake: LakeResource, day: str, reason: str = "recent"
) -> dg.ExecuteInProcessResult:
    """A macro_minute_job run of one day, as the sensor requests it."""
    job = dg.Definitions(
        assets=[macro_minute], jobs=[macro_minute_job], resources={"lake": lake}
    ).resolve_job_def(macro_minute_job.name)
    tags = {**day_range_tags(day, MACRO_TICKERS), DAY_TAG: day, REASON_TAG: reason}
    return job.execute_in_process(instance=instance, tags=tags, raise_on_error=False)


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    return failure.event_specific_data.error.message  # type: ignore[union-attr]


def skip_message(result: dg.SensorResult) -> str:
    return result.skip_reason.skip_message or "" if result.skip_reason else ""


def test_health_file_records_failures_and_success(tmp_path: Path) -> None:
    layout = LakeLayout(tmp_path / "lake")
    assert read_source_health(layout) is None  # never asked
    t0 = 1_764_936_000 * SECOND
    record_failure(layout, "ConnectionError: refused", now_ns=t0)
    record_failure(layout, "ConnectionError: refused" + "x" * 2000, now_ns=t0 + 60 * SECOND)
    health = read_source_health(layout)
    assert health is not None
    assert (health.down_since_ns, health.last_ok_ns) == (t0, None)
    assert health.consecutive_failures == 2 and health.updated_ns == t0 + 60 * SECOND
    assert len(health.last_error) == 500  # bounded
    assert not Breaker.of(MacroConfig(breaker_failures=3)).is_open(health)
    record_failure(layout, "ReadTimeout", now_ns=t0 + 120 * SECOND)
    health = read_source_health(layout)
    assert health is not None and Breaker.of(MacroConfig(breaker_failures=3)).is_open(health)
    # The file's exact shape (the alerts read it too).
    stored = json.loads(source_health_path(layout).read_text())
    assert stored == {
        "down_since_ns": t0, "last_ok_ns": None, "last_error": "ReadTimeout",
        "consecutive_failures": 3, "updated_ns": t0 + 120 * SECOND,
    }  # fmt: skip
    record_success(layout, now_ns=t0 + 700 * SECOND)
    health = read_source_health(layout)
    assert health is not None and not Breaker.of(MacroConfig()).is_open(health)
    assert (health.down_since_ns, health.consecutive_failures) == (None, 0)
    assert health.last_ok_ns == health.updated_ns == t0 + 700 * SECOND
    # A damaged file is unknown, not a crash; the next fetch rewrites it.
    source_health_path(layout).write_text("{not json")
    assert read_source_health(layout) is None
    record_failure(layout, "boom", now_ns=t0)
    assert read_source_health(layout).consecutive_failures == 1  # type: ignore[union-attr]


def test_yahoo_refusing_connections_opens_the_breaker_fast_and_stops_queuing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, instance: dg.DagsterInstance
) -> None:
    lake = lake_at(closed_port_url(), tmp_path, monkeypatch)
    today = datetime.now(UTC).date().isoformat()
    started = time.monotonic()
    result = run_day(instance, lake, today)
    elapsed = time.monotonic() - started
    assert not result.success
    # 3 tickers tried (2 quick attempts each), the other 6 not tried at all: seconds, where
    # 9 tickers x 5 attempts with backoff took about 200 s.
    assert elapsed < 30, elapsed
    message = failure_message(result)
    assert "Yahoo failed for 3 of 9 partitions" in message
    assert "6 partitions were not tried because Yahoo was unreachable" in message
    health = read_source_health(lake.layout)
    assert health is not None and health.consecutive_failures == 3
    assert health.down_since_ns is not None and "ConnectionError" in health.last_error

    # The sensor now queues nothing, and says why and until when.
    with dg.build_sensor_context(instance, resources={"lake": lake}) as ctx:
        tick = macro_minute_sensor(ctx)
    assert isinstance(tick, dg.SensorResult) and not tick.run_requests
    reason = skip_message(tick)
    assert reason.startswith("Yahoo unreachable since ")
    assert "last error: " in reason and "ConnectionError" in reason
    probe_at = datetime.fromtimestamp(health.updated_ns / 1e9, UTC) + timedelta(minutes=10)
    assert f"next probe at {probe_at:%Y-%m-%d %H:%M:%S} UTC" in reason


def test_probe_after_cooldown_and_closing_on_success(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, instance: dg.DagsterInstance
) -> None:
    with YahooServer() as yahoo:
        lake = lake_at(yahoo.url, tmp_path, monkeypatch)
        yahoo.state.down_status = 503  # Yahoo is down: every request answers 503
        monkeypatch.setenv("CRYPTO_LAKE__MACRO__MAX_ATTEMPTS", "2")  # 5xx: the full retries
        monkeypatch.setenv("CRYPTO_LAKE__MACRO__BACKOFF_BASE_SECONDS", "0.01")
        monkeypatch.setenv("CRYPTO_LAKE__MACRO__BACKOFF_CAP_SECONDS", "0.02")
        now = datetime.now(UTC)
        today = now.date().isoformat()
        assert not run_day(instance, lake, today).success
        health = read_source_health(lake.layout)
        assert health is not None and health.consecutive_failures == 3
        assert "failed 2 times" in health.last_error

        # Open: nothing before the cooldown (10 min after the last failure)...
        assert "next probe at" in skip_message(macro_tick(instance, lake.layout, now))
        nine = now + timedelta(minutes=9)
        assert not macro_tick(instance, lake.layout, nine).run_requests
        # ...then exactly one probe run (today), and no second one while it is in flight.
        later = now + timedelta(minutes=11)
        (probe,) = macro_tick(instance, lake.layout, later).run_requests or []
        assert (probe.tags[DAY_TAG], probe.tags[REASON_TAG]) == (today, "probe")
        job = dg.Definitions(
            assets=[macro_minute], jobs=[macro_minute_job], resources={"lake": lake}
        ).resolve_job_def(macro_minute_job.name)
        in_flight = instance.create_run_for_job(
            job, tags=probe.tags, status=dg.DagsterRunStatus.STARTED
        )
        waiting = macro_tick(instance, lake.layout, later)
        assert not waiting.run_requests
        assert "waiting for the 1 macro run(s) in flight" in skip_message(waiting)
        instance.report_run_canceled(in_flight)

        # Yahoo is back: the probe's first answer closes the breaker.
        yahoo.state.down_status = None
        assert run_day(instance, lake, today, "probe").success
        health = read_source_health(lake.layout)
        assert health is not None and health.down_since_ns is None
        assert health.consecutive_failures == 0 and health.last_ok_ns == health.updated_ns
        # yfinance kept no error page from the outage as its crumb.
        assert yahoo.state.chart_requests()[-1]["crumb"] == "loopbackCrumb"
        # Closed: the sensor plans as usual again (catch-up of the days never fetched).
        closed = macro_tick(instance, lake.layout, later).run_requests or []
        # (during the first UTC hour yesterday is still a recent day, planned first)
        expected = ["recent", "catchup"] if later.hour == 0 else ["catchup", "catchup"]
        assert [r.tags[REASON_TAG] for r in closed] == expected


def test_breaker_and_run_cap_come_from_the_macro_config_section() -> None:
    """The knobs are MacroConfig fields, overridable like any key."""
    from crypto_lake.lib.core.config import load_config

    env = {"CRYPTO_LAKE__MACRO__MAX_RUNS_IN_FLIGHT": "3",
           "CRYPTO_LAKE__MACRO__BREAKER_COOLDOWN_SECONDS": "60"}  # fmt: skip
    macro = load_config(environ=env).macro
    custom = Breaker.of(macro)
    assert (macro.max_runs_in_flight, custom.cooldown_seconds) == (3, 60.0)
    assert custom.failures == 3  # not set: the default
