"""Benchmark: months of Dagster history — event-log rows and database size per recorded day,
projected to a year, and how fast the asset, partitions and checks pages answer at that size.

    ./dev bench bench_history [--workdir /tmp/bench_history] [--days 14] [--history-days 7]
                              [--backends sqlite,postgres] [--repeats 5] [--baseline]

Three stages:

1. Sample (measured, not guessed). A temp lake of generated raw files (the tests' rawgen) for
   one day and the first 3 configured symbols; a SQLite instance (the top-level dagster.yaml).
   The raw files are recorded as the refresh sensor records them (``raw_batch``: one
   materialization per partition per pass) and the real ``market_day_job`` runs over the first
   2, then the first 3 partitions, with the range tags the refresh sensor gives it. The event-
   log rows of the two runs, counted by type, give rows per run and per partition (a linear fit
   through the two runs; a 1-partition run writes no per-partition observations, so it is not on
   the line), scaled to a recorded day: 288 refreshes (refresh_interval_seconds 300) of 13
   partitions, each pass recording one raw event per partition. For comparison the report also
   prints the design before (one raw event per sealed file, 13 x 1,440, and no history
   retention). Other sources (finalize, QA, archive, macro, health) are listed from their
   schedules, not measured.
2. Synthetic history. ``--days`` recorded days (ending yesterday) of exactly those rows, cloned
   from the sample's own rows (day, symbol, run id and time rewritten) and batch-inserted into
   the storage's tables: event_logs, asset_event_tags, asset_check_executions; then one real
   refresh's asset events go through ``store_event`` so asset_keys is current. (a) SQLite: the
   cross-run index shard (index.db) gets every asset and check event; the per-run shards
   (history/runs/<run>.db, one file per run) are projected from the sample's bytes per row, not
   written. (b) Postgres (deploy/dagster.yaml on a loopback cluster): everything, run events
   included, in its one event_logs table. Database bytes per day: SQLite file sizes,
   ``pg_database_size``. History retention (``crypto_lake/defs/ops/history.py``) is modelled:
   the last ``--history-days`` days are whole, the older ones keep what the daily pruning
   keeps, the day's raw events and its last run (the others were replaced by it). A year is
   ``history-days`` whole days plus the rest as retained days, each measured.
3. UI at that size: first the pass of the daemon's ``check_status_checkpoint`` sensor (every
   check's status per partition computed and stored, ``crypto_lake/storage.py``; timed from
   nothing and once more), then ``dagster-webserver`` on each instance (loopback, the repo's
   workspace.yaml)
   and the GraphQL queries behind the asset page, the partitions page and the checks page,
   for raw_market_events, bars_1s and one check on bars_1s: first call (cold, it builds the
   partition status cache) and the median of ``--repeats`` after it, against the 2 s target;
   then the pages themselves in headless Chromium (Debian's chromium through Playwright, as
   the UI tests drive it), until each shows its answer, with the slowest GraphQL requests of
   each page's first visit and last reload (Chromium's timings). ``--baseline`` times the
   queries and pages once more on a webserver without the UI speed-ups (the storage's memos
   of check states and latest executions, and ``crypto_lake/ui_partition_keys.py``), in the
   same run.
   The history is ``--days`` long, not a year: the printed year figures are projections, the
   query times are measured at the written size (run with --days 30 or more to see the trend).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from contextlib import redirect_stderr
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SAMPLE_DAY = "2024-03-01"
SYMBOLS_PER_DAY = 13
RAW_FILES_PER_SYMBOL = 1440  # one sealed file a minute (collector.rotate_seconds 60)
TARGET_S = 2.0
ASSET_TYPES = {"ASSET_MATERIALIZATION", "ASSET_MATERIALIZATION_PLANNED", "ASSET_OBSERVATION",
               "ASSET_FAILED_TO_MATERIALIZE", "ASSET_CHECK_EVALUATION",
               "ASSET_CHECK_EVALUATION_PLANNED"}  # fmt: skip
# Placeholders a template row carries where a synthetic row gets its own value.
DAY_MARK, SYM_MARK, RUN_MARK, TS_MARK = "\x00DAY\x00", "\x00SYM\x00", "\x00RUN\x00", "\x00TS\x00"


# --- stage 1: the measured sample -------------------------------------------------------------
@dataclass
class Sample:
    """What two real refreshes and the raw sensor wrote, as rows of the SQLite event log:
    fitted counts by event type and the template rows stage 2 clones."""

    home: Path
    lake: Path
    symbols: list[str]
    refresh_interval_s: int
    per_run: Counter = field(default_factory=Counter)  # rows by type, fitted
    per_partition: Counter = field(default_factory=Counter)
    row_bytes: dict[str, float] = field(default_factory=dict)  # mean serialized event bytes
    raw_row: dict | None = None  # template rows (event_logs columns + tags), see _templates
    partition_rows: list[dict] = field(default_factory=list)
    run_rows: list[dict] = field(default_factory=list)
    check_rows: list[dict] = field(default_factory=list)
    run_index_rows: list[dict] = field(default_factory=list)
    run_check_rows: list[dict] = field(default_factory=list)
    shard_bytes_per_row: float = 0.0
    sample_s: float = 0.0

    def per_day(self, runs: int | None = None, raw_per_file: bool = False) -> dict[str, int]:
        """Rows a recorded day holds, by source and type: with ``runs`` refresh runs (default:
        all of the day's; 1 once history retention has pruned it). ``raw_per_file``: the
        earlier design, one raw event per sealed file."""
        passes = 86400 // self.refresh_interval_s
        runs = passes if runs is None else runs
        raw = RAW_FILES_PER_SYMBOL if raw_per_file else passes
        out = {"raw events ASSET_MATERIALIZATION": SYMBOLS_PER_DAY * raw}
        for kind in sorted(set(self.per_run) | set(self.per_partition)):
            n = self.per_run[kind] + self.per_partition[kind] * SYMBOLS_PER_DAY
            if n > 0:
                out[f"market_day_job {kind}"] = n * runs
        return out


def _env_for(lake: Path, klines_url: str) -> None:
    """The process environment the tests give Dagster: a temp lake, klines on loopback, no
    config file, Yahoo on a closed loopback port (nothing here may reach the internet)."""
    os.environ.pop("CRYPTO_LAKE_CONFIG", None)
    os.environ["LAKE_ROOT"] = str(lake)
    os.environ["CRYPTO_LAKE__BINANCE__REST_BASE_URL"] = klines_url
    from crypto_lake_tests.e2e.dagster_harness import OFFLINE

    os.environ.update(OFFLINE)


def _new_home(path: Path, yaml_src: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    shutil.copy(yaml_src, path / "dagster.yaml")
    return path


def _rows(db: Path, sql: str, args=()) -> list[dict]:
    """Rows of a SQLite shard as dicts (read straight from the file the storage wrote)."""
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute(sql, args)]
    finally:
        con.close()


def _templatize(text: str | None, day: str, symbol: str, run_id: str) -> str | None:
    """``text`` with the sample's day, symbol and run id (and the JSON timestamp) marked."""
    if text is None:
        return None
    text = text.replace(run_id, RUN_MARK).replace(day, DAY_MARK).replace(symbol, SYM_MARK)
    return re.sub(r'"timestamp": [0-9.e+]+', f'"timestamp": {TS_MARK}', text)


def _template(row: dict, day: str, symbol: str, run_id: str) -> dict:
    return {k: _templatize(v, day, symbol, run_id) if isinstance(v, str) else v
            for k, v in row.items()}  # fmt: skip


def run_sample(work: Path) -> Sample:
    """Stage 1: raw events and two real market_day_job runs in a SQLite instance."""
    from crypto_lake_tests.defs import rawgen

    t0 = time.perf_counter()
    lake_root = work / "sample_lake"
    shutil.rmtree(work / "sample_home", ignore_errors=True)
    shutil.rmtree(lake_root, ignore_errors=True)
    home = _new_home(work / "sample_home", ROOT / "dagster.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["CRYPTO_LAKE__BINANCE__REST_BASE_URL"] = "http://127.0.0.1:9"  # until set
        os.environ["LAKE_ROOT"] = tmp
        from crypto_lake.lib.core.config import load_config

        symbols = list(load_config().symbols[:3])
    generated = {s: rawgen.generate(s, [SAMPLE_DAY]) for s in symbols}
    klines = {s: rawgen.reference_klines_1m(sd) for s, sd in generated.items()}
    with rawgen.KlinesServer(klines) as server:
        _env_for(lake_root, server.url)
        import dagster as dg

        from crypto_lake.definitions import defs
        from crypto_lake.defs.market.partitions import CONFIG, range_tags
        from crypto_lake.defs.raw.events import raw_batch
        from crypto_lake.lib.core.paths import LakeLayout
        from crypto_lake.lib.raw.catalog import RawCatalog

        layout = LakeLayout(lake_root)
        for symbol, sd in generated.items():
            rawgen.write_raw(layout, symbol, rawgen.raw_lines(sd))
        job = defs().resolve_job_def("market_day_job")
        run_ids = []
        with dg.DagsterInstance.from_config(str(home)) as instance:
            files = RawCatalog(layout).refresh()  # what the refresh sensor records
            for event in raw_batch(files, set(symbols)).events:
                instance.report_runless_asset_event(event)
            for n in (2, 3):
                with open(work / "sample_runs.log", "a") as log, redirect_stderr(log):
                    result = job.execute_in_process(  # its console log goes to the file
                        instance=instance, tags=range_tags([SAMPLE_DAY], symbols[:n]),
                        raise_on_error=False,
                    )  # fmt: skip
                if not result.success:
                    raise RuntimeError(f"sample market_day_job over {symbols[:n]} failed")
                run_ids.append(result.run_id)
    sample = Sample(home, lake_root, symbols, CONFIG.dagster.refresh_interval_seconds)
    _fit(sample, run_ids)
    _templates(sample, run_ids[1])
    sample.sample_s = time.perf_counter() - t0
    return sample


def _fit(sample: Sample, run_ids: list[str]) -> None:
    """Rows per run and per partition, by type, from the 2- and 3-partition runs (a run of
    one partition records no per-partition observations, so it is not on the line)."""
    counts, sizes = [], {}
    for run_id in run_ids:
        shard = sample.home / "history" / "runs" / f"{run_id}.db"
        rows = _rows(shard, "SELECT dagster_event_type AS t, length(event) AS n FROM event_logs")
        counts.append(Counter((r["t"] or "LOG") for r in rows))
        for r in rows:
            sizes.setdefault(r["t"] or "LOG", []).append(r["n"])
    for kind in set(counts[0]) | set(counts[1]):
        step = counts[1][kind] - counts[0][kind]
        sample.per_partition[kind] = max(step, 0)
        sample.per_run[kind] = max(counts[0][kind] - 2 * max(step, 0), 0)
    sample.row_bytes = {k: statistics.fmean(v) for k, v in sizes.items()}
    raw = _rows(sample.home / "history" / "runs" / "index.db",
                "SELECT length(event) AS n FROM event_logs WHERE asset_key LIKE "
                "'%raw_market_events%'")  # fmt: skip
    sample.row_bytes["raw ASSET_MATERIALIZATION"] = statistics.fmean(r["n"] for r in raw)
    shards = [sample.home / "history" / "runs" / f"{r}.db" for r in run_ids]
    rows = sum(sum(c.values()) for c in counts)
    sample.shard_bytes_per_row = sum(p.stat().st_size for p in shards) / rows


def _templates(sample: Sample, run_id: str) -> None:
    """Template rows from the 3-partition run: those of its last partition (asset and check
    events, their tags and check executions), the run's own rows (in the index shard: those
    naming no partition; in the run shard: the non-asset ones), one raw file event."""
    index = sample.home / "history" / "runs" / "index.db"
    day, symbol = SAMPLE_DAY, sample.symbols[-1]
    key = f"{day}|{symbol}"

    keys = [f"{day}|{s}" for s in sample.symbols]

    def named(text: str | None, partition: str | None) -> set[str]:
        """The sample partitions a row is about (planned events name every one of the run's)."""
        return {k for k in keys if partition == k or f'"{k}"' in (text or "")}

    def only_mine(text: str | None, partition: str | None) -> bool:
        return named(text, partition) == {key}

    def own(text: str | None, partition: str | None) -> bool:
        return len(named(text, partition)) != 1

    events = _rows(index, "SELECT * FROM event_logs WHERE run_id = ? ORDER BY id", (run_id,))
    mine = [e for e in events if only_mine(e["event"], e["partition"])]
    sample.run_index_rows = [_template(e, day, symbol, run_id) for e in events
                             if own(e["event"], e["partition"])]  # fmt: skip
    tags = _rows(index, "SELECT * FROM asset_event_tags")
    by_event: dict[int, list[dict]] = {}
    for t in tags:
        by_event.setdefault(t["event_id"], []).append(t)
    for e in mine:
        e["_tags"] = [_template(t, day, symbol, run_id) for t in by_event.get(e["id"], [])]
    sample.partition_rows = [_template(e, day, symbol, run_id) for e in mine]
    checks = _rows(index, "SELECT * FROM asset_check_executions WHERE run_id = ?", (run_id,))
    sample.check_rows = [_template(c, day, symbol, run_id) for c in checks
                         if only_mine(c["evaluation_event"], c["partition"])]  # fmt: skip
    sample.run_check_rows = [_template(c, day, symbol, run_id) for c in checks
                             if own(c["evaluation_event"], c["partition"])]  # fmt: skip
    shard = sample.home / "history" / "runs" / f"{run_id}.db"
    others = _rows(shard, "SELECT * FROM event_logs ORDER BY id")
    sample.run_rows = [_template(e, day, symbol, run_id) for e in others
                       if (e["dagster_event_type"] or "LOG") not in ASSET_TYPES]  # fmt: skip
    raw = _rows(index, "SELECT * FROM event_logs WHERE asset_key LIKE '%raw_market_events%' "
                "AND partition = ? LIMIT 1", (key,))  # fmt: skip
    raw_tags = by_event.get(raw[0]["id"], [])
    sample.raw_row = _template(raw[0], day, symbol, run_id)
    sample.raw_row["_tags"] = [_template(t, day, symbol, run_id) for t in raw_tags]


# --- stage 2: the synthetic history -----------------------------------------------------------
def _fill(text, day: str, symbol: str, run_id: str, ts: float):
    if not isinstance(text, str):
        return text
    return (text.replace(DAY_MARK, day).replace(SYM_MARK, symbol).replace(RUN_MARK, run_id)
            .replace(TS_MARK, repr(ts)))  # fmt: skip


def _naive(ts: float) -> datetime:
    """The storage's TIMESTAMP columns hold naive UTC."""
    return datetime.fromtimestamp(ts, UTC).replace(tzinfo=None)


@dataclass
class Batch:
    """Rows for one recorded day, with explicit event ids so tags and checks can point at them."""

    next_id: int
    events: list[dict] = field(default_factory=list)
    tags: list[dict] = field(default_factory=list)
    checks: list[dict] = field(default_factory=list)

    def event(self, tpl: dict, day: str, symbol: str, run_id: str, ts: float) -> int:
        eid, self.next_id = self.next_id, self.next_id + 1
        self.events.append({"id": eid, "run_id": _fill(tpl["run_id"], day, symbol, run_id, ts),
                            "event": _fill(tpl["event"], day, symbol, run_id, ts),
                            "dagster_event_type": tpl["dagster_event_type"],
                            "timestamp": _naive(ts), "step_key": tpl["step_key"],
                            "asset_key": tpl["asset_key"],
                            "partition": _fill(tpl["partition"], day, symbol, run_id, ts),
                            })  # fmt: skip
        for t in tpl.get("_tags", []):
            self.tags.append({"event_id": eid, "asset_key": t["asset_key"], "key": t["key"],
                              "value": _fill(t["value"], day, symbol, run_id, ts),
                              "event_timestamp": _naive(ts)})  # fmt: skip
        return eid

    def check(self, tpl: dict, ids: dict[int, int], day, symbol, run_id, ts) -> None:
        self.checks.append({
            "asset_key": tpl["asset_key"], "check_name": tpl["check_name"],
            "partition": _fill(tpl["partition"], day, symbol, run_id, ts),
            "run_id": _fill(tpl["run_id"], day, symbol, run_id, ts),
            "execution_status": tpl["execution_status"],
            "evaluation_event": _fill(tpl["evaluation_event"], day, symbol, run_id, ts),
            "evaluation_event_timestamp": _naive(ts),
            "evaluation_event_storage_id": ids.get(tpl["evaluation_event_storage_id"]),
            "materialization_event_storage_id": ids.get(tpl["materialization_event_storage_id"]),
        })  # fmt: skip


def _run_rows_by_count(sample: Sample, symbols: int) -> list[dict]:
    """The run's non-asset rows, as many of each type as the fit says a run of ``symbols``
    partitions writes (cycling through the sample's rows of that type)."""
    by_type: dict[str, list[dict]] = {}
    mirrored = {r["dagster_event_type"] for r in sample.run_index_rows}  # written once already
    for r in sample.run_rows:
        if r["dagster_event_type"] in mirrored:
            continue
        by_type.setdefault(r["dagster_event_type"] or "LOG", []).append(r)
    out = []
    for kind, rows in by_type.items():
        n = sample.per_run[kind] + sample.per_partition[kind] * symbols
        out += [rows[i % len(rows)] for i in range(n)]
    return out


def day_batch(sample: Sample, day: str, symbols: list[str], next_id: int, with_run_rows: bool,
              whole: bool):  # fmt: skip
    """Every row one recorded day holds: a raw event per partition per refresh pass and 288
    refresh runs (asset and check events of 13 partitions, the run's own rows); once pruned
    (``whole`` False) only the day's last run is left."""
    batch = Batch(next_id)
    start = datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp()
    refreshes = 86400 // sample.refresh_interval_s
    run_rows = _run_rows_by_count(sample, len(symbols)) if with_run_rows else []
    for r in range(refreshes):
        for symbol in symbols:
            batch.event(sample.raw_row, day, symbol, "", start + r * sample.refresh_interval_s)
        if not whole and r < refreshes - 1:
            continue  # replaced by the day's last run: deleted by the history retention
        run_id, ts = str(uuid.uuid4()), start + r * sample.refresh_interval_s + 90
        ids: dict[int, int] = {}
        for tpl in sample.run_index_rows:
            ids[tpl["id"]] = batch.event(tpl, day, symbols[0], run_id, ts)
        for tpl in sample.run_check_rows:
            batch.check(tpl, ids, day, symbols[0], run_id, ts)
        for symbol in symbols:
            mine = dict(ids)
            for tpl in sample.partition_rows:
                mine[tpl["id"]] = batch.event(tpl, day, symbol, run_id, ts)
            for tpl in sample.check_rows:
                batch.check(tpl, mine, day, symbol, run_id, ts)
        for tpl in run_rows:
            batch.event(tpl, day, symbols[0], run_id, ts)
    return batch


def write_history(instance, sample: Sample, days: list[str], symbols: list[str],
                  with_run_rows: bool, whole: bool) -> dict:  # fmt: skip
    """Batch-insert ``days`` of history into the instance's event log tables."""
    import sqlalchemy as db
    from dagster._core.storage.event_log.schema import (
        AssetCheckExecutionsTable,
        AssetEventTagsTable,
        SqlEventLogStorageTable,
    )

    storage, rows, t0 = instance.event_log_storage, 0, time.perf_counter()
    with storage.index_connection() as conn:
        next_id = (conn.execute(db.select(db.func.max(SqlEventLogStorageTable.c.id))).scalar()
                   or 0) + 1  # fmt: skip
    for day in days:
        batch = day_batch(sample, day, symbols, next_id, with_run_rows, whole)
        next_id = batch.next_id
        with storage.index_transaction() as conn:
            for table, chunk in ((SqlEventLogStorageTable, batch.events),
                                 (AssetEventTagsTable, batch.tags),
                                 (AssetCheckExecutionsTable, batch.checks)):  # fmt: skip
                for i in range(0, len(chunk), 20000):
                    conn.execute(table.insert(), chunk[i : i + 20000])
        rows += len(batch.events) + len(batch.tags) + len(batch.checks)
        print(f"  {day}: {len(batch.events):,} events, {len(batch.tags):,} tags, "
              f"{len(batch.checks):,} check executions", flush=True)  # fmt: skip
    if _is_postgres(instance):
        with storage.index_connection() as conn:
            for t in ("event_logs", "asset_event_tags", "asset_check_executions"):
                conn.execute(db.text(f"SELECT setval(pg_get_serial_sequence('{t}', 'id'), "
                                     f"(SELECT max(id) FROM {t}))"))  # fmt: skip
            conn.execute(db.text("ANALYZE"))  # what autovacuum does after a bulk load
    _replay_last(instance, sample, days[-1], symbols)
    return {"rows": rows, "write_s": time.perf_counter() - t0}


def _is_postgres(instance) -> bool:
    from dagster_postgres.event_log import PostgresEventLogStorage

    return isinstance(instance.event_log_storage, PostgresEventLogStorage)


def _replay_last(instance, sample: Sample, day: str, symbols: list[str]) -> None:
    """One refresh's materializations through ``store_event``, so asset_keys (latest
    materialization, the partition status cache's cursor) is what a live instance holds."""
    from dagster._core.events.log import EventLogEntry
    from dagster._serdes import deserialize_value

    ts = datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp() + 86000
    run_id = str(uuid.uuid4())
    for symbol in symbols:
        for tpl in [sample.raw_row, *sample.partition_rows]:
            if tpl["dagster_event_type"] != "ASSET_MATERIALIZATION":
                continue
            text = _fill(tpl["event"], day, symbol, run_id if tpl["run_id"] else "", ts)
            instance.event_log_storage.store_event(deserialize_value(text, EventLogEntry))


# --- stage 3: the UI's queries at that size ---------------------------------------------------
Q_ASSET = """query($k: AssetKeyInput!) { assetOrError(assetKey: $k) { __typename ... on Asset {
  assetMaterializations(limit: 1) { timestamp partition runId }
  definition { partitionStats { numMaterialized numPartitions numFailed } } } } }"""
Q_PARTITIONS = """query($ks: [AssetKeyInput!]) { assetNodes(assetKeys: $ks) { assetKey { path }
  partitionStats { numMaterialized numPartitions }
  assetPartitionStatuses { __typename ... on MultiPartitionStatuses { primaryDimensionName
    ranges { primaryDimStartKey primaryDimEndKey } } } } }"""
Q_CHECKS = """query($k: AssetKeyInput!, $c: String!) {
  assetCheckExecutions(assetKey: $k, checkName: $c, limit: 25) { id status timestamp partition
    evaluation { success } } }"""


def _queries(check_name: str) -> list[tuple[str, str, dict]]:
    """(label, query, variables): the asset page, the partitions page, the checks page."""
    out = []
    for asset in ("raw_market_events", "bars_1s"):
        out.append((f"asset page {asset}", Q_ASSET, {"k": {"path": [asset]}}))
        out.append((f"partitions {asset}", Q_PARTITIONS, {"ks": [{"path": [asset]}]}))
    out.append((f"checks bars_1s/{check_name}", Q_CHECKS,
                {"k": {"path": ["bars_1s"]}, "c": check_name}))  # fmt: skip
    return out


# The webserver as before the UI speed-ups, for the baseline pages: the storage's memos off
# (MEMO_SECONDS 0) and Dagster's own partition status ranges (ui_partition_keys not installed).
BASELINE_WEBSERVER = (
    "import sys; from crypto_lake import storage, ui_partition_keys; "
    "storage.MEMO_SECONDS = 0.0; ui_partition_keys.install = lambda: False; "
    "from dagster_webserver.cli import main; sys.argv[0] = 'dagster-webserver'; main()"
)


def time_ui(home: Path, env: dict[str, str], log: Path, check_name: str, repeats: int,
            baseline: bool = False) -> dict:  # fmt: skip
    """Start dagster-webserver on ``home`` and time each page's query: cold, then median;
    ``baseline``: the same on the webserver without the UI speed-ups."""
    from crypto_lake_tests.e2e.dagster_harness import OFFLINE, free_port, graphql, stop_group

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    full = {**os.environ, **OFFLINE, **env, "DAGSTER_HOME": str(home)}
    full.pop("CRYPTO_LAKE_CONFIG", None)
    server = ([sys.executable, "-c", BASELINE_WEBSERVER] if baseline
              else [str(Path(sys.executable).parent / "dagster-webserver")])  # fmt: skip
    cmd = [*server, "-w", str(ROOT / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=full, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
        try:
            _wait_ready(proc, url, log)
            times = {}  # the baseline the same way: its queries, then its pages
            for label, query, variables in _queries(check_name):
                t0 = time.perf_counter()
                data = graphql(url, query, variables)
                cold = time.perf_counter() - t0
                warm = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    graphql(url, query, variables)
                    warm.append(time.perf_counter() - t0)
                times[label] = (cold, statistics.median(warm), _answer(data))
            times.update(time_pages(url, check_name, repeats))
            return {f"{label} [baseline]": t for label, t in times.items()} if baseline else times
        finally:
            stop_group(proc)


def time_pages(url: str, check_name: str, repeats: int) -> dict:
    """The pages themselves in headless Chromium: from navigation until the page shows its
    answer (a text that appears only once its data arrived); the first visit of each page
    (the UI's scripts already loaded by one visit of the overview, and the code of each kind
    of page by a visit of that page of another asset, timed as "page code"), then the median
    of ``repeats`` reloads."""
    from playwright.sync_api import sync_playwright

    from crypto_lake_tests.e2e.test_ui_backfill import CHROMIUM, CHROMIUM_ARGS

    # (label, path, text clicked first or None, the answer); the checks page opens on the
    # first check of its list, so the check is clicked open, as a user does
    pages = [
        ("page: asset bars_1s", "/assets/bars_1s", None, "Row count"),
        ("page: partitions bars_1s", "/assets/bars_1s?view=partitions", None, "Materialized ("),
        ("page: partitions raw_market_events", "/assets/raw_market_events?view=partitions",
         None, "Materialized ("),
        (f"page: checks bars_1s ({check_name})", "/assets/bars_1s?view=checks", check_name,
         "This is a blocking asset check"),
    ]  # fmt: skip
    out, requests = {}, []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.on("requestfinished", lambda r: requests.append(r) if "/graphql" in r.url else None)
        page.goto(url + "/overview", wait_until="load")  # the scripts, once
        # Each kind of page loads its own part of the UI's code on its first visit in a
        # browser, once (cached after): timed apart, on another asset's pages, so the first
        # visits below are of this asset's pages, with the webserver's first answers for it.
        for view in ("", "?view=partitions", "?view=checks"):
            t0 = time.perf_counter()
            page.goto(f"{url}/assets/trades{view}", wait_until="networkidle")
            out[f"page code: the first asset page{view or ''} (trades)"] = (
                time.perf_counter() - t0,
                float("nan"),
                "until the network was quiet for 0.5 s",
            )
        for label, path, click, marker in pages:
            loads, slowest = [], []
            for _ in range(repeats + 1):
                requests.clear()
                t0 = time.perf_counter()
                page.goto(url + path, wait_until="domcontentloaded")
                if click:
                    page.get_by_text(click).first.click(timeout=60_000)
                page.get_by_text(marker).first.wait_for(state="visible", timeout=60_000)
                loads.append(time.perf_counter() - t0)
                slowest.append(_slowest(requests, time.time() * 1000 - loads[-1] * 1000))
            out[label] = (loads[0], statistics.median(loads[1:]), f"shows '{marker}'")
            out[label] += (f"first visit: {slowest[0]}; last reload: {slowest[-1]}",)
        browser.close()
    return out


def _slowest(requests: list, start_ms: float, count: int = 4) -> str:
    """The slowest GraphQL requests of a page load (started at ``start_ms``, epoch ms):
    operation, its start after the navigation and its time, in ms."""
    rows = []
    for r in requests:
        t = r.timing
        name = (r.post_data_json or {}).get("operationName") or "?"
        rows.append((t["responseEnd"], name, t["startTime"] - start_ms))
    rows.sort(reverse=True)
    return ", ".join(f"{n} +{at:.0f}:{d:.0f}" for d, n, at in rows[:count])


def _answer(data: dict) -> str:
    """A short proof the query returned the history (what the page would show)."""
    text = json.dumps(data)
    m = re.search(r'"numMaterialized": (\d+), "numPartitions": (\d+)', text)
    if m:
        return f"{m.group(1)}/{m.group(2)} partitions materialized"
    if "assetCheckExecutions" in data:
        return f"{len(data['assetCheckExecutions'])} executions"
    return text[:60]


def _wait_ready(proc: subprocess.Popen, url: str, log: Path, timeout: float = 180) -> None:
    from crypto_lake_tests.e2e.dagster_harness import graphql

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dagster-webserver exited:\n{log.read_text()[-3000:]}")
        try:
            data = graphql(url, "{ workspaceOrError { ... on Workspace { locationEntries { "
                           "locationOrLoadError { __typename } } } } }")  # fmt: skip
            kinds = [e["locationOrLoadError"]["__typename"]
                     for e in data["workspaceOrError"]["locationEntries"]
                     if e["locationOrLoadError"]]  # fmt: skip
            if "RepositoryLocation" in kinds:
                return
            if "PythonError" in kinds:
                raise RuntimeError(f"code location failed to load, see {log}")
        except (OSError, KeyError, TypeError):
            pass
        time.sleep(1)
    raise TimeoutError(f"dagster-webserver not ready, see {log}")


# --- the run ----------------------------------------------------------------------------------
def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def bench_backend(name: str, sample: Sample, days: list[str], whole_days: int,
                  symbols: list[str], work: Path, repeats: int,
                  baseline: bool = False) -> dict:  # fmt: skip
    """Write the history into a fresh instance of ``name`` and time the UI on it."""
    import dagster as dg

    home = work / f"{name}_home"
    shutil.rmtree(home, ignore_errors=True)
    env: dict[str, str] = {"LAKE_ROOT": str(sample.lake)}
    server = None
    if name == "postgres":
        from crypto_lake_tests.deploy.postgres_server import PostgresServer

        server = PostgresServer().start()
        env.update(server.env())
        os.environ.update(server.env())
        _new_home(home, ROOT / "deploy" / "dagster.yaml")
    else:
        _new_home(home, ROOT / "dagster.yaml")
    try:
        pruned, whole = days[: len(days) - whole_days], days[len(days) - whole_days :]
        sizes, rows, write_s = [_db_bytes(name, home, server)], 0, 0.0
        with dg.DagsterInstance.from_config(str(home)) as instance:
            for part, is_whole in ((pruned, False), (whole, True)):
                if part:
                    run_rows = name != "sqlite"
                    wrote = write_history(instance, sample, part, symbols, run_rows, is_whole)
                    rows, write_s = rows + wrote["rows"], write_s + wrote["write_s"]
                sizes.append(_db_bytes(name, home, server))
            checkpoint = checkpoint_passes(instance)
        check = next(c["check_name"] for c in sample.check_rows if c["asset_key"] == '["bars_1s"]')
        times = time_ui(home, env, work / f"{name}_webserver.log", check, repeats)
        if baseline:
            times.update(time_ui(home, env, work / f"{name}_baseline_webserver.log", check,
                                 repeats, baseline=True))  # fmt: skip
        return {"rows": rows, "write_s": write_s, "times": times, "checkpoint": checkpoint,
                "pruned_day_bytes": (sizes[1] - sizes[0]) / max(len(pruned), 1),
                "whole_day_bytes": (sizes[2] - sizes[1]) / max(len(whole), 1),
                "pruned_days": len(pruned), "whole_days": len(whole)}  # fmt: skip
    finally:
        if server is not None:
            server.stop()


def checkpoint_passes(instance) -> tuple[int, float, float]:
    """What the daemon's ``check_status_checkpoint`` sensor does before anyone opens a page:
    the first computation of every check's status per partition (from nothing, as after a
    restart or a history-retention pass), then one pass more (what each minute costs)."""
    from crypto_lake.definitions import defs
    from crypto_lake.defs.ops.check_status import refresh_check_status

    graph = defs().resolve_asset_graph()
    first = refresh_check_status(instance, graph)
    again = refresh_check_status(instance, graph)
    if first is None or again is None:
        raise RuntimeError("the instance's storage keeps no check status checkpoint")
    return first[0], first[1], again[1]


def _db_bytes(name: str, home: Path, server) -> int:
    if name == "postgres":
        return int(server.psql("SELECT pg_database_size('dagster')").strip())
    return _dir_bytes(home / "history")


def past_days(n: int) -> list[str]:
    """The ``n`` recorded days ending yesterday (UTC): real partitions of the code location."""
    today = datetime.now(UTC).date()
    return [(today - timedelta(days=i)).isoformat() for i in range(n, 0, -1)]


def _market_rows(per_day: dict[str, int]) -> int:
    return sum(n for k, n in per_day.items() if k.startswith("market_day_job"))


def report(sample: Sample, history_days: int, results: dict[str, dict]) -> None:
    whole, pruned = sample.per_day(), sample.per_day(runs=1)
    before = sample.per_day(raw_per_file=True)
    total = sum(whole.values())
    print(
        f"\n== Event-log rows per recorded day (measured sample: {sample.sample_s:.0f} s; "
        f"{86400 // sample.refresh_interval_s} refreshes x {SYMBOLS_PER_DAY} partitions) =="
    )
    print(f"{'source / event type':52} {'rows/day':>10} {'retained':>9} {'bytes/row':>10} "
          f"{'MB/day':>8}")  # fmt: skip
    mb = 0.0
    for kind, n in sorted(whole.items(), key=lambda kv: -kv[1]):
        key = "raw ASSET_MATERIALIZATION" if kind.startswith("raw") else kind.split(" ", 1)[1]
        b = sample.row_bytes.get(key, 0.0)
        mb += n * b / 1e6
        print(f"{kind:52} {n:>10,} {pruned.get(kind, 0):>9,} {b:>10,.0f} {n * b / 1e6:>8.1f}")
    print(f"{'total':52} {total:>10,} {sum(pruned.values()):>9,} {'':>10} {mb:>8.1f}")
    print("(retained: what a day keeps once history retention has deleted its replaced runs)")
    print(f"per run, fitted: {dict(+sample.per_run)}")
    print(f"per partition per run, fitted: {dict(+sample.per_partition)}")
    year_before = 365 * sum(before.values())
    year_now = history_days * total + (365 - history_days) * sum(pruned.values())
    print(
        f"a year of rows: {year_before / 1e6:,.1f} M before (one raw event per sealed file, "
        f"{sum(before.values()):,} rows a day, no retention); {year_now / 1e6:,.2f} M now "
        f"({history_days} whole days + {365 - history_days} retained days): "
        f"{year_before / year_now:,.0f}x fewer"
    )
    for name, r in results.items():
        whole_b, pruned_b = r["whole_day_bytes"], r["pruned_day_bytes"]
        extra = ""
        if name == "sqlite":  # the per-run shards are projected, not written
            whole_b += _market_rows(whole) * sample.shard_bytes_per_row
            pruned_b += _market_rows(pruned) * sample.shard_bytes_per_row
            extra = f" (incl. per-run shards, {sample.shard_bytes_per_row:,.0f} B/row)"
        year = history_days * whole_b + (365 - history_days) * pruned_b
        print(
            f"\n== {name}: {r['pruned_days']} retained + {r['whole_days']} whole synthetic "
            f"days, {r['rows']:,} rows written in {r['write_s']:.0f} s =="
        )
        print(f"database bytes per whole day {whole_b / 1e6:,.0f} MB, per retained day "
              f"{pruned_b / 1e6:,.1f} MB{extra}; a year: {year / 1e9:,.1f} GB")  # fmt: skip
        checks, first_s, again_s = r["checkpoint"]
        print(f"check status checkpoint of {checks} checks (check_status_checkpoint sensor): "
              f"first computation {first_s:.1f} s, a pass after it {again_s:.2f} s")  # fmt: skip
        print(f"{'query (GraphQL behind the page)':44} {'cold s':>7} {'median s':>9} "
              f"{'< 2 s':>6}  answer")  # fmt: skip
        for label, (cold, warm, answer, *slowest) in r["times"].items():
            ok = "yes" if max(cold, warm) < TARGET_S else "NO"
            median = f"{warm:.2f}"
            if math.isnan(warm):  # the page code's one load, until the network is quiet
                ok = median = "-"
            print(f"{label:44} {cold:>7.2f} {median:>9} {ok:>6}  {answer}")
            if slowest:
                print(f"{'':44} slowest requests (+start:ms): {slowest[0]}")
    print(
        "\nNot measured, listed from the schedules (per day): finalize (1 ranged run of "
        "yesterday), QA, archive, retention (1 run each), collector_health (an observation + "
        "a check evaluation when something changes, at least every 10 min), macro runs, and "
        "the bars_after_previous_day / klines_parity_catchup follow-ups when they fire."
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "bench_history")
    ap.add_argument("--days", type=int, default=14, help="synthetic recorded days to write")
    ap.add_argument(
        "--history-days",
        type=int,
        default=None,
        help="whole days before retention (default: dagster.history_days)",
    )
    ap.add_argument("--backends", default="sqlite,postgres")
    ap.add_argument("--repeats", type=int, default=5, help="timed calls per query after the first")
    ap.add_argument("--baseline", action="store_true",
                    help="also time the pages on a webserver without the UI speed-ups")  # fmt: skip
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    print("stage 1: sample (raw events + two real market_day_job refreshes, SQLite)", flush=True)
    sample = run_sample(args.workdir)
    from crypto_lake.defs.market.partitions import CONFIG

    symbols = list(CONFIG.symbols)[:SYMBOLS_PER_DAY]
    days = past_days(args.days)
    history_days = args.history_days or CONFIG.dagster.history_days
    whole_days = min(history_days, len(days))
    results = {}
    for name in args.backends.split(","):
        print(f"stage 2+3: {name}: {args.days} days of history ({whole_days} whole), then the UI",
              flush=True)  # fmt: skip
        results[name] = bench_backend(name, sample, days, whole_days, symbols, args.workdir,
                                      args.repeats, args.baseline)  # fmt: skip
    report(sample, history_days, results)
    print(f"\ntotal wall {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
