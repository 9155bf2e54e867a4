"""Bad lines of a tick build, kept for inspection in the quarantine folder.

Bad lines (not JSON, wrong shape, unparseable fields) of the day's own folder are counted
and copied to ``{quarantine_dir}/{symbol}_{day}.jsonl`` with the reason; they never stop the
build. Lines too long for DuckDB's JSON reader are set aside before it reads a file (it would
fail the whole day on them), and copies of conflicting trade ids (``dedup``) are added.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import orjson

from crypto_lake.lib.core.fsutil import atomic_path
from crypto_lake.lib.core.logs import get_logger
from crypto_lake.lib.raw.catalog import (
    MAX_LINE_BYTES,
    RAW_COLUMNS,
    cut_long_lines,
    long_line_record,
    ndjson_source,
)
from crypto_lake.lib.raw.lines import open_raw

log = get_logger("ticks")  # the tick build's logger


def without_long_lines(paths: list[str], folder: Path) -> tuple[list[str], list[bytes]]:
    """``paths``, each file with lines over MAX_LINE_BYTES replaced by a copy in ``folder``
    without them, and those lines' quarantine records (the general path's counterpart of
    the compiled reader's ``_Scratch._set_aside_long_lines``)."""
    out, records = [], []
    for k, path in enumerate(paths):
        with open_raw(Path(path)) as fh:
            rest, cut = cut_long_lines(fh.read())
        if cut:
            folder.mkdir(exist_ok=True)
            copy = folder / f"{k}.jsonl"
            copy.write_bytes(rest)
            records += [long_line_record(path, n, line) for n, line in cut]
            path = str(copy)
        out.append(path)
    return out, records


def _unreadable(con: duckdb.DuckDBPyConnection, path: Path) -> list[bytes]:
    """Quarantine records of the lines of ``path`` that DuckDB reads no recv_ns from at all,
    with their exact text: the reader's own JSON transform decides, so every line counted
    as bad is listed once and no line it did read is."""
    with open_raw(path) as fh:
        lines = [(n, line.rstrip(b"\n")) for n, line in enumerate(fh, 1) if line.strip()]
    lines = [(n, line) for n, line in lines if len(line) <= MAX_LINE_BYTES]  # listed apart
    texts: list[str | None] = []
    for _, line in lines:
        try:
            texts.append(line.decode())
        except UnicodeDecodeError:
            texts.append(None)  # the reader reads nothing from a line that is not UTF-8
    recv = con.execute(
        f"SELECT CASE WHEN json_valid(l) AND json_type(l) = 'OBJECT' "
        f"THEN json_transform(l, '{orjson.dumps(RAW_COLUMNS).decode()}').recv_ns END "
        f"FROM unnest($lines) WITH ORDINALITY AS t(l, i) ORDER BY i",
        {"lines": texts},
    ).fetchall()
    records = []
    for (n, line), (recv_ns,) in zip(lines, recv, strict=True):
        if recv_ns is not None:
            continue
        try:
            orjson.loads(line)
            reason = "raw line must be an object with an integer recv_ns"
        except orjson.JSONDecodeError as exc:
            reason = f"not JSON: {exc}"
        text = line.decode("utf-8", "replace")
        records.append(orjson.dumps({"file": str(path), "line_no": n, "reason": reason,
                                     "line": text}))  # fmt: skip
    return records


def write_quarantine(
    con: duckdb.DuckDBPyConnection, quarantine_dir: Path, symbol: str, day: str, *,
    bad_lines: int, trade_id_conflicts: int, suspects: list[str], more: list[bytes],
) -> str | None:  # fmt: skip
    """Write the day's bad lines (``bad_lines`` of them) to
    ``{quarantine_dir}/{symbol}_{day}.jsonl`` (or remove it). ``suspects`` are the day's own
    files that may hold unreadable lines; ``more`` are records made elsewhere (lines too long
    for DuckDB, copies of conflicting trade ids)."""
    out = Path(quarantine_dir) / f"{symbol}_{day}.jsonl"
    if not bad_lines and not more:
        out.unlink(missing_ok=True)
        return None
    rows = con.execute(
        "SELECT data, recv_us FROM stage WHERE kind = 'bad' ORDER BY recv_us NULLS FIRST, data"
    ).fetchall()
    # valid JSON with a recv_ns, but a field would not parse
    records = [orjson.dumps({"reason": "invalid field", "recv_us": recv, "data": data})
               for data, recv in rows if recv is not None]  # fmt: skip
    if any(recv is None for _, recv in rows):  # rare: find the files holding unreadable lines
        try:
            unreadable = con.execute(
                f"SELECT DISTINCT filename FROM {ndjson_source('own')} WHERE recv_ns IS NULL "
                f"ORDER BY filename",
                {"own": suspects},
            ).fetchall()
        except duckdb.Error:  # a suspect holds a line too long for the reader: ask each file
            unreadable = [(fn,) for fn in sorted(suspects)]
        for (fn,) in unreadable:
            records += _unreadable(con, Path(fn))
    records += more
    with atomic_path(out, durable=False) as tmp:
        tmp.write_bytes(b"\n".join(records) + b"\n")
    log.warning("quarantined %d bad lines and %d trade id conflicts of %s %s to %s",
                bad_lines, trade_id_conflicts, symbol, day, out)  # fmt: skip
    return str(out)
