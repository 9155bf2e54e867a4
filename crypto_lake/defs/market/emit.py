"""Record exactly the partitions a market step built, one materialization each.

Dagster records a step's output for the partitions its step context reports
(``dagster_partition_keys``). That is usually the run's whole range, but a backfill launched
from a job page reports only the range's first partition (see ``run_partition_keys``), and a
gated step (``bars_1m``) may build fewer partitions than the run asked for. The UI must show
what was really built, so the partitions Dagster would not record get an
``AssetMaterialization`` of their own, and a step that built fewer partitions than Dagster
would record yields no output at all (its asset is declared ``output_required=False``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from typing import Any

import dagster as dg

from crypto_lake.defs.market.metadata import combine_runs
from crypto_lake.defs.market.partitions import dagster_partition_keys

RunTotals = Callable[[dict[str, Any]], dict[str, Any]]


def materialize_partitions(
    context: Any,
    asset_key: str,
    per_partition: dict[str, dict[str, Any]],
    numeric: list[str],
    *,
    observed: Collection[str] | None = None,
    run_totals: RunTotals | None = None,
    separately: bool = False,
) -> Iterator[dg.MaterializeResult]:
    """Yield the step's result for ``asset_key`` given the metadata of each partition built.

    ``numeric`` are the integer keys summed into run totals; ``observed`` the keys each
    partition's observation keeps (default: ``numeric``); ``run_totals`` adds to the run
    totals (e.g. percentages of the summed counts).

    - Dagster records the same partitions as were built: one partition gets its own
      metadata; several get run totals plus one observation per partition with its numbers
      (Dagster attaches one result to every partition of a ranged output).
    - Dagster records a subset (job-page backfill): that subset's result as above, and one
      materialization with full metadata for each other built partition.
    - Dagster would record partitions that were not built, or ``separately`` (an asset whose
      partitions' metadata must each be complete in the UI: hashes, object URIs): no output;
      each built partition gets its own materialization (the asset is declared
      ``output_required=False``).
    """
    recorded = set(dagster_partition_keys(context))
    built = set(per_partition)
    if recorded <= built and not separately:
        for key in sorted(built - recorded):
            context.log_event(
                dg.AssetMaterialization(asset_key=asset_key, partition=key,
                                        metadata=per_partition[key])
            )  # fmt: skip
        own = {k: per_partition[k] for k in sorted(recorded)}
        yield _result(context, asset_key, own, numeric, observed or numeric, run_totals)
        return
    for key in sorted(built):
        context.log_event(
            dg.AssetMaterialization(asset_key=asset_key, partition=key, metadata=per_partition[key])
        )


def _result(
    context: Any,
    asset_key: str,
    per_partition: dict[str, dict[str, Any]],
    numeric: list[str],
    observed: Collection[str],
    run_totals: RunTotals | None,
) -> dg.MaterializeResult:
    if len(per_partition) <= 1:
        meta = next(iter(per_partition.values()), {})
        return dg.MaterializeResult(asset_key=asset_key, metadata=meta)
    for key, meta in per_partition.items():
        # Observations carry each partition's exact numbers without adding materializations.
        context.log_event(
            dg.AssetObservation(
                asset_key=asset_key,
                partition=key,
                metadata={k: v for k, v in meta.items() if k in observed},
            )
        )
    totals = combine_runs(per_partition, numeric)
    if run_totals is not None:
        totals.update(run_totals(totals))
    return dg.MaterializeResult(asset_key=asset_key, metadata=totals)


def record_unreported(
    context: Any, asset_key: str, claimed: Collection[str], metadata: dict[str, Any]
) -> None:
    """For a step that returns one result for its whole run (QA): the partitions it handled
    that Dagster would not record (a job-page backfill's run reports one) get a
    materialization each, so the UI shows every partition the run really wrote."""
    recorded = set(dagster_partition_keys(context))
    for key in sorted(set(claimed) - recorded):
        context.log_event(dg.AssetMaterialization(asset_key=asset_key, partition=key,
                                                  metadata=metadata))  # fmt: skip
