"""JSON POST to the alert webhook, with the URL kept secret.

The URL often carries a token (Slack's ``hooks.slack.com/services/T…/B…/secret``), so it is a
secret: it is read only here, at send time, and never appears in a returned error, an
exception, a log line or a file. HTTP libraries put the URL in their error texts, so errors are
rebuilt from their kind alone ("HTTP 500", "connection refused", "timed out").
"""

from __future__ import annotations

import http.client
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson
from pydantic import SecretStr

RETRY_DELAY_S = 0.5  # between attempts within one delivery; the next tick retries anyway


@dataclass(frozen=True)
class Delivery:
    """The outcome of one POST: ``error`` is None on success, else a URL-free reason."""

    error: str | None = None
    attempts: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None


def post_json(
    url: SecretStr | None, body: dict[str, Any], *, timeout_s: float = 5.0, attempts: int = 2
) -> Delivery:
    """POST ``body`` as JSON to the webhook; retry connection errors, timeouts, 429 and 5xx
    up to ``attempts`` times. Never raises for a delivery problem and never reveals the URL."""
    if url is None or not url.get_secret_value():
        return Delivery("no webhook configured (set CRYPTO_LAKE_WEBHOOK_URL)")
    secret = url.get_secret_value()
    try:
        scheme = urlsplit(secret).scheme
    except ValueError:  # its message would quote the URL
        return Delivery("webhook POST failed: the webhook URL is malformed")
    if scheme not in ("http", "https"):
        return Delivery("the webhook URL is not an http(s) URL")
    data = orjson.dumps(body)
    error = "not sent"
    for attempt in range(1, attempts + 1):
        error, retry = _post_once(secret, data, timeout_s)
        if error is None:
            return Delivery(None, attempt)
        if not retry or attempt == attempts:
            return Delivery(error, attempt)
        time.sleep(RETRY_DELAY_S * attempt)
    return Delivery(error, attempts)


def _post_once(url: str, data: bytes, timeout_s: float) -> tuple[str | None, bool]:
    """One POST: (None, _) on a 2xx answer, else (reason, whether a retry may help)."""
    request = urllib.request.Request(
        url, data=data, method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "crypto-lake-alerts"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            response.read()
            return None, False
    except urllib.error.HTTPError as exc:
        code = exc.code
        exc.close()
        return f"webhook POST failed: HTTP {code}", code == 429 or code >= 500
    except urllib.error.URLError as exc:
        return f"webhook POST failed: {describe_network_error(exc.reason)}", True
    except TimeoutError:
        return "webhook POST failed: timed out", True
    except OSError as exc:
        return f"webhook POST failed: {describe_network_error(exc)}", True
    except (ValueError, http.client.InvalidURL):  # their messages would quote the URL
        return "webhook POST failed: the webhook URL is malformed", False
    except http.client.HTTPException as exc:
        return f"webhook POST failed: bad HTTP answer ({type(exc).__name__})", True


def describe_network_error(reason: object) -> str:
    """A URL-free description of a network error (its kind, never its text)."""
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, TimeoutError):
        return "timed out"
    if isinstance(reason, ConnectionResetError):
        return "connection reset"
    if isinstance(reason, socket.gaierror):
        return "host name not resolved"
    if isinstance(reason, OSError) and reason.errno is not None:
        return f"network error (errno {reason.errno})"
    return f"network error ({type(reason).__name__})"


def redact(text: str, url: SecretStr | None) -> str:
    """``text`` with the webhook URL (and its path, which holds the token) removed: a last
    guard for texts that came from elsewhere, such as a run's error message."""
    if url is None or not text:
        return text
    secret = url.get_secret_value()
    try:
        parts = urlsplit(secret)
        pieces = [secret, parts.path.strip("/") if len(parts.path) > 1 else "", parts.query]
    except ValueError:
        pieces = [secret]
    for piece in pieces:
        if piece and len(piece) >= 4:
            text = text.replace(piece, "[redacted]")
    return text
