"""One partition of history from Binance's public files: what the assets and the CLI share.

``import_trades_archive`` fetches and verifies the day's trades zip (aggTrades when the
collector records @aggTrade) and parses it whole, so a stored zip is always one the trades
build can read; ``archive_trades`` gives the trades build its rows (``fast_trades``, or the
general reader's table for a file of another shape). ``import_klines_1s``
turns the day's 1 s klines zip into the ``klines_1s`` table. Every failure is one
:class:`ImportFailed` whose message says what happened to which file and what to do; nothing
is stored for a file that failed (a zip that verified but does not parse is removed again).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from crypto_lake.lib.core.config import Config
from crypto_lake.lib.core.logs import get_logger
from crypto_lake.lib.core.parquet_out import write_dataset
from crypto_lake.lib.core.paths import LakeLayout
from crypto_lake.lib.core.symbols import validate_day, validate_symbol
from crypto_lake.lib.history import fast_trades
from crypto_lake.lib.history.public_csv import (
    public_time_unit,
    read_agg_trades,
    read_klines,
    read_trades,
)
from crypto_lake.lib.history.public_files import (
    PublicFile,
    PublicFileError,
    PublicFileMissing,
    checksum_path,
    fetch_public_file,
    verify_stored_file,
)
from crypto_lake.lib.market.archive_trades import ArchiveRows

log = get_logger("history.import")

KIND_OF_STREAM = {"trade": "trades", "aggTrade": "aggTrades"}


class ImportFailed(RuntimeError):
    """A public file of one partition could not be imported; nothing was stored for it."""


@dataclass(frozen=True)
class Imported:
    """A verified, parsed public file of one partition."""

    file: PublicFile
    kind: str
    rows: int
    unit: str  # the file's time unit: ms (before 2025) or us
    first_id: int | None = None
    last_id: int | None = None

    def metadata(self) -> dict[str, Any]:
        """Plain values for the UI (the asset adds its own)."""
        meta: dict[str, Any] = {
            "dagster/row_count": self.rows,
            "file_kind": self.kind,
            "file_url": self.file.url,
            "file_path": str(self.file.path),
            "sha256": self.file.sha256,
            "file_bytes": self.file.size_bytes,
            "downloaded": self.file.downloaded,
            "time_unit": self.unit,
        }
        if self.first_id is not None:
            meta["first_id"], meta["last_id"] = self.first_id, self.last_id
        return meta


def public_trades_kind(config: Config) -> str:
    """The public file whose ids match what the collector records: trades or aggTrades."""
    return KIND_OF_STREAM[config.binance.trade_stream]


def _fetch(layout: LakeLayout, config: Config, kind: str, symbol: str, day: str,
           interval: str | None = None) -> PublicFile:  # fmt: skip
    try:
        return fetch_public_file(config.binance.public_data_url, kind, symbol, day, interval,
                                 layout=layout)  # fmt: skip
    except PublicFileMissing as exc:
        raise ImportFailed(f"not published yet: {exc}") from exc
    except PublicFileError as exc:
        raise ImportFailed(str(exc)) from exc


def _discard(file: PublicFile) -> None:
    """A verified download whose CSV failed to parse is not kept."""
    file.path.unlink(missing_ok=True)
    checksum_path(file.path).unlink(missing_ok=True)


def _read_archive(path: Path, kind: str, day: str) -> pa.Table:
    """The general reader's table of a public trades (aggTrades) zip, without quote_qty (the
    trades build computes its own products)."""
    if kind == "trades":
        return read_trades(path, day, quote_qty=False)
    return read_agg_trades(path, day, quote_qty=False)


def import_trades_archive(layout: LakeLayout, config: Config, symbol: str, day: str) -> Imported:
    """Fetch, verify and parse the day's public trades (or aggTrades) file of ``symbol``."""
    symbol, day = validate_symbol(symbol), validate_day(day)
    kind = public_trades_kind(config)
    file = _fetch(layout, config, kind, symbol, day)
    try:  # as the trades build will read it
        read = fast_trades.read_rows(file.path, kind, day) or _read_archive(file.path, kind, day)
        ids = read.rows[2] if isinstance(read, ArchiveRows) else read["trade_id"].to_numpy()
    except PublicFileError as exc:
        _discard(file)
        raise ImportFailed(f"{exc} (the file was removed again)") from exc
    first, last = (int(ids.min()), int(ids.max())) if len(ids) else (None, None)
    return Imported(file, kind, len(ids), public_time_unit(day), first, last)


def archive_trades(layout: LakeLayout, config: Config, symbol: str, day: str,
                   ) -> pa.Table | ArchiveRows | None:  # fmt: skip
    """The imported archive of (symbol, day) for the trades build (``build_ticks(archive=)``),
    or None when none is stored: its tick rows (``fast_trades``), or the general reader's
    table when the file is not of the shape the fast reader takes (that table has no
    quote_qty column: the build computes its own). The stored zip is checked against its
    stored checksum while it is read, and nothing is returned unless it matches."""
    kind = public_trades_kind(config)
    path = layout.public_file(kind, symbol, day)
    if not path.exists():
        return None
    try:
        return read_stored_archive(path, kind, day)
    except PublicFileError as exc:
        raise ImportFailed(
            f"{exc}; the stored archive no longer verifies: materialize binance_trades_archive "
            f"for {day}|{symbol} again"
        ) from exc


def read_stored_archive(path: Path, kind: str, day: str) -> pa.Table | ArchiveRows:
    """``archive_trades`` of the stored zip at ``path``: checked against its stored checksum
    while it is read (PublicFileError when it does not match, whatever the read found)."""
    with ThreadPoolExecutor(1) as pool:  # hashing releases the GIL: it overlaps the read
        verified = pool.submit(verify_stored_file, path)
        try:
            rows = fast_trades.read_rows(path, kind, day)
        finally:
            verified.result()
    return rows if rows is not None else _read_archive(path, kind, day)


def import_klines_1s(
    layout: LakeLayout, config: Config, symbol: str, day: str, out: Path,

) -> Imported:  # fmt: skip
    """Fetch and verify the day's public 1 s klines file and write it as ``klines_1s``."""
    symbol, day = validate_symbol(symbol), validate_day(day)
    file = _fetch(layout, config, "klines", symbol, day, "1s")
    try:
        table = read_klines(file.path, day, "1s", symbol)
    except PublicFileError as exc:
        _discard(file)
        raise ImportFailed(f"{exc} (the file was removed again)") from exc
    write_dataset(table, out, "klines_1s")
    return Imported(file, "klines_1s", table.num_rows, public_time_unit(day))
