"""The ``qa:`` config section (SPEC §7): defaults, file and env overrides, validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from crypto_lake.defs.qa.assets import qa_config
from crypto_lake.defs.resources import LakeResource
from crypto_lake.lib.core.config import ConfigError, load_config
from crypto_lake.lib.qa.config import QAConfig, qa_config_from

EXAMPLE = Path(__file__).resolve().parents[2] / "crypto_lake.example.yaml"


def test_defaults_are_the_spec_values() -> None:
    cfg = qa_config_from(load_config(environ={"CRYPTO_LAKE_CONFIG": "/dev/null"}))
    assert cfg == QAConfig()
    ifo, z, j = cfg.iforest, cfg.zscore, cfg.jump
    assert (ifo.n_estimators, ifo.contamination, ifo.random_state) == (200, 0.005, 42)
    assert (z.window_seconds, z.k) == (3600, 5.0)
    assert (j.k_sigma, j.spread_stable_bps, j.cooldown_seconds, j.min_trade_count) == (
        6.8,
        50,
        5,
        5,
    )
    f = cfg.fusion
    assert (f.schema_weight, f.detector_weight, f.ai_weight) == (0.7, 0.2, 0.1)
    assert (f.pass_score, f.review_score) == (0.85, 0.65)
    assert cfg.hourly_window_minutes == 90
    assert qa_config_from(None) == QAConfig()


def test_example_file_documents_the_defaults() -> None:
    assert load_config(EXAMPLE, environ={}).qa == QAConfig()


def test_file_and_env_reach_the_assets_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "crypto_lake.yaml"
    path.write_text(
        "qa:\n"
        "  iforest: {n_estimators: 50}\n"
        "  zscore: {k: 4.0}\n"
        "  jump: {k_sigma: 7.0, cooldown_seconds: 3}\n"
    )
    monkeypatch.setenv("CRYPTO_LAKE_CONFIG", str(path))
    monkeypatch.setenv("CRYPTO_LAKE__QA__JUMP__K_SIGMA", "7.5")  # env wins over the file
    monkeypatch.setenv("CRYPTO_LAKE__QA__HOURLY_WINDOW_MINUTES", "120")

    cfg = qa_config(LakeResource(lake_root=str(tmp_path / "lake")))  # what the assets call

    assert cfg.jump.k_sigma == 7.5
    assert cfg.jump.cooldown_seconds == 3
    assert cfg.iforest.n_estimators == 50
    assert cfg.zscore.k == 4.0
    assert cfg.hourly_window_minutes == 120
    assert cfg.iforest.contamination == 0.005  # untouched keys keep their defaults


@pytest.mark.parametrize(
    ("text", "env", "named"),
    [
        ("qa:\n  iforest: {contamination: -0.1}\n", {}, "qa.iforest.contamination"),
        ("", {"CRYPTO_LAKE__QA__JUMP__K_SIGMA": "-1"}, "qa.jump.k_sigma"),
        ("qa:\n  fusion: {schema_weight: 0.8}\n", {}, "schema_weight + detector_weight"),
        ("qa:\n  fusion: {review_score: 0.9}\n", {}, "review_score"),
        ("qa:\n  jump: {k_sigmaa: 7}\n", {}, "qa.jump.k_sigmaa"),
    ],
)
def test_invalid_qa_values_name_the_key(
    tmp_path: Path, text: str, env: dict[str, str], named: str
) -> None:
    path = tmp_path / "crypto_lake.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path, environ=env)
    message = str(err.value)
    assert named in message
    if "fusion" in text:
        assert "qa.fusion" in message
