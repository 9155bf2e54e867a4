"""Fixtures for the Dagster tests: a temporary lake with generated raw files and klines."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from crypto_lake.defs.resources import LakeResource
from crypto_lake.lib.core.paths import LakeLayout
from crypto_lake.lib.raw.catalog import RawCatalog
from crypto_lake_tests.defs import rawgen

DAYS = ["2024-03-01", "2024-03-02"]
SYMBOLS = ["BTCUSDT", "ETHUSDT"]


@dataclass
class Lake:
    layout: LakeLayout
    data: dict[str, rawgen.SymbolDay]
    klines_url: str
    resource: LakeResource

    def catalog(self) -> None:
        """What the raw sensor does before any run: catalogue the sealed files."""
        RawCatalog(self.layout).refresh()


def make_lake(root: Path, klines_url: str, data: dict[str, rawgen.SymbolDay]) -> Lake:
    layout = LakeLayout(root)
    for symbol, sd in data.items():
        rawgen.write_raw(layout, symbol, rawgen.raw_lines(sd))
    return Lake(layout, data, klines_url, LakeResource(lake_root=str(root)))
