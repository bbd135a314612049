"""The notice number as an inline SVG Code 128 for the HTML pages (python-barcode)."""

from __future__ import annotations

import io
from functools import lru_cache
from typing import Any

from barcode import Code128
from barcode.charsets import code128
from barcode.writer import SVGWriter


class _Code128(Code128):
    """python-barcode 0.16.1 drops a leading "99" (taken for a control code, its issue #251,
    fixed upstream in PR #263); every number of region 990001 starts with it."""

    def _try_to_optimize(self, encoded: list[Any]) -> list[Any]:
        if encoded[0] == code128.START_CODES["C"] and len(encoded) > 1 and encoded[1] in (100, 101):
            encoded[:2] = [code128.TO[encoded[1]]]
        return encoded


@lru_cache(maxsize=256)
def code128_svg(number: str) -> str:
    out = io.BytesIO()
    _Code128(number, writer=SVGWriter()).write(
        out, options={"module_width": 0.3, "module_height": 14.0, "quiet_zone": 3.0,
                      "font_size": 0, "write_text": False, "compress": False},
    )
    svg = out.getvalue().decode()
    svg = svg[svg.index("<svg"):]  # drop the XML prolog and doctype: it is inlined in HTML
    # The page's Content-Security-Policy (style-src 'self') refuses style attributes, which would
    # leave the white background rect black; presentation attributes are not styles and pass.
    return svg.replace('style="fill:black;"', 'fill="black"').replace('style="fill:white"', 'fill="white"')
