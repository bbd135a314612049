"""Printing helpers shared by every PDF: an embedded CJK TrueType font and vector barcodes.

reportlab's built-in STSong-Light is not embedded and renders blank in PDFium; wqy-microhei has
TrueType outlines, which reportlab subsets and embeds (PITFALLS.md).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import IO, Any

from reportlab.graphics.barcode.code128 import Code128
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas

from core.config import BUNDLED_FONT

FONT_NAME = "FeeCJK"
# API.md: narrowest bar >= 0.25 mm, so that a 200 dpi scan or a cheap scanner reads it.
# Measured (pypdfium2 render + zxing-cpp, 100 numbers at random sub-pixel positions): 0.27 mm
# decoded 4/24 at 150 dpi and 23/24 at 200 dpi (1.6 px per module aliases badly); 0.34 mm (2 px
# at 150 dpi) decoded 100/100 at 150, 200 and 300 dpi. A Code 128 of 20 digits is then 56 mm wide
# with its quiet zones.
BARCODE_BAR_WIDTH = 0.34 * mm

_lock = threading.Lock()
_registered: dict[str, str] = {}


class FontMissing(RuntimeError):
    pass


def cjk_font(path: str | None = None) -> str:
    """Register the CJK font once per process and return its reportlab name."""
    font_path = path or str(BUNDLED_FONT)
    with _lock:
        if font_path in _registered:
            return _registered[font_path]
        if not Path(font_path).is_file():
            raise FontMissing(f"PDF font not found: {font_path} (set FEESVC_PDF_FONT)")
        name = FONT_NAME if not _registered else f"{FONT_NAME}{len(_registered)}"
        kwargs = {"subfontIndex": 0} if font_path.lower().endswith(".ttc") else {}
        pdfmetrics.registerFont(TTFont(name, font_path, **kwargs))
        _registered[font_path] = name
        return name


def new_canvas(output: IO[bytes], pagesize: tuple[float, float], font: str, **kwargs: Any) -> Canvas:
    """A canvas whose initial font is the embedded CJK font.

    A plain ``Canvas`` declares Helvetica (a standard-14 font, never embedded) as the page's
    initial font; starting from the embedded font keeps every font in the file embedded.
    """
    return Canvas(output, pagesize=pagesize, initialFontName=font, pageCompression=1, **kwargs)


def draw_code128(canvas: Canvas, value: str, x: float, y: float, *, height: float,
                 bar_width: float = BARCODE_BAR_WIDTH) -> float:
    """Draw a vector Code 128 with quiet zones at (x, y); returns its width."""
    barcode = Code128(value, barWidth=bar_width, barHeight=height, quiet=True,
                      lquiet=10 * bar_width, rquiet=10 * bar_width)
    barcode.drawOn(canvas, x, y)
    return float(barcode.width)


def code128_width(value: str, bar_width: float = BARCODE_BAR_WIDTH) -> float:
    return float(Code128(value, barWidth=bar_width, quiet=True, lquiet=10 * bar_width,
                         rquiet=10 * bar_width).width)


def draw_qr(canvas: Canvas, text: str, x: float, y: float, size: float) -> None:
    """A vector QR code (reportlab's widget) of `size` points square at (x, y)."""
    from reportlab.graphics import renderPDF
    from reportlab.graphics.barcode.qr import QrCodeWidget
    from reportlab.graphics.shapes import Drawing

    widget = QrCodeWidget(text, barLevel="M")
    x0, y0, x1, y1 = widget.getBounds()
    drawing = Drawing(size, size, transform=[size / (x1 - x0), 0, 0, size / (y1 - y0), 0, 0])
    drawing.add(widget)
    renderPDF.draw(drawing, canvas, x, y)


def stamp(canvas: Canvas, font: str, word: str, centre_x: float, centre_y: float, *, size: float = 72) -> None:
    """A translucent red diagonal word across the page (作废, 已缴费, 补打 …)."""
    canvas.saveState()
    canvas.setFillColorRGB(0.8, 0.1, 0.1, alpha=0.35)
    canvas.setFont(font, size)
    canvas.translate(centre_x, centre_y)
    canvas.rotate(30)
    canvas.drawCentredString(0, 0, word)
    canvas.restoreState()


def fit_text(text: str, font: str, size: float, width: float) -> str:
    """The text, cut with an ellipsis where it would overflow `width`."""
    if stringWidth(text, font, size) <= width:
        return text
    while text and stringWidth(text + "…", font, size) > width:
        text = text[:-1]
    return text + "…"
