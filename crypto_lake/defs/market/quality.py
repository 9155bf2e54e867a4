"""The quality gate of a market partition: which checks block, and whether one failed.

Check results belong to one (date, symbol) partition (``crypto_lake.defs.market.checks``
records one evaluation per partition, also in ranged runs). A downstream asset asks
``gate_failures`` before it builds a partition: whichever run or launch path asks (the
same run as the checks, a later refresh, a UI materialization of ``bars_1m`` alone), a
partition whose latest result of a blocking check failed is not built, and the message says
which rule failed and how to clear it. Dagster's own blocking mechanism cannot do this: it
acts only inside the run that evaluated the check, and stops the downstream step for every
partition of the run at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg
from dagster._core.event_api import PartitionKeyFilter
from dagster._core.storage.asset_check_execution_record import (
    AssetCheckExecutionRecordStatus as Status,
)

from crypto_lake.lib.qa.parity import RULE as PARITY_1S
from crypto_lake.lib.qa.rules import DESCRIPTION, SEVERITY


@dataclass(frozen=True)
class CheckRule:
    rule: str  # "R1".."R7", or a name for checks outside SPEC §6
    name: str  # the check's name in Dagster
    asset: str
    blocking: bool
    description: str


def _rule(rule: str, name: str) -> CheckRule:
    severity = SEVERITY[rule]
    text = f"{rule} ({severity}): {DESCRIPTION[rule]}"
    return CheckRule(rule, name, "bars_1s", severity == "critical", text)


# R1, R2 and R4 are critical (SPEC §6): they block.
BAR_RULES = [
    _rule("R1", "r1_ohlc_order"),
    _rule("R2", "r2_positive_prices"),
    _rule("R3", "r3_ask_ge_bid"),
    _rule("R4", "r4_no_nan_ohlc"),
    _rule("R5", "r5_continuity"),
    _rule("R6", "r6_spread_sane"),
]
PARITY_RULE = _rule("R7", "r7_klines_parity")
# A trade id received twice with different content: which copy is true cannot be known, so
# the partition is held back until a rebuild from corrected raw input finds no conflict.
CONFLICT_RULE = CheckRule(
    "trade_ids", "no_conflicting_trade_ids", "trades", True,
    "critical: no trade id received twice with different content (time, price, qty, side)",
)  # fmt: skip
GATES = [r for r in BAR_RULES if r.blocking] + [CONFLICT_RULE]
# The 1 s parity with Binance's public 1 s klines (crypto_lake.defs.market.history) runs where
# those klines are imported (history_import_job), not in every refresh of the bars.
PARITY_1S_CHECK = dg.AssetCheckKey(dg.AssetKey("bars_1s"), PARITY_1S)


def clear_hint(rule: CheckRule) -> str:
    return (
        f"fix its input (raw files of the partition) and materialize {rule.asset} again with "
        f"its checks (the market_day_job, or {rule.asset} from its asset page); the partition "
        "builds once its latest result passes"
    )


def latest_check(
    instance: dg.DagsterInstance, asset: str, check: str, partition_key: str
) -> tuple[dg.AssetCheckEvaluation, str, float] | None:
    """The latest completed evaluation of ``asset``'s check ``check`` for one partition, the
    id of the run that recorded it, and when (epoch seconds)."""
    key = dg.AssetCheckKey(dg.AssetKey(asset), check)
    records = instance.event_log_storage.get_asset_check_execution_history(
        key, limit=1, status={Status.SUCCEEDED, Status.FAILED},
        partition_filter=PartitionKeyFilter(key=partition_key),
    )  # fmt: skip
    if not records or records[0].event is None:
        return None
    event = records[0].event
    return event.dagster_event.event_specific_data, records[0].run_id, event.timestamp


def gate_failures(instance: dg.DagsterInstance, partition_key: str) -> list[str]:
    """Why ``partition_key`` must not feed downstream assets: one line per blocking check
    whose latest completed evaluation for that partition failed; empty when none did."""
    reasons = []
    for rule in GATES:
        latest = latest_check(instance, rule.asset, rule.name, partition_key)
        if latest is None or latest[0].passed:
            continue
        evaluation, run_id, _ = latest
        if evaluation.severity != dg.AssetCheckSeverity.ERROR:
            continue  # skipped (nothing recorded): a warning, not a failed rule
        violations = evaluation.metadata.get("violations")
        count = f"{violations.value} violations, " if violations is not None else ""
        reasons.append(
            f"{rule.name} ({rule.rule}) failed ({count}run {run_id[:8]}): {clear_hint(rule)}"
        )
    return reasons


def gates_not_passed(instance: dg.DagsterInstance, partition_key: str) -> list[str]:
    """Stricter than ``gate_failures``, for archiving: one line per blocking check whose
    latest evaluation for the partition is missing, skipped or failed."""
    reasons = []
    for rule in GATES:
        latest = latest_check(instance, rule.asset, rule.name, partition_key)
        if latest is None:
            reasons.append(f"{rule.name} ({rule.rule}) has no result for this partition: "
                           f"materialize {rule.asset} with its checks")  # fmt: skip
        elif not latest[0].passed:
            reasons.append(f"{rule.name} ({rule.rule}) did not pass: "
                           f"{latest[0].description or 'failed'}; {clear_hint(rule)}")  # fmt: skip
    return reasons
