"""R1-R7: silent on clean data, firing on each crafted violation; the Markdown report; the CLI."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from crypto_lake.lib.core.parquet_out import write_parquet
from crypto_lake.lib.market.klines import write_klines
from crypto_lake.lib.qa.rules import (
    SEVERITY,
    evaluate_rules,
    main,
    overall_verdict,
    render_rules_report,
    violation_rows,
)
from crypto_lake_tests.lib import rawgen


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    trades, quotes = rawgen.make_trades(600, seed=21), rawgen.make_quotes(80, seed=22)
    root = tmp_path_factory.mktemp("rules")
    part = rawgen.build_partition(root, rawgen.clean_lines(trades, quotes))
    klines = part.layout.market_partition_dir("klines_1m", "BTCUSDT", rawgen.DAY) / "k.parquet"
    write_klines(rawgen.rest_klines(trades), klines, symbol="BTCUSDT")
    return part, klines, trades


def _mutate(src: Path, dst: Path, sql: str) -> Path:
    """Copy a bars file through a DuckDB SELECT that injects a violation."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    table = con.sql(sql.replace("BARS", f"read_parquet('{src}')")).to_arrow_table()
    write_parquet(table, dst)
    return dst


def test_clean_partition_passes_every_rule(clean):
    part, klines, _ = clean
    results = evaluate_rules(part.bars, klines, part.trades)
    assert [r for r in results.values() if not r.passed] == []
    assert not results["R7"].skipped and results["R7"].checked == 1440
    assert results["R1"].checked == 86_400
    assert overall_verdict(results) == "PASS"


CASES = {
    # rule: (SELECT over BARS with a row number n, minimum violations)
    "R1": ("SELECT * REPLACE (CASE WHEN n = 1000 THEN high + 1 ELSE open END AS open)", 1),
    "R2": ("SELECT * REPLACE (CASE WHEN n IN (5, 6) THEN 0 ELSE low END AS low)", 2),
    "R3": ("SELECT * REPLACE (CASE WHEN n = 80000 THEN bid - 1 ELSE ask END AS ask)", 1),
    "R4": ("SELECT * REPLACE (CASE WHEN n = 40000 THEN NULL ELSE close END AS close)", 1),
    "R5": ("SELECT * EXCLUDE (n) FROM t WHERE n <> 300 UNION ALL "
           "SELECT * EXCLUDE (n) FROM t WHERE n = 9", 2),
    "R6": ("SELECT * REPLACE (CASE WHEN n % 100 = 0 THEN 600.0 ELSE spread_bps END "
           "AS spread_bps)", 800),
}  # fmt: skip


def _crafted(bars: Path, tmp_path: Path, rule: str) -> Path:
    """A copy of ``bars`` with the CASES violation of ``rule`` injected."""
    select, _ = CASES[rule]
    if rule == "R5":
        sql = (
            f"WITH t AS (SELECT *, row_number() OVER (ORDER BY window_start) n FROM BARS) {select}"
        )
    else:
        sql = (f"WITH t AS (SELECT *, row_number() OVER (ORDER BY window_start) n FROM BARS) "
               f"{select.replace('SELECT * REPLACE', 'SELECT * EXCLUDE (n) REPLACE')} FROM t "
               "ORDER BY window_start")  # fmt: skip
    return _mutate(bars, tmp_path / "bad.parquet", sql)


@pytest.mark.parametrize("rule", sorted(CASES))
def test_rule_fires_on_crafted_violation(clean, tmp_path, rule):
    part, _, _ = clean
    _, minimum = CASES[rule]
    bad = _crafted(part.bars, tmp_path, rule)
    results = evaluate_rules(bad, None, None)
    r = results[rule]
    assert not r.passed and r.violations >= minimum, r
    assert r.worst_rows, "the offending rows are named"
    others = [x.rule for x in results.values() if not x.passed and x.rule != rule]
    # R1/R2 injections may also trip the other price rule; nothing else may fire.
    assert set(others) <= {"R1", "R2", "R4"} - {rule}
    report = render_rules_report(results, "crafted")
    assert f"## {rule}: top offending rows" in report
    expected = "FAIL" if r.severity == "critical" else "INVESTIGATE"
    assert f"**Overall: {expected}**" in report


@pytest.mark.parametrize("rule", sorted(CASES))
def test_violation_rows_are_the_rows_behind_each_failing_rule(clean, tmp_path, rule):
    """QA's rows and the checks' results come from the same flags: the rules with rows are
    exactly the rules that fail, with the rules' severities."""
    part, _, _ = clean
    bad = _crafted(part.bars, tmp_path, rule)
    results = evaluate_rules(bad)
    rows = violation_rows(bad)
    assert set(rows["rule"].to_pylist()) == {r.rule for r in results.values() if not r.passed}
    assert {(r["rule"], r["severity"]) for r in rows.to_pylist()} <= set(SEVERITY.items())
    mine = [r for r in rows.to_pylist() if r["rule"] == rule]
    if rule == "R5":  # one row per run of missing seconds: the gap's length is on it
        gap = [r for r in mine if r["detail"] == "1 missing seconds"]
        assert [(r["ts"].isoformat(), r["seconds"]) for r in gap] == [
            ("2024-03-01T00:04:59+00:00", 1)
        ]
    else:
        assert len(mine) == results[rule].violations


def test_nan_price_is_r4_not_r1(clean, tmp_path):
    """SPEC R4: no NaN in O/H/L/C. DuckDB sorts NaN above every number, and its isnan() is
    folded to false when Parquet statistics (which skip NaN) are finite: neither may hide it."""
    part, _, _ = clean
    sql = ("WITH t AS (SELECT *, row_number() OVER (ORDER BY window_start) n FROM BARS) "
           "SELECT * EXCLUDE (n) REPLACE (CASE WHEN n = 501 THEN 'nan'::DOUBLE "
           "ELSE close::DOUBLE END AS close) FROM t ORDER BY window_start")  # fmt: skip
    bad = _mutate(part.bars, tmp_path / "nan.parquet", sql)
    results = evaluate_rules(bad)
    assert not results["R4"].passed and results["R4"].violations == 1
    assert results["R1"].passed and results["R2"].passed
    rows = violation_rows(bad)
    assert [(r["rule"], r["ts"].isoformat()) for r in rows.to_pylist()] == [
        ("R4", "2024-03-01T00:08:20+00:00")
    ]


def test_r4_names_the_bad_row(clean, tmp_path):
    part, _, _ = clean
    sql = ("WITH t AS (SELECT *, row_number() OVER (ORDER BY window_start) n FROM BARS) "
           "SELECT * EXCLUDE (n) REPLACE (CASE WHEN n = 40001 THEN NULL ELSE close END AS close) "
           "FROM t ORDER BY window_start")  # fmt: skip
    bad = _mutate(part.bars, tmp_path / "bad.parquet", sql)
    r = evaluate_rules(bad)["R4"]
    assert r.violations == 1
    assert r.worst_rows[0]["window_start"].startswith("2024-03-01T11:06:40")


def test_r5_reports_missing_trade_ids_from_trades(clean, tmp_path):
    part, _, _ = clean
    sql = "SELECT * FROM BARS WHERE trade_id NOT IN (10150, 10151, 10152) ORDER BY ts_event"
    trades = _mutate(part.trades, tmp_path / "t.parquet", sql)
    r = evaluate_rules(part.bars, None, trades)["R5"]
    assert not r.passed and r.violations == 1
    assert r.worst_rows[0]["first_missing"] == 10150 and r.worst_rows[0]["last_missing"] == 10152


def test_r7_detects_kline_mismatch_and_skips_without_klines(clean, tmp_path):
    part, _, trades = clean
    rows = rawgen.rest_klines(trades)
    rows[3] = [*rows[3][:5], str(Decimal(rows[3][5]) + Decimal("0.00000001")),
               *rows[3][6:]]  # fmt: skip
    bad = tmp_path / "k.parquet"
    write_klines(rows, bad, symbol="BTCUSDT")
    r7 = evaluate_rules(part.bars, bad)["R7"]
    assert not r7.passed and r7.violations == 1
    assert r7.worst_rows[0]["bar_volume"] != r7.worst_rows[0]["kl_volume"]
    skipped = evaluate_rules(part.bars)["R7"]
    assert skipped.skipped and skipped.passed


def test_cli_prints_report(clean, capsys):
    part, _, _ = clean
    code = main(["--lake", str(part.layout.root), "--symbol", "BTCUSDT", "--date", rawgen.DAY])
    out = capsys.readouterr().out
    assert code == 0
    assert "**Overall: PASS**" in out and "| R7 | major |" in out


def test_cli_rejects_bad_symbol_and_missing_partition(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--lake", str(tmp_path), "--symbol", "../etc", "--date", rawgen.DAY])
    assert main(["--lake", str(tmp_path), "--symbol", "BTCUSDT", "--date", rawgen.DAY]) == 2


def test_r7_ignores_todays_open_minute(clean, tmp_path):
    """Intraday the grid ends mid-minute: that minute and later klines are not compared."""
    from crypto_lake.lib.market.bars import build_bars_1s

    part, klines, _ = clean
    end_us = (rawgen.DAY_START_MS + 10 * 60_000 + 30_000) * 1000  # 00:10:30
    bars = tmp_path / "b.parquet"
    stats = build_bars_1s(part.trades, part.quotes, "BTCUSDT", rawgen.DAY, bars, end_us=end_us)
    assert stats.rows == 630 and not stats.grid_complete
    r7 = evaluate_rules(bars, klines)["R7"]
    assert r7.passed and r7.checked == 10


def test_r7_minutes_without_trades_or_klines_agree(clean, tmp_path):
    """Before a symbol's first trade the exchange has no kline and our bars have no trade:
    nothing to compare. A missing kline for a minute in which we saw trades still fires."""
    part, _, trades = clean
    rows = rawgen.rest_klines(trades)
    quiet = [r for r in rows if int(r[8]) == 0]
    busy = [r for r in rows if int(r[8]) > 0]
    assert quiet and busy
    without_quiet = tmp_path / "no_quiet.parquet"
    write_klines(busy, without_quiet, symbol="BTCUSDT")
    r7 = evaluate_rules(part.bars, without_quiet)["R7"]
    assert r7.passed and r7.checked == len(busy)
    missing_busy = tmp_path / "missing_busy.parquet"
    write_klines([r for r in rows if r is not busy[0]], missing_busy, symbol="BTCUSDT")
    r7 = evaluate_rules(part.bars, missing_busy)["R7"]
    assert not r7.passed and r7.violations == 1
    assert r7.worst_rows[0]["kl_open"] is None and r7.worst_rows[0]["bar_count"] > 0


def test_r7_stops_at_the_last_closed_kline(clean, tmp_path):
    """Klines fetched intraday end at the last closed minute; our later complete minutes wait
    for the next fetch instead of failing R7."""
    part, _, trades = clean
    rows = rawgen.rest_klines(trades)[:-10]
    early = tmp_path / "early.parquet"
    write_klines(rows, early, symbol="BTCUSDT")
    r7 = evaluate_rules(part.bars, early)["R7"]
    assert r7.passed and r7.checked == len(rows)
