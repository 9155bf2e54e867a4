"""A GCS emulator on loopback and a fault-injecting HTTP proxy in front of it, for tests.

    client ──HTTP──▶ FaultProxy (127.0.0.1:P) ──HTTP──▶ gcp-storage-emulator (127.0.0.1:E)

The client finds the proxy through ``STORAGE_EMULATOR_HOST`` (configuration, as in production
where the same variable is simply unset). The proxy forwards every request verbatim — including
the ``Host`` header, from which the emulator builds resumable-upload session URLs, so the upload
chunks come back through the proxy too — unless a programmed fault matches:

* ``fail_next(n, status=503)``: answer the next ``n`` matching requests itself with an error;
* ``drop_next(n)`` / ``stall_next(n, seconds)``: close the connection unanswered / answer late;
* ``corrupt_uploads(n)``: flip one byte of the object bytes in the next ``n`` upload requests
  (the media part of a multipart upload, the body of a media upload or resumable chunk); the
  emulator then stores, and reports the md5/crc32c of, bytes that differ from the local file;
* ``corrupt_downloads(n)``: flip one byte of the next ``n`` media download response bodies.

Faults match object requests only by default (``/o`` or ``/o/...`` in the path):
google-cloud-storage 3.x fetches a bucket's metadata from a background thread the first time a
client touches it (its bucket-metadata cache), and that stray ``GET /b/<bucket>`` must not eat
injected faults. Every request is recorded (``proxy.records``, ``proxy.count(kind)``) so tests
can count uploads, downloads and metadata calls.

Building blocks for fixtures (see test_gcs.py): ``running_emulator()`` and
``running_proxy(port)`` once per module, ``fresh_bucket(...)`` per test.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import re
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from gcp_storage_emulator.server import Server, create_server
from google.cloud import storage

# Headers that describe one hop, not the message; never forwarded as received.
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
}
_OBJECT_PATH = re.compile(r"/o(/|$)")  # object requests: .../b/<bucket>/o[/<name>]


@dataclass(frozen=True)
class Record:
    """One request as the proxy saw it, and what became of it."""

    method: str
    path: str  # without the query string
    query: dict[str, list[str]]
    status: int  # what the client got (0: nothing, connection dropped / answer held back)
    fault: str | None  # "status" | "drop" | "stall" | "corrupt_upload" | "corrupt_download"

    @property
    def kind(self) -> str:
        """``upload`` | ``download`` | ``object`` (JSON API on an object) | ``other``."""
        if self.path.startswith("/upload/"):
            return "upload"
        if self.path.startswith("/download/") or self.query.get("alt") == ["media"]:
            return "download"
        if _OBJECT_PATH.search(self.path):
            return "object"
        return "other"


@dataclass
class _Fault:
    kind: str
    remaining: float  # math.inf for "every matching request"
    method: str | None
    path: re.Pattern[str]
    status: int = 503  # for kind "status"
    seconds: float = 0.0  # for kind "stall"

    def matches(self, method: str, path: str) -> bool:
        return (
            self.remaining > 0
            and (self.method is None or self.method == method)
            and bool(self.path.search(path))
        )


def _flip_byte(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0xFF]) + data[index + 1 :]


def _corrupt_upload_body(body: bytes, content_type: str) -> bytes | None:
    """``body`` with one object byte flipped, or None if it carries no object bytes."""
    if content_type.startswith("multipart/"):
        boundary = re.search(r'boundary="?([^";]+)"?', content_type)
        if not boundary:
            return None
        delimiter = b"--" + boundary.group(1).encode()
        parts = body.split(delimiter)
        # ["", meta part, media part, "--\r\n"]: flip inside the media part's payload
        if len(parts) < 3:
            return None
        head, sep, payload = parts[2].partition(b"\r\n\r\n")
        if not sep or len(payload) <= 2:  # payload ends with the CRLF before the delimiter
            return None
        parts[2] = head + sep + _flip_byte(payload, (len(payload) - 2) // 2)
        return delimiter.join(parts)
    if content_type.startswith("application/json") or not body:
        return None  # a resumable-session start carries metadata only
    return _flip_byte(body, len(body) // 2)


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # a client that hung up is expected


class FaultProxy:
    """A loopback HTTP proxy in front of ``upstream_port`` with programmable faults."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.records: list[Record] = []
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self._httpd = _QuietServer(("127.0.0.1", 0), self._handler_class())
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    # --- programming -------------------------------------------------------------------
    def fail_next(
        self, n: float, *, status: int = 503, method: str | None = None, path: str = r"/o(/|$)"
    ) -> None:
        """Answer the next ``n`` requests matching ``method``/``path`` (regex) with ``status``."""
        self._add(_Fault("status", n, method, re.compile(path), status))

    def drop_next(self, n: float, *, method: str | None = None, path: str = r"/o(/|$)") -> None:
        """Close the connection of the next ``n`` matching requests without answering."""
        self._add(_Fault("drop", n, method, re.compile(path)))

    def stall_next(
        self, n: float, seconds: float, *, method: str | None = None, path: str = r"/o(/|$)"
    ) -> None:
        """Hold the next ``n`` matching requests ``seconds`` before forwarding them (client
        timeouts); the request still reaches the emulator afterwards, as on a slow network."""
        self._add(_Fault("stall", n, method, re.compile(path), seconds=seconds))

    def corrupt_uploads(self, n: float = 1) -> None:
        """Flip one object byte in each of the next ``n`` upload requests (math.inf: all)."""
        self._add(_Fault("corrupt_upload", n, None, re.compile(r"^/upload/")))

    def corrupt_downloads(self, n: float = 1) -> None:
        """Flip one byte in each of the next ``n`` media download responses (math.inf: all)."""
        self._add(_Fault("corrupt_download", n, "GET", re.compile(r"^/download/|/o/")))

    def reset(self) -> None:
        """Forget faults and records."""
        with self._lock:
            self._faults.clear()
            self.records.clear()

    def count(self, kind: str | None = None, *, fault: str | None = None) -> int:
        """How many recorded requests are of ``kind`` (see :attr:`Record.kind`) / ``fault``."""
        with self._lock:
            return sum(
                1
                for r in self.records
                if (kind is None or r.kind == kind) and (fault is None or r.fault == fault)
            )

    def _add(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def _take(self, method: str, path: str, kinds: tuple[str, ...]) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.kind in kinds and fault.matches(method, path):
                    fault.remaining -= 1
                    return fault
        return None

    # --- serving -----------------------------------------------------------------------
    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive towards the client
            # headers and body go out in two writes: without TCP_NODELAY the body waits for
            # the client's delayed ACK (~40 ms per request)
            disable_nagle_algorithm = True

            def do_GET(self) -> None:
                proxy._handle(self)

            do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_GET

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        url = urlsplit(h.path)
        method = h.command
        query = parse_qs(url.query)
        body = _read_body(h)
        fault_name: str | None = None

        fault = self._take(method, url.path, ("status", "drop", "stall"))
        if fault is not None and fault.kind == "drop":
            self._record(method, url.path, query, 0, "drop")
            h.close_connection = True
            return
        if fault is not None and fault.kind == "stall":
            # recorded now: the client has usually given up before the late answer goes out
            self._record(method, url.path, query, 0, "stall")
            time.sleep(fault.seconds)
            fault_name = "stall"
        elif fault is not None:
            payload = json.dumps(
                {"error": {"code": fault.status, "message": "injected by FaultProxy"}}
            ).encode()
            self._record(method, url.path, query, fault.status, "status")
            _respond(h, fault.status, [("Content-Type", "application/json")], payload)
            return

        content_type = h.headers.get("Content-Type", "")
        if method in ("POST", "PUT") and url.path.startswith("/upload/"):
            corrupted = _corrupt_upload_body(body, content_type)
            if corrupted is not None and self._take(method, url.path, ("corrupt_upload",)):
                body, fault_name = corrupted, "corrupt_upload"

        headers = [(k, v) for k, v in h.headers.items() if k.lower() not in _HOP_BY_HOP]
        conn = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=60)
        try:
            conn.putrequest(method, h.path, skip_host=True, skip_accept_encoding=True)
            for k, v in headers:  # Host included: the emulator builds session URLs from it
                conn.putheader(k, v)
            conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            resp = conn.getresponse()
            data = resp.read()
            resp_headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP_BY_HOP]
            status = resp.status
        finally:
            conn.close()

        is_media = url.path.startswith("/download/") or query.get("alt") == ["media"]
        if (
            method == "GET"
            and is_media
            and status in (200, 206)
            and data
            and self._take(method, url.path, ("corrupt_download",))
        ):
            data, fault_name = _flip_byte(data, len(data) // 2), "corrupt_download"

        if fault_name != "stall":
            self._record(method, url.path, query, status, fault_name)
        _respond(h, status, resp_headers, data if method != "HEAD" else b"")

    def _record(self, method: str, path: str, query: dict, status: int, fault: str | None) -> None:
        with self._lock:
            self.records.append(Record(method, path, query, status, fault))


def _read_body(h: BaseHTTPRequestHandler) -> bytes:
    length = h.headers.get("Content-Length")
    if length is not None:
        return h.rfile.read(int(length))
    if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int(h.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while h.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                break
            chunks.append(h.rfile.read(size))
            h.rfile.readline()
        return b"".join(chunks)
    return b""


def _respond(
    h: BaseHTTPRequestHandler, status: int, headers: list[tuple[str, str]], body: bytes
) -> None:
    h.send_response(status)
    for k, v in headers:
        h.send_header(k, v)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


@dataclass
class Emulator:
    """A running in-memory gcp-storage-emulator."""

    port: int
    url: str
    server: Server = field(repr=False)


@contextlib.contextmanager
def running_emulator() -> Iterator[Emulator]:
    """gcp-storage-emulator on 127.0.0.1, a free port, data in memory. Its per-request INFO
    lines are dropped: its server thread outlives the test whose log capture it would write to."""
    logging.getLogger("gcp_storage_emulator").setLevel(logging.WARNING)
    server = create_server("127.0.0.1", 0, in_memory=True)
    server.start()
    try:
        port = server._api._httpd.server_address[1]  # bound to port 0: ask the socket
        yield Emulator(port=port, url=f"http://127.0.0.1:{port}", server=server)
    finally:
        server.stop()


@contextlib.contextmanager
def running_proxy(upstream_port: int) -> Iterator[FaultProxy]:
    proxy = FaultProxy(upstream_port).start()
    try:
        yield proxy
    finally:
        proxy.stop()


@dataclass
class GcsTestEnv:
    """A client that talks through ``proxy`` to the emulator, and a bucket of its own."""

    emulator: Emulator
    proxy: FaultProxy
    client: storage.Client
    bucket: storage.Bucket  # fresh for the test
    bucket_name: str


@contextlib.contextmanager
def fresh_bucket(
    emulator: Emulator, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> Iterator[GcsTestEnv]:
    """A new bucket and a client built the production way (``dagster_gcp.GCSResource``), pointed
    at ``proxy`` by ``STORAGE_EMULATOR_HOST``; faults and request records start empty."""
    from dagster_gcp import GCSResource

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
    client = GCSResource(project="test").get_client()
    bucket_name = f"test-{uuid.uuid4().hex[:12]}"
    bucket = client.create_bucket(bucket_name)
    proxy.reset()
    try:
        yield GcsTestEnv(emulator, proxy, client, bucket, bucket_name)
    finally:
        proxy.reset()
        client.close()
