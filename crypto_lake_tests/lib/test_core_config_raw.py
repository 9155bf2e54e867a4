"""Shared core: configuration with env overrides and secret hygiene; the raw line schema."""

from pathlib import Path

import orjson
import pytest

from crypto_lake.lib.core.config import DEFAULT_SYMBOLS, ConfigError, load_config
from crypto_lake.lib.core.fsutil import atomic_path, atomic_write_bytes
from crypto_lake.lib.raw import lines as raw


def test_defaults_without_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load_config(environ={})
    assert cfg.symbols == DEFAULT_SYMBOLS and len(cfg.symbols) == 13
    assert cfg.collector.rotate_seconds == 60
    assert len(cfg.macro_tickers) == 8


def test_file_then_env_overrides(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("symbols: [BTCUSDT]\ncollector:\n  rotate_seconds: 30\n")
    cfg = load_config(
        f,
        environ={
            "CRYPTO_LAKE__COLLECTOR__ROTATE_SECONDS": "5",
            "CRYPTO_LAKE__BINANCE__TRADE_STREAM": "aggTrade",
            "CRYPTO_LAKE__SYMBOLS": "[ETHUSDT, SOLUSDT]",
            "LAKE_ROOT": str(tmp_path / "lake"),
        },
    )
    assert cfg.collector.rotate_seconds == 5
    assert cfg.binance.trade_stream == "aggTrade"
    assert cfg.symbols == ["ETHUSDT", "SOLUSDT"]
    assert cfg.lake_root == tmp_path / "lake"


def test_config_file_via_env_and_unsafe_yaml_refused(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("lake_root: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError):
        load_config(environ={"CRYPTO_LAKE_CONFIG": str(f)})


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("symbols: [../etc]\n", "symbols"),
        ("collector:\n  rotate_seconds: -1\n", "rotate_seconds"),
        ("collector:\n  no_such_key: 1\n", "no_such_key"),
        ("webhook_url: https://example.invalid/hook\n", "webhook_url"),
        ("gcs:\n  credentials: s3cr3t\n", "gcs.credentials"),
    ],
)
def test_bad_config_says_which_key(tmp_path: Path, text: str, key: str) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(f, environ={})
    message = str(err.value)
    assert key in message, message
    assert "example.invalid" not in message and "s3cr3t" not in message


def test_webhook_secret_only_from_env_and_never_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRYPTO_LAKE_WEBHOOK_URL", "http://127.0.0.1:9/hook-token-123")
    cfg = load_config(environ={})
    assert cfg.webhook_url is not None
    assert cfg.webhook_url.get_secret_value().endswith("hook-token-123")
    assert "hook-token-123" not in repr(cfg) and "hook-token-123" not in str(cfg.webhook_url)


def test_ws_line_keeps_exchange_bytes_verbatim() -> None:
    msg = (
        b'{"stream":"btcusdt@trade",'
        b'"data":{"e":"trade","E":1,"s":"BTCUSDT","t":5,"p":"1.10000000"}}'
    )
    line = raw.ws_line(123, "ws-1", "us", msg)
    assert line.endswith(b"\n") and msg[1:] in line
    obj = raw.parse_line(line)
    assert obj["recv_ns"] == 123 and obj["conn"] == "ws-1" and obj["unit"] == "us"
    assert obj["data"]["p"] == "1.10000000"  # decimals stay strings
    with pytest.raises(raw.RawLineError):
        raw.ws_line(1, "ws-1", "ms", b"[1,2]")


def test_repaired_and_session_lines_parse() -> None:
    rep = raw.repaired_line(1, "btcusdt@trade", "ms", "historicalTrades", {"id": 9, "price": "1"})
    assert raw.parse_line(rep)["rest"] == "historicalTrades"
    ses = raw.session_line(2, "ws-1", "disconnect", reason="silence")
    assert raw.parse_line(ses)["session"] == "disconnect"
    with pytest.raises(ValueError):
        raw.session_line(2, "ws-1", "nonsense")


@pytest.mark.parametrize("bad", [b"", b"{", b"[]", b'{"recv_ns":"x"}', b'{"recv_ns":1,"stream":1}'])
def test_parse_line_rejects_malformed(bad: bytes) -> None:
    with pytest.raises(raw.RawLineError):
        raw.parse_line(bad)


def test_atomic_write_never_leaves_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "d" / "f.bin"
    atomic_write_bytes(target, b"one")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("boom")
    assert target.read_bytes() == b"one"
    assert [p.name for p in target.parent.iterdir()] == ["f.bin"]
    assert orjson.loads(b"1") == 1
