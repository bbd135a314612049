"""The printed payment notice (缴款通知书): A4 or A5 portrait, embedded CJK font, Code 128."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from flask_babel import gettext as _
from reportlab.lib.pagesizes import A4, A5
from reportlab.lib.units import mm
from reportlab.lib.utils import simpleSplit
from reportlab.pdfgen.canvas import Canvas

from core.clock import local
from core.money import chinese_capitals, format_yuan
from core.pdf import BARCODE_BAR_WIDTH, cjk_font, code128_width, draw_code128
from notices.models import Notice, NoticeStatus
from notices.numbers import group_digits

PAPER_SIZES = {"A4": A4, "A5": A5}
# The layout is drawn in A4 units and scaled for A5; the barcode is widened to compensate so
# that its narrowest bar stays >= 0.25 mm on paper.
_LAYOUT_WIDTH, _LAYOUT_HEIGHT = A4
MARGIN = 18 * mm


def mask_id_number(value: str | None) -> str:
    if not value:
        return ""
    if len(value) <= 6:
        return value[0] + "*" * (len(value) - 1)
    return value[:3] + "*" * (len(value) - 7) + value[-4:]


def render_notice_pdf(notice: Notice, config: Mapping[str, Any], *, paper: str = "A4") -> bytes:
    font = cjk_font(config.get("FEESVC_PDF_FONT"))
    page_width, page_height = PAPER_SIZES[paper]
    scale = page_width / _LAYOUT_WIDTH
    buffer = io.BytesIO()
    canvas = Canvas(buffer, pagesize=(page_width, page_height), pageCompression=1)
    canvas.setTitle(f"{_('缴款通知书')} {notice.number}")
    canvas.setAuthor(str(config.get("FEESVC_CENTRE_NAME", "")))
    canvas.scale(scale, scale)
    _draw(canvas, notice, config, font, scale)
    canvas.showPage()
    canvas.save()
    return buffer.getvalue()


def _draw(canvas: Canvas, notice: Notice, config: Mapping[str, Any], font: str, scale: float) -> None:
    tz = str(config["FEESVC_TIMEZONE"])
    left, right = MARGIN, _LAYOUT_WIDTH - MARGIN
    y = _LAYOUT_HEIGHT - MARGIN

    canvas.setFont(font, 12)
    canvas.drawCentredString(_LAYOUT_WIDTH / 2, y - 4 * mm, str(config.get("FEESVC_CENTRE_NAME", "")))
    canvas.setFont(font, 22)
    canvas.drawCentredString(_LAYOUT_WIDTH / 2, y - 14 * mm, _("缴款通知书"))
    canvas.setFont(font, 9)
    canvas.drawCentredString(_LAYOUT_WIDTH / 2, y - 20 * mm, _("（审批与收费相分离 · 本通知书不作收款凭证）"))
    y -= 28 * mm

    # The number for people (groups of four) and for scanners (Code 128 of the 20 digits).
    canvas.setFont(font, 10)
    canvas.drawString(left, y, _("通知书编号"))
    canvas.setFont("Courier-Bold", 16)
    canvas.drawString(left, y - 7 * mm, group_digits(notice.number))
    bar_width = BARCODE_BAR_WIDTH / scale
    barcode_width = code128_width(notice.number, bar_width)
    draw_code128(canvas, notice.number, right - barcode_width, y - 10 * mm, height=15 * mm,
                 bar_width=bar_width)
    y -= 18 * mm

    issued = local(notice.issued_at, tz)
    facts = [
        (_("开具部门"), notice.department.name, _("开具日期"), issued.strftime("%Y-%m-%d")),
        (_("缴款人"), notice.payer_name, _("证件号码"), mask_id_number(notice.payer_id_number)),
        (_("业务编号"), notice.case_reference or "—", _("缴费期限"),
         _("%(d)s 前（含当日）", d=notice.due_date.isoformat())),
    ]
    canvas.setLineWidth(0.6)
    row_h = 8 * mm
    mid = left + (right - left) / 2
    for label_a, value_a, label_b, value_b in facts:
        canvas.rect(left, y - row_h, right - left, row_h)
        canvas.setFont(font, 10)
        canvas.drawString(left + 2 * mm, y - 5.5 * mm, label_a)
        canvas.drawString(mid + 2 * mm, y - 5.5 * mm, label_b)
        canvas.setFont(font, 11)
        canvas.drawString(left + 22 * mm, y - 5.5 * mm, _fit(value_a, font, 11, mid - left - 24 * mm))
        canvas.drawString(mid + 22 * mm, y - 5.5 * mm, _fit(value_b, font, 11, right - mid - 24 * mm))
        y -= row_h
    y -= 6 * mm

    y = _draw_lines(canvas, notice, font, left, right, y)

    canvas.setFont(font, 11)
    canvas.drawString(left, y - 6 * mm, _("合计（小写）：¥ %(amount)s", amount=format_yuan(notice.total)))
    canvas.setFont(font, 13)
    canvas.drawString(left, y - 14 * mm, _("合计（大写）：人民币%(words)s", words=chinese_capitals(notice.total)))
    y -= 24 * mm

    canvas.setFont(font, 11)
    canvas.drawString(left, y, _("缴费方式"))
    canvas.setFont(font, 10)
    ways = [
        _("1. 到本中心收费窗口缴费：出示本通知书，收费员扫描条码。可用现金、银行卡或转账。"),
        _("2. 到任一合作银行柜台、自助设备或手机银行缴费：输入通知书编号 %(n)s。", n=group_digits(notice.number)),
        _("3. 请在缴费期限前缴费，逾期本通知书失效，需回受理窗口重新开具。"),
        _("4. 缴费后凭收据到受理窗口办理发证；收据可在本中心网站凭验证码查验真伪。"),
        _("5. 所列收费均依据公开的收费标准，如有疑问可向财务部门或监督电话反映。"),
    ]
    for way in ways:
        for part in simpleSplit(way, font, 10, right - left - 4 * mm):
            y -= 5.5 * mm
            canvas.drawString(left + 2 * mm, y, part)

    canvas.setFont(font, 9)
    canvas.drawString(left, MARGIN, _("开具人：%(who)s　　开具时间：%(at)s",
                                      who=notice.issued_by.display_name, at=issued.strftime("%Y-%m-%d %H:%M")))
    if notice.status in (NoticeStatus.CANCELLED, NoticeStatus.PAID):
        _stamp(canvas, font, _("已作废") if notice.status == NoticeStatus.CANCELLED else _("已缴费"))


def _draw_lines(canvas: Canvas, notice: Notice, font: str, left: float, right: float, y: float) -> float:
    columns = [(0, _("序号")), (12, _("收费项目")), (92, _("单位")), (106, _("数量")),
               (122, _("单价（元）")), (148, _("金额（元）"))]
    xs = [left + offset * mm for offset, _title in columns] + [right]
    name_width = xs[2] - xs[1] - 3 * mm
    row_h = 8 * mm
    rows = []
    for line in notice.lines:
        name_lines = simpleSplit(line.name, font, 10, name_width)
        extra = []
        if line.override_reason:
            extra = simpleSplit(_("减免：%(r)s（标准 %(full)s 元）", r=line.override_reason,
                                  full=format_yuan(line.unit_amount * line.quantity)), font, 8, name_width)
        rows.append((line, name_lines, extra, max(row_h, (len(name_lines) * 4.5 + len(extra) * 4 + 3.5) * mm)))
    table_top = y
    canvas.setFillGray(0.92)
    canvas.rect(left, y - row_h, right - left, row_h, fill=1, stroke=1)
    canvas.setFillGray(0)
    canvas.setFont(font, 10)
    for (_offset, title), x in zip(columns, xs, strict=False):
        canvas.drawString(x + 1.5 * mm, y - 5.5 * mm, title)
    y -= row_h
    for line, name_lines, extra, height in rows:
        canvas.rect(left, y - height, right - left, height)
        canvas.setFont(font, 10)
        canvas.drawString(xs[0] + 1.5 * mm, y - 5.5 * mm, str(line.position + 1))
        text_y = y - 5.5 * mm
        for part in name_lines:
            canvas.drawString(xs[1] + 1.5 * mm, text_y, part)
            text_y -= 4.5 * mm
        canvas.setFont(font, 8)
        for part in extra:
            canvas.drawString(xs[1] + 1.5 * mm, text_y + 0.5 * mm, part)
            text_y -= 4 * mm
        canvas.setFont(font, 10)
        canvas.drawString(xs[2] + 1.5 * mm, y - 5.5 * mm, line.unit)
        canvas.drawRightString(xs[4] - 1.5 * mm, y - 5.5 * mm, str(line.quantity))
        canvas.drawRightString(xs[5] - 1.5 * mm, y - 5.5 * mm, format_yuan(line.unit_amount))
        canvas.drawRightString(xs[6] - 1.5 * mm, y - 5.5 * mm, format_yuan(line.amount))
        y -= height
    for x in xs[1:-1]:
        canvas.line(x, y, x, table_top)
    return y


def _fit(text: str, font: str, size: float, width: float) -> str:
    from reportlab.pdfbase.pdfmetrics import stringWidth

    if stringWidth(text, font, size) <= width:
        return text
    while text and stringWidth(text + "…", font, size) > width:
        text = text[:-1]
    return text + "…"


def _stamp(canvas: Canvas, font: str, word: str) -> None:
    canvas.saveState()
    canvas.setFillColorRGB(0.8, 0.1, 0.1, alpha=0.35)
    canvas.setFont(font, 72)
    canvas.translate(_LAYOUT_WIDTH / 2, _LAYOUT_HEIGHT / 2)
    canvas.rotate(30)
    canvas.drawCentredString(0, 0, word)
    canvas.restoreState()
