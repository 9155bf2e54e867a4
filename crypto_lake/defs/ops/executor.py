"""Runs execute their steps inside the run's own process (the in-process executor).

Dagster's default multiprocess executor starts one Python process per step, and each one
imports Dagster and this code location: several seconds each on the 2-core VM this system
targets, and close to a minute under load (measured while testing). The heavy steps here are
DuckDB scans that already use both cores, so running steps side by side gains nothing.
Parallelism comes from runs instead (``max_concurrent_runs`` in dagster.yaml). A Kubernetes
or Celery deployment overrides the executor in its own configuration.
"""

import dagster as dg


@dg.definitions
def executor() -> dg.Definitions:
    return dg.Definitions(executor=dg.in_process_executor)
