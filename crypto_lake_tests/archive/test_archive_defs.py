"""daily_archive from the real Definitions: only finalized days whose blocking checks passed are
archived, a QA FAIL needs an override that the sidecars record, the archive verifies, and the
finalize path reads a day from its compacted file once its minute files are gone.

Real runs (market_day_job, qa_daily_job, archive_job) on one Dagster instance per module, a
generated lake and a loopback klines server.
"""

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime

import dagster as dg
import pytest

from crypto_lake.defs.archive.assets import OVERRIDE_TAG, refusals
from crypto_lake.defs.market.assets import partition_file
from crypto_lake.defs.market.partitions import CONFIG, range_tags
from crypto_lake.defs.resources import LakeResource
from crypto_lake.lib.archive.day import archive_files, archive_status, object_name, read_sidecar
from crypto_lake.lib.core.paths import ARCHIVE_DATASETS, ARCHIVE_TABLES, LakeLayout
from crypto_lake_tests.archive.gcs_server import (
    GcsTestEnv,
    fresh_bucket,
    running_emulator,
    running_proxy,
)
from crypto_lake_tests.defs import rawgen
from crypto_lake_tests.defs.conftest import DAYS, SYMBOLS, Lake, make_lake

DAY = DAYS[0]


def run(instance: dg.DagsterInstance, job: str, tags: dict[str, str]) -> dg.ExecuteInProcessResult:
    from crypto_lake.definitions import defs

    return (
        defs()
        .resolve_job_def(job)
        .execute_in_process(instance=instance, tags=tags, raise_on_error=False)
    )


@pytest.fixture
def built(tmp_path) -> Iterator[tuple[Lake, dg.DagsterInstance]]:
    generated = {s: rawgen.generate(s, DAYS, per_day=120) for s in SYMBOLS}
    klines = {s: rawgen.reference_klines_1m(sd) for s, sd in generated.items()}
    mp = pytest.MonkeyPatch()
    with rawgen.KlinesServer(klines) as server, dg.instance_for_test() as instance:
        lake = make_lake(tmp_path / "lake", server.url, generated)
        lake.catalog()
        mp.setenv("CRYPTO_LAKE__BINANCE__REST_BASE_URL", lake.klines_url)
        mp.setenv("LAKE_ROOT", str(lake.layout.root))
        assert CONFIG.symbols[: len(SYMBOLS)] == SYMBOLS
        tags = range_tags(DAYS, SYMBOLS)
        assert run(instance, "market_day_job", tags).success
        assert run(instance, "qa_daily_job", tags).success
        yield lake, instance
    mp.undo()


def archived(instance: dg.DagsterInstance) -> dict[str, dict]:
    records = instance.fetch_materializations(dg.AssetKey("daily_archive"), limit=100).records
    return {r.partition_key: r.asset_materialization.metadata for r in reversed(records)}


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_archive_flow(built, monkeypatch, tmp_path):
    """One instance through the whole story (a Dagster instance per test)."""
    archives_checked_days_and_refuses_a_qa_fail(*built)
    a_damaged_archive_is_not_counted(*built)
    unfinished_or_unchecked_days_are_refused(*built)
    with (
        running_emulator() as emulator,
        running_proxy(emulator.port) as proxy,
        fresh_bucket(emulator, proxy, monkeypatch) as env,
    ):
        copies_are_verified_retried_and_not_repeated(*built, env, monkeypatch)
        restore_job_rebuilds_the_day_on_a_fresh_lake(*built, tmp_path / "fresh")
        retention_then_finalize_from_the_compacted_day(*built, monkeypatch)
    an_open_file_refuses_only_its_partition(*built)
    a_verdict_older_than_the_bars_is_not_enough(*built)
    disk_headroom_warns_and_fails_at_its_thresholds(built[1], monkeypatch)


def archives_checked_days_and_refuses_a_qa_fail(lake: Lake, instance: dg.DagsterInstance):
    btc, eth = (f"{DAY}|{s}" for s in SYMBOLS)
    # ETHUSDT's latest QA verdict for the day is FAIL (what a critical QA finding records)
    instance.report_runless_asset_event(
        dg.AssetCheckEvaluation(
            asset_key=dg.AssetKey("qa_verdicts"), check_name="no_fail_verdict", passed=False,
            partition=eth, metadata={"skipped": dg.MetadataValue.bool(False)},
            description="verdict FAIL (score 0.400): test",
        )
    )  # fmt: skip
    result = run(instance, "archive_job", range_tags([DAY], SYMBOLS))
    assert not result.success  # the refused partition fails the run, named
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert eth in str(failure.event_specific_data.error) and btc not in str(
        failure.event_specific_data.error
    )
    done = archived(instance)
    assert set(done) == {btc}
    meta = done[btc]
    assert meta["compression_ratio"].value > 1 and meta["archived_files"].value == 6
    status = archive_status(lake.layout, SYMBOLS[0], DAY, deep=True)
    assert status.complete, status.problems
    for name in ARCHIVE_TABLES:  # byte copies of the partition files
        assert sha(lake.layout.archive_file(name, SYMBOLS[0], DAY)) == sha(
            partition_file(lake.layout, name, SYMBOLS[0], DAY)
        )
    raw = read_sidecar(lake.layout.archive_sidecar("raw", SYMBOLS[0], DAY))
    assert raw["rows"] == sum(
        1 for p in lake.layout.raw_day_dir(SYMBOLS[0], DAY).iterdir() for _ in p.open("rb")
    )
    assert raw["qa_verdict"]["verdict"] in ("PASS", "REVIEW") and raw["qa_override"] is None
    assert not lake.layout.archive_sidecar("raw", SYMBOLS[1], DAY).exists()

    # with the override tag the FAIL partition is archived and every sidecar says why
    tags = {**range_tags([DAY], SYMBOLS[1:]), OVERRIDE_TAG: "reviewed by hand: feed glitch"}
    assert run(instance, "archive_job", tags).success
    assert eth in archived(instance)
    for name in ARCHIVE_DATASETS:
        side = read_sidecar(lake.layout.archive_sidecar(name, SYMBOLS[1], DAY))
        assert side["qa_override"]["reason"] == "reviewed by hand: feed glitch"


def intact(instance: dg.DagsterInstance, days: list[str]) -> dict[str, dg.AssetCheckEvaluation]:
    """archive_intact's result per partition, from a run of archive_verify_job."""
    result = run(instance, "archive_verify_job", range_tags(days, SYMBOLS))
    return {e.partition: e for e in result.get_asset_check_evaluations()}


def a_damaged_archive_is_not_counted(lake: Lake, instance: dg.DagsterInstance):
    """A truncated table file or a flipped byte in the raw file: the archive does not verify,
    and archive_intact fails for that partition in the UI; archive_job repairs it."""
    btc, eth = (f"{DAY}|{s}" for s in SYMBOLS)
    results = intact(instance, [DAY])
    assert results[btc].passed and results[eth].passed
    path = lake.layout.archive_file("bars_1s", SYMBOLS[0], DAY)
    good = path.read_bytes()
    try:
        path.write_bytes(good[:-10])  # truncated
        status = archive_status(lake.layout, SYMBOLS[0], DAY)
        assert not status.complete and any(p.startswith("bars_1s:") for p in status.problems)
        results = intact(instance, [DAY])
        assert not results[btc].passed and "bars_1s" in results[btc].description
        assert results[btc].severity == dg.AssetCheckSeverity.ERROR and results[eth].passed
    finally:
        path.write_bytes(good)
    raw = lake.layout.archive_file("raw", SYMBOLS[0], DAY)
    data = bytearray(raw.read_bytes())
    data[len(data) // 2] ^= 0xFF
    raw.write_bytes(bytes(data))
    assert not archive_status(lake.layout, SYMBOLS[0], DAY, deep=True).complete
    assert not intact(instance, [DAY])[btc].passed
    assert run(instance, "archive_job", range_tags([DAY], SYMBOLS[:1])).success  # repaired
    assert archive_status(lake.layout, SYMBOLS[0], DAY, deep=True).complete
    never = intact(instance, [DAYS[1]])[f"{DAYS[1]}|{SYMBOLS[0]}"]
    assert not never.passed and never.severity == dg.AssetCheckSeverity.WARN  # not archived


def unfinished_or_unchecked_days_are_refused(_lake: Lake, instance: dg.DagsterInstance):
    today = datetime.now(UTC).date().isoformat()
    reasons = refusals(instance, f"{today}|{SYMBOLS[0]}", None, 0)
    assert reasons and "not over" in reasons[0]
    never_built = refusals(instance, f"2024-03-05|{SYMBOLS[0]}", None, 10**18)
    # a closed day never built nor checked: refused, and the reasons say what to run
    assert any("trades was not built after the day ended" in r for r in never_built)
    assert any("r1_ohlc_order (R1) has no result" in r for r in never_built)
    assert any("no_fail_verdict has no result" in r for r in never_built)


def copies_are_verified_retried_and_not_repeated(
    lake: Lake, instance: dg.DagsterInstance, env: GcsTestEnv, monkeypatch
):
    """gcs_archive_copy through dagster-gcp's client, pointed at the emulator by
    configuration (archive.bucket, STORAGE_EMULATOR_HOST) behind a proxy that fails and
    corrupts requests: a 503 is retried, a corrupted upload is detected and uploaded again,
    and a second run uploads nothing. Only BTCUSDT is copied."""
    from crypto_lake.defs.archive.automation import archive_copies

    def sensor(cursor: str | None) -> dg.SensorResult | dg.SkipReason:
        resources = {"lake": LakeResource(lake_root=str(lake.layout.root))}
        with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as c:
            return archive_copies(c)

    assert isinstance(sensor(None), dg.SkipReason)  # no bucket: idle
    monkeypatch.setenv("CRYPTO_LAKE__ARCHIVE__BUCKET", env.bucket_name)
    monkeypatch.setenv("CRYPTO_LAKE__ARCHIVE__BACKOFF_BASE_SECONDS", "0.01")
    asked = sensor(None)  # every archived partition, in its own copy run
    (request,) = asked.run_requests
    assert request.job_name == "gcs_copy_job" and request.tags == {
        **range_tags([DAY], SYMBOLS), "crypto_lake/trigger": "copy"}  # fmt: skip
    assert isinstance(sensor(asked.cursor), dg.SkipReason)  # nothing new, retry not due
    tags = range_tags([DAY], SYMBOLS[:1])  # only BTCUSDT is copied here
    env.proxy.fail_next(1, status=503)
    env.proxy.corrupt_uploads(1)
    result = run(instance, "gcs_copy_job", tags)
    assert result.success
    assert env.proxy.count("upload", fault="corrupt_upload") == 1
    assert env.proxy.count(fault="status") == 1
    assert env.proxy.count("upload") >= 13  # 12 objects, one of them twice
    records = instance.fetch_materializations(dg.AssetKey("gcs_archive_copy"), limit=10).records
    (record,) = records
    meta = record.asset_materialization.metadata
    assert record.partition_key == f"{DAY}|{SYMBOLS[0]}"
    assert meta["objects"].value == 12 and meta["uploaded"].value == 12
    for path in archive_files(lake.layout, SYMBOLS[0], DAY):  # the bucket holds the bytes
        name = object_name("crypto-lake", lake.layout, path)
        assert env.bucket.blob(name).download_as_bytes() == path.read_bytes()
        assert name in meta["object_table"].value
    assert not [b.name for b in env.client.list_blobs(env.bucket_name) if "incoming" in b.name]
    env.proxy.reset()
    assert run(instance, "archive_job", tags).success  # archived again: unchanged
    assert run(instance, "gcs_copy_job", tags).success
    assert env.proxy.count("upload") == 0  # second run: everything already there
    latest = instance.fetch_materializations(dg.AssetKey("gcs_archive_copy"), limit=1).records
    assert latest[0].asset_materialization.metadata["already_present"].value == 12


def restore_job_rebuilds_the_day_on_a_fresh_lake(lake: Lake, instance, fresh):
    """The restore job (launchpad config: day, symbols) on an empty lake root: every table
    rebuilt from the bucket byte-identical to the original lake's."""
    from crypto_lake.definitions import defs

    job = defs().resolve_job_def("restore_job")
    config = {"day": DAY, "symbols": SYMBOLS[:1]}
    result = job.execute_in_process(
        instance=instance, raise_on_error=False,
        run_config={"ops": {"restore_from_bucket": {"config": config}}},
        resources={"lake": LakeResource(lake_root=str(fresh))},
    )  # fmt: skip
    assert result.success, result.all_events
    fresh_layout = LakeLayout(fresh)
    for name in ARCHIVE_TABLES:
        assert sha(partition_file(fresh_layout, name, SYMBOLS[0], DAY)) == sha(
            partition_file(lake.layout, name, SYMBOLS[0], DAY)
        )
    report = result.output_for_node("restore_from_bucket")
    assert report == 1


def retention_then_finalize_from_the_compacted_day(lake: Lake, instance, monkeypatch):
    """With a bucket configured, retention deletes the minute files of the archived and
    copied day only (ETHUSDT's day is archived but not copied; other folders are not
    archived); a rebuild of the day then reads its compacted file and gives the same bytes."""
    symbol = SYMBOLS[0]
    assert archive_status(lake.layout, symbol, DAY, deep=True).complete
    before = {n: sha(partition_file(lake.layout, n, symbol, DAY))
              for n in ("trades", "quotes", "bars_1s", "bars_1m")}  # fmt: skip
    raw_root = lake.layout.raw_root
    files_before = {p for p in raw_root.rglob("part-*")}
    monkeypatch.setenv("CRYPTO_LAKE__ARCHIVE__RETENTION_DAYS", "1")
    result = run(instance, "raw_retention_job", {})
    assert result.success
    deleted = files_before - {p for p in raw_root.rglob("part-*")}
    assert deleted and {(p.parent.parent.name, p.parent.name) for p in deleted} == {(symbol, DAY)}
    assert lake.layout.raw_day_dir(SYMBOLS[1], DAY).is_dir()
    kept = result.output_for_node("delete_archived_raw")
    assert kept == len(deleted)
    assert not lake.layout.raw_day_dir(symbol, DAY).exists()
    for n in before:
        partition_file(lake.layout, n, symbol, DAY).unlink()
    result = run(instance, "market_day_job", range_tags([DAY], [symbol]))
    assert result.success
    assert {n: sha(partition_file(lake.layout, n, symbol, DAY)) for n in before} == before
    mats = [e.event_specific_data.materialization
            for e in result.get_asset_materialization_events()]  # fmt: skip
    trades = [m for m in mats if m.asset_key.to_user_string() == "trades"]
    # the compacted day, and the next day's first part (the day's last trades)
    assert trades and trades[0].metadata["raw_files"].value <= 2


def an_open_file_refuses_only_its_partition(lake: Lake, instance: dg.DagsterInstance):
    """A day folder still being written (an .open part) is not archived; the run fails naming
    it, and the other symbol of that day is archived."""
    day = DAYS[1]
    opened = lake.layout.raw_day_dir(SYMBOLS[0], day) / "part-999999.jsonl.open"
    opened.write_bytes(b"")
    result = run(instance, "archive_job", range_tags([day], SYMBOLS))
    opened.unlink()
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "still being written" in str(failure.event_specific_data.error)
    assert set(archived(instance)) >= {f"{day}|{SYMBOLS[1]}"}
    assert f"{day}|{SYMBOLS[0]}" not in archived(instance)


def a_verdict_older_than_the_bars_is_not_enough(lake: Lake, instance: dg.DagsterInstance):
    """Bars rebuilt after the QA verdict (a refresh or finalization after the hourly QA): the
    verdict is not about them, so the partition waits for QA to run again."""
    key, tags = f"{DAYS[1]}|{SYMBOLS[1]}", range_tags([DAYS[1]], SYMBOLS[1:])
    assert refusals(instance, key, None, 10**18) == []
    assert run(instance, "market_day_job", tags).success
    assert any("predates the latest bars_1s" in r for r in refusals(instance, key, None, 10**18))
    assert run(instance, "qa_daily_job", tags).success
    assert refusals(instance, key, None, 10**18) == []


def disk_headroom_warns_and_fails_at_its_thresholds(instance, monkeypatch):
    def check() -> dg.AssetCheckEvaluation:
        result = run(instance, "disk_headroom_job", {})
        (evaluation,) = result.get_asset_check_evaluations()
        return evaluation

    ok = check()
    used = ok.metadata["used_fraction"].value
    assert 0 < used < 1 and ok.passed == (used < 0.8)
    monkeypatch.setenv("CRYPTO_LAKE__ARCHIVE__DISK_WARN_FRACTION", str(used / 2))
    warn = check()
    assert not warn.passed and warn.severity == dg.AssetCheckSeverity.WARN
    monkeypatch.setenv("CRYPTO_LAKE__ARCHIVE__DISK_FAIL_FRACTION", str(used / 2))
    fail = check()
    assert not fail.passed and fail.severity == dg.AssetCheckSeverity.ERROR
