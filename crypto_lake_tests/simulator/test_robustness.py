"""Bad input gets a clear 4xx answer, never a server error or a crash."""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crypto_lake.simulator import SimConfig, SimulatorThread

ENDPOINTS = ["klines", "aggTrades", "historicalTrades", "trades", "exchangeInfo", "nope"]
PARAMS = ["symbol", "interval", "startTime", "endTime", "limit", "fromId"]
VALUES = st.one_of(
    st.sampled_from(["BTCUSDT", "btcusdt", "1s", "1m", "7x", "-1", "0", "1001", "99999999999999"]),
    st.integers(-(2**70), 2**70).map(str),
    st.text(max_size=12),
)


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorThread]:
    cfg = SimConfig(symbols=["BTCUSDT"], rate_scale=2, rest_weight_limit=10**9)
    with SimulatorThread(cfg) as running:
        yield running


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    endpoint=st.sampled_from(ENDPOINTS),
    params=st.dictionaries(st.sampled_from(PARAMS), VALUES, max_size=5),
)
def test_rest_never_fails_with_a_server_error(sim, endpoint: str, params: dict) -> None:
    status, body = get(f"{sim.rest_url}/api/v3/{endpoint}?{urllib.parse.urlencode(params)}")
    assert status in (200, 400, 404), (status, body[:200])
    parsed = orjson.loads(body)
    if status != 200:
        assert isinstance(parsed["code"], int) and parsed["msg"]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(streams=st.text(max_size=40), unit=st.one_of(st.none(), st.text(max_size=12)))
def test_stream_urls_are_accepted_or_rejected_cleanly(sim, streams: str, unit: str | None) -> None:
    query = {"streams": streams} | ({} if unit is None else {"timeUnit": unit})
    # A plain GET (no upgrade headers): valid URLs fail the upgrade with 400 from aiohttp,
    # invalid ones with our own 400 JSON; nothing may answer 5xx.
    status, _ = get(f"{sim.rest_url}/stream?{urllib.parse.urlencode(query)}")
    assert 400 <= status < 500
