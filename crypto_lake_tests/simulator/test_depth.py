"""The simulated order book: diff depth stream, REST snapshots, bookTicker and trades, faults.

Streams and snapshots go over real loopback WebSocket/HTTP (aiohttp); a client book is rebuilt
with Binance's documented local-book procedure (:class:`LocalBook`) and compared with the
simulator's ground truth (``order_book(symbol)``). One simulator serves the module, each fault
test on its own symbol so the faults never meet.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import aiohttp
import orjson
import pytest

from crypto_lake.lib.raw.binance import depth_weight
from crypto_lake.lib.raw.lines import ws_line
from crypto_lake.simulator import SimConfig, SimulatorThread
from crypto_lake.simulator.market import MarketModel
from crypto_lake.simulator.wire import render

BOOKS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT"]
DECIMAL = re.compile(r"^\d+\.\d{8}$")
START = 1_800_000_000_000_000  # µs, for the model-level tests


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorThread]:
    cfg = SimConfig(symbols=[*BOOKS, "XRPUSDT"], depth_symbols=BOOKS, rest_weight_limit=10**6)
    with SimulatorThread(cfg) as running:
        yield running


# -- a client ---------------------------------------------------------------------------------
class BookGap(Exception):
    """The events do not continue the local book: it must be resynced from a new snapshot."""


class LocalBook:
    """Binance's procedure for a local order book, in plain dicts (price -> qty strings)."""

    def __init__(self, snapshot: dict) -> None:
        self.last_u = snapshot["lastUpdateId"]
        self.sides = {"b": dict(snapshot["bids"]), "a": dict(snapshot["asks"])}
        self.synced = False  # whether an event has been applied since the snapshot

    def apply(self, ev: dict) -> None:
        if ev["u"] <= self.last_u:
            return  # older than the snapshot (or than what was applied)
        if self.synced and ev["U"] != self.last_u + 1:
            raise BookGap(f"U={ev['U']} after u={self.last_u}")
        if not self.synced and not ev["U"] <= self.last_u + 1 <= ev["u"]:
            raise BookGap(f"first event U={ev['U']} u={ev['u']}, snapshot {self.last_u}")
        for key in ("b", "a"):
            side = self.sides[key]
            for price, qty in ev[key]:
                if Decimal(qty) == 0:
                    side.pop(price, None)
                else:
                    side[price] = qty
        self.last_u, self.synced = ev["u"], True

    def levels(self) -> dict[str, dict[str, str]]:
        return self.sides


def truth_levels(view) -> dict[str, dict[str, str]]:
    return {"b": dict(view.bids), "a": dict(view.asks)}


def rebuild(snapshot: dict, events: list[dict]) -> LocalBook:
    book = LocalBook(snapshot)
    for ev in events:
        book.apply(ev)
    return book


async def receive(ws: aiohttp.ClientWebSocketResponse, seconds: float) -> list[dict]:
    """Every data message (parsed) received for ``seconds``."""
    out = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            msg = await ws.receive(timeout=left)
        except TimeoutError:
            break
        if msg.type != aiohttp.WSMsgType.TEXT:
            break
        out.append(orjson.loads(msg.data))
    return out


async def snapshot(session: aiohttp.ClientSession, url: str, symbol: str, limit: int = 5000):
    async with session.get(f"{url}/api/v3/depth", params={"symbol": symbol, "limit": limit}) as r:
        assert r.status == 200, await r.text()
        return await r.json()


def payloads(messages: list[dict], stream: str) -> list[dict]:
    return [m["data"] for m in messages if m["stream"] == stream]


def breaks(events: list[dict]) -> list[int]:
    """Indices i where event i does not continue event i - 1 (U != previous u + 1)."""
    return [i for i in range(1, len(events)) if events[i]["U"] != events[i - 1]["u"] + 1]


def streams_url(sim: SimulatorThread, streams: list[str], micro: bool = False) -> str:
    url = f"{sim.ws_url}/stream?streams={'/'.join(streams)}"
    return url + "&timeUnit=MICROSECOND" if micro else url


# -- over the wire ----------------------------------------------------------------------------
def test_clean_stream_rebuilds_the_book_and_matches_book_ticker_and_trades(sim) -> None:
    streams = ["btcusdt@depth@100ms", "btcusdt@depth", "btcusdt@bookTicker", "btcusdt@trade"]

    async def client() -> tuple[list[dict], dict]:
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(streams_url(sim, streams))
            messages = await receive(ws, 0.6)
            snap = await snapshot(session, sim.rest_url, "BTCUSDT")
            messages += await receive(ws, 1.4)
            sim.pause_market()  # publishes the open diff windows, then nothing changes
            messages += await receive(ws, 0.3)
            await ws.close()
            return messages, snap

    try:
        messages, snap = asyncio.run(client())
        book = sim.order_book("BTCUSDT")
        final = book.view()
    finally:
        sim.resume_market()
    fast, slow = payloads(messages, streams[0]), payloads(messages, streams[1])
    assert len(fast) >= 15 and slow
    for events in (fast, slow):
        assert breaks(events) == []  # U == previous u + 1 throughout
        for ev in events:
            assert ev["e"] == "depthUpdate" and ev["s"] == "BTCUSDT" and ev["E"] < 10**14
            assert ev["b"] or ev["a"]  # no event without a change
            assert all(DECIMAL.match(x) for lv in ev["b"] + ev["a"] for x in lv)
        # the local-book procedure on what the client received gives exactly the book
        local = rebuild(snap, events)
        assert local.last_u == final.update_id
        assert local.levels() == truth_levels(final)
    # a 1 s event covers whole 100 ms events
    for ev in slow[1:]:
        assert ev["U"] in {e["U"] for e in fast} and ev["u"] in {e["u"] for e in fast}
    # the snapshot is the book exactly after its lastUpdateId
    assert truth_levels(book.at_update(snap["lastUpdateId"])) == {
        "b": dict(snap["bids"]), "a": dict(snap["asks"])
    }  # fmt: skip
    # each bookTicker shows the book's best levels after its u, an id of the book sequence
    tickers = payloads(messages, "btcusdt@bookTicker")
    assert len(tickers) > 50
    for tk in tickers:
        truth = book.at_update(tk["u"], limit=1)
        assert (tk["b"], tk["B"], tk["a"], tk["A"]) == (*truth.bids[0], *truth.asks[0])
    assert fast[0]["U"] <= tickers[-1]["u"] <= fast[-1]["u"]
    # trades happen at the best bid (taker sells) or best ask of the book at that moment
    last_ticker, checked = None, 0
    for m in messages:
        if m["stream"] == "btcusdt@bookTicker":
            last_ticker = m["data"]
        elif m["stream"] == "btcusdt@trade" and last_ticker is not None:
            trade = m["data"]
            assert trade["p"] == (last_ticker["b"] if trade["m"] else last_ticker["a"])
            checked += 1
    assert checked > 10


def test_depth_drop_loses_the_ids_of_the_dropped_events(sim) -> None:
    async def client() -> tuple[list[dict], list[dict], dict, dict]:
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(streams_url(sim, ["ethusdt@depth@100ms"], micro=True))
            before = await receive(ws, 0.5)
            snap = await snapshot(session, sim.rest_url, "ETHUSDT")
            sim.faults.depth_drop("ETHUSDT", 2)
            after = await receive(ws, 0.8)
            resync = await snapshot(session, sim.rest_url, "ETHUSDT")
            after += await receive(ws, 0.5)
            await ws.close()
            return before, after, snap, resync

    before, after, snap, resync = asyncio.run(client())
    events = [m["data"] for m in before + after]
    assert all(ev["E"] > 10**14 for ev in events)  # µs on this connection
    assert breaks([m["data"] for m in before]) == []
    (gap,) = breaks(events)
    assert gap >= len(before)  # only after the fault
    assert events[gap]["U"] > events[gap - 1]["u"] + 1
    lost = set(range(events[gap - 1]["u"] + 1, events[gap]["U"]))
    sent = sim.sent.depth_update_ids("ETHUSDT")
    assert lost and not lost & sent and events[gap]["u"] in sent
    with pytest.raises(BookGap):  # a client notices...
        rebuild(snap, events)
    # ...and resyncs from a new snapshot taken after the gap
    local = rebuild(resync, events[gap:])
    book = sim.order_book("ETHUSDT")
    assert local.levels() == truth_levels(book.at_update(local.last_u))


def test_depth_reorder_swaps_the_next_two_events(sim) -> None:
    async def client() -> tuple[list[dict], list[dict]]:
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(streams_url(sim, ["solusdt@depth@100ms"]))
            before = await receive(ws, 0.4)
            sim.faults.depth_reorder("SOLUSDT")
            after = await receive(ws, 0.8)
            await ws.close()
            return before, after

    before, after = asyncio.run(client())
    events = [m["data"] for m in before + after]
    assert breaks([m["data"] for m in before]) == []
    swaps = [i for i in range(1, len(events)) if events[i]["u"] < events[i - 1]["U"]]
    assert len(swaps) == 1 and swaps[0] >= len(before)
    i = swaps[0]
    assert events[i]["u"] + 1 == events[i - 1]["U"]  # adjacent events, delivered swapped
    assert breaks(sorted(events, key=lambda ev: ev["U"])) == []  # nothing lost
    assert len(breaks(events)) == 3  # into, inside and out of the swapped pair


def test_stale_snapshot_is_consistent_but_older_than_the_buffer(sim) -> None:
    async def client() -> tuple[list[dict], dict, dict]:
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(streams_url(sim, ["bnbusdt@depth@100ms"]))
            buffered = await receive(ws, 0.5)
            sim.faults.depth_stale_snapshot("BNBUSDT", 1, age_s=2.0)
            stale = await snapshot(session, sim.rest_url, "BNBUSDT")
            fresh = await snapshot(session, sim.rest_url, "BNBUSDT")  # the fault is used up
            buffered += await receive(ws, 0.3)
            await ws.close()
            return [m["data"] for m in buffered], stale, fresh

    events, stale, fresh = asyncio.run(client())
    book = sim.order_book("BNBUSDT")
    assert breaks(events) == []
    # consistent: exactly the book after its (old) lastUpdateId
    assert truth_levels(book.at_update(stale["lastUpdateId"])) == {
        "b": dict(stale["bids"]), "a": dict(stale["asks"])
    }  # fmt: skip
    assert stale["lastUpdateId"] + 1 < events[0]["U"]  # older than anything buffered
    with pytest.raises(BookGap):
        rebuild(stale, events)
    assert fresh["lastUpdateId"] >= events[0]["U"]
    local = rebuild(fresh, events)
    assert local.levels() == truth_levels(book.at_update(local.last_u))


def test_symbol_without_a_book_has_a_quiet_stream_and_no_snapshot(sim) -> None:
    async def client() -> tuple[list[dict], int, dict]:
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(
                streams_url(sim, ["xrpusdt@depth@100ms", "xrpusdt@depth", "xrpusdt@bookTicker"])
            )
            messages = await receive(ws, 0.5)
            await ws.close()
            async with session.get(
                f"{sim.rest_url}/api/v3/depth", params={"symbol": "XRPUSDT"}
            ) as resp:
                return messages, resp.status, await resp.json()

    messages, status, body = asyncio.run(client())
    assert messages and {m["stream"] for m in messages} == {"xrpusdt@bookTicker"}
    assert status == 400 and body["code"] == -1121


def test_snapshot_limits_and_weights() -> None:
    cfg = SimConfig(symbols=["BTCUSDT"], depth_symbols=["BTCUSDT"], rest_weight_limit=600)
    limits = [None, 5, 101, 500, 1000, 5000, 6000]  # 6000 is cut to 5000
    weights = [depth_weight(100 if n is None else min(n, 5000)) for n in limits]
    assert weights == [5, 5, 25, 25, 50, 250, 250]

    async def client(sim: SimulatorThread) -> list[tuple[int, int, dict]]:
        out = []
        async with aiohttp.ClientSession() as session:
            for limit in [*limits, 100]:
                params = {"symbol": "BTCUSDT"} | ({} if limit is None else {"limit": limit})
                async with session.get(f"{sim.rest_url}/api/v3/depth", params=params) as resp:
                    used = int(resp.headers["X-MBX-USED-WEIGHT-1M"])
                    out.append((resp.status, used, await resp.json()))
                if limit == 6000:
                    sim.faults.rest_418_after_ignored = 1  # the next request inside the ban
        return out

    with SimulatorThread(cfg) as sim:
        if 60 - time.time() % 60 < 3:  # the weight window is the calendar minute
            time.sleep(60 - time.time() % 60 + 0.05)
        answers = asyncio.run(client(sim))
        book = sim.order_book("BTCUSDT")
        for (status, _, body), limit in zip(answers[:6], limits[:6], strict=True):
            assert status == 200
            truth = book.at_update(body["lastUpdateId"], 100 if limit is None else limit)
            assert [tuple(lv) for lv in body["bids"]] == truth.bids  # best first, <= limit
            assert [tuple(lv) for lv in body["asks"]] == truth.asks
    assert len(answers[1][2]["bids"]) == len(answers[1][2]["asks"]) == 5
    assert len(answers[5][2]["bids"]) > 100  # the whole book (about depth_levels a side)
    used = [u for _, u, _ in answers]
    assert used[:6] == list(itertools.accumulate(weights[:6]))  # 360 of 600
    assert answers[6][0] == 429 and answers[6][2]["code"] == -1003  # 360 + 250 > 600
    assert answers[7][0] == 418


def test_bad_snapshot_requests_are_rejected(sim) -> None:
    async def client() -> list[tuple[int, dict]]:
        out = []
        async with aiohttp.ClientSession() as session:
            for params in ({"symbol": "BTCUSDT", "limit": "0"}, {"symbol": "BTCUSDT", "limit": "x"},
                           {}, {"symbol": "NOPEUSDT"}):  # fmt: skip
                async with session.get(f"{sim.rest_url}/api/v3/depth", params=params) as resp:
                    out.append((resp.status, await resp.json()))
        return out

    answers = asyncio.run(client())
    assert [s for s, _ in answers] == [400] * 4
    assert all(isinstance(body["code"], int) and body["msg"] for _, body in answers)


def test_without_depth_symbols_there_is_no_depth() -> None:
    async def client(sim: SimulatorThread) -> tuple[int, int]:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{sim.ws_url}/stream?streams=btcusdt@depth@100ms") as resp:
                ws_status = resp.status
            async with session.get(f"{sim.rest_url}/api/v3/depth?symbol=BTCUSDT") as resp:
                return ws_status, resp.status

    with SimulatorThread(SimConfig(symbols=["BTCUSDT"])) as sim:
        assert sim.market.books() == {}
        assert asyncio.run(client(sim)) == (400, 404)


def test_replay_sends_recorded_diff_events(tmp_path: Path) -> None:
    _, events, _ = model_events(2, ["BTCUSDT"])
    recorded = [render(e, "ms") for e in events if e.stream == "btcusdt@depth@100ms"]
    raw = tmp_path / "part-000001.jsonl"
    t0 = 1_800_000_000_000_000_000
    raw.write_bytes(
        b"".join(ws_line(t0 + i * 20_000_000, "ws-1", "ms", m) for i, m in enumerate(recorded))
    )

    async def client(sim: SimulatorThread) -> list[dict]:
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(streams_url(sim, ["btcusdt@depth@100ms"]))
            messages = await receive(ws, 0.8)
            await ws.close()
            return messages

    cfg = SimConfig(symbols=["BTCUSDT"], replay_path=raw)
    with SimulatorThread(cfg) as sim:
        got = asyncio.run(client(sim))
        assert sim.sent.depth_update_ids("BTCUSDT") >= {m["data"]["u"] for m in got}
    assert got == [orjson.loads(m) for m in recorded][-len(got) :] and len(got) >= 10
    assert breaks([m["data"] for m in got]) == []


# -- the model --------------------------------------------------------------------------------
def model_events(seconds: int, books: list[str], rate: float = 100.0):
    """(model, its events in 100 ms steps, the books' views before the first step)."""
    model = MarketModel(["BTCUSDT", "ETHUSDT"], 42, START, 1.0)
    if books:
        model.add_books(books, 200, rate)
    initial = {symbol: book.view() for symbol, book in model.books().items()}
    events = []
    for step in range(1, seconds * 10 + 1):
        events.extend(model.advance(START + step * 100_000))
    return model, events, initial


def test_a_book_does_not_change_the_models_trades_or_touch() -> None:
    _, plain, _ = model_events(20, [])
    _, booked, _ = model_events(20, ["BTCUSDT"])

    def tape(events: list, kinds: tuple[str, ...]) -> list:
        return [
            (e.kind, e.symbol, e.ident, e.time_us, e.price, e.qty, e.bid, e.bid_qty, e.ask,
             e.ask_qty, e.first_id, e.last_id, e.maker)
            for e in events
            if e.kind in kinds
        ]  # fmt: skip

    assert tape(plain, ("trade", "aggTrade")) == tape(booked, ("trade", "aggTrade"))
    quotes = [(e.symbol, e.time_us, e.bid, e.ask) for e in plain if e.kind == "bookTicker"]
    assert quotes == [(e.symbol, e.time_us, e.bid, e.ask) for e in booked if e.kind == "bookTicker"]
    eth = [e for e in plain if e.symbol == "ETHUSDT"]
    assert tape(eth, ("bookTicker",)) == tape(
        [e for e in booked if e.symbol == "ETHUSDT"], ("bookTicker",)
    )


def test_ground_truth_at_second_ends_and_update_ids() -> None:
    model, events, initial = model_events(30, ["BTCUSDT"], rate=400.0)
    book = model.symbols["BTCUSDT"].book
    slow = [orjson.loads(render(e, "us"))["data"] for e in events if e.stream == "btcusdt@depth"]
    ends = [e.time_us for e in events if e.stream == "btcusdt@depth"]
    assert len(slow) >= 28 and all(t % 1_000_000 == 0 for t in ends)
    first = initial["BTCUSDT"]
    local = LocalBook({"lastUpdateId": first.update_id, "bids": first.bids, "asks": first.asks})
    for ev, end in zip(slow, ends, strict=True):
        local.apply(ev)
        at_end = book.at_second_end(end // 1_000_000 - 1)  # the second this window closed
        assert at_end.update_id == ev["u"]
        assert truth_levels(at_end) == local.levels()
        assert truth_levels(book.at_update(ev["u"])) == local.levels()
    assert all(len(v) >= 100 for v in local.levels().values())
    top = book.at_second_end(ends[-1] // 1_000_000 - 1, limit=20)
    assert len(top.bids) == len(top.asks) == 20
    assert Decimal(top.bids[0][0]) < Decimal(top.asks[0][0])  # never crossed
    assert [Decimal(p) for p, _ in top.bids] == sorted(
        (Decimal(p) for p, _ in top.bids), reverse=True
    )
    with pytest.raises(LookupError):
        book.at_second_end(ends[-1] // 1_000_000 + 5)  # not over yet
    with pytest.raises(LookupError):
        book.at_update(book.update_id + 1)
    # bounded: trimming forgets whole old seconds
    book.trim_before(START + 20_000_000)
    assert book.retained_from_id > slow[5]["u"]
    with pytest.raises(LookupError):
        book.at_update(slow[5]["u"])
    assert book.at_update(slow[-1]["u"]).update_id == slow[-1]["u"]
