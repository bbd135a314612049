"""The printed payment notice (缴款通知书): A4 or A5 portrait, embedded CJK font, Code 128.

Every glyph, the notice number included, is drawn in the embedded CJK TrueType font: a
standard-14 font such as Courier is not embedded and renders differently (or not at all) from
one viewer to the next. A notice with more lines than fit on one page continues on further pages
(table header repeated, "第 i 页 / 共 n 页" in the footer); the barcode is on the first page.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from flask_babel import gettext as _
from reportlab.lib.pagesizes import A4, A5
from reportlab.lib.units import mm
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.pdfgen.canvas import Canvas

from core.clock import local
from core.money import chinese_capitals, format_yuan
from core.pdf import BARCODE_BAR_WIDTH, cjk_font, code128_width, draw_code128, fit_text, new_canvas
from notices.models import Notice, NoticeLine, NoticeStatus
from notices.numbers import group_digits


@dataclass(frozen=True)
class PaperLayout:
    """A paper size and the scale at which the layout is drawn on it.

    The layout is drawn in "layout points" and scaled onto the paper. A4 is drawn 1:1; A5 at
    0.8 (not the 0.707 of a plain A4 shrink), so that 10 pt body text is still 8 pt on paper.
    The barcode is widened by 1/scale so that its narrowest bar stays >= 0.25 mm on paper.
    """

    size: tuple[float, float]
    scale: float
    margin: float  # in layout points

    @property
    def width(self) -> float:
        return self.size[0] / self.scale

    @property
    def height(self) -> float:
        return self.size[1] / self.scale


PAPERS = {
    "A4": PaperLayout(size=A4, scale=1.0, margin=18 * mm),
    "A5": PaperLayout(size=A5, scale=0.8, margin=13 * mm),
}
PAPER_SIZES = {name: layout.size for name, layout in PAPERS.items()}

# Vertical rhythm (layout points).
_ROW_H = 8 * mm  # facts rows, table header, minimum table row
_BASELINE = 5.5 * mm  # first baseline below a row's top edge
_NAME_LEAD = 4.5 * mm  # line spacing of wrapped fee names (10 pt)
_NOTE_LEAD = 4.2 * mm  # line spacing of reduction notes (9 pt)
_ROW_BOTTOM_PAD = 2.5 * mm
_FOOTER_RESERVE = 8 * mm  # from the bottom margin up to where content must stop
_FIRST_PAGE_HEAD = 76 * mm  # centre, title, number and barcode band, facts table
_NEXT_PAGE_HEAD = 20 * mm  # continuation heading
_WAY_LEAD = 5.5 * mm
_TAIL_TOTALS = 24 * mm
# Column widths in A4 millimetres; scaled to the content width of the paper.
_COLUMN_WIDTHS = (12, 80, 14, 16, 26, 26)
_MAX_NAME_LINES = 6
_MAX_NOTE_LINES = 8
_MAX_UNIT_LINES = 3
# Barcode: height on the layout and gap to the text beside it.
_BARCODE_HEIGHT = 14 * mm
_NUMBER_SIZE = 16


def mask_id_number(value: str | None) -> str:
    if not value:
        return ""
    if len(value) <= 6:
        return value[0] + "*" * (len(value) - 1)
    return value[:3] + "*" * (len(value) - 7) + value[-4:]


@dataclass
class _Row:
    line: NoticeLine
    name: list[str]
    note: list[str]
    unit: list[str]
    height: float


@dataclass(frozen=True)
class _Page:
    rows: Sequence[_Row]
    totals: bool = False  # total in figures and capitals
    ways: bool = False  # how to pay


def render_notice_pdf(notice: Notice, config: Mapping[str, Any], *, paper: str = "A4") -> bytes:
    font = cjk_font(config.get("FEESVC_PDF_FONT"))
    layout = PAPERS[paper]
    buffer = io.BytesIO()
    canvas = new_canvas(buffer, layout.size, font)
    canvas.setTitle(f"{_('缴款通知书')} {notice.number}")
    canvas.setAuthor(str(config.get("FEESVC_CENTRE_NAME", "")))
    _NoticeDrawing(canvas, notice, config, font, layout).draw()
    canvas.save()
    return buffer.getvalue()


class _NoticeDrawing:
    def __init__(self, canvas: Canvas, notice: Notice, config: Mapping[str, Any], font: str,
                 layout: PaperLayout) -> None:
        self.canvas = canvas
        self.notice = notice
        self.config = config
        self.font = font
        self.layout = layout
        self.left = layout.margin
        self.right = layout.width - layout.margin
        self.top = layout.height - layout.margin
        self.bottom = layout.margin + _FOOTER_RESERVE
        content = self.right - self.left
        total = sum(_COLUMN_WIDTHS)
        xs = [self.left]
        for width in _COLUMN_WIDTHS:
            xs.append(xs[-1] + width / total * content)
        xs[-1] = self.right
        self.xs = xs
        self.issued = local(notice.issued_at, str(config["FEESVC_TIMEZONE"]))
        self.grouped = group_digits(notice.number)

    # -- planning ------------------------------------------------------------------------

    def _rows(self) -> list[_Row]:
        xs, font = self.xs, self.font
        name_width = xs[2] - xs[1] - 3 * mm
        unit_width = xs[3] - xs[2] - 3 * mm
        rows = []
        for line in self.notice.lines:
            name = _clip(_wrap(line.name, font, 10, name_width), _MAX_NAME_LINES)
            note: list[str] = []
            if line.override_reason:
                text = _("减免：%(r)s（标准 %(full)s 元）", r=line.override_reason,
                         full=format_yuan(line.unit_amount * line.quantity))
                note = _clip(_wrap(text, font, 9, name_width), _MAX_NOTE_LINES)
            unit = _clip(_wrap(line.unit, font, 10, unit_width), _MAX_UNIT_LINES)
            text_height = _BASELINE + (len(name) - 1) * _NAME_LEAD + len(note) * _NOTE_LEAD + _ROW_BOTTOM_PAD
            unit_height = _BASELINE + (len(unit) - 1) * _NAME_LEAD + _ROW_BOTTOM_PAD
            rows.append(_Row(line, name, note, unit, max(_ROW_H, text_height, unit_height)))
        return rows

    def _ways(self) -> list[tuple[str, float]]:
        """The payment instructions as (line, indent): wrapped lines hang under their text."""
        ways = [
            _("1. 到本中心收费窗口缴费：出示本通知书，收费员扫描条码。可用现金、银行卡或转账。"),
            _("2. 到任一合作银行柜台、自助设备或手机银行缴费：输入通知书编号 %(n)s。", n=self.grouped),
            _("3. 请在缴费期限前缴费，逾期本通知书失效，需回受理窗口重新开具。"),
            _("4. 缴费后凭收据到受理窗口办理发证；收据可在本中心网站凭验证码查验真伪。"),
            _("5. 所列收费均依据公开的收费标准，如有疑问可向财务部门或监督电话反映。"),
        ]
        width = self.right - self.left - 3 * mm
        lines: list[tuple[str, float]] = []
        for way in ways:
            marker, _space, text = way.partition(" ")
            if not text:
                marker, text = "", way
            hang = stringWidth(marker + " ", self.font, 10) if marker else 0.0
            for index, part in enumerate(_wrap(text, self.font, 10, width - hang)):
                lines.append((f"{marker} {part}" if index == 0 and marker else part, 0.0 if index == 0 else hang))
        return lines

    def _paginate(self, rows: list[_Row], ways_height: float) -> list[_Page]:
        """Rows per page; the totals stay on the page of the last row whenever they fit there."""
        first_room = self.top - _FIRST_PAGE_HEAD - _ROW_H - self.bottom
        next_room = self.top - _NEXT_PAGE_HEAD - _ROW_H - self.bottom
        pages: list[_Page] = []
        current: list[_Row] = []
        room = first_room
        for row in rows:
            if row.height > room and current:
                pages.append(_Page(current))
                current, room = [], next_room
            current.append(row)
            room -= row.height
        if _TAIL_TOTALS + ways_height <= room:
            pages.append(_Page(current, totals=True, ways=True))
        elif _TAIL_TOTALS <= room:
            pages.append(_Page(current, totals=True))
            pages.append(_Page([], ways=True))
        else:
            pages.append(_Page(current))
            pages.append(_Page([], totals=True, ways=True))
        return pages

    # -- drawing -------------------------------------------------------------------------

    def draw(self) -> None:
        rows = self._rows()
        ways = self._ways()
        pages = self._paginate(rows, (len(ways) + 1) * _WAY_LEAD)
        for number, page in enumerate(pages, start=1):
            self.canvas.scale(self.layout.scale, self.layout.scale)
            self.canvas.setLineWidth(0.6)
            y = self._first_page_head() if number == 1 else self._next_page_head()
            if page.rows:
                y = self._table(page.rows, y)
            if page.totals:
                y = self._totals(y)
            if page.ways:
                self._ways_block(ways, y)
            self._footer(number, len(pages))
            self._stamp()
            self.canvas.showPage()

    def _first_page_head(self) -> float:
        canvas, font, notice = self.canvas, self.font, self.notice
        left, right, y = self.left, self.right, self.top
        centre = self.layout.width / 2
        canvas.setFont(font, 12)
        canvas.drawCentredString(centre, y - 4 * mm, str(self.config.get("FEESVC_CENTRE_NAME", "")))
        canvas.setFont(font, 22)
        canvas.drawCentredString(centre, y - 14 * mm, _("缴款通知书"))
        canvas.setFont(font, 9)
        canvas.drawCentredString(centre, y - 20 * mm, _("（审批与收费相分离 · 本通知书不作收款凭证）"))

        # The number for people (groups of four) and for scanners (Code 128 of the 20 digits),
        # in a band of its own 5 mm below the subtitle, with the barcode's quiet zones clear.
        bar_width = BARCODE_BAR_WIDTH / self.layout.scale
        barcode_width = code128_width(notice.number, bar_width)
        barcode_left = right - barcode_width
        barcode_bottom = y - 26 * mm - _BARCODE_HEIGHT
        draw_code128(canvas, notice.number, barcode_left, barcode_bottom, height=_BARCODE_HEIGHT,
                     bar_width=bar_width)
        canvas.setFont(font, 10)
        canvas.drawString(left, y - 29 * mm, _("通知书编号"))
        size = _fit_size(self.grouped, font, _NUMBER_SIZE, barcode_left - left - 4 * mm, char_space=1)
        # Emboldened by stroking the outlines too (render mode 2): the font has no bold face.
        number = canvas.beginText(left, y - 37 * mm)
        number.setFont(font, size)
        number.setCharSpace(1)
        number.setTextRenderMode(2)
        number.textOut(self.grouped)
        canvas.saveState()
        canvas.setLineWidth(0.45)
        canvas.drawText(number)
        canvas.restoreState()
        y -= 46 * mm

        facts = [
            (_("开具部门"), notice.department.name, _("开具日期"), self.issued.strftime("%Y-%m-%d")),
            (_("缴款人"), notice.payer_name, _("证件号码"), mask_id_number(notice.payer_id_number)),
            (_("业务编号"), notice.case_reference or "—", _("缴费期限"),
             _("%(d)s 前（含当日）", d=notice.due_date.isoformat())),
        ]
        mid = left + (right - left) / 2
        value_offset = 20 * mm
        for label_a, value_a, label_b, value_b in facts:
            canvas.rect(left, y - _ROW_H, right - left, _ROW_H)
            canvas.setFont(font, 10)
            canvas.drawString(left + 2 * mm, y - _BASELINE, label_a)
            canvas.drawString(mid + 2 * mm, y - _BASELINE, label_b)
            canvas.setFont(font, 11)
            canvas.drawString(left + value_offset, y - _BASELINE,
                              fit_text(value_a, font, 11, mid - left - value_offset - 2 * mm))
            canvas.drawString(mid + value_offset, y - _BASELINE,
                              fit_text(value_b, font, 11, right - mid - value_offset - 2 * mm))
            y -= _ROW_H
        return y - 6 * mm

    def _next_page_head(self) -> float:
        canvas, font = self.canvas, self.font
        y = self.top
        canvas.setFont(font, 14)
        canvas.drawCentredString(self.layout.width / 2, y - 5 * mm, _("缴款通知书（续页）"))
        canvas.setFont(font, 10)
        canvas.drawString(self.left, y - 13 * mm, _("通知书编号 %(n)s", n=self.grouped))
        canvas.drawRightString(self.right, y - 13 * mm,
                               fit_text(_("缴款人：%(p)s", p=self.notice.payer_name), font, 10,
                                    (self.right - self.left) / 2 - 4 * mm))
        return y - _NEXT_PAGE_HEAD

    def _table(self, rows: Sequence[_Row], y: float) -> float:
        canvas, font, xs = self.canvas, self.font, self.xs
        left, right = self.left, self.right
        titles = [_("序号"), _("收费项目"), _("单位"), _("数量"), _("单价（元）"), _("金额（元）")]
        table_top = y
        canvas.setFillGray(0.92)
        canvas.rect(left, y - _ROW_H, right - left, _ROW_H, fill=1, stroke=1)
        canvas.setFillGray(0)
        canvas.setFont(font, 10)
        for title, x, x_next in zip(titles, xs, xs[1:], strict=False):
            canvas.drawString(x + 1.5 * mm, y - _BASELINE, fit_text(title, font, 10, x_next - x - 2 * mm))
        y -= _ROW_H
        for row in rows:
            line = row.line
            canvas.rect(left, y - row.height, right - left, row.height)
            baseline = y - _BASELINE
            canvas.setFont(font, 10)
            canvas.drawString(xs[0] + 1.5 * mm, baseline, str(line.position + 1))
            text_y = baseline
            for part in row.name:
                canvas.drawString(xs[1] + 1.5 * mm, text_y, part)
                text_y -= _NAME_LEAD
            text_y += _NAME_LEAD
            if row.note:
                canvas.setFont(font, 9)
                for part in row.note:
                    text_y -= _NOTE_LEAD
                    canvas.drawString(xs[1] + 1.5 * mm, text_y, part)
                canvas.setFont(font, 10)
            unit_y = baseline
            for part in row.unit:
                canvas.drawString(xs[2] + 1.5 * mm, unit_y, part)
                unit_y -= _NAME_LEAD
            for text, x_left, x_right in (
                (str(line.quantity), xs[3], xs[4]),
                (format_yuan(line.unit_amount), xs[4], xs[5]),
                (format_yuan(line.amount), xs[5], xs[6]),
            ):
                size = _fit_size(text, font, 10, x_right - x_left - 3 * mm)
                canvas.setFont(font, size)
                canvas.drawRightString(x_right - 1.5 * mm, baseline, text)
            y -= row.height
        for x in xs[1:-1]:
            canvas.line(x, y, x, table_top)
        return y

    def _totals(self, y: float) -> float:
        canvas, font, left, right = self.canvas, self.font, self.left, self.right
        total = self.notice.total
        canvas.setFont(font, 11)
        canvas.drawString(left, y - 7 * mm, _("合计（小写）：¥ %(amount)s", amount=format_yuan(total)))
        words = _("合计（大写）：人民币%(words)s", words=chinese_capitals(total))
        canvas.setFont(font, _fit_size(words, font, 13, right - left))
        canvas.drawString(left, y - 15 * mm, words)
        return y - _TAIL_TOTALS

    def _ways_block(self, ways: list[tuple[str, float]], y: float) -> None:
        canvas, font, left = self.canvas, self.font, self.left
        y -= 4 * mm
        canvas.setFont(font, 11)
        canvas.drawString(left, y, _("缴费方式"))
        canvas.setFont(font, 10)
        for part, indent in ways:
            y -= _WAY_LEAD
            canvas.drawString(left + 3 * mm + indent, y, part)

    def _footer(self, page: int, pages: int) -> None:
        canvas, font = self.canvas, self.font
        canvas.setFont(font, 9)
        canvas.drawString(self.left, self.layout.margin,
                          _("开具人：%(who)s　　开具时间：%(at)s", who=self.notice.issued_by.display_name,
                            at=self.issued.strftime("%Y-%m-%d %H:%M")))
        if pages > 1:
            canvas.drawRightString(self.right, self.layout.margin,
                                   _("第 %(page)d 页 / 共 %(pages)d 页", page=page, pages=pages))

    def _stamp(self) -> None:
        status = self.notice.status
        if status not in (NoticeStatus.CANCELLED, NoticeStatus.PAID):
            return
        word = _("已作废") if status == NoticeStatus.CANCELLED else _("已缴费")
        canvas = self.canvas
        canvas.saveState()
        canvas.setFillColorRGB(0.8, 0.1, 0.1, alpha=0.35)
        canvas.setFont(self.font, 72)
        canvas.translate(self.layout.width / 2, self.layout.height / 2)
        canvas.rotate(30)
        canvas.drawCentredString(0, 0, word)
        canvas.restoreState()


# A line may break between any two CJK characters, but not inside a Latin word, a number, or a
# notice number in groups of four; closing punctuation stays with the character before it and
# opening punctuation with the one after it (避头尾).
_OPENING = "（《「『〔【“‘(["
_CLOSING = "，。、；：？！）》」』〕】”’,.;:!?)]"
_TOKEN = re.compile(
    rf"[{re.escape(_OPENING)}]*(?:\d{{4}}(?: \d{{4}})+|[!-~]+|\S)[{re.escape(_CLOSING)}]*|\s+"
)


@lru_cache(maxsize=1024)
def _wrap_cached(text: str, font: str, size: float, width: float) -> tuple[str, ...]:
    lines: list[str] = []
    current = ""
    for token in _TOKEN.findall(text):
        candidate = current + token
        if stringWidth(candidate, font, size) <= width:
            current = candidate
            continue
        if token.isspace():
            lines.append(current)
            current = ""
            continue
        if current.strip():
            lines.append(current.rstrip())
        current = ""
        for char in token:  # a token wider than the line on its own is broken anywhere
            if current and stringWidth(current + char, font, size) > width:
                lines.append(current)
                current = ""
            current += char
    if current.strip() or not lines:
        lines.append(current.rstrip())
    return tuple(lines)


def _wrap(text: str, font: str, size: float, width: float) -> list[str]:
    """Text broken into lines no wider than width, for Chinese text with Latin words and numbers."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        lines.extend(_wrap_cached(paragraph, font, size, round(width, 3)))
    return lines


def _clip(lines: list[str], limit: int) -> list[str]:
    if len(lines) <= limit:
        return lines
    return lines[: limit - 1] + [lines[limit - 1][:-1] + "…"]


def _fit_size(text: str, font: str, size: float, width: float, *, char_space: float = 0,
              minimum: float = 6) -> float:
    """The largest size <= size (down to minimum) at which text fits in width."""
    natural = stringWidth(text, font, size) + char_space * len(text)
    if natural <= width:
        return size
    fitted = size * width / natural
    return max(minimum, int(fitted * 4) / 4)
