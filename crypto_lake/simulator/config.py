"""SimConfig: everything that parameterises one simulator instance."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from crypto_lake.lib.core.symbols import validate_symbol


@dataclass
class SimConfig:
    """Simulator settings; symbols are validated before anything else uses them."""

    symbols: list[str] = field(default_factory=lambda: ["BTCUSDT", "ETHUSDT"])
    seed: int = 42
    rate_scale: float = 1.0  # multiplies every symbol's trade/quote rate
    max_connection_age_s: float = 86400.0  # Binance's 24 h forced disconnect
    server_shutdown_notice: bool = False  # send {"e":"serverShutdown"} before the forced cut
    shutdown_notice_lead_s: float | None = None  # default: min(10 s, 20 % of the max age)
    ping_interval_s: float = 20.0
    ping_timeout_s: float = 60.0
    replay_path: Path | str | None = None  # replay a lake raw file instead of the model
    replay_speed: float = 1.0
    rest_weight_limit: int = 6000  # request weight per minute per client IP
    tick_interval_s: float = 0.005  # how often the market loop publishes new events
    max_streams: int = 1024  # per connection, as on Binance
    # SentLog keeps every id sent (what tests compare against). A long-running CLI/demo
    # turns this off so memory stays flat; the count is kept either way.
    record_sent_ids: bool = True
    history_s: float | None = None  # REST ground truth kept this long (None: everything)
    # Deep history (history.py): this many whole UTC days before the start day, plus that
    # day up to the start, served by REST and as public files; 0 = none. Its trade rate is
    # the instrument's realistic rate x history_rate_scale (independent of rate_scale).
    history_days: int = 0
    history_rate_scale: float = 1.0
    # Serve today's public files too (trades up to now); Binance publishes a day after it.
    public_files_include_today: bool = False
    # Order books (book.py) behind @depth@100ms / @depth and /api/v3/depth, for these of the
    # symbols; empty = no book, no depth streams, no depth endpoint (the market is unchanged).
    depth_symbols: list[str] = field(default_factory=list)
    depth_levels: int = 200  # levels per side the book keeps around
    # Background updates per second per book, deeper than the touch (on top of the touch's
    # own, one per bookTicker); a busy BTCUSDT book has several hundred.
    depth_changes_per_s: float = 100.0
    depth_history_s: float | None = None  # book ground truth kept this long (None: history_s)

    def __post_init__(self) -> None:
        if isinstance(self.symbols, str):
            self.symbols = [s for s in self.symbols.split(",") if s]
        self.symbols = [validate_symbol(s) for s in self.symbols]
        if isinstance(self.depth_symbols, str):
            self.depth_symbols = [s for s in self.depth_symbols.split(",") if s]
        self.depth_symbols = [validate_symbol(s) for s in self.depth_symbols]
        if not self.symbols and self.replay_path is None:
            raise ValueError("at least one symbol is required")
        if len(set(self.symbols)) != len(self.symbols):
            raise ValueError("duplicate symbols")
        if self.rate_scale <= 0 or self.replay_speed <= 0:
            raise ValueError("rate_scale and replay_speed must be > 0")
        if self.ping_interval_s <= 0 or self.ping_timeout_s <= 0 or self.max_connection_age_s <= 0:
            raise ValueError("ping interval/timeout and max connection age must be > 0")
        if self.history_days < 0 or self.history_rate_scale <= 0:
            raise ValueError("history_days must be >= 0 and history_rate_scale > 0")
        if len(set(self.depth_symbols)) != len(self.depth_symbols):
            raise ValueError("duplicate depth symbols")
        if unknown := set(self.depth_symbols) - set(self.symbols):
            raise ValueError(f"depth symbols {sorted(unknown)} are not among the symbols")
        if self.depth_levels < 1 or self.depth_changes_per_s < 0:
            raise ValueError("depth_levels must be >= 1 and depth_changes_per_s >= 0")
        if self.replay_path is not None:
            if self.history_days:
                raise ValueError("history needs the market model, not a replay")
            if self.depth_symbols:
                raise ValueError("order books need the market model, not a replay")
            self.replay_path = Path(self.replay_path)

    @property
    def depth_retention_s(self) -> float | None:
        """How long book ground truth is kept (None: everything)."""
        return self.depth_history_s if self.depth_history_s is not None else self.history_s

    @property
    def notice_lead_s(self) -> float:
        if self.shutdown_notice_lead_s is not None:
            return self.shutdown_notice_lead_s
        return min(10.0, 0.2 * self.max_connection_age_s)
