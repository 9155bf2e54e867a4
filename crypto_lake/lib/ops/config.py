"""Alert thresholds (SPEC §10, issue 18): the ``alerts:`` section of the crypto_lake config.

Every threshold has one place, this model: ``Config.alerts`` (as ``Config.qa`` is QAConfig),
validated with the rest of the file and overridable like any key, e.g.
``CRYPTO_LAKE__ALERTS__OPEN_GAP_SECONDS=600``::

    alerts:
      repeat_seconds: 3600          # at most one alert per condition key per hour
      connection_down_seconds: 60
      open_gap_seconds: 300
      disk_fraction: null           # null: archive.disk_warn_fraction (0.8)
      archive_copy_seconds: 21600
      macro_down_seconds: 3600
      collector_stopped_severity: warning

The webhook URL is a secret and is not here: ``CRYPTO_LAKE_WEBHOOK_URL`` (``Config.webhook_url``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Severity = Literal["critical", "warning", "info"]


class AlertsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # A condition that stays true is sent again at most this often; a new condition at once.
    repeat_seconds: float = Field(3600.0, ge=0)
    # How often the alerts sensor evaluates the conditions.
    sensor_interval_seconds: int = Field(60, ge=10)
    connection_down_seconds: float = Field(60.0, ge=0)
    open_gap_seconds: float = Field(300.0, ge=0)
    # Lake disk use that alerts; None: the archive's warning level (archive.disk_warn_fraction).
    disk_fraction: float | None = Field(None, gt=0, le=1)
    archive_copy_seconds: float = Field(6 * 3600.0, ge=0)
    macro_down_seconds: float = Field(3600.0, ge=0)
    # A clean stop is an operator's act, yet nothing is recorded while it lasts.
    collector_stopped_severity: Severity = "warning"
    # Completed check evaluations looked at per check and tick for new failures.
    check_lookback: int = Field(500, ge=1)
    webhook_timeout_seconds: float = Field(5.0, gt=0)
    webhook_attempts: int = Field(2, ge=1, le=5)
