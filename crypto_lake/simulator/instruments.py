"""Per-symbol instrument parameters of the simulated market, and exact decimal formatting.

Prices and quantities live on integer grids (ticks and lots) so every sum the REST API
reports (kline volumes, quote volumes) is exact integer arithmetic. Each instrument keeps
``price decimals + quantity decimals <= 8`` so a price x quantity product is exactly
representable in Binance's 8-decimal strings: no rounding rule is ever needed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from crypto_lake.lib.core.symbols import validate_symbol

E8 = 100_000_000
# Quote assets recognised when splitting a symbol into base/quote for /exchangeInfo.
_QUOTES = ("FDUSD", "USDT", "USDC", "TUSD", "BUSD", "BTC", "ETH", "BNB", "EUR", "TRY", "BRL")


@dataclass(frozen=True)
class Instrument:
    """Static parameters of one simulated symbol."""

    symbol: str
    price: float  # initial mid price
    tick_decimals: int  # tick size = 10**-tick_decimals
    lot_decimals: int  # step size = 10**-lot_decimals
    orders_per_s: float  # taker orders per second at rate_scale 1 (outside bursts)
    mean_qty: float  # typical fill size in base units
    max_fills: int = 4  # one taker order fills 1..max_fills maker orders (one aggTrade)

    def __post_init__(self) -> None:
        validate_symbol(self.symbol)
        if self.tick_decimals + self.lot_decimals > 8:
            raise ValueError(f"{self.symbol}: price x qty would need more than 8 decimals")

    @property
    def tick_e8(self) -> int:
        return 10 ** (8 - self.tick_decimals)

    @property
    def lot_e8(self) -> int:
        return 10 ** (8 - self.lot_decimals)

    @property
    def notional_e8(self) -> int:
        """Value of one tick x one lot in units of 1e-8 quote (an integer by construction)."""
        return 10 ** (8 - self.tick_decimals - self.lot_decimals)

    @property
    def base_quote(self) -> tuple[str, str]:
        for quote in _QUOTES:
            if self.symbol.endswith(quote) and len(self.symbol) > len(quote):
                return self.symbol[: -len(quote)], quote
        return self.symbol[:-4] or self.symbol, self.symbol[-4:]


# Realistic levels for the default symbol list (late-2020s magnitudes; exactness matters, not
# the level). Taker orders average ~2 fills, so BTC runs ~25 trades/s before bursts.
_KNOWN: dict[str, tuple[float, int, int, float, float]] = {
    # symbol: (price, tick decimals, lot decimals, orders/s, mean qty)
    "BTCUSDT": (65000.0, 2, 5, 12.0, 0.01),
    "ETHUSDT": (3200.0, 2, 4, 5.0, 0.2),
    "SOLUSDT": (150.0, 2, 3, 2.0, 3.0),
    "BNBUSDT": (580.0, 2, 3, 1.5, 0.5),
    "XRPUSDT": (0.55, 4, 1, 1.5, 800.0),
    "DOGEUSDT": (0.12, 5, 0, 1.5, 3000.0),
    "ADAUSDT": (0.45, 4, 1, 1.2, 1500.0),
    "AVAXUSDT": (30.0, 2, 2, 1.0, 10.0),
    "LINKUSDT": (14.0, 2, 2, 1.0, 20.0),
    "LTCUSDT": (80.0, 2, 3, 1.0, 2.0),
    "DOTUSDT": (6.0, 3, 2, 1.0, 50.0),
    "SUIUSDT": (1.5, 4, 1, 1.5, 300.0),
    "EURUSDT": (1.08, 4, 1, 0.6, 500.0),
}


def instrument_for(symbol: str) -> Instrument:
    """The instrument of ``symbol``: a known profile, else a deterministic small-cap one."""
    validate_symbol(symbol)
    if symbol in _KNOWN:
        price, tick, lot, rate, qty = _KNOWN[symbol]
        return Instrument(symbol, price, tick, lot, rate, qty)
    # Unknown symbols get a stable profile derived from the name (not from Python's hash()).
    digest = hashlib.sha256(symbol.encode()).digest()
    price = 0.5 + digest[0] / 16.0
    return Instrument(symbol, round(price, 3), 4, 1, 0.8 + digest[1] / 255.0, 100.0)


def format_e8(value_e8: int) -> str:
    """An integer amount in units of 1e-8 as Binance's 8-decimal string ("65000.01000000")."""
    sign = "-" if value_e8 < 0 else ""
    whole, frac = divmod(abs(value_e8), E8)
    return f"{sign}{whole}.{frac:08d}"


def format_e8_list(values_e8: np.ndarray) -> list[str]:
    """:func:`format_e8` of every value of an integer array (a REST page's column at once)."""
    if len(values_e8) and values_e8.min() < 0:
        return [format_e8(v) for v in values_e8.tolist()]
    whole, frac = np.divmod(values_e8, E8)
    return [f"{w}.{f:08d}" for w, f in zip(whole.tolist(), frac.tolist(), strict=True)]
