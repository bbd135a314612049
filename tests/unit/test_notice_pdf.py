"""The printed payment notice, as a payer, a cashier's scanner and a PDF viewer see it.

Each PDF is fetched through the API, rendered with PDFium (Chrome's PDF engine) and read back:
the barcode must scan to the 20-digit number, every font must be embedded (a non-embedded CJK
font renders blank in PDFium), the Chinese text must show and be extractable, and nothing may
overlap or run off the page, on A4 and on A5.
"""

from __future__ import annotations

import ctypes
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
import pytest
import zxingcpp
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image

from core.money import chinese_capitals, format_yuan
from notices.numbers import group_digits
from tests.conftest import Staff, issue, skip_or_fail

MM = 72 / 25.4  # points per millimetre
PAPER_POINTS = {"A4": (595.28, 841.89), "A5": (419.53, 595.28)}
PAYER = "欧阳娜娜"
REASON = "小微企业减半征收（财税〔2019〕13号），经县政府专题会议纪要第12号同意"  # wraps onto more lines
ITEMS = [
    {"fee_code": "BDC-ZZ", "quantity": 1},  # 80.00
    {"fee_code": "BDC-FZZ", "quantity": 2, "override_amount": 55000, "override_reason": REASON},  # 1,100 → 550
    {"fee_code": "BDC-GBF", "quantity": 3},  # 3 × 10.00
]
TOTAL = 8000 + 55000 + 3000  # 660.00 yuan


# -- fixtures and helpers ----------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _font_present(app: Flask) -> None:
    if not Path(str(app.config["FEESVC_PDF_FONT"])).is_file():
        skip_or_fail(f"PDF font missing: {app.config['FEESVC_PDF_FONT']}")


@pytest.fixture
def notice(client: FlaskClient, staff: Staff) -> dict[str, Any]:
    response = issue(client, staff, items=ITEMS, payer={"name": PAYER, "id_number": "110101199003071234"},
                     case_reference="BDC-2026-000123")
    assert response.status_code == 201, response.json
    body: dict[str, Any] = response.json
    assert body["total"] == TOTAL
    return body


def fetch_pdf(client: FlaskClient, staff: Staff, number: str, paper: str) -> bytes:
    query = "?size=A5" if paper == "A5" else ""
    response = client.get(f"/api/v1/notices/{number}/pdf{query}", headers=staff.headers("window"))
    assert response.status_code == 200
    assert response.mimetype == "application/pdf"
    assert response.data.startswith(b"%PDF-")
    return bytes(response.data)


class Pdfs:
    """Fetches notice PDFs through the API and opens them with PDFium; closes them afterwards."""

    def __init__(self, client: FlaskClient, staff: Staff) -> None:
        self.client, self.staff = client, staff
        self.documents: list[pdfium.PdfDocument] = []

    def fetch(self, number: str, paper: str) -> bytes:
        return fetch_pdf(self.client, self.staff, number, paper)

    def open(self, data: bytes) -> pdfium.PdfDocument:
        self.documents.append(pdfium.PdfDocument(data))
        return self.documents[-1]

    def get(self, number: str, paper: str) -> pdfium.PdfDocument:
        return self.open(self.fetch(number, paper))

    def close(self) -> None:
        for document in self.documents:
            document.close()


@pytest.fixture
def pdfs(client: FlaskClient, staff: Staff) -> Iterator[Pdfs]:
    opened = Pdfs(client, staff)
    yield opened
    opened.close()


def render(page: Any, dpi: int) -> Image.Image:
    image: Image.Image = page.render(scale=dpi / 72).to_pil()
    return image


def page_text(page: Any) -> str:
    text: str = page.get_textpage().get_text_range()
    return text


def flat(text: str) -> str:
    """Text with the line breaks PDFium inserts between drawn lines removed."""
    return text.replace("\r\n", "").replace("\n", "")


def char_boxes(page: Any) -> Iterator[tuple[str, tuple[float, float, float, float]]]:
    """(character, tight box in points) for every drawn character of the page."""
    textpage = page.get_textpage()
    for index in range(textpage.count_chars()):
        char = chr(pdfium_c.FPDFText_GetUnicode(textpage.raw, index))
        if char.isspace() or pdfium_c.FPDFText_IsGenerated(textpage.raw, index):
            continue
        yield char, textpage.get_charbox(index)


def filled_bars(page: Any) -> list[tuple[float, float, float, float]]:
    """Bounds of the filled, unstroked, tall and thin path objects: the barcode's bars."""
    bars = []
    for obj in page.get_objects():
        if obj.type != pdfium_c.FPDF_PAGEOBJ_PATH:
            continue
        fill_mode, stroke = ctypes.c_int(), ctypes.c_int()
        pdfium_c.FPDFPath_GetDrawMode(obj.raw, ctypes.byref(fill_mode), ctypes.byref(stroke))
        left, bottom, right, top = obj.get_bounds()
        if fill_mode.value and not stroke.value and top - bottom > 5 * MM and right - left < 3 * MM:
            bars.append((left, bottom, right, top))
    return bars


@contextmanager
def without_system_fonts() -> Iterator[None]:
    """Render as a viewer on a machine without CJK fonts would: only what the PDF embeds.

    PDFium substitutes installed fonts for fonts a PDF does not embed (so STSong-Light shows here
    when fonts-wqy-microhei is installed); with no system font info, non-embedded CJK text is
    blank, as it was in Chrome in PITFALLS.md. Open the document inside this block: PDFium picks
    a page's fonts when it loads the page.
    """
    default = pdfium_c.FPDF_GetDefaultSystemFontInfo()
    pdfium_c.FPDF_SetSystemFontInfo(None)
    try:
        yield
    finally:
        pdfium_c.FPDF_SetSystemFontInfo(default)


def dark_fraction(image: Image.Image, box: tuple[int, int, int, int]) -> float:
    region = image.convert("L").crop(box)
    histogram = region.histogram()
    dark = sum(histogram[:128])
    return dark / max(1, region.width * region.height)


def reddish_pixels(image: Image.Image) -> int:
    """Pixels clearly redder than grey (the stamp is translucent red over black and white)."""
    red, green, blue = image.convert("RGB").split()
    return sum(1 for r, g, b in zip(red.tobytes(), green.tobytes(), blue.tobytes(), strict=True)
               if r - g > 40 and r - b > 40)


# -- the barcode -------------------------------------------------------------------------------

@pytest.mark.parametrize("paper", ["A4", "A5"])
@pytest.mark.parametrize("dpi", [150, 200, 300])
def test_barcode_scans_to_the_notice_number(pdfs: Pdfs, notice: dict[str, Any],
                                             paper: str, dpi: int) -> None:
    page = pdfs.get(notice["number"], paper)[0]
    found = zxingcpp.read_barcodes(render(page, dpi))
    assert [barcode.text for barcode in found] == [notice["number"]]
    assert found[0].format == zxingcpp.BarcodeFormat.Code128
    assert len(found[0].text) == 20 and found[0].text.isdigit()


@pytest.mark.parametrize("paper", ["A4", "A5"])
def test_narrowest_bar_is_at_least_a_quarter_millimetre_on_paper(pdfs: Pdfs,
                                                                  notice: dict[str, Any], paper: str) -> None:
    page = pdfs.get(notice["number"], paper)[0]
    bars = filled_bars(page)
    # Code 128 of 20 digits (code set C): start, 10 symbols, check, stop = 3 bars each, stop 4.
    assert len(bars) == 3 * 12 + 4
    narrowest = min(right - left for left, _bottom, right, _top in bars)
    assert narrowest >= 0.25 * MM
    tallest = max(top - bottom for _left, bottom, _right, top in bars)
    assert tallest >= 10 * MM  # tall enough for a hand scanner's line to cross it


@pytest.mark.parametrize("paper", ["A4", "A5"])
def test_barcode_and_its_quiet_zones_stay_clear_of_text(pdfs: Pdfs,
                                                        notice: dict[str, Any], paper: str) -> None:
    page = pdfs.get(notice["number"], paper)[0]
    bars = filled_bars(page)
    narrowest = min(right - left for left, _bottom, right, _top in bars)
    quiet = 10 * narrowest  # Code 128 needs 10 modules of quiet zone each side
    left = min(b[0] for b in bars) - quiet
    right = max(b[2] for b in bars) + quiet
    bottom = min(b[1] for b in bars) - 1 * MM
    top = max(b[3] for b in bars) + 1 * MM
    width, _height = page.get_size()
    assert left >= 5 * MM and right <= width - 5 * MM  # inside the printable area
    for char, (c_left, c_bottom, c_right, c_top) in char_boxes(page):
        clear = c_right <= left or c_left >= right or c_top <= bottom or c_bottom >= top
        assert clear, f"{char!r} drawn inside the barcode's area"


# -- fonts -------------------------------------------------------------------------------------

def pdf_objects(data: bytes) -> dict[int, bytes]:
    """Object number → its dictionary text, found through the cross-reference table."""
    startxref = re.search(rb"startxref\s+(\d+)\s+%%EOF\s*$", data)
    assert startxref, "no startxref"
    xref = re.compile(rb"xref\s+(\d+)\s+(\d+)\s+").match(data, int(startxref.group(1)))
    assert xref, "the PDF has no classic cross-reference table"
    first, count = int(xref.group(1)), int(xref.group(2))
    entries = re.compile(rb"(\d{10}) (\d{5}) ([nf])\s*").finditer(data, xref.end())
    objects: dict[int, bytes] = {}
    for number, entry in zip(range(first, first + count), entries, strict=False):
        if entry.group(3) != b"n":
            continue
        header = re.compile(rb"(\d+)\s+\d+\s+obj\b").match(data, int(entry.group(1)))
        assert header and int(header.group(1)) == number
        end = min(i for i in (data.find(b"stream", header.end()), data.find(b"endobj", header.end())) if i >= 0)
        objects[number] = data[header.end():end]
    return objects


def ref(dictionary: bytes, key: bytes) -> int | None:
    match = re.search(rb"/" + key + rb"\s*\[?\s*(\d+)\s+\d+\s+R", dictionary)
    return int(match.group(1)) if match else None


def font_problems(data: bytes) -> tuple[list[str], list[str]]:
    """(names of the fonts in the file, problems: fonts that are not embedded)."""
    objects = pdf_objects(data)
    names, problems = [], []
    for number, body in objects.items():
        if not re.search(rb"/Type\s*/Font\b", body):
            continue
        name_match = re.search(rb"/BaseFont\s*/([^\s/<>\[\]()]+)", body)
        name = name_match.group(1).decode() if name_match else f"object {number}"
        names.append(name)
        subtype = re.search(rb"/Subtype\s*/(\w+)", body)
        kind = subtype.group(1) if subtype else b"?"
        if kind == b"Type3":
            continue  # glyphs are drawn by the file itself
        if kind == b"Type0":  # composite: the descendant CIDFont carries the descriptor
            descendant = ref(body, b"DescendantFonts")
            body = objects.get(descendant, b"") if descendant is not None else b""
        descriptor = ref(body, b"FontDescriptor")
        if descriptor is None:
            problems.append(f"{name}: no font descriptor (a standard-14 font, not embedded)")
            continue
        if not re.search(rb"/FontFile[23]?\s+\d+\s+\d+\s+R", objects.get(descriptor, b"")):
            problems.append(f"{name}: descriptor without FontFile/FontFile2/FontFile3 (not embedded)")
    return names, problems


@pytest.mark.parametrize("paper", ["A4", "A5"])
def test_every_font_in_the_pdf_is_embedded(client: FlaskClient, staff: Staff, pdfs: Pdfs, notice: dict[str, Any],
                                           paper: str) -> None:
    issued = pdfs.fetch(notice["number"], paper)
    response = client.post(f"/api/v1/notices/{notice['number']}/cancel", json={"reason": "测试作废印章的字体"},
                           headers=staff.headers("window"))
    assert response.status_code == 200
    cancelled = pdfs.fetch(notice["number"], paper)  # with the 已作废 stamp
    for data in (issued, cancelled):
        names, problems = font_problems(data)
        assert names, "no fonts found: the PDF parser is broken"
        assert problems == []
        # Subsets, so that the file stays small: ABCDEF+Name.
        assert all(re.fullmatch(r"[A-Z]{6}\+.+", name) for name in names), names
        # And as PDFium itself sees every piece of text on the page.
        page = pdfs.open(data)[0]
        text_objects = [obj for obj in page.get_objects() if obj.type == pdfium_c.FPDF_PAGEOBJ_TEXT]
        assert len(text_objects) > 20
        for obj in text_objects:
            font = pdfium_c.FPDFTextObj_GetFont(obj.raw)
            assert pdfium_c.FPDFFont_GetIsEmbedded(font) == 1


def test_font_check_flags_a_standard_font() -> None:
    """The check above is not vacuous: reportlab's default (Helvetica) and Courier fail it."""
    import io

    from reportlab.pdfgen.canvas import Canvas

    buffer = io.BytesIO()
    canvas = Canvas(buffer)
    canvas.setFont("Courier-Bold", 16)
    canvas.drawString(72, 720, "9900 0126 0000 0000 0119")
    canvas.showPage()
    canvas.save()
    names, problems = font_problems(buffer.getvalue())
    assert "Courier-Bold" in names
    assert any(problem.startswith("Courier-Bold") for problem in problems)


# -- what the payer reads ----------------------------------------------------------------------

@pytest.mark.parametrize("paper", ["A4", "A5"])
def test_chinese_title_is_visible(pdfs: Pdfs, notice: dict[str, Any], paper: str) -> None:
    data = pdfs.fetch(notice["number"], paper)
    dpi = 150
    scale = dpi / 72
    with without_system_fonts():  # PDFium resolves a page's fonts when it loads the page
        page = pdfs.open(data)[0]
        image = render(page, dpi)
    width, height = page.get_size()
    assert (round(width, 1), round(height, 1)) == pytest.approx(PAPER_POINTS[paper], abs=0.5)
    textpage = page.get_textpage()
    searcher = textpage.search("缴款通知书")
    found = searcher.get_next()
    assert found, "title not in the text layer"
    start, count = found
    boxes = [textpage.get_charbox(start + i) for i in range(count)]
    left, bottom = min(b[0] for b in boxes), min(b[1] for b in boxes)
    right, top = max(b[2] for b in boxes), max(b[3] for b in boxes)
    assert top > height * 0.8  # at the head of the page
    assert top - bottom >= 5 * MM  # a title, not small print
    title_box = (int(left * scale), int((height - top) * scale), int(right * scale) + 1,
                 int((height - bottom) * scale) + 1)
    # Drawn glyphs: a good share of the title's box is ink. Blank (unembedded) CJK text is 0 %.
    assert dark_fraction(image, title_box) > 0.12
    # ... and each of the five characters has ink of its own.
    for char_left, char_bottom, char_right, char_top in boxes:
        char_box = (int(char_left * scale), int((height - char_top) * scale), int(char_right * scale) + 1,
                    int((height - char_bottom) * scale) + 1)
        assert dark_fraction(image, char_box) > 0.08


@pytest.mark.parametrize("paper", ["A4", "A5"])
def test_text_layer_holds_what_the_payer_reads(pdfs: Pdfs, notice: dict[str, Any],
                                               paper: str) -> None:
    page = pdfs.get(notice["number"], paper)[0]
    text = page_text(page)
    joined = flat(text)
    grouped = group_digits(notice["number"])
    assert "缴款通知书" in text
    assert "示范县政务服务中心" in text
    assert "县不动产登记中心" in text
    assert PAYER in text
    assert grouped in text and grouped == "{} {} {} {} {}".format(*re.findall(r"\d{4}", notice["number"]))
    assert "110***********1234" in text  # the id number masked
    assert "110101199003071234" not in text
    assert notice["due_date"] in text
    assert f"¥ {format_yuan(TOTAL)}" in text
    assert chinese_capitals(TOTAL) == "陆佰陆拾元整"
    assert "人民币陆佰陆拾元整" in text
    # The lines: names, quantities, unit prices, amounts, and the reduction with its reason.
    for name in ("不动产登记费（住宅类）", "不动产登记费（非住宅类）", "不动产权证书工本费（每增加一本）"):
        assert name in joined
    for figures in ("80.00", "550.00", "30.00", "10.00"):
        assert figures in text
    assert f"减免：{REASON}" in joined
    assert "1,100.00" in text  # the full price the reduction is measured against
    assert "收费员扫描条码" in joined and "手机银行" in joined  # how to pay


@pytest.mark.parametrize("paper", ["A4", "A5"])
def test_text_is_legible_on_paper(pdfs: Pdfs, notice: dict[str, Any], paper: str) -> None:
    """No CJK text smaller than 7 pt on paper, A5 included (A4 shrunk to A5 makes 9 pt into 6.4)."""
    page = pdfs.get(notice["number"], paper)[0]
    textpage = page.get_textpage()
    heights = []
    for index in range(textpage.count_chars()):
        if "\u4e00" <= chr(pdfium_c.FPDFText_GetUnicode(textpage.raw, index)) <= "\u9fff":
            _left, bottom, _right, top = textpage.get_charbox(index, loose=True)
            heights.append(top - bottom)  # the em box: the font size on paper, in points
    assert min(heights) >= 7.0
    # The number people type at a bank counter is large enough to read without mistakes.
    number_chars = re.compile(r"\d")
    number_text = group_digits(notice["number"])
    start, count = textpage.search(number_text).get_next() or (0, 0)
    assert count == len(number_text)
    digit_heights = [textpage.get_charbox(start + i, loose=True) for i in range(count)
                     if number_chars.match(number_text[i])]
    assert min(top - bottom for _l, bottom, _r, top in digit_heights) >= 12.0


def overlapping_chars(page: Any) -> list[tuple[str, str]]:
    """Pairs of characters whose boxes overlap (by more than a hair), found with a sweep."""
    boxes = sorted(char_boxes(page), key=lambda item: item[1][0])
    active: list[tuple[str, tuple[float, float, float, float]]] = []
    clashes = []
    tolerance = 0.3
    for char, box in boxes:
        active = [(c, b) for c, b in active if b[2] - tolerance > box[0]]
        for other_char, other in active:
            if (min(box[2], other[2]) - max(box[0], other[0]) > tolerance
                    and min(box[3], other[3]) - max(box[1], other[1]) > tolerance):
                clashes.append((other_char, char))
        active.append((char, box))
    return clashes


def stroked_paths(page: Any) -> list[tuple[float, float, float, float]]:
    """Bounds of the stroked paths: table cells and rules."""
    paths = []
    for obj in page.get_objects():
        if obj.type != pdfium_c.FPDF_PAGEOBJ_PATH:
            continue
        fill_mode, stroke = ctypes.c_int(), ctypes.c_int()
        pdfium_c.FPDFPath_GetDrawMode(obj.raw, ctypes.byref(fill_mode), ctypes.byref(stroke))
        if stroke.value:
            paths.append(obj.get_bounds())
    return paths


def assert_laid_out_within_the_page(page: Any) -> None:
    """Every character on the page, inside its cell, clear of the others."""
    width, height = page.get_size()
    paths = stroked_paths(page)
    assert paths, "no table drawn"
    hair = 0.3
    for char, (left, bottom, right, top) in char_boxes(page):
        assert 5 * MM <= left and right <= width - 5 * MM, f"{char!r} off the side of the page"
        assert 5 * MM <= bottom and top <= height - 5 * MM, f"{char!r} off the top or bottom of the page"
        for p_left, p_bottom, p_right, p_top in paths:
            inside = (p_left - hair <= left and right <= p_right + hair
                      and p_bottom - hair <= bottom and top <= p_top + hair)
            apart = (right <= p_left + hair or left >= p_right - hair
                     or top <= p_bottom + hair or bottom >= p_top - hair)
            assert inside or apart, f"{char!r} crosses a table line"
    assert overlapping_chars(page) == []


@pytest.mark.parametrize("paper", ["A4", "A5"])
def test_nothing_overlaps_or_runs_off_the_page(pdfs: Pdfs, notice: dict[str, Any],
                                               paper: str) -> None:
    document = pdfs.get(notice["number"], paper)
    assert len(document) == 1
    assert_laid_out_within_the_page(document[0])


@pytest.mark.parametrize("paper", ["A4", "A5"])
def test_a_long_notice_continues_on_further_pages(client: FlaskClient, staff: Staff, pdfs: Pdfs, paper: str) -> None:
    codes = ["BDC-ZZ", "BDC-FZZ", "BDC-GBF"]
    items: list[dict[str, Any]] = [{"fee_code": codes[i % 3], "quantity": 1 + i * 997 % 100000} for i in range(50)]
    items[7].update(override_amount=100, override_reason="依据县政府专题会议纪要减免" * 6)
    response = issue(client, staff, items=items, payer={"name": "某某房地产开发有限责任公司" * 5})
    assert response.status_code == 201, response.json
    number, total = response.json["number"], response.json["total"]
    document = pdfs.get(number, paper)
    pages = len(document)
    assert pages >= 2
    texts = [page_text(document[i]) for i in range(pages)]
    everything = "\n".join(texts)
    for index, text in enumerate(texts, start=1):
        assert f"第 {index} 页 / 共 {pages} 页" in text
        assert group_digits(number) in text  # every page says which notice it belongs to
        assert_laid_out_within_the_page(document[index - 1])
    # Every line is printed once, in order, with its amount.
    positions = [int(m) for m in re.findall(r"^(\d{1,2}) ", everything, flags=re.MULTILINE)]
    assert [p for p in positions if 1 <= p <= 50] == list(range(1, 51))
    for line in response.json["items"]:
        assert format_yuan(line["amount"]) in everything
    assert f"人民币{chinese_capitals(total)}" in flat(everything)
    assert everything.count("合计（大写）") == 1
    # The barcode is on the first page, where the cashier scans it.
    found = zxingcpp.read_barcodes(render(document[0], 200))
    assert [barcode.text for barcode in found] == [number]


# -- a cancelled notice ------------------------------------------------------------------------

@pytest.mark.parametrize("paper", ["A4", "A5"])
def test_cancelled_notice_pdf_is_stamped_cancelled(client: FlaskClient, staff: Staff, pdfs: Pdfs,
                                                   notice: dict[str, Any],
                                                   paper: str) -> None:
    number = notice["number"]
    issued_page = pdfs.get(number, paper)[0]
    assert "已作废" not in page_text(issued_page)
    assert reddish_pixels(render(issued_page, 72)) == 0

    response = client.post(f"/api/v1/notices/{number}/cancel", json={"reason": "申请人撤回申请"},
                           headers=staff.headers("window"))
    assert response.status_code == 200, response.json

    cancelled_page = pdfs.get(number, paper)[0]
    assert "已作废" in page_text(cancelled_page)
    image = render(cancelled_page, 72)
    assert reddish_pixels(image) > 0.004 * image.width * image.height  # a stamp one can see (~1 % of the page)
    assert PAYER in page_text(cancelled_page)  # still the same notice underneath
