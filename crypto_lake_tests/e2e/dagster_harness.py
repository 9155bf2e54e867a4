"""Run a real `dagster dev` (webserver + daemon) on loopback and talk to it over GraphQL."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from crypto_lake.defs.pools import prepare_home

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The macro sensors are RUNNING on a fresh instance too: their runs must never reach Yahoo,
# and must fail at once rather than hold the run queue's slots through retries.
OFFLINE = {
    "CRYPTO_LAKE__MACRO__YAHOO_BASE_URL": f"http://127.0.0.1:{free_port()}",  # nothing listens
    "CRYPTO_LAKE__MACRO__MAX_ATTEMPTS": "1",
    "CRYPTO_LAKE__MACRO__BACKOFF_BASE_SECONDS": "0",
}


def graphql(url: str, query: str, variables: dict | None = None) -> dict:
    """POST ``query`` to the webserver at ``url``; its data, or RuntimeError with the errors."""
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    req = urllib.request.Request(
        f"{url}/graphql", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        payload = json.loads(resp.read())
    if payload.get("errors"):
        raise RuntimeError(f"GraphQL errors: {payload['errors']}")
    return payload["data"]


def stop_group(proc: subprocess.Popen, grace: float = 5) -> None:
    """SIGTERM the process group ``proc`` leads (started with ``start_new_session``), then
    SIGKILL what is left after ``grace`` seconds."""
    try:  # idle, dagster stops in ~2 s; with run workers still going it waits on them
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


class DagsterDev:
    """`dagster dev` in its own process group (it survives a plain SIGTERM otherwise)."""

    def __init__(self, home: Path, env: dict[str, str | None], log_path: Path) -> None:
        home.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")  # nux and telemetry off
        prepare_home(home)  # pool limits in place before the first queued run, as in the demo
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        merged = {**os.environ, **OFFLINE, **env, "DAGSTER_HOME": str(home)}
        self.env = {k: v for k, v in merged.items() if v is not None}
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 180) -> None:
        bindir = Path(sys.executable).parent
        cmd = [str(bindir / "dagster"), "dev", "-w", str(ROOT / "workspace.yaml"),
               "-h", "127.0.0.1", "-p", str(self.port)]  # fmt: skip
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dagster dev exited:\n{self.log_path.read_text()[-4000:]}")
            try:
                data = self.graphql(
                    "{ workspaceOrError { ... on Workspace { locationEntries { name "
                    "locationOrLoadError { __typename ... on PythonError { message } } } } } }"
                )
                entries = data["workspaceOrError"]["locationEntries"]
                kinds = [
                    e["locationOrLoadError"]["__typename"]
                    for e in entries
                    if e["locationOrLoadError"]
                ]
                if "RepositoryLocation" in kinds:
                    return
                if "PythonError" in kinds:
                    raise RuntimeError(f"code location failed to load: {data}")
            except (urllib.error.URLError, ConnectionError, TimeoutError, KeyError, TypeError):
                pass
            time.sleep(1)
        raise TimeoutError(f"dagster dev not ready:\n{self.log_path.read_text()[-4000:]}")

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        return graphql(self.url, query, variables)

    def run_job(self, job: str, tags: dict[str, str], timeout: float = 300) -> str:
        """Launch a run of ``job`` with ``tags`` (a partition, or a range as the automation
        launches it) as the UI does, wait for its success; its run id."""
        launched = self.graphql(LAUNCH_RUN, {"params": {
            "selector": {"repositoryLocationName": "crypto_lake",
                         "repositoryName": "__repository__", "jobName": job},
            "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
        }})["launchRun"]  # fmt: skip
        assert launched["__typename"] == "LaunchRunSuccess", launched
        run_id = launched["run"]["runId"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.graphql(RUN_STATUS, {"id": run_id})["runOrError"]["status"]
            if status in RUN_DONE:
                assert status == "SUCCESS", f"{job}: {status}\n{self.log_path.read_text()[-3000:]}"
                return run_id
            time.sleep(1)
        raise TimeoutError(f"{job} run {run_id} not done\n{self.log_path.read_text()[-3000:]}")

    def wait_backfill(self, backfill_id: str, timeout: float = 420, poll: float = 2) -> dict:
        """The backfill once it and every run it launched are done (``BACKFILL_STATUS``)."""
        deadline, data = time.monotonic() + timeout, {}
        while time.monotonic() < deadline:
            data = self.graphql(BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"]
            runs = data.get("runs") or []
            if data.get("status") in BACKFILL_DONE and all(r["status"] in RUN_DONE for r in runs):
                return data
            time.sleep(poll)
        raise TimeoutError(
            f"backfill {backfill_id} not done: {data}\n{self.log_path.read_text()[-3000:]}"
        )

    def stop(self) -> None:
        if self.proc is None:
            return
        stop_group(self.proc)
        self._log.close()


RUN_DONE = ("SUCCESS", "FAILURE", "CANCELED")
BACKFILL_DONE = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}
LAUNCH_RUN = """mutation Launch($params: ExecutionParams!) { launchRun(executionParams: $params) {
  __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }"""
RUN_STATUS = """query Run($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"""

LAUNCH_BACKFILL = """
mutation LaunchPartitionBackfill($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on InvalidSubsetError { message }
    ... on UnauthorizedError { message }
  }
}
"""

BACKFILL_STATUS = """
query BackfillStatus($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { id status numPartitions runs { runId status tags { key value } } }
    ... on PythonError { message }
  }
}
"""
