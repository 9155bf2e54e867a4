"""Newly sealed raw files: one materialization per partition per pass, and cheap passes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import dagster as dg

import crypto_lake.lib.raw.catalog as raw_catalog_mod
from crypto_lake.defs.market.automation import market_refresh_sensor
from crypto_lake.defs.resources import LakeResource
from crypto_lake.lib.core.paths import LakeLayout
from crypto_lake_tests.defs import rawgen

DAYS = ["2024-03-01", "2024-03-02"]


def tick(instance: dg.DagsterInstance, root: Path, cursor: str | None) -> dg.SensorResult:
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"lake": LakeResource(lake_root=str(root))}
    ) as ctx:
        return market_refresh_sensor(ctx)


def test_sealed_files_become_one_materialization_per_partition(tmp_path: Path) -> None:
    layout = LakeLayout(tmp_path)
    written: list[Path] = []
    for symbol in ("BTCUSDT", "ETHUSDT"):
        sd = rawgen.generate(symbol, DAYS, per_day=40)
        written += rawgen.write_raw(layout, symbol, rawgen.raw_lines(sd), rotate_s=60)
    # The file being written is not sealed: it must not be reported.
    open_file = layout.raw_day_dir("BTCUSDT", DAYS[1]) / "part-000099.jsonl.open"
    open_file.write_bytes(b"{}\n")
    folders = {p.parent for p in written}
    assert len(written) > len(folders)  # several files per partition
    with dg.instance_for_test() as instance:
        result = tick(instance, tmp_path, None)
        events = result.asset_events
        assert len(events) == len(folders)
        by_uri = {e.metadata["dagster/uri"].value: e for e in events}
        assert set(by_uri) == {str(f) for f in folders}
        for folder, event in by_uri.items():
            files = [p for p in written if str(p.parent) == folder]
            day, symbol = Path(folder).name, Path(folder).parent.name
            assert event.asset_key == dg.AssetKey("raw_market_events")
            assert event.partition == f"{day}|{symbol}"
            assert event.metadata["files"].value == len(files)
            assert event.metadata["bytes"].value == sum(p.stat().st_size for p in files)
            lines = sum(p.read_bytes().count(b"\n") for p in files)
            assert event.metadata["lines"].value == lines
            assert day in event.metadata["event_days"].value
        cursor = json.loads(result.cursor)
        assert cursor["files"] == len(written)
        assert cursor["pending"] == {}  # every touched day got its run request
        assert result.run_requests


def test_second_pass_without_new_files_does_no_per_file_work(tmp_path: Path, monkeypatch) -> None:
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
        first = tick(instance, tmp_path, None)
        assert len(first.asset_events) == len({p.parent for p in written})
        assert scans == [len(written)]
        scans.clear()
        listed.clear()
        second = tick(instance, tmp_path, first.cursor)
        assert not second.asset_events and not second.run_requests
        assert scans == []  # no file opened
        day_dirs = {str(layout.raw_day_dir("BTCUSDT", d)) for d in DAYS}
        assert not day_dirs & set(listed)  # no day folder listed either
        # A newly sealed file is found by the next pass, alone.
        extra = rawgen.append_part(layout, "BTCUSDT", DAYS[1], [rawgen.disconnect_line(10**18)])
        third = tick(instance, tmp_path, first.cursor)
        assert [e.metadata["dagster/uri"].value for e in third.asset_events] == [str(extra.parent)]
        assert third.asset_events[0].metadata["files"].value == 1
        assert scans == [1]


def test_sensor_is_running_by_default() -> None:
    assert market_refresh_sensor.default_status == dg.DefaultSensorStatus.RUNNING
