"""deploy/systemd's units: hardened (systemd's own score), and naming commands that exist."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from crypto_lake_tests.deploy.units import ROOT, UNITS, Paths, commands, read_unit

MAX_EXPOSURE = 4.0  # systemd-analyze security: 0 (locked down) .. 10 (unprotected)
UNIT_NAMES = sorted(p.name for p in UNITS.glob("*.service"))


def test_the_three_services_are_there() -> None:
    assert UNIT_NAMES == ["crypto-lake-collector.service", "crypto-lake-dagster-daemon.service",
                          "crypto-lake-dagster-webserver.service"]  # fmt: skip


@pytest.mark.parametrize("name", UNIT_NAMES)
def test_unit_exposure_is_at_most_4(name: str) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze not found: apt-get install systemd"
    proc = subprocess.run([analyze, "security", "--offline=yes", str(UNITS / name)],
                          capture_output=True, text=True)  # fmt: skip
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout)
    assert found, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert float(found.group(1)) <= MAX_EXPOSURE, proc.stdout


@pytest.mark.parametrize("name", UNIT_NAMES)
def test_unit_commands_exist_in_the_pinned_environment(name: str) -> None:
    unit = read_unit(name)
    paths = Paths(checkout=ROOT, lake=ROOT / "lake", etc=ROOT)
    cmds = commands(unit, "ExecStartPre", paths) + commands(unit, "ExecStart", paths)
    assert cmds
    for cmd in cmds:
        program = Path(cmd[0])
        assert program.parent == ROOT / ".venv" / "bin", cmd
        assert program.exists(), f"{name}: {program} is not installed"
    assert unit.get("User") == ["crypto-lake"] and unit.get("UMask")
