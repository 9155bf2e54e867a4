"""The README's demo command starts everything, says where to look, and Ctrl+C stops it all.

Within 5 minutes of the start, the UI has bars and passing checks, the injected outage in
coverage, macro minutes and the synthetic DXY from the loopback Yahoo stand-in, and today's QA
report: asserted through the same GraphQL API the UI pages read.
"""

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from crypto_lake.defs.macro.partitions import MACRO_TICKERS
from crypto_lake.simulator.yahoo import price_at
from crypto_lake_tests.e2e.dagster_harness import free_port, graphql

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


def _graphql(port: int, query: str, variables: dict | None = None) -> dict:
    return graphql(f"http://127.0.0.1:{port}", query, variables)


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


MACRO = """
query Macro {
  macro: assetOrError(assetKey: {path: ["macro_minute"]}) {
    ... on Asset { assetMaterializations(limit: 200) {
      partition metadataEntries { label ... on IntMetadataEntry { intValue } } } }
  }
  dxy: assetOrError(assetKey: {path: ["dxy_synthetic_minute"]}) {
    ... on Asset { assetMaterializations(limit: 20) {
      partition metadataEntries { label ... on IntMetadataEntry { intValue } } } }
  }
  report: assetOrError(assetKey: {path: ["qa_report"]}) {
    ... on Asset { assetMaterializations(limit: 20) { partition } }
  }
}
"""


def _rows(materialization: dict) -> int:
    return next(
        (e.get("intValue") or 0 for e in materialization["metadataEntries"]
         if e["label"] == "dagster/row_count"), 0,
    )  # fmt: skip


def _macro_products(port: int) -> dict[str, bool]:
    """Which macro products the UI shows: today's macro_minute partitions of every ticker
    with bars in some partition (a catch-up weekday when today is a weekend), a synthetic DXY
    with rows, and today's QA report."""
    data = _graphql(port, MACRO)
    today = time.strftime("%Y-%m-%d", time.gmtime())
    macro = (data["macro"] or {}).get("assetMaterializations") or []
    dxy = (data["dxy"] or {}).get("assetMaterializations") or []
    report = (data["report"] or {}).get("assetMaterializations") or []
    todays = {m["partition"] for m in macro if m["partition"].startswith(today)}
    return {
        "macro_minute": len(todays) == len(MACRO_TICKERS) and any(_rows(m) for m in macro),
        "dxy_synthetic_minute": any(_rows(m) for m in dxy),
        "qa_report": any(m["partition"].startswith(today) for m in report),
    }


def _stand_in_bars(lake: Path) -> int:
    """Bars in the lake's macro files whose closes are the stand-in's prices (no real Yahoo
    ever answers those); asserts every stored close is one."""
    checked = 0
    for path in (lake / "macro_1m").glob("ticker=*/date=*/*.parquet"):
        rows = pq.read_table(path).to_pylist()
        for row in rows:
            ts = int(row["ts"].timestamp())
            assert row["close"] == pytest.approx(price_at(row["ticker"], ts, 0.0)), (path, row)
        checked += len(rows)
    return checked


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.e2e
def test_demo_starts_everything_and_ctrl_c_stops_it(tmp_path: Path) -> None:
    port = free_port()
    # Nothing of the caller's configuration: the demo itself points macro at its loopback
    # Yahoo stand-in.
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRYPTO_LAKE")}
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
        deadline = time.monotonic() + 150  # numba's warm-up first: ~45 s on a fresh clone
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            out.append(line)
            if "Press Ctrl+C" in line or proc.poll() is not None:
                break
        text = "".join(out)
        assert f"Dagster UI         : http://127.0.0.1:{port}" in text, text
        assert "raw files" in text and "exchange simulator : ws://127.0.0.1:" in text
        assert "Yahoo stand-in     : http://127.0.0.1:" in text
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
        raw = tmp_path / "lake" / "raw" / "binance" / "BTCUSDT"
        deadline = time.monotonic() + 30

        def sealed() -> list[Path]:  # zstd by default: part-NNNNNN.jsonl.zst
            return [p for p in raw.glob("*/part-*") if not p.name.endswith(".open")]

        while time.monotonic() < deadline and not sealed():
            time.sleep(0.5)
        assert sealed(), "no sealed raw file"
        # Within 5 minutes of the start a newcomer sees: bars and passing checks; the injected
        # fault (the exchange dropped every connection 20 s after the start, for 15 s) in
        # coverage and the bars' flags, with checks per partition; macro minutes and the DXY
        # from the loopback stand-in (today and the catch-up days, at most 2 macro runs queued
        # at a time); today's QA report. Each is timed from the start.
        seen_at: dict[str, float] = {}
        while len(seen_at) < 5 and time.monotonic() - started < 300:
            time.sleep(5)
            found = {
                "bars and passing checks": "bars and passing checks" in seen_at
                or _bars_and_passing_checks(port) is not None,
                "outage in coverage": "outage in coverage" in seen_at
                or _outage_in_coverage_and_bars(port) is not None,
                **_macro_products(port),
            }
            for name, ok in found.items():
                if ok and name not in seen_at:
                    seen_at[name] = time.monotonic() - started
                    print(f"{name} visible {seen_at[name]:.0f} s after start")
        assert "bars and passing checks" in seen_at, (
            f"no bars with passing checks after 5 min: {_graphql(port, BARS_AND_CHECKS)}"
        )
        assert "outage in coverage" in seen_at, (
            f"no outage in coverage after 5 min: {_graphql(port, COVERAGE)}"
        )
        missing = {"macro_minute", "dxy_synthetic_minute", "qa_report"} - set(seen_at)
        assert not missing, f"{missing} not materialized after 5 min: {_graphql(port, MACRO)}"
        assert _stand_in_bars(tmp_path / "lake") > 0
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
