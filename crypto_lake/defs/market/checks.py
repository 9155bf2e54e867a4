"""R1–R7 (SPEC §6) as asset checks on bars_1s, with one result per (date, symbol) partition.

Two check steps: R1–R6 read only bars_1s (and trades for R5's trade ids), so they run and
gate even when Binance's REST API cannot be reached; R7 waits for binance_klines_1m and runs
whenever klines are materialized with bars_1s (a failed klines fetch fails the run visibly
and is retried by the klines asset's retry policy).

Why results are recorded by hand: Dagster 1.13 fills an ``AssetCheckResult``'s partition from
the step's single partition key only, so a ranged run (one run per date for every symbol,
``BackfillPolicy.single_run``) would get one merged result with no partition. The steps
therefore log one ``AssetCheckEvaluation`` per partition (the checks are declared with the
market partitions, so the UI lists them per partition), plus the empty outputs that let
downstream steps run. A failed critical rule does not stop the whole run: the gate
(``crypto_lake.defs.market.quality``) keeps only that partition's downstream assets from
building, in this run and in any later one. A rule with nothing to judge (a wholly
unrecorded partition, no klines, no comparable minute) is reported as skipped: a failed
check with severity WARN and the reason, never a pass.
"""

import warnings
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg

from crypto_lake.defs.market.assets import partition_file
from crypto_lake.defs.market.metadata import markdown_table
from crypto_lake.defs.market.partitions import (
    market_partitions,
    partition_pairs,
    run_partition_keys,
)
from crypto_lake.defs.market.quality import BAR_RULES, CONFLICT_RULE, PARITY_RULE, CheckRule
from crypto_lake.defs.resources import LakeResource
from crypto_lake.lib.core.schema import dataset
from crypto_lake.lib.market.dedup import load_trade_conflicts
from crypto_lake.lib.qa.rules import RuleResult, evaluate_r7, evaluate_rules

# Partitioned asset checks are a preview in Dagster 1.13; we rely on them on purpose.
warnings.filterwarnings("ignore", message=".*partitions_def.*AssetCheckSpec.*")
warnings.filterwarnings("ignore", category=dg.PreviewWarning, module=__name__)

MAX_WORST_ROWS = 10
BARS = dg.AssetKey("bars_1s")
TRADES = dg.AssetKey("trades")


def _spec(rule: CheckRule, deps: list[str]) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        name=rule.name,
        asset=rule.asset,
        blocking=rule.blocking,
        description=rule.description,
        additional_deps=deps,
        partitions_def=market_partitions,
    )


BAR_SPECS = [_spec(r, ["trades"] if r.rule == "R5" else []) for r in BAR_RULES]
CONFLICT_SPECS = [_spec(CONFLICT_RULE, [])]
PARITY_SPECS = [_spec(PARITY_RULE, ["binance_klines_1m"])]


def target_of(instance: dg.DagsterInstance, key: str, asset: dg.AssetKey = BARS) -> Any:
    """The materialization a partition's result is about (for the UI's link)."""
    from dagster._core.definitions.asset_checks.asset_check_evaluation import (
        AssetCheckEvaluationTargetMaterializationData as Target,
    )

    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset, asset_partitions=[key]), limit=1
    ).records
    if not records:
        return None
    mat = records[0]
    return Target(storage_id=mat.storage_id, run_id=mat.run_id, timestamp=mat.timestamp)


def evaluation(
    rule: CheckRule, key: str, res: RuleResult, target: Any, extra: dict[str, Any] | None = None
) -> dg.AssetCheckEvaluation:
    """One rule's result for one partition, as the UI shows it (``extra``: more metadata)."""
    if res.skipped:
        passed, severity = False, dg.AssetCheckSeverity.WARN
        description = f"Skipped: {res.reason}"
    else:
        passed = bool(res.passed)
        blocking = rule.blocking
        severity = dg.AssetCheckSeverity.ERROR if blocking else dg.AssetCheckSeverity.WARN
        description = rule.description
    return dg.AssetCheckEvaluation(
        asset_key=dg.AssetKey(rule.asset),
        check_name=rule.name,
        passed=passed,
        severity=severity,
        description=description,
        partition=key,
        target_materialization_data=target,
        # The gate acts per partition (quality.gate_failures); flagged blocking, Dagster
        # would stop the downstream step for every partition of a ranged run.
        blocking=False,
        metadata={
            "violations": int(res.violations),
            "rate": float(res.rate),
            "rows_checked": int(res.checked),
            "skipped": dg.MetadataValue.bool(bool(res.skipped)),
            "reason": dg.MetadataValue.text(res.reason or ("passed" if passed else "failed")),
            "worst_rows": dg.MetadataValue.md(markdown_table(res.worst_rows[:MAX_WORST_ROWS])),
            **(extra or {}),
        },
    )


def conflict_result(conflicts: list[dict]) -> RuleResult:
    """The conflicting trade ids the partition's last ticks build saved, as a rule result."""
    rows = [{"trade_id": c.get("trade_id"), "copies": len(c.get("copies", [])),
             "detail": c.get("error") or "; ".join(
                 f"price={x.get('price')} qty={x.get('qty')} time_us={x.get('ts_event_us')}"
                 for x in c.get("copies", [])[:3])} for c in conflicts]  # fmt: skip
    return RuleResult(CONFLICT_RULE.rule, "critical", not conflicts, len(conflicts),
                      1.0 if conflicts else 0.0, rows, CONFLICT_RULE.description,
                      len(conflicts))  # fmt: skip


def check_outputs(specs: list[dg.AssetCheckSpec]) -> Iterator[dg.Output]:
    """The step's outputs: empty values downstream steps wait for (results are logged)."""
    for spec in specs:
        yield dg.Output(None, output_name=spec.get_python_identifier())


Judge = Callable[[str, str], dict[str, RuleResult]]


def _rules_per_partition(
    context: dg.AssetCheckExecutionContext,
    rules: list[CheckRule],
    specs: list[dg.AssetCheckSpec],
    judge: Judge,
) -> Iterator[dg.AssetCheckEvaluation | dg.Output]:
    """A check step: ``judge(day, symbol)`` (results keyed by rule id) for every partition of
    the run, one evaluation per rule and partition, then the step's outputs."""
    asset = dg.AssetKey(rules[0].asset)
    for day, symbol in partition_pairs(run_partition_keys(context)):
        key = f"{day}|{symbol}"
        results, target = judge(day, symbol), target_of(context.instance, key, asset)
        for rule in rules:
            yield evaluation(rule, key, results[rule.rule], target)
        failed = [r.rule for r in rules if not results[r.rule].passed]
        skipped = [r.rule for r in rules if results[r.rule].skipped]
        context.log.info(f"{key}: skipped {skipped}" if skipped else
                         f"{key}: failed {failed}" if failed else f"{key}: passed")  # fmt: skip
    yield from check_outputs(specs)


@dg.multi_asset_check(
    specs=BAR_SPECS,
    can_subset=False,
    description="R1–R6 over bars_1s in one scan per partition; one result per partition.",
)
def bars_1s_rules(
    context: dg.AssetCheckExecutionContext, lake: LakeResource
) -> Iterator[dg.AssetCheckEvaluation | dg.Output]:
    layout = lake.layout

    def judge(day: str, symbol: str) -> dict[str, RuleResult]:
        trades = partition_file(layout, "trades", symbol, day)
        bars = partition_file(layout, "bars_1s", symbol, day)
        return evaluate_rules(bars, None, trades if trades.exists() else None)

    yield from _rules_per_partition(context, BAR_RULES, BAR_SPECS, judge)


@dg.multi_asset_check(
    specs=PARITY_SPECS,
    can_subset=False,
    description="R7: bars_1s rolled up to minutes equal Binance's official 1 m klines.",
)
def bars_1s_klines_parity(
    context: dg.AssetCheckExecutionContext, lake: LakeResource
) -> Iterator[dg.AssetCheckEvaluation | dg.Output]:
    layout = lake.layout

    def judge(day: str, symbol: str) -> dict[str, RuleResult]:
        klines = partition_file(layout, "klines_1m", symbol, day)
        bars = partition_file(layout, "bars_1s", symbol, day)
        return {PARITY_RULE.rule: evaluate_r7(bars, klines if klines.exists() else None)}

    yield from _rules_per_partition(context, [PARITY_RULE], PARITY_SPECS, judge)


@dg.multi_asset_check(
    specs=CONFLICT_SPECS,
    can_subset=False,
    description="Trade ids received twice with different content, as the ticks step found them.",
)
def trades_conflicts(
    context: dg.AssetCheckExecutionContext, lake: LakeResource
) -> Iterator[dg.AssetCheckEvaluation | dg.Output]:
    def judge(day: str, symbol: str) -> dict[str, RuleResult]:
        return {CONFLICT_RULE.rule: conflict_result(load_trade_conflicts(lake.layout, symbol, day))}

    yield from _rules_per_partition(context, [CONFLICT_RULE], CONFLICT_SPECS, judge)


# --- the tables' pandera contracts (lib/core/contracts.py) -------------------------------------
SCHEMA_CONTRACT = "schema_contract"


def _contract_spec(asset: str) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        name=SCHEMA_CONTRACT,
        asset=asset,
        blocking=False,
        description=f"The partition's {asset} file matches its table definition "
        "(crypto_lake/lib/core/schema.py): the Arrow schema, and the pandera contract: dtypes, "
        "nullability, value bounds, row rules, unique key and row order.",
        partitions_def=market_partitions,
    )


def contract_evaluation(asset: str, key: str, path: Path, target: Any) -> dg.AssetCheckEvaluation:
    """One partition's file against its contract, as the UI shows it (WARN: the writers
    already check the columns, so a failure is a value that breaks a rule of the table)."""
    from crypto_lake.lib.core.contracts import validate_file  # pandera: when a check runs

    version = dataset(asset).version
    meta: dict[str, Any] = {"schema_version": version}
    if not path.exists():
        passed, description, rows, count = False, f"Skipped: no {asset} file", 0, 0
        failures: list[dict[str, Any]] = []
    else:
        res = validate_file(path, asset)
        passed, rows, count, failures = res.passed, res.rows, res.failure_count, res.failures
        description = f"{asset} v{version}: " + ("contract holds" if passed else
                                                  f"{count} contract failure(s)")  # fmt: skip
    meta.update({
        "rows_checked": rows,
        "failures": count,
        "skipped": dg.MetadataValue.bool(not path.exists()),
        "failure_cases": dg.MetadataValue.md(markdown_table(failures[:MAX_WORST_ROWS])),
    })  # fmt: skip
    return dg.AssetCheckEvaluation(
        asset_key=dg.AssetKey(asset),
        check_name=SCHEMA_CONTRACT,
        passed=passed,
        severity=dg.AssetCheckSeverity.WARN,
        description=description,
        partition=key,
        target_materialization_data=target,
        blocking=False,
        metadata=meta,
    )


def _contract_check(asset: str, closed_days_only: bool = False) -> dg.AssetChecksDefinition:
    """``closed_days_only``: today's partitions (rebuilt every few minutes by the refresh) are
    left unevaluated; the finalize run after midnight evaluates the whole day once."""
    spec = _contract_spec(asset)

    @dg.multi_asset_check(
        name=f"{asset}_{SCHEMA_CONTRACT}",
        specs=[spec],
        can_subset=False,
        description=f"{asset}'s pandera contract, one result per partition.",
    )
    def check(
        context: dg.AssetCheckExecutionContext, lake: LakeResource
    ) -> Iterator[dg.AssetCheckEvaluation | dg.Output]:
        key_of = dg.AssetKey(asset)
        today = datetime.now(UTC).date().isoformat()
        for day, symbol in partition_pairs(run_partition_keys(context)):
            key = f"{day}|{symbol}"
            if closed_days_only and day >= today:
                context.log.info(f"{asset} {key}: contract evaluated once the day is closed")
                continue
            path = partition_file(lake.layout, asset, symbol, day)
            yield contract_evaluation(asset, key, path, target_of(context.instance, key, key_of))
        yield from check_outputs([spec])

    return check


# About 1.2 s per day of 1 s bars (86,400 rows as pandas objects): once per closed day.
bars_1s_schema_contract = _contract_check("bars_1s", closed_days_only=True)
bars_1m_schema_contract = _contract_check("bars_1m")  # 1,440 rows: cheap
