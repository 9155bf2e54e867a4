"""Charts the UI shows in Markdown metadata: small, deterministic PNGs as data URIs."""

from __future__ import annotations

import base64
import io
from typing import Any


def palette_png(fig: Any, colors: int) -> bytes:
    """A matplotlib figure as a palette PNG of ``colors`` colours: ~3x smaller than
    matplotlib's RGBA output and the same to the eye for these charts; it matters because
    every partition's metadata (charts included) is stored in the event log. No text chunks:
    the bytes depend only on the data."""
    from PIL import Image  # matplotlib's own dependency

    raw = io.BytesIO()
    fig.savefig(raw, format="png")
    with Image.open(io.BytesIO(raw.getvalue())) as img:
        small = img.convert("RGB").quantize(colors=colors, method=Image.Quantize.MEDIANCUT)
        out = io.BytesIO()
        small.save(out, format="PNG", optimize=True)
    return out.getvalue()


def png_data_uri(png: bytes) -> str:
    """``png`` as a ``data:`` URI for a Markdown image."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
