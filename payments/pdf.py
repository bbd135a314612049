"""The cashier's shift report (日结单)."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from flask_babel import gettext as _
from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm

from core.clock import local
from core.money import format_yuan
from core.pdf import cjk_font, new_canvas
from payments.models import CashierShift
from payments.service import ShiftTotals


def render_shift_report(shift: CashierShift, totals: ShiftTotals, config: Mapping[str, Any]) -> bytes:
    font = cjk_font(config.get("FEESVC_PDF_FONT"))
    tz = str(config["FEESVC_TIMEZONE"])
    buffer = io.BytesIO()
    width, height = A4
    c = new_canvas(buffer, A4, font)
    c.setTitle(_("收费员日结单"))
    left, y = 20 * mm, height - 25 * mm
    c.setFont(font, 12)
    c.drawCentredString(width / 2, y, str(config.get("FEESVC_CENTRE_NAME", "")))
    c.setFont(font, 20)
    c.drawCentredString(width / 2, y - 10 * mm, _("收费员日结单"))
    y -= 24 * mm
    c.setFont(font, 11)
    closed = local(shift.closed_at, tz).strftime("%Y-%m-%d %H:%M") if shift.closed_at else _("未结")
    rows = [
        (_("收费员"), f"{shift.cashier.display_name}（{shift.cashier.username}）"),
        (_("班次编号"), str(shift.id)),
        (_("开班时间"), local(shift.opened_at, tz).strftime("%Y-%m-%d %H:%M")),
        (_("日结时间"), closed),
        (_("收费笔数"), str(totals.count)),
        (_("现金（系统记录）"), format_yuan(totals.cash)),
        (_("银行卡"), format_yuan(totals.card)),
        (_("转账"), format_yuan(totals.transfer)),
        (_("其他"), format_yuan(totals.other)),
        (_("合计"), format_yuan(totals.cash + totals.card + totals.transfer + totals.other)),
        (_("清点现金（申报）"), "—" if shift.declared_cash is None else format_yuan(shift.declared_cash)),
        (_("现金差额（申报 − 记录）"), "—" if shift.declared_cash is None
         else format_yuan(shift.declared_cash - totals.cash)),
    ]
    for label, value in rows:
        c.rect(left, y - 3 * mm, width - 2 * left, 9 * mm)
        c.drawString(left + 3 * mm, y, label)
        c.drawRightString(width - left - 3 * mm, y, value)
        y -= 9 * mm
    if shift.note:
        c.drawString(left, y - 4 * mm, _("说明：%(n)s", n=shift.note))
    c.drawString(left, 30 * mm, _("收费员签字：________________    复核人签字：________________"))
    c.showPage()
    c.save()
    return buffer.getvalue()
