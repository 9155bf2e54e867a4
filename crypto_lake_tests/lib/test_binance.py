"""The Binance message map matches Binance's documented messages, and its users stay in step."""

from __future__ import annotations

import orjson
import pytest

from crypto_lake.lib.raw import binance, fastparse
from crypto_lake.simulator import wire

# Binance's own examples (spot API docs), key order as sent
DOCUMENTED = {
    binance.TRADE: b'{"e":"trade","E":1672515782136,"s":"BNBBTC","t":12345,"p":"0.001",'
    b'"q":"100","T":1672515782136,"m":true,"M":true}',
    binance.AGG_TRADE: b'{"e":"aggTrade","E":1672515782136,"s":"BNBBTC","a":12345,'
    b'"p":"0.001","q":"100","f":100,"l":105,"T":1672515782136,"m":true,"M":true}',
    binance.BOOK_TICKER: b'{"u":400900217,"s":"BNBUSDT","b":"25.35190000","B":"31.21000000",'
    b'"a":"25.36520000","A":"40.66000000"}',
    binance.HISTORICAL_TRADES: b'{"id":28457,"price":"4.00000100","qty":"12.00000000",'
    b'"quoteQty":"48.000012","time":1499865549590,"isBuyerMaker":true,"isBestMatch":true}',
    binance.AGG_TRADES: b'{"a":26129,"p":"0.01633102","q":"4.70443515","f":27781,"l":27781,'
    b'"T":1498793709153,"m":true,"M":true}',
    binance.KLINES: b'[1499040000000,"0.01634790","0.80000000","0.01575800","0.01577100",'
    b'"148976.11427815",1499644799999,"2434.19055334",308,"1756.87402397","28.46694368","0"]',
}
PYTHON_TYPE = {"decimal": str, "string": str, "int": int, "time": int, "bool": bool}


@pytest.mark.parametrize("message", list(DOCUMENTED), ids=lambda m: m.name)
def test_map_matches_the_documented_message(message: binance.Message) -> None:
    doc = orjson.loads(DOCUMENTED[message])
    if isinstance(doc, list):
        assert list(message.keys) == list(range(len(doc)))
        values = dict(zip(message.keys, doc, strict=True))
    else:
        assert list(message.keys) == list(doc)
        values = doc
    for f in message.fields:
        assert type(values[f.key]) is PYTHON_TYPE[f.kind], (message.name, f)
    by_column = {f.column: values[f.key] for f in message.fields}
    assert orjson.dumps(message.element(**by_column)) == DOCUMENTED[message]


def test_wire_layout_rebuilds_the_payload_text() -> None:
    for message in binance.STREAMS.values():
        doc = orjson.loads(DOCUMENTED[message])
        text = b""
        for column, before in binance.wire_layout(message):
            text += before
            if column is not None:
                value = doc[message.key(column)]
                text += orjson.dumps(value).strip(b'"')
        assert text == DOCUMENTED[message]


def test_element_needs_every_field_once() -> None:
    with pytest.raises(TypeError):
        binance.AGG_TRADES.element(trade_id=1)
    values = {f.column: 0 for f in binance.HISTORICAL_TRADES.fields}
    with pytest.raises(TypeError):
        binance.HISTORICAL_TRADES.element(**values, typo=1)


def test_columns_and_keys_are_unique_per_message() -> None:
    for message in (*binance.STREAMS.values(), *binance.REST.values(), binance.SERVER_SHUTDOWN):
        assert len(set(message.keys)) == len(message.keys)
        assert len({f.column for f in message.fields}) == len(message.fields)


def test_repaired_trades_carry_the_stream_columns() -> None:
    """A REST repair fills the same columns as the stream it repairs."""
    for stream, rest in binance.REPAIR_SOURCE.items():
        live = binance.STREAMS[stream]
        for column in ("trade_id", "price", "qty", "ts_event", "is_buyer_maker"):
            assert live.field(column).kind == rest.field(column).kind


def test_simulator_frames_follow_the_map() -> None:
    from crypto_lake.simulator.market import Event

    ev = Event("trade", "BNBBTC", "bnbbtc@trade", 12345, 1672515782136_000, b"0.001", b"100",
               True, event_us=1672515782136_000)  # fmt: skip
    frame = orjson.loads(wire.render(ev, "ms"))
    assert orjson.dumps(frame["data"]) == DOCUMENTED[binance.TRADE]


def test_compiled_reader_fingerprint_is_current() -> None:
    """fastparse's numba cache is renewed only when fastparse.py changes: after a change of
    the map's stream messages, set fastparse.MAP_FINGERPRINT to the new value."""
    assert fastparse.map_fingerprint() == fastparse.MAP_FINGERPRINT
