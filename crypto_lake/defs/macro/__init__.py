"""Macro minute data: yfinance 1-minute bars (macro_minute) and the synthetic DXY."""
