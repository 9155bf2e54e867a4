"""Order book reconstruction from the raw depth lines of one symbol-day (issue 20).

Binance's diff depth events (``@depth@100ms``) and REST snapshots (``/api/v3/depth``) are
replayed with Binance's documented procedure for a local order book into one row per second
(``book_1s``): the top 20 levels per side, mid, microprice, depth and imbalance near the mid,
and whether the row is provably right. Checks ride along: crossed books, bookTicker
agreement at the same update id, and verification snapshots compared level by level.

Modules:

* ``model``: the rules, the result (``BookDay`` and its records), the per-second row layout;
* ``lines``: the plain, strict reader of one raw line (the reference for every line);
* ``reference``: the plain reconstruction (dict books, ``sorted`` per second): the spec;
* ``fast``: the compiled reconstruction (``reconstruct_day``): it streams the files through
  ``scan`` (the line scanner) into ``engine`` (the sequence), with ``levels`` (a book side),
  ``rows``, ``verify`` and ``state``; ``jit`` keys their numba cache on all their sources;
* ``table``: the ``book_1s`` columns (``BOOK_1S``) and the Arrow table of a ``BookDay``;
* ``synthetic`` (with ``sim``, ``synthetic_format``): raw days with a known true book, for
  tests and the benchmark.

``crypto_lake_tests/lib/test_book_*.py`` prove the compiled path equal to the reference
(rows, gaps, checks, quarantine) on random days with faults, and both equal to the true book.
"""
