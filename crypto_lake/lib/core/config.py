"""Configuration: one YAML file plus environment overrides; secrets only from the environment.

Resolution order (later wins):

1. built-in defaults (the models below);
2. the YAML file named by ``CRYPTO_LAKE_CONFIG`` (else ``./crypto_lake.yaml`` if present),
   read with ``yaml.safe_load``;
3. environment variables ``CRYPTO_LAKE__<SECTION>__<KEY>=value`` (values parsed as YAML
   scalars/lists, so ``CRYPTO_LAKE__SYMBOLS='[BTCUSDT, ETHUSDT]'`` works), and ``LAKE_ROOT``.
   Every ``__`` descends one level, so nested sections work at any depth:
   ``CRYPTO_LAKE__QA__JUMP__K_SIGMA=7.5`` sets ``qa.jump.k_sigma``.

Secrets come only from the environment or from secret files, never from the config:

- the alert webhook URL: ``CRYPTO_LAKE_WEBHOOK_URL``, or ``CRYPTO_LAKE_WEBHOOK_URL_FILE``
  naming a file that holds it (systemd ``LoadCredential=``, a Kubernetes/Docker secret);
- GCS credentials: ``GOOGLE_APPLICATION_CREDENTIALS``, the path of a key file.

Any key that looks like a secret (its name contains secret, token, password, credential,
api_key, private_key, webhook_url, ...) is refused, in the file and in ``CRYPTO_LAKE__*``
overrides alike, with a message naming the key and the right place, never its value. No
error message of this module ever contains a configured value: validation errors are
rebuilt from the failing keys and pydantic's messages without the input.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from crypto_lake.lib.core.symbols import InvalidNameError, validate_symbol, validate_ticker
from crypto_lake.lib.ops.config import AlertsConfig
from crypto_lake.lib.qa.config import QAConfig
from crypto_lake.lib.raw.binance import depth_weight

DEFAULT_SYMBOLS = [
    "BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT", "DOGEUSDT", "ADAUSDT",
    "AVAXUSDT", "LINKUSDT", "LTCUSDT", "DOTUSDT", "SUIUSDT", "EURUSDT",
]  # fmt: skip
DEFAULT_MACRO_TICKERS = [
    "SPY", "UUP", "ES=F", "EURUSD=X", "GBPUSD=X", "USDJPY=X", "USDCAD=X", "USDCHF=X",
]  # fmt: skip
ENV_PREFIX = "CRYPTO_LAKE__"
WEBHOOK_URL_ENV = "CRYPTO_LAKE_WEBHOOK_URL"
# A key whose name, lowercased and without separators, contains one of these is a secret.
SECRET_KEY_PARTS = (
    "secret", "token", "password", "passwd", "credential", "apikey", "privatekey",
    "accesskey", "webhookurl", "authorization",
)  # fmt: skip
SECRET_PLACES = (
    f"the webhook URL goes in {WEBHOOK_URL_ENV} or in a file named by {WEBHOOK_URL_ENV}_FILE; "
    "GCS credentials in a key file named by GOOGLE_APPLICATION_CREDENTIALS"
)


class _Section(BaseModel):
    # hide_input_in_errors: a ValidationError never repeats a configured value
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)


class BinanceConfig(_Section):
    ws_base_url: str = "wss://data-stream.binance.vision"
    rest_base_url: str = "https://data-api.binance.vision"
    # Binance's public daily/monthly files (history before the collector ran, 1 s klines)
    public_data_url: str = "https://data.binance.vision"
    trade_stream: Literal["trade", "aggTrade"] = "trade"
    time_unit: Literal["ms", "us"] = "us"
    max_streams_per_connection: int = Field(1024, ge=2, le=1024)
    # REST (klines backfills): Binance's request-weight limit per minute and IP, and the share
    # of it the klines fetch may use, paced by X-MBX-USED-WEIGHT-1M; the rest stays free for
    # the collector's gap repairs from the same IP (collector.rest_weight_budget_per_minute).
    rest_weight_limit_per_minute: int = Field(6000, gt=0)
    rest_weight_budget_share: float = Field(0.5, gt=0, le=1)
    rest_timeout_seconds: float = Field(10.0, gt=0)
    # Retries of one request after a 429 (waiting its Retry-After), a 5xx or a lost connection;
    # a 418 (IP ban) is never retried.
    rest_max_retries: int = Field(5, ge=0, le=20)

    @model_validator(mode="after")
    def _budget_allows_a_request(self) -> BinanceConfig:
        if int(self.rest_weight_limit_per_minute * self.rest_weight_budget_share) < 2:
            raise ValueError(
                "rest_weight_limit_per_minute x rest_weight_budget_share must allow at least "
                "one klines request (weight 2) per minute"
            )
        return self


class DepthConfig(_Section):
    """Order book depth (SPEC §8a): the diff stream of some symbols plus REST snapshots.

    Each listed symbol also gets ``<symbol>@depth@100ms`` (or ``@depth`` at 1000 ms) on the
    combined stream; the collector fetches ``/api/v3/depth`` snapshots at start, after every
    reconnect or sequence gap, and every ``verify_interval_minutes`` (collector_daemon/depth.py).
    """

    symbols: list[str] = Field(default_factory=list)  # a subset of the top-level symbols
    update_speed_ms: Literal[100, 1000] = 100
    # levels per side of a snapshot; its request weight: crypto_lake.lib.raw.binance.depth_weight
    snapshot_limit: int = Field(1000, ge=1, le=5000)
    verify_interval_minutes: float = Field(10.0, ge=0)  # 0: no verification snapshots
    # Snapshots use at most this share of collector.rest_weight_budget_per_minute; gap repairs
    # may use all of it.
    snapshot_weight_share: float = Field(0.5, gt=0, le=1)

    @field_validator("symbols")
    @classmethod
    def _valid_symbols(cls, v: list[str]) -> list[str]:
        for i, s in enumerate(v):
            try:
                validate_symbol(s)
            except InvalidNameError:
                raise ValueError(
                    f"entry {i} is not a symbol (expected 2-20 upper-case letters or digits)"
                ) from None
        if len(set(v)) != len(v):
            raise ValueError("a symbol is listed twice")
        return v


class CollectorConfig(_Section):
    rotate_seconds: float = Field(60.0, gt=0)
    # Sealed files: zstd by default (measured 7.7x smaller than plain, and read faster).
    compression: Literal["none", "gzip", "zstd"] = "zstd"
    heartbeat_seconds: float = Field(5.0, gt=0)
    silence_timeout_seconds: float = Field(30.0, gt=0)
    max_connection_age_seconds: float = Field(23.5 * 3600, gt=0)
    backoff_base_seconds: float = Field(0.5, gt=0)
    backoff_cap_seconds: float = Field(30.0, gt=0)
    repair_gaps: bool = True
    rest_weight_budget_per_minute: int = Field(3000, gt=0)
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(9108, ge=0, le=65535)  # 0 disables the endpoint
    fsync: bool = True
    depth: DepthConfig = Field(default_factory=DepthConfig)

    @model_validator(mode="after")
    def _budget_allows_a_snapshot(self) -> CollectorConfig:
        d = self.depth
        if d.symbols and depth_weight(d.snapshot_limit) > int(
            self.rest_weight_budget_per_minute * d.snapshot_weight_share
        ):
            raise ValueError(
                "rest_weight_budget_per_minute x depth.snapshot_weight_share must allow at "
                "least one depth snapshot (its weight at depth.snapshot_limit) per minute"
            )
        return self


class DagsterConfig(_Section):
    """Partitions and automation cadence of the Dagster code location.

    The demo compresses the cadence through the environment, e.g.
    ``CRYPTO_LAKE__DAGSTER__REFRESH_INTERVAL_SECONDS=60`` and
    ``CRYPTO_LAKE__DAGSTER__FINALIZE_CRON='*/5 * * * *'``.
    """

    partitions_start: date = date(2024, 1, 1)
    # How often today's partitions are rebuilt from newly sealed raw files (one run per pass).
    refresh_interval_seconds: int = Field(300, ge=30)
    # When yesterday's partitions are finalized (UTC); after the first raw files of the new
    # day have sealed, because a day's last trades can sit in them.
    finalize_cron: str = "10 0 * * *"
    # Finished runs older than this whose every record has a newer one are deleted daily
    # (crypto_lake/defs/ops/history.py): superseded refreshes, empty failed runs.
    history_days: int = Field(7, ge=1)


class MacroConfig(_Section):
    """yfinance minute data (SPEC §8); see crypto_lake/lib/macro/store.py and lib/macro/yahoo.py."""

    # None: real Yahoo through yfinance's own session. A URL (tests: http://127.0.0.1:PORT)
    # routes every *.yahoo.com request yfinance makes to that server instead.
    yahoo_base_url: str | None = None
    start_date: date = date(2026, 1, 1)  # first daily partition (Yahoo keeps only ~30 days)
    catchup_days: int = Field(7, ge=0, le=29)  # Yahoo keeps 1-minute bars ~30 days
    request_timeout_seconds: float = Field(20.0, gt=0)
    max_attempts: int = Field(5, ge=1)
    backoff_base_seconds: float = Field(2.0, ge=0)
    backoff_cap_seconds: float = Field(60.0, ge=0)
    # ICE's DXY needs USDSEK=X, which is not a default ticker: when True, DXY inputs missing
    # from macro_tickers are fetched as extra macro_minute partitions.
    fetch_dxy_inputs: bool = True
    # Share of in-session minutes that may be missing before the check warns.
    max_missing_fraction: float = Field(0.05, ge=0, le=1)
    # Automation (crypto_lake/defs/macro/automation.py): today again every 15 minutes, a
    # missing past day again at most hourly, at most 2 macro runs queued or running at once.
    refresh_interval_seconds: float = Field(900.0, ge=60)
    catchup_retry_seconds: float = Field(3600.0, ge=60)
    max_runs_in_flight: int = Field(2, ge=1)
    # Circuit breaker: after this many source failures in a row no macro run is queued, but
    # one probe run every cooldown (lib/macro/source_health.py).
    breaker_failures: int = Field(3, ge=1)
    breaker_cooldown_seconds: float = Field(600.0, ge=30)
    # Tries per ticker when Yahoo cannot be reached at all (refused, DNS, timeout).
    connect_attempts: int = Field(2, ge=1)


class ArchiveConfig(_Section):
    """Compacted dailies, GCS copies and raw retention (SPEC §9; crypto_lake/lib/archive)."""

    # GCS bucket for the copies; None keeps the archive local only. The client is
    # dagster-gcp's GCSResource: credentials from GOOGLE_APPLICATION_CREDENTIALS (never this
    # file), an emulator or other endpoint from STORAGE_EMULATOR_HOST.
    bucket: str | None = None
    prefix: str = "crypto-lake"  # object names: {prefix}/archive/{dataset}/symbol=.../...
    gcs_project: str | None = None
    upload_attempts: int = Field(5, ge=1)
    backoff_base_seconds: float = Field(0.5, ge=0)
    backoff_cap_seconds: float = Field(30.0, ge=0)
    timeout_seconds: float = Field(120.0, gt=0)
    # Archives yesterday after its finalization (dagster.finalize_cron, 00:10) and its daily QA
    # (qa.daily_cron, 00:45): the archive needs the day's checks and QA verdict.
    archive_cron: str = "30 1 * * *"
    retention_cron: str = "30 2 * * *"
    # Sealed raw minute files older than this many days are deleted once safely archived.
    retention_days: int = Field(7, ge=1)
    disk_warn_fraction: float = Field(0.8, gt=0, le=1)
    disk_fail_fraction: float = Field(0.9, gt=0, le=1)


class Config(_Section):
    lake_root: Path = Path("./lake")
    symbols: list[str] = Field(default_factory=lambda: list(DEFAULT_SYMBOLS))
    macro_tickers: list[str] = Field(default_factory=lambda: list(DEFAULT_MACRO_TICKERS))
    binance: BinanceConfig = Field(default_factory=BinanceConfig)
    collector: CollectorConfig = Field(default_factory=CollectorConfig)
    macro: MacroConfig = Field(default_factory=MacroConfig)
    dagster: DagsterConfig = Field(default_factory=DagsterConfig)
    archive: ArchiveConfig = Field(default_factory=ArchiveConfig)
    # QA detector and fusion parameters (SPEC §7); the model lives with the QA code.
    qa: QAConfig = Field(default_factory=QAConfig)
    # Alert thresholds (SPEC §10); the model lives with the alerts code.
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)

    @field_validator("symbols")
    @classmethod
    def _valid_symbols(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one symbol is required")
        return [validate_symbol(s) for s in v]

    @field_validator("macro_tickers")
    @classmethod
    def _valid_tickers(cls, v: list[str]) -> list[str]:
        return [validate_ticker(t) for t in v]

    @model_validator(mode="after")
    def _depth_symbols_are_recorded(self) -> Config:
        unknown = [i for i, s in enumerate(self.collector.depth.symbols) if s not in self.symbols]
        if unknown:
            raise ValueError(
                f"collector.depth.symbols: entries {unknown} are not among the configured "
                "symbols (the depth stream is recorded only for symbols the collector records)"
            )
        if self.collector.depth.symbols and self.binance.max_streams_per_connection < 3:
            raise ValueError(
                "binance.max_streams_per_connection must be at least 3 with depth symbols "
                "(trade, bookTicker and depth of one symbol share a connection)"
            )
        return self

    # Secrets live outside the model's file-backed fields.
    @property
    def webhook_url(self) -> SecretStr | None:
        """The alert webhook URL (``CRYPTO_LAKE_WEBHOOK_URL[_FILE]``), None when unset."""
        return read_secret(WEBHOOK_URL_ENV, os.environ)


class ConfigError(ValueError):
    """The configuration file or an override is invalid; the message says which key, never
    the value."""


def read_secret(name: str, environ: Mapping[str, str]) -> SecretStr | None:
    """The secret ``name`` from the environment: the variable itself, or the content
    (stripped) of the file named by ``{name}_FILE``; None when neither is set. Raises
    ConfigError (naming the variables and the path, never the secret) when both are set or
    the file cannot be read or is empty."""
    direct, path = environ.get(name), environ.get(f"{name}_FILE")
    if direct and path:
        raise ConfigError(f"both {name} and {name}_FILE are set: set only one of them")
    if direct:
        return SecretStr(direct)
    if not path:
        return None
    try:
        text = Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"cannot read the secret file {path} ({name}_FILE): {reason}") from None
    if not text:
        raise ConfigError(f"the secret file {path} ({name}_FILE) is empty")
    return SecretStr(text)


def looks_secret(key: object) -> bool:
    """True for a key named like a secret (``api_secret``, ``slack-token``, ``PASSWORD``)."""
    squashed = re.sub(r"[^a-z0-9]", "", str(key).lower())
    return any(part in squashed for part in SECRET_KEY_PARTS)


def _reject_secrets(data: Any, source: str, where: str = "") -> None:
    """Refuse every secret-looking key in ``data`` (from ``source``), at any depth."""
    if isinstance(data, Mapping):
        for key, value in data.items():
            if looks_secret(key):
                raise ConfigError(
                    f"secret-looking key '{where}{key}' in {source} refused: secrets are never "
                    f"configuration keys; {SECRET_PLACES}"
                )
            _reject_secrets(value, source, f"{where}{key}.")
    elif isinstance(data, list):
        for item in data:
            _reject_secrets(item, source, where)


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming each failing key with pydantic's message, without the input values
    (``str(exc)`` would print ``input_value=...``)."""
    parts = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = ".".join(str(p) for p in err.get("loc", ())) or "(top level)"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """Where and what a YAML error is, without the text around it (it may hold a secret)."""
    problem = getattr(exc, "problem", None) or "not valid YAML"
    mark = getattr(exc, "problem_mark", None)
    if mark is not None:
        return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
    return str(problem)


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        keys = [k.lower() for k in name[len(ENV_PREFIX) :].split("__") if k]
        if not keys:
            continue
        if any(looks_secret(k) for k in keys):
            raise ConfigError(
                f"secret-looking setting {name} refused: secrets are never configuration "
                f"keys; {SECRET_PLACES}"
            )
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"{name}: {_yaml_problem(exc)}") from None
        _reject_secrets(value, f"the environment variable {name}", ".".join(keys) + ".")
        node = out
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{name}: '{k}' is set to a value and used as a section")
        node[keys[-1]] = value
    if environ.get("LAKE_ROOT"):
        out["lake_root"] = environ["LAKE_ROOT"]
    return out


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(merged.get(k), dict):
            merged[k] = _merge(merged[k], v)
        else:
            merged[k] = v
    return merged


def load_config(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Load the configuration (see module docstring). Raises ConfigError with the bad key."""
    environ = os.environ if environ is None else environ
    path = path or environ.get("CRYPTO_LAKE_CONFIG")
    if path is None and Path("crypto_lake.yaml").exists():
        path = "crypto_lake.yaml"
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path}: {_yaml_problem(exc)}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        _reject_secrets(loaded, f"the config file {path}")
        data = loaded
    data = _merge(data, _env_overrides(environ))
    read_secret(WEBHOOK_URL_ENV, environ)  # a bad secret file fails the start, not an alert
    try:
        return Config.model_validate(data)
    except ValidationError as exc:  # names the keys; the values are left out
        raise ConfigError(f"invalid configuration: {describe_validation_error(exc)}") from None
