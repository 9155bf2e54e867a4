"""Where each symbol's trade ids stopped: the id checkpoint plus the newest raw files.

The collector keeps its exact id state (next expected id and the missing ranges of every
symbol) in ``state/collector_ids.json``, rewritten a few times a second *after* the writer
flushed, so the checkpoint never claims an id that is not in a file. A crash can still
happen between two checkpoints; on start the ids found in the newest raw files (live and
repaired, read back until they reach the checkpoint) are replayed through the tracker:
ids below the checkpoint fill its holes, ids above it extend it, and every id the
crashed run never wrote shows up as a hole — a gap to repair — instead of being lost.

The newest part also tells whether the previous run stopped cleanly: a clean stop writes
``collector_stop`` as each symbol's last line; any other last line means the run died
(SIGKILL, crash, power loss, write failure) right after it (``unclean_end_ns``).
"""

from __future__ import annotations

import gzip
import io
import os
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import zstandard

from collector_daemon.tracker import IdTracker
from crypto_lake.lib.core.fsutil import atomic_write_bytes
from crypto_lake.lib.core.logs import get_logger
from crypto_lake.lib.core.paths import LakeLayout, parse_part_name
from crypto_lake.lib.raw import binance

log = get_logger("collector.resume")

MIN_FILES_WITH_IDS = 2
MAX_FILES_SCANNED = 400


def checkpoint_path(layout: LakeLayout) -> Path:
    return layout.state_dir / "collector_ids.json"


def save_checkpoint(layout: LakeLayout, stream_kind: str, trackers: dict[str, IdTracker]) -> None:
    """Persist every tracker's next id and holes (call only right after a writer flush)."""
    symbols: dict[str, Any] = {}
    for sym, t in trackers.items():
        if t.next_id is None:
            continue
        holes = [[h.first, h.last, h.cause, h.declared] for h in t.holes]
        symbols[sym] = {"next_id": t.next_id, "last_time": t.last_time, "holes": holes}
    payload = {"stream": stream_kind, "symbols": symbols}
    # Not fsynced: it only has to survive a process crash; after a power loss the scan of
    # the files still finds the ids (it reads back to whatever checkpoint survived).
    atomic_write_bytes(checkpoint_path(layout), orjson.dumps(payload), durable=False)


def load_checkpoint(layout: LakeLayout, stream_kind: str) -> dict[str, Any]:
    path = checkpoint_path(layout)
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, orjson.JSONDecodeError) as exc:
        log.error("ignoring unreadable %s: %s", path, exc)
        return {}
    if not isinstance(data, dict) or data.get("stream") != stream_kind:
        return {}  # ids of another stream kind (trade vs aggTrade) do not apply
    symbols = data.get("symbols")
    return symbols if isinstance(symbols, dict) else {}


# reading ids back from the files ----------------------------------------------------------------
def read_part_lines(path: Path) -> Iterator[bytes]:
    """Lines of a sealed (possibly compressed) part file."""
    parsed = parse_part_name(path.name)
    comp = parsed.compression if parsed else "none"
    with open(path, "rb") as raw:
        if comp == "gzip":
            stream: Any = gzip.GzipFile(fileobj=raw)
        elif comp == "zstd":
            stream = io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw))
        else:
            stream = raw
        yield from stream


def ids_in_part(path: Path, stream: str) -> list[tuple[int, int | None, bool]]:
    """(id, event time, live?) of every trade line of ``stream`` in one part."""
    marker = b'"stream":"' + stream.encode() + b'"'
    live = binance.TRADE_STREAMS.get(stream.partition("@")[2], binance.TRADE)
    live_keys = (live.key("trade_id"), live.key("ts_event"))
    rest_keys = {name: (m.key("trade_id"), m.key("ts_event"))
                 for name, m in binance.REPAIR_SOURCES.items()}  # fmt: skip
    out: list[tuple[int, int | None, bool]] = []
    for line in read_part_lines(path):
        if marker not in line:
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        data = obj.get("data") if isinstance(obj, dict) else None
        if not isinstance(data, dict):
            continue
        rest = obj.get("rest")
        id_key, time_key = rest_keys.get(rest, live_keys) if isinstance(rest, str) else live_keys
        ident = data.get(id_key)
        if isinstance(ident, int):
            t = data.get(time_key)
            out.append((ident, t if isinstance(t, int) else None, rest is None))
    return out


def sealed_parts_newest_first(layout: LakeLayout, symbol: str) -> Iterator[Path]:
    sym_dir = layout.raw_symbol_dir(symbol)
    if not sym_dir.is_dir():
        return
    for day in sorted((d for d in os.listdir(sym_dir) if not d.startswith(".")), reverse=True):
        parts = []
        for name in os.listdir(sym_dir / day):
            parsed = parse_part_name(name)
            if parsed is not None and not parsed.is_open:
                parts.append((parsed.number, sym_dir / day / name))
        for _, path in sorted(parts, reverse=True):
            yield path


def unclean_end_ns(layout: LakeLayout, symbol: str, tail: int = 16) -> int | None:
    """When the run that wrote ``symbol``'s newest part did not stop cleanly, the receive time
    of its last line there (the latest of the last ``tail`` whole lines); else None (a clean
    stop, or no part at all)."""
    path = next(sealed_parts_newest_first(layout, symbol), None)
    if path is None:
        return None
    records = []
    for line in deque(read_part_lines(path), maxlen=tail):
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(obj, dict) and isinstance(obj.get("recv_ns"), int):
            records.append(obj)
    if not records or records[-1].get("session") == "collector_stop":
        return None
    return max(r["recv_ns"] for r in records)


def recent_ids(
    layout: LakeLayout, symbol: str, stream: str, floor: int | None
) -> list[tuple[int, int | None]]:
    """Sorted (id, time) from the newest parts, read back until live ids reach ``floor``."""
    ids: list[tuple[int, int | None]] = []
    with_ids = 0
    min_live: int | None = None
    for scanned, path in enumerate(sealed_parts_newest_first(layout, symbol), start=1):
        got = ids_in_part(path, stream)
        if got:
            with_ids += 1
            ids.extend((i, t) for i, t, _ in got)
            lives = [i for i, _, live in got if live]
            if lives:
                min_live = min(lives) if min_live is None else min(min_live, min(lives))
        reached = floor is None or (min_live is not None and min_live <= floor)
        if (with_ids >= MIN_FILES_WITH_IDS and reached) or scanned >= MAX_FILES_SCANNED:
            break
    ids.sort()
    return ids


def restore_tracker(
    tracker: IdTracker, checkpoint: dict[str, Any] | None, ids: list[tuple[int, int | None]]
) -> None:
    """Seed ``tracker`` from the checkpoint, then replay the ids found in the files."""
    if checkpoint:
        tracker.next_id = int(checkpoint["next_id"])
        tracker.last_time = checkpoint.get("last_time")
        for first, last, cause, declared in checkpoint.get("holes", []):
            tracker.add_hole(int(first), int(last), 0.0, str(cause), bool(declared))
    elif ids:
        tracker.next_id = ids[0][0]  # no checkpoint: holes only inside what the files show
    for ident, t in ids:
        if tracker.next_id is not None and ident < tracker.next_id:
            tracker.fill(ident)
        else:
            tracker.cause_hint = "restart"
            tracker.accept(ident, 0.0, t)
    if tracker.next_id is not None:
        tracker.cause_hint = "restart"  # the first live id after start may open the restart gap
