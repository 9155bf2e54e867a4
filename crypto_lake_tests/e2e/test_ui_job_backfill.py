"""A backfill launched from the job page, the way a user clicks it (Chromium), builds every
selected partition.

Jobs › market_day_job › "Materialize all…" opens the partition dialog of a multi-partitioned
job: a date field (typed ranges like ``[2024-03-01...2024-03-02]``) and a symbol select with an
"All" button. Launched from there, the UI sends a *job* backfill (a ``partitionSetName``
selector), not an asset backfill. Its runs carry the range tags of one date × all symbols and,
besides them, single-partition ``dagster/partition/date``/``symbol`` tags (measured: the same
pair on every run of the backfill, not one run's first key). Assets that let those tags decide
build one partition in all, while the backfill page still says "Succeeded, 6 partitions"; so
this test checks the files and Dagster's materializations of every selected partition.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from crypto_lake.lib.core.paths import LakeLayout
from crypto_lake.lib.raw.catalog import RawCatalog
from crypto_lake_tests.defs import rawgen
from crypto_lake_tests.e2e.dagster_harness import RUN_DONE, DagsterDev

pytestmark = pytest.mark.e2e

DAYS = ["2024-03-01", "2024-03-02"]
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
PARTITIONS = [f"{d}|{s}" for d in DAYS for s in SYMBOLS]
# Asset -> dataset folder of its Parquet files.
DATASETS = {"trades": "trades", "quotes": "quotes", "binance_klines_1m": "klines_1m",
            "bars_1s": "bars_1s", "bars_1m": "bars_1m"}  # fmt: skip
JOB_PAGE = "/locations/crypto_lake/jobs/market_day_job"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip

MATERIALIZATIONS = """
query Materializations($key: AssetKeyInput!, $partitions: [String!]) {
  assetOrError(assetKey: $key) {
    __typename
    ... on Asset { assetMaterializations(partitions: $partitions) { partition runId } }
  }
}
"""


LAUNCH_RUN = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}
"""
RUN_TIMES = """
query Run($id: ID!) { runOrError(runId: $id) { ... on Run { status startTime endTime } } }
"""


def launch_market_run(dev: DagsterDev, trigger: str) -> str:
    """A market_day_job run of DAYS[0] × SYMBOLS, as the refresh sensor or the finalize
    schedule launches it (the same range and trigger tags)."""
    tags = {"dagster/asset_partition_range_start": f"{DAYS[0]}|{SYMBOLS[0]}",
            "dagster/asset_partition_range_end": f"{DAYS[0]}|{SYMBOLS[-1]}",
            "crypto_lake/trigger": trigger}  # fmt: skip
    launched = dev.graphql(LAUNCH_RUN, {"params": {
        "selector": {"repositoryLocationName": "crypto_lake",
                     "repositoryName": "__repository__", "jobName": "market_day_job"},
        "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
    }})["launchRun"]  # fmt: skip
    assert launched["__typename"] == "LaunchRunSuccess", launched
    return launched["run"]["runId"]


def wait_for_run(dev: DagsterDev, run_id: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = dev.graphql(RUN_TIMES, {"id": run_id})["runOrError"]
        if run["status"] in RUN_DONE:
            return run
        time.sleep(1)
    raise TimeoutError(f"run {run_id} not done\n{dev.log_path.read_text()[-3000:]}")


@pytest.fixture
def dagster_dev(tmp_path: Path):
    layout = LakeLayout(tmp_path / "lake")
    data = {s: rawgen.generate(s, DAYS, per_day=60) for s in SYMBOLS}
    for s, sd in data.items():
        rawgen.write_raw(layout, s, rawgen.raw_lines(sd))
    RawCatalog(layout).refresh()  # catalogued up front, so no sensor launches extra runs
    klines = {s: rawgen.reference_klines_1m(sd) for s, sd in data.items()}
    with rawgen.KlinesServer(klines) as server:
        env = {
            "LAKE_ROOT": str(layout.root),
            "CRYPTO_LAKE__SYMBOLS": f"[{', '.join(SYMBOLS)}]",
            "CRYPTO_LAKE__BINANCE__REST_BASE_URL": server.url,
            "CRYPTO_LAKE__DAGSTER__PARTITIONS_START": "2024-01-01",
            "CRYPTO_LAKE__DAGSTER__FINALIZE_CRON": "0 0 1 1 *",  # no scheduled runs meanwhile
            "CRYPTO_LAKE_CONFIG": None,  # defaults + the variables above only
        }
        dev = DagsterDev(tmp_path / "dagster_home", env, tmp_path / "dagster_dev.log")
        try:
            dev.start()
            yield dev, layout
        finally:
            dev.stop()


def materialized_by(dev: DagsterDev, asset: str, run_ids: set[str]) -> set[str]:
    """Partitions of the selection that Dagster recorded as materialized by these runs."""
    data = dev.graphql(MATERIALIZATIONS, {"key": {"path": [asset]}, "partitions": PARTITIONS})
    events = data["assetOrError"].get("assetMaterializations") or []
    return {e["partition"] for e in events if e["runId"] in run_ids}


def launch_from_job_page(page, base_url: str, shots: Path) -> dict:
    """Jobs › market_day_job › Materialize all… › 2 dates × All symbols › Launch backfill."""
    page.goto(base_url + JOB_PAGE, wait_until="domcontentloaded")
    materialize = page.get_by_role("button", name="Materialize all…")
    materialize.wait_for(state="visible", timeout=60_000)
    page.wait_for_timeout(1000)
    page.screenshot(path=str(shots / "1_job_page.png"))
    materialize.click()

    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Partition selection").wait_for(state="visible", timeout=30_000)
    page.screenshot(path=str(shots / "2_dialog.png"))
    # One selector per dimension: a free-text date field, a symbol multi-select with "All".
    dates = dialog.get_by_placeholder(re.compile(r"^ex: \d{4}-\d{2}-\d{2}"))
    dates.click()
    dates.fill(f"[{DAYS[0]}...{DAYS[-1]}]")
    dates.press("Enter")
    symbol_section = dialog.get_by_text("symbol", exact=True).locator(
        "xpath=ancestor::*[.//button[normalize-space()='All']][1]"
    )
    symbol_section.get_by_role("button", name="All", exact=True).click()
    for s in SYMBOLS:
        symbol_section.get_by_text(s, exact=True).first.wait_for(state="visible", timeout=10_000)
    dialog.get_by_text(f"{len(PARTITIONS)} partitions", exact=True).wait_for(timeout=10_000)
    page.screenshot(path=str(shots / "3_selection.png"))

    def is_launch(response) -> bool:
        body = response.request.post_data or ""
        return "/graphql" in response.url and "LaunchPartitionBackfill" in body

    with page.expect_response(is_launch, timeout=60_000) as launch:
        dialog.get_by_role("button", name="Launch backfill").click()
    request = launch.value.request.post_data_json["variables"]["backfillParams"]
    result = launch.value.json()["data"]["launchPartitionBackfill"]
    dialog.wait_for(state="hidden", timeout=30_000)
    page.screenshot(path=str(shots / "4_launched.png"))
    return {"request": request, "result": result}


def test_job_page_backfill_builds_every_partition(dagster_dev, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    dev, layout = dagster_dev
    shots = tmp_path / "screenshots"
    shots.mkdir()
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        launched = launch_from_job_page(page, dev.url, shots)
        assert launched["result"]["__typename"] == "LaunchBackfillSuccess", launched
        # The job page launches a job backfill (partition set), the path under test.
        assert launched["request"]["selector"]["partitionSetName"].startswith("market_day_job")
        assert sorted(launched["request"]["partitionNames"]) == sorted(PARTITIONS)
        backfill_id = launched["result"]["backfillId"]

        backfill = dev.wait_backfill(backfill_id, timeout=300)
        page.goto(f"{dev.url}/runs/b/{backfill_id}", wait_until="domcontentloaded")
        page.get_by_text("Partition selection").first.wait_for(state="visible", timeout=60_000)
        page.wait_for_timeout(1500)
        page.screenshot(path=str(shots / "5_backfill_page.png"), full_page=True)
        page.goto(f"{dev.url}/assets/bars_1m?view=partitions", wait_until="domcontentloaded")
        shown = page.get_by_text(re.compile(r"^Materialized \(\d+\)$")).first
        shown.wait_for(state="visible", timeout=60_000)
        page.wait_for_timeout(1500)
        page.screenshot(path=str(shots / "6_bars_1m_partitions.png"), full_page=True)
        shown_materialized = shown.inner_text()
        browser.close()

    runs = backfill["runs"]
    run_ids = {r["runId"] for r in runs}
    run_tags = [{t["key"]: t["value"] for t in r["tags"] if t["key"].startswith("dagster/")}
                for r in runs]  # fmt: skip
    materialized = {a: sorted(materialized_by(dev, a, run_ids)) for a in DATASETS}
    seen = f"materialized: {materialized}; runs: {[r['status'] for r in runs]} {run_tags}"
    assert backfill["status"] == "COMPLETED_SUCCESS", f"{backfill['status']}; {seen}"
    assert runs and all(r["status"] == "SUCCESS" for r in runs), seen
    assert all(m == sorted(PARTITIONS) for m in materialized.values()), (
        f"backfill {backfill_id} should materialize {PARTITIONS}; {seen}"
    )

    # What the user sees on the asset's Partitions tab (nothing else materializes bars_1m here).
    assert shown_materialized == f"Materialized ({len(PARTITIONS)})", shown_materialized

    missing = [(asset, p) for asset, dataset in DATASETS.items() for p in PARTITIONS
               if not _part_file(layout, dataset, p).exists()]  # fmt: skip
    assert not missing, f"no Parquet file for {missing}"
    empty = [
        p for p in PARTITIONS if pq.read_metadata(_part_file(layout, "trades", p)).num_rows == 0
    ]
    assert not empty, f"trades without rows: {empty}"
    assert not errors, errors

    # A refresh and a finalize of the same day launched together, through the real run queue
    # and daemon: they write the same partitions, so one waits until the other has ended.
    refresh, finalize = launch_market_run(dev, "refresh"), launch_market_run(dev, "finalize")
    first, second = sorted((wait_for_run(dev, r) for r in (refresh, finalize)),
                           key=lambda r: r["startTime"])  # fmt: skip
    assert first["status"] == second["status"] == "SUCCESS", (first, second)
    assert second["startTime"] >= first["endTime"], f"the runs overlapped: {first}, {second}"


def _part_file(layout: LakeLayout, dataset: str, partition: str) -> Path:
    day, symbol = partition.split("|")
    return layout.market_partition_dir(dataset, symbol, day) / "part-0.parquet"
