"""Read deploy/systemd unit files and run their commands here, with the paths moved.

The production units name fixed paths (the checkout in /opt/crypto-lake, the lake in
/var/lib/crypto-lake, /etc/crypto-lake for configuration); a test maps each onto its own
folders and runs exactly the commands and environment the unit would give systemd.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "deploy" / "systemd"


@dataclass
class Unit:
    """The [Service] settings of one unit: repeated keys keep every value in order."""

    name: str
    settings: dict[str, list[str]] = field(default_factory=dict)

    def get(self, key: str) -> list[str]:
        return self.settings.get(key, [])


def read_unit(name: str) -> Unit:
    unit = Unit(name)
    section = None
    for raw in (UNITS / name).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        if section == "Service" and "=" in line:
            key, value = line.split("=", 1)
            unit.settings.setdefault(key.strip(), []).append(value.strip())
    return unit


@dataclass(frozen=True)
class Paths:
    """Where the unit's fixed paths live in a test."""

    checkout: Path  # /opt/crypto-lake
    lake: Path  # /var/lib/crypto-lake
    etc: Path  # /etc/crypto-lake

    def apply(self, text: str) -> str:
        return (
            text.replace("/opt/crypto-lake", str(self.checkout))
            .replace("/var/lib/crypto-lake", str(self.lake))
            .replace("/etc/crypto-lake", str(self.etc))
        )


def environment(unit: Unit, paths: Paths) -> dict[str, str]:
    """``Environment=`` and ``EnvironmentFile=`` (a leading ``-``: optional) as systemd reads
    them, paths moved."""
    env: dict[str, str] = {}
    for item in unit.get("Environment"):
        for pair in shlex.split(item):
            key, value = pair.split("=", 1)
            env[key] = paths.apply(value)
    for item in unit.get("EnvironmentFile"):
        optional = item.startswith("-")
        path = Path(paths.apply(item.lstrip("-")))
        if not path.exists():
            if optional:
                continue
            raise FileNotFoundError(f"{unit.name}: EnvironmentFile {path} missing")
        for line in path.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                key, value = line.split("=", 1)
                env[key.strip()] = value.strip().strip("'\"")
    return env


def commands(unit: Unit, key: str, paths: Paths) -> list[list[str]]:
    """The unit's ``ExecStartPre=`` / ``ExecStart=`` commands as argument lists."""
    return [shlex.split(paths.apply(cmd)) for cmd in unit.get(key)]
