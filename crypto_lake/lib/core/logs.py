"""One logging setup for every process (collector, simulator, CLIs)."""

from __future__ import annotations

import logging
import os
import sys

LOGGER_NAME = "crypto_lake"
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: str | int | None = None) -> logging.Logger:
    """Configure the root handler once (stderr, UTC-free ISO time) and return our logger.

    The level comes from the argument, else ``CRYPTO_LAKE_LOG_LEVEL``, else INFO.
    """
    level = level or os.environ.get("CRYPTO_LAKE_LOG_LEVEL", "INFO")
    root = logging.getLogger()
    if not any(getattr(h, "_crypto_lake", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_FORMAT))
        handler._crypto_lake = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level if isinstance(level, int) else str(level).upper())
    return logging.getLogger(LOGGER_NAME)


def get_logger(name: str) -> logging.Logger:
    """A child of the project logger, e.g. ``get_logger("collector.writer")``."""
    return logging.getLogger(f"{LOGGER_NAME}.{name}")
