"""Binance's public files: fetch, verify and store from a loopback file site, then parse.

The site is a real HTTP server on 127.0.0.1 serving zips built here from generated CSV, with
scripted failures (404 before publication, 5xx, transfers cut short). Nothing reaches the
internet.
"""

from __future__ import annotations

import hashlib
import io
import re
import threading
import zipfile
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import ROUND_DOWN, Context, Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pytest

from crypto_lake.lib.core.paths import LakeLayout
from crypto_lake.lib.core.schema import KLINES_1M, PRICE, QTY, QUOTE_VOLUME, TS
from crypto_lake.lib.history.public_csv import read_agg_trades, read_klines, read_trades
from crypto_lake.lib.history.public_files import (
    ChecksumMismatch,
    CorruptZip,
    PublicFileError,
    PublicFileInvalid,
    PublicFileMissing,
    PublicFileUnavailable,
    UnexpectedCsv,
    WrongTimeUnits,
    checksum_path,
    fetch_public_file,
    public_file_url,
    verify_stored_file,
)

SYMBOL = "BTCUSDT"
EXACT = Context(prec=80, rounding=ROUND_DOWN)  # exact products; quote8 truncates
TRADES_HEADER = "id,price,qty,quote_qty,time,is_buyer_maker,is_best_match"


# --- the loopback file site -------------------------------------------------------------------
class _Site:
    """Serves ``files`` (URL path -> bytes); ``script[path]`` lists answers given first: an
    HTTP status, or "short" (a 200 whose body stops halfway through its Content-Length)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.script: dict[str, list[int | str]] = {}
        self.requests: Counter[str] = Counter()
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                site.requests[self.path] += 1
                answer = site.script.get(self.path, []).pop(0) if site.script.get(self.path) \
                    else (200 if self.path in site.files else 404)  # fmt: skip
                if answer != 200 and answer != "short":
                    self.send_error(int(answer))
                    return
                body = site.files[self.path]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body if answer == 200 else body[: len(body) // 2])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def path_of(self, kind: str, day: str, interval: str | None = None) -> str:
        return public_file_url(self.url, kind, SYMBOL, day, interval)[len(self.url) :]

    def publish(self, kind: str, day: str, csv: str | bytes, interval: str | None = None, *,
                zip_bytes: bytes | None = None, checksum: str | None = None) -> str:  # fmt: skip
        """Put a zip holding ``csv`` (or ``zip_bytes``) and its CHECKSUM on the site."""
        path = self.path_of(kind, day, interval)
        name = path.rsplit("/", 1)[1]
        data = zip_bytes if zip_bytes is not None else make_zip(name[:-4] + ".csv", csv)
        digest = checksum or hashlib.sha256(data).hexdigest()
        self.files[path] = data
        self.files[path + ".CHECKSUM"] = f"{digest}  {name}\n".encode()
        return path


@pytest.fixture
def site() -> Iterator[_Site]:
    s = _Site()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


@pytest.fixture
def layout(tmp_path: Path) -> LakeLayout:
    return LakeLayout(tmp_path / "lake")


def fetch(site: _Site, layout: LakeLayout, kind: str, day: str, interval: str | None = None,
          **kw):  # fmt: skip
    kw.setdefault("sleep", lambda s: None)
    return fetch_public_file(site.url, kind, SYMBOL, day, interval, layout=layout, timeout=5,
                             **kw)  # fmt: skip


def stored_files(layout: LakeLayout) -> list[Path]:
    return sorted(p for p in layout.root.rglob("*") if p.is_file())


# --- generated files ----------------------------------------------------------------------------
def make_zip(name: str, csv: str | bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(name, csv.encode() if isinstance(csv, str) else csv)
    return buf.getvalue()


def epoch(day: str, unit: str) -> int:
    start = int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp())
    return start * (1000 if unit == "ms" else 1_000_000)


def exact(price: str, qty: str) -> Decimal:
    """price x qty without rounding (the default context keeps 28 digits only)."""
    return EXACT.multiply(Decimal(price), Decimal(qty))


def quote8(price: str, qty: str) -> str:
    """Binance's quote_qty: price x qty to 8 places."""
    return str(EXACT.quantize(exact(price, qty), Decimal("1e-8")))


def trade_rows(day: str, unit: str, n: int = 50, first_id: int = 1_000) -> list[list[str]]:
    t0, step = epoch(day, unit), 1_700 * (1 if unit == "ms" else 1000)
    rows = []
    for i in range(n):
        price, qty = f"{60_000 + i * 0.01:.8f}", f"{0.001 * (i + 1):.8f}"
        rows.append([str(first_id + i), price, qty, quote8(price, qty), str(t0 + i * step),
                     "True" if i % 3 == 0 else "False", "True"])  # fmt: skip
    return rows


def csv_of(rows: list[list[str]], header: str | None = None) -> str:
    lines = [",".join(r) for r in rows]
    return "\n".join([header, *lines] if header else lines) + "\n"


# --- fetch, verify, store -----------------------------------------------------------------------
def test_fetch_stores_the_verified_zip_and_its_checksum(site, layout):
    day = "2025-03-01"
    path = site.publish("trades", day, csv_of(trade_rows(day, "us")))
    got = fetch(site, layout, "trades", day)
    assert got.downloaded and got.url == site.url + path
    assert got.path == layout.root / "history/binance/spot/daily/trades/BTCUSDT" / (
        "BTCUSDT-trades-2025-03-01.zip")  # fmt: skip
    assert got.path.read_bytes() == site.files[path]
    assert got.sha256 == hashlib.sha256(site.files[path]).hexdigest()
    assert got.size_bytes == len(site.files[path])
    assert checksum_path(got.path).read_bytes() == site.files[path + ".CHECKSUM"]
    assert verify_stored_file(got.path) == got.sha256
    assert stored_files(layout) == [got.path, checksum_path(got.path)]  # no temporary left


def test_a_stored_file_that_matches_is_not_downloaded_again(site, layout):
    day = "2025-03-01"
    path = site.publish("trades", day, csv_of(trade_rows(day, "us")))
    first = fetch(site, layout, "trades", day)
    again = fetch(site, layout, "trades", day)
    assert not again.downloaded and again.sha256 == first.sha256
    assert site.requests[path] == 1 and site.requests[path + ".CHECKSUM"] == 2
    first.path.write_bytes(b"damaged")  # a stored copy that no longer matches is replaced
    with pytest.raises(ChecksumMismatch, match="fetch it again"):
        verify_stored_file(first.path)
    assert fetch(site, layout, "trades", day).downloaded
    assert first.path.read_bytes() == site.files[path] and site.requests[path] == 2
    checksum_path(first.path).unlink()  # a zip stored without its checksum: not trusted
    with pytest.raises(PublicFileError, match=r"no \.CHECKSUM beside it"):
        verify_stored_file(first.path)
    assert not fetch(site, layout, "trades", day).downloaded  # the checksum is stored again
    assert verify_stored_file(first.path) == first.sha256


def test_404_until_published_then_fetched(site, layout):
    day = "2025-03-01"
    with pytest.raises(PublicFileMissing, match="retry later") as exc:
        fetch(site, layout, "trades", day)
    assert site.path_of("trades", day) in str(exc.value) and exc.value.url.startswith(site.url)
    assert stored_files(layout) == []
    site.publish("trades", day, csv_of(trade_rows(day, "us")))  # Binance publishes it
    assert fetch(site, layout, "trades", day).downloaded
    # the zip missing although its checksum is there: missing too
    path = site.publish("trades", "2025-03-02", csv_of(trade_rows("2025-03-02", "us")))
    del site.files[path]
    with pytest.raises(PublicFileMissing):
        fetch(site, layout, "trades", "2025-03-02")


def test_checksum_mismatch_stores_nothing(site, layout):
    day = "2025-03-01"
    path = site.publish("trades", day, csv_of(trade_rows(day, "us")), checksum="ab" * 32)
    with pytest.raises(ChecksumMismatch, match="nothing stored") as exc:
        fetch(site, layout, "trades", day)
    assert site.url + path in str(exc.value)
    assert stored_files(layout) == []
    # a checksum file naming another file, or not a checksum at all
    site.files[path + ".CHECKSUM"] = b"ab" * 32 + b"  BTCUSDT-trades-2025-03-02.zip\n"
    with pytest.raises(ChecksumMismatch, match=re.escape("not BTCUSDT-trades-2025-03-01.zip")):
        fetch(site, layout, "trades", day)
    site.files[path + ".CHECKSUM"] = b"<html>Not here</html>"
    with pytest.raises(ChecksumMismatch, match="not a sha256sum line"):
        fetch(site, layout, "trades", day)
    assert stored_files(layout) == []


def test_truncated_or_corrupt_zip_stores_nothing(site, layout):
    day = "2025-03-01"
    good = make_zip("BTCUSDT-trades-2025-03-01.csv", csv_of(trade_rows(day, "us", n=2000)))
    site.publish("trades", day, "", zip_bytes=good[: len(good) * 2 // 3])  # checksum of the cut
    with pytest.raises(CorruptZip, match="corrupt or truncated zip"):
        fetch(site, layout, "trades", day)
    assert stored_files(layout) == []
    # a bit flipped inside the compressed data: the CRC (or inflate) fails
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0x55
    site.publish("trades", day, "", zip_bytes=bytes(bad))
    with pytest.raises(CorruptZip):
        fetch(site, layout, "trades", day)
    # not the one CSV of the zip's name
    site.publish("trades", day, "", zip_bytes=make_zip("other.csv", "1,2\n"))
    with pytest.raises(
        CorruptZip, match=re.escape("expected one file BTCUSDT-trades-2025-03-01.csv")
    ):
        fetch(site, layout, "trades", day)
    assert stored_files(layout) == []


def test_wrong_columns_are_caught_before_storing(site, layout):
    day = "2025-03-01"
    rows = [r[:6] for r in trade_rows(day, "us")]  # is_best_match missing
    site.publish("trades", day, csv_of(rows))
    with pytest.raises(UnexpectedCsv, match="first row has 6 columns, expected 7"):
        fetch(site, layout, "trades", day)
    site.publish("trades", day, csv_of(trade_rows(day, "us"), header="a,b,c,d,e,f,g"))
    with pytest.raises(UnexpectedCsv, match="neither data nor the header"):
        fetch(site, layout, "trades", day)
    assert stored_files(layout) == []


def test_retries_server_errors_and_short_transfers(site, layout):
    day = "2025-03-01"
    path = site.publish("trades", day, csv_of(trade_rows(day, "us", n=500)))
    site.script[path + ".CHECKSUM"] = [503]
    site.script[path] = [500, "short", 429]
    sleeps: list[float] = []
    got = fetch(site, layout, "trades", day, sleep=sleeps.append)
    assert got.downloaded and verify_stored_file(got.path) == got.sha256
    assert sleeps == [1.0, 1.0, 2.0, 4.0] and site.requests[path] == 4
    site.script[path + ".CHECKSUM"] = [502] * 3
    with pytest.raises(PublicFileUnavailable, match="giving up after 3 attempts"):
        fetch(site, layout, "trades", "2025-03-01", max_retries=2)
    site.script[path + ".CHECKSUM"] = [403]
    with pytest.raises(PublicFileUnavailable, match="HTTP 403, not retried"):
        fetch(site, layout, "trades", day)


def test_error_classes():
    for cls in (ChecksumMismatch, CorruptZip, UnexpectedCsv, WrongTimeUnits):
        assert issubclass(cls, PublicFileInvalid)
    assert issubclass(WrongTimeUnits, UnexpectedCsv)
    for cls in (PublicFileMissing, PublicFileUnavailable, PublicFileInvalid):
        assert issubclass(cls, PublicFileError)


def test_paths_and_urls(layout):
    assert public_file_url("https://data.binance.vision/", "klines", SYMBOL, "2024-12", "1s") == (
        "https://data.binance.vision/data/spot/monthly/klines/BTCUSDT/1s/BTCUSDT-1s-2024-12.zip"
    )
    assert layout.public_file("aggTrades", SYMBOL, "2025-03-01") == layout.root / (
        "history/binance/spot/daily/aggTrades/BTCUSDT/BTCUSDT-aggTrades-2025-03-01.zip"
    )
    for bad in [("bookTicker", SYMBOL, "2025-03-01", None), ("klines", SYMBOL, "2025-03-01", None),
                ("trades", SYMBOL, "2025-03-01", "1m"), ("klines", SYMBOL, "2025-03-01", "7m"),
                ("trades", "btc/../x", "2025-03-01", None), ("trades", SYMBOL, "2025-13", None),
                ("trades", SYMBOL, "2025-3-1", None)]:  # fmt: skip
        with pytest.raises(ValueError):
            layout.public_file(*bad)


# --- parsing ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("day", "unit"), [("2024-12-31", "ms"), ("2025-01-01", "us")])
def test_trades_in_the_unit_of_their_date(site, layout, day, unit):
    rows = trade_rows(day, unit)
    site.publish("trades", day, csv_of(rows))
    table = read_trades(fetch(site, layout, "trades", day).path, day)
    assert table.schema == pa.schema([("trade_id", pa.int64()), ("ts_event", TS),
                                      ("price", PRICE), ("qty", QTY), ("quote_qty", QUOTE_VOLUME),
                                      ("is_buyer_maker", pa.bool_())])  # fmt: skip
    scale = 1000 if unit == "ms" else 1
    assert table["trade_id"].to_pylist() == [int(r[0]) for r in rows]
    assert [int(v.value) for v in table["ts_event"]] == [int(r[4]) * scale for r in rows]
    assert table["ts_event"][0].as_py() == datetime.fromisoformat(day).replace(tzinfo=UTC)
    assert table["price"].to_pylist() == [Decimal(r[1]) for r in rows]
    assert table["qty"].to_pylist() == [Decimal(r[2]) for r in rows]
    assert table["is_buyer_maker"].to_pylist() == [r[5] == "True" for r in rows]
    assert table["quote_qty"].to_pylist() == [exact(r[1], r[2]) for r in rows]


def test_header_row_is_skipped(site, layout):
    day = "2025-03-01"
    rows = trade_rows(day, "us")
    site.publish("trades", day, csv_of(rows, header=TRADES_HEADER))
    table = read_trades(fetch(site, layout, "trades", day).path, day)
    assert table["trade_id"].to_pylist() == [int(r[0]) for r in rows]


def test_quote_qty_is_exact_on_awkward_decimals(tmp_path):
    day = "2025-03-01"
    t0 = epoch(day, "us")
    pairs = [("0.00000001", "0.00000001"), ("9999999999.99999999", "92233720368.54775807"),
             ("0.33333333", "0.66666667"), ("12345.67891234", "0.00012345"),
             ("1.00000001", "99999999.99999999"), ("0.00012345", "123456789.12345678"),
             ("67890.12", "0"), ("3", "7.1")]  # fmt: skip
    rows = [[str(i + 1), p, q, quote8(p, q), str(t0 + i), "False", "True"]
            for i, (p, q) in enumerate(pairs)]  # fmt: skip
    zip_path = tmp_path / "BTCUSDT-trades-2025-03-01.zip"
    zip_path.write_bytes(make_zip(zip_path.stem + ".csv", csv_of(rows)))
    table = read_trades(zip_path, day)
    assert table["quote_qty"].type == QUOTE_VOLUME
    assert table["quote_qty"].to_pylist() == [exact(p, q) for p, q in pairs]
    assert table["quote_qty"][1].as_py() == Decimal("922337203685477579777.6627963145224193")
    # the file's quote_qty is only checked: a file whose third column is something else fails
    rows[0][3] = "5.00000000"
    zip_path.write_bytes(make_zip(zip_path.stem + ".csv", csv_of(rows)))
    with pytest.raises(UnexpectedCsv, match="differs from price x qty"):
        read_trades(zip_path, day)
    assert read_trades(zip_path, day, check_quote_qty=False).num_rows == len(rows)


@pytest.mark.parametrize(("day", "unit", "hint"), [
    ("2025-03-01", "ms", "fit it in milliseconds"),
    ("2024-03-01", "us", "fit it in microseconds"),
    ("2025-03-02", "us", "fit it in neither unit"),
])  # fmt: skip
def test_times_in_the_wrong_unit_are_rejected(site, layout, day, unit, hint):
    rows = trade_rows("2025-03-01" if day == "2025-03-02" else day, unit)
    site.publish("trades", day, csv_of(rows))
    path = fetch(site, layout, "trades", day).path
    with pytest.raises(WrongTimeUnits, match=f"wrong units.*{hint}") as exc:
        read_trades(path, day)
    assert str(path) in str(exc.value)


def test_one_bad_time_is_enough(tmp_path):
    day = "2025-03-01"
    rows = trade_rows(day, "us")
    rows[-1][4] = str(epoch("2025-03-02", "us"))  # the next day's first microsecond
    zip_path = tmp_path / "BTCUSDT-trades-2025-03-01.zip"
    zip_path.write_bytes(make_zip(zip_path.stem + ".csv", csv_of(rows)))
    with pytest.raises(WrongTimeUnits):
        read_trades(zip_path, day)


@pytest.mark.parametrize(("change", "match"), [
    (lambda rows: rows[7].append("1"), "Expected 7 columns, got 8"),
    (lambda rows: rows[7].pop(), "Expected 7 columns, got 6"),
    (lambda rows: rows[7].__setitem__(1, "6O000.00000000"), "'6O000.00000000' is not a valid"),
    (lambda rows: rows[7].__setitem__(2, ""), "Empty string"),
    (lambda rows: rows[7].__setitem__(1, "60000.123456789"), "data loss"),
    (lambda rows: rows[7].__setitem__(5, "maybe"), "invalid value 'maybe'"),
    (lambda rows: rows[7].__setitem__(0, rows[3][0]), "id 1003 appears more than once"),
    (lambda rows: rows[7].__setitem__(1, "-1.00000000"), "price runs from -1"),
    (lambda rows: rows[7].__setitem__(1, "0E-8"), "price runs from 0"),
    (lambda rows: rows[7].__setitem__(1, "12345678901.00000000"), "precision not supported"),
    (lambda rows: rows[7].__setitem__(1, "12345678901.5"), "< 10000000000"),  # 19 digits once
    (lambda rows: rows[7].__setitem__(2, "92233720368.54775808"), "< 92233720368.54775808"),
    (lambda rows: rows[7].__setitem__(2, "-0.5"), "qty runs from -0.5"),
])  # fmt: skip
def test_bad_rows_are_rejected(tmp_path, change, match):
    day = "2025-03-01"
    rows = trade_rows(day, "us")
    change(rows)
    zip_path = tmp_path / "BTCUSDT-trades-2025-03-01.zip"
    zip_path.write_bytes(make_zip(zip_path.stem + ".csv", csv_of(rows)))
    with pytest.raises(UnexpectedCsv, match=match) as exc:
        read_trades(zip_path, day, check_quote_qty=False)
    assert str(zip_path) in str(exc.value)


def test_rows_are_sorted_by_time_then_id(tmp_path):
    day, t0 = "2025-03-01", epoch("2025-03-01", "us")
    rows = trade_rows(day, "us", n=5)
    for row, t in zip(rows, [50, 10, 10, 30, 20], strict=True):
        row[4] = str(t0 + t)
    rows[1], rows[2] = rows[2], rows[1]  # the same time: by id
    zip_path = tmp_path / "BTCUSDT-trades-2025-03-01.zip"
    zip_path.write_bytes(make_zip(zip_path.stem + ".csv", csv_of(rows)))
    table = read_trades(zip_path, day)
    assert table["trade_id"].to_pylist() == [1001, 1002, 1004, 1003, 1000]


def test_empty_file_and_mismatched_day(tmp_path):
    zip_path = tmp_path / "BTCUSDT-trades-2025-03-01.zip"
    zip_path.write_bytes(make_zip(zip_path.stem + ".csv", ""))
    with pytest.raises(UnexpectedCsv, match="the CSV is empty"):
        read_trades(zip_path, "2025-03-01")
    with pytest.raises(ValueError, match="is the file of 2025-03-01, not of 2025-03-02"):
        read_trades(zip_path, "2025-03-02")
    with pytest.raises(ValueError, match="is a trades file, not aggTrades"):
        read_agg_trades(zip_path, "2025-03-01")


def test_a_damaged_stored_zip_is_reported(tmp_path):
    zip_path = tmp_path / "BTCUSDT-trades-2025-03-01.zip"
    data = bytearray(make_zip(zip_path.stem + ".csv", csv_of(trade_rows("2025-03-01", "us"))))
    data[len(data) // 2] ^= 0xFF
    zip_path.write_bytes(bytes(data))
    with pytest.raises(CorruptZip, match="fetch it again"):
        read_trades(zip_path, "2025-03-01")


def test_monthly_trades(site, layout):
    month = "2024-02"
    rows = trade_rows("2024-02-01", "ms", n=3) + trade_rows("2024-02-29", "ms", n=3, first_id=9)
    site.publish("trades", month, csv_of(rows))
    got = fetch(site, layout, "trades", month)
    assert got.path.name == "BTCUSDT-trades-2024-02.zip" and "/monthly/" in got.url
    assert read_trades(got.path, month).num_rows == 6
    rows.append(trade_rows("2024-03-01", "ms", n=1, first_id=20)[0])  # the next month
    site.publish("trades", month, csv_of(rows))
    with pytest.raises(WrongTimeUnits):
        read_trades(fetch(site, layout, "trades", month).path, month)


def test_agg_trades(site, layout):
    day, t0 = "2025-03-01", epoch("2025-03-01", "us")
    rows = [
        ["7", "60000.01000000", "0.50000000", "100", "102", str(t0 + 5), "True", "True"],
        ["8", "0", "0", "-1", "-1", str(t0 + 6), "False", "True"],  # invalidated
        ["9", "60000.02000000", "0.25000000", "103", "103", str(t0 + 6), "False", "True"],
    ]
    header = "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time," \
             "is_buyer_maker,is_best_match"  # fmt: skip
    site.publish("aggTrades", day, csv_of(rows, header=header))
    table = read_agg_trades(fetch(site, layout, "aggTrades", day).path, day)
    assert table.column_names == [
        "trade_id",
        "ts_event",
        "price",
        "qty",
        "quote_qty",
        "is_buyer_maker",
        "first_trade_id",
        "last_trade_id",
    ]
    assert table["trade_id"].to_pylist() == [7, 9]
    assert table["first_trade_id"].to_pylist() == [100, 103]
    assert table["last_trade_id"].to_pylist() == [102, 103]
    assert table["quote_qty"].to_pylist() == [Decimal("30000.005"), Decimal("15000.005")]
    rows[2][3] = "104"  # first > last
    site.publish("aggTrades", day, csv_of(rows))
    with pytest.raises(UnexpectedCsv, match="last_trade_id - first_trade_id"):
        read_agg_trades(fetch(site, layout, "aggTrades", day).path, day)


def kline_rows(day: str, unit: str, seconds: int, n: int) -> list[list[str]]:
    t0, per = epoch(day, unit), 1000 if unit == "ms" else 1_000_000
    return [[str(t0 + i * seconds * per), "60000.10000000", "60010.00000000", "59990.00000000",
             "60001.00000000", "1.50000000", str(t0 + (i + 1) * seconds * per - 1),
             "90001.50000000", "42", "0.75000000", "45000.75000000", "0"]
            for i in range(n)]  # fmt: skip


@pytest.mark.parametrize(("day", "unit", "interval"), [
    ("2024-12-31", "ms", "1m"), ("2025-03-01", "us", "1m"), ("2025-03-01", "us", "1s"),
])  # fmt: skip
def test_klines(site, layout, day, unit, interval):
    seconds = 60 if interval == "1m" else 1
    n = 86_400 // seconds
    rows = kline_rows(day, unit, seconds, n)
    rows[0], rows[1] = rows[1], rows[0]
    site.publish("klines", day, csv_of(rows), interval)
    got = fetch(site, layout, "klines", day, interval)
    assert f"/klines/BTCUSDT/{interval}/BTCUSDT-{interval}-{day}.zip" in got.url
    table = read_klines(got.path, day, interval)
    assert table.schema == KLINES_1M.arrow_schema() and table.num_rows == n
    first = table.slice(0, 1).to_pylist()[0]
    start = datetime.fromisoformat(day).replace(tzinfo=UTC)
    assert first["symbol"] == SYMBOL and first["open_time"] == start
    assert (first["close_time"] - start).total_seconds() == seconds - (
        0.001 if unit == "ms" else 0.000001
    )
    assert first["quote_volume"] == Decimal("90001.5") and first["trade_count"] == 42
    opens = [v.value for v in table["open_time"]]
    assert opens == sorted(set(opens))


def test_klines_of_another_interval_are_rejected(tmp_path):
    zip_path = tmp_path / "BTCUSDT-1m-2025-03-01.zip"
    zip_path.write_bytes(
        make_zip(zip_path.stem + ".csv", csv_of(kline_rows("2025-03-01", "us", 1, 100)))
    )
    with pytest.raises(UnexpectedCsv, match="is not a 1m interval"):
        read_klines(zip_path, "2025-03-01", "1m")
    rows = kline_rows("2025-03-01", "us", 60, 3)
    rows[2] = rows[1]
    zip_path.write_bytes(make_zip(zip_path.stem + ".csv", csv_of(rows)))
    with pytest.raises(UnexpectedCsv, match=r"open_time .* appears more than once"):
        read_klines(zip_path, "2025-03-01", "1m")
