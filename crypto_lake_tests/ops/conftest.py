"""A lake, a Dagster instance and a loopback webhook for the alert tests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from crypto_lake.defs.resources import LakeResource
from crypto_lake.lib.core.paths import LakeLayout
from crypto_lake_tests.ops.webhook_server import WebhookServer


@dataclass
class Env:
    root: Path
    layout: LakeLayout
    hook: WebhookServer
    instance: dg.DagsterInstance

    def lake(self) -> LakeResource:
        """A fresh resource (its configuration is read from the environment when first used)."""
        return LakeResource(lake_root=str(self.root))


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    """The webhook URL points at the loopback receiver; the disk alert level is 100 % so the
    test machine's own disk never fires it (the disk test lowers it)."""
    root = tmp_path / "lake"
    root.mkdir()
    (tmp_path / "home").mkdir()
    monkeypatch.delenv("CRYPTO_LAKE_CONFIG", raising=False)
    monkeypatch.setenv("CRYPTO_LAKE__ARCHIVE__DISK_WARN_FRACTION", "1.0")
    monkeypatch.delenv("CRYPTO_LAKE__ARCHIVE__BUCKET", raising=False)
    with WebhookServer() as hook, dg.instance_for_test(temp_dir=str(tmp_path / "home")) as inst:
        monkeypatch.setenv("CRYPTO_LAKE_WEBHOOK_URL", hook.url)
        yield Env(root, LakeLayout(root), hook, inst)
