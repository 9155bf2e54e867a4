"""A webhook receiver on loopback: records every POSTed JSON body, answers a status the test
chooses (200 by default; 500 to make deliveries fail)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class WebhookServer:
    """``with WebhookServer() as hook:`` then POST to ``hook.url``; ``hook.bodies`` lists the
    JSON bodies received (also those answered with an error status), ``hook.paths`` their
    paths. ``hook.status`` is the status the next POST gets."""

    def __init__(self, path: str = "/hook") -> None:
        self.path = path
        self.status = 200
        self.bodies: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                with server._lock:
                    server.paths.append(self.path)
                    server.bodies.append(json.loads(raw))
                    status = server.status
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: its thread can outlive a test's log capture

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def states(self) -> list[tuple[str, str]]:
        """(key, state) of every body received, in order."""
        return [(b["key"], b["state"]) for b in self.bodies]

    def clear(self) -> None:
        with self._lock:
            self.bodies.clear()
            self.paths.clear()

    def __enter__(self) -> WebhookServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop serving and free the port (a later POST gets "connection refused")."""
        if self._thread.is_alive():
            self._httpd.shutdown()
        self._httpd.server_close()
