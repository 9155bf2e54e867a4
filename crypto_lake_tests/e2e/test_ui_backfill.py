"""The product as users see it: `dagster dev`, a UI backfill over GraphQL, pages in Chromium.

Measured here: a UI backfill of N dates × all symbols with ``BackfillPolicy.single_run()``
creates N runs (one per date, each covering every symbol); this test asserts 2 runs for
2 dates × 13 symbols.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from crypto_lake.lib.core.config import load_config
from crypto_lake.lib.core.paths import LakeLayout
from crypto_lake.lib.raw.catalog import RawCatalog
from crypto_lake_tests.defs import rawgen
from crypto_lake_tests.e2e.dagster_harness import LAUNCH_BACKFILL, DagsterDev

pytestmark = pytest.mark.e2e

DAYS = ["2024-03-01", "2024-03-02"]
ASSETS = ["trades", "quotes", "binance_klines_1m", "bars_1s", "bars_1m"]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
CHECK_NAMES = ["r1_ohlc_order", "r2_positive_prices", "r3_ask_ge_bid", "r4_no_nan_ohlc",
               "r5_continuity", "r6_spread_sane", "r7_klines_parity"]  # fmt: skip
CHECK_EXECUTIONS = """
query Checks($name: String!) {
  assetCheckExecutions(assetKey: {path: ["bars_1s"]}, checkName: $name, limit: 200) {
    status runId evaluation { partition description metadataEntries { label
      ... on MarkdownMetadataEntry { mdStr } ... on IntMetadataEntry { intValue } } }
  }
}
"""


@pytest.fixture
def dagster_dev(tmp_path: Path):
    symbols = load_config(environ={}).symbols
    layout = LakeLayout(tmp_path / "lake")
    data = {s: rawgen.generate(s, DAYS, per_day=60) for s in symbols}
    for s, sd in data.items():
        rawgen.write_raw(layout, s, rawgen.raw_lines(sd))
    RawCatalog(layout).refresh()  # catalogued up front, so no sensor launches extra runs
    klines = {s: rawgen.reference_klines_1m(sd) for s, sd in data.items()}
    with rawgen.KlinesServer(klines) as server:
        env = {
            "LAKE_ROOT": str(layout.root),
            "CRYPTO_LAKE__BINANCE__REST_BASE_URL": server.url,
            "CRYPTO_LAKE__DAGSTER__PARTITIONS_START": "2024-01-01",
            "CRYPTO_LAKE__DAGSTER__FINALIZE_CRON": "0 0 1 1 *",  # keep schedules out of the count
            "CRYPTO_LAKE_CONFIG": None,  # defaults + the variables above only
        }
        dev = DagsterDev(tmp_path / "dagster_home", env, tmp_path / "dagster_dev.log")
        try:
            dev.start()
            yield dev, symbols, layout
        finally:
            dev.stop()


def test_ui_backfill_and_pages_render(dagster_dev, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    dev, symbols, layout = dagster_dev
    partitions = [f"{d}|{s}" for d in DAYS for s in symbols]
    launched = dev.graphql(
        LAUNCH_BACKFILL,
        {"backfillParams": {
            "assetSelection": [{"path": [a]} for a in ASSETS],
            "partitionNames": partitions,
            "fromFailure": False,
            "tags": [],
        }},
    )["launchPartitionBackfill"]  # fmt: skip
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill = dev.wait_backfill(launched["backfillId"])
    runs = backfill["runs"]
    assert backfill["status"] in ("COMPLETED", "COMPLETED_SUCCESS"), backfill
    assert [r["status"] for r in runs] == ["SUCCESS"] * len(runs), runs
    assert len(runs) == len(DAYS)  # single_run policy: one run per date for all 13 symbols
    for s in symbols:
        for d in DAYS:
            assert (layout.market_partition_dir("bars_1m", s, d) / "part-0.parquet").exists()
    # Every rule has one result per partition (the UI lists them by partition); R1–R6 pass.
    # (R7 is not asserted here: the runs of the two dates may run in either order, and a day
    # built before the previous day's trades exist starts without the previous close, which
    # R7 then reports against Binance's klines of those first minutes.)
    for rule in CHECK_NAMES:
        executions = dev.graphql(CHECK_EXECUTIONS, {"name": rule})["assetCheckExecutions"]
        by_partition = {e["evaluation"]["partition"]: e for e in executions if e["evaluation"]}
        assert set(by_partition) == set(partitions), rule
        failed = [e for e in by_partition.values() if e["status"] != "SUCCEEDED"]
        assert rule == "r7_klines_parity" or not failed, (rule, failed[:3])

    shots = tmp_path / "screenshots"
    shots.mkdir()
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        pages = [
            ("asset_graph", "/locations/crypto_lake/asset-groups/market", "raw_market_events"),
            ("bars_1s_partitions", "/assets/bars_1s?view=partitions", "Materialized (26)"),
            ("bars_1s_checks", "/assets/bars_1s?view=checks", "r7_klines_parity"),
        ]
        for name, path, expected in pages:
            page.goto(dev.url + path, wait_until="domcontentloaded")
            page.get_by_text(expected).first.wait_for(state="visible", timeout=60_000)
            page.wait_for_timeout(1500)
            page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
        # One check result, opened the way a user clicks into it.
        page.get_by_text("r1_ohlc_order").first.click()
        page.get_by_text("This is a blocking asset check").first.wait_for(timeout=60_000)
        page.get_by_text("Passed").first.wait_for(state="visible", timeout=60_000)
        page.get_by_text("rows_checked").first.wait_for(state="visible", timeout=60_000)
        page.screenshot(path=str(shots / "check_r1.png"), full_page=True)
        browser.close()
    assert not errors, errors
