"""QA pipeline parameters (SPEC §7): the ``qa:`` section of the crypto_lake config file.

``crypto_lake.lib.core.config.Config.qa`` is this model, so the section is validated with the rest
of the file and overridable like any key, e.g. ``CRYPTO_LAKE__QA__JUMP__K_SIGMA=7.5``::

    qa:
      iforest: {n_estimators: 200, contamination: 0.005, random_state: 42}
      zscore: {window_seconds: 3600, k: 5.0}
      jump: {k_sigma: 6.8, spread_stable_bps: 50, cooldown_seconds: 5, min_trade_count: 5}
      fusion: {pass_score: 0.85, review_score: 0.65}

Defaults are the SPEC values. This module imports nothing from ``lib.core.config`` (which imports
it), so there is no cycle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    from crypto_lake.lib.core.config import Config


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IsolationForestConfig(_Section):
    n_estimators: int = Field(200, ge=1)
    contamination: float = Field(0.005, gt=0, lt=0.5)
    random_state: int = 42
    # Sub-sampling per tree (sklearn's max_samples); 256 is the original paper's value.
    max_samples: int = Field(256, ge=16)
    # The model is fitted on a seeded uniform sample of this many rows (every tree only draws
    # max_samples rows anyway; sampling from 86,400 rows 400 times is what costs) and then
    # scores every row.
    fit_rows: int = Field(16_384, ge=256)
    # Fewer rows than this and the model is not fitted (too little data to call outliers).
    min_rows: int = Field(600, ge=10)


class ZScoreConfig(_Section):
    window_seconds: int = Field(3600, ge=10)
    k: float = Field(5.0, gt=0)
    # A z-score needs this many observations in its trailing window before it may flag.
    min_periods: int = Field(300, ge=2)
    # Features judged only on the high side: an unusually quiet second is not a data fault.
    upper_only: tuple[str, ...] = ("log_volume",)


class JumpConfig(_Section):
    k_sigma: float = Field(6.8, gt=0)
    spread_stable_bps: float = Field(50.0, gt=0)
    cooldown_seconds: int = Field(5, ge=0)
    min_trade_count: int = Field(5, ge=0)
    # Trailing window of the robust (bipower) volatility estimate the jump is measured in.
    sigma_window_seconds: int = Field(600, ge=10)
    # Seconds before the jump over which the spread must have stayed below the limit.
    spread_lookback_seconds: int = Field(10, ge=0)


class FusionConfig(_Section):
    schema_weight: float = Field(0.7, ge=0)
    detector_weight: float = Field(0.2, ge=0)
    ai_weight: float = Field(0.1, ge=0)
    pass_score: float = Field(0.85, gt=0, le=1)
    review_score: float = Field(0.65, gt=0, le=1)
    # Share of a window's seconds flagged by the z-score/jump detectors that drives
    # detector_score to 0 (a linear scale in between).
    detector_budget: float = Field(0.05, gt=0, le=1)
    # Verdict windows inside a day (the day itself always gets a verdict too).
    window_seconds: int = Field(3600, ge=60)

    @model_validator(mode="after")
    def _ordered(self) -> FusionConfig:
        total = self.schema_weight + self.detector_weight + self.ai_weight
        if abs(total - 1.0) > 1e-9:
            raise ValueError(
                "schema_weight + detector_weight + ai_weight must sum to 1, got "
                f"{self.schema_weight} + {self.detector_weight} + {self.ai_weight} = {total}"
            )
        if self.review_score > self.pass_score:
            raise ValueError(
                f"review_score ({self.review_score}) must not exceed pass_score ({self.pass_score})"
            )
        return self


class QAConfig(_Section):
    iforest: IsolationForestConfig = Field(default_factory=IsolationForestConfig)
    zscore: ZScoreConfig = Field(default_factory=ZScoreConfig)
    jump: JumpConfig = Field(default_factory=JumpConfig)
    fusion: FusionConfig = Field(default_factory=FusionConfig)
    # The hourly run re-checks this many trailing minutes.
    hourly_window_minutes: int = Field(90, ge=1)
    hourly_cron: str = "10 * * * *"
    # The daily run checks the whole previous day, after the market assets finalized it.
    daily_cron: str = "45 0 * * *"
    # Rows shown per rule in the report and in violation samples.
    report_top_rows: int = Field(5, ge=1)


def qa_config_from(config: Config | None) -> QAConfig:
    """The ``qa`` section of a loaded crypto_lake ``Config`` (the defaults without one)."""
    return QAConfig() if config is None else config.qa
