"""R1–R7 (SPEC §6) as one multi-asset check on bars_1s: one scan, seven results.

R1, R2 and R4 are critical: their checks are blocking with severity ERROR, so a failing
partition stops `bars_1m` in the same run (the market chain always runs ticks -> bars_1s ->
checks -> bars_1m together). The results are merged over the partitions of the run, so in a
ranged run one failing partition holds back `bars_1m` for the whole range; its worst rows name
the partition. The QA assets run on failing partitions on purpose: recording the violations is
their job.
"""

from collections.abc import Iterator
from typing import Any

import dagster as dg

from crypto_lake.defs.market.assets import partition_file
from crypto_lake.defs.market.metadata import markdown_table
from crypto_lake.defs.market.partitions import partition_pairs
from crypto_lake.defs.resources import LakeResource
from crypto_lake.lib.rules import evaluate_rules

MAX_WORST_ROWS = 10

# rule id -> (check name, blocking, description shown in the UI)
RULES: dict[str, tuple[str, bool, str]] = {
    "R1": ("r1_ohlc_order", True, "R1 (critical): low ≤ open, close ≤ high"),
    "R2": ("r2_positive_prices", True, "R2 (critical): open, high, low, close > 0"),
    "R3": ("r3_ask_ge_bid", False, "R3 (major): ask ≥ bid where both present"),
    "R4": ("r4_no_nan_ohlc", True, "R4 (critical): no NaN/NULL in O/H/L/C"),
    "R5": (
        "r5_continuity",
        False,
        "R5 (major): 1 s grid continuous, unique, aligned; no missing trade ids",
    ),
    "R6": ("r6_spread_sane", False, "R6 (minor): 0 ≤ spread_bps < 500 for > 99.9 % of rows"),
    "R7": ("r7_klines_parity", False, "R7 (major): 1 m rollup equals official klines exactly"),
}

CHECK_SPECS = [
    dg.AssetCheckSpec(
        name=name,
        asset="bars_1s",
        blocking=blocking,
        description=description,
        # R7 reads klines and R5 reads trades: run after them when they are in the same run.
        additional_deps=["binance_klines_1m", "trades"] if rule in ("R5", "R7") else [],
    )
    for rule, (name, blocking, description) in RULES.items()
]


def _run_partition_keys(context: dg.AssetCheckExecutionContext) -> list[str]:
    """The partitions of the run (one key, a range, or none for an unpartitioned run)."""
    try:
        return list(context.partition_keys)
    except Exception:  # unpartitioned run: nothing to check
        return []


def _merge(per_partition: dict[str, Any], rule: str) -> dict[str, Any]:
    """Combine one rule's results over the partitions of the run."""
    violations = checked = 0
    passed, skipped, worst = True, True, []
    for key, results in sorted(per_partition.items()):
        res = results[rule]
        violations += int(res.violations)
        checked += int(res.checked)
        passed = passed and bool(res.passed)
        skipped = skipped and bool(res.skipped)
        worst += [{"partition": key, **row} for row in (res.worst_rows or [])]
    return {
        "passed": passed,
        "violations": violations,
        "checked": checked,
        "rate": violations / checked if checked else 0.0,
        "skipped": skipped,
        "worst": worst[:MAX_WORST_ROWS],
    }


@dg.multi_asset_check(
    specs=CHECK_SPECS,
    can_subset=False,
    description="Data-quality rules R1–R7 over bars_1s in one scan per partition.",
)
def bars_1s_rules(
    context: dg.AssetCheckExecutionContext, lake: LakeResource
) -> Iterator[dg.AssetCheckResult]:
    layout = lake.layout
    per_partition: dict[str, Any] = {}
    for day, symbol in partition_pairs(_run_partition_keys(context)):
        klines = partition_file(layout, "klines_1m", symbol, day)
        trades = partition_file(layout, "trades", symbol, day)
        per_partition[f"{day}|{symbol}"] = evaluate_rules(
            partition_file(layout, "bars_1s", symbol, day),
            klines if klines.exists() else None,
            trades if trades.exists() else None,
        )
    for rule, (name, blocking, _description) in RULES.items():
        if not per_partition:
            yield dg.AssetCheckResult(
                check_name=name,
                passed=True,
                metadata={"note": "unpartitioned run: no bars_1s partition to check"},
            )
            continue
        merged = _merge(per_partition, rule)
        severity = dg.AssetCheckSeverity.ERROR if blocking else dg.AssetCheckSeverity.WARN
        yield dg.AssetCheckResult(
            asset_key="bars_1s",
            check_name=name,
            passed=merged["passed"],
            severity=severity,
            metadata={
                "violations": merged["violations"],
                "rate": float(merged["rate"]),
                "rows_checked": merged["checked"],
                "partitions_checked": len(per_partition),
                "partitions": dg.MetadataValue.text(", ".join(sorted(per_partition))),
                "skipped_no_input": dg.MetadataValue.bool(merged["skipped"]),
                "worst_rows": dg.MetadataValue.md(markdown_table(merged["worst"])),
            },
        )
