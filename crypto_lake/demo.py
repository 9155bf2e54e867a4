"""The demo: exchange simulator + collector + Dagster on loopback, no network needed.

``./dev demo`` runs this. It first compiles numba's cache (``lib/market/warmup.py``; a second
once it exists), then starts, each in its own process group:

1. the exchange simulator (``python -m crypto_lake.simulator``) on an ephemeral loopback port;
2. the Yahoo stand-in (``python -m crypto_lake.simulator.yahoo``), also on loopback, which
   ``macro.yahoo_base_url`` points the macro assets at: macro minutes and the synthetic DXY
   of today and the catch-up days come from it, never from the real Yahoo;
3. the collector daemon writing raw files into the demo lake, pointed at the simulator;
4. ``dagster dev`` (webserver on 127.0.0.1 + daemon) with compressed schedules,

prints where to look, and stops everything on Ctrl+C (or after ``--duration`` seconds).
Once today's first 1-second bars exist it asks Dagster (as a user would in the UI) for
today's QA report (``qa_daily_job``), and again every ``--report-every`` seconds, so the
report is there within minutes instead of after midnight.

The order book of ``--depth-symbols`` (default BTCUSDT) is recorded too (diff events and REST
snapshots), so ``book_1s`` and its checks fill in as the book refresh sensor runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from crypto_lake.lib.core.logs import setup_logging
from crypto_lake.lib.core.paths import LakeLayout

ROOT = Path(__file__).resolve().parents[1]
DEMO_SYMBOLS = "BTCUSDT,ETHUSDT,SOLUSDT,BNBUSDT,XRPUSDT,DOGEUSDT,ADAUSDT"
log = setup_logging().getChild("demo")


@dataclass
class Fleet:
    """The demo's child processes; each leads its own process group so Ctrl+C stops all."""

    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(
        self, name: str, argv: list[str], env: dict[str, str], logfile: Path, cwd: Path = ROOT
    ) -> None:
        log.info("starting %s: %s (log: %s)", name, " ".join(argv), logfile)
        out = open(logfile, "ab")  # noqa: SIM115 - owned by the child for its lifetime
        self.procs[name] = subprocess.Popen(
            argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )

    def dead(self) -> list[str]:
        return [n for n, p in self.procs.items() if p.poll() is not None]

    def stop(self, timeout: float = 15.0) -> None:
        for name, proc in reversed(list(self.procs.items())):
            if proc.poll() is None:
                log.info("stopping %s", name)
                _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for name, proc in self.procs.items():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in time; killing it", name)
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
        # dagster dev leaves grandchildren in its group: make sure the whole group is gone.
        for proc in self.procs.values():
            _signal_group(proc, signal.SIGKILL)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def _wait_for_file(path: Path, fleet: Fleet, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        if fleet.dead():
            raise RuntimeError(f"{fleet.dead()} exited during start-up; see the logs in the lake")
        time.sleep(0.2)
    raise TimeoutError(f"{path} did not appear within {timeout} s")


LAUNCH_RUN = """
mutation DemoLaunch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""


def launch_job(port: int, job: str, tags: dict[str, str]) -> str:
    """Launch a run of ``job`` through the webserver's GraphQL API (what the UI's launchpad
    does); returns the answer's type name (``LaunchRunSuccess`` when it was queued)."""
    params = {
        "selector": {"repositoryLocationName": "crypto_lake",
                     "repositoryName": "__repository__", "jobName": job},
        "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
    }  # fmt: skip
    body = json.dumps({"query": LAUNCH_RUN, "variables": {"params": params}}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        answer = json.loads(resp.read())
    launched = (answer.get("data") or {}).get("launchRun") or {}
    if launched.get("__typename") != "LaunchRunSuccess":
        log.warning("launching %s failed: %s", job, answer)
    return str(launched.get("__typename"))


def today_report_tags(symbols: list[str], day: str) -> dict[str, str]:
    """Tags of a qa_daily_job run over every demo symbol of ``day`` (one ranged run)."""
    return {
        "dagster/asset_partition_range_start": f"{day}|{symbols[0]}",
        "dagster/asset_partition_range_end": f"{day}|{symbols[-1]}",
        "crypto_lake/trigger": "demo",
    }


@dataclass
class ReportRequester:
    """Asks for today's QA report once today's bars_1s of every symbol exist, then again
    every ``every`` seconds (the daily schedule builds yesterday's report after midnight)."""

    lake: Path
    symbols: list[str]
    port: int
    every: float
    next_at: float = 0.0

    def bars_ready(self, day: str) -> bool:
        layout = LakeLayout(self.lake)
        return all(layout.market_file("bars_1s", s, day).exists() for s in self.symbols)

    def poll(self) -> None:
        """Request the report when it is due and today's bars exist; never raises."""
        if time.monotonic() < self.next_at:
            return
        day = datetime.now(UTC).date().isoformat()
        if not self.bars_ready(day):
            self.next_at = time.monotonic() + 5
            return
        try:
            answer = launch_job(self.port, "qa_daily_job", today_report_tags(self.symbols, day))
        except (OSError, ValueError) as exc:  # webserver still starting, or busy
            log.info("QA report for %s not requested yet (%s); retrying", day, exc)
            self.next_at = time.monotonic() + 10
            return
        ok = answer == "LaunchRunSuccess"
        if ok:
            log.info("requested today's QA report (%s): qa_daily_job over %s", day, self.symbols)
        self.next_at = time.monotonic() + (self.every if ok else 30)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="./dev demo", description=__doc__.splitlines()[0])
    p.add_argument("--lake", type=Path, default=ROOT / "lake-demo", help="demo lake root")
    p.add_argument("--symbols", default=DEMO_SYMBOLS, help="comma-separated symbols")
    p.add_argument(
        "--depth-symbols",
        default="BTCUSDT",
        help="symbols whose order book is recorded and rebuilt (book_1s); '' for none",
    )
    p.add_argument("--port", type=int, default=3000, help="Dagster web UI port on 127.0.0.1")
    p.add_argument("--rotate-seconds", type=float, default=15.0, help="raw file rotation")
    p.add_argument("--no-dagster", action="store_true", help="only simulator + collector")
    p.add_argument("--fresh", action="store_true", help="delete the demo lake first")
    p.add_argument("--duration", type=float, default=0, help="stop after N seconds (0: Ctrl+C)")
    p.add_argument("--outage-at", type=float, default=20.0,
                   help="the exchange drops every connection this many seconds after the start, "
                        "so the UI shows a real outage (0: none)")  # fmt: skip
    p.add_argument("--outage-seconds", type=float, default=15.0, help="how long it lasts")
    p.add_argument("--report-every", type=float, default=600.0,
                   help="rebuild today's QA report this often, in seconds")  # fmt: skip
    return p.parse_args(argv)


def _warm_numba(py: str, env: dict[str, str]) -> None:
    """numba's cache compiled before the first run needs it (``lib/market/warmup.py``): a
    second when it is there, about a minute on a fresh machine, when the demo's first market
    and book runs would otherwise each compile it while the clock runs."""
    print("compiling numba's kernels into its cache (once: about a minute on a fresh "
          "machine) ...", flush=True)  # fmt: skip
    done = subprocess.run([py, "-m", "crypto_lake.lib.market.warmup"], env=env, cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    if done.returncode:
        log.warning("numba warm-up failed (exit %d), the first runs compile instead:\n%s",
                    done.returncode, done.stdout[-2000:])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    lake: Path = args.lake.resolve()
    if args.fresh and lake.exists():
        shutil.rmtree(lake)
    (lake / "logs").mkdir(parents=True, exist_ok=True)
    home = lake / "dagster_home"
    home.mkdir(exist_ok=True)
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    if not args.no_dagster:
        from crypto_lake.defs.pools import prepare_home

        prepare_home(home)  # one run per pool from the first queued run on
    env = {
        **os.environ,
        "LAKE_ROOT": str(lake),
        "DAGSTER_HOME": str(home),
        "CRYPTO_LAKE__SYMBOLS": f"[{args.symbols}]",
        "CRYPTO_LAKE__COLLECTOR__DEPTH__SYMBOLS": f"[{args.depth_symbols}]",
        # a verification snapshot every 2 minutes, so book_1s shows them soon
        "CRYPTO_LAKE__COLLECTOR__DEPTH__VERIFY_INTERVAL_MINUTES": "2",
        # compressed automation: refresh today's partitions every 30 s (the minimum)
        "CRYPTO_LAKE__DAGSTER__REFRESH_INTERVAL_SECONDS": "30",
        "PYTHONUNBUFFERED": "1",
    }
    py = sys.executable
    if not args.no_dagster:
        _warm_numba(py, env)
    fleet = Fleet()
    stop_requested = False

    def _request_stop(signum: int, _frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGINT, _request_stop)
    signal.signal(signal.SIGTERM, _request_stop)
    try:
        port_file = lake / "state" / "simulator.port"
        port_file.parent.mkdir(parents=True, exist_ok=True)
        port_file.unlink(missing_ok=True)
        outage = ["--outage", f"{args.outage_at}:{args.outage_seconds}"] if args.outage_at else []
        fleet.start(
            "simulator",
            [py, "-m", "crypto_lake.simulator", "--symbols", args.symbols, "--port", "0",
             "--port-file", str(port_file), *outage, "--depth-symbols", args.depth_symbols,
             # a week of history before now, and Binance's public files of it (try a
             # history_import_job backfill, or `crypto-lake history`)
             "--history-days", "7", "--history-rate-scale", "0.05"],
            env, lake / "logs" / "simulator.log",
        )  # fmt: skip
        sim_port = int(_wait_for_file(port_file, fleet, 30))
        urls = {"ws": f"ws://127.0.0.1:{sim_port}", "rest": f"http://127.0.0.1:{sim_port}"}
        # Macro data from the loopback Yahoo stand-in: the demo needs no network.
        yahoo_port_file = lake / "state" / "yahoo.port"
        yahoo_port_file.unlink(missing_ok=True)
        fleet.start(
            "yahoo",
            [py, "-m", "crypto_lake.simulator.yahoo", "--port", "0",
             "--port-file", str(yahoo_port_file)],
            env, lake / "logs" / "yahoo.log",
        )  # fmt: skip
        urls["yahoo"] = f"http://127.0.0.1:{int(_wait_for_file(yahoo_port_file, fleet, 30))}"
        env["CRYPTO_LAKE__MACRO__YAHOO_BASE_URL"] = urls["yahoo"]
        env["CRYPTO_LAKE__BINANCE__WS_BASE_URL"] = urls["ws"]
        env["CRYPTO_LAKE__BINANCE__REST_BASE_URL"] = urls["rest"]
        env["CRYPTO_LAKE__BINANCE__PUBLIC_DATA_URL"] = urls["rest"]
        env["CRYPTO_LAKE__COLLECTOR__ROTATE_SECONDS"] = str(args.rotate_seconds)
        env["CRYPTO_LAKE__COLLECTOR__METRICS_PORT"] = "0"
        fleet.start(
            "collector", [py, "-m", "collector_daemon"], env, lake / "logs" / "collector.log"
        )
        if not args.no_dagster:
            fleet.start(
                "dagster",
                [py, "-m", "dagster", "dev", "-w", str(ROOT / "workspace.yaml"),
                 "-h", "127.0.0.1", "-p", str(args.port)],
                env, lake / "logs" / "dagster.log", cwd=home,
            )  # fmt: skip
        fault = (
            f"  injected fault     : the exchange drops every connection {args.outage_at:.0f} s "
            f"after the start, for {args.outage_seconds:.0f} s: see it in the coverage asset "
            "and in bars_1s.is_outage\n"
            if args.outage_at
            else ""
        )
        print(
            f"\ncrypto_lake demo is running (lake: {lake})\n"
            f"  exchange simulator : {urls['ws']}  {urls['rest']}\n"
            f"  Yahoo stand-in     : {urls['yahoo']} (macro minutes and DXY, no network)\n"
            f"  raw files          : {lake / 'raw' / 'binance'}\n"
            f"  collector heartbeat: {lake / 'state' / 'heartbeat.json'}\n"
            + ("" if args.no_dagster else f"  Dagster UI         : http://127.0.0.1:{args.port}\n")
            + (
                ""
                if args.no_dagster
                else "  QA report          : asset qa_report, today's, requested once the first "
                "bars exist\n"
            )
            + f"  logs               : {lake / 'logs'}\n"
            + fault
            + "Press Ctrl+C to stop everything.\n",
            flush=True,
        )
        started = time.monotonic()
        symbols = [s.strip() for s in args.symbols.split(",") if s.strip()]
        report = ReportRequester(lake, symbols, args.port, args.report_every)
        while not stop_requested:
            if fleet.dead():
                log.error("%s exited unexpectedly; see %s", fleet.dead(), lake / "logs")
                return 1
            if args.duration and time.monotonic() - started > args.duration:
                break
            if not args.no_dagster:
                report.poll()
            time.sleep(0.5)
        return 0
    finally:
        fleet.stop()
        print("crypto_lake demo stopped.", flush=True)


if __name__ == "__main__":
    sys.exit(main())
