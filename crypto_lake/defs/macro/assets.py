"""macro_minute (yfinance 1-minute bars) and dxy_synthetic_minute (ICE formula from FX bars)."""

import warnings
from datetime import UTC, datetime

import dagster as dg

from crypto_lake.defs.macro.partitions import dxy_partitions, macro_partitions, split_macro_key
from crypto_lake.defs.resources import LakeResource
from crypto_lake.defs.table_schemas import asset_description, column_schema, table_metadata
from crypto_lake.lib.core.config import MacroConfig
from crypto_lake.lib.macro.source_health import Breaker, record_failure, record_success
from crypto_lake.lib.macro.store import (
    DXY_WEIGHTS,
    PartitionOutcome,
    refresh_dxy,
    refresh_partition,
)
from crypto_lake.lib.macro.yahoo import YahooFetchError, YahooSettings

# BackfillPolicy is beta in Dagster 1.13 but is the documented way to get one run per day.
warnings.filterwarnings("ignore", message=".*backfill_policy.*", category=dg.BetaWarning)

# Yahoo rate-limits per IP: steps that call it share this pool, and the instance admits one
# run of a pool at a time (concurrency.pools in dagster.yaml), however the run was launched.
YAHOO_POOL = "yahoo"
COVERAGE_CHECK = "in_session_minutes_complete"

BAR_COLUMNS = column_schema("macro_1m")  # lib/core/schema.py


def yahoo_settings(lake: LakeResource) -> YahooSettings:
    m = lake.config.macro
    return YahooSettings(
        base_url=m.yahoo_base_url,
        timeout_seconds=m.request_timeout_seconds,
        max_attempts=m.max_attempts,
        connect_attempts=m.connect_attempts,
        backoff_base_seconds=m.backoff_base_seconds,
        backoff_cap_seconds=m.backoff_cap_seconds,
        cache_dir=lake.layout.state_dir / "yfinance",
    )


def outcome_metadata(o: PartitionOutcome) -> dict[str, object]:
    cov = o.coverage
    return {
        "dagster/row_count": o.stored_rows,
        "dagster/uri": dg.MetadataValue.path(str(o.path)),
        "dagster/column_schema": BAR_COLUMNS,
        "status": o.status,
        "got_nothing": o.got_nothing,
        "fetched_rows": o.fetched_rows,
        "stored_rows_before": o.stored_rows_before,
        "new_minutes": o.new_minutes,
        "file_changed": o.file_changed,
        "in_session_minutes": cov.in_session_minutes,
        "missing_in_session_minutes": cov.missing_in_session,
        "missing_fraction": round(cov.missing_fraction, 6),
        "rows_outside_session": cov.rows_outside_session,
        "missing_ranges": dg.MetadataValue.json([list(r) for r in cov.missing_ranges]),
        "first_ts": o.first_ts or "",
        "last_ts": o.last_ts or "",
        "attempts": o.attempts,
        "rate_limited_retries": o.rate_limited,
        "dropped_incomplete": o.dropped_incomplete,
        "dropped_invalid": o.dropped_invalid,
        "dropped_outside_day": o.dropped_outside_day,
        "yahoo_reason": o.reason,
    }


def _worst_entry(o: PartitionOutcome) -> dict[str, object]:
    return {
        "partition": f"{o.day}|{o.ticker}",
        "missing": o.coverage.missing_in_session,
        "fraction": round(o.coverage.missing_fraction, 6),
    }


def coverage_check(outcomes: list[PartitionOutcome], max_missing: float) -> dg.AssetCheckResult:
    """One check result for the run: passes when every partition is within the threshold."""
    worst = sorted(outcomes, key=lambda o: o.coverage.missing_fraction, reverse=True)
    failing = [o for o in worst if o.coverage.missing_fraction > max_missing]
    return dg.AssetCheckResult(
        check_name=COVERAGE_CHECK,
        passed=not failing,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "partitions_checked": len(outcomes),
            "partitions_over_threshold": len(failing),
            "missing_in_session_minutes": sum(o.coverage.missing_in_session for o in outcomes),
            "in_session_minutes": sum(o.coverage.in_session_minutes for o in outcomes),
            "max_missing_fraction": max_missing,
            "worst": dg.MetadataValue.json([_worst_entry(o) for o in worst[:10]]),
        },
    )


@dg.asset(
    partitions_def=macro_partitions,
    group_name="macro",
    kinds={"parquet", "python"},
    pool=YAHOO_POOL,
    # One run per day covers every ticker (UI backfills and the schedule alike).
    backfill_policy=dg.BackfillPolicy.single_run(),
    check_specs=[dg.AssetCheckSpec(COVERAGE_CHECK, asset="macro_minute")],
    description=asset_description(
        "macro_1m",
        "A refresh merges Yahoo's answer into what is stored: an empty or failed answer leaves "
        "the file as it was. Metadata per partition: stored rows, what this fetch brought "
        "(`got_nothing`), and the minutes missing inside the ticker's trading hours (weekends "
        "and holidays don't count).",
    ),
    metadata=table_metadata("macro_1m"),
)
def macro_minute(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    settings, now = yahoo_settings(lake), datetime.now(UTC)
    policy = lake.config.macro
    outcomes: list[PartitionOutcome] = []
    failures: dict[str, str] = {}
    skipped: list[str] = []
    down_in_a_row = 0  # this run's consecutive source failures
    for key in sorted(context.partition_keys):
        day, ticker = split_macro_key(key)
        if down_in_a_row >= policy.breaker_failures:
            skipped.append(key)  # Yahoo is down: the other tickers would only fail the same way
            continue
        try:
            outcome = refresh_partition(lake.layout, ticker, day, now, settings)
        except YahooFetchError as exc:
            # Keep going: the other tickers of the day still get their bars stored.
            failures[key] = str(exc)
            down_in_a_row = record_fetch(lake, policy, exc, down_in_a_row)
            context.log.error(f"{key}: {exc}; stored bars left unchanged")
            continue
        if outcome.attempts:  # Yahoo was asked and answered
            down_in_a_row = record_fetch(lake, policy, None, down_in_a_row)
        outcomes.append(outcome)
        context.add_asset_metadata(outcome_metadata(outcome), partition_key=key)
        context.log.info(
            f"{key}: {outcome.status}, fetched {outcome.fetched_rows}, stored "
            f"{outcome.stored_rows}, missing in session {outcome.coverage.missing_in_session}"
        )
    if failures or skipped:
        raise run_failure(failures, skipped, len(context.partition_keys), down_in_a_row)
    check = coverage_check(outcomes, lake.config.macro.max_missing_fraction)
    return dg.MaterializeResult(check_results=[check])


def record_fetch(
    lake: LakeResource, policy: MacroConfig, error: YahooFetchError | None, down_in_a_row: int
) -> int:
    """Record one fetch in the source health (state/macro_source.json); returns the run's
    count of consecutive source failures. Yahoo answering, even with an error about one
    ticker, means the source is up."""
    if error is not None and error.source_down:
        record_failure(lake.layout, str(error), breaker=Breaker.of(policy))
        return down_in_a_row + 1
    record_success(lake.layout)
    return 0


def run_failure(
    failures: dict[str, str], skipped: list[str], total: int, down_in_a_row: int
) -> dg.Failure:
    """The run's failure: which partitions Yahoo failed, and which were not tried because
    Yahoo was unreachable (the stored bars of both are unchanged)."""
    parts = []
    if failures:
        parts.append(f"Yahoo failed for {len(failures)} of {total} partitions "
                     f"({', '.join(sorted(failures))})")  # fmt: skip
    if skipped:
        parts.append(f"{len(skipped)} partitions were not tried because Yahoo was unreachable "
                     f"for {down_in_a_row} fetches in a row ({', '.join(skipped)}); the macro "
                     "sensor queues no runs until its next probe")  # fmt: skip
    return dg.Failure(
        description="; ".join(parts) + "; stored bars were left unchanged and the other "
        "partitions' files were refreshed.",
        metadata={
            "failed_partitions": dg.MetadataValue.json(failures),
            "skipped_partitions": dg.MetadataValue.json(skipped),
        },
    )


@dg.asset(
    partitions_def=dxy_partitions,
    group_name="macro",
    kinds={"parquet", "duckdb"},
    # Default mapping (day -> every ticker of that day); naming the beta
    # MultiToSingleDimensionPartitionMapping would only add a warning.
    deps=["macro_minute"],
    backfill_policy=dg.BackfillPolicy.single_run(),
    description=asset_description(
        "dxy_synthetic_1m", "Never shrinks what is stored (inputs: the asset macro_minute)."
    ),
    metadata=table_metadata("dxy_synthetic_1m"),
)
def dxy_synthetic_minute(
    context: dg.AssetExecutionContext, lake: LakeResource
) -> dg.MaterializeResult:
    for day in sorted(context.partition_keys):
        out = refresh_dxy(lake.layout, day)
        if out.missing_inputs:
            context.log.warning(f"DXY {day}: no bars for {', '.join(out.missing_inputs)}")
        context.add_asset_metadata(
            {
                "dagster/row_count": out.stored_rows,
                "dagster/uri": dg.MetadataValue.path(str(out.path)),
                "dagster/column_schema": column_schema("dxy_synthetic_1m"),
                "computed_minutes": out.rows,
                "got_nothing": out.rows == 0,
                "minutes_with_some_inputs_missing": out.minutes_with_some_inputs,
                "missing_inputs": dg.MetadataValue.json(out.missing_inputs),
                "inputs": dg.MetadataValue.json(list(DXY_WEIGHTS)),
                "file_changed": out.file_changed,
            },
            partition_key=day,
        )
    return dg.MaterializeResult()
