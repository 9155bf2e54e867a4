"""The daily report renders its sections and real PNG charts, embedded as data URIs."""

from __future__ import annotations

import base64
import io
import re
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from crypto_lake.lib.core.fsutil import atomic_path
from crypto_lake.lib.core.paths import LakeLayout
from crypto_lake.lib.qa.config import QAConfig
from crypto_lake.lib.qa.pipeline import run_qa_files
from crypto_lake.lib.qa.report import build_day_report, minute_series, render_report
from crypto_lake.simulator.anomalies import AnomalyPlan
from crypto_lake_tests.qa.conftest import DAY, make_day, window_of

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DATA_URI = re.compile(r"!\[([^\]]*)\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)")


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> LakeLayout:
    layout = LakeLayout(tmp_path_factory.mktemp("lake"))
    plans = {
        "BTCUSDT": AnomalyPlan.market(jumps=2, blowouts=1, spikes=1, stale=0),
        "ETHUSDT": AnomalyPlan.market(jumps=1, blowouts=0, spikes=0, stale=0).with_counts(
            r2_nonpositive_price=1
        ),
    }
    for symbol, plan in plans.items():
        bars, _ = make_day(symbol, plan, seconds=2 * 3600)
        path = layout.market_partition_dir("bars_1s", symbol, DAY) / "part-0.parquet"
        with atomic_path(path, durable=False) as tmp:
            pq.write_table(bars, tmp)
        run_qa_files(layout, symbol, DAY, window_of(bars), QAConfig())
    return layout


def test_report_has_sections_and_one_png_chart_per_symbol(lake: LakeLayout):
    markdown, path = build_day_report(lake, DAY)
    assert Path(path) == lake.qa_report_path(DAY)
    assert Path(path).read_text(encoding="utf-8") == markdown
    for heading in (
        f"# QA report {DAY}",
        "## Verdicts",
        "## Top symbols by anomalies",
        "## Detector statistics",
        "## Violations by severity",
        "## Charts",
    ):
        assert heading in markdown
    assert "| ETHUSDT | **FAIL** |" in markdown  # the zero price is a critical R2 break
    assert "**R2**" in markdown
    charts = DATA_URI.findall(markdown)
    assert [alt.split()[0] for alt, _ in charts] == ["BTCUSDT", "ETHUSDT"]
    for _, b64 in charts:
        png = base64.b64decode(b64)
        assert png.startswith(PNG_MAGIC)
        width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
        assert (width, height) == (800, 448)
        with Image.open(io.BytesIO(png)) as img:
            colours = img.convert("RGB").getcolors(maxcolors=1 << 16)
        # Blue price, orange/purple/red markers, grey/green spread, brown volume: not blank.
        assert len(colours) > 16


def test_report_is_a_pure_function_of_its_inputs(lake: LakeLayout):
    from crypto_lake.lib.qa.pipeline import load_bars, read_qa

    tables = [read_qa(lake, k, DAY) for k in ("verdicts", "violations", "anomalies")]
    bars, _ = make_day("BTCUSDT", None, seconds=1800)
    minutes = {"BTCUSDT": minute_series(bars)}
    stamp = datetime(2026, 11, 21, tzinfo=UTC)
    first = render_report(DAY, *tables, minutes, generated_at=stamp)
    second = render_report(DAY, *tables, minutes, generated_at=stamp)
    assert first == second
    assert load_bars(lake, "BTCUSDT", window_of(bars)).num_rows == 1800


def test_minute_series_survives_corrupt_prices():
    bars, _ = make_day("SOLUSDT", None, seconds=180)
    close = bars["close"].to_pylist()
    close[5], close[70] = float("nan"), None
    bars = bars.set_column(bars.schema.get_field_index("close"), "close", pa.array(close))
    minutes = minute_series(bars)
    assert minutes.num_rows == 3
    assert all(v is not None for v in minutes["close"].to_pylist())


def test_report_without_charts_or_data(tmp_path: Path):
    markdown, _ = build_day_report(LakeLayout(tmp_path), DAY, charts=False)
    assert "Symbol-days: PASS 0, REVIEW 0, FAIL 0." in markdown
    assert "No rule violations." in markdown
    assert "data:image/png" not in markdown
