"""Run book_job of the real Definitions on a lake of synthetic depth days; print a JSON summary.

Run in a child process by ``test_book_asset.py``: the book partitions come from
``collector.depth.symbols``, which the code location reads once at import, so the test sets
it in this process's environment (``CRYPTO_LAKE__COLLECTOR__DEPTH__SYMBOLS``).

    python -m crypto_lake_tests.defs.book_runner LAKE_ROOT SPECS_JSON
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import dagster as dg

from crypto_lake.lib.book.synthetic import Faults, SyntheticSpec, write_day
from crypto_lake.lib.core.paths import LakeLayout
from crypto_lake.lib.raw.catalog import RawCatalog


def main(root: Path, specs: list[dict]) -> dict:
    from crypto_lake.definitions import defs
    from crypto_lake.defs.market.book import book_partitions, book_refresh_sensor
    from crypto_lake.defs.market.partitions import range_tags
    from crypto_lake.defs.raw.events import raw_batch

    layout = LakeLayout(root)
    truth: dict[str, list] = {}
    for item in specs:
        faults = Faults(**item.pop("faults", {}))
        spec = SyntheticSpec(**item, faults=faults, record_truth=True)
        made = write_day(spec, layout.raw_day_dir(spec.symbol, spec.day))
        key = f"{spec.day}|{spec.symbol}"
        # the true best bid/ask at the end of each recorded second (for the test to compare)
        truth[key] = [made.truth_sec, made.truth[0].tolist(), made.truth[40].tolist()]
    out: dict = {"partitions": [str(k) for k in book_partitions.get_partition_keys()][:3]}
    with dg.instance_for_test() as instance:
        # what the market refresh sensor records before any run
        batch = raw_batch(RawCatalog(layout).refresh(), {s["symbol"] for s in specs})
        for event in batch.events:
            instance.report_runless_asset_event(event)
        with dg.build_sensor_context(instance=instance) as context:
            requests = book_refresh_sensor(context)
        out["requests"] = [dict(r.tags) for r in requests]
        job = defs().resolve_job_def("book_job")
        runs = []
        for req in requests:
            result = job.execute_in_process(instance=instance, tags=req.tags, raise_on_error=False)
            runs.append(result.success)
            out.setdefault("checks", []).extend(
                {"partition": e.partition, "name": e.check_name, "passed": e.passed,
                 "severity": e.severity.value, "description": e.description,
                 "metadata": {k: getattr(v, "value", v) for k, v in e.metadata.items()
                              if k != "details"}}
                for e in result.get_asset_check_evaluations()
            )  # fmt: skip
        out["runs"] = runs
        records = instance.fetch_materializations(dg.AssetKey("book_1s"), limit=100).records
        out["materialized"] = sorted(r.partition_key for r in records)
        # a ranged run's materialization has run totals; each partition's numbers are in its
        # observation (crypto_lake.defs.market.emit)
        observed = instance.fetch_observations(dg.AssetKey("book_1s"), limit=100).records
        out["metadata"] = {}
        for r in [*records, *observed]:
            event = r.asset_materialization or r.asset_observation
            out["metadata"].setdefault(r.partition_key, {}).update(
                {k: v.value for k, v in event.metadata.items()
                 if isinstance(v.value, int | float | str | bool)}
            )  # fmt: skip
        day = specs[0]["day"]
        out["range_tags"] = range_tags([day], [specs[0]["symbol"]])
    out["truth"] = truth
    return out


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), json.loads(sys.argv[2]))))
