"""deploy/Containerfile and deploy/k8s: what can be checked without a container runtime.

The image is built from the lock and compiles numba's cache at build time; these tests run
that build step's command as the image does (a fresh cache folder, the generic CPU) and show a
second process compiles nothing. The Kubernetes manifests share one ReadWriteMany lake and
fence the code server in.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from crypto_lake_tests.deploy.units import ROOT

DEPLOY = ROOT / "deploy"
KERNEL_MODULES = ("fastparse", "fast_trades", "columns", "fastbars", "engine", "scan", "levels")


def containerfile() -> str:
    return (DEPLOY / "Containerfile").read_text()


def env_of(text: str) -> dict[str, str]:
    """The ``ENV`` settings of a Containerfile (``KEY=value`` pairs, continued lines)."""
    joined = text.replace("\\\n", " ")
    pairs: dict[str, str] = {}
    for line in joined.splitlines():
        if line.startswith("ENV "):
            pairs.update(p.split("=", 1) for p in line[4:].split())
    return pairs


def test_image_installs_from_the_lock_only() -> None:
    text = containerfile()
    syncs = re.findall(r"uv sync[^\n&]*", text)
    assert syncs and all("--frozen" in s for s in syncs), syncs
    assert "pip install" not in text.replace("pip install --no-cache-dir uv==", "")


def test_code_server_binds_loopback_unless_told() -> None:
    text = containerfile()
    assert env_of(text)["CODE_SERVER_HOST"] == "127.0.0.1"
    cmd = text[text.rindex("CMD ") :]
    assert '-h \\"$CODE_SERVER_HOST\\"' in cmd and "0.0.0.0" not in cmd


def test_numba_cache_is_compiled_at_build_time_and_reused(tmp_path: Path) -> None:
    env = env_of(containerfile())
    assert env["NUMBA_CPU_NAME"] == "generic" and "NUMBA_CACHE_DIR" in env
    assert "python -m crypto_lake.lib.market.warmup" in containerfile()
    run_env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache"),
               "NUMBA_CPU_NAME": "generic", "NUMBA_DEBUG_CACHE": "1"}  # fmt: skip
    cmd = [sys.executable, "-m", "crypto_lake.lib.market.warmup"]
    build = subprocess.run(cmd, env=run_env, capture_output=True, text=True, cwd=ROOT)
    assert build.returncode == 0, build.stderr[-3000:]
    saved = build.stdout + build.stderr
    for module in KERNEL_MODULES:
        assert list((tmp_path / "cache").rglob(f"{module}.*.nbc")), f"{module} not cached"
        assert f"{module}." in saved
    again = subprocess.run(cmd, env=run_env, capture_output=True, text=True, cwd=ROOT)
    assert again.returncode == 0, again.stderr[-3000:]
    log = again.stdout + again.stderr
    assert "data loaded" in log
    assert "data saved" not in log, "a fresh process compiled again: " + log[-2000:]


def k8s(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((DEPLOY / "k8s" / name).read_text()) if d]


def test_k8s_lake_is_one_read_write_many_volume_for_every_pod() -> None:
    (pvc,) = k8s("lake-pvc.yaml")
    assert pvc["kind"] == "PersistentVolumeClaim"
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    claim = pvc["metadata"]["name"]
    (values,) = k8s("values.yaml")
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is True  # run pods get it too
    claims = {v["persistentVolumeClaim"]["claimName"] for v in deployment["volumes"]}
    (collector,) = k8s("collector.yaml")
    pod = collector["spec"]["template"]["spec"]
    claims |= {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]
               if "persistentVolumeClaim" in v}  # fmt: skip
    assert claims == {claim}
    assert collector["spec"]["replicas"] == 1
    assert collector["spec"]["strategy"]["type"] == "Recreate"
    mounts = {m["mountPath"] for c in pod["containers"] for m in c["volumeMounts"]}
    assert "/var/lib/crypto-lake" in mounts
    assert {m["mountPath"] for m in deployment["volumeMounts"]} == {"/var/lib/crypto-lake"}


def test_k8s_code_server_admits_only_dagster_pods() -> None:
    (policy,) = k8s("networkpolicy.yaml")
    (values,) = k8s("values.yaml")
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    # the chart labels the code server's pods component=user-deployments, deployment=<name>
    assert policy["spec"]["podSelector"]["matchLabels"] == {
        "component": "user-deployments", "deployment": deployment["name"]}  # fmt: skip
    (rule,) = policy["spec"]["ingress"]
    assert [p["port"] for p in rule["ports"]] == [deployment["port"]]
    assert rule["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "dagster"}}}]


def test_everything_deploy_names_is_installed() -> None:
    import dagster_k8s  # noqa: F401  (K8sRunLauncher in the run pods' instance)
    import dagster_postgres  # noqa: F401  (deploy/dagster.yaml's storage)
    import psycopg2  # noqa: F401  (the driver deploy/dagster.yaml's scheme selects)

    instance = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    storage = instance["storage"]["custom"]
    assert (storage["module"], storage["class"]) == ("crypto_lake.storage", "LakePostgresStorage")
    assert storage["config"]["postgres_db"]["scheme"] == "postgresql+psycopg2"
    assert instance["run_coordinator"]["class"] == "QueuedRunCoordinator"
