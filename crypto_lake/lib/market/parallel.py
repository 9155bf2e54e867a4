"""Build several partitions at once.

One tick build keeps both cores busy while it parses, but not while it writes its Parquet
files or runs its SQL; a second build in parallel fills those gaps. Each worker thread keeps
its own tick buffers (``columns.reuse_buffers``) for as long as it lives, so memory grows with
the number of workers, not with the number of partitions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from crypto_lake.lib.market import columns

T = TypeVar("T")
R = TypeVar("R")

PARTITION_WORKERS = 2  # measured best on 2 cores (bench_transform); more only costs memory


def map_partitions(fn: Callable[[T], R], items: Iterable[T], workers: int = PARTITION_WORKERS,
                   ) -> Iterator[tuple[T, R]]:  # fmt: skip
    """(item, fn(item)) for every item, in item order, ``workers`` items at a time. An error
    of fn is raised when its item's turn comes, after the builds started before it."""
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        with columns.reuse_buffers():
            for item in items:
                yield item, fn(item)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="partition",
                            initializer=columns.keep_buffers) as pool:  # fmt: skip
        futures: list[Future] = [pool.submit(fn, item) for item in items]
        try:
            for item, future in zip(items, futures, strict=True):
                yield item, future.result()
        finally:
            for future in futures:
                future.cancel()
