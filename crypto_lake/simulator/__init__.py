"""A loopback Binance spot exchange for the demo, the tests and the benchmarks (SPEC §4, §8a).

``ExchangeSimulator`` serves combined WebSocket streams (``/stream?streams=...``), REST
(``/api/v3/...``) and Binance's public files (``/data/spot/...``, public_files.py) on one
aiohttp port, driven by a seeded market model (market.py) or by a replayed raw file
(replay.py), with fault knobs (faults.py) and a log of what it sent (sentlog.py). With
``SimConfig.history_days`` the model also has a deep, deterministic history before its start
(history.py), which REST and the public files serve as one tape with the live trades
(tape.py). ``SimulatorThread`` runs it on a background event loop; ``python -m
crypto_lake.simulator`` (cli.py) runs it from the command line.

Behaviour worth knowing (where Binance leaves room, this is what the simulator does):

* Streams: ``<symbol>@trade``, ``@aggTrade``, ``@bookTicker`` for configured symbols only;
  anything else is HTTP 400 before the upgrade. ``timeUnit=MICROSECOND`` switches E/T to µs.
  Client text messages (SUBSCRIBE...) and raw ``/ws/<stream>`` paths are not supported.
* Order books (book.py), only with ``SimConfig.depth_symbols``: ``@depth@100ms`` and
  ``@depth`` (1 s) diff events and ``/api/v3/depth`` (weight by limit, cut at 5000); other
  symbols' depth streams are accepted and quiet. The book's update ids are bookTicker's ``u``
  (a bookTicker shows the book's best levels after its u; trades happen at them).
  ``order_book(symbol)`` is the ground truth (after any update id, at the end of any second,
  kept for ``depth_history_s``). Faults: ``depth_drop``, ``depth_reorder``,
  ``depth_stale_snapshot``. Without depth symbols the market is byte-for-byte unchanged
  (a replay accepts depth streams and sends the file's recorded diff events).
* Pings every ``ping_interval_s``; only a pong echoing a ping's payload counts, and a
  connection without one for ``ping_timeout_s`` is cut. Connections are closed (code 1000)
  at ``max_connection_age_s``; with ``server_shutdown_notice`` a bare
  ``{"e":"serverShutdown","E":...}`` frame comes ``shutdown_notice_lead_s`` earlier.
* Faults: ``drop_connections`` aborts the TCP connection (no close frame);
  ``stall_connections`` makes open connections silent (data published meanwhile is lost to
  them, pings are neither sent nor answered); ``skip_trade_ids`` withholds the next n trades
  (and the aggTrades holding them) from every socket while REST keeps them; duplicates and
  reorders are per connection; a malformed frame is a truncated copy sent *in addition* to
  the real message; ``refuse_connections`` answers 503 before the upgrade; ``rest_429`` and
  ``rest_418_after_ignored`` drive Binance's ban escalation (weights as documented, 6000/min).
* REST answers come from the same ledger as the streams: klines rebuilt from streamed trades
  equal REST klines exactly (integer ticks/lots; see queries.py for the empty-interval and
  window rules). ``pause_market``/``resume_market`` freeze trading (maintenance) so tests can
  compare "everything sent" with "everything received".
* History ids run consecutively into the live ledger's first ids; history prices walk
  backward from the live start price, so the tape is continuous. Public files exist for
  whole past days (today too with ``public_files_include_today``), from the history's first
  day on, in ms before 2025-01-01 and µs after; they use no request weight. File faults:
  ``public_file_missing`` (404 n times), ``public_file_bad_checksum``,
  ``public_file_truncated``, ``public_file_header_row``.
* SentLog counts a frame once its bytes left the process (transport buffer empty), so it
  never claims a frame the client could not have read.
"""

from crypto_lake.simulator.config import SimConfig
from crypto_lake.simulator.public_files import synthetic_day_zip
from crypto_lake.simulator.server import ExchangeSimulator
from crypto_lake.simulator.thread import SimulatorThread

__all__ = ["ExchangeSimulator", "SimConfig", "SimulatorThread", "synthetic_day_zip"]
