"""The raw file sensor: one materialization per sealed file, and cheap ticks as the lake grows."""

from __future__ import annotations

import json
import os
from pathlib import Path

import dagster as dg

import crypto_lake.lib.raw.catalog as raw_catalog_mod
from crypto_lake.defs.raw.sensors import raw_file_sensor
from crypto_lake.defs.resources import LakeResource
from crypto_lake.lib.core.paths import LakeLayout
from crypto_lake_tests.defs import rawgen

DAYS = ["2024-03-01", "2024-03-02"]


def tick(instance: dg.DagsterInstance, root: Path, cursor: str | None):
    ctx = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"lake": LakeResource(lake_root=str(root))}
    )
    return raw_file_sensor(ctx), ctx


def test_each_sealed_file_becomes_a_partition_materialization(tmp_path: Path) -> None:
    layout = LakeLayout(tmp_path)
    written = []
    for symbol in ("BTCUSDT", "ETHUSDT"):
        sd = rawgen.generate(symbol, DAYS, per_day=40)
        written += rawgen.write_raw(layout, symbol, rawgen.raw_lines(sd))
    # The file being written is not sealed: it must not be reported.
    open_file = layout.raw_day_dir("BTCUSDT", DAYS[1]) / "part-000099.jsonl.open"
    open_file.write_bytes(b"{}\n")
    with dg.instance_for_test() as instance:
        result, _ = tick(instance, tmp_path, None)
        assert isinstance(result, dg.SensorResult)
        events = result.asset_events
        assert len(events) == len(written)
        by_uri = {e.metadata["dagster/uri"].value: e for e in events}
        assert set(by_uri) == {str(p) for p in written}
        sample = by_uri[str(written[0])]
        assert sample.asset_key == dg.AssetKey("raw_market_events")
        day, symbol = written[0].parent.name, written[0].parent.parent.name
        assert sample.partition == f"{day}|{symbol}"
        assert sample.metadata["bytes"].value == written[0].stat().st_size
        assert sample.metadata["lines"].value == written[0].read_bytes().count(b"\n")
        cursor = json.loads(result.cursor)
        assert cursor["files"] == len(written)


def test_second_tick_without_new_files_does_no_per_file_work(tmp_path: Path, monkeypatch) -> None:
    layout = LakeLayout(tmp_path)
    sd = rawgen.generate("BTCUSDT", DAYS, per_day=200)
    written = rawgen.write_raw(layout, "BTCUSDT", rawgen.raw_lines(sd), rotate_s=30)
    assert len(written) > 20
    scans: list[int] = []
    listed: list[str] = []
    real_scan, real_scandir = raw_catalog_mod.scan_raw_files, os.scandir

    def counting_scan(paths, *a, **kw):
        scans.append(len(paths))
        return real_scan(paths, *a, **kw)

    def counting_scandir(path="."):
        listed.append(str(path))
        return real_scandir(path)

    monkeypatch.setattr(raw_catalog_mod, "scan_raw_files", counting_scan)
    monkeypatch.setattr(raw_catalog_mod.os, "scandir", counting_scandir)
    with dg.instance_for_test() as instance:
        first, _ = tick(instance, tmp_path, None)
        assert len(first.asset_events) == len(written) and scans == [len(written)]
        scans.clear()
        listed.clear()
        second, _ = tick(instance, tmp_path, first.cursor)
        assert isinstance(second, dg.SkipReason)
        assert scans == []  # no file opened
        day_dirs = {str(layout.raw_day_dir("BTCUSDT", d)) for d in DAYS}
        assert not day_dirs & set(listed)  # no day folder listed either
        # A newly sealed file is found by the next tick, alone.
        extra = rawgen.append_part(layout, "BTCUSDT", DAYS[1], [rawgen.disconnect_line(10**18)])
        third, _ = tick(instance, tmp_path, first.cursor)
        assert [e.metadata["dagster/uri"].value for e in third.asset_events] == [str(extra)]
        assert scans == [1]


def test_sensor_is_running_by_default() -> None:
    assert raw_file_sensor.default_status == dg.DefaultSensorStatus.RUNNING
