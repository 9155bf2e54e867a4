"""The README's demo command starts everything, says where to look, and Ctrl+C stops it all.

Within 5 minutes of the start, the UI has bars and passing checks: asserted through the same
GraphQL API the UI pages read.
"""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from crypto_lake.defs.macro.partitions import MACRO_TICKERS, day_range_tags
from crypto_lake_tests.e2e.dagster_harness import free_port

ROOT = Path(__file__).resolve().parents[1]
# The checks a newcomer should see pass: the blocking ones and R7 (parity with Binance).
DEMO_CHECKS = ["r1_ohlc_order", "r2_positive_prices", "r4_no_nan_ohlc", "r7_klines_parity"]
_LATEST = (
    'assetOrError(assetKey: {{path: ["{0}"]}}) '
    "{{ ... on Asset {{ assetMaterializations(limit: 1) {{ partition }} }} }}"
)
_CHECK = (
    'assetCheckExecutions(assetKey: {{path: ["bars_1s"]}}, checkName: "{0}", limit: 5) {{ status }}'
)
BARS_AND_CHECKS = (
    "query DemoBars {\n"
    + "\n".join(
        [f"{a}: {_LATEST.format(a)}" for a in ("bars_1s", "bars_1m")]
        + [f"{c}: {_CHECK.format(c)}" for c in DEMO_CHECKS]
    )
    + "\n}"
)


LAUNCH_MACRO = """
mutation LaunchMacro($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""


RUNS = """
query Runs($job: String!) {
  runsOrError(filter: {pipelineName: $job}) { ... on Runs { results { status startTime endTime } } }
}
"""


def _runs(port: int, job: str) -> list[dict]:
    return _graphql(port, RUNS, {"job": job})["runsOrError"]["results"]


def _started(runs: list[dict]) -> list[dict]:
    return [r for r in runs if r["status"] in ("STARTING", "STARTED")]


def _overlaps(run: dict, others: list[dict]) -> bool:
    """``run`` started while one of ``others`` was in progress."""
    return any(
        o["startTime"] and o["startTime"] < run["startTime"] < (o["endTime"] or float("inf"))
        for o in others
    )


def _last_days(n: int) -> list[str]:
    return [time.strftime("%Y-%m-%d", time.gmtime(time.time() - 86400 * i)) for i in range(n)]


def _graphql(port: int, query: str, variables: dict | None = None) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        payload = json.loads(resp.read())
    assert not payload.get("errors"), payload["errors"]
    return payload["data"]


def _bars_and_passing_checks(port: int) -> dict | None:
    """Today's bars_1s and bars_1m materialized and the latest R1/R2/R4/R7 executions passed."""
    data = _graphql(port, BARS_AND_CHECKS)
    today = time.strftime("%Y-%m-%d", time.gmtime())
    for asset in ("bars_1s", "bars_1m"):
        mats = (data[asset] or {}).get("assetMaterializations") or []
        if not mats or not mats[0]["partition"].startswith(today):
            return None
    # The newest finished execution of each check passed (a refresh run may be in flight).
    done = {c: [e["status"] for e in data[c] if e["status"] != "IN_PROGRESS"] for c in DEMO_CHECKS}
    if any(s[:1] != ["SUCCEEDED"] for s in done.values()):
        return None
    return data


COVERAGE = """
query Coverage {
  assetOrError(assetKey: {path: ["coverage"]}) {
    ... on Asset { assetMaterializations(limit: 20) {
      partition metadataEntries { label ... on IntMetadataEntry { intValue }
                                         ... on FloatMetadataEntry { floatValue } } } }
  }
  bars: assetOrError(assetKey: {path: ["bars_1s"]}) {
    ... on Asset { assetMaterializations(limit: 20) {
      partition metadataEntries { label ... on IntMetadataEntry { intValue } } } }
  }
  r1: assetCheckExecutions(assetKey: {path: ["bars_1s"]}, checkName: "r1_ohlc_order", limit: 20) {
    status evaluation { partition }
  }
}
"""


def _outage_in_coverage_and_bars(port: int) -> dict | None:
    """Today's coverage shows the demo's injected outage (seconds whose live feed was lost:
    repaired from REST or lost outright), the bars flag those seconds is_outage beyond the
    unrecorded time before the collector's start, and check results name their partition.
    A ranged run's materialization carries run totals (``run_`` keys)."""
    data = _graphql(port, COVERAGE)
    today = time.strftime("%Y-%m-%d", time.gmtime())

    def latest(asset: dict | None) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for m in (asset or {}).get("assetMaterializations") or []:
            if m["partition"].startswith(today) and m["partition"] not in out:
                out[m["partition"]] = {
                    e["label"].removeprefix("run_"): e.get("intValue", e.get("floatValue"))
                    for e in m["metadataEntries"]
                }
        return out

    coverage, bars = latest(data["assetOrError"]), latest(data["bars"])
    shown = {
        key: cov
        for key, cov in coverage.items()
        if (cov.get("seconds_repaired") or 0) + (cov.get("seconds_outage") or 0) >= 5
        and (bars.get(key, {}).get("outage_seconds") or 0) > (cov.get("seconds_unrecorded") or 0)
    }
    partitions = {(e["evaluation"] or {}).get("partition") for e in data["r1"]}
    if not shown or not any(p and p.startswith(today) for p in partitions):
        return None
    return {"coverage": shown, "check_partitions": partitions}


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.e2e
def test_demo_starts_everything_and_ctrl_c_stops_it(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRYPTO_LAKE")}
    # Yahoo is down for the demo's macro runs (nothing listens there) and they retry as
    # configured by default: the market runs must still get through the run queue.
    env["CRYPTO_LAKE__MACRO__YAHOO_BASE_URL"] = f"http://127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "crypto_lake.demo", "--lake", str(tmp_path / "lake"),
         "--port", str(port), "--rotate-seconds", "3", "--symbols", "BTCUSDT,ETHUSDT"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    started = time.monotonic()
    out: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            out.append(line)
            if "Press Ctrl+C" in line or proc.poll() is not None:
                break
        text = "".join(out)
        assert f"Dagster UI         : http://127.0.0.1:{port}" in text, text
        assert "raw files" in text and "exchange simulator : ws://127.0.0.1:" in text
        # The UI answers, and the collector seals raw files from the simulator.
        deadline = time.monotonic() + 300
        ui_ok = False
        while time.monotonic() < deadline and not ui_ok:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2) as r:
                    ui_ok = r.status == 200
            except OSError:
                time.sleep(1)
        assert ui_ok, "Dagster webserver did not answer"
        # Two days of macro runs queued at once, as on a fresh lake's first quarter hour.
        for day in _last_days(2):
            launched = _graphql(port, LAUNCH_MACRO, {"params": {
                "selector": {"repositoryLocationName": "crypto_lake",
                             "repositoryName": "__repository__", "jobName": "macro_minute_job"},
                "executionMetadata": {"tags": [
                    {"key": k, "value": v} for k, v in day_range_tags(day, MACRO_TICKERS).items()
                ]},
            }})["launchRun"]  # fmt: skip
            assert launched["__typename"] == "LaunchRunSuccess", launched
        raw = tmp_path / "lake" / "raw" / "binance" / "BTCUSDT"
        deadline = time.monotonic() + 30

        def sealed() -> list[Path]:  # zstd by default: part-NNNNNN.jsonl.zst
            return [p for p in raw.glob("*/part-*") if not p.name.endswith(".open")]

        while time.monotonic() < deadline and not sealed():
            time.sleep(0.5)
        assert sealed(), "no sealed raw file"
        # A newcomer sees bars and passing checks within 5 minutes of starting the demo.
        seen = None
        while seen is None and time.monotonic() - started < 300:
            time.sleep(5)
            seen = _bars_and_passing_checks(port)
        assert seen is not None, (
            f"no bars with passing checks after 5 min: {_graphql(port, BARS_AND_CHECKS)}"
        )
        print(f"bars and passing checks visible {time.monotonic() - started:.0f} s after start")
        # The exchange dropped every connection 60 s after the start, for 20 s (the demo's
        # injected fault): coverage and the bars' flags show it, checks are per partition.
        outage = None
        while outage is None and time.monotonic() - started < 300:
            outage = _outage_in_coverage_and_bars(port)
            if outage is None:
                time.sleep(5)
        assert outage is not None, f"no outage in coverage after 5 min: {_graphql(port, COVERAGE)}"
        print(f"outage visible in coverage {time.monotonic() - started:.0f} s after start")
        # While a macro run retries against the dead Yahoo (minutes) and the other waits in the
        # queue, a market refresh run still gets a slot and succeeds.
        deadline = time.monotonic() + 60
        macro = _runs(port, "macro_minute_job")
        while time.monotonic() < deadline and not _started(macro):
            time.sleep(2)
            macro = _runs(port, "macro_minute_job")
        assert len(_started(macro)) == 1, macro
        later = None
        deadline = time.monotonic() + 180
        while later is None and time.monotonic() < deadline:
            time.sleep(5)
            macro = _runs(port, "macro_minute_job")
            assert len(_started(macro)) <= 1, macro
            later = next((m for m in _runs(port, "market_day_job")
                          if m["status"] == "SUCCESS" and _overlaps(m, macro)), None)  # fmt: skip
        assert later is not None, f"no market run got through: {_runs(port, 'market_day_job')}"
    finally:
        proc.send_signal(signal.SIGINT)  # what Ctrl+C sends to the foreground process
        rest, _ = proc.communicate(timeout=60)
        out.append(rest)
    assert proc.returncode == 0, "".join(out)
    assert "crypto_lake demo stopped." in "".join(out)
    # No child is left behind: every component was in its own process group, all gone now.
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    leftovers = [ln for ln in ps.splitlines() if str(tmp_path) in ln]
    assert not leftovers, leftovers
    assert not _group_alive(proc.pid)
