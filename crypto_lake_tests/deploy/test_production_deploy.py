"""The production path as deploy/ writes it: PostgreSQL, dagster-daemon, dagster-webserver.

A real PostgreSQL server on loopback; ``deploy/dagster.yaml`` copied unchanged into the
instance home; the daemon and webserver started with exactly the commands and environment of
deploy/systemd's units (their fixed paths moved into the test's folders). Raw files of two
separate days make the market refresh sensor launch two runs of the ``lake_market`` pool at
once; the instance allows 4 runs, the pool one, so the second must wait for the first. Both
must succeed with their asset checks, as the webserver reports them.
"""

from __future__ import annotations

import os
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from crypto_lake.lib.core.paths import LakeLayout
from crypto_lake_tests.defs import rawgen
from crypto_lake_tests.deploy.postgres_server import PostgresServer
from crypto_lake_tests.deploy.units import ROOT, Paths, commands, environment, read_unit
from crypto_lake_tests.e2e.dagster_harness import free_port, graphql, stop_group

pytestmark = pytest.mark.e2e

SYMBOLS = ["BTCUSDT", "ETHUSDT"]
DAYS = ["2024-03-01", "2024-03-06"]  # two blocks of days: two refresh runs in one tick
RUNS = """
query Runs($sensor: String!) {
  runsOrError(filter: {tags: [{key: "dagster/sensor_name", value: $sensor}]}) {
    ... on Runs { results { runId status startTime endTime tags { key value } } }
  }
}
"""
GATES = ("r1_ohlc_order", "r2_positive_prices", "r4_no_nan_ohlc")  # blocking checks on bars_1s
CHECK_EXECUTIONS = """
query Exec($asset: [String!]!, $name: String!) {
  assetCheckExecutions(assetKey: {path: $asset}, checkName: $name, limit: 50) {
    status runId evaluation { partition severity }
  }
}
"""
CHECK_STATUS = """
{ assetNodes(assetKeys: [{path: ["bars_1s"]}]) { assetChecksOrError { ... on AssetChecks {
  checks { name partitionStatuses { ... on AssetCheckMultiPartitionStatuses {
    ranges { primaryDimStartKey primaryDimEndKey
      secondaryDim { ... on AssetCheckDefaultPartitionStatuses { succeededPartitions } } } } } }
} } } }
"""
CHECKPOINTS = ("SELECT count(*) FROM kvs WHERE key LIKE 'crypto_lake/check_state/%' "
               "AND value <> ''")  # fmt: skip
POOLS = """
{ instance { concurrencyLimits { concurrencyKey slotCount } runQueueConfig { maxConcurrentRuns } } }
"""


def write_setup(tmp: Path, pg: PostgresServer, klines_url: str) -> Paths:
    """The folders a VM would have after deploy/README.md's install steps."""
    paths = Paths(checkout=ROOT, lake=tmp / "var-lib-crypto-lake", etc=tmp / "etc-crypto-lake")
    home = paths.lake / "dagster_home"
    home.mkdir(parents=True)
    paths.etc.mkdir()
    (home / "dagster.yaml").write_bytes((ROOT / "deploy" / "dagster.yaml").read_bytes())
    config = {
        "symbols": SYMBOLS,
        "binance": {"rest_base_url": klines_url},
        "dagster": {"partitions_start": "2024-01-01", "refresh_interval_seconds": 30,
                    "finalize_cron": "0 0 1 1 *"},
        # nothing listens there: the macro sensor's runs fail at once, never reach Yahoo
        "macro": {"yahoo_base_url": f"http://127.0.0.1:{free_port()}", "max_attempts": 1,
                  "backoff_base_seconds": 0},
    }  # fmt: skip
    (paths.etc / "crypto_lake.yaml").write_text(yaml.safe_dump(config))
    secrets = paths.etc / "secrets.env"
    secrets.write_text("".join(f"{k}={v}\n" for k, v in pg.env().items()))
    secrets.chmod(0o600)
    return paths


def wait_for_runs(url: str, count: int, timeout: float) -> list[dict]:
    deadline = time.monotonic() + timeout
    runs: list[dict] = []
    while time.monotonic() < deadline:
        try:
            runs = graphql(url, RUNS, {"sensor": "market_refresh_sensor"})["runsOrError"]["results"]
        except OSError:
            runs = []
        if len(runs) >= count and all(r["status"] in ("SUCCESS", "FAILURE", "CANCELED")
                                      for r in runs):  # fmt: skip
            return runs
        time.sleep(2)
    raise TimeoutError(f"{count} refresh runs not done within {timeout} s: {runs}")


def test_deploy_units_run_a_sensor_launched_market_run_on_postgres(tmp_path: Path) -> None:
    layout_days = {s: rawgen.generate(s, DAYS, per_day=40) for s in SYMBOLS}
    klines = {s: rawgen.reference_klines_1m(sd) for s, sd in layout_days.items()}
    daemon_unit = read_unit("crypto-lake-dagster-daemon.service")
    web_unit = read_unit("crypto-lake-dagster-webserver.service")
    procs: list[subprocess.Popen] = []
    logs: list[Path] = []
    with PostgresServer() as pg, rawgen.KlinesServer(klines) as kserver:
        paths = write_setup(tmp_path, pg, kserver.url)
        env_d = {**_base_env(), **environment(daemon_unit, paths)}
        env_w = {**_base_env(), **environment(web_unit, paths)}
        assert env_d["DAGSTER_PG_PASSWORD"] == pg.env()["DAGSTER_PG_PASSWORD"]
        layout = LakeLayout(Path(env_d["LAKE_ROOT"]))
        # the collector's part, done before the daemon starts so that one sensor pass sees
        # all of it: sealed raw files of both days in the lake
        for s, sd in layout_days.items():
            rawgen.write_raw(layout, s, rawgen.raw_lines(sd))
        try:
            # ExecStartPre: the pool limits written into Postgres before the first queue pass
            for cmd in commands(daemon_unit, "ExecStartPre", paths):
                pre = subprocess.run(cmd, env=env_d, cwd=ROOT, capture_output=True, text=True)
                assert pre.returncode == 0, pre.stderr[-3000:]
                assert "lake_market=1" in pre.stdout
            port = free_port()
            (web_cmd,) = commands(web_unit, "ExecStart", paths)
            web_cmd[web_cmd.index("-p") + 1] = str(port)
            assert web_cmd[web_cmd.index("-h") + 1] == "127.0.0.1"  # loopback only
            (daemon_cmd,) = commands(daemon_unit, "ExecStart", paths)
            for name, cmd, env in (("webserver", web_cmd, env_w), ("daemon", daemon_cmd, env_d)):
                logs.append(tmp_path / f"{name}.log")
                procs.append(subprocess.Popen(
                    cmd, env=env, cwd=ROOT, start_new_session=True,
                    stdout=logs[-1].open("wb"), stderr=subprocess.STDOUT,
                ))  # fmt: skip
            url = f"http://127.0.0.1:{port}"
            _wait_ready(url, procs, logs)
            info = graphql(url, POOLS)["instance"]
            assert info["runQueueConfig"]["maxConcurrentRuns"] == 4
            limits = {c["concurrencyKey"]: c["slotCount"] for c in info["concurrencyLimits"]}
            assert limits.get("lake_market") == 1, limits
            runs = wait_for_runs(url, 2, timeout=420)
            checks = {name: _check_statuses(url, name, {r["runId"] for r in runs})
                      for name in GATES}  # fmt: skip
            # the checks page's per-partition status, read from the storage's checkpoint
            # (crypto_lake/storage.py, selected by deploy/dagster.yaml) kept in Postgres
            passed = _passed_partitions(url)
            checkpoints = int(pg.psql(CHECKPOINTS, pg.env()["DAGSTER_PG_DB"]).strip())
        finally:
            for proc in procs:
                stop_group(proc, grace=15)
        detail = "\n".join(p.read_text()[-3000:] for p in logs)
        assert [r["status"] for r in runs] == ["SUCCESS", "SUCCESS"], detail
        # one sensor tick asked for both runs (run keys end in the same cursor), and the pool
        # held the second back: one run of lake_market at a time
        keys = [{t["key"]: t["value"] for t in r["tags"]}["dagster/run_key"] for r in runs]
        assert len({k.rsplit(":", 1)[1] for k in keys}) == 1, keys
        spans = sorted((r["startTime"], r["endTime"]) for r in runs)
        assert spans[0][1] <= spans[1][0], f"market runs overlapped: {_fmt(spans)}"
        # the blocking checks ran on every partition in those runs, and passed
        partitions = {f"{d}|{s}" for d in DAYS for s in SYMBOLS}
        for name, statuses in checks.items():
            assert set(statuses) >= partitions, (name, statuses)
            assert {statuses[p] for p in partitions} == {"SUCCEEDED"}, (name, statuses)
            assert passed[name] >= partitions, (name, passed[name])
        assert checkpoints >= len(passed), checkpoints


def _passed_partitions(url: str) -> dict[str, set[str]]:
    """{check: partitions it passed on} as the checks page shows them (ranges of days, each
    with the symbols that passed)."""
    from datetime import date, timedelta

    (node,) = graphql(url, CHECK_STATUS)["assetNodes"]
    out: dict[str, set[str]] = {}
    for check in node["assetChecksOrError"]["checks"]:
        passed = out.setdefault(check["name"], set())
        for r in (check["partitionStatuses"] or {}).get("ranges", []):
            day, end = date.fromisoformat(r["primaryDimStartKey"]), r["primaryDimEndKey"]
            while day.isoformat() <= end:
                passed |= {f"{day}|{s}" for s in r["secondaryDim"]["succeededPartitions"]}
                day += timedelta(days=1)
    return out


def _check_statuses(url: str, name: str, run_ids: set[str]) -> dict[str, str]:
    """{partition: status} of the check ``name`` on bars_1s, evaluated in ``run_ids``."""
    rows = graphql(url, CHECK_EXECUTIONS, {"asset": ["bars_1s"], "name": name})
    out: dict[str, str] = {}
    for row in rows["assetCheckExecutions"]:
        if row["runId"] in run_ids and row["evaluation"]:
            out[row["evaluation"]["partition"]] = row["status"]
    return out


def _base_env() -> dict[str, str]:
    """What systemd passes besides the unit's own variables (no test runner's leftovers)."""
    keep = ("PATH", "LANG", "LC_ALL", "TZ", "TMPDIR", "HOME")
    return {k: os.environ[k] for k in keep if k in os.environ}


def _wait_ready(url: str, procs: list[subprocess.Popen], logs: list[Path]) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        for proc, log in zip(procs, logs, strict=True):
            if proc.poll() is not None:
                tail = log.read_text()[-4000:]
                raise RuntimeError(f"{log.stem} exited {proc.returncode}:\n{tail}")
        try:
            data = graphql(url, "{ workspaceOrError { ... on Workspace { locationEntries { "
                           "locationOrLoadError { __typename } } } } }")  # fmt: skip
            kinds = [e["locationOrLoadError"]["__typename"]
                     for e in data["workspaceOrError"]["locationEntries"]]  # fmt: skip
            if "RepositoryLocation" in kinds:
                return
        except (OSError, KeyError, TypeError, RuntimeError):
            pass
        time.sleep(1)
    raise TimeoutError("webserver not ready:\n" + "\n".join(p.read_text()[-3000:] for p in logs))


def _fmt(spans: list[tuple[float, float]]) -> str:
    return ", ".join(f"{datetime.fromtimestamp(a):%T}-{datetime.fromtimestamp(b):%T}"
                     for a, b in spans)  # fmt: skip
