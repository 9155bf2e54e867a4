"""The single Dagster entry point: everything under ``crypto_lake/defs`` is loaded from here."""

from pathlib import Path

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
