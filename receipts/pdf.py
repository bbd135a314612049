"""The printed receipt (收据): lines, totals in figures and capitals, who took the money, and a
QR code of the public verification URL."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from flask_babel import gettext as _
from reportlab.lib.pagesizes import A5, landscape
from reportlab.lib.units import mm
from sqlalchemy.orm import Session

from core.clock import local
from core.money import chinese_capitals, format_yuan
from core.pdf import cjk_font, draw_qr, fit_text, new_canvas, stamp
from notices.numbers import group_digits
from receipts.models import Receipt, ReceiptStatus
from receipts.service import verification_url

PAGE = landscape(A5)
METHOD_NAMES = {"cash": "现金", "card": "银行卡", "transfer": "转账", "other": "其他"}


def render_receipt_pdf(session: Session, receipt: Receipt, config: Mapping[str, Any], base_url: str, *,
                       is_copy: bool) -> bytes:
    from payments.models import Payment  # read-only: the receipt names how it was paid

    payment = session.get(Payment, receipt.payment_id)
    assert payment is not None
    font = cjk_font(config.get("FEESVC_PDF_FONT"))
    tz = str(config["FEESVC_TIMEZONE"])
    notice = receipt.notice
    buffer = io.BytesIO()
    width, height = PAGE
    c = new_canvas(buffer, PAGE, font)
    c.setTitle(f"{_('收据')} {receipt.number}")
    left, right, top = 14 * mm, width - 14 * mm, height - 12 * mm

    c.setFont(font, 11)
    c.drawCentredString(width / 2, top - 2 * mm, str(config.get("FEESVC_CENTRE_NAME", "")))
    c.setFont(font, 18)
    c.drawCentredString(width / 2, top - 10 * mm, _("政务服务收费收据"))
    c.setFont(font, 10)
    c.drawString(left, top - 18 * mm, _("收据编号：%(n)s", n=receipt.number))
    c.drawRightString(right, top - 18 * mm, _("收款时间：%(t)s", t=local(receipt.issued_at, tz).strftime(
        "%Y-%m-%d %H:%M:%S")))
    if is_copy:
        c.setFillColorRGB(0.7, 0.1, 0.1)
        c.setFont(font, 14)
        c.drawString(right - 20 * mm, top - 4 * mm, _("补打"))
        c.setFillGray(0)

    y = top - 24 * mm
    facts = [
        (_("缴款人"), notice.payer_name),
        (_("开具部门"), notice.department.name),
        (_("通知书编号"), group_digits(notice.number)),
    ]
    c.setFont(font, 10)
    for label, value in facts:
        c.drawString(left, y, f"{label}：{value}")
        y -= 5.5 * mm

    y -= 1 * mm
    # The table stays left of the QR code (right - 38 mm); amounts are right-aligned.
    table_right = right - 40 * mm
    name_width = 84 * mm
    quantity_x, unit_price_right = left + 86 * mm, left + 122 * mm
    c.setLineWidth(0.5)
    c.line(left, y + 3.5 * mm, table_right, y + 3.5 * mm)
    c.drawString(left, y - 1 * mm, _("收费项目"))
    c.drawString(quantity_x, y - 1 * mm, _("数量"))
    c.drawRightString(unit_price_right, y - 1 * mm, _("单价"))
    c.drawRightString(table_right, y - 1 * mm, _("金额（元）"))
    y -= 6 * mm
    for line in notice.lines:
        name = line.name + (_("（减免：%(r)s）", r=line.override_reason) if line.override_reason else "")
        c.drawString(left, y, fit_text(name, font, 10, name_width))
        c.drawString(quantity_x, y, f"{line.quantity} {line.unit}")
        c.drawRightString(unit_price_right, y, format_yuan(line.unit_amount))
        c.drawRightString(table_right, y, format_yuan(line.amount))
        y -= 5 * mm
    c.line(left, y + 3 * mm, table_right, y + 3 * mm)
    y -= 2 * mm
    c.setFont(font, 11)
    c.drawString(left, y, _("合计（小写）：¥ %(a)s", a=format_yuan(receipt.amount)))
    y -= 6 * mm
    c.drawString(left, y, _("合计（大写）：人民币%(w)s", w=chinese_capitals(receipt.amount)))
    y -= 7 * mm
    c.setFont(font, 10)
    if payment.channel == "bank":
        how = _("银行代收（%(bank)s，流水号 %(ref)s）", bank=payment.bank_code, ref=payment.bank_reference)
    else:
        how = _("收费窗口 · %(m)s", m=METHOD_NAMES.get(payment.method, payment.method))
    c.drawString(left, y, _("缴费方式：%(how)s", how=how))
    y -= 5.5 * mm
    c.drawString(left, y, _("收款人：%(who)s", who=receipt.issued_by))

    url = verification_url(base_url, receipt)
    qr_size = 34 * mm
    draw_qr(c, url, right - qr_size, top - 24 * mm - qr_size, qr_size)
    c.setFont(font, 8)
    c.drawCentredString(right - qr_size / 2, top - 27 * mm - qr_size, _("扫码核验真伪"))
    c.drawCentredString(right - qr_size / 2, top - 31 * mm - qr_size, _("验证码 %(c)s", c=receipt.verification_code))

    c.setFont(font, 8)
    c.drawString(left, 10 * mm, _("核验地址：%(u)s", u=url))
    c.drawString(left, 6 * mm, _("本收据是缴费的唯一凭证，请妥善保管；凭有效收据到受理窗口办理发证。"))
    if receipt.status == ReceiptStatus.VOIDED:
        stamp(c, font, _("已冲红作废"), width / 2, height / 2, size=54)
    elif is_copy:
        stamp(c, font, _("补打"), width / 2, height / 2, size=54)
    c.showPage()
    c.save()
    return buffer.getvalue()
