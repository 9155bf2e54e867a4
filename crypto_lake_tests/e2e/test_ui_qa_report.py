"""Reports with charts as a user opens them in the UI (Chromium), on one Dagster server: the
QA report on the qa_report asset page, and the order book's day on a book_1s partition."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from crypto_lake.lib.book.report import utc_time
from crypto_lake.lib.book.synthetic import Faults, SyntheticSpec, write_day
from crypto_lake.lib.core.fsutil import atomic_path
from crypto_lake.lib.core.paths import LakeLayout
from crypto_lake.simulator.anomalies import AnomalyPlan, inject_bar_anomalies
from crypto_lake.simulator.synthetic_bars import (
    bars_table,
    day_start_us,
    seeded_rng,
    synthetic_bars_columns,
)
from crypto_lake_tests.e2e.dagster_harness import DagsterDev

pytestmark = pytest.mark.e2e

DAY = "2024-03-01"
SYMBOLS = ["BTCUSDT", "ETHUSDT"]
BOOK_SYMBOL = "BTCUSDT"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip


def _write_bars(layout: LakeLayout, symbol: str) -> None:
    cols = synthetic_bars_columns(symbol, DAY, 1, seconds=3 * 3600)
    plan = AnomalyPlan.market(jumps=3, blowouts=1, spikes=1, stale=1)
    inject_bar_anomalies(symbol, cols, plan, seeded_rng(2, symbol, DAY), day_start_us(DAY) // 10**6)
    path = layout.market_partition_dir("bars_1s", symbol, DAY) / "part-0.parquet"
    with atomic_path(path, durable=False) as tmp:
        pq.write_table(bars_table(symbol, DAY, cols), tmp)


@pytest.fixture(scope="module")
def dagster_dev(tmp_path_factory: pytest.TempPathFactory):
    tmp_path = tmp_path_factory.mktemp("ui_reports")
    layout = LakeLayout(tmp_path / "lake")
    for symbol in SYMBOLS:
        _write_bars(layout, symbol)
    # an hour of BTCUSDT depth with two sequence gaps (book_1s)
    book = SyntheticSpec(symbol=BOOK_SYMBOL, day=DAY, start_s=3600, seconds=3600,
                         levels_per_event=20, depth=400, snapshot_every_s=600, seed=5,
                         faults=Faults(disconnects=2))  # fmt: skip
    write_day(book, layout.raw_day_dir(BOOK_SYMBOL, DAY))
    env = {
        "LAKE_ROOT": str(layout.root),
        "CRYPTO_LAKE__DAGSTER__PARTITIONS_START": "2024-01-01",
        "CRYPTO_LAKE__DAGSTER__FINALIZE_CRON": "0 0 1 1 *",
        "CRYPTO_LAKE__COLLECTOR__DEPTH__SYMBOLS": f"[{BOOK_SYMBOL}]",
        "CRYPTO_LAKE_CONFIG": None,
    }
    dev = DagsterDev(tmp_path / "dagster_home", env, tmp_path / "dagster_dev.log")
    try:
        dev.start()
        yield dev, layout
    finally:
        dev.stop()


def test_qa_report_page_shows_the_charts(dagster_dev, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    dev, layout = dagster_dev
    # the day's QA of both symbols, as the daily schedule launches it
    range_tags = {"dagster/asset_partition_range_start": f"{DAY}|{SYMBOLS[0]}",
                  "dagster/asset_partition_range_end": f"{DAY}|{SYMBOLS[-1]}"}  # fmt: skip
    dev.run_job("qa_daily_job", range_tags)
    assert layout.qa_report_path(DAY).exists(), dev.log_path.read_text()[-3000:]

    shots = tmp_path / "screenshots"
    shots.mkdir()
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(dev.url + "/assets/qa_report", wait_until="domcontentloaded")
        show = page.get_by_text("[Show Markdown]").first
        show.wait_for(state="visible", timeout=90_000)
        page.screenshot(path=str(shots / "qa_report_asset.png"), full_page=True)
        show.click()  # how a user opens a Markdown metadata value
        page.get_by_text(f"QA report {DAY}").first.wait_for(state="visible", timeout=60_000)
        charts = page.locator('img[src^="data:image/png;base64,"]')
        charts.first.wait_for(state="visible", timeout=60_000)
        page.wait_for_timeout(1500)
        page.screenshot(path=str(shots / "qa_report_markdown.png"), full_page=True)
        sizes = charts.evaluate_all("imgs => imgs.map(i => [i.naturalWidth, i.naturalHeight])")
        alts = charts.evaluate_all("imgs => imgs.map(i => i.alt)")
        browser.close()
    assert not errors, errors
    # One decoded chart per symbol, at the size it was drawn.
    assert [a.split()[0] for a in alts] == SYMBOLS
    assert sizes == [[800, 448]] * len(SYMBOLS)


def test_book_partition_page_shows_the_chart_and_the_gaps(dagster_dev, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    dev, layout = dagster_dev
    partition = f"{DAY}|{BOOK_SYMBOL}"
    dev.run_job("book_job", {"dagster/partition": partition})  # the UI's Materialize

    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        # the partitions tab of book_1s, this partition selected, as a user clicks to it
        page.goto(f"{dev.url}/assets/book_1s?view=partitions&partition={partition}",
                  wait_until="domcontentloaded")  # fmt: skip
        page.get_by_text("reliable_seconds").first.wait_for(state="visible", timeout=90_000)
        page.screenshot(path=str(tmp_path / "book_partition.png"), full_page=True)
        show = page.get_by_text("[Show Markdown]").first
        show.wait_for(state="visible", timeout=30_000)
        page.locator("tr", has_text="summary").get_by_text("[Show Markdown]").first.click()
        page.get_by_text(f"{BOOK_SYMBOL} {DAY}").first.wait_for(state="visible", timeout=30_000)
        chart = page.locator('img[alt="spread and depth over the day"]')
        chart.wait_for(state="visible", timeout=30_000)
        page.wait_for_timeout(1000)
        page.screenshot(path=str(tmp_path / "book_summary.png"), full_page=True)
        size = chart.evaluate("i => [i.naturalWidth, i.naturalHeight]")
        text = page.locator("body").inner_text()
        browser.close()
    assert not errors, errors
    assert size == [460, 187], size  # decoded at the size it was drawn (6.4 x 2.6 in, 72 dpi)
    # the disconnects' gaps are listed, each from its first unreliable second, with its reason
    gaps = json.loads(layout.book_checks_path(BOOK_SYMBOL, DAY).read_text())["gaps"]
    assert len(gaps) >= 2, gaps
    for gap in gaps:
        assert utc_time(gap["start_us"])[:8] in text and gap["reason"] in text, (gap, text[-2000:])
