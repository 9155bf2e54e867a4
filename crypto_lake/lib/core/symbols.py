"""Strict validation of exchange symbols and macro tickers before they become paths or SQL."""

from __future__ import annotations

import re
from datetime import date, timedelta

# Binance spot symbols are upper-case letters and digits (BTCUSDT, 1000SATSUSDT).
_SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,20}$")
# yfinance tickers: SPY, ES=F, EURUSD=X, ^GSPC, BRK-B, BF.B. No slashes, no "..".
_TICKER_RE = re.compile(r"^\^?[A-Z0-9][A-Z0-9.\-]{0,14}(=[A-Z])?$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class InvalidNameError(ValueError):
    """A symbol, ticker or date that must not become part of a path."""


def validate_symbol(symbol: str) -> str:
    """Return ``symbol`` if it is a valid Binance spot symbol, else raise InvalidNameError."""
    if not isinstance(symbol, str) or not _SYMBOL_RE.fullmatch(symbol):
        raise InvalidNameError(
            f"invalid symbol {symbol!r}: expected 2-20 upper-case letters or digits, e.g. BTCUSDT"
        )
    return symbol


def validate_ticker(ticker: str) -> str:
    """Return ``ticker`` if it is a valid macro ticker (SPY, ES=F, EURUSD=X), else raise."""
    if not isinstance(ticker, str) or not _TICKER_RE.fullmatch(ticker) or ".." in ticker:
        raise InvalidNameError(
            f"invalid ticker {ticker!r}: expected e.g. SPY, ES=F or EURUSD=X (no slashes or '..')"
        )
    return ticker


def validate_day(day: str | date) -> str:
    """Return the ISO date string for ``day`` (YYYY-MM-DD), raising on anything else."""
    if isinstance(day, date):
        return day.isoformat()
    if not isinstance(day, str) or not _DATE_RE.fullmatch(day):
        raise InvalidNameError(f"invalid date {day!r}: expected YYYY-MM-DD")
    try:
        date.fromisoformat(day)
    except ValueError as exc:
        raise InvalidNameError(f"invalid date {day!r}: {exc}") from exc
    return day


def stream_symbol(stream: str) -> str:
    """The upper-case symbol of a combined-stream name such as ``btcusdt@trade``."""
    return validate_symbol(stream.split("@", 1)[0].upper())


def shift_day(day: str, days: int) -> str:
    """The ISO day ``days`` after ``day`` (before it when negative)."""
    return (date.fromisoformat(validate_day(day)) + timedelta(days=days)).isoformat()
