"""Restore from the bucket onto an empty lake (SPEC §9): the archive is only worth something if
the tables rebuilt from its raw lines are byte-identical to the ones the lake had.

One original lake, built once per module the way the market assets build it: three days of
raw files for two symbols, where the last trade of the middle day is received after midnight
(its line sits in the next day's first part file, both symbols), the first trade of that day
is received before midnight by a lagging local clock (its line sits in the previous day's last
part, ETHUSDT), and BTCUSDT has a disconnect (an outage interval) and quiet first seconds
(filled with the previous day's close). The middle day is archived with its neighbours' raw
lines, uploaded to an emulated bucket, and restored by the CLI into a new, empty lake root.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml

from crypto_lake.defs.market.assets import partition_file
from crypto_lake.defs.market.partitions import shift_day
from crypto_lake.defs.market.stats import load_outage_intervals, load_outages, save_outages
from crypto_lake.lib.archive import gcs
from crypto_lake.lib.archive.day import archive_day, archive_files, object_name
from crypto_lake.lib.archive.restore import main, restore_day
from crypto_lake.lib.core.paths import ARCHIVE_TABLES, RAW_ARCHIVE, LakeLayout
from crypto_lake.lib.market.bars import build_bars_1m, build_bars_1s, last_trade_price
from crypto_lake.lib.market.coverage import build_coverage
from crypto_lake.lib.market.dedup import trade_conflicts_path
from crypto_lake.lib.market.outages import with_unrecorded_tail
from crypto_lake.lib.market.ticks import build_ticks
from crypto_lake.lib.raw.catalog import RawCatalog, day_bounds_us
from crypto_lake.lib.raw.lines import session_line, ws_line
from crypto_lake_tests.archive.gcs_server import Emulator, running_emulator, running_proxy
from crypto_lake_tests.defs import rawgen

DAYS = ["2024-03-01", "2024-03-02", "2024-03-03"]
DAY, BEFORE, AFTER = DAYS[1], DAYS[0], DAYS[2]
SYMBOLS = ["BTCUSDT", "ETHUSDT"]
PREFIX = "lake-test"
FAST = {"backoff_seconds": 0.01, "backoff_cap_seconds": 0.05}
US = 1_000_000


# the original lake --------------------------------------------------------------------------
def _raw_events(symbol: str) -> list[tuple[int, bytes]]:
    sd = rawgen.generate(symbol, DAYS, per_day=200)
    start, end = day_bounds_us(DAY)
    of_day = [t for t in sd.trades if start <= t.ts_us < end]
    of_day[-1].ts_us = end - 500  # received 2 ms later: in the next day's folder
    events = list(rawgen.raw_lines(sd, skip_ids={of_day[0].trade_id}))
    first = of_day[0]
    if symbol == "ETHUSDT":  # the local clock lags: received before midnight
        first.ts_us, recv_us = start + 300, start - 700
    else:
        recv_us = first.ts_us + 2_000
    msg = rawgen.trade_message(symbol, first)
    events.append((recv_us * 1000, ws_line(recv_us * 1000, "ws-1", "us", msg)))
    if symbol == "BTCUSDT":  # a 20 s outage in the quiet middle of the day
        for at, event in ((start + 3600 * US, "disconnect"), (start + 3620 * US, "connect")):
            events.append((at * 1000, session_line(at * 1000, "ws-1", event)))
    return sorted(events, key=lambda e: e[0])


def _build_partition(layout: LakeLayout, symbol: str, day: str) -> None:
    """What the ticks, bars_1s, bars_1m, coverage and daily_archive assets do for one closed
    partition (crypto_lake/defs/market/assets.py, coverage.py, defs/archive/assets.py)."""
    f = {name: partition_file(layout, name, symbol, day) for name in ARCHIVE_TABLES}
    catalog = RawCatalog(layout)
    stats = build_ticks(
        catalog.files_for(symbol, day), symbol, day, f["trades"], f["quotes"],
        layout.quarantine_root / symbol / day, seconds_out=layout.tick_seconds_path(symbol, day),
        conflicts_out=trade_conflicts_path(layout, symbol, day),
    )  # fmt: skip
    stats.outages, stats.outage_kinds = with_unrecorded_tail(
        stats.outages, stats.outage_kinds, day_bounds_us(day)[1], stats.max_ts_recv_us,
        now_us=time.time_ns() // 1000, recorded_after=catalog.recorded_after(symbol, day),
        connected_since_us=None,
    )  # fmt: skip
    save_outages(layout, symbol, day, stats)
    previous = last_trade_price(partition_file(layout, "trades", symbol, shift_day(day, -1)))
    build_bars_1s(
        f["trades"], f["quotes"], symbol, day, f["bars_1s"],
        outages=load_outages(layout, symbol, day), previous_close=previous,
        seconds=layout.tick_seconds_path(symbol, day),
    )  # fmt: skip
    build_bars_1m(f["bars_1s"], f["bars_1m"])
    intervals = load_outage_intervals(layout, symbol, day)
    build_coverage(f["bars_1s"], f["quotes"], symbol, day, f["coverage"], intervals)
    archive_day(layout, symbol, day, context={
        "run_id": "test",
        "outage_intervals": [[a, b, k] for a, b, k in intervals],
        "previous_close": None if previous is None else str(previous),
    })  # fmt: skip


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> LakeLayout:
    layout = LakeLayout(tmp_path_factory.mktemp("original"))
    for symbol in SYMBOLS:
        rawgen.write_raw(layout, symbol, iter(_raw_events(symbol)))
    for day in DAYS:  # in order: a day's first seconds carry the previous day's close
        for symbol in SYMBOLS:
            _build_partition(layout, symbol, day)
    return layout


def test_original_lake_exercises_the_edges(original: LakeLayout) -> None:
    """The fixture really has what the restore must reproduce."""
    start, end = day_bounds_us(DAY)
    for symbol in SYMBOLS:
        trades = pq.read_table(partition_file(original, "trades", symbol, DAY)).to_pylist()
        last, first = trades[-1], trades[0]
        assert last["ts_recv"].timestamp() * US >= end  # read from the next day's folder
        if symbol == "ETHUSDT":
            assert first["ts_recv"].timestamp() * US < start  # from the previous day's folder
    btc = original.archive_sidecar(RAW_ARCHIVE, "BTCUSDT", DAY)
    context = json.loads(btc.read_text())
    assert context["previous_close"] is not None
    assert [k for *_, k in context["outage_intervals"]] == ["outage"]


# the bucket -------------------------------------------------------------------------------------
@dataclass
class Bucket:
    host: str  # STORAGE_EMULATOR_HOST
    name: str
    bucket: Any  # google.cloud.storage.Bucket


@pytest.fixture(scope="module")
def gcs_emulator() -> Iterator[Emulator]:
    with running_emulator() as emulator:
        yield emulator


@pytest.fixture
def bucket(
    original: LakeLayout, gcs_emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Bucket]:
    """A fresh bucket holding the middle day's archive and its neighbours' raw lines. The
    client talks to the emulator directly: these tests inject no faults, and the fault proxy
    costs ~50 ms per request with a body (test_gcs.py covers the copy layer under faults)."""
    from dagster_gcp import GCSResource

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator.url)
    client = GCSResource(project="test").get_client()
    name = f"restore-{uuid.uuid4().hex[:12]}"
    env = Bucket(gcs_emulator.url, name, client.create_bucket(name))
    for symbol in SYMBOLS:
        files = archive_files(original, symbol, DAY)
        for day in (BEFORE, AFTER):
            files += [original.archive_file(RAW_ARCHIVE, symbol, day),
                      original.archive_sidecar(RAW_ARCHIVE, symbol, day)]  # fmt: skip
        for path in files:
            gcs.copy_file(env.bucket, path, object_name(PREFIX, original, path), **FAST)
    yield env
    client.close()


def _name(layout: LakeLayout, dataset: str, symbol: str, day: str = DAY) -> str:
    return object_name(PREFIX, layout, layout.archive_file(dataset, symbol, day))


def _run_cli(env: Bucket, root: Path) -> subprocess.CompletedProcess:
    config = root.parent / f"{root.name}.yaml"
    config.write_text(yaml.safe_dump({
        "lake_root": str(root), "symbols": SYMBOLS,
        "archive": {"bucket": env.name, "prefix": PREFIX, "gcs_project": "test",
                    "upload_attempts": 2, "backoff_base_seconds": 0.01,
                    "backoff_cap_seconds": 0.05},
    }))  # fmt: skip
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith("CRYPTO_LAKE") and k != "LAKE_ROOT"}  # fmt: skip
    environ["STORAGE_EMULATOR_HOST"] = env.host
    return subprocess.run(
        [sys.executable, "-m", "crypto_lake.lib.archive.restore", "--day", DAY,
         "--config", str(config)],
        env=environ, capture_output=True, text=True, timeout=180, cwd=root.parent,
    )  # fmt: skip


# the round trip -------------------------------------------------------------------------------
def test_cli_restores_identical_tables(
    original: LakeLayout, bucket: Bucket, tmp_path: Path
) -> None:
    root = tmp_path / "restored"
    proc = _run_cli(bucket, root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("OK: verified, rebuilt byte-identical") == 2, proc.stdout
    restored = LakeLayout(root)
    for symbol in SYMBOLS:
        for dataset in ARCHIVE_TABLES:
            ours = partition_file(restored, dataset, symbol, DAY).read_bytes()
            theirs = partition_file(original, dataset, symbol, DAY).read_bytes()
            assert ours == theirs, (symbol, dataset)
        # the state the next Dagster run reads is there too
        intervals = load_outage_intervals(restored, symbol, DAY)
        assert intervals == load_outage_intervals(original, symbol, DAY)
        assert trade_conflicts_path(restored, symbol, DAY).exists()
        assert restored.archive_file(RAW_ARCHIVE, symbol, AFTER).exists()
    assert not list(root.glob(".restore-*"))  # the scratch folder is gone
    assert f"gs://{bucket.name}/{PREFIX}/archive/trades/symbol=BTCUSDT/{DAY}.parquet" in (
        proc.stdout
    )


def test_corrupted_object_is_a_hash_mismatch(
    original: LakeLayout, bucket: Bucket, tmp_path: Path
) -> None:
    name = _name(original, "trades", "BTCUSDT")
    bucket.bucket.blob(name).upload_from_string(b"PAR1 not the archived trades PAR1")
    proc = _run_cli(bucket, tmp_path / "restored")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "BTCUSDT: FAILED" in out and "ETHUSDT: OK" in out
    assert f"trades/symbol=BTCUSDT/{DAY}.parquet: sha256 is" in out
    assert "1 of 2 symbol-day(s) FAILED" in out
    assert "BTCUSDT: OK" not in out


def test_missing_object_is_named(original: LakeLayout, bucket: Bucket, tmp_path: Path) -> None:
    name = _name(original, "bars_1m", "ETHUSDT")
    bucket.bucket.blob(name).delete()
    proc = _run_cli(bucket, tmp_path / "restored")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert f"gs://{bucket.name}/{name} does not exist" in out
    assert "ETHUSDT: FAILED" in out and "BTCUSDT: OK" in out


# the library ----------------------------------------------------------------------------------
def test_without_the_next_day_the_rebuild_differs(
    original: LakeLayout, bucket: Bucket, tmp_path: Path
) -> None:
    """The last trade of the day sits in the next day's raw: without it, never "ok"."""
    bucket.bucket.blob(_name(original, RAW_ARCHIVE, "BTCUSDT", AFTER)).delete()
    report = restore_day(LakeLayout(tmp_path), bucket.bucket, PREFIX, "BTCUSDT", DAY, **FAST)
    assert not report.ok
    assert all(f.verified for f in report.files.values())
    assert report.files["trades"].identical is False
    assert any(f"raw of {AFTER} not restored" in p for p in report.problems)
    assert AFTER not in report.neighbours and BEFORE in report.neighbours


def test_download_corrupted_in_transit_is_never_accepted(
    bucket: Bucket, gcs_emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both tries of the first download (the day's raw lines) arrive with a flipped byte."""
    from dagster_gcp import GCSResource

    with running_proxy(gcs_emulator.port) as proxy:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
        client = GCSResource(project="test").get_client()
        proxy.corrupt_downloads(2)
        layout = LakeLayout(tmp_path)
        report = restore_day(
            layout, client.bucket(bucket.name), PREFIX, "ETHUSDT", DAY, attempts=2, **FAST
        )
        client.close()
    assert not report.ok and not report.files[RAW_ARCHIVE].verified
    assert any(p.startswith(f"raw {DAY}: download gs://") and "md5" in p for p in report.problems)
    assert not layout.archive_file(RAW_ARCHIVE, "ETHUSDT", DAY).exists()  # nothing half-true
    assert not report.installed and report.files["trades"].identical is None


def test_local_files_are_not_overwritten_without_force(
    original: LakeLayout, bucket: Bucket, tmp_path: Path
) -> None:
    layout = LakeLayout(tmp_path)
    mine = partition_file(layout, "quotes", "ETHUSDT", DAY)
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"someone else's quotes")
    report = restore_day(layout, bucket.bucket, PREFIX, "ETHUSDT", DAY, **FAST)
    assert not report.ok and not report.installed
    assert any(str(mine) in p and "--force" in p for p in report.problems)
    assert mine.read_bytes() == b"someone else's quotes"
    assert not partition_file(layout, "trades", "ETHUSDT", DAY).exists()  # all or nothing

    report = restore_day(layout, bucket.bucket, PREFIX, "ETHUSDT", DAY, force=True, **FAST)
    assert report.ok, report.problems
    assert mine.read_bytes() == partition_file(original, "quotes", "ETHUSDT", DAY).read_bytes()
    # a re-run finds everything in place: nothing downloaded, still ok
    again = restore_day(layout, bucket.bucket, PREFIX, "ETHUSDT", DAY, **FAST)
    assert again.ok, again.problems
    assert {f.action for f in again.files.values()} == {"present"}


def test_no_bucket_configured_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CRYPTO_LAKE__ARCHIVE__BUCKET", raising=False)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"lake_root": str(tmp_path / "lake")}))
    assert main(["--day", DAY, "--config", str(config)]) == 2
    assert "no bucket configured" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["--day", "2024-13-01", "--config", str(config)])
    assert exc.value.code == 2
