"""The raw line schema shared by the collector (writer) and Dagster (reader).

Every line of a raw part file is one JSON object. Four kinds exist:

* market data, exactly what the exchange sent, wrapped with the local receive clock::

    {"recv_ns": 1700000000123456789, "conn": "ws-3", "unit": "us",
     "stream": "btcusdt@trade", "data": {...verbatim exchange payload...}}

  ``unit`` is the unit of the payload's time fields ("ms" or "us"); the payloads' fields are
  listed in ``crypto_lake.lib.raw.binance``.
* repaired trades fetched from REST after a gap; ``data`` is the verbatim REST element
  (``historicalTrades`` or ``aggTrades`` shape) and ``rest`` names the endpoint::

    {"recv_ns": ..., "conn": "rest", "unit": "ms", "stream": "btcusdt@trade",
     "rest": "historicalTrades", "data": {"id": 1, "price": "...", ...}}

* order book snapshots from REST ``/api/v3/depth``; ``data`` is the verbatim answer body
  (``lastUpdateId``, ``bids``, ``asks``), ``stream`` the symbol's depth stream, ``reason``
  why it was fetched (``DEPTH_SNAPSHOT_REASONS``) and ``limit`` the levels asked for::

    {"recv_ns": ..., "conn": "rest", "unit": "ms", "stream": "btcusdt@depth@100ms",
     "rest": "depth", "reason": "start", "limit": 1000, "data": {"lastUpdateId": 1, ...}}

* session records, so a reader can tell an outage from a quiet market::

    {"recv_ns": ..., "conn": "ws-3", "session": "disconnect", "reason": "..."}

  ``collector_start`` and ``collector_stop`` have ``"conn": "collector"``. A run killed
  without warning (SIGKILL, crash, power loss) writes no stop; the next start notices
  (the symbol's newest part does not end with a stop) and writes, per such symbol:

  - the missing ``collector_stop`` with ``"unclean": true``, dated at the dead run's last
    line (``recv_ns``; ``noted_ns`` is when it was written), so it is filed in that
    line's day folder and a reader of that day alone sees where recording ended;
  - its own ``collector_start`` with ``"unclean": true`` and ``"last_recv_ns"`` (the same
    time).

  Older lakes lack both; a reader treats a ``collector_start`` not preceded by a stop as
  the same thing (see ``crypto_lake.lib.market.outages.session_outages``).

Parsing belongs to Dagster: the collector never rewrites a payload, so a parser bug can
always be fixed by reprocessing.
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path
from typing import Any

import orjson
import zstandard

from crypto_lake.lib.raw.binance import REPAIR_SOURCES, TimeUnit

RAW_SCHEMA_VERSION = 1
SESSION_EVENTS = (
    "connect",  # socket open, before any data
    "subscribed",  # streams confirmed by the first message or the URL
    "disconnect",  # socket closed; "reason" says why
    "server_shutdown",  # Binance announced a shutdown of this connection
    "replaced",  # make-before-break replacement took over from this connection
    "collector_start",  # "unclean": true when the previous run died without a stop
    "collector_stop",  # "unclean": true when written by the next start (see above)
)
REST_SOURCES = tuple(REPAIR_SOURCES)  # historicalTrades, aggTrades
DEPTH_SNAPSHOT_REASONS = (
    "start",  # the first snapshot after the depth stream started on a connection
    "gap",  # the diff events broke their sequence (U != previous u + 1)
    "reconnect",  # the connection carrying the depth stream was replaced or reconnected
    "verify",  # the periodic snapshot the rebuilt book is checked against
)


class RawLineError(ValueError):
    """A raw line that is not valid JSON or not one of the three kinds."""


def ws_line(recv_ns: int, conn: str, unit: TimeUnit, message: bytes) -> bytes:
    """Wrap a verbatim combined-stream message (``{"stream":..,"data":..}``) as a raw line.

    The message bytes are spliced in unchanged after the collector's own fields, so the
    exchange's text (key order, decimal strings) is preserved to the byte.
    """
    message = message.strip()
    if not message.startswith(b"{"):
        raise RawLineError("combined-stream message is not a JSON object")
    head = b'{"recv_ns":%d,"conn":%s,"unit":"%s",' % (recv_ns, orjson.dumps(conn), unit.encode())
    return head + message[1:] + b"\n"


def repaired_line(recv_ns: int, stream: str, unit: TimeUnit, source: str, payload: dict) -> bytes:
    """A trade fetched from REST to repair a gap; ``payload`` is the verbatim REST element."""
    if source not in REST_SOURCES:
        raise ValueError(f"unknown REST source {source!r}")
    record = {
        "recv_ns": recv_ns,
        "conn": "rest",
        "unit": unit,
        "stream": stream,
        "rest": source,
        "data": payload,
    }
    return orjson.dumps(record) + b"\n"


def depth_snapshot_line(
    recv_ns: int, stream: str, reason: str, limit: int, body: bytes, unit: TimeUnit = "ms"
) -> bytes:
    """A REST depth snapshot; ``body`` is the answer's bytes, spliced in unchanged."""
    if reason not in DEPTH_SNAPSHOT_REASONS:
        raise ValueError(f"unknown depth snapshot reason {reason!r}")
    body = body.strip()
    if not body.startswith(b"{"):
        raise RawLineError("depth snapshot is not a JSON object")
    head = orjson.dumps(
        {"recv_ns": recv_ns, "conn": "rest", "unit": unit, "stream": stream, "rest": "depth",
         "reason": reason, "limit": limit}
    )  # fmt: skip
    return head[:-1] + b',"data":' + body + b"}\n"


def session_line(recv_ns: int, conn: str, event: str, **fields: Any) -> bytes:
    """A session record (connect, disconnect with reason, server shutdown notice, ...)."""
    if event not in SESSION_EVENTS:
        raise ValueError(f"unknown session event {event!r}")
    record = {"recv_ns": recv_ns, "conn": conn, "session": event, **fields}
    return orjson.dumps(record) + b"\n"


def open_raw(
    path: Path, decompressor: zstandard.ZstdDecompressor | None = None
) -> io.BufferedIOBase:
    """Open a raw part file for reading bytes, transparently decompressing .gz and .zst.
    ``decompressor`` reuses a zstd context (one per thread) instead of making one per file."""
    path = Path(path)
    if path.suffix == ".gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    if path.suffix == ".zst":
        reader = (decompressor or zstandard.ZstdDecompressor()).stream_reader(
            open(path, "rb"),  # noqa: SIM115 - closed with the reader (closefd)
            read_across_frames=True,
            closefd=True,
        )
        return io.BufferedReader(reader)
    return open(path, "rb")


def parse_line(line: bytes | str) -> dict[str, Any]:
    """Parse and classify one raw line; raises RawLineError for anything malformed."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise RawLineError(f"not JSON: {exc}") from exc
    if not isinstance(obj, dict) or not isinstance(obj.get("recv_ns"), int):
        raise RawLineError("raw line must be an object with an integer recv_ns")
    if "session" in obj:
        return obj
    if not isinstance(obj.get("stream"), str) or not isinstance(obj.get("data"), dict):
        raise RawLineError("market line needs a string 'stream' and an object 'data'")
    return obj
