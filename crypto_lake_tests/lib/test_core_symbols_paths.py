"""Shared core: names are validated before they become paths; the lake layout of SPEC §2."""

from pathlib import Path

import pytest

from crypto_lake.lib.core.paths import LakeLayout, parse_part_name, part_file_name
from crypto_lake.lib.core.symbols import (
    InvalidNameError,
    stream_symbol,
    validate_day,
    validate_symbol,
    validate_ticker,
)

BAD_SYMBOLS = ["", "btcusdt", "../etc", "BTC/USDT", "BTC USDT", "B", "A" * 21, "BTC..", "BTC\x00"]


@pytest.mark.parametrize("bad", BAD_SYMBOLS)
def test_invalid_symbol_is_rejected_before_reaching_a_path(bad: str, tmp_path: Path) -> None:
    layout = LakeLayout(tmp_path)
    with pytest.raises(InvalidNameError):
        layout.raw_day_dir(bad, "2025-01-01")
    with pytest.raises(InvalidNameError):
        layout.market_partition_dir("bars_1s", bad, "2025-01-01")
    assert not any(tmp_path.iterdir()), "nothing may be created for an invalid name"


@pytest.mark.parametrize("good", ["SPY", "UUP", "ES=F", "EURUSD=X", "^GSPC", "BRK-B", "BF.B"])
def test_valid_tickers(good: str) -> None:
    assert validate_ticker(good) == good


@pytest.mark.parametrize("bad", ["spy", "../SPY", "ES=F/..", "A..B", "SPY;DROP", "", "=X"])
def test_invalid_tickers(bad: str) -> None:
    with pytest.raises(InvalidNameError):
        validate_ticker(bad)


@pytest.mark.parametrize("bad", ["2025-13-01", "2025-02-30", "20250101", "../2025-01-01", ""])
def test_invalid_days(bad: str) -> None:
    with pytest.raises(InvalidNameError):
        validate_day(bad)


def test_stream_symbol_validates() -> None:
    assert stream_symbol("btcusdt@trade") == "BTCUSDT"
    with pytest.raises(InvalidNameError):
        stream_symbol("../x@trade")
    assert validate_symbol("1000SATSUSDT") == "1000SATSUSDT"


def test_layout_matches_spec(tmp_path: Path) -> None:
    lake = LakeLayout(tmp_path)
    assert lake.raw_day_dir("BTCUSDT", "2025-01-02") == tmp_path / "raw/binance/BTCUSDT/2025-01-02"
    assert lake.market_partition_dir("trades", "BTCUSDT", "2025-01-02") == (
        tmp_path / "trades/exchange=binance/symbol=BTCUSDT/date=2025-01-02"
    )
    assert lake.macro_partition_dir("SPY", "2025-01-02") == (
        tmp_path / "macro_1m/ticker=SPY/date=2025-01-02"
    )
    assert lake.qa_report_path("2025-01-02") == tmp_path / "qa/reports/2025-01-02.md"
    assert lake.heartbeat_path == tmp_path / "state/heartbeat.json"
    assert lake.duckdb_path == tmp_path / "state/lake.duckdb"
    with pytest.raises(ValueError):
        lake.dataset_root("../secrets")


def test_part_names_round_trip() -> None:
    assert part_file_name(7) == "part-000007.jsonl"
    assert part_file_name(7, compression="zstd") == "part-000007.jsonl.zst"
    assert part_file_name(7, is_open=True) == "part-000007.jsonl.open"
    for name in ["part-000007.jsonl", "part-000007.jsonl.gz", "part-1234567.jsonl.open"]:
        parsed = parse_part_name(name)
        assert parsed is not None
        assert part_file_name(
            parsed.number, compression=parsed.compression, is_open=parsed.is_open
        ) in (
            name,
            name.replace("part-1234567", "part-1234567"),
        )
    assert parse_part_name("part-7.jsonl") is None
    assert parse_part_name(".part-000007.jsonl.tmp") is None
    with pytest.raises(ValueError):
        part_file_name(-1)
