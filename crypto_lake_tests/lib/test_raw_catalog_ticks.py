"""RawCatalog (incremental, persisted) and build_ticks edge cases: bad lines, real wire
payloads, outages, unrepaired gaps, invalidated aggTrades, empty input."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from collector_daemon.sealing import compress_stream
from crypto_lake.lib.core.paths import LakeLayout, part_file_name
from crypto_lake.lib.market.bars import build_bars_1s
from crypto_lake.lib.market.ticks import build_ticks
from crypto_lake.lib.raw.catalog import RawCatalog
from crypto_lake.lib.raw.lines import session_line, ws_line
from crypto_lake_tests.lib import rawgen

SAMPLE = Path(__file__).parents[1] / "simulator" / "data" / "binance_ws_sample_2021-10-12.txt"


def _write(layout: LakeLayout, day: str, part: int, lines: list[bytes], gz=False) -> Path:
    d = layout.raw_day_dir("BTCUSDT", day)
    d.mkdir(parents=True, exist_ok=True)
    path = d / part_file_name(part, compression="gzip" if gz else "none")
    data = b"".join(lines)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def _trades(ids, t0_ms):
    return [rawgen.Trade(i, t0_ms + k * 10, "100.00000000", "1.00000000", False)
            for k, i in enumerate(ids)]  # fmt: skip


def test_catalog_is_incremental_and_persisted(tmp_path):
    layout = LakeLayout(tmp_path)
    t0 = rawgen.DAY_START_MS + 1000
    trs = _trades(range(1, 6), t0)
    p1 = _write(layout, rawgen.DAY, 1, [rawgen.trade_line(t, t.t_ms + 1) for t in trs])
    _write(layout, rawgen.DAY, 2, [b'{"recv_ns": 1'], gz=False).rename(
        layout.raw_day_dir("BTCUSDT", rawgen.DAY) / part_file_name(2, is_open=True)
    )
    cat = RawCatalog(layout)
    new = cat.refresh()
    assert [i.path for i in new] == [str(p1)]  # the .open file is not sealed yet
    info = new[0]
    assert (info.lines, info.bad_lines, info.part) == (5, 0, 1)
    assert info.min_event_us == t0 * 1000 and info.max_event_us == (t0 + 40) * 1000
    assert info.min_recv_ns == (t0 + 1) * 1_000_000 + 123
    assert cat.refresh() == []
    p3 = _write(layout, rawgen.DAY, 3, [*(rawgen.trade_line(t, t.t_ms + 9) for t in trs),
                                        b"garbage\n"], gz=True)  # fmt: skip
    again = RawCatalog(layout)  # state comes back from state/raw_catalog
    new = again.refresh()
    assert [(i.path, i.lines, i.bad_lines) for i in new] == [(str(p3), 6, 1)]
    assert again.refresh() == []
    assert len(again.files("BTCUSDT")) == 2


def test_old_day_folders_are_not_relisted(tmp_path):
    layout = LakeLayout(tmp_path)
    for day in ("2024-02-26", "2024-02-27", "2024-02-28", "2024-02-29"):
        _write(layout, day, 1, [session_line(1, "ws-1", "connect")])
    cat = RawCatalog(layout)
    assert len(cat.refresh()) == 4
    # A file appearing in an old, closed folder is not looked for on the cheap path ...
    _write(layout, "2024-02-26", 2, [session_line(2, "ws-1", "connect")])
    assert cat.refresh() == []
    # ... but a full refresh finds it.
    assert [i.part for i in cat.refresh(full=True)] == [2]


def test_files_for_finds_next_day_and_late_files(tmp_path):
    layout = LakeLayout(tmp_path)
    late_ms = rawgen.DAY_END_MS - 5
    tr = rawgen.Trade(7, late_ms, "1.00000000", "1.00000000", True)
    own = _write(layout, rawgen.DAY, 1, [rawgen.quote_line(rawgen.Quote(
        1, rawgen.DAY_START_MS + 10, "1", "1", "2", "1"))])  # fmt: skip
    spill = _write(layout, "2024-03-02", 2, [rawgen.trade_line(tr, late_ms + 20)])
    unrelated = _write(
        layout,
        "2024-03-02",
        3,
        [
            rawgen.trade_line(
                rawgen.Trade(8, rawgen.DAY_END_MS + 60_000, "1", "1", True),
                rawgen.DAY_END_MS + 60_001,
            )
        ],
    )
    late = _write(
        layout, "2024-03-05", 4, [rawgen.rest_line(tr, rawgen.DAY_END_MS + 3 * 86_400_000)]
    )
    cat = RawCatalog(layout)
    cat.refresh(full=True)
    got = cat.files_for("BTCUSDT", rawgen.DAY)
    assert got == [own, spill, late] and unrelated not in got


def test_bad_lines_are_quarantined_not_fatal(tmp_path):
    layout = LakeLayout(tmp_path)
    trs = _trades(range(1, 4), rawgen.DAY_START_MS + 500)
    good = [rawgen.trade_line(t, t.t_ms + 1) for t in trs]
    bad_field = ws_line(rawgen.DAY_START_MS * 10**6 + 9, "ws-1", "us", orjson.dumps(
        {"stream": "btcusdt@trade", "data": {"t": 99, "p": "not-a-price", "q": "1", "T": 1,
                                             "m": True}}))  # fmt: skip
    # recv_ns as a string is read (as DuckDB reads it): the line counts once, as what it is
    str_recv = good[2].replace(b'"recv_ns":', b'"recv_ns":"', 1).replace(b',"conn"', b'","conn"', 1)
    str_recv_bad = bad_field.replace(b'"recv_ns":', b'"recv_ns":"', 1).replace(
        b',"conn"', b'","conn"', 1
    )
    lines = [good[0], b"{torn line\n", bad_field, b"[1,2]\n", good[1], str_recv, str_recv_bad,
             b'{"recv_ns":7,"stream":"\xff"}\n', b'{"recv_ns": 1, "stream"']  # fmt: skip
    path = _write(layout, rawgen.DAY, 1, lines)
    qdir = tmp_path / "quarantine"
    out = tmp_path / "out"
    stats = build_ticks([path], "BTCUSDT", rawgen.DAY, out / "t.pq", out / "q.pq", qdir)
    assert stats.bad_lines == 6 and stats.trade_rows == 3
    records = [
        orjson.loads(x)
        for x in (qdir / f"BTCUSDT_{rawgen.DAY}.jsonl").read_bytes().split(b"\n")
        if x
    ]
    assert len(records) == stats.bad_lines
    assert sorted(r.get("line_no", 0) for r in records) == [0, 0, 2, 4, 8, 9]
    assert sum("not-a-price" in r.get("data", "") for r in records) == 2
    assert [r["line"] for r in records if r.get("line_no") == 8] == [
        '{"recv_ns":7,"stream":"\ufffd"}'
    ]
    path.write_bytes(b"".join(good))  # fixed input: the quarantine file goes away
    stats = build_ticks([path], "BTCUSDT", rawgen.DAY, out / "t.pq", out / "q.pq", qdir)
    assert stats.bad_lines == 0 and not (qdir / f"BTCUSDT_{rawgen.DAY}.jsonl").exists()


def test_real_wire_payloads(tmp_path):
    """Messages exactly as Binance sent them (aggTrade, bookTicker, depth, kline) parse."""
    lines = []
    for raw in SAMPLE.read_text().splitlines():
        if not raw.strip() or raw.startswith("wss://"):  # the connect header line
            continue
        ts, msg = raw.split(": ", 1)
        if '"stream":"nknusdt@' in msg:
            lines.append(ws_line(int(float(ts) * 1e9), "ws-1", "ms", msg.encode()))
    d = LakeLayout(tmp_path).raw_day_dir("NKNUSDT", "2021-10-12")
    d.mkdir(parents=True)
    (d / part_file_name(0)).write_bytes(b"".join(lines))
    out = tmp_path / "out"
    stats = build_ticks([d / part_file_name(0)], "NKNUSDT", "2021-10-12", out / "t.pq",
                        out / "q.pq", tmp_path / "q")  # fmt: skip
    assert stats.trade_kind == "aggTrade" and stats.trade_rows >= 1 and stats.quote_rows >= 1
    assert stats.bad_lines == 0 and stats.ignored_lines > 0  # depth and kline streams
    t = pq.read_table(out / "t.pq").to_pylist()[0]
    assert str(t["price"]) == "0.35280000" and t["trade_count"] == 1
    assert t["ts_event"].isoformat() == "2021-10-12T00:28:43.963000+00:00"


def test_outages_gaps_and_invalidated_agg(tmp_path):
    layout = LakeLayout(tmp_path)
    t0 = rawgen.DAY_START_MS + 10_000
    trs = [t for t in _trades(range(1, 11), t0) if t.id not in (4, 5)]  # ids 4-5 never arrive
    lines = [rawgen.trade_line(t, t.t_ms + 1) for t in trs]
    lines += [b for _, b in rawgen.disconnect_lines(t0 + 2_000, t0 + 5_000)]
    invalid = {"a": 77, "p": "0", "q": "0", "f": -1, "l": -1, "T": t0, "m": True, "M": True}
    lines.append(rawgen.agg_line(invalid, t0 + 3))
    path = _write(layout, rawgen.DAY, 1, lines)
    out = tmp_path / "out"
    stats = build_ticks([path], "BTCUSDT", rawgen.DAY, out / "t.pq", out / "q.pq", tmp_path / "q")
    assert stats.trade_id_gaps == [(4, 5)] and stats.missing_trade_ids == 2
    assert stats.invalidated_agg_trades == 1 and stats.trade_kind == "trade"
    assert stats.outages == [((t0 + 2_000) * 1000, (t0 + 5_000) * 1000)]
    bars = build_bars_1s(out / "t.pq", out / "q.pq", "BTCUSDT", rawgen.DAY, out / "b.pq",
                         stats.outages)  # fmt: skip
    assert bars.outage_seconds == 3  # seconds 12, 13, 14 overlap [12.0 s, 15.0 s)
    assert bars.rows == 86_400 and bars.trade_count == 8


def test_empty_input_gives_empty_tables(tmp_path):
    out = tmp_path / "out"
    stats = build_ticks([], "BTCUSDT", rawgen.DAY, out / "t.pq", out / "q.pq", tmp_path / "q")
    assert stats.trade_rows == stats.quote_rows == 0
    assert pq.read_schema(out / "t.pq").names[:3] == ["symbol", "trade_id", "ts_event"]
    bars = build_bars_1s(out / "t.pq", out / "q.pq", "BTCUSDT", rawgen.DAY, out / "b.pq")
    assert bars.rows == 86_400 and bars.empty_seconds == 86_400


def test_day_starts_in_an_outage_until_the_first_connect(tmp_path):
    """A collector started at 00:00:10 did not watch 00:00:00-00:00:10; a replacement
    connection while the old one streams does not open an outage."""
    layout = LakeLayout(tmp_path)
    t0 = rawgen.DAY_START_MS + 10_000
    connect = session_line(t0 * 1_000_000, "ws-1", "connect")
    trades = [rawgen.trade_line(t, t.t_ms + 1) for t in _trades(range(1, 6), t0 + 100)]
    path = _write(layout, rawgen.DAY, 1, [connect, *trades])
    out = tmp_path / "out"
    stats = build_ticks([path], "BTCUSDT", rawgen.DAY, out / "t.pq", out / "q.pq", tmp_path / "q")
    assert stats.outages == [(rawgen.DAY_START_MS * 1000, t0 * 1000)]
    bars = build_bars_1s(out / "t.pq", out / "q.pq", "BTCUSDT", rawgen.DAY, out / "b.pq",
                         stats.outages)  # fmt: skip
    assert bars.outage_seconds == 10
    # Lines already streaming before the day's first connect: the recorder was running.
    early = [rawgen.trade_line(t, t.t_ms + 1) for t in _trades([0], t0 - 5_000)]
    path = _write(layout, rawgen.DAY, 2, [*early, connect, *trades])
    stats = build_ticks([path], "BTCUSDT", rawgen.DAY, out / "t.pq", out / "q.pq", tmp_path / "q")
    assert stats.outages == []


def test_sealed_files_give_the_same_ticks_as_plain_ones(tmp_path):
    """gzip and zstd parts as the collector seals them (zstd also as two frames, as
    concatenated parts are) read exactly like the plain file."""
    trs = _trades(range(1, 200), rawgen.DAY_START_MS + 500)
    data = b"".join(rawgen.trade_line(t, t.t_ms + 1) for t in trs) + b"{torn\n"
    half = data.index(b"\n", len(data) // 2) + 1

    def sealed(chunks: list[bytes], compression: str) -> bytes:
        out = io.BytesIO()
        for chunk in chunks:
            compress_stream(io.BytesIO(chunk), out, compression)
        return out.getvalue()

    forms = {"none": data, "gzip": sealed([data], "gzip"), "zstd": sealed([data], "zstd"),
             "zstd2": sealed([data[:half], data[half:]], "zstd")}  # fmt: skip
    outputs = {}
    for name, blob in forms.items():
        layout = LakeLayout(tmp_path / name)
        d = layout.raw_day_dir("BTCUSDT", rawgen.DAY)
        d.mkdir(parents=True)
        path = d / part_file_name(1, compression=name.rstrip("2"))
        path.write_bytes(blob)
        out = tmp_path / name / "out"
        stats = build_ticks([path], "BTCUSDT", rawgen.DAY, out / "t.pq", out / "q.pq",
                            tmp_path / name / "quarantine")  # fmt: skip
        assert stats.trade_rows == 199 and stats.bad_lines == 1, name
        outputs[name] = (out / "t.pq").read_bytes()
    assert len(set(outputs.values())) == 1


def test_a_misleading_first_job_still_gives_every_row(tmp_path):
    """The day's matrices (room for 65,536 rows at first) are sized from the first job's (8
    files') rows per byte. "low": those files hold a trade each among another symbol's lines,
    then come 70,000 trades (the estimate far too low: the matrices grow as they fill);
    "high": 2,000 trades, then only the other symbol (far too high: room left untouched).
    Both equal the general path's tables."""
    n = {"low": 70_008, "high": 2_000}
    lines = [rawgen.trade_line(t, t.t_ms + 1)
             for t in _trades(range(1, n["low"] + 1), rawgen.DAY_START_MS + 500)]  # fmt: skip
    eth = lines[0].replace(b"btcusdt@trade", b"ethusdt@trade").replace(b"BTCUSDT", b"ETHUSDT")
    orders = {
        "low": [[x, *[eth] * 200] for x in lines[:8]] + [lines[8:]],
        "high": [lines[i : i + 250] for i in range(0, 2000, 250)] + [[eth] * 10_000] * 8,
    }
    for name, parts in orders.items():
        layout = LakeLayout(tmp_path / name)
        files = [_write(layout, rawgen.DAY, i, part) for i, part in enumerate(parts)]
        tables = {}
        for fast in (True, False):
            out = tmp_path / name / f"out-{fast}"
            stats = build_ticks(files, "BTCUSDT", rawgen.DAY, out / "t.pq", out / "q.pq",
                                tmp_path / name / "quarantine", fast=fast)  # fmt: skip
            assert stats.trade_rows == n[name], (name, fast)
            tables[fast] = pq.read_table(out / "t.pq")
        assert tables[True].equals(tables[False]), name
        assert tables[True].column("trade_id").to_pylist() == list(range(1, n[name] + 1)), name


def test_tick_files_read_back_plain_with_statistics_where_queries_filter(tmp_path):
    """The symbol is written from a one-entry dictionary yet reads back as a string; min/max
    are kept for times, ids and prices, not for the wide decimals."""
    layout = LakeLayout(tmp_path)
    path = _write(
        layout,
        rawgen.DAY,
        0,
        [rawgen.trade_line(t, t.t_ms + 1) for t in _trades(range(1, 50), rawgen.DAY_START_MS)],
    )
    out = tmp_path / "out"
    build_ticks([path], "BTCUSDT", rawgen.DAY, out / "t.pq", out / "q.pq", tmp_path / "q")
    table = pq.read_table(out / "t.pq")
    assert table.schema.field("symbol").type == pa.string()
    assert set(table.column("symbol").to_pylist()) == {"BTCUSDT"}
    group = pq.ParquetFile(out / "t.pq").metadata.row_group(0)
    stats = {group.column(i).path_in_schema: group.column(i).statistics
             for i in range(group.num_columns)}  # fmt: skip
    assert stats["ts_event"].has_min_max and stats["trade_id"].min == 1
    assert stats["price"].has_min_max and stats["symbol"].max == "BTCUSDT"
    assert stats["qty"] is None and stats["quote_qty"] is None


def test_a_file_of_short_lines_is_read_in_several_passes(tmp_path):
    """Room for a file's rows is guessed from its size (a line per 128 bytes); 3,000 bad
    lines of 2 bytes among trades overflow the guess many times over and are all found."""
    trades = [rawgen.trade_line(t, t.t_ms + 1) for t in _trades(range(1, 301), rawgen.DAY_START_MS)]
    lines = [x for tr in trades for x in (tr, *[b"x\n"] * 10)]
    path = _write(LakeLayout(tmp_path), rawgen.DAY, 0, lines)
    got = {}
    for fast in (True, False):
        out = tmp_path / f"out-{fast}"
        stats = build_ticks([path], "BTCUSDT", rawgen.DAY, out / "t.pq", out / "q.pq",
                            tmp_path / f"quarantine-{fast}", fast=fast)  # fmt: skip
        assert stats.trade_rows == 300 and stats.bad_lines == 3000, fast
        got[fast] = ((out / "t.pq").read_bytes(), Path(stats.quarantine_path).read_bytes())
    assert got[True] == got[False]
