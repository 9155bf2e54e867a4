"""The archive tier (SPEC §9): compacted dailies, their verified GCS copies, restore.

``daily_archive`` archives a (date, symbol) partition only when all of this is true, and says
which is not otherwise (the partition is then not materialized and the run fails, listing
it): the day is over and its tables were built after it ended (finalized); every blocking
check of the partition (R1, R2, R4, no conflicting trade ids) has a latest result that
passed; and ``no_fail_verdict`` passed for it, or the run carries the override tag
``crypto_lake/archive_qa_override`` (its value, the reason, is recorded in every sidecar).
The files and sidecars are described in ``crypto_lake.lib.archive.day``; a partition counts as
archived only when every file matches its sidecar, re-read after writing.

``gcs_archive_copy`` uploads a partition's archive files, then its sidecars, to the configured
bucket (``archive.bucket``) through dagster-gcp's ``GCSResource`` client, each verified by the
MD5 and CRC32C the server reports (``crypto_lake.lib.archive.gcs``). An archive that does not
verify locally is never uploaded.
"""

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow.compute as pc
import pyarrow.parquet as pq
from dagster_gcp import GCSResource

from crypto_lake.defs.market.assets import (
    MARKET_POOL,
    PREVIOUS_CLOSE,
    SINGLE_RUN,
    partition_file,
    previous_close_text,
)
from crypto_lake.defs.market.emit import materialize_partitions
from crypto_lake.defs.market.partitions import (
    market_partitions,
    partition_pairs,
    run_partition_keys,
)
from crypto_lake.defs.market.quality import gates_not_passed, latest_check
from crypto_lake.defs.market.stats import load_outage_intervals
from crypto_lake.defs.resources import LakeResource
from crypto_lake.lib.archive import gcs
from crypto_lake.lib.archive.compact import CompactError
from crypto_lake.lib.archive.day import archive_day, archive_files, archive_status, object_name
from crypto_lake.lib.core.paths import ARCHIVE_TABLES, RAW_ARCHIVE, LakeLayout
from crypto_lake.lib.market.parallel import map_partitions
from crypto_lake.lib.qa import pipeline as qa
from crypto_lake.lib.raw.catalog import day_bounds_us

GROUP = "archive"
OVERRIDE_TAG = "crypto_lake/archive_qa_override"
# Tables whose latest materialization must postdate the day's end (built from the whole day).
FINAL_TABLES = ("trades", "bars_1s", "bars_1m", "coverage")


def _latest(instance: dg.DagsterInstance, asset: str, key: str):
    result = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[key]), limit=1
    )
    return result.records[0] if result.records else None


def _latest_materialization_us(instance: dg.DagsterInstance, asset: str, key: str) -> int | None:
    record = _latest(instance, asset, key)
    return None if record is None else int(record.timestamp * 1e6)


def _previous_close(instance: dg.DagsterInstance, key: str) -> str | None:
    """The previous day's last price the partition's bars_1s were built with (its metadata):
    a restore rebuilds them with the same value."""
    record = _latest(instance, "bars_1s", key)
    value = None if record is None else record.asset_materialization.metadata.get(PREVIOUS_CLOSE)
    text = None if value is None else str(value.value)
    return None if text in (None, previous_close_text(None)) else text


def refusals(instance: dg.DagsterInstance, key: str, override: str | None,
             now_us: int) -> list[str]:  # fmt: skip
    """Why partition ``key`` may not be archived (empty: it may)."""
    day = key.split("|", 1)[0]
    day_end = day_bounds_us(day)[1]
    if now_us < day_end:
        return [f"{day} is not over yet: only closed days are archived"]
    reasons = []
    built = {table: _latest_materialization_us(instance, table, key) for table in FINAL_TABLES}
    for table, at in built.items():
        if at is None or at < day_end:
            reasons.append(f"{table} was not built after the day ended: finalize {day} first "
                           "(market_day_job for the partition)")  # fmt: skip
    reasons += gates_not_passed(instance, key)
    latest = latest_check(instance, "qa_verdicts", "no_fail_verdict", key)
    bars_at = built["bars_1s"]
    if latest is None:
        reasons.append("no_fail_verdict has no result for this partition: run the QA assets")
    elif bars_at is not None and latest[2] * 1e6 < bars_at:
        reasons.append("no_fail_verdict predates the latest bars_1s: run the QA assets for the "
                       "day again (qa_daily_job) so the verdict is about these bars")  # fmt: skip
    elif not latest[0].passed and not (override and _is_fail_verdict(latest[0])):
        reasons.append(f"no_fail_verdict did not pass ({latest[0].description}); to archive "
                       f"anyway, launch with the tag {OVERRIDE_TAG}=REASON")  # fmt: skip
    return reasons


def _is_fail_verdict(evaluation: dg.AssetCheckEvaluation) -> bool:
    """An override lets a FAIL verdict through, never a skipped check (no verdict at all)."""
    skipped = evaluation.metadata.get("skipped")
    return skipped is not None and skipped.value is False


def _context(layout: LakeLayout, symbol: str, day: str, run_id: str, override: str | None,
             previous_close: str | None) -> dict[str, Any]:  # fmt: skip
    """What every sidecar of the partition records besides its own file."""
    intervals = load_outage_intervals(layout, symbol, day)
    verdicts = qa.read_qa(layout, "verdicts", day, [symbol])
    day_rows = verdicts.filter(pc.equal(verdicts["scope"], "day")).to_pylist()
    verdict = day_rows[-1] if day_rows else None
    return {
        "run_id": run_id,
        "qa_verdict": None if verdict is None else {
            "verdict": verdict["verdict"], "score": float(verdict["score"]),
            "critical": int(verdict["critical"]), "major": int(verdict["major"]),
            "reason": verdict["reason"],
        },
        "qa_override": None if not override else {"reason": override, "run_id": run_id},
        "coverage": _coverage_summary(partition_file(layout, "coverage", symbol, day)),
        "gaps": {
            "outage_intervals": sum(1 for *_, k in intervals if k == "outage"),
            "unrecorded_intervals": sum(1 for *_, k in intervals if k != "outage"),
        },
        "outage_intervals": [[int(a), int(b), k] for a, b, k in intervals],
        "previous_close": previous_close,
    }  # fmt: skip


_SECONDS = ("seconds_live", "seconds_repaired", "seconds_archive", "seconds_outage",
            "seconds_unrecorded", "seconds_pending")  # fmt: skip


def _coverage_summary(path: Path) -> dict[str, Any]:
    present = set(pq.read_schema(path).names)  # a v1 coverage file has no seconds_archive
    table = pq.read_table(path, columns=[c for c in _SECONDS if c in present])
    sums = {c: int(pc.sum(table[c]).as_py() or 0) if c in present else 0 for c in _SECONDS}
    total = sum(sums.values())
    pct = {f"pct_{c[8:]}": round(100 * v / total, 4) if total else None for c, v in sums.items()}
    return {"minutes": table.num_rows, **sums, **pct}


def _archive_metadata(layout: LakeLayout, result) -> dict[str, Any]:
    raw = result.sidecars[RAW_ARCHIVE]
    total = sum(m["bytes"] for m in result.sidecars.values())
    rows = [{"dataset": n, "rows": m["rows"], "bytes": m["bytes"], "sha256": m["sha256"][:16],
             "file": str(result.files[n].relative_to(layout.root))}
            for n, m in result.sidecars.items()]  # fmt: skip
    table = "\n".join(["| dataset | rows | bytes | sha256 | file |", "|---|---|---|---|---|"]
                      + [f"| {r['dataset']} | {r['rows']} | {r['bytes']} | {r['sha256']}… | "
                         f"{r['file']} |" for r in rows])  # fmt: skip
    return {
        "dagster/uri": dg.MetadataValue.path(str(result.files[RAW_ARCHIVE])),
        "archived_files": len(result.files),
        "archive_bytes": total,
        "raw_lines": raw["rows"],
        "raw_parts": len(raw["parts"]),
        "raw_bytes_uncompressed": raw["content_bytes"],
        "raw_bytes_as_recorded": raw["input_bytes"],
        "raw_compacted_bytes": raw["bytes"],
        "compression_ratio": round(raw["content_bytes"] / raw["bytes"], 2) if raw["bytes"] else 0,
        "raw_content_sha256": raw["content_sha256"],
        "raw_sha256": raw["sha256"],
        "qa_verdict": (raw.get("qa_verdict") or {}).get("verdict", "none"),
        "qa_override": (raw.get("qa_override") or {}).get("reason", ""),
        "files": dg.MetadataValue.md(table),
        "rewritten": ", ".join(result.written) or "none: verified unchanged",
        "seconds": round(result.seconds, 2),
    }


@dg.asset(
    deps=[*ARCHIVE_TABLES, "qa_verdicts"],
    partitions_def=market_partitions,
    backfill_policy=SINGLE_RUN,
    group_name=GROUP,
    pool=MARKET_POOL,  # reads the market files: never while a market run rewrites them
    kinds={"parquet", "zstd"},
    output_required=False,  # a refused partition gets no materialization
    description="One closed (date, symbol) compacted and copied under archive/: the raw lines in "
    "one zstd file (line count and content SHA256), trades, quotes, bars_1s, bars_1m and coverage "
    "as one Parquet file each, and a .meta.json sidecar per file. Only when the day was finalized, "
    "its blocking checks passed and its QA verdict is not FAIL (or the run has the tag "
    f"{OVERRIDE_TAG}=REASON, recorded in the sidecars).",
)
def daily_archive(context: dg.AssetExecutionContext, lake: LakeResource):
    layout = lake.layout
    tags = context.run.tags if context.run else {}
    override = tags.get(OVERRIDE_TAG) or None
    now_us = time.time_ns() // 1000
    per: dict[str, dict[str, Any]] = {}
    refused: dict[str, list[str]] = {}
    jobs = []
    for day, symbol in partition_pairs(run_partition_keys(context)):
        key = f"{day}|{symbol}"
        reasons = refusals(context.instance, key, override, now_us)
        if reasons:
            refused[key] = reasons
            context.log.error(f"daily_archive {key} not archived: " + "; ".join(reasons))
            continue
        ctx = _context(layout, symbol, day, context.run.run_id, override,
                       _previous_close(context.instance, key))  # fmt: skip
        jobs.append((key, symbol, day, ctx))

    def archive(job: tuple[str, str, str, dict[str, Any]]):
        """Archive and re-read one partition: (result, problems)."""
        _, symbol, day, ctx = job
        try:  # zstd on 2 threads, 2 partitions at a time: fastest measured (bench_archive)
            result = archive_day(layout, symbol, day, context=ctx, zstd_threads=2)
        except (CompactError, OSError) as exc:  # an open or unreadable part, a missing table
            return None, [str(exc)]
        return result, archive_status(layout, symbol, day, deep=True).problems

    for (key, *_), (result, problems) in map_partitions(archive, jobs):
        if result is None or problems:
            refused[key] = problems
            context.log.error(f"daily_archive {key} not archived: " + "; ".join(problems))
            continue
        per[key] = _archive_metadata(layout, result)
        context.log.info(f"{key}: archived {per[key]['archive_bytes']} bytes, raw "
                         f"{per[key]['compression_ratio']}x smaller, verified")  # fmt: skip
    numeric = ["archived_files", "archive_bytes", "raw_lines", "raw_compacted_bytes"]
    # gcs_archive_copy in the same run needs the step's output: a ranged result (run totals),
    # with every partition's whole metadata (hashes, files) in its own observation.
    observed = {k for meta in per.values() for k in meta if not k.startswith("dagster/")}
    yield from materialize_partitions(context, "daily_archive", per, numeric, observed=observed)
    if refused:
        lines = "\n".join(f"- {k}: {'; '.join(r)}" for k, r in sorted(refused.items()))
        raise dg.Failure(
            description=f"{len(refused)} partition(s) not archived ({len(per)} archived):\n{lines}",
            metadata={"refused_partitions": dg.MetadataValue.text(", ".join(sorted(refused)))},
        )


def archive_bucket(lake: LakeResource):
    """The configured bucket (google.cloud.storage), through dagster-gcp's GCSResource; None
    without ``archive.bucket``. Made on use, not as a run resource: dagster-gcp's resource
    makes its client (and asks for credentials) when a run starts, also when no bucket is
    configured."""
    cfg = lake.config.archive
    if not cfg.bucket:
        return None
    return gcs.bucket_from(GCSResource(project=cfg.gcs_project).get_client(), cfg.bucket)


def copy_options(lake: LakeResource) -> dict[str, Any]:
    a = lake.config.archive
    return {"attempts": a.upload_attempts, "backoff_seconds": a.backoff_base_seconds,
            "backoff_cap_seconds": a.backoff_cap_seconds,
            "timeout_seconds": a.timeout_seconds}  # fmt: skip


@dg.asset(
    deps=["daily_archive"],
    partitions_def=market_partitions,
    backfill_policy=SINGLE_RUN,
    group_name=GROUP,
    kinds={"gcs"},
    output_required=False,
    retry_policy=dg.RetryPolicy(max_retries=2, delay=60),
    description="A partition's archive files, then their sidecars, uploaded to the bucket "
    "`archive.bucket` (objects `{prefix}/archive/...`), each verified by the MD5 and CRC32C the "
    "server reports; objects already there with the same hashes are not uploaded again. An "
    "archive that does not verify locally is not uploaded (the run fails, naming it).",
)
def gcs_archive_copy(context: dg.AssetExecutionContext, lake: LakeResource):
    layout, cfg = lake.layout, lake.config.archive
    bucket = archive_bucket(lake)
    if bucket is None:
        context.log.warning("archive.bucket is not set: the archive stays local, nothing copied")
        return
    per: dict[str, dict[str, Any]] = {}
    failed: dict[str, str] = {}
    for day, symbol in partition_pairs(run_partition_keys(context)):
        key = f"{day}|{symbol}"
        status = archive_status(layout, symbol, day, deep=True)
        if not status.complete:
            failed[key] = "local archive incomplete or damaged: " + "; ".join(status.problems)
            context.log.error(f"gcs_archive_copy {key}: {failed[key]}")
            continue
        copies = []
        try:
            for path in archive_files(layout, symbol, day):
                name = object_name(cfg.prefix, layout, path)
                copies.append(gcs.copy_file(bucket, path, name, log=context.log,
                                            **copy_options(lake)))  # fmt: skip
        except gcs.CopyError as exc:
            failed[key] = str(exc)
            context.log.error(f"gcs_archive_copy {key}: {exc}")
            continue
        per[key] = _copy_metadata(copies)
    numeric = ["objects", "uploaded", "already_present", "bytes"]
    yield from materialize_partitions(context, "gcs_archive_copy", per, numeric, separately=True)
    if failed:
        lines = "\n".join(f"- {k}: {r}" for k, r in sorted(failed.items()))
        raise dg.Failure(description=f"{len(failed)} partition(s) not copied:\n{lines}")


def _copy_metadata(copies: list) -> dict[str, Any]:
    rows = "\n".join(f"| {c.uri} | {c.size} | {c.md5} | {c.crc32c} | {c.action} |" for c in copies)
    return {
        "dagster/uri": dg.MetadataValue.url(copies[0].uri),  # the raw lines' object
        "objects": len(copies),
        "uploaded": sum(c.action == "uploaded" for c in copies),
        "already_present": sum(c.action == "present" for c in copies),
        "bytes": sum(c.size for c in copies),
        "verified_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "object_table": dg.MetadataValue.md(
            "| object | bytes | md5 | crc32c | action |\n|---|---|---|---|---|\n" + rows
        ),
    }
