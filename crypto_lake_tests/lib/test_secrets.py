"""Issue 18, item 4: secrets only from the environment or secret files, and no configuration
error ever repeats a configured value.

A canary value travels every path a value can take into the configuration (file keys at any
depth, ``CRYPTO_LAKE__*`` overrides, YAML that does not parse, values of the wrong type,
unknown keys, command-line flags) and must never appear in the error; secret-looking keys
are refused by name with the place secrets belong.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from collector_daemon.cli import build_parser, config_from_args
from crypto_lake.lib.core.config import ConfigError, load_config

CANARY = "canary-7c1e5a-s3cr3t"


def _error(tmp_path: Path, text: str | None = None, environ: dict[str, str] | None = None) -> str:
    """The ConfigError message of loading ``text`` as the config file with ``environ``."""
    path = os.devnull
    if text is not None:
        path = tmp_path / "c.yaml"
        path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path, environ=environ or {})
    message = str(err.value)
    assert CANARY not in message and "input_value" not in message, message
    assert "\n" not in message, message  # one line, for the one-line start-up failure
    return message


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (f"api_secret: {CANARY}\n", "api_secret"),
        (f"collector:\n  secret_key: {CANARY}\n", "collector.secret_key"),
        (f"alerts:\n  slack_token: {CANARY}\n", "alerts.slack_token"),
        (f"collector:\n  Password: {CANARY}\n", "collector.Password"),
        (f"archive:\n  gcs-private-key: {CANARY}\n", "archive.gcs-private-key"),
        (f"macro:\n  apiKey: {CANARY}\n", "macro.apiKey"),
        (f"alerts:\n  webhook_url: {CANARY}\n", "alerts.webhook_url"),
        (f"archive:\n  credentials_json: {CANARY}\n", "archive.credentials_json"),
        (f"extra:\n  - {{db_passwd: {CANARY}}}\n", "extra.db_passwd"),
    ],
)
def test_secret_looking_keys_in_the_file_are_refused_by_name(tmp_path, text, key) -> None:
    message = _error(tmp_path, text)
    assert f"'{key}'" in message and "refused" in message
    assert "CRYPTO_LAKE_WEBHOOK_URL_FILE" in message  # where a secret belongs instead


@pytest.mark.parametrize(
    ("environ", "name"),
    [
        ({"CRYPTO_LAKE__COLLECTOR__PASSWORD": CANARY}, "CRYPTO_LAKE__COLLECTOR__PASSWORD"),
        ({"CRYPTO_LAKE__API_SECRET": CANARY}, "CRYPTO_LAKE__API_SECRET"),
        ({"CRYPTO_LAKE__ALERTS__SLACK_TOKEN": CANARY}, "CRYPTO_LAKE__ALERTS__SLACK_TOKEN"),
        ({"CRYPTO_LAKE__ALERTS": f"{{slack_token: {CANARY}}}"}, "CRYPTO_LAKE__ALERTS"),
    ],
)
def test_secret_looking_env_overrides_are_refused_by_name(tmp_path, environ, name) -> None:
    message = _error(tmp_path, environ=environ)
    assert name in message and "refused" in message


@pytest.mark.parametrize(
    ("text", "environ", "key"),
    [
        (f"collector:\n  rotate_seconds: {CANARY}\n", {}, "collector.rotate_seconds"),
        (f"collector:\n  compression: {CANARY}\n", {}, "collector.compression"),
        (f"collector:\n  no_such_key: {CANARY}\n", {}, "collector.no_such_key"),
        (f"qa:\n  jump:\n    k_sigma: {CANARY}\n", {}, "qa.jump.k_sigma"),
        (f"alerts:\n  repeat_seconds: {CANARY}\n", {}, "alerts.repeat_seconds"),
        (f'collector: ["{CANARY}\n', {}, "line 2"),  # YAML that does not parse
        (None, {"CRYPTO_LAKE__COLLECTOR__ROTATE_SECONDS": CANARY}, "collector.rotate_seconds"),
        (None, {"CRYPTO_LAKE__BINANCE__NO_SUCH": CANARY}, "binance.no_such"),
        (None, {"CRYPTO_LAKE__SYMBOLS": f"[{CANARY}"}, "CRYPTO_LAKE__SYMBOLS"),
    ],
)
def test_no_error_repeats_a_value(tmp_path, text, environ, key) -> None:
    assert key in _error(tmp_path, text, environ)


def test_command_line_errors_repeat_no_value(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CRYPTO_LAKE_CONFIG", os.devnull)
    args = build_parser().parse_args(["--metrics-port", "99999", "--lake-root", str(tmp_path)])
    with pytest.raises(ConfigError) as err:
        config_from_args(args)
    message = str(err.value)
    assert "collector.metrics_port" in message and "99999" not in message
    assert "input_value" not in message and "\n" not in message


def test_webhook_url_from_a_secret_file(tmp_path, monkeypatch) -> None:
    secret = tmp_path / "webhook_url"
    secret.write_text(f"  http://127.0.0.1:9/hooks/{CANARY}\n\n")
    monkeypatch.delenv("CRYPTO_LAKE_WEBHOOK_URL", raising=False)
    monkeypatch.setenv("CRYPTO_LAKE_WEBHOOK_URL_FILE", str(secret))
    cfg = load_config(os.devnull, environ=dict(os.environ))
    assert cfg.webhook_url is not None
    assert cfg.webhook_url.get_secret_value() == f"http://127.0.0.1:9/hooks/{CANARY}"
    assert CANARY not in repr(cfg) + str(cfg) + str(cfg.webhook_url) + repr(cfg.webhook_url)
    monkeypatch.delenv("CRYPTO_LAKE_WEBHOOK_URL_FILE")
    assert cfg.webhook_url is None


@pytest.mark.parametrize("case", ["both", "missing", "empty"])
def test_bad_webhook_secret_sources_fail_at_load(tmp_path, case) -> None:
    secret = tmp_path / "webhook_url"
    secret.write_text("" if case == "empty" else f"http://127.0.0.1:9/{CANARY}")
    environ = {"CRYPTO_LAKE_WEBHOOK_URL_FILE": str(secret)}
    if case == "both":
        environ["CRYPTO_LAKE_WEBHOOK_URL"] = f"http://127.0.0.1:9/{CANARY}"
    if case == "missing":
        environ["CRYPTO_LAKE_WEBHOOK_URL_FILE"] = str(tmp_path / "absent")
    message = _error(tmp_path, environ=environ)
    assert "CRYPTO_LAKE_WEBHOOK_URL" in message
    if case != "both":
        assert str(tmp_path) in message  # names the file, never its content


def test_looks_secret_spares_the_real_keys() -> None:
    """No key of the real configuration (every section, every depth) looks like a secret."""
    from crypto_lake.lib.core.config import Config, looks_secret

    def keys(model) -> list[str]:
        out = []
        for name in type(model).model_fields:
            out.append(name)
            value = getattr(model, name)
            if hasattr(type(value), "model_fields"):
                out += keys(value)
        return out

    real = keys(Config())
    assert "webhook_timeout_seconds" in real  # the alerts section is part of it
    assert [k for k in real if looks_secret(k)] == []
    assert all(looks_secret(k) for k in ["api_secret", "SECRET_KEY", "slack-token", "passwd"])
