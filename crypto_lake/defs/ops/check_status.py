"""Keeps every check's status per partition current in the instance, so the UI reads it in
milliseconds instead of working it out again on each page load (``crypto_lake/storage.py``).

The first computation at a year of partitions takes seconds (about 9 s for the 15 checks at
4,745 partitions each); after that, each pass applies what changed since the last one. The
webserver does the same on every page load, so this sensor only keeps that work off the
page: after a restart, a run deleted (history retention) or an asset wiped, the next pass
recomputes within a minute and the next page load is fast again.
"""

import time

import dagster as dg

from crypto_lake.storage import CheckStateCheckpoints

INTERVAL_SECONDS = 60


def refresh_check_status(instance: dg.DagsterInstance, asset_graph) -> tuple[int, float] | None:
    """Bring the checkpoint of every check in ``asset_graph`` up to date: (checks, seconds),
    or None when the instance's storage keeps no checkpoint (another dagster.yaml)."""
    storage = instance.event_log_storage
    if not isinstance(storage, CheckStateCheckpoints):
        return None
    keys = [(key, asset_graph.get(key).partitions_def) for key in asset_graph.asset_check_keys]
    started = time.monotonic()
    storage.get_asset_check_state(keys)
    return len(keys), time.monotonic() - started


@dg.sensor(
    name="check_status_checkpoint",
    minimum_interval_seconds=INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Every minute, brings the stored status of every check per partition up to "
    "date (crypto_lake/storage.py), so the checks page and asset graph load fast at months of "
    "partitions. Requests no runs.",
)
def check_status_checkpoint(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    done = refresh_check_status(context.instance, context.repository_def.asset_graph)
    if done is None:
        return dg.SkipReason(
            "this instance's storage keeps no check status checkpoint: dagster.yaml does not "
            "select crypto_lake.storage (see README, 'History in the instance')"
        )
    checks, seconds = done
    return dg.SkipReason(f"status of {checks} checks current ({seconds:.2f} s)")
