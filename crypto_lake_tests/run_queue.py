"""Dagster's own run-queue counter, fed as the queue daemon feeds it, for tests of pools."""

from collections.abc import Sequence

import dagster as dg
from dagster._core.op_concurrency_limits_counter import GlobalOpConcurrencyLimitsCounter


def pool_counter(
    instance: dg.DagsterInstance,
    queued: Sequence[dg.DagsterRun],
    in_progress: Sequence[dg.RunRecord] = (),
) -> GlobalOpConcurrencyLimitsCounter:
    """The counter one pass of the run queue uses: ``is_blocked(run)`` says whether a pool
    holds ``run`` back; ``update_counters_with_launched_item(run)`` takes its slots."""
    config = instance.get_concurrency_config()
    return GlobalOpConcurrencyLimitsCounter(
        instance,
        queued,
        in_progress,
        concurrency_keys=instance.event_log_storage.get_concurrency_keys(),
        pool_limits=instance.event_log_storage.get_pool_limits(),
        slot_count_offset=config.run_queue_config.op_concurrency_slot_buffer,
        pool_granularity=config.pool_config.pool_granularity,
    )
