"""The barcode on the HTML notice page encodes all 20 digits (python-barcode issue #251)."""

from __future__ import annotations

import io

import pytest
import zxingcpp
from barcode.writer import ImageWriter
from PIL import Image

from notices.barcode import _Code128, code128_svg
from notices.numbers import compose_notice_number


@pytest.mark.parametrize("serial", [1, 99, 990_000_001, 9_999_999_999])
def test_page_barcode_decodes_to_the_whole_number(serial: int) -> None:
    number = compose_notice_number("990001", 2026, serial)
    out = io.BytesIO()
    # The same symbols as the SVG on the page, rendered by python-barcode's raster writer to decode.
    _Code128(number, writer=ImageWriter()).write(out, options={"module_width": 0.3, "dpi": 200, "write_text": False})
    decoded = zxingcpp.read_barcodes(Image.open(io.BytesIO(out.getvalue())))
    assert [d.text for d in decoded] == [number]
    assert code128_svg(number).startswith("<svg")
