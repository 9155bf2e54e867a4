"""Resources shared by every domain: the lake (paths + configuration)."""

from __future__ import annotations

from functools import cached_property

import dagster as dg

from crypto_lake.lib.config import Config, load_config
from crypto_lake.lib.paths import LakeLayout


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


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={"lake": LakeResource()})
