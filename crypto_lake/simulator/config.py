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

    def __post_init__(self) -> None:
        if isinstance(self.symbols, str):
            self.symbols = [s for s in self.symbols.split(",") if s]
        self.symbols = [validate_symbol(s) for s in self.symbols]
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
        if self.replay_path is not None:
            if self.history_days:
                raise ValueError("history needs the market model, not a replay")
            self.replay_path = Path(self.replay_path)

    @property
    def notice_lead_s(self) -> float:
        if self.shutdown_notice_lead_s is not None:
            return self.shutdown_notice_lead_s
        return min(10.0, 0.2 * self.max_connection_age_s)
