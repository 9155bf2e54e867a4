"""Binance's public files (data.binance.vision) served by the simulator from its tape.

One simulator (module fixture) with history reaching back into 2024, so both time units are
served: milliseconds before 2025-01-01, microseconds from then on.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import itertools
import json
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from datetime import date, timedelta
from decimal import Decimal

import aiohttp
import numpy as np
import pytest

from crypto_lake.simulator import SimConfig, SimulatorThread
from crypto_lake.simulator.cli import build_parser, config_from_args
from crypto_lake.simulator.history import day_of_us
from crypto_lake.simulator.instruments import E8, format_e8
from crypto_lake.simulator.public_csv import HEADERS, csv_bytes, decimal_column, file_time_unit
from crypto_lake.simulator.public_files import (
    PublicFile,
    build_public_zip,
    parse_public_path,
    public_file_path,
    synthetic_day_zip,
)
from crypto_lake.simulator.zipwriter import deterministic_zip
from crypto_lake_tests.simulator.helpers import aio, collect, data_of, drain, running, stream_url

FIRST = date(2024, 12, 30)  # the history's first day: two ms days, then µs
US_HEADER = {"X-MBX-TIME-UNIT": "MICROSECOND"}


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorThread]:
    today = date.today()
    cfg = SimConfig(
        symbols=["BTCUSDT", "EURUSDT"],
        rate_scale=4,
        history_days=(today - FIRST).days,
        history_rate_scale=0.0005,  # ~900 BTC trades a day
        public_files_include_today=True,
    )
    with SimulatorThread(cfg) as running:
        deadline = time.monotonic() + 5
        while running.market.ledger("BTCUSDT").trade_count < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        running.pause_market()  # the live ledger stays as it is from here on
        yield running


def fetch(sim: SimulatorThread, path: str, headers: dict | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(sim.rest_url + path, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def rest(sim: SimulatorThread, endpoint: str, **params: object) -> list:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    status, body = fetch(sim, f"/api/v3/{endpoint}?{query}", US_HEADER)
    assert status == 200, body
    return json.loads(body)


def rows_of(data: bytes, name: str) -> list[list[str]]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.namelist() == [name.removesuffix(".zip") + ".csv"]
        text = zf.read(zf.namelist()[0]).decode()
    return list(csv.reader(io.StringIO(text)))


def file_rows(sim: SimulatorThread, kind: str, period, interval: str | None = None) -> list:
    path = public_file_path(kind, "BTCUSDT", period, interval)
    status, data = fetch(sim, path)
    assert status == 200, (path, data[:200])
    return rows_of(data, path.rsplit("/", 1)[1])


def today(sim: SimulatorThread) -> date:
    return day_of_us(sim.live_start_us)


def test_layout_names_and_checksums(sim: SimulatorThread) -> None:
    day = today(sim) - timedelta(days=1)
    for kind, interval in (("trades", None), ("aggTrades", None), ("klines", "1m"),
                           ("klines", "1s"), ("klines", "1h")):  # fmt: skip
        path = public_file_path(kind, "BTCUSDT", day, interval)
        name = path.rsplit("/", 1)[1]
        label = interval or kind
        assert name == f"BTCUSDT-{label}-{day}.zip"
        sub = f"{interval}/" if interval else ""
        assert path == f"/data/spot/daily/{kind}/BTCUSDT/{sub}{name}"
        status, data = fetch(sim, path)
        assert status == 200 and rows_of(data, name)
        status, check = fetch(sim, path + ".CHECKSUM")
        assert status == 200
        assert check.decode() == f"{hashlib.sha256(data).hexdigest()}  {name}\n"
        assert fetch(sim, path)[1] == data  # deterministic (and cached)
    assert public_file_path("klines", "ETHUSDT", "2025-01", "1d") == (
        "/data/spot/monthly/klines/ETHUSDT/1d/ETHUSDT-1d-2025-01.zip"
    )
    assert parse_public_path("/data/spot/monthly/trades/BTCUSDT/BTCUSDT-trades-2025-01.zip") == (
        PublicFile("trades", "BTCUSDT", "2025-01"),
        False,
    )
    for bad in (
        f"/data/spot/daily/trades/BTCUSDT/ETHUSDT-trades-{day}.zip",  # another symbol's name
        f"/data/spot/daily/trades/DOGEUSDT/DOGEUSDT-trades-{day}.zip",  # not simulated
        f"/data/spot/daily/trades/btcusdt/btcusdt-trades-{day}.zip",
        f"/data/spot/daily/trades/BTCUSDT/BTCUSDT-trades-{day.isoformat()[:7]}.zip",
        f"/data/spot/monthly/trades/BTCUSDT/BTCUSDT-trades-{day}.zip",
        f"/data/spot/daily/klines/BTCUSDT/7m/BTCUSDT-7m-{day}.zip",
        f"/data/spot/daily/klines/BTCUSDT/BTCUSDT-1m-{day}.zip",
        f"/data/spot/daily/trades/BTCUSDT/BTCUSDT-trades-{day}.csv",
        "/data/spot/daily/trades/BTCUSDT/../../../etc/passwd",
        public_file_path("trades", "BTCUSDT", FIRST - timedelta(days=1)),  # before history
        public_file_path("trades", "BTCUSDT", "2024-11"),  # a month before history
        public_file_path("trades", "BTCUSDT", today(sim) + timedelta(days=1)),  # future
        public_file_path("trades", "BTCUSDT", today(sim).isoformat()[:7]),  # month not over
    ):
        assert fetch(sim, bad)[0] == 404, bad


def test_time_units_by_date(sim: SimulatorThread) -> None:
    assert file_time_unit(date(2024, 12, 31)) == "ms"
    assert file_time_unit(date(2025, 1, 1)) == "us"
    for day, div in ((date(2024, 12, 31), 1000), (date(2025, 1, 1), 1)):
        lo = int(np.datetime64(day.isoformat(), "us").astype(np.int64)) // div
        hi = lo + 86_400_000_000 // div
        trades = file_rows(sim, "trades", day)
        assert trades and all(lo <= int(r[4]) < hi for r in trades)
        assert {r[5] for r in trades} == {"True", "False"} and {r[6] for r in trades} == {"True"}
        aggs = file_rows(sim, "aggTrades", day)
        assert all(lo <= int(r[5]) < hi for r in aggs)
        klines = file_rows(sim, "klines", day, "1m")
        assert len(klines) == 1440 and int(klines[0][0]) == lo
        assert all(int(r[6]) == int(r[0]) + 60_000_000 // div - 1 for r in klines)
        assert all(len(r) == 12 and r[11] == "0" for r in klines)


def test_daily_trades_equal_rest_and_the_live_ledger(sim: SimulatorThread) -> None:
    yesterday = today(sim) - timedelta(days=1)
    rows = file_rows(sim, "trades", yesterday)
    first = int(rows[0][0])
    got = []
    while len(got) < len(rows):
        page = rest(sim, "historicalTrades", symbol="BTCUSDT", fromId=first + len(got),
                    limit=1000)  # fmt: skip
        got += [[str(t["id"]), t["price"], t["qty"], t["quoteQty"], str(t["time"]),
                 str(t["isBuyerMaker"]), str(t["isBestMatch"])] for t in page]  # fmt: skip
    assert got[: len(rows)] == rows
    aggs = file_rows(sim, "aggTrades", yesterday)
    page = rest(sim, "aggTrades", symbol="BTCUSDT", fromId=aggs[0][0], limit=1000)
    assert [[str(a["a"]), a["p"], a["q"], str(a["f"]), str(a["l"]), str(a["T"]),
             str(a["m"]), str(a["M"])] for a in page][: len(aggs)] == aggs[:1000]  # fmt: skip
    # today's file: the history part of the start day, then every live trade so far
    today_rows = file_rows(sim, "trades", today(sim))
    live = sim.trades("BTCUSDT")
    assert today_rows[-len(live) :] == [
        [str(t["id"]), t["price"], t["qty"], t["quote_qty"], str(t["time_us"]),
         str(t["is_buyer_maker"]), "True"] for t in live
    ]  # fmt: skip
    assert int(today_rows[-len(live) - 1][0]) == live[0]["id"] - 1
    assert int(today_rows[-len(live) - 1][4]) < sim.live_start_us <= live[0]["time_us"]


@aio
async def test_todays_file_holds_exactly_what_was_streamed() -> None:
    cfg = SimConfig(symbols=["BTCUSDT"], rate_scale=4, history_days=1,
                    history_rate_scale=0.0005, public_files_include_today=True)  # fmt: skip
    async with running(cfg, paused=True) as sim, aiohttp.ClientSession() as session:
        url = stream_url(sim, ["btcusdt@trade"], micro=True)
        frames, ws = await collect(session, url, 1.0, on_open=sim.resume_market)
        sim.pause_market()
        frames += await drain(ws)
        await ws.close()
        streamed = data_of(frames, "trade")
        assert len(streamed) >= 10
        path = public_file_path("trades", "BTCUSDT", day_of_us(sim.live_start_us))
        async with session.get(sim.rest_url + path) as resp:
            assert resp.status == 200
            rows = rows_of(await resp.read(), path.rsplit("/", 1)[1])
    history_part = sim.tape("BTCUSDT").history
    assert len(rows) == history_part.n_trades[-1] + len(streamed)
    assert rows[-len(streamed) :] == [
        [str(t["t"]), t["p"], t["q"], format_e8(int(Decimal(t["p"]) * Decimal(t["q"]) * E8)),
         str(t["T"]), str(t["m"]), str(t["M"])] for t in streamed
    ]  # fmt: skip


def test_ids_are_consecutive_across_days_into_the_live_ledger(sim: SimulatorThread) -> None:
    days = [today(sim) - timedelta(days=k) for k in (3, 2, 1, 0)]
    ids = [int(r[0]) for d in days for r in file_rows(sim, "trades", d)]
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    assert ids[-1] == sim.trades("BTCUSDT")[-1]["id"]
    aggs = [r for d in days for r in file_rows(sim, "aggTrades", d)]
    agg_ids = [int(r[0]) for r in aggs]
    assert agg_ids == list(range(agg_ids[0], agg_ids[0] + len(agg_ids)))
    assert int(aggs[0][3]) == ids[0] and int(aggs[-1][4]) == ids[-1]
    assert all(int(a[3]) == int(b[4]) + 1 for b, a in itertools.pairwise(aggs))


@pytest.mark.parametrize("interval", ["1s", "1m"])
def test_kline_files_equal_rest_klines(sim: SimulatorThread, interval: str) -> None:
    step = {"1s": 1_000_000, "1m": 60_000_000}[interval]
    for day in (today(sim) - timedelta(days=1), today(sim)):  # today spans history -> live
        rows = file_rows(sim, "klines", day, interval)
        got: list[list[str]] = []
        start = int(rows[0][0])
        while len(got) < len(rows):
            page = rest(sim, "klines", symbol="BTCUSDT", interval=interval,
                        startTime=start + len(got) * step, limit=1000)  # fmt: skip
            assert page
            got += [[str(x) for x in r] for r in page]
        assert got[: len(rows)] == rows, (day, interval)
    assert len(file_rows(sim, "klines", today(sim) - timedelta(days=2), "1s")) == 86_400


def test_monthly_files_are_the_concatenation_of_dailies(sim: SimulatorThread) -> None:
    for month, days in (("2024-12", [date(2024, 12, 30), date(2024, 12, 31)]),
                        ("2025-01", [date(2025, 1, d) for d in range(1, 32)])):  # fmt: skip
        for kind, interval in (("trades", None), ("aggTrades", None), ("klines", "1m")):
            monthly = file_rows(sim, kind, month, interval)
            daily = [r for d in days for r in file_rows(sim, kind, d, interval)]
            assert monthly == daily and monthly, (month, kind)
    assert fetch(sim, public_file_path("trades", "BTCUSDT", "2024-12-29"))[0] == 404


def test_files_are_deterministic_and_independent_of_the_server(sim: SimulatorThread) -> None:
    day = today(sim) - timedelta(days=4)
    pf = PublicFile("aggTrades", "EURUSDT", day.isoformat())
    served = fetch(sim, pf.path)[1]
    assert build_public_zip(sim.tape("EURUSDT"), pf) == served
    name, data = synthetic_day_zip("BTCUSDT", "2025-03-01", 20_000)
    assert name == "BTCUSDT-trades-2025-03-01.zip"
    assert synthetic_day_zip("BTCUSDT", "2025-03-01", 20_000)[1] == data
    rows = rows_of(data, name)
    assert len(rows) == 20_000 and len(rows[0][4]) == 16  # µs in 2025
    assert [int(r[0]) for r in rows] == list(range(int(rows[0][0]), int(rows[0][0]) + 20_000))
    kname, kdata = synthetic_day_zip("BTCUSDT", date(2024, 3, 1), 5_000, kind="klines")
    assert kname == "BTCUSDT-1m-2024-03-01.zip" and len(rows_of(kdata, kname)) == 1440


def test_fault_missing_then_published(sim: SimulatorThread) -> None:
    path = public_file_path("trades", "EURUSDT", today(sim) - timedelta(days=5))
    sim.faults.public_file_missing("trades", "EURUSDT", today(sim) - timedelta(days=5), 2)
    assert fetch(sim, path + ".CHECKSUM")[0] == 404  # not published yet, count unchanged
    assert [fetch(sim, path)[0] for _ in range(3)] == [404, 404, 200]
    assert fetch(sim, path + ".CHECKSUM")[0] == 200


def test_fault_wrong_checksum_and_truncated_zip(sim: SimulatorThread) -> None:
    day = (today(sim) - timedelta(days=6)).isoformat()
    path = public_file_path("aggTrades", "EURUSDT", day)
    good = fetch(sim, path)[1]
    sim.faults.public_file_bad_checksum("aggTrades", "EURUSDT", day)
    stated = fetch(sim, path + ".CHECKSUM")[1].decode().split()[0]
    assert len(stated) == 64 and stated != hashlib.sha256(good).hexdigest()
    kpath = public_file_path("klines", "EURUSDT", day, "1m")
    whole = fetch(sim, kpath)[1]
    sim.faults.public_file_truncated("klines", None, day)  # every symbol
    cut = fetch(sim, kpath)[1]
    assert whole.startswith(cut) and len(cut) < len(whole)
    with pytest.raises(zipfile.BadZipFile):
        zipfile.ZipFile(io.BytesIO(cut))
    stated = fetch(sim, kpath + ".CHECKSUM")[1].decode().split()[0]
    assert stated == hashlib.sha256(whole).hexdigest() != hashlib.sha256(cut).hexdigest()


def test_fault_unexpected_header_row(sim: SimulatorThread) -> None:
    day = today(sim) - timedelta(days=7)
    plain = file_rows(sim, "trades", day)
    sim.faults.public_file_header_row("trades", "BTCUSDT", day)
    data = fetch(sim, public_file_path("trades", "BTCUSDT", day))[1]
    rows = rows_of(data, f"BTCUSDT-trades-{day}.zip")
    assert rows[0] == HEADERS["trades"].decode().strip().split(",") and rows[1:] == plain
    check = fetch(sim, public_file_path("trades", "BTCUSDT", day) + ".CHECKSUM")[1]
    assert check.decode().split()[0] == hashlib.sha256(data).hexdigest()
    with pytest.raises(ValueError):
        sim.faults.public_file_header_row("depth", "BTCUSDT", day)


def test_public_files_carry_no_request_weight_and_today_needs_the_flag() -> None:
    with SimulatorThread(SimConfig(symbols=["BTCUSDT"])) as sim:
        day = day_of_us(sim.live_start_us)
        assert fetch(sim, public_file_path("trades", "BTCUSDT", day))[0] == 404  # not over yet
        yesterday = public_file_path("trades", "BTCUSDT", day - timedelta(days=1))
        assert fetch(sim, yesterday)[0] == 404  # no history: nothing before the start
    cfg = SimConfig(symbols=["BTCUSDT"], rest_weight_limit=1, public_files_include_today=True)
    with SimulatorThread(cfg) as sim:
        time.sleep(0.3)
        sim.pause_market()
        path = public_file_path("trades", "BTCUSDT", day_of_us(sim.live_start_us))
        assert [fetch(sim, path)[0] for _ in range(4)] == [200] * 4
        assert len(rows_of(fetch(sim, path)[1], path.rsplit("/", 1)[1])) == len(
            sim.trades("BTCUSDT")
        )
        assert fetch(sim, "/api/v3/ping")[0] == 200  # the downloads used none of the weight 1


@aio
async def test_a_file_without_rows_does_not_exist() -> None:
    cfg = SimConfig(symbols=["BTCUSDT"], rate_scale=4, public_files_include_today=True)
    async with running(cfg, paused=True) as sim, aiohttp.ClientSession() as session:
        day = day_of_us(sim.live_start_us)
        paths = [public_file_path(k, "BTCUSDT", day, i)
                 for k, i in (("trades", None), ("aggTrades", None), ("klines", "1m"))]  # fmt: skip
        for path in paths:  # nothing traded yet: Binance publishes no empty files
            async with session.get(sim.rest_url + path) as resp:
                assert resp.status == 404
        sim.resume_market()
        await asyncio.sleep(0.5)
        sim.pause_market()
        for path in paths:
            async with session.get(sim.rest_url + path) as resp:
                assert resp.status == 200 and rows_of(await resp.read(), path.rsplit("/")[-1])


def test_csv_decimals_match_rest_formatting_and_zip64_reads() -> None:
    values = np.array([0, 1, 99, 100, 12_345_678, 10**8, 6_500_001_000_000, 10**17 + 7])
    for column in (values, values[3:]):  # the string path and the decimal128 path
        text = csv_bytes([decimal_column(column)]).decode().split()
        assert text == [format_e8(v) for v in column.tolist()]
    data = deterministic_zip("a.csv", [lambda: b"1,2\n", lambda: b"3,4\n"], force_zip64=True)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.read("a.csv") == b"1,2\n3,4\n" and zf.testzip() is None


def test_cli_flags_reach_the_config() -> None:
    args = build_parser().parse_args(
        ["--history-days", "180", "--history-rate-scale", "0.05", "--public-files-include-today"]
    )
    cfg = config_from_args(args)
    assert (cfg.history_days, cfg.history_rate_scale, cfg.public_files_include_today) == (
        180, 0.05, True,
    )  # fmt: skip
    assert config_from_args(build_parser().parse_args([])).history_days == 0
