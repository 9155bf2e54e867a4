"""Configuration: one YAML file plus environment overrides; secrets only from the environment.

Resolution order (later wins):

1. built-in defaults (the models below);
2. the YAML file named by ``CRYPTO_LAKE_CONFIG`` (else ``./crypto_lake.yaml`` if present),
   read with ``yaml.safe_load``;
3. environment variables ``CRYPTO_LAKE__<SECTION>__<KEY>=value`` (values parsed as YAML
   scalars/lists, so ``CRYPTO_LAKE__SYMBOLS='[BTCUSDT, ETHUSDT]'`` works), and ``LAKE_ROOT``.
   Every ``__`` descends one level, so nested sections work at any depth:
   ``CRYPTO_LAKE__QA__JUMP__K_SIGMA=7.5`` sets ``qa.jump.k_sigma``.

Secrets (webhook URL, GCS credentials) are never read from the file: a secret key there is
an error. They come from ``CRYPTO_LAKE_WEBHOOK_URL`` / ``GOOGLE_APPLICATION_CREDENTIALS``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from crypto_lake.lib.core.symbols import validate_symbol, validate_ticker
from crypto_lake.lib.qa.config import QAConfig

DEFAULT_SYMBOLS = [
    "BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT", "DOGEUSDT", "ADAUSDT",
    "AVAXUSDT", "LINKUSDT", "LTCUSDT", "DOTUSDT", "SUIUSDT", "EURUSDT",
]  # fmt: skip
DEFAULT_MACRO_TICKERS = [
    "SPY", "UUP", "ES=F", "EURUSD=X", "GBPUSD=X", "USDJPY=X", "USDCAD=X", "USDCHF=X",
]  # fmt: skip
ENV_PREFIX = "CRYPTO_LAKE__"
SECRET_KEYS = {"webhook_url", "gcs_credentials", "credentials", "password", "token", "api_key"}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BinanceConfig(_Section):
    ws_base_url: str = "wss://data-stream.binance.vision"
    rest_base_url: str = "https://data-api.binance.vision"
    trade_stream: Literal["trade", "aggTrade"] = "trade"
    time_unit: Literal["ms", "us"] = "us"
    max_streams_per_connection: int = Field(1024, ge=2, le=1024)


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
    raw_sensor_interval_seconds: int = Field(30, ge=5)


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

    # Secrets live outside the model's file-backed fields.
    @property
    def webhook_url(self) -> SecretStr | None:
        url = os.environ.get("CRYPTO_LAKE_WEBHOOK_URL")
        return SecretStr(url) if url else None


class ConfigError(ValueError):
    """The configuration file or an override is invalid; the message says which key."""


def _reject_secrets(data: Any, where: str = "") -> None:
    if isinstance(data, Mapping):
        for key, value in data.items():
            if str(key).lower() in SECRET_KEYS:
                raise ConfigError(
                    f"secret key '{where}{key}' found in the config file; secrets come only "
                    "from the environment (e.g. CRYPTO_LAKE_WEBHOOK_URL)"
                )
            _reject_secrets(value, f"{where}{key}.")


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        keys = [k.lower() for k in name[len(ENV_PREFIX) :].split("__") if k]
        if not keys:
            continue
        node = out
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = yaml.safe_load(raw) if raw != "" else ""
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
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        _reject_secrets(loaded)
        data = loaded
    data = _merge(data, _env_overrides(environ))
    try:
        return Config.model_validate(data)
    except Exception as exc:  # pydantic.ValidationError names the field
        raise ConfigError(f"invalid configuration: {exc}") from exc
