"""One definition per lake table: the schema registry.

Every Parquet dataset the lake writes is declared here once: its columns (name, Arrow type,
the DuckDB type derived from it, whether it may be null, what it means, the value bounds that
hold by construction), its sort keys and unique key, its partitioning (the path layout of
``paths.LakeLayout``, SPEC §2), a schema version and a description. Everything else derives
from it: the writers check their table against it before writing (``parquet_out.write_dataset``,
``check_schema``), the DuckDB views take their column lists from it, the Dagster assets their
column schema and description, and the pandera contracts (``contracts``) their columns,
dtypes, nullability and value checks.

Arrow types are those of the writer's table. The written Arrow schema keeps what the writers
have always written (every field flagged nullable, no schema metadata): ``nullable`` here is
the contract, checked on the values, not an Arrow flag. ``rules`` are row conditions over
columns that hold wherever their columns are not null, written so both DuckDB and
``pandas.eval`` read them.

Bump a dataset's ``version`` whenever its columns, types or meaning change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pyarrow as pa

from crypto_lake.lib.book.model import BANDS_BPS, LEVELS, STATE_NAMES
from crypto_lake.lib.core.paths import EXCHANGE

TS = pa.timestamp("us", tz="UTC")
TS_S = pa.timestamp("s", tz="UTC")  # QA tables (Parquet stores it in milliseconds)
PRICE = pa.decimal128(18, 8)  # Binance keeps prices as 64-bit integers of 1e-8
QTY = pa.decimal128(20, 8)  # quantities too; 20 digits always fit
VOLUME = pa.decimal128(38, 8)  # sums of quantities
QUOTE_VOLUME = pa.decimal128(38, 16)  # exact price x qty products and their sums
STR, I64, I32, F64 = pa.string(), pa.int64(), pa.int32(), pa.float64()
BOOL, DATE = pa.bool_(), pa.date32()


@dataclass(frozen=True)
class Column:
    """One column: ``nullable`` says whether a value may be null (NaN for doubles);
    ``gt``/``ge``/``le`` and ``isin`` bound its non-null values."""

    name: str
    arrow: pa.DataType
    description: str
    nullable: bool = False
    gt: int | None = None
    ge: int | None = None
    le: int | None = None
    isin: tuple[str, ...] = ()

    @property
    def duckdb(self) -> str:
        return duckdb_type(self.arrow)

    @property
    def bounds(self) -> list[str]:
        """The value bounds as text (``> 0``, ``in (PASS, REVIEW, FAIL)``)."""
        out = [f"{op} {v}" for op, v in ((">", self.gt), (">=", self.ge), ("<=", self.le))
               if v is not None]  # fmt: skip
        return [*out, f"in ({', '.join(self.isin)})"] if self.isin else out


@dataclass(frozen=True)
class Dataset:
    """One table of the lake."""

    name: str
    version: int
    description: str
    path: str  # the layout under the lake root (SPEC §2); {x} are the partition values
    columns: tuple[Column, ...]
    sort_keys: tuple[str, ...]  # the order of the rows in each file
    descending: tuple[str, ...] = ()  # sort keys sorted descending
    unique: tuple[str, ...] = ()  # unique within each file
    rules: tuple[str, ...] = ()  # row conditions that hold where their columns are not null

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def partition_keys(self) -> list[str]:
        """The partition values of the path (``{symbol}``, ``{date}``, ...)."""
        return re.findall(r"\{(\w+)\}", self.path)

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.name} has no column {name!r}")

    def arrow_schema(self) -> pa.Schema:
        """The writers' Arrow schema (fields flagged nullable, no metadata: what is written)."""
        return pa.schema([(c.name, c.arrow) for c in self.columns])

    def stored_schema(self) -> pa.Schema:
        """The Arrow schema a reader gets back from the Parquet file."""
        return pa.schema([(c.name, stored_type(c.arrow)) for c in self.columns])

    def duckdb_columns(self) -> list[tuple[str, str]]:
        return [(c.name, c.duckdb) for c in self.columns]

    def sort_order(self) -> list[tuple[str, str]]:
        """The sort keys in pyarrow's ``sort_by`` form."""
        return [(k, "descending" if k in self.descending else "ascending") for k in self.sort_keys]

    def rule_columns(self, rule: str) -> list[str]:
        return [n for n in self.names if re.search(rf"\b{n}\b", rule)]


def duckdb_type(t: pa.DataType) -> str:
    """The DuckDB SQL type of an Arrow type."""
    if pa.types.is_dictionary(t):
        return duckdb_type(t.value_type)
    if pa.types.is_decimal(t):
        return f"DECIMAL({t.precision},{t.scale})"
    if pa.types.is_timestamp(t):
        return "TIMESTAMPTZ" if t.tz else "TIMESTAMP"
    names = {STR: "VARCHAR", I64: "BIGINT", I32: "INTEGER", F64: "DOUBLE", BOOL: "BOOLEAN",
             DATE: "DATE"}  # fmt: skip
    if t not in names:
        raise TypeError(f"no DuckDB type for Arrow type {t}")
    return names[t]


def stored_type(t: pa.DataType) -> pa.DataType:
    """An Arrow type as it reads back from Parquet: Parquet has no seconds unit, so
    timestamp[s] comes back as timestamp[ms]."""
    if pa.types.is_timestamp(t) and t.unit == "s":
        return pa.timestamp("ms", tz=t.tz)
    return t


class SchemaMismatch(ValueError):
    """A table does not match its dataset's registered columns."""


def schema_differences(name: str, schema: pa.Schema, *, stored: bool = False) -> list[str]:
    """How ``schema`` differs from the registered columns of dataset ``name`` (names, order,
    Arrow types; a dictionary-encoded column counts as its value type): one line per
    difference. ``stored``: ``schema`` was read from a file (see ``stored_type``)."""
    want = {c.name: stored_type(c.arrow) if stored else c.arrow for c in dataset(name).columns}
    have = {f.name: f.type for f in schema}
    out = [f"missing column {n!r} ({t})" for n, t in want.items() if n not in have]
    out += [f"unexpected column {n!r} ({t})" for n, t in have.items() if n not in want]
    for column, t in have.items():
        got = t.value_type if pa.types.is_dictionary(t) else t
        if column in want and got != want[column]:
            out.append(f"column {column!r} is {t}, registered {want[column]}")
    if not out and list(have) != list(want):
        out.append(f"columns in order {list(have)}, registered {list(want)}")
    return out


def check_schema(name: str, schema: pa.Schema) -> None:
    """Raise :class:`SchemaMismatch` naming the dataset and its differing columns."""
    diffs = schema_differences(name, schema)
    if diffs:
        raise SchemaMismatch(
            f"{name} (schema v{dataset(name).version}): the table does not match its "
            f"registered columns (crypto_lake/lib/core/schema.py): {'; '.join(diffs)}"
        )


def dataset(name: str) -> Dataset:
    """The definition of dataset ``name``."""
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; registered: {sorted(DATASETS)}")
    return DATASETS[name]


# --- market tables (SPEC §5) -------------------------------------------------------------------


def _market_path(name: str) -> str:
    return f"{name}/exchange={EXCHANGE}/symbol={{symbol}}/date={{date}}/*.parquet"


_SYMBOL = Column("symbol", STR, "Binance symbol, e.g. BTCUSDT")
_BAR_PRICE = "NULL only before the day's first trade when no previous close is known"


def _bar_columns(unit: str) -> tuple[Column, ...]:
    """The columns 1 s bars and their 1 m rollup share; ``unit``: second or minute."""
    last = f"of the {unit}'s last second" if unit == "minute" else "received by the second's end"
    return (
        _SYMBOL,
        Column("window_start", TS, f"start of the {unit} (UTC); the bar covers one {unit}"),
        Column("open", PRICE, f"first trade price by trade id; an empty {unit} carries the "
               f"previous close; {_BAR_PRICE}", nullable=True, gt=0),
        Column("high", PRICE, f"highest trade price (the carried close if empty); {_BAR_PRICE}",
               nullable=True, gt=0),
        Column("low", PRICE, f"lowest trade price (the carried close if empty); {_BAR_PRICE}",
               nullable=True, gt=0),
        Column("close", PRICE, f"last trade price by trade id (the carried close if empty); "
               f"{_BAR_PRICE}", nullable=True, gt=0),
        Column("volume_base", VOLUME, "sum of trade quantities (0 when empty)", ge=0),
        Column("volume_quote", QUOTE_VOLUME, "sum of price x qty, exact (0 when empty)", ge=0),
        Column("trade_count", I64, "trades, counting the underlying trades of an aggTrade", ge=0),
        Column("vwap", F64, "volume_quote / volume_base; NULL without volume", nullable=True, gt=0),
        Column("taker_buy_base", VOLUME, "quantity bought by takers (is_buyer_maker false)", ge=0),
        Column("first_trade_id", I64, "lowest underlying trade id; NULL when empty", nullable=True),
        Column("last_trade_id", I64, "highest underlying trade id; NULL when empty", nullable=True),
        Column("bid", PRICE, f"best bid of the newest quote (highest update id) {last}, carried "
               "forward; NULL before the day's first quote", nullable=True, ge=0),
        Column("ask", PRICE, "best ask of that quote; NULL before the day's first quote",
               nullable=True, ge=0),
        Column("bid_qty", QTY, "quantity at the best bid of that quote", nullable=True, ge=0),
        Column("ask_qty", QTY, "quantity at the best ask of that quote", nullable=True, ge=0),
        Column("mid", F64, "(bid + ask) / 2", nullable=True),
        Column("spread", PRICE, "ask - bid, exact", nullable=True),
        Column("spread_bps", F64, "spread / mid x 10,000", nullable=True),
        Column("is_live", BOOL, f"a trade of the {unit} was received live"),
        Column("is_repaired", BOOL, f"a trade of the {unit} was repaired from Binance's REST API"),
        Column("is_archive", BOOL, f"a trade of the {unit} came from Binance's public daily file "
               "(source archive: the recorder did not have it)"),
        Column("is_empty", BOOL, f"no trade in the {unit}"),
        Column("is_outage", BOOL, f"the {unit} overlaps a time the recorder was not recording "
               "(outage or unrecorded)"),
    )  # fmt: skip


_BAR_RULES = ("high >= low", "low <= open", "open <= high", "low <= close", "close <= high",
              "taker_buy_base <= volume_base", "first_trade_id <= last_trade_id",
              "spread == ask - bid")  # fmt: skip

TRADES = Dataset(
    name="trades",
    version=2,
    description=(
        "Every trade of the day (UTC, by exchange trade time), parsed from the sealed raw "
        "files (the @trade or the @aggTrade stream, one kind per day) and completed from "
        "Binance's public daily file (trades or aggTrades of the same kind) where one was "
        "imported: the trade ids the raw files do not have. Deduplicated by trade id (a live "
        "copy wins over a REST repair, which wins over the public file; `source` says which "
        "was kept) and sorted by (trade time, id). Prices and quantities are exact decimals "
        "(pandas reads them as Decimal), quote_qty the exact product price x qty."
    ),
    path=_market_path("trades"),
    columns=(
        _SYMBOL,
        Column("trade_id", I64, "Binance trade id (the aggregate id for aggTrade input)"),
        Column("ts_event", TS, "exchange trade time"),
        Column(
            "ts_recv",
            TS,
            "when the collector received the message (its clock); NULL for a "
            "trade from Binance's public daily file (source archive), never received",
            nullable=True,
        ),
        Column("price", PRICE, "trade price", gt=0),
        Column("qty", QTY, "base quantity", ge=0),
        Column("quote_qty", QUOTE_VOLUME, "price x qty, exact", ge=0),
        Column("is_buyer_maker", BOOL, "the buyer was the maker (a taker sold)"),
        Column("repaired", BOOL, "fetched from Binance's REST API to fill a gap, not live"),
        Column(
            "source",
            STR,
            "where the kept copy came from: live (the WebSocket stream), "
            "repair (Binance's REST API, = repaired) or archive (Binance's public daily "
            "file, for an id the raw files do not have)",
            isin=("live", "repair", "archive"),
        ),
        Column("first_trade_id", I64, "first underlying trade id (= trade_id for @trade)"),
        Column("last_trade_id", I64, "last underlying trade id (= trade_id for @trade)"),
        Column("trade_count", I64, "underlying trades: last_trade_id - first_trade_id + 1", ge=1),
    ),
    sort_keys=("ts_event", "trade_id"),
    unique=("trade_id",),
    rules=(
        "first_trade_id <= last_trade_id",
        "quote_qty == price * qty",
        "repaired == (source == 'repair')",
    ),
)

QUOTES = Dataset(
    name="quotes",
    version=1,
    description=(
        "Best bid/ask changes (bookTicker) received during the day (UTC, by receive time: "
        "bookTicker has no exchange time), deduplicated by update id and sorted by (receive "
        "time, update id)."
    ),
    path=_market_path("quotes"),
    columns=(
        _SYMBOL,
        Column("update_id", I64, "Binance order book update id"),
        Column("ts_recv", TS, "when the collector received the update (its clock)"),
        Column("bid", PRICE, "best bid price", ge=0),
        Column("bid_qty", QTY, "quantity at the best bid", ge=0),
        Column("ask", PRICE, "best ask price", ge=0),
        Column("ask_qty", QTY, "quantity at the best ask", ge=0),
    ),
    sort_keys=("ts_recv", "update_id"),
    unique=("update_id",),
)

BARS_1S = Dataset(
    name="bars_1s",
    version=2,
    description=(
        "1-second bars on a continuous UTC grid (86,400 rows for a closed day; today up to "
        "the last complete second): OHLC, volumes, trade count, VWAP, taker-buy volume, "
        "first/last trade id, the last best bid/ask, mid, spread, and flags (live, repaired, "
        "archive, empty, outage: a second of a recorder outage filled from Binance's public "
        "daily file is both archive and outage). A trade belongs to the second of its "
        "exchange time; open/close are the first/last trade by id. Empty seconds carry the "
        "previous close with zero volume, like Binance's 1 s klines. Byte-identical output "
        "for the same input."
    ),
    path=_market_path("bars_1s"),
    columns=_bar_columns("second"),
    sort_keys=("window_start",),
    unique=("window_start",),
    rules=(*_BAR_RULES, "is_empty == (trade_count == 0)"),
)

BARS_1M = Dataset(
    name="bars_1m",
    version=2,
    description=(
        "1-minute rollup of bars_1s, built the way Binance builds its 1 m klines: O/H/L/C "
        "from the seconds with trades (an all-empty minute carries the previous close), "
        "volumes and counts summed, the quote in force at the end of the minute."
    ),
    path=_market_path("bars_1m"),
    columns=(
        *_bar_columns("minute"),
        Column(
            "seconds",
            I32,
            "1 s bars in the minute (fewer than 60 only in today's last minute)",
            ge=1,
            le=60,
        ),
        Column("trade_seconds", I32, "seconds with trades", ge=0, le=60),
        Column("outage_seconds", I32, "seconds in an outage", ge=0, le=60),
    ),
    sort_keys=("window_start",),
    unique=("window_start",),
    rules=(*_BAR_RULES, "trade_seconds <= seconds", "outage_seconds <= seconds"),
)


def _kline_columns(unit: str, close: str) -> tuple[Column, ...]:
    return (
        _SYMBOL,
        Column("open_time", TS, f"start of the {unit} (UTC)"),
        Column("open", PRICE, "first trade price", gt=0),
        Column("high", PRICE, "highest trade price", gt=0),
        Column("low", PRICE, "lowest trade price", gt=0),
        Column("close", PRICE, "last trade price", gt=0),
        Column("volume", VOLUME, "base volume", ge=0),
        Column("close_time", TS, f"Binance's close time: {close}"),
        Column("quote_volume", VOLUME, "quote volume", ge=0),
        Column("trade_count", I64, "number of trades", ge=0),
        Column("taker_buy_base", VOLUME, "base volume bought by takers", ge=0),
        Column("taker_buy_quote", VOLUME, "quote volume bought by takers", ge=0),
    )


_KLINE_RULES = ("high >= low", "close_time > open_time", "taker_buy_base <= volume")

KLINES_1M = Dataset(
    name="klines_1m",
    version=1,
    description=(
        "Binance's official 1-minute klines of the day from the REST API (/api/v3/klines), "
        "closed minutes only, unique by open time: the reference check R7 compares the 1 m "
        "rollup of bars_1s with."
    ),
    path=_market_path("klines_1m"),
    columns=_kline_columns("minute", "open_time + 59.999 s"),
    sort_keys=("open_time",),
    unique=("open_time",),
    rules=_KLINE_RULES,
)

KLINES_1S = Dataset(
    name="klines_1s",
    version=1,
    description=(
        "Binance's official 1-second klines of the day from its public daily file "
        "(data.binance.vision, SHA256-verified): one row per second from the symbol's first "
        "trade, an empty second repeating the previous close with zero volume. The reference "
        "the klines_1s_parity check compares bars_1s with, second by second."
    ),
    path=_market_path("klines_1s"),
    columns=_kline_columns("second", "open_time + 0.999 s (0.999999 s in files from 2025)"),
    sort_keys=("open_time",),
    unique=("open_time",),
    rules=_KLINE_RULES,
)

_SECONDS = "seconds of the minute"
COVERAGE = Dataset(
    name="coverage",
    version=2,
    description=(
        "What the lake can be trusted for: per symbol and UTC minute, the seconds observed "
        "live (connected, trades or not), repaired from REST, filled from Binance's public "
        "daily file (archive), lost to an outage (collector running, connection down), "
        "unrecorded (collector not running, or missing from the bars) and still pending "
        "(today, after the last bar), plus trade and quote counts and whether best bid/ask "
        "was being recorded. Every second is in exactly one state, so the six counts sum to "
        "60. 1,440 rows for a closed day."
    ),
    path=_market_path("coverage"),
    columns=(
        _SYMBOL,
        Column("date", DATE, "the UTC day"),
        Column("minute", TS, "start of the minute (UTC)"),
        Column("seconds_live", I32, f"{_SECONDS} observed live", ge=0, le=60),
        Column("seconds_repaired", I32, f"{_SECONDS} with trades repaired from REST", ge=0, le=60),
        Column(
            "seconds_archive",
            I32,
            f"{_SECONDS} with trades from Binance's public daily "
            "file (the recorder did not have them; its quotes are not there)",
            ge=0,
            le=60,
        ),
        Column("seconds_outage", I32, f"{_SECONDS} lost to an outage", ge=0, le=60),
        Column("seconds_unrecorded", I32, f"{_SECONDS} not recorded", ge=0, le=60),
        Column(
            "seconds_pending",
            I32,
            f"{_SECONDS} after the bars' grid end (not yet due)",
            ge=0,
            le=60,
        ),
        Column("trade_count", I64, "trades in the minute", ge=0),
        Column("quote_count", I64, "best bid/ask updates received in the minute", ge=0),
        Column(
            "quotes_recorded",
            BOOL,
            "a quote was received in the minute, or bid and ask were "
            "known in a connected second of it",
        ),
    ),
    sort_keys=("minute",),
    unique=("minute",),
    rules=(
        "seconds_live + seconds_repaired + seconds_archive + seconds_outage "
        "+ seconds_unrecorded + seconds_pending == 60",
    ),
)

# --- macro minute data (SPEC §8) ---------------------------------------------------------------
MACRO_1M = Dataset(
    name="macro_1m",
    version=1,
    description=(
        "1-minute OHLCV bars of macro and FX tickers from Yahoo Finance (yfinance), UTC, "
        "regular trading hours, one file per ticker and UTC day (the ticker percent-encoded "
        "in the path: ES=F is ticker=ES%3DF), unique by (ticker, ts). Only closed minutes with "
        "positive, consistent prices are stored, and a refresh never removes a stored bar."
    ),
    path="macro_1m/ticker={ticker}/date={date}/data.parquet",
    columns=(
        Column("ticker", STR, "Yahoo ticker, e.g. ES=F"),
        Column("ts", TS, "start of the minute (UTC)"),
        Column("open", F64, "first price of the minute", gt=0),
        Column("high", F64, "highest price", gt=0),
        Column("low", F64, "lowest price", gt=0),
        Column("close", F64, "last price", gt=0),
        Column("volume", I64, "traded volume; 0 for FX", ge=0),
    ),
    sort_keys=("ticker", "ts"),
    unique=("ticker", "ts"),
    rules=("high >= low", "low <= open", "open <= high", "low <= close", "close <= high"),
)

DXY_SYNTHETIC_1M = Dataset(
    name="dxy_synthetic_1m",
    version=1,
    description=(
        "Synthetic US Dollar Index per UTC minute from the FX bars of macro_1m, with ICE's "
        "formula: 50.14348112 x EURUSD^-0.576 x USDJPY^0.136 x GBPUSD^-0.119 x USDCAD^0.091 x "
        "USDSEK^0.042 x USDCHF^0.036; only minutes where all six inputs have a bar."
    ),
    path="dxy_synthetic_1m/date={date}/data.parquet",
    columns=(
        Column("ts", TS, "start of the minute (UTC)"),
        Column("open", F64, "the index from the six opens", gt=0),
        Column("close", F64, "the index from the six closes", gt=0),
    ),
    sort_keys=("ts",),
    unique=("ts",),
)

# --- QA tables (SPEC §7) -----------------------------------------------------------------------
_QA_SYMBOL = Column("symbol", STR, "Binance symbol")
_SEVERITIES = ("critical", "major", "minor")
QA_VIOLATIONS = Dataset(
    name="qa_violations",
    version=1,
    description=(
        "R1–R7 violations of bars_1s as rows: one per offending second, per gap of missing "
        "seconds, per trade-id gap and per R7 minute that differs from the official klines, "
        "with the rule's severity. One file per day and symbol."
    ),
    path="qa/violations/date={date}/{symbol}.parquet",
    columns=(
        _QA_SYMBOL,
        Column("rule", STR, "the rule broken", isin=("R1", "R2", "R3", "R4", "R5", "R6", "R7")),
        Column("severity", STR, "the rule's severity", isin=_SEVERITIES),
        Column("ts", TS_S, "the offending second (a gap's start, an R7 minute)"),
        Column("seconds", I32, "seconds the row stands for: 1, a gap's length, 60 for R7", ge=1),
        Column("detail", STR, "what was wrong, with the values"),
    ),
    sort_keys=("ts", "rule", "detail"),
)

QA_ANOMALIES = Dataset(
    name="qa_anomalies",
    version=1,
    description=(
        "Anomaly events of three detectors over bars_1s features (spread bps, log volume, VWAP "
        "drift bps, returns): IsolationForest, rolling z-score and a jump detector. One row "
        "per event; one file per day and symbol."
    ),
    path="qa/anomalies/date={date}/{symbol}.parquet",
    columns=(
        _QA_SYMBOL,
        Column("detector", STR, "the detector", isin=("iforest", "zscore", "jump")),
        Column("start", TS_S, "first flagged second of the event"),
        Column("end", TS_S, "last flagged second of the event"),
        Column("seconds", I32, "flagged seconds inside [start, end]", ge=1),
        Column(
            "feature",
            STR,
            "the feature that scored highest",
            isin=("spread_bps", "log_volume", "vwap_drift_bps", "ret_bps"),
        ),
        Column("score", F64, "|z| (zscore), sigmas (jump), anomaly score (iforest)"),
        Column("value", F64, "that feature's value at the peak second", nullable=True),
    ),
    sort_keys=("start", "detector", "end"),
    rules=("start <= end",),
)

_SCORE = dict(ge=0, le=1)
QA_VERDICTS = Dataset(
    name="qa_verdicts",
    version=1,
    description=(
        "PASS / REVIEW / FAIL per symbol and hour with bars, and for the day so far: score = "
        "0.7 x schema_score + 0.2 x detector_score + 0.1 x ai_confidence (crypto_lake/lib/qa/"
        "fusion.py). One file per day and symbol, day rows first."
    ),
    path="qa/verdicts/date={date}/{symbol}.parquet",
    columns=(
        _QA_SYMBOL,
        Column(
            "scope",
            STR,
            "hour (a fusion window) or day (the whole run range)",
            isin=("hour", "day"),
        ),
        Column("window_start", TS_S, "start of the window"),
        Column("window_end", TS_S, "end of the window (exclusive)"),
        Column("rows", I64, "bars present in the window", ge=0),
        Column("schema_score", F64, "share of the window's bars that obey the rules", **_SCORE),
        Column("detector_score", F64, "1 - flagged share over the detector budget", **_SCORE),
        Column("ai_confidence", F64, "1 - share of IsolationForest outliers", **_SCORE),
        Column("score", F64, "the fusion score (weights from the qa config)"),
        Column("critical", I64, "critical violation rows", ge=0),
        Column("major", I64, "major violation rows", ge=0),
        Column("minor", I64, "minor violation rows", ge=0),
        Column("anomalies", I64, "anomaly events starting in the window", ge=0),
        Column("verdict", STR, "the verdict", isin=("PASS", "REVIEW", "FAIL")),
        Column("reason", STR, "why, in one line"),
    ),
    sort_keys=("scope", "window_start", "window_end"),
    descending=("scope",),
    rules=("window_start < window_end",),
)

# --- the order book (crypto_lake.lib.book) ---------------------------------------------------
_BOOK_SIDES = ("bid", "ask")
_BOOK = "NULL when not reliable"


def _level_columns() -> list[Column]:
    out = []
    for i in range(1, LEVELS + 1):
        for side in _BOOK_SIDES:
            what = f"{i}{'st' if i == 1 else 'nd' if i == 2 else 'rd' if i == 3 else 'th'}"
            out.append(Column(f"{side}_price_{i}", PRICE, f"{what} best {side} price; {_BOOK} "
                              "or beyond the book", nullable=True, gt=0))  # fmt: skip
            out.append(Column(f"{side}_qty_{i}", QTY, f"quantity at {side}_price_{i}",
                              nullable=True, gt=0))  # fmt: skip
    return out


def _depth_columns() -> list[Column]:
    out = []
    kinds = (("depth", VOLUME, "sum of quantities"),
             ("notional", QUOTE_VOLUME, "sum of price x quantity, exact"))  # fmt: skip
    for kind, dtype, what in kinds:
        for bps in BANDS_BPS:
            for side in _BOOK_SIDES:
                out.append(Column(
                    f"{side}_{kind}_{bps}bps", dtype,
                    f"{what} of the {side} levels within {bps} bps of the mid; {_BOOK} or when "
                    "the band reaches past the depth a snapshot proved", nullable=True, ge=0,
                ))  # fmt: skip
    return out


BOOK_1S = Dataset(
    name="book_1s",
    version=1,
    description=(
        "The order book at the end of every second (UTC) from Binance's diff depth stream "
        "and REST snapshots, rebuilt with Binance's documented procedure: the top 20 levels "
        "per side, mid, microprice, spread, depth and notional within 10 and 50 bps of the "
        "mid, and the 10 bps imbalance. One row per second from the day's first reliable "
        "second; `reliable` is false (and the book columns NULL) between a sequence gap and "
        "the resync, and where the top 20 reach past the depth a snapshot proved. The clock "
        "is the exchange's event time: a row holds every diff event of its second."
    ),
    path=_market_path("book_1s"),
    columns=(
        Column("symbol", STR, "Binance symbol, e.g. BTCUSDT"),
        Column("window_start", TS, "start of the second (UTC); the book at its end"),
        Column("reliable", BOOL, "the book is proved right at the second's end"),
        Column(
            "unreliable_reason",
            STR,
            "why not (no_data, no_snapshot, gap, malformed, "
            "verify_mismatch, beyond_snapshot_depth); NULL when reliable",
            nullable=True,
            isin=STATE_NAMES[1:],
        ),
        Column("update_id", I64, "the last update id applied; " + _BOOK, nullable=True),
        Column("events", I64, "diff events received in the second (by event time)", ge=0),
        Column("level_updates", I64, "level changes in those events", ge=0),
        Column("mid", F64, "(best bid + best ask) / 2; " + _BOOK, nullable=True),
        Column(
            "microprice",
            F64,
            "(bid x ask qty + ask x bid qty) / (bid qty + ask qty)",
            nullable=True,
        ),
        Column("spread", PRICE, "best ask - best bid, exact", nullable=True),
        Column(
            "imbalance_10bps",
            F64,
            "(bid depth - ask depth) / (bid depth + ask depth) within 10 bps",
            nullable=True,
        ),
        *_depth_columns(),
        *_level_columns(),
    ),
    sort_keys=("window_start",),
    unique=("window_start",),
)

_BOOK_SECONDS = f"{_SECONDS} whose book is"
COVERAGE_BOOK = Dataset(
    name="coverage_book",
    version=1,
    description=(
        "The order book's coverage: per depth symbol and UTC minute, the seconds whose "
        "rebuilt book (book_1s) is proved right and the others with why not: no snapshot yet, "
        "a sequence gap until the resync, a malformed event, a failed verification, top levels "
        "beyond a snapshot's depth, no diff event at all (nothing recorded), or still pending "
        "(today, after the book's last second). Every second is in exactly one state, so the "
        "eight counts sum to 60. Written with each book_1s partition; 1,440 rows for a closed "
        "day, today's up to the book's last second. The `coverage` view joins it per minute."
    ),
    path=_market_path("coverage_book"),
    columns=(
        _SYMBOL,
        Column("date", DATE, "the UTC day"),
        Column("minute", TS, "start of the minute (UTC)"),
        Column("seconds_reliable", I32, f"{_BOOK_SECONDS} proved right", ge=0, le=60),
        Column(
            "seconds_no_snapshot", I32, f"{_BOOK_SECONDS} not yet synced to a snapshot", ge=0, le=60
        ),
        Column(
            "seconds_gap",
            I32,
            f"{_BOOK_SECONDS} broken by a sequence gap (lost or "
            "out-of-order diff events) until the resync",
            ge=0,
            le=60,
        ),
        Column(
            "seconds_malformed",
            I32,
            f"{_BOOK_SECONDS} broken by a malformed (quarantined) diff event until the resync",
            ge=0,
            le=60,
        ),
        Column(
            "seconds_verify_mismatch",
            I32,
            f"{_BOOK_SECONDS} broken by a verification snapshot that disagreed, until the resync",
            ge=0,
            le=60,
        ),
        Column(
            "seconds_beyond_snapshot_depth",
            I32,
            f"{_BOOK_SECONDS} synced but whose top 20 "
            "levels reach past the depth a snapshot proved",
            ge=0,
            le=60,
        ),
        Column(
            "seconds_no_data",
            I32,
            f"{_SECONDS} without book data: no diff event after "
            "them (nothing recorded, or before the day's first event)",
            ge=0,
            le=60,
        ),
        Column(
            "seconds_pending",
            I32,
            f"{_SECONDS} after the book's last second on a day not yet closed (not yet due)",
            ge=0,
            le=60,
        ),
        Column("events", I64, "diff events received in the minute (by event time)", ge=0),
    ),
    sort_keys=("minute",),
    unique=("minute",),
    rules=(
        "seconds_reliable + seconds_no_snapshot + seconds_gap + seconds_malformed "
        "+ seconds_verify_mismatch + seconds_beyond_snapshot_depth + seconds_no_data "
        "+ seconds_pending == 60",
    ),
)


DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in (TRADES, QUOTES, BARS_1S, BARS_1M, KLINES_1M, KLINES_1S, COVERAGE, BOOK_1S,
              COVERAGE_BOOK, MACRO_1M, DXY_SYNTHETIC_1M, QA_VIOLATIONS, QA_ANOMALIES, QA_VERDICTS)
}  # fmt: skip
