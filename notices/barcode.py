"""The notice number as an inline SVG Code 128 for the HTML pages (python-barcode)."""

from __future__ import annotations

import io
from functools import lru_cache

from barcode import Code128
from barcode.writer import SVGWriter


@lru_cache(maxsize=256)
def code128_svg(number: str) -> str:
    out = io.BytesIO()
    Code128(number, writer=SVGWriter()).write(
        out, options={"module_width": 0.3, "module_height": 14.0, "quiet_zone": 3.0,
                      "font_size": 0, "write_text": False, "compress": False},
    )
    svg = out.getvalue().decode()
    return svg[svg.index("<svg"):]  # drop the XML prolog and doctype: it is inlined in HTML
