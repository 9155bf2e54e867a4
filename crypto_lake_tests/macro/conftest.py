"""Fixtures: a loopback Yahoo server per test and client settings pointing yfinance at it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from crypto_lake.lib.core.paths import LakeLayout
from crypto_lake.lib.macro.yahoo import YahooSettings
from crypto_lake.simulator.yahoo import YahooServer


@pytest.fixture(scope="session")
def yf_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # yfinance keeps one process-wide sqlite cache (timezones, cookies); keep it out of $HOME.
    return tmp_path_factory.mktemp("yfinance-cache")


@pytest.fixture
def yahoo() -> Iterator[YahooServer]:
    with YahooServer() as server:
        yield server


@pytest.fixture
def settings(yahoo: YahooServer, yf_cache_dir: Path) -> YahooSettings:
    return YahooSettings(
        base_url=yahoo.url,
        timeout_seconds=5,
        max_attempts=3,
        backoff_base_seconds=0.01,
        backoff_cap_seconds=0.05,
        cache_dir=yf_cache_dir,
    )


@pytest.fixture
def layout(tmp_path: Path) -> LakeLayout:
    return LakeLayout(tmp_path / "lake")
