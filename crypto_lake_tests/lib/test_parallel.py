"""map_partitions: results in item order, errors at their item's turn, buffers per worker."""

from __future__ import annotations

import threading
import time

import pytest

from crypto_lake.lib.market import columns
from crypto_lake.lib.market.parallel import map_partitions


def test_results_come_in_item_order_and_each_worker_keeps_its_buffers():
    seen: dict[str, set[int]] = {}

    def fn(i: int) -> int:
        time.sleep(0.01 * (5 - i % 5))  # later items often finish first
        bufs = columns.buffers()
        seen.setdefault(threading.current_thread().name, set()).add(id(bufs))
        return i * i

    out = list(map_partitions(fn, range(10), workers=2))
    assert out == [(i, i * i) for i in range(10)]
    assert len(seen) == 2  # two workers, each with one Buffers for all its items
    assert all(len(ids) == 1 for ids in seen.values())


def test_an_error_is_raised_at_its_items_turn():
    done = []

    def fn(i: int) -> int:
        if i == 3:
            raise ValueError("bad partition 3")
        done.append(i)
        return i

    got = []
    with pytest.raises(ValueError, match="bad partition 3"):
        for item, _ in map_partitions(fn, range(6), workers=2):
            got.append(item)
    assert got == [0, 1, 2]


def test_one_worker_runs_in_the_calling_thread_with_reused_buffers():
    ids = [id(b) for _, b in map_partitions(lambda _: columns.buffers(), range(3), workers=1)]
    assert len(set(ids)) == 1
