"""Small helpers for the macro tests."""

from datetime import UTC, date, datetime


def utc(day: str, hh: int = 0, mm: int = 0) -> datetime:
    """``day`` at hh:mm UTC as an aware datetime."""
    d = date.fromisoformat(day)
    return datetime(d.year, d.month, d.day, hh, mm, tzinfo=UTC)
