"""A reconciliation run's reports: the PDF finance files and discusses, and the CSV of its
exceptions for Excel.

The summary is the run's own totals (the day as it was when the run looked); the tables per
department and per fee item are aggregate queries over the same business day. Money is fen
everywhere and becomes yuan with two decimals only here.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

from flask_babel import gettext as _
from reportlab.graphics.charts.barcharts import HorizontalBarChart
from reportlab.graphics.shapes import Drawing
from reportlab.lib import colors
from reportlab.lib.enums import TA_CENTER
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import CondPageBreak, KeepTogether, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle
from reportlab.platypus.flowables import Flowable
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from core.clock import local, utcnow
from core.models import Department
from core.money import format_yuan
from core.pdf import cjk_font
from notices.models import Notice, NoticeLine
from notices.numbers import group_digits
from payments.models import Payment, PaymentStatus
from reconciliation.matching import BusinessDay, payment_in_day  # the run's own rule for a payment's day
from reconciliation.models import ExceptionStatus, ReconciliationException, ReconciliationRun, RunStatus
from reconciliation.service import SYSTEM, ExceptionFilter, list_exceptions, run_totals
from reconciliation.texts import describe, severity, type_label

MARGIN = 15 * mm
WIDTH = A4[0] - 2 * MARGIN
HEAD_FILL = colors.HexColor("#E4E9F0")
GROUP_FILL = colors.HexColor("#F3F5F8")
TOTAL_FILL = colors.HexColor("#EEF1F5")
LINE = colors.HexColor("#9AA5B1")
ACCENT = colors.HexColor("#1F4E79")
WARN = colors.HexColor("#B22222")


# -- figures of the day ------------------------------------------------------------------------

@dataclass(frozen=True)
class DepartmentRow:
    name: str
    notices: int
    notices_amount: int
    cancelled: int
    payments: int
    paid_amount: int


@dataclass(frozen=True)
class FeeRow:
    code: str
    name: str
    department: str
    quantity: int
    standard_amount: int  # the schedule's unit amount × quantity
    amount: int  # as issued, after any reduction


def department_totals(session: Session, day: BusinessDay) -> list[DepartmentRow]:
    """Notices issued that day and that day's confirmed payments, per department."""
    in_day = (Notice.issued_at >= day.start) & (Notice.issued_at < day.end)
    issued = {dept: (n, amount, cancelled) for dept, n, amount, cancelled in session.execute(
        select(Notice.department_id, func.count(), func.coalesce(func.sum(Notice.total), 0),
               func.coalesce(func.sum(case((Notice.status == "cancelled", 1), else_=0)), 0))
        .where(in_day).group_by(Notice.department_id))}
    paid = {dept: (n, amount) for dept, n, amount in session.execute(
        select(Notice.department_id, func.count(), func.coalesce(func.sum(Payment.amount), 0))
        .join(Notice, Notice.id == Payment.notice_id)
        .where(payment_in_day(day), Payment.status == PaymentStatus.CONFIRMED)
        .group_by(Notice.department_id))}
    ids = set(issued) | set(paid)
    names = {i: name for i, name in session.execute(select(Department.id, Department.name)
                                                     .where(Department.id.in_(ids)))}
    rows = [DepartmentRow(names.get(i, str(i)), *(int(v) for v in issued.get(i, (0, 0, 0))),
                          *(int(v) for v in paid.get(i, (0, 0)))) for i in ids]
    return sorted(rows, key=lambda row: (-row.notices_amount, -row.paid_amount, row.name))


def fee_item_totals(session: Session, day: BusinessDay) -> list[FeeRow]:
    """The lines of the notices issued that day, per fee code (cancelled notices included, as in
    the run's notice totals)."""
    rows = session.execute(
        select(NoticeLine.fee_code, func.max(NoticeLine.name), Department.name,
               func.sum(NoticeLine.quantity), func.sum(NoticeLine.unit_amount * NoticeLine.quantity),
               func.sum(NoticeLine.amount))
        .join(Notice, Notice.id == NoticeLine.notice_id)
        .join(Department, Department.id == Notice.department_id)
        .where(Notice.issued_at >= day.start, Notice.issued_at < day.end)
        .group_by(NoticeLine.fee_code, Department.name)
        .order_by(Department.name, NoticeLine.fee_code)
    )
    return [FeeRow(code, name, dept, int(q), int(standard), int(amount))
            for code, name, dept, q, standard, amount in rows]


def channel_amounts(totals: Mapping[str, int]) -> list[tuple[str, int]]:
    """The day's money by channel, for the chart (the statement's credits beside, to compare)."""
    return [
        (_("窗口·现金"), totals.get("payments_cashier_cash_amount", 0)),
        (_("窗口·银行卡"), totals.get("payments_cashier_card_amount", 0)),
        (_("窗口·转账"), totals.get("payments_cashier_transfer_amount", 0)),
        (_("窗口·其他"), totals.get("payments_cashier_other_amount", 0)),
        (_("银行缴费"), totals.get("payments_bank_amount", 0)),
        (_("银行挂账"), totals.get("payments_flagged_amount", 0)),
        (_("对账单到账"), totals.get("statement_credit_amount", 0)),
    ]


def status_label(found: ReconciliationException) -> str:
    if found.status == ExceptionStatus.OPEN:
        return _("未处理")
    return _("系统关闭") if found.resolved_by == SYSTEM else _("已处理")


def severity_label(kind: str) -> str:
    return _("高") if severity(kind) == "high" else _("中")


def shown_notice_number(given: str | None) -> str:
    """A 20-digit notice number grouped as printed on the notice (Excel also keeps it as text
    then, instead of rounding it to 15 digits); anything else as given."""
    if given and len(given) == 20 and given.isdigit():
        return group_digits(given)
    return given or ""


def _yuan(fen: int | None) -> str:
    return "—" if fen is None else format_yuan(fen)


# -- the PDF -----------------------------------------------------------------------------------

class _Styles:
    def __init__(self, font: str) -> None:
        def style(name: str, size: float, **kwargs: Any) -> ParagraphStyle:
            return ParagraphStyle(name, fontName=font, fontSize=size, leading=size * 1.3, wordWrap="CJK",
                                  **kwargs)

        self.font = font
        self.centre = style("centre", 11, alignment=TA_CENTER, textColor=colors.HexColor("#444444"))
        self.title = style("title", 20, alignment=TA_CENTER, spaceBefore=2 * mm, spaceAfter=1 * mm,
                           textColor=ACCENT)
        self.heading = style("heading", 13, spaceBefore=6 * mm, spaceAfter=2.5 * mm, textColor=ACCENT)
        self.body = style("body", 9)
        self.note = style("note", 8, textColor=colors.HexColor("#555555"))
        self.warn = style("warn", 9.5, textColor=WARN)
        self.cell = style("cell", 8.5)
        self.small = style("small", 7.5)
        self.head = style("head", 8.5, alignment=TA_CENTER)


def _table(rows: Sequence[Sequence[Any]], widths: Sequence[float], styles: _Styles, *, numeric_from: int,
           extra: Iterable[tuple[Any, ...]] = (), size: float = 8.5, padding: float = 3) -> Table:
    """A ruled table with a shaded header row (wrapped, repeated on every page); numbers right-aligned."""
    head = [Paragraph(escape(cell).replace("\n", "<br/>"), styles.head) for cell in rows[0]]
    table = Table([head, *rows[1:]], colWidths=list(widths), repeatRows=1)
    table.setStyle(TableStyle([
        ("FONT", (0, 0), (-1, -1), styles.font, size, size * 1.3),
        ("BACKGROUND", (0, 0), (-1, 0), HEAD_FILL),
        ("GRID", (0, 0), (-1, -1), 0.4, LINE),
        ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
        ("ALIGN", (numeric_from, 1), (-1, -1), "RIGHT"),
        ("ALIGN", (0, 0), (-1, 0), "CENTER"),
        ("TOPPADDING", (0, 0), (-1, -1), padding),
        ("BOTTOMPADDING", (0, 0), (-1, -1), padding),
        *extra,
    ]))
    return table


def _summary(totals: Mapping[str, int], found: Sequence[ReconciliationException], styles: _Styles) -> Table:
    """The run's figures of the day; the exceptions as they stand now (resolutions come after the run)."""
    def count(key: str) -> str:
        return f"{totals.get(key, 0):,}"

    def amount(key: str) -> str:
        return format_yuan(totals.get(key, 0))

    still_open = sum(item.status == ExceptionStatus.OPEN for item in found)
    by_system = sum(item.status == ExceptionStatus.RESOLVED and item.resolved_by == SYSTEM for item in found)

    groups: list[tuple[str, list[tuple[str, str, str]]]] = [
        (_("通知书"), [(_("开具通知书"), count("notices_issued"), amount("notices_amount")),
                    (_("其中已作废"), count("notices_cancelled"), "")]),
        (_("缴费"), [
            (_("窗口缴费 · 现金"), count("payments_cashier_cash"), amount("payments_cashier_cash_amount")),
            (_("窗口缴费 · 银行卡"), count("payments_cashier_card"), amount("payments_cashier_card_amount")),
            (_("窗口缴费 · 转账"), count("payments_cashier_transfer"), amount("payments_cashier_transfer_amount")),
            (_("窗口缴费 · 其他"), count("payments_cashier_other"), amount("payments_cashier_other_amount")),
            (_("窗口缴费小计"), count("cashier_payments"), amount("cashier_amount")),
            (_("银行缴费（回调确认）"), count("payments_bank"), amount("payments_bank_amount")),
            (_("银行挂账（待处理）"), count("payments_flagged"), amount("payments_flagged_amount")),
        ]),
        (_("收据与发证"), [(_("开具收据"), count("receipts_issued"), amount("receipts_amount")),
                      (_("其中已冲红"), count("receipts_voided"), ""),
                      (_("发证"), count("certificates_issued"), "")]),
        (_("银行对账单"), [
            (_("贷方（到账）"), count("statement_credit_lines"), amount("statement_credit_amount")),
            (_("借方（仅列示）"), count("statement_debit_lines"), amount("statement_debit_amount")),
            (_("已匹配缴费的到账"), count("statement_matched_lines"), ""),
        ]),
        (_("差异（截至报表生成时）"), [
            (_("差异合计"), f"{len(found):,}", ""),
            (_("其中未处理"), f"{still_open:,}", ""),
            (_("其中已由财务处理"), f"{len(found) - still_open - by_system:,}", ""),
            (_("其中系统自动关闭"), f"{by_system:,}", ""),
        ]),
    ]
    subtotals = {_("窗口缴费小计"), _("差异合计")}
    half = WIDTH * 0.485

    def half_table(part: Sequence[tuple[str, list[tuple[str, str, str]]]]) -> Table:
        rows: list[list[str]] = [[_("项目"), _("笔数"), _("金额（元）")]]
        extra: list[tuple[Any, ...]] = []
        for title, items in part:
            extra += [("SPAN", (0, len(rows)), (-1, len(rows))),
                      ("BACKGROUND", (0, len(rows)), (-1, len(rows)), GROUP_FILL)]
            rows.append([title, "", ""])
            for label, n, money in items:
                if label in subtotals:
                    extra.append(("BACKGROUND", (0, len(rows)), (-1, len(rows)), TOTAL_FILL))
                rows.append(["    " + label, n, money])
        return _table(rows, [half * 0.5, half * 0.18, half * 0.32], styles, numeric_from=1, extra=extra,
                      size=8.5, padding=2.2)

    # Side by side, so that the chart still fits on the first page.
    both = Table([[half_table(groups[:2]), "", half_table(groups[2:])]], colWidths=[half, WIDTH - 2 * half, half])
    both.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (-1, -1), 0),
                              ("RIGHTPADDING", (0, 0), (-1, -1), 0), ("TOPPADDING", (0, 0), (-1, -1), 0),
                              ("BOTTOMPADDING", (0, 0), (-1, -1), 0)]))
    return both


def _chart(amounts: Sequence[tuple[str, int]], font: str) -> Drawing:
    """Horizontal bars: the Chinese channel names read along the left, the yuan at each bar's end."""
    bar_height, label_width = 14, 80
    height = len(amounts) * bar_height * 1.55 + 30
    drawing = Drawing(WIDTH, height)
    chart = HorizontalBarChart()
    chart.x, chart.y = label_width, 22
    chart.width, chart.height = WIDTH - label_width - 70, height - 30
    # Top to bottom in the order given (the category axis runs upwards).
    chart.data = [[fen / 100 for _label, fen in reversed(amounts)]]
    chart.categoryAxis.categoryNames = [label for label, _fen in reversed(amounts)]
    chart.categoryAxis.labels.fontName = font
    chart.categoryAxis.labels.fontSize = 9
    chart.categoryAxis.labels.boxAnchor = "e"
    chart.categoryAxis.labels.dx = -4
    chart.categoryAxis.strokeColor = LINE
    top = max((fen for _label, fen in amounts), default=0) / 100
    chart.valueAxis.valueMin = 0
    chart.valueAxis.valueMax = top * 1.05 if top > 0 else 100
    chart.valueAxis.labels.fontName = font
    chart.valueAxis.labels.fontSize = 8
    chart.valueAxis.labelTextFormat = lambda v: f"{v:,.0f}" if float(v).is_integer() else f"{v:,.2f}"
    chart.valueAxis.strokeColor = LINE
    chart.valueAxis.visibleGrid = True
    chart.valueAxis.gridStrokeColor = colors.HexColor("#DDDDDD")
    chart.bars[0].fillColor = ACCENT
    chart.bars[0].strokeColor = None
    # The statement's credits (listed last, so drawn at the bottom) are for comparison: grey.
    chart.bars[(0, 0)].fillColor = colors.HexColor("#8C9BAB")
    chart.barWidth = bar_height
    chart.barLabelFormat = lambda v: format_yuan(round(v * 100))
    chart.barLabels.fontName = font
    chart.barLabels.fontSize = 8
    chart.barLabels.boxAnchor = "w"
    chart.barLabels.dx = 3
    drawing.add(chart)
    return drawing


def _exception_rows(found: Sequence[ReconciliationException], styles: _Styles) -> list[list[Any]]:
    def para(text: str, style: ParagraphStyle) -> Paragraph:
        return Paragraph(escape(text), style)

    rows: list[list[Any]] = [[_("编号"), _("类型"), _("通知书编号 / 银行流水号"), _("应为（元）"), _("实为（元）"),
                              _("状态"), _("说明 / 处理说明")]]
    for item in found:
        refs = [shown_notice_number(item.notice_number)] if item.notice_number else []
        if item.bank_reference:
            refs.append(f"{item.bank_code or ''} {item.bank_reference}".strip())
        if item.receipt_number:
            refs.append(_("收据 %(r)s", r=item.receipt_number))
        refs = refs or ["—"]
        note = escape(describe(item))
        if item.status == ExceptionStatus.RESOLVED:
            by = _("系统") if item.resolved_by == SYSTEM else (item.resolved_by or "")
            resolution = _("处理：%(n)s（%(by)s）", n=item.resolution_note or "", by=by)
            note += f'<br/><font color="#555555">{escape(resolution)}</font>'
        rows.append([
            str(item.id),
            Paragraph(f"{escape(type_label(item.type))}<br/><font color=\"#555555\">"
                      f"{escape(_('严重程度：%(s)s', s=severity_label(item.type)))}</font>", styles.small),
            Paragraph("<br/>".join(escape(r) for r in refs), styles.small),
            _yuan(item.expected_amount), _yuan(item.actual_amount),
            para(status_label(item), styles.small),
            Paragraph(note, styles.small),
        ])
    return rows


def _by_type(found: Sequence[ReconciliationException], styles: _Styles) -> Table:
    counts: dict[str, list[int]] = {}
    for item in found:
        entry = counts.setdefault(item.type, [0, 0])
        entry[0] += 1
        entry[1] += item.status == ExceptionStatus.OPEN
    rows = [[_("差异类型"), _("严重程度"), _("共计"), _("未处理")]]
    rows += [[type_label(kind), severity_label(kind), str(n), str(open_n)] for kind, (n, open_n) in counts.items()]
    return _table(rows, [WIDTH * 0.55, WIDTH * 0.15, WIDTH * 0.15, WIDTH * 0.15], styles, numeric_from=2)


def _page_decorations(font: str, heading: str, provisional: bool, generated: str) -> Callable[..., Canvas]:
    """A canvas that, once the page count is known, puts 第 N 页，共 M 页 on every page, a running
    head on pages after the first, and the 临时 mark on a provisional run's pages."""

    class ReportCanvas(Canvas):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._pages: list[dict[str, Any]] = []

        def showPage(self) -> None:
            self._pages.append(dict(self.__dict__))
            self._startPage()

        def save(self) -> None:
            total = len(self._pages)
            for state in self._pages:
                self.__dict__.update(state)
                self._decorate(total)
                super().showPage()
            super().save()

        def _decorate(self, total: int) -> None:
            width, height = A4
            number = self.getPageNumber()
            self.saveState()
            self.setStrokeColor(LINE)
            self.setLineWidth(0.5)
            self.setFillColor(colors.HexColor("#555555"))
            self.setFont(font, 8)
            if number > 1:
                self.drawString(MARGIN, height - 11 * mm, heading)
                self.line(MARGIN, height - 13 * mm, width - MARGIN, height - 13 * mm)
            self.line(MARGIN, 12 * mm, width - MARGIN, 12 * mm)
            self.drawString(MARGIN, 8 * mm, generated)
            self.setFont(font, 9)
            self.drawRightString(width - MARGIN, 8 * mm, _("第 %(n)s 页，共 %(m)s 页", n=number, m=total))
            if provisional:
                self.setStrokeColor(WARN)
                self.setFillColor(WARN)
                self.setLineWidth(1.2)
                self.roundRect(width - MARGIN - 14 * mm, height - 11.8 * mm, 14 * mm, 7 * mm, 1.5 * mm)
                self.setFont(font, 11)
                self.drawCentredString(width - MARGIN - 7 * mm, height - 9.7 * mm, _("临时"))
            self.restoreState()

    return ReportCanvas


def render_pdf(session: Session, run: ReconciliationRun, config: Mapping[str, Any]) -> bytes:
    font = cjk_font(config.get("FEESVC_PDF_FONT"))
    tz = str(config["FEESVC_TIMEZONE"])
    styles = _Styles(font)
    day = BusinessDay.of(run.business_date, tz)
    totals = run_totals(run)
    found = list_exceptions(session, run, ExceptionFilter())
    open_count = sum(item.status == ExceptionStatus.OPEN for item in found)
    centre = str(config.get("FEESVC_CENTRE_NAME", ""))
    title = _("收费对账报告")
    business_date = run.business_date.isoformat()
    generated = _("生成时间：%(t)s", t=local(utcnow(), tz).strftime("%Y-%m-%d %H:%M:%S"))

    def when(moment: Any) -> str:
        return local(moment, tz).strftime("%Y-%m-%d %H:%M:%S") if moment else "—"

    status_names = {RunStatus.COMPLETED: _("已完成"), RunStatus.RUNNING: _("进行中"), RunStatus.FAILED: _("失败")}
    meta = [
        [_("业务日期"), business_date, _("对账编号"), str(run.id)],
        [_("对账状态"), status_names.get(RunStatus(run.status), run.status)
         + (_("（临时）") if run.provisional else ""), _("发起人"), run.started_by],
        [_("开始时间"), when(run.started_at), _("完成时间"), when(run.finished_at)],
    ]
    meta_table = Table(meta, colWidths=[WIDTH * 0.14, WIDTH * 0.36, WIDTH * 0.14, WIDTH * 0.36])
    meta_table.setStyle(TableStyle([
        ("FONT", (0, 0), (-1, -1), font, 9, 12),
        ("TEXTCOLOR", (0, 0), (0, -1), colors.HexColor("#555555")),
        ("TEXTCOLOR", (2, 0), (2, -1), colors.HexColor("#555555")),
        ("LINEABOVE", (0, 0), (-1, 0), 0.8, ACCENT),
        ("LINEBELOW", (0, -1), (-1, -1), 0.8, ACCENT),
        ("TOPPADDING", (0, 0), (-1, -1), 2.5),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 2.5),
    ]))

    story: list[Flowable] = [Paragraph(escape(centre), styles.centre),
                             Paragraph(escape(title) + (f'<font color="#B22222">{escape(_("（临时）"))}</font>'
                                                        if run.provisional else ""), styles.title),
                             Spacer(1, 3 * mm), meta_table, Spacer(1, 2 * mm)]
    if run.provisional:
        story.append(Paragraph(escape(_("当日尚未结束，本报告为临时结果；日终后将重新对账。")), styles.warn))
    if run.status != RunStatus.COMPLETED:
        story.append(Paragraph(escape(_("本次对账未完成，汇总数字不可用。%(e)s", e=run.error or "")), styles.warn))

    story += [Paragraph(escape(_("一、汇总")), styles.heading), _summary(totals, found, styles)]

    amounts = channel_amounts(totals)
    story.append(KeepTogether([
        Paragraph(escape(_("二、当日各渠道金额（元）")), styles.heading), _chart(amounts, font),
        Paragraph(escape(_("窗口与银行缴费按记录或到账时间归入当日；银行挂账为无法对应通知书或金额不符而暂挂的款项；"
                           "对账单到账为已导入的银行对账单当日贷方合计，供与银行缴费对照。")), styles.note),
    ]))

    story += _department_section(department_totals(session, day), styles)
    story += _fee_section(fee_item_totals(session, day), styles)

    story += [CondPageBreak(50 * mm), Paragraph(escape(_("五、差异清单（共 %(n)s 项，未处理 %(o)s 项）", n=len(found),
                                                          o=open_count)), styles.heading)]
    if found:
        story += [_by_type(found, styles), Spacer(1, 4 * mm),
                  _table(_exception_rows(found, styles), [WIDTH * w for w in (0.06, 0.19, 0.2, 0.1, 0.1, 0.08, 0.27)],
                         styles, numeric_from=3, size=7.5,
                         extra=[("ALIGN", (5, 1), (-1, -1), "LEFT"), ("VALIGN", (0, 1), (-1, -1), "TOP"),
                                ("LEFTPADDING", (0, 0), (-1, -1), 4), ("RIGHTPADDING", (0, 0), (-1, -1), 4)])]
    else:
        story.append(Paragraph(escape(_("本日无差异。")), styles.body))

    buffer = io.BytesIO()
    document = SimpleDocTemplate(buffer, pagesize=A4, leftMargin=MARGIN, rightMargin=MARGIN, topMargin=17 * mm,
                                 bottomMargin=18 * mm, title=f"{title} {business_date}", author=centre,
                                 initialFontName=font, pageCompression=1)
    heading = f"{centre}  {title}  {_('业务日期')} {business_date}  {_('对账编号')} {run.id}"
    document.build(story, canvasmaker=_page_decorations(font, heading, run.provisional, generated))
    return buffer.getvalue()


def _department_section(departments: Sequence[DepartmentRow], styles: _Styles) -> list[Flowable]:
    dept_rows: list[list[Any]] = [[_("部门"), _("开具通知书\n（张）"), _("开具金额\n（元）"), _("其中作废\n（张）"),
                                   _("确认缴费\n（笔）"), _("缴费金额\n（元）")]]
    dept_rows += [[Paragraph(escape(r.name), styles.cell), f"{r.notices:,}", format_yuan(r.notices_amount),
                   f"{r.cancelled:,}", f"{r.payments:,}", format_yuan(r.paid_amount)] for r in departments]
    dept_rows.append([_("合计"), f"{sum(r.notices for r in departments):,}",
                      format_yuan(sum(r.notices_amount for r in departments)),
                      f"{sum(r.cancelled for r in departments):,}", f"{sum(r.payments for r in departments):,}",
                      format_yuan(sum(r.paid_amount for r in departments))])
    return [CondPageBreak(40 * mm), Paragraph(escape(_("三、分部门汇总")), styles.heading),
              _table(dept_rows, [WIDTH * w for w in (0.28, 0.13, 0.16, 0.12, 0.13, 0.18)], styles, numeric_from=1,
                     extra=[("BACKGROUND", (0, -1), (-1, -1), TOTAL_FILL)]),
              Spacer(1, 1.5 * mm),
              Paragraph(escape(_("开具：当日开具的通知书（含其后作废的）；缴费：当日已确认且仍有效的缴费，按通知书所属部门。")),
                        styles.note)]


def _fee_section(fees: Sequence[FeeRow], styles: _Styles) -> list[Flowable]:
    fee_rows: list[list[Any]] = [[_("收费代码"), _("收费项目"), _("部门"), _("数量"), _("按标准（元）"),
                                  _("减免（元）"), _("开具金额（元）")]]
    fee_rows += [[Paragraph(escape(r.code), styles.small), Paragraph(escape(r.name), styles.small),
                  Paragraph(escape(r.department), styles.small), f"{r.quantity:,}", format_yuan(r.standard_amount),
                  format_yuan(r.standard_amount - r.amount), format_yuan(r.amount)] for r in fees]
    fee_rows.append([_("合计"), "", "", f"{sum(r.quantity for r in fees):,}",
                     format_yuan(sum(r.standard_amount for r in fees)),
                     format_yuan(sum(r.standard_amount - r.amount for r in fees)),
                     format_yuan(sum(r.amount for r in fees))])
    return [CondPageBreak(40 * mm), Paragraph(escape(_("四、分收费项目汇总")), styles.heading),
              _table(fee_rows, [WIDTH * w for w in (0.12, 0.27, 0.17, 0.08, 0.13, 0.10, 0.13)], styles, numeric_from=3,
                     extra=[("BACKGROUND", (0, -1), (-1, -1), TOTAL_FILL), ("SPAN", (0, -1), (2, -1))])]


# -- the CSV -----------------------------------------------------------------------------------

# A spreadsheet runs a cell that starts like a formula (OWASP "CSV injection"); the full-width
# forms are what Chinese input methods type, and cost nothing to include.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "＝", "＋", "－", "＠")
_PLAIN_NEGATIVE = re.compile(r"-[0-9]+(?:\.[0-9]+)?")


def safe_cell(value: object) -> str:
    text = "" if value is None else str(value)
    if text.startswith(_FORMULA_START) and not _PLAIN_NEGATIVE.fullmatch(text):
        return "'" + text
    return text


def render_csv(session: Session, run: ReconciliationRun) -> bytes:
    """All the run's exceptions, open and resolved: UTF-8 with a BOM and CRLF, as Excel expects."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([_("编号"), _("类型"), _("类型代码"), _("严重程度"), _("通知书编号"), _("缴费编号"), _("收据号"),
                     _("对账单行"), _("银行"), _("银行流水号"), _("应为(元)"), _("实为(元)"), _("说明"), _("状态"),
                     _("处理说明"), _("处理人")])
    for item in list_exceptions(session, run, ExceptionFilter()):
        writer.writerow([safe_cell(value) for value in (
            item.id, type_label(item.type), item.type, severity_label(item.type),
            shown_notice_number(item.notice_number), item.payment_id, item.receipt_number, item.statement_line_id,
            item.bank_code, item.bank_reference,
            "" if item.expected_amount is None else format_yuan(item.expected_amount, grouping=False),
            "" if item.actual_amount is None else format_yuan(item.actual_amount, grouping=False),
            describe(item), status_label(item), item.resolution_note, item.resolved_by,
        )])
    return ("\ufeff" + out.getvalue()).encode("utf-8")
