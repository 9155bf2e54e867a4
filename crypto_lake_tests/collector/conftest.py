"""Fixtures for the collector tests: a loopback simulator and the collector as a subprocess."""

from __future__ import annotations

import gzip
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import zstandard

from crypto_lake.lib.core.paths import LakeLayout, parse_part_name
from crypto_lake.simulator import SimConfig, SimulatorThread

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CollectorProc:
    """A collector subprocess writing to ``lake`` and fed by ``sim``."""

    def __init__(
        self,
        lake: Path,
        sim: Any,
        args: list[str],
        log: Path,
        extra_env: dict[str, str] | None,
        **popen: Any,
    ) -> None:
        self.lake = lake
        self.layout = LakeLayout(lake)
        cmd = [
            sys.executable,
            "-m",
            "collector_daemon",
            "--lake-root",
            str(lake),
            "--ws-url",
            sim.ws_url,
            "--rest-url",
            sim.rest_url,
            *args,
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("CRYPTO_LAKE")}
        env["CRYPTO_LAKE_CONFIG"] = os.devnull  # defaults only, never a developer's file
        env.update(extra_env or {})
        self.log = log
        self._log_fh = open(log, "ab")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=self._log_fh, stderr=subprocess.STDOUT, **popen
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def heartbeat(self) -> dict[str, Any] | None:
        try:
            return orjson.loads(self.layout.heartbeat_path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return None

    def wait_heartbeat(
        self, pred: Callable[[dict[str, Any]], bool], timeout: float = 20.0
    ) -> dict[str, Any]:
        """Poll the heartbeat file until ``pred`` holds (fails with the log if it never does)."""
        deadline = time.monotonic() + timeout
        hb = None
        while time.monotonic() < deadline:
            hb = self.heartbeat()
            if hb is not None and hb.get("pid") == self.pid and pred(hb):
                return hb
            if self.proc.poll() is not None and (hb is None or hb.get("pid") != self.pid):
                break
            time.sleep(0.1)
        raise AssertionError(f"heartbeat condition not met; last={hb}\n{self.tail_log()}")

    def tail_log(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def terminate(self, timeout: float = 15.0) -> tuple[int, float]:
        """SIGTERM; returns (exit code, seconds until exit)."""
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout), time.monotonic() - t0

    def kill9(self) -> None:
        self.proc.kill()
        self.wait(10)

    def wait(self, timeout: float = 15.0) -> int:
        try:
            rc = self.proc.wait(timeout)
        finally:
            self._log_fh.close()
        return rc


def collector_args(**kw: Any) -> list[str]:
    """Defaults for tests: fast heartbeat, no metrics port, short grace; kw overrides."""
    opts = {"heartbeat_seconds": 0.5, "metrics_port": 0, "reorder_grace": 0.5}
    opts.update(kw)
    out: list[str] = []
    for k, v in opts.items():
        flag = "--" + k.replace("_", "-")
        if v is True:
            out.append(flag)
        elif v is not False and v is not None:
            out += [flag, str(v)]
    return out


@pytest.fixture
def start_collector(tmp_path: Path) -> Iterator[Callable[..., CollectorProc]]:
    procs: list[CollectorProc] = []

    def start(sim: Any, lake: Path | None = None, **kw: Any) -> CollectorProc:
        popen = kw.pop("popen", {})
        extra_env = kw.pop("env", None)
        kw.setdefault("symbols", ",".join(sim.cfg.symbols))
        args = collector_args(**kw)
        log = tmp_path / "collector.log"
        proc = CollectorProc(lake or tmp_path / "lake", sim, args, log, extra_env, **popen)
        procs.append(proc)
        return proc

    yield start
    for p in procs:
        if p.proc.poll() is None:
            p.proc.kill()
            p.wait(10)


@pytest.fixture
def sim_factory() -> Iterator[Callable[..., Any]]:
    threads: list[SimulatorThread] = []

    def make(**kw: Any) -> Any:
        th = SimulatorThread(SimConfig(**kw)).start()
        threads.append(th)
        return th

    yield make
    for th in threads:
        th.stop()


# reading the lake ------------------------------------------------------------------------------
def part_bytes(path: Path) -> bytes:
    comp = parse_part_name(path.name).compression  # type: ignore[union-attr]
    data = path.read_bytes()
    if comp == "gzip":
        return gzip.decompress(data)
    if comp == "zstd":
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return data


def sealed_parts(lake: Path) -> list[Path]:
    root = lake / "raw"
    out = []
    for p in sorted(root.rglob("part-*")):
        parsed = parse_part_name(p.name)
        if parsed is not None and not parsed.is_open:
            out.append(p)
    return out


def open_parts(lake: Path) -> list[Path]:
    return [p for p in (lake / "raw").rglob("*.open")]


def read_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of a sealed part; fails the test on a torn or unparseable line."""
    data = part_bytes(path)
    assert data == b"" or data.endswith(b"\n"), f"{path} does not end with a newline"
    out = []
    for i, line in enumerate(data.split(b"\n")[:-1]):
        try:
            out.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            raise AssertionError(f"{path}:{i + 1} is not a whole JSON line: {line[:80]!r}") from exc
    return out


def symbol_lines(lake: Path, symbol: str) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    for p in sealed_parts(lake):
        if p.parent.parent.name == symbol:
            lines += read_lines(p)
    return lines


def trade_ids_in_lake(lake: Path, symbol: str, stream: str = "trade") -> list[int]:
    """Every trade id of ``symbol`` in the sealed files, live and repaired (with repeats)."""
    ids = []
    live_key = "t" if stream == "trade" else "a"
    for rec in symbol_lines(lake, symbol):
        if rec.get("stream") != f"{symbol.lower()}@{stream}":
            continue
        key = "id" if rec.get("rest") == "historicalTrades" else live_key
        ids.append(rec["data"][key])
    return ids


def book_ids_in_lake(lake: Path, symbol: str) -> list[int]:
    return [
        rec["data"]["u"]
        for rec in symbol_lines(lake, symbol)
        if rec.get("stream") == f"{symbol.lower()}@bookTicker"
    ]


def sessions(lake: Path, symbol: str) -> list[dict[str, Any]]:
    return [r for r in symbol_lines(lake, symbol) if "session" in r]
