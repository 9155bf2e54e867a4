"""Resources shared by every domain: the lake (paths + configuration) and its DuckDB views
database."""

from __future__ import annotations

from functools import cached_property

import dagster as dg
from dagster_duckdb import DuckDBResource

from crypto_lake.lib.core.config import Config, load_config
from crypto_lake.lib.core.paths import LakeLayout


class LakeResource(dg.ConfigurableResource):
    """Where the lake lives and how it is configured.

    ``lake_root`` overrides the configured root (tests point it at a temporary folder);
    everything else comes from the crypto_lake config file and ``CRYPTO_LAKE__*`` variables.
    """

    lake_root: str | None = None

    @cached_property
    def config(self) -> Config:
        cfg = load_config()
        if self.lake_root:
            cfg = cfg.model_copy(update={"lake_root": self.lake_root})
        return cfg

    @property
    def layout(self) -> LakeLayout:
        return LakeLayout(self.config.lake_root)


def lake_database(layout: LakeLayout) -> DuckDBResource:
    """The lake's views database (``state/lake.duckdb``, built by the lake_views asset),
    opened read-only: DuckDB allows one writing process per file, and its only writer builds
    it under a temporary name (``build_lake_views``)."""
    return DuckDBResource(
        database=str(layout.duckdb_path), connection_config={"access_mode": "READ_ONLY"}
    )


@dg.definitions
def resources() -> dg.Definitions:
    lake = LakeResource()
    return dg.Definitions(resources={"lake": lake, "lake_db": lake_database(lake.layout)})
