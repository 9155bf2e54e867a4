"""Duplicate ticks and trade id conflicts.

Trades are unique by trade id (aggTrade input: by aggregate id), quotes by update id. A live
copy wins over a REST-repaired one, which wins over one from Binance's public daily file
(the flags row sorts them: ``flags >> 1`` is 0, 1, 2); among equals the earliest received
wins. Copies of one trade id that disagree on what the exchange said (trade time, price,
qty, maker side) are a *conflict*: the same copy is kept, but every copy is quarantined,
counted and saved for the partition's blocking check (``load_trade_conflicts``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson

from crypto_lake.lib.core.fsutil import atomic_write_bytes
from crypto_lake.lib.core.paths import LakeLayout
from crypto_lake.lib.core.symbols import validate_day, validate_symbol
from crypto_lake.lib.raw import fastparse

MAX_LISTED_CONFLICTS = 100  # conflicting trade ids listed in TickStats and the saved state
SOURCES = ("live", "repair", "archive")  # trades.source, indexed by flags >> 1


def dedup_sorted(
    m: np.ndarray, ids: int, first: int, keys, differ=None
) -> tuple[np.ndarray, int, np.ndarray]:
    """Rows unique by id, sorted by (row ``first``, id); how many rows were dropped; and the
    rows of ids whose copies conflict, grouped by id with the kept copy first.

    Of rows sharing an id the first by ``keys(m)`` (sort keys, most significant first) is
    kept, exactly like the SQL ``DISTINCT ON (id) ... ORDER BY keys``. Live data arrives in
    output order with increasing ids: that is checked in O(n) and costs no sort; otherwise
    stable sorts (fast on nearly sorted input) do the work, and the full key comparison runs
    only over the duplicated ids. ``differ(a, b)``, given two matrices of rows, says per
    column whether those two copies of one record disagree; every copy of an id with any
    such pair conflicts (none when ``differ`` is None).
    """
    n = m.shape[1]
    conflicts = m[:, :0]
    if n < 2:
        return m, 0, conflicts
    i, f = m[ids], m[first]
    if np.all(i[1:] > i[:-1]) and np.all(f[1:] >= f[:-1]):
        return m, 0, conflicts  # unique ids, already in (first, id) order
    by_id = np.argsort(i, kind="stable")
    sid = i[by_id]
    dup = sid[1:] == sid[:-1]
    dropped = 0
    if dup.any():
        in_group = np.zeros(n, dtype=bool)
        in_group[1:] |= dup
        in_group[:-1] |= dup
        cand = by_id[in_group]
        cand = cand[np.lexsort(keys(m[:, cand])[::-1])]  # grouped by id, best first
        c_ids = m[ids, cand]
        loser = np.zeros(len(cand), dtype=bool)
        loser[1:] = c_ids[1:] == c_ids[:-1]
        if differ is not None:  # each copy against its group's kept one
            c = m[:, cand]
            kept = np.maximum.accumulate(np.where(loser, 0, np.arange(len(cand))))
            disagree = loser & differ(c, c[:, kept])
            if disagree.any():
                conflicts = c[:, np.isin(c_ids, c_ids[disagree])]
        keep = np.ones(n, dtype=bool)
        keep[cand[loser]] = False
        dropped = int(np.count_nonzero(loser))
        m = m[:, keep]
        i, f = m[ids], m[first]
    order = np.argsort(i, kind="stable")
    order = order[np.argsort(f[order], kind="stable")]
    return m[:, order], dropped, conflicts


def trades_differ(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per column: whether two copies of a trade (rows as TRADE_COLUMNS) disagree on what
    the exchange said: trade time, price, qty or maker side. Receive time, connection, the
    repaired flag and aggregate ids may differ between a live line and its REST repair (or
    its copy in the public daily file). The
    time is compared to the millisecond when either copy may come from a ms-unit line (its
    µs time is a whole ms): a µs stream repaired with ms REST times is the same trade."""
    ta, tb = a[5], b[5]
    coarse = (ta % 1000 == 0) | (tb % 1000 == 0)
    times = np.where(coarse, ta // 1000 != tb // 1000, ta != tb)
    side = ((a[8] ^ b[8]) & fastparse.FLAG_IBM) != 0
    return times | (a[6] != b[6]) | (a[7] != b[7]) | side


def conflict_copies(rows: np.ndarray) -> list[dict]:
    """Each copy of a conflicting trade id (rows grouped by id, the kept copy first) as a
    quarantine record: its parsed values and how it was received."""
    out, previous = [], None
    for r in rows.T.tolist():  # conflicts are rare: plain Python is fine
        archive = bool(r[8] & fastparse.FLAG_ARCHIVE)
        out.append({
            "reason": "trade id conflict", "trade_id": r[2],
            "kept": r[2] != previous, "ts_event_us": r[5],
            "price": _units_text(r[6]), "qty": _units_text(r[7]),
            "is_buyer_maker": bool(r[8] & fastparse.FLAG_IBM),
            "recv_us": None if archive else r[1],
            "repaired": bool(r[8] & fastparse.FLAG_REPAIRED),
            "source": SOURCES[r[8] >> 1],
            "first_trade_id": r[3], "last_trade_id": r[4],
        })  # fmt: skip
        previous = r[2]
    return out


def _units_text(units: int) -> str:
    """An integer of 1e-8 as its exact decimal text."""
    sign, units = ("-" if units < 0 else ""), abs(units)
    return f"{sign}{units // 100_000_000}.{units % 100_000_000:08d}"


def trade_conflicts_path(layout: LakeLayout, symbol: str, day: str) -> Path:
    """Where a build saves the trade id conflicts of (symbol, day) for the blocking check."""
    name = f"{validate_day(day)}.json"
    return layout.state_dir / "conflicts" / f"symbol={validate_symbol(symbol)}" / name


def save_trade_conflicts(
    path: Path, symbol: str, day: str, conflicts: int, listed_ids: list[int], copies: list[dict]
) -> None:
    """The day's ``conflicts`` (how many ids), rewritten by every build ([] when none, so a
    rebuild that resolves them clears the check): the count and, per id of ``listed_ids``,
    its ``copies`` (``conflict_copies``)."""
    listed: dict[int, list[dict]] = {i: [] for i in listed_ids}
    for c in copies:
        if c["trade_id"] in listed:
            listed[c["trade_id"]].append({k: v for k, v in c.items() if k != "reason"})
    data = {"symbol": symbol, "day": day, "trade_id_conflicts": conflicts,
            "conflicts": [{"trade_id": i, "copies": c} for i, c in listed.items()]}  # fmt: skip
    atomic_write_bytes(path, orjson.dumps(data), durable=False)


def load_trade_conflicts(layout: LakeLayout, symbol: str, day: str) -> list[dict]:
    """The trade id conflicts the last build of (symbol, day) saved, one dict per id
    (``{"trade_id", "copies": [...]}``, at most MAX_LISTED_CONFLICTS); [] when it found none
    or saved nothing. An unreadable file is one entry with ``trade_id`` None and an
    ``error``, so a check fails on it rather than passing."""
    path = trade_conflicts_path(layout, symbol, day)
    try:
        return list(orjson.loads(path.read_bytes())["conflicts"])
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [{"trade_id": None, "copies": [], "error": f"unreadable {path}: {exc!r}"}]
