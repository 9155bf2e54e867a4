"""The archive tier as users see it: `dagster dev`, a backfill of daily_archive +
gcs_archive_copy launched by clicking in Chromium, read back over GraphQL, in the bucket and
on the asset pages.

One `dagster dev` per module, 2 days × 3 symbols of generated raw lines, a klines server and a
GCS emulator in this process (the runs reach it through ``STORAGE_EMULATOR_HOST``).
market_day_job and qa_daily_job build and check both days; 2024-03-01|ETHUSDT then gets a FAIL
``no_fail_verdict`` (reported over GraphQL, as the UI's API allows); a user opens the archive
group, "Materialize all…", both dates × all symbols, "Launch backfill".

Measured here: the backfill makes one run per date; the run of 2024-03-01 archives BTCUSDT and
SOLUSDT, refuses ETHUSDT and fails, and its gcs_archive_copy step is then skipped ("Dependencies
for step gcs_archive_copy failed"): the two archived partitions of that date are copied later by
the archive_copies sensor (idle here), in a run of its own. Every partition's hashes and object
URIs are in the UI (``test_each_partition_shows_its_own_hashes_and_objects``): a ranged
daily_archive result carries run totals and one observation per partition with its metadata;
gcs_archive_copy records one materialization per partition.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from crypto_lake.defs.archive.assets import OVERRIDE_TAG
from crypto_lake.lib.archive.day import archive_files, archive_status, object_name, read_sidecar
from crypto_lake.lib.archive.gcs import local_hashes
from crypto_lake.lib.core.paths import ARCHIVE_DATASETS, ARCHIVE_TABLES, LakeLayout
from crypto_lake.lib.raw.catalog import RawCatalog
from crypto_lake_tests.archive.gcs_server import running_emulator
from crypto_lake_tests.defs import rawgen
from crypto_lake_tests.e2e.dagster_harness import DagsterDev

pytestmark = pytest.mark.e2e

DAYS = ["2024-03-01", "2024-03-02"]
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
PARTITIONS = [f"{d}|{s}" for d in DAYS for s in SYMBOLS]
REFUSED = "2024-03-01|ETHUSDT"  # its latest no_fail_verdict is a FAIL
ARCHIVED = [p for p in PARTITIONS if p != REFUSED]
BUCKET, PREFIX = "crypto-lake-e2e", "crypto-lake"
UPSTREAM = {*ARCHIVE_TABLES, "qa_verdicts"}
NEVER = "0 0 1 1 *"  # schedules of the chain under test must not add runs meanwhile
# Jobs that touch the assets under test; other schedules (macro, disk) may run meanwhile.
CHAIN_JOBS = {"market_day_job", "qa_daily_job", "qa_hourly_job", "bars_job",
              "klines_parity_job", "parity_job", "archive_job", "__ASSET_JOB"}  # fmt: skip
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip

ASSET_NODES = """{ assetNodes(assetKeys: [{path: ["daily_archive"]}, {path: ["gcs_archive_copy"]}])
  { assetKey { path } groupName dependencyKeys { path } dependedByKeys { path }
    backfillPolicy { policyType } partitionDefinition { dimensionTypes { name } } } }"""
SENSORS = """{ sensorsOrError(repositorySelector: {repositoryLocationName: "crypto_lake",
  repositoryName: "__repository__"}) { ... on Sensors { results { name
  sensorState { status ticks(limit: 1) { status } } } } } }"""
RUNS = """{ runsOrError { ... on Runs { results { runId jobName status } } } }"""
NO_FAIL_EXECUTIONS = """{ assetCheckExecutions(assetKey: {path: ["qa_verdicts"]},
  checkName: "no_fail_verdict", limit: 100) { status evaluation { partition } } }"""
REPORT_CHECK = """mutation Report($p: ReportAssetCheckEvaluationsParams!) {
  reportAssetCheckEvaluations(eventParams: $p) { __typename
    ... on PythonError { message } ... on UnauthorizedError { message } } }"""
ENTRIES = """metadataEntries { label
    ... on TextMetadataEntry { text } ... on MarkdownMetadataEntry { mdStr }
    ... on IntMetadataEntry { intValue } ... on FloatMetadataEntry { floatValue }
    ... on UrlMetadataEntry { url } ... on PathMetadataEntry { path } }"""
MATERIALIZATIONS = (
    """query M($key: AssetKeyInput!) { assetOrError(assetKey: $key) { ... on Asset {
  assetMaterializations { partition runId ENTRIES } } } }"""
).replace("ENTRIES", ENTRIES)
OBSERVATIONS = (
    """query O($key: AssetKeyInput!) { assetOrError(assetKey: $key) { ... on Asset {
  assetObservations { partition runId ENTRIES } } } }"""
).replace("ENTRIES", ENTRIES)
STEP_FAILURES = """query L($id: ID!) { logsForRun(runId: $id) { ... on EventConnection { events {
  __typename ... on ExecutionStepFailureEvent { stepKey error { message }
    failureMetadata { metadataEntries { label ... on TextMetadataEntry { text } } } } } } } }"""


@dataclass
class ArchiveUI:
    dev: DagsterDev
    layout: LakeLayout
    bucket: Any  # google.cloud.storage.Bucket on the emulator
    page: Any  # playwright Page
    errors: list[str]  # uncaught page errors
    shots: Path

    def show(self, path: str, ready: str | re.Pattern[str], shot: str) -> None:
        self.page.goto(self.dev.url + path, wait_until="domcontentloaded")
        self.page.get_by_text(ready).first.wait_for(state="visible", timeout=60_000)
        self.page.wait_for_timeout(1000)
        self.page.screenshot(path=str(self.shots / f"{shot}.png"), full_page=True)

    def text(self) -> str:
        return self.page.locator("body").inner_text()


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArchiveUI]:
    from google.cloud import storage
    from playwright.sync_api import sync_playwright

    tmp = tmp_path_factory.mktemp("ui_archive")
    layout = LakeLayout(tmp / "lake")
    data = {s: rawgen.generate(s, DAYS, per_day=60) for s in SYMBOLS}
    for s, sd in data.items():
        rawgen.write_raw(layout, s, rawgen.raw_lines(sd))
    RawCatalog(layout).refresh()  # catalogued up front, so no sensor launches extra runs
    klines = {s: rawgen.reference_klines_1m(sd) for s, sd in data.items()}
    with (
        rawgen.KlinesServer(klines) as server,
        running_emulator() as emulator,
        pytest.MonkeyPatch.context() as mp,
        sync_playwright() as pw,
    ):
        mp.setenv("STORAGE_EMULATOR_HOST", emulator.url)  # for this process's client
        bucket = storage.Client(project="test").create_bucket(BUCKET)
        env = {
            "LAKE_ROOT": str(layout.root),
            "CRYPTO_LAKE__SYMBOLS": f"[{', '.join(SYMBOLS)}]",
            "CRYPTO_LAKE__BINANCE__REST_BASE_URL": server.url,
            "CRYPTO_LAKE__DAGSTER__PARTITIONS_START": "2024-01-01",
            "CRYPTO_LAKE__DAGSTER__FINALIZE_CRON": NEVER,
            "CRYPTO_LAKE__QA__HOURLY_CRON": NEVER,
            "CRYPTO_LAKE__QA__DAILY_CRON": NEVER,
            "CRYPTO_LAKE__ARCHIVE__ARCHIVE_CRON": NEVER,
            "CRYPTO_LAKE__ARCHIVE__RETENTION_CRON": NEVER,
            # the follow-up sensors tick once at start (nothing to do), then not for a day
            "CRYPTO_LAKE__DAGSTER__REFRESH_INTERVAL_SECONDS": "86400",
            "CRYPTO_LAKE__ARCHIVE__BUCKET": BUCKET,
            "STORAGE_EMULATOR_HOST": emulator.url,
            "CRYPTO_LAKE_CONFIG": None,  # defaults + the variables above only
        }
        dev = DagsterDev(tmp / "dagster_home", env, tmp / "dagster_dev.log")
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        shots = tmp / "screenshots"
        shots.mkdir()
        try:
            dev.start()
            wait_for_first_sensor_ticks(dev)
            yield ArchiveUI(dev, layout, bucket, page, errors, shots)
        finally:
            browser.close()
            dev.stop()


def wait_for_first_sensor_ticks(dev: DagsterDev, timeout: float = 120) -> None:
    """Until every running sensor has ticked once, on an instance with nothing to react to."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sensors = [s["sensorState"] for s in dev.graphql(SENSORS)["sensorsOrError"]["results"]]
        if all(s["ticks"] for s in sensors if s["status"] == "RUNNING"):
            return
        time.sleep(1)
    raise TimeoutError(f"sensors never ticked: {sensors}")


def run_job(dev: DagsterDev, job: str, timeout: float = 300) -> str:
    """A run of ``job`` over DAYS × SYMBOLS (range tags, as the automation launches it)."""
    return dev.run_job(
        job,
        {
            "dagster/asset_partition_range_start": PARTITIONS[0],
            "dagster/asset_partition_range_end": PARTITIONS[-1],
        },
        timeout,
    )


def no_fail_latest(dev: DagsterDev) -> dict[str, str]:
    """The latest no_fail_verdict status of each partition (executions come newest first)."""
    latest: dict[str, str] = {}
    for e in dev.graphql(NO_FAIL_EXECUTIONS)["assetCheckExecutions"]:
        if e["evaluation"]:
            latest.setdefault(e["evaluation"]["partition"], e["status"])
    return latest


def launch_from_group_page(ui: ArchiveUI) -> dict:
    """Catalog › archive group › Materialize all… › both dates × All symbols › Launch."""
    page = ui.page
    ui.show("/locations/crypto_lake/asset-groups/archive", "gcs_archive_copy", "1_group")
    page.get_by_role("button", name="Materialize all…").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Launch runs to materialize 2 assets").wait_for(timeout=30_000)
    dates = dialog.get_by_placeholder(re.compile(r"^ex: \d{4}-\d{2}-\d{2}"))
    dates.click()
    dates.fill(f"[{DAYS[0]}...{DAYS[-1]}]")
    dates.press("Enter")
    symbol_section = dialog.get_by_text("symbol", exact=True).locator(
        "xpath=ancestor::*[.//button[normalize-space()='All']][1]"
    )
    symbol_section.get_by_role("button", name="All", exact=True).click()
    dialog.get_by_text(f"{len(PARTITIONS)} partitions", exact=True).wait_for(timeout=10_000)
    page.screenshot(path=str(ui.shots / "2_launch_dialog.png"))

    def is_launch(response) -> bool:
        body = response.request.post_data or ""
        return "/graphql" in response.url and "LaunchPartitionBackfill" in body

    with page.expect_response(is_launch, timeout=60_000) as launch:
        dialog.get_by_role("button", name="Launch backfill").click()
    dialog.wait_for(state="hidden", timeout=30_000)
    return {"request": launch.value.request.post_data_json["variables"]["backfillParams"],
            "result": launch.value.json()["data"]["launchPartitionBackfill"]}  # fmt: skip


@dataclass
class Backfill:
    id: str
    status: str
    request: dict
    runs: dict[str, dict]  # first partition of the run's range -> run
    failed_run: str  # the run whose range holds REFUSED


@pytest.fixture(scope="module")
def backfill(ui: ArchiveUI) -> Backfill:
    """Both days built and checked, REFUSED's verdict a FAIL, then the backfill from the UI."""
    ours = {run_job(ui.dev, "market_day_job"), run_job(ui.dev, "qa_daily_job")}
    assert no_fail_latest(ui.dev) == dict.fromkeys(PARTITIONS, "SUCCEEDED")  # all may go
    reported = ui.dev.graphql(REPORT_CHECK, {"p": {
        "assetKey": {"path": ["qa_verdicts"]}, "checkName": "no_fail_verdict", "passed": False,
        "severity": "ERROR", "partitionKeys": [REFUSED],
        "serializedMetadata": json.dumps({"verdict": "FAIL", "skipped": False}),
        "description": "verdict FAIL (score 0.400): reported by test_ui_archive",
    }})["reportAssetCheckEvaluations"]  # fmt: skip
    assert reported["__typename"] == "ReportAssetCheckEvaluationsSuccess", reported
    assert no_fail_latest(ui.dev)[REFUSED] == "FAILED"

    launched = launch_from_group_page(ui)
    assert launched["result"]["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["result"]["backfillId"]
    data = ui.dev.wait_backfill(backfill_id, timeout=300)
    runs = {}
    for r in data["runs"]:
        tags = {t["key"]: t["value"] for t in r["tags"]}
        runs[tags["dagster/asset_partition_range_start"]] = {**r, "tags": tags}
    # Nothing but these runs touched the chain's assets (no schedule or sensor joined in).
    chain = {r["runId"] for r in ui.dev.graphql(RUNS)["runsOrError"]["results"]
             if r["jobName"] in CHAIN_JOBS}  # fmt: skip
    assert chain == ours | {r["runId"] for r in runs.values()}
    failed = [r["runId"] for r in runs.values() if r["tags"]["dagster/asset_partition_range_start"]
              <= REFUSED <= r["tags"]["dagster/asset_partition_range_end"]]  # fmt: skip
    assert len(failed) == 1, runs
    return Backfill(backfill_id, data["status"], launched["request"], runs, failed[0])


def materializations(ui: ArchiveUI, asset: str, query: str = MATERIALIZATIONS,
                     field: str = "assetMaterializations") -> list[dict]:  # fmt: skip
    data = ui.dev.graphql(query, {"key": {"path": [asset]}})["assetOrError"]
    out = []
    for m in data[field]:
        meta = {e["label"]: next((v for k, v in e.items() if k != "label"), None)
                for e in m["metadataEntries"]}  # fmt: skip
        out.append({"partition": m["partition"], "runId": m["runId"], "meta": meta})
    return out


def expected_objects(layout: LakeLayout, partition: str) -> dict[str, Path]:
    day, symbol = partition.split("|")
    return {object_name(PREFIX, layout, p): p for p in archive_files(layout, symbol, day)}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_lineage_is_served_and_drawn(ui: ArchiveUI) -> None:
    nodes = {n["assetKey"]["path"][0]: n for n in ui.dev.graphql(ASSET_NODES)["assetNodes"]}

    def keys(node: dict, field: str) -> set[str]:
        return {k["path"][0] for k in node[field]}

    archive, copy = nodes["daily_archive"], nodes["gcs_archive_copy"]
    assert keys(archive, "dependencyKeys") == UPSTREAM
    assert keys(archive, "dependedByKeys") == {"gcs_archive_copy"}
    assert keys(copy, "dependencyKeys") == {"daily_archive"}
    for node in (archive, copy):
        assert node["groupName"] == "archive"
        assert node["backfillPolicy"]["policyType"] == "SINGLE_RUN"
        dims = node["partitionDefinition"]["dimensionTypes"]
        assert [d["name"] for d in dims] == ["date", "symbol"]

    # The asset page: its name, description, and upstream/downstream lists.
    ui.show("/assets/daily_archive", "Upstream assets", "lineage_asset_page")
    text = ui.text()
    assert "daily_archive" in text and "QA verdict is not FAIL" in text
    upstream, _, downstream = text.partition("Upstream assets")[2].partition("Downstream assets")
    assert {a for a in UPSTREAM if a in upstream} == UPSTREAM
    assert "gcs_archive_copy" in downstream.split("Definition")[0]
    # The group's graph draws both archive assets and their inputs.
    ui.show("/locations/crypto_lake/asset-groups/archive", "gcs_archive_copy", "lineage_group")
    text = ui.text()
    assert all(a in text for a in ["daily_archive", "gcs_archive_copy", *UPSTREAM])
    assert not ui.errors, ui.errors


def test_ui_backfill_archives_only_what_may_be_archived(ui: ArchiveUI, backfill: Backfill):
    # What the click sent: an asset backfill of both assets over the 6 partitions.
    request = backfill.request
    assert {a["path"][0] for a in request["assetSelection"]} == {"daily_archive",
                                                               "gcs_archive_copy"}  # fmt: skip
    assert sorted(request["partitionNames"]) == sorted(PARTITIONS)
    # Green means true: not a plain success, the run holding the refused partition failed.
    assert backfill.status == "COMPLETED_FAILED", backfill
    assert {r["runId"]: r["status"] for r in backfill.runs.values()} == {
        r["runId"]: "FAILURE" if r["runId"] == backfill.failed_run else "SUCCESS"
        for r in backfill.runs.values()
    }
    run_ids = {r["runId"] for r in backfill.runs.values()}

    # Its failure names the refused partition only, and how to override.
    events = ui.dev.graphql(STEP_FAILURES, {"id": backfill.failed_run})["logsForRun"]["events"]
    (failure,) = [e for e in events if e["__typename"] == "ExecutionStepFailureEvent"]
    message = failure["error"]["message"]
    assert failure["stepKey"] == "daily_archive"
    assert REFUSED in message and "no_fail_verdict did not pass" in message
    assert f"{OVERRIDE_TAG}=REASON" in message
    assert not [p for p in ARCHIVED if p in message], message
    meta = {e["label"]: e.get("text") for e in failure["failureMetadata"]["metadataEntries"]}
    assert meta == {"refused_partitions": REFUSED}

    # daily_archive: exactly the other partitions, each archive whole on disk; none for REFUSED.
    archived = materializations(ui, "daily_archive")
    assert sorted(m["partition"] for m in archived) == sorted(ARCHIVED)
    assert {m["runId"] for m in archived} <= run_ids
    for p in ARCHIVED:
        day, symbol = p.split("|")
        status = archive_status(ui.layout, symbol, day, deep=True)
        assert status.complete, (p, status.problems)
    day, symbol = REFUSED.split("|")
    assert not any(ui.layout.archive_sidecar(n, symbol, day).exists() for n in ARCHIVE_DATASETS)

    # gcs_archive_copy: a materialization where, and only where, the bucket holds every file
    # of the partition with the local file's MD5, CRC32C and bytes.
    copied = {m["partition"] for m in materializations(ui, "gcs_archive_copy")}
    assert REFUSED not in copied and copied <= set(ARCHIVED)
    assert {p for p in ARCHIVED if p.startswith(DAYS[1])} <= copied  # the run that succeeded
    names = {b.name for b in ui.bucket.client.list_blobs(BUCKET)}
    for p in PARTITIONS:
        objects = expected_objects(ui.layout, p)
        if p not in copied:
            assert not names & set(objects), (p, sorted(names & set(objects)))
            continue
        for name, path in objects.items():
            blob = ui.bucket.get_blob(name)
            assert blob is not None, name
            assert (blob.md5_hash, blob.crc32c, blob.size) == local_hashes(path), name
            assert blob.download_as_bytes() == path.read_bytes(), name
    assert names == {n for p in copied for n in expected_objects(ui.layout, p)}

    # Whatever hashes and objects the UI does show are the real ones.
    shown = 0
    for m in archived:
        if "raw_sha256" in m["meta"]:
            shown += 1
            assert_archive_metadata_true(ui.layout, m["partition"], m["meta"])
    assert shown, "no daily_archive materialization shows its hashes"

    # The backfill page says so too.
    ui.show(f"/runs/b/{backfill.id}", re.compile(r"\d+% completed"), "backfill_page")
    text = ui.text()
    assert re.search(r"Status\s+Failed", text), text
    assert targeted(text, "daily_archive") == (6, 0, 5, 1)
    assert targeted(text, "gcs_archive_copy") == (6, 0, len(copied), 6 - len(copied))
    # The failed run's page shows the user why and how to override.
    ui.show(f"/runs/{backfill.failed_run}", "partition(s) not archived", "failed_run")
    assert f"{REFUSED}: no_fail_verdict did not pass" in ui.text()
    assert f"{OVERRIDE_TAG}=REASON" in ui.text()
    assert not ui.errors, ui.errors


def targeted(text: str, asset: str) -> tuple[int, ...]:
    """(targeted, in progress, succeeded, failed) of ``asset`` on a backfill page."""
    found = re.search(rf"(?:{asset}\s+)+\d+% completed\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", text)
    assert found, f"no row for {asset} in:\n{text}"
    return tuple(int(g) for g in found.groups())


def assert_archive_metadata_true(layout: LakeLayout, partition: str, meta: dict) -> None:
    """A daily_archive materialization's hashes, ratio and file table match the files."""
    day, symbol = partition.split("|")
    raw = layout.archive_file("raw", symbol, day)
    sidecar = read_sidecar(layout.archive_sidecar("raw", symbol, day))
    assert meta["raw_sha256"] == sha256(raw) == sidecar["sha256"], partition
    assert meta["raw_content_sha256"] == sidecar["content_sha256"], partition
    assert meta["compression_ratio"] == round(sidecar["content_bytes"] / raw.stat().st_size, 2)
    assert meta["compression_ratio"] > 1, partition
    rows = re.findall(r"^\| (\w+) \| \d+ \| \d+ \| ([0-9a-f]{16})… \| (\S+) \|$",
                      meta["files"], flags=re.M)  # fmt: skip
    assert sorted(r[0] for r in rows) == sorted(ARCHIVE_DATASETS), meta["files"]
    for dataset, prefix, file in rows:
        path = layout.root / file
        assert path == layout.archive_file(dataset, symbol, day), file
        assert sha256(path).startswith(prefix), file


def test_partitions_page_shows_archived_and_refused(ui: ArchiveUI, backfill: Backfill) -> None:
    page = ui.page
    ui.show("/assets/daily_archive?view=partitions", re.compile(r"^Materialized \(\d+\)$"),
            "partitions_all")  # fmt: skip
    dates = page.get_by_placeholder(re.compile(r"^ex: \d{4}-\d{2}-\d{2}"))
    dates.fill(f"[{DAYS[0]}...{DAYS[-1]}]")  # the range a user types
    dates.press("Enter")
    page.get_by_text(f"{len(PARTITIONS)} Partitions Selected").wait_for(timeout=30_000)
    for label in ("Failed (1)", "Materialized (5)", "Missing (0)"):
        page.get_by_text(label, exact=True).wait_for(timeout=30_000)

    def open_partition(day: str, symbol: str, ready: str) -> str:
        if not unquote(page.url).split("partition=", 1)[-1].startswith(day):
            page.get_by_text(day, exact=True).first.click()  # clicked again, it deselects
        page.get_by_text(symbol, exact=True).first.click()
        page.get_by_text(f"{day}|{symbol}", exact=True).first.wait_for(timeout=30_000)
        page.get_by_text(ready).first.wait_for(timeout=30_000)
        page.wait_for_timeout(500)
        page.screenshot(path=str(ui.shots / f"partition_{day}_{symbol}.png"), full_page=True)
        return ui.text().split(f"{day}|{symbol}", 1)[1]

    day, symbol = REFUSED.split("|")
    failed_run = backfill.failed_run.split("-")[0]
    panel = open_partition(day, symbol, "did not materialize this asset")
    assert f"Run {failed_run} failed, and did not materialize this asset." in panel
    assert "No metadata entries" in panel
    # An archived partition of the same (failed) run: materialized, with its hashes.
    sha = next(m["meta"]["raw_sha256"] for m in materializations(ui, "daily_archive")
               if m["partition"] == f"{day}|BTCUSDT")  # fmt: skip
    panel = open_partition(day, "BTCUSDT", "compression_ratio")
    assert failed_run in panel and sha in panel and "did not materialize" not in panel
    # One of the run that succeeded.
    ok_run = backfill.runs[f"{DAYS[1]}|{SYMBOLS[0]}"]["runId"].split("-")[0]
    panel = open_partition(DAYS[1], "SOLUSDT", ok_run)
    assert "did not materialize" not in panel and "No metadata entries" not in panel
    assert not ui.errors, ui.errors


def test_each_partition_shows_its_own_hashes_and_objects(ui: ArchiveUI, backfill: Backfill):
    """Every partition's own hashes, files and object URIs are in the UI: a single-partition
    materialization carries them, a ranged run's result has run totals and one observation
    per partition with them."""
    missing = []
    observed = {
        (o["partition"], o["runId"]): o["meta"]
        for o in materializations(ui, "daily_archive", OBSERVATIONS, "assetObservations")
    }
    for m in materializations(ui, "daily_archive"):
        m["meta"] = {**m["meta"], **observed.get((m["partition"], m["runId"]), {})}
        if not {"raw_sha256", "compression_ratio", "files"} <= set(m["meta"]):
            missing.append(f"daily_archive {m['partition']}: {sorted(m['meta'])}")
            continue
        assert_archive_metadata_true(ui.layout, m["partition"], m["meta"])
    for m in materializations(ui, "gcs_archive_copy"):
        table = m["meta"].get("object_table") or ""
        rows = re.findall(r"^\| gs://([^/]+)/(\S+) \| (\d+) \| (\S+) \| (\S+) \| \w+ \|$",
                          table, flags=re.M)  # fmt: skip
        objects = expected_objects(ui.layout, m["partition"])
        if sorted(r[1] for r in rows) != sorted(objects):
            missing.append(f"gcs_archive_copy {m['partition']}: {sorted(m['meta'])}")
            continue
        for bucket, name, size, md5, crc in rows:
            blob = ui.bucket.get_blob(name)
            assert bucket == BUCKET and blob is not None, name
            assert (md5, crc, int(size)) == (blob.md5_hash, blob.crc32c, blob.size), name
    assert not missing, "materializations without their partition's own metadata:\n" + "\n".join(
        missing
    )
