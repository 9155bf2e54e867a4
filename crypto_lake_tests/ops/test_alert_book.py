"""Deduplication, repeats, "resolved" and retries of the alert book, delivered to a loopback
webhook, with an injected clock (no sleeping)."""

from __future__ import annotations

import socket
from pathlib import Path

import orjson
import pytest
from pydantic import SecretStr

from crypto_lake.lib.ops.alerts import STATE_FILE, Alert, deliver, open_book
from crypto_lake.lib.ops.config import AlertsConfig
from crypto_lake.lib.ops.webhook import post_json, redact
from crypto_lake_tests.ops.heartbeats import NOW_NS, S
from crypto_lake_tests.ops.webhook_server import WebhookServer

CFG = AlertsConfig(webhook_timeout_seconds=2.0, webhook_attempts=2)
DISK = Alert("disk", "", "warning", "lake disk 85% full", {"used_fraction": 0.85})


def tick(state: Path, url: str | None, active: list[Alert], now_ns: int, condition="disk"):
    with open_book(state, CFG, lake="/lake", now_ns=now_ns) as book:
        book.sync(condition, active, now_ns)
        return deliver(book, SecretStr(url) if url else None, now_ns)


def test_fires_once_repeats_hourly_resolves_once(tmp_path: Path) -> None:
    with WebhookServer() as hook:
        tick(tmp_path, hook.url, [DISK], NOW_NS)
        (body,) = hook.bodies
        assert (body["key"], body["state"], body["severity"]) == ("disk", "firing", "warning")
        assert body["text"].startswith("crypto_lake@") and "lake disk 85% full" in body["text"]
        assert body["details"] == {"used_fraction": 0.85} and body["condition"] == "disk"
        assert body["since"] and body["lake"] == "/lake" and body["host"]
        for minutes in (1, 30, 59):  # still active: not repeated within the hour
            tick(tmp_path, hook.url, [DISK], NOW_NS + minutes * 60 * S)
        assert len(hook.bodies) == 1
        tick(tmp_path, hook.url, [DISK], NOW_NS + 3600 * S)  # an hour later: a reminder
        assert hook.states() == [("disk", "firing")] * 2
        tick(tmp_path, hook.url, [], NOW_NS + 3700 * S)  # cleared
        tick(tmp_path, hook.url, [], NOW_NS + 3800 * S)
        assert hook.states()[-1] == ("disk", "resolved") and len(hook.bodies) == 3
        assert hook.bodies[-1]["since"] == body["since"]  # the episode's start


def test_flapping_sends_at_most_one_firing_per_hour(tmp_path: Path) -> None:
    with WebhookServer() as hook:
        tick(tmp_path, hook.url, [DISK], NOW_NS)
        tick(tmp_path, hook.url, [], NOW_NS + 60 * S)  # resolved: sent
        tick(tmp_path, hook.url, [DISK], NOW_NS + 120 * S)  # back within the hour: held
        tick(tmp_path, hook.url, [], NOW_NS + 180 * S)  # gone again, never announced: dropped
        assert hook.states() == [("disk", "firing"), ("disk", "resolved")]
        tick(tmp_path, hook.url, [DISK], NOW_NS + 600 * S)  # held until the hour is over
        assert len(hook.bodies) == 2
        tick(tmp_path, hook.url, [DISK], NOW_NS + 3600 * S)
        assert hook.states()[-1] == ("disk", "firing")


def test_failed_delivery_is_retried_next_tick(tmp_path: Path) -> None:
    """A 500, then a closed port: nothing is marked sent, the next tick sends it."""
    with WebhookServer() as hook:
        hook.status = 500
        (sent,) = tick(tmp_path, hook.url, [DISK], NOW_NS)
        assert sent.error == "webhook POST failed: HTTP 500"
        assert len(hook.bodies) == CFG.webhook_attempts  # retried within the tick, bounded
        state = orjson.loads((tmp_path / STATE_FILE).read_bytes())
        assert state["alerts"]["disk"]["sent_ns"] is None
        assert state["alerts"]["disk"]["last_error"] == "webhook POST failed: HTTP 500"
        url = hook.url
    (sent,) = tick(tmp_path, url, [DISK], NOW_NS + 60 * S)  # the server is gone
    assert sent.error == "webhook POST failed: connection refused"
    with WebhookServer() as hook:
        tick(tmp_path, hook.url, [DISK], NOW_NS + 120 * S)
        assert hook.states() == [("disk", "firing")]
        tick(tmp_path, hook.url, [DISK], NOW_NS + 180 * S)
        assert len(hook.bodies) == 1  # now marked sent


def test_resolved_that_fails_is_retried_and_unannounced_is_dropped(tmp_path: Path) -> None:
    with WebhookServer() as hook:
        tick(tmp_path, hook.url, [DISK], NOW_NS)
        hook.status = 503
        tick(tmp_path, hook.url, [], NOW_NS + 60 * S)
        hook.status = 200
        hook.clear()
        tick(tmp_path, hook.url, [], NOW_NS + 120 * S)
        assert hook.states() == [("disk", "resolved")]
        tick(tmp_path, None, [DISK], NOW_NS + 7200 * S)  # no webhook: never announced
        tick(tmp_path, hook.url, [], NOW_NS + 7260 * S)
        assert hook.states() == [("disk", "resolved")]  # nothing to resolve


def test_conditions_are_independent_and_state_survives_a_broken_file(tmp_path: Path) -> None:
    gap = Alert("open_gap", "BTCUSDT", "warning", "gap", {})
    with WebhookServer() as hook:
        tick(tmp_path, hook.url, [DISK], NOW_NS)
        tick(tmp_path, hook.url, [gap], NOW_NS, condition="open_gap")
        tick(tmp_path, hook.url, [], NOW_NS + S, condition="open_gap")  # disk stays firing
        assert hook.states() == [("disk", "firing"), ("open_gap:BTCUSDT", "firing"),
                                 ("open_gap:BTCUSDT", "resolved")]  # fmt: skip
        (tmp_path / STATE_FILE).write_text("{not json")
        tick(tmp_path, hook.url, [DISK], NOW_NS + 2 * S)  # starts afresh, no crash
        assert hook.states()[-1] == ("disk", "firing")


def test_delivery_errors_never_contain_the_url() -> None:
    secret = "http://127.0.0.1:{port}/services/T000/B000/CANARY-token"
    with WebhookServer() as hook:
        hook.status = 500
        result = post_json(SecretStr(secret.format(port=hook.port)), {"text": "x"}, attempts=1)
        assert result.error == "webhook POST failed: HTTP 500"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for url, error in [
        (secret.format(port=port), "webhook POST failed: connection refused"),
        ("http://127.0.0.1:x/CANARY-token", "webhook POST failed: the webhook URL is malformed"),
        ("http://[::1/CANARY-token", "webhook POST failed: the webhook URL is malformed"),
        ("ftp://host/CANARY-token", "the webhook URL is not an http(s) URL"),
        ("", "no webhook configured (set CRYPTO_LAKE_WEBHOOK_URL)"),
    ]:  # fmt: skip
        result = post_json(SecretStr(url), {"text": "x"}, attempts=1, timeout_s=2)
        assert result.error == error and "CANARY" not in repr(result)


@pytest.mark.parametrize(
    "text",
    [
        "failed: POST http://h/x/CANARY-token?a=1 refused",
        "path x/CANARY-token only",
        "query a=1&k=CANARY-token",
    ],
)
def test_redact(text: str) -> None:
    url = SecretStr("http://h/x/CANARY-token?a=1&k=CANARY-token")
    assert "CANARY" not in redact(text, url)
