"""Market tables per (date, symbol): trades and quotes from raw, 1 s and 1 m bars, official klines.

Every asset writes its own partition file atomically (the lib functions do: temp + rename),
so a re-run replaces rather than duplicates. With ``BackfillPolicy.single_run()`` a UI
backfill launches one run per range along one dimension, whichever gives fewer runs (2 dates
× 13 symbols: a run per date, see ``crypto_lake_tests/e2e``; 180 dates × 13 symbols: a run
per symbol, ``bench/bench_klines_backfill.py --ui``), so an asset may receive several
partition keys and loops over ``run_partition_keys(context)``: the partitions the
run claims, also for a backfill launched from a job page, whose runs Dagster's step context
reports as one partition. ``materialize_partitions`` records exactly the partitions built.
"""

import time
import warnings
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg

from crypto_lake.defs.market.emit import materialize_partitions
from crypto_lake.defs.market.metadata import base_metadata, parquet_preview
from crypto_lake.defs.market.partitions import (
    market_partitions,
    partition_pairs,
    run_partition_keys,
    shift_day,
)
from crypto_lake.defs.market.quality import gate_failures
from crypto_lake.defs.market.stats import (
    bar_stats_metadata,
    load_outages,
    save_outages,
    tick_stats_metadata,
)
from crypto_lake.defs.resources import LakeResource
from crypto_lake.defs.table_schemas import asset_description, table_metadata
from crypto_lake.lib.archive.day import with_compacted
from crypto_lake.lib.core.paths import LakeLayout
from crypto_lake.lib.history.importer import archive_trades
from crypto_lake.lib.market.bars import build_bars_1m, build_bars_1s, last_trade_price
from crypto_lake.lib.market.dedup import trade_conflicts_path
from crypto_lake.lib.market.klines import (
    KlinesBanned,
    KlinesClient,
    KlinesError,
    RestUsage,
    StoredKlines,
    stored_klines,
    utc_text,
    write_klines_day,
)
from crypto_lake.lib.market.outages import with_unrecorded_tail
from crypto_lake.lib.market.parallel import map_partitions
from crypto_lake.lib.market.ticks import TickStats, build_ticks
from crypto_lake.lib.raw.catalog import RawCatalog, day_bounds_us
from crypto_lake.lib.raw.heartbeat import recording_until

# BackfillPolicy is beta in Dagster 1.13. We rely on it on purpose (a UI backfill becomes one
# run per date instead of one per date × symbol), so only that notice is silenced.
warnings.filterwarnings("ignore", message=".*backfill_policy.*", category=dg.BetaWarning)
SINGLE_RUN = dg.BackfillPolicy.single_run()
GROUP = "market"
# Runs that write market partitions never overlap: every writer is in this pool, and the
# instance admits one run of a pool at a time (concurrency.pools, granularity run, in
# dagster.yaml), whichever launched it: a refresh and a finalize of the same day, a UI
# backfill beside a schedule. Otherwise two runs could each rename their own files into
# place and leave trades, bars and their metadata from different runs.
MARKET_POOL = "lake_market"


def partition_file(layout: LakeLayout, dataset: str, symbol: str, day: str) -> Path:
    return layout.market_file(dataset, symbol, day)


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            "trades",
            # Binance's public daily file, when imported (binance_trades_archive, not declared:
            # it is optional), fills every trade id the raw files lack (source = archive)
            deps=["raw_market_events"],
            description=asset_description("trades"),
            metadata=table_metadata("trades"),
            kinds={"parquet", "duckdb"},
        ),
        dg.AssetSpec(
            "quotes",
            deps=["raw_market_events"],
            description=asset_description("quotes"),
            metadata=table_metadata("quotes"),
            kinds={"parquet", "duckdb"},
        ),
    ],
    partitions_def=market_partitions,
    backfill_policy=SINGLE_RUN,
    group_name=GROUP,
    pool=MARKET_POOL,
    can_subset=False,
)
def ticks(context: dg.AssetExecutionContext, lake: LakeResource):
    """trades + quotes in one pass over the raw files (parsing is the expensive part)."""
    layout = lake.layout
    catalog = RawCatalog(layout)
    trades_meta: dict[str, dict[str, Any]] = {}
    quotes_meta: dict[str, dict[str, Any]] = {}
    # The sealed files on disk for each partition, whether or not the refresh sensor has
    # catalogued them yet (files_for looks at the day's folders first); a day folder with a
    # verified compacted archive is read from that one file (its minute files may be gone).
    jobs = [(day, symbol, with_compacted(layout, symbol, day, catalog.files_for(symbol, day)))
            for day, symbol in partition_pairs(run_partition_keys(context))]  # fmt: skip

    def build(job: tuple[str, str, list[Path]]) -> TickStats:
        day, symbol, raw_files = job
        stats = build_ticks(raw_files, symbol, day, partition_file(layout, "trades", symbol, day),
                            partition_file(layout, "quotes", symbol, day),
                            layout.quarantine_root / symbol / day,
                            seconds_out=layout.tick_seconds_path(symbol, day),
                            conflicts_out=trade_conflicts_path(layout, symbol, day),
                            archive=archive_trades(layout, lake.config, symbol, day))  # fmt: skip
        recording = recording_until(layout.heartbeat_path, symbol)
        stats.outages, stats.outage_kinds = with_unrecorded_tail(
            stats.outages, stats.outage_kinds, day_bounds_us(day)[1], stats.max_ts_recv_us,
            now_us=time.time_ns() // 1000, recorded_after=catalog.recorded_after(symbol, day),
            connected_since_us=None if recording is None else recording.since_us,
        )  # fmt: skip
        save_outages(layout, symbol, day, stats)
        return stats

    for (day, symbol, raw_files), stats in map_partitions(build, jobs):
        key = f"{day}|{symbol}"
        if not raw_files and not stats.archive_file_trades:
            context.log.warning(f"{key}: no sealed raw files and no imported public file; "
                                "wrote empty tables")  # fmt: skip
        trades_out = partition_file(layout, "trades", symbol, day)
        quotes_out = partition_file(layout, "quotes", symbol, day)
        tmeta, qmeta = tick_stats_metadata(stats)
        trades_meta[key] = {**base_metadata(trades_out, stats.trade_rows, "trades"), **tmeta}
        trades_meta[key]["preview"] = dg.MetadataValue.md(parquet_preview(trades_out))
        quotes_meta[key] = {**base_metadata(quotes_out, stats.quote_rows, "quotes"), **qmeta}
        quotes_meta[key]["preview"] = dg.MetadataValue.md(parquet_preview(quotes_out))
        filled = f" ({stats.archive_trades} from the public file)" if stats.archive_trades else ""
        context.log.info(f"{key}: {stats.trade_rows} trades{filled}, {stats.quote_rows} quotes")
    numeric_t = ["dagster/row_count", "duplicates_dropped", "bad_lines", "trade_id_gaps_open",
                 "missing_trade_ids", "repaired_trades", "archive_trades", "raw_files",
                 "trade_id_conflicts"]  # fmt: skip
    numeric_q = ["dagster/row_count", "bad_lines", "raw_files"]
    yield from materialize_partitions(context, "trades", trades_meta, numeric_t)
    yield from materialize_partitions(context, "quotes", quotes_meta, numeric_q)


@dg.asset(
    deps=["trades", "quotes"],
    partitions_def=market_partitions,
    backfill_policy=SINGLE_RUN,
    group_name=GROUP,
    pool=MARKET_POOL,
    kinds={"parquet", "duckdb"},
    description=asset_description(
        "bars_1s",
        "Checked by R1–R7 (R1, R2, R4 block downstream assets) and by its schema contract.",
    ),
    metadata=table_metadata("bars_1s"),
)
def bars_1s(context: dg.AssetExecutionContext, lake: LakeResource):
    layout = lake.layout
    per: dict[str, dict[str, Any]] = {}
    for day, symbol in partition_pairs(run_partition_keys(context)):
        out = partition_file(layout, "bars_1s", symbol, day)
        # Seconds before the day's first trade carry the previous day's last price; if that
        # day's trades are (re)built later, `bars_after_previous_day` rebuilds these bars.
        previous_close = last_trade_price(
            partition_file(layout, "trades", symbol, shift_day(day, -1))
        )
        stats = build_bars_1s(
            partition_file(layout, "trades", symbol, day),
            partition_file(layout, "quotes", symbol, day),
            symbol,
            day,
            out,
            outages=load_outages(layout, symbol, day),
            previous_close=previous_close,
            seconds=layout.tick_seconds_path(symbol, day),
            # today's grid runs to when the collector was last known to record the symbol
            recording=recording_until(layout.heartbeat_path, symbol),
        )
        key = f"{day}|{symbol}"
        per[key] = {**base_metadata(out, stats.rows, "bars_1s"), **bar_stats_metadata(stats)}
        per[key][PREVIOUS_CLOSE] = previous_close_text(previous_close)
        per[key]["preview"] = dg.MetadataValue.md(parquet_preview(out))
    numeric = ["dagster/row_count", "missing_seconds", "empty_rows", "outage_seconds",
               "repaired_rows", "archive_rows", "trade_count"]  # fmt: skip
    yield from materialize_partitions(context, "bars_1s", per, numeric)


@dg.asset(
    deps=["bars_1s"],
    partitions_def=market_partitions,
    backfill_policy=SINGLE_RUN,
    group_name=GROUP,
    pool=MARKET_POOL,
    kinds={"parquet", "duckdb"},
    output_required=False,  # a partition its gate refuses gets no materialization
    description=asset_description(
        "bars_1m",
        "Compared with Binance's official 1 m klines by check R7. A partition whose latest "
        "result of a blocking check (R1, R2, R4) failed is not built, whichever run asks; the "
        "others are.",
    ),
    metadata=table_metadata("bars_1m"),
)
def bars_1m(context: dg.AssetExecutionContext, lake: LakeResource):
    layout = lake.layout
    per: dict[str, dict[str, Any]] = {}
    refused: dict[str, list[str]] = {}
    for day, symbol in partition_pairs(run_partition_keys(context)):
        key = f"{day}|{symbol}"
        reasons = gate_failures(context.instance, key)
        if reasons:
            refused[key] = reasons
            context.log.error(f"bars_1m {key} not built: " + "; ".join(reasons))
            continue
        out = partition_file(layout, "bars_1m", symbol, day)
        stats = build_bars_1m(partition_file(layout, "bars_1s", symbol, day), out)
        per[key] = {**base_metadata(out, stats.rows, "bars_1m"), **bar_stats_metadata(stats, 60)}
        per[key]["preview"] = dg.MetadataValue.md(parquet_preview(out))
    numeric = ["dagster/row_count", "missing_rows", "archive_rows", "trade_count"]
    yield from materialize_partitions(context, "bars_1m", per, numeric)
    if refused:
        lines = "\n".join(f"- {key}: {'; '.join(r)}" for key, r in sorted(refused.items()))
        raise dg.Failure(
            description=f"bars_1m not built for {len(refused)} partition(s) whose blocking "
            f"checks failed ({len(per)} built):\n{lines}",
            metadata={"refused_partitions": dg.MetadataValue.text(", ".join(sorted(refused)))},
        )


PREVIOUS_CLOSE = "previous_close"


def previous_close_text(price: Decimal | None) -> str:
    """How bars_1s metadata records the previous day's last price it used."""
    return "none" if price is None else str(price)


KLINES_NUMERIC = ["dagster/row_count", "minutes_expected", "missing_minutes", "requests",
                  "weight_used", "http_429"]  # fmt: skip
REST_BAN_FILE = "binance_rest_ban.json"  # under the lake's state/: a 418 ban's end, for every run


@dg.asset(
    partitions_def=market_partitions,
    backfill_policy=SINGLE_RUN,
    group_name=GROUP,
    pool=MARKET_POOL,
    kinds={"parquet", "binance"},
    retry_policy=dg.RetryPolicy(max_retries=2, delay=10),
    description=asset_description(
        "klines_1m",
        "Fetched in pages of 1000 within a share of Binance's request-weight limit "
        "(binance.rest_weight_budget_share, paced by X-MBX-USED-WEIGHT-1M), honouring "
        "Retry-After. A closed day whose file is complete is not fetched again, so a backfill "
        "that stopped (an IP ban, HTTP 418, stops it at once, recording the partitions done) "
        "resumes where it stopped when launched again. Each partition says how many minutes "
        "were expected, whether it is complete, and the requests and weight it cost.",
    ),
    metadata=table_metadata("klines_1m"),
)
def binance_klines_1m(context: dg.AssetExecutionContext, lake: LakeResource):
    layout = lake.layout
    client = klines_client(lake)
    per: dict[str, dict[str, Any]] = {}
    not_fetched: list[str] = []
    stopped: KlinesError | None = None
    for day, symbol in partition_pairs(run_partition_keys(context)):
        key = f"{day}|{symbol}"
        out = partition_file(layout, "klines_1m", symbol, day)
        stored = stored_klines(out, symbol, day)
        if stored is not None and stored.complete:  # a closed day already complete: keep it
            per[key] = klines_metadata(out, stored, RestUsage(), fetched=False)
            continue
        if stopped is not None:
            not_fetched.append(key)
            continue
        try:
            fetched = client.fetch_day(symbol, day)
        except KlinesError as exc:
            stopped = exc
            not_fetched.append(key)
            context.log.error(f"{key}: {exc}")
            continue
        stored = write_klines_day(fetched, out)
        per[key] = klines_metadata(out, stored, fetched.usage, fetched=True)
        per[key]["source"] = dg.MetadataValue.url(f"{client.base_url}/api/v3/klines")
        context.log.info(f"{key}: {stored.rows} klines of {stored.minutes_expected} minutes "
                         f"expected, {fetched.usage.requests} requests")  # fmt: skip
    observed = [*KLINES_NUMERIC, "complete", "fetched"]
    yield from materialize_partitions(
        context, "binance_klines_1m", per, KLINES_NUMERIC, observed=observed,
        run_totals=lambda _: klines_run_totals(per, client.usage), separately=stopped is not None,
    )  # fmt: skip
    if stopped is not None:
        raise klines_failure(stopped, per, not_fetched, client.usage)


def klines_client(lake: LakeResource) -> KlinesClient:
    """One client per run: its pacing state spans every partition the run fetches."""
    cfg = lake.config.binance
    return KlinesClient(
        cfg.rest_base_url,
        weight_limit=cfg.rest_weight_limit_per_minute,
        budget_share=cfg.rest_weight_budget_share,
        timeout=cfg.rest_timeout_seconds,
        max_retries=cfg.rest_max_retries,
        ban_file=lake.layout.state_dir / REST_BAN_FILE,
    )


def klines_metadata(
    out: Path, stored: StoredKlines, usage: RestUsage, *, fetched: bool
) -> dict[str, Any]:
    """One klines partition: rows, minutes expected and missing, complete, what it cost."""
    meta = base_metadata(out, stored.rows, "klines_1m")
    meta.update({
        "minutes_expected": stored.minutes_expected,
        "missing_minutes": stored.missing_minutes,
        "complete": stored.complete,
        "fetched": fetched,  # False: a complete file was already there
        "requests": usage.requests,
        "weight_used": usage.weight,
        "http_429": usage.http_429,
        "rest_wait_seconds": round(usage.waited_s, 1),
        "preview": dg.MetadataValue.md(parquet_preview(out)),
    })  # fmt: skip
    if stored.trading_from_ms is not None:
        meta["trading_started"] = utc_text(stored.trading_from_ms / 1000)
    return meta


def klines_run_totals(per: dict[str, dict[str, Any]], usage: RestUsage) -> dict[str, Any]:
    return {
        "run_partitions_complete": sum(1 for m in per.values() if m["complete"]),
        "run_partitions_fetched": sum(1 for m in per.values() if m["fetched"]),
        "run_rest_wait_seconds": round(usage.waited_s, 1),
        "run_max_used_weight_1m": usage.max_used_weight,  # the IP's peak, as Binance counted
    }


def klines_failure(
    error: KlinesError, per: dict[str, dict[str, Any]], not_fetched: list[str], usage: RestUsage
) -> dg.Failure:
    """Why the run stopped, what it recorded and how to resume. A ban is not retried: a
    retry during a ban only makes it longer."""
    done = f"{len(per)} partition(s) recorded, {len(not_fetched)} not fetched"
    missing = ", ".join(not_fetched)
    if isinstance(error, KlinesBanned):
        until = utc_text(error.until) if error.until else "unknown"
        text = (f"Binance banned this IP (HTTP 418) until {until}; stopped at once, no request "
                f"is sent before then. {done}: {missing}. Launch the backfill (or re-execute "
                "this run) again after the ban ends: complete partitions are skipped, so it "
                "resumes with the ones missing.")  # fmt: skip
    else:
        text = (f"Fetching klines failed: {error}. {done}: {missing}. Re-running resumes: "
                "complete partitions are skipped.")  # fmt: skip
    metadata = {
        "partitions_recorded": len(per),
        "not_fetched": dg.MetadataValue.text(missing),
        "requests": usage.requests,
        "weight_used": usage.weight,
    }
    if isinstance(error, KlinesBanned) and error.until:
        metadata["ban_until"] = utc_text(error.until)
    return dg.Failure(text, metadata=metadata, allow_retries=not isinstance(error, KlinesBanned))
