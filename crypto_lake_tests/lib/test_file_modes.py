"""Issue 18, item 4: one file-mode policy (``crypto_lake/lib/core/fsutil.py``) for
everything the system writes into the lake: files 0640, directories 0750, whatever the
process umask.

Real collector runs on the loopback simulator (a SIGKILLed zstd run whose leftovers the next,
plain run recovers), then the library's writers over the same lake — the raw catalog, the
ticks and bars (Parquet through ``parquet_out``), the DuckDB views, a plain atomic write —
and a walk of the whole tree.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from crypto_lake.lib.core.fsutil import atomic_write_bytes
from crypto_lake.lib.core.parquet_out import write_parquet
from crypto_lake.lib.core.paths import LakeLayout
from crypto_lake.lib.market.bars import build_bars_1s
from crypto_lake.lib.market.ticks import build_ticks
from crypto_lake.lib.market.views import build_lake_views
from crypto_lake.lib.raw.catalog import RawCatalog
from crypto_lake.simulator import SimConfig, SimulatorThread
from crypto_lake_tests.collector.conftest import CollectorProc, collector_args

SYMBOL = "BTCUSDT"
FILE_MODE, DIR_MODE = 0o640, 0o750  # the documented policy (README, fsutil)


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def sim() -> Iterator[SimulatorThread]:
    th = SimulatorThread(SimConfig(symbols=[SYMBOL, "ETHUSDT"], rate_scale=3)).start()
    yield th
    th.stop()


@contextlib.contextmanager
def collector(sim: SimulatorThread, lake: Path, mask: int, **kw) -> Iterator[CollectorProc]:
    """A real collector subprocess on ``lake`` with umask ``mask``; killed if still running."""
    args = collector_args(symbols=",".join(sim.cfg.symbols), rotate_seconds=0.3, **kw)
    proc = CollectorProc(lake, sim, args, lake.parent / "collector.log", None,
                         preexec_fn=lambda: os.umask(mask))  # fmt: skip
    try:
        yield proc
    finally:
        if proc.proc.poll() is None:
            proc.kill9()


def modes_under(root: Path) -> dict[str, list[str]]:
    """{"0o640": [paths...], ...} for every file and folder under ``root`` (root excluded)."""
    out: dict[str, list[str]] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(dirpath) / name
            mode = stat.S_IMODE(path.lstat().st_mode)
            kind = "dir" if name in dirs else "file"
            out.setdefault(f"{kind} {oct(mode)}", []).append(str(path.relative_to(root)))
    return out


def test_collector_and_writers_follow_one_mode_policy(sim, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    # zstd sealing under a strict umask, killed: .open leftovers for the next start
    with collector(sim, lake, 0o077, compression="zstd") as first:
        first.wait_heartbeat(lambda hb: hb["parts_sealed"] >= 4)
        first.kill9()
    # plain sealing under a permissive umask; it recovers the leftovers, then stops cleanly
    with collector(sim, lake, 0o000, compression="none") as second:
        second.wait_heartbeat(lambda hb: hb["parts_sealed"] >= 4)
        assert second.terminate()[0] == 0, second.tail_log()
    names = {p.name.rsplit(".", 1)[-1] for p in lake.rglob("part-*")}
    assert {"jsonl", "zst"} <= names, names

    layout = LakeLayout(lake)
    with umask(0o000):  # the Dagster side's writers, under the most permissive umask
        catalog = RawCatalog(layout)
        catalog.refresh()
        day = next(iter(sorted(p.name for p in layout.raw_symbol_dir(SYMBOL).iterdir())))
        files = catalog.files_for(SYMBOL, day)
        trades, quotes = (
            layout.market_file("trades", SYMBOL, day),
            layout.market_file("quotes", SYMBOL, day),
        )
        stats = build_ticks(files, SYMBOL, day, trades, quotes, layout.quarantine_root)
        build_bars_1s(trades, quotes, SYMBOL, day, layout.market_file("bars_1s", SYMBOL, day),
                      stats.outages)  # fmt: skip
        write_parquet(pa.table({"x": [1, 2]}), lake / "extra" / "deep" / "t.parquet")
        atomic_write_bytes(lake / "state" / "note.json", b"{}")
        build_lake_views(layout, extra_statements=[])
    assert layout.duckdb_path.exists() and trades.exists()

    modes = modes_under(lake)
    assert set(modes) == {f"file {oct(FILE_MODE)}", f"dir {oct(DIR_MODE)}"}, {
        k: v[:5] for k, v in modes.items()
    }
    assert stat.S_IMODE(lake.stat().st_mode) == DIR_MODE  # the collector created the root


def test_make_dirs_sets_every_created_level_and_leaves_existing_ones(tmp_path: Path) -> None:
    from crypto_lake.lib.core.fsutil import make_dirs

    existing = tmp_path / "existing"
    existing.mkdir(mode=0o755)
    os.chmod(existing, 0o755)
    with umask(0o077):
        made = make_dirs(existing / "a" / "b")
    assert made.is_dir()
    assert stat.S_IMODE(existing.stat().st_mode) == 0o755
    for p in (existing / "a", existing / "a" / "b"):
        assert stat.S_IMODE(p.stat().st_mode) == DIR_MODE
    (tmp_path / "file").write_text("x")
    try:
        make_dirs(tmp_path / "file" / "sub")
    except NotADirectoryError as exc:
        assert exc.filename == str(tmp_path / "file" / "sub")
    else:
        raise AssertionError("a path through a regular file must fail with ENOTDIR")
