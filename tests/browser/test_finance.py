"""The finance desk in headless Chromium: upload a statement, reconcile, open an exception, resolve
it, confirm a lost callback from its statement line, download the report. Screenshots of every page
go to /tmp/finance-*.png (and artifacts/screenshots/), the report's first page as a PNG beside them."""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from core.audit import Actor
from core.clock import today
from notices.numbers import group_digits
from tests.browser.conftest import LiveServer, screenshot, sign_in
from tests.conftest import AUDIT_KEY

pytestmark = pytest.mark.browser

TZ = "Asia/Shanghai"
SHOTS = Path("/tmp")
CSV_HEADER = "bank_reference,notice_number,amount,currency,booked_at,payer_name,payer_account\n"


def _shot(page: Any, name: str) -> Path:
    path = screenshot(page, f"finance-{name}")
    target = SHOTS / f"finance-{name}.png"
    shutil.copyfile(path, target)
    return target


def _register_bank(live: LiveServer) -> str:
    from webhooks.service import BankExists, create_bank

    try:
        with live.app.app_context(), live.app.extensions["db"].unit_of_work() as session:
            create_bank(session, AUDIT_KEY, Actor.system("browser-tests"), "ICBC-B", "工商银行（测试）")
    except BankExists:
        pass  # registered by an earlier test of the module: the server lives for the whole module
    return "ICBC-B"


def _statement(live: LiveServer) -> bytes:
    """Today's CSV: a lost callback (the unpaid BDC notice, its full 80.00) and money with no number."""
    booked = f"{today(TZ).isoformat()}T10:15:02+08:00"
    return (CSV_HEADER
            + f"ICBC-LOST-1,{group_digits(live.notices['BDC'])},8000,CNY,{booked},王五,6222020200001234567\n"
            + f"ICBC-NONUM-1,,1500,CNY,{booked},李四,6222020200007654321\n").encode()


def _submit_showing_progress(page: Any, form: str, button: str, busy_text: str) -> None:
    """Submit a form, first once held back (a test listener cancels that submission) to see the
    button the page's script disabled and relabelled, then for real."""
    page.locator(form).evaluate("f => f.addEventListener('submit', e => e.preventDefault(), {once: true})")
    page.locator(button).click()
    page.wait_for_function("sel => document.querySelector(sel).disabled", arg=button)
    assert page.locator(button).inner_text() == busy_text
    _shot(page, "busy-" + form.strip("#"))
    with page.expect_navigation():
        page.locator(form).evaluate("f => setTimeout(() => f.submit(), 0)")


def _pdf_first_page(pdf: bytes, name: str) -> str:
    """Page 1 rendered at 150 dpi as /tmp/finance-<name>.png; its text."""
    import pypdfium2

    document = pypdfium2.PdfDocument(pdf)
    try:
        pdf_page = document[0]
        textpage = pdf_page.get_textpage()
        words = str(textpage.get_text_range())
        textpage.close()
        bitmap = pdf_page.render(scale=150 / 72)
        image = bitmap.to_pil()
        out = io.BytesIO()
        image.save(out, format="PNG")
        (SHOTS / f"finance-{name}.png").write_bytes(out.getvalue())
        image.close()
        bitmap.close()
        pdf_page.close()
    finally:
        document.close()
    return words


def test_finance_uploads_reconciles_resolves_and_downloads_the_report(page: Any, live_server: LiveServer) -> None:
    bank_code = _register_bank(live_server)
    sign_in(page, "finance-1")
    page.get_by_role("navigation").get_by_role("link", name="对账工作台").click()
    page.wait_for_url(re.compile(r"/finance$"))
    assert page.locator("main h1").inner_text() == "对账工作台"
    _shot(page, "01-desk-empty")

    # --- upload the statement: the button says 正在导入… while the request is on its way
    page.select_option("#bank_code", bank_code)
    page.set_input_files("#file", files=[{"name": "icbc-today.csv", "mimeType": "text/csv",
                                          "buffer": _statement(live_server)}])
    _submit_showing_progress(page, "#upload-form", "#upload-button", "正在导入…")
    page.wait_for_url(re.compile(r"/finance\?statement=\d+#import-result$"))
    assert page.locator("#import-format").inner_text() == "csv"
    assert page.locator("#import-lines").inner_text() == "2"
    assert page.locator("#import-new").inner_text() == "2"
    assert page.locator("#import-duplicates").inner_text() == "0"
    _shot(page, "02-desk-imported")

    # --- a malformed file: the error names the line, and the desk still works
    page.select_option("#bank_code", bank_code)
    page.set_input_files("#file", files=[{"name": "broken.csv", "mimeType": "text/csv",
                                          "buffer": (CSV_HEADER + "X-1,,eighty,CNY,2026-11-24,,\n").encode()}])
    with page.expect_navigation():
        page.locator("#upload-button").click()
    assert "第 2 行" in page.locator("#upload-error").inner_text()
    _shot(page, "03-desk-malformed")

    # --- reconcile today (a provisional run): 正在对账… while it works
    page.fill("#business_date", today(TZ).isoformat())
    _submit_showing_progress(page, "#run-form", "#run-button", "正在对账…")
    page.wait_for_url(re.compile(r"/finance/runs/\d+$"))
    run_url = page.url
    assert "对账结果" in page.locator("main h1").inner_text()
    assert page.locator("#exceptions tr[data-type=statement_line_unmatched]").count() == 2
    _shot(page, "04-run")

    # --- filter to open unmatched bank credits with the selects
    page.select_option("#type", "statement_line_unmatched")
    page.select_option("#status", "open")
    with page.expect_navigation():
        page.get_by_role("button", name="筛选").click()
    assert page.locator("#exceptions tbody tr[data-exception-id]").count() == 2
    _shot(page, "05-run-filtered")

    # --- the line without a notice number: open it, resolve it with a note, by keyboard
    row = page.locator("#exceptions tr", has_text="ICBC-NONUM-1")
    with page.expect_navigation():
        row.get_by_role("link", name="银行到账无对应缴费").click()
    assert "附言中没有通知书编号" in page.locator("#explanation").inner_text()
    assert page.locator("#evidence-statement").is_visible()
    _shot(page, "06-exception-open")
    page.locator("#resolve-button").click()  # the note is required: the browser keeps the form
    assert page.locator("#note").evaluate("e => !e.validity.valid")
    page.locator("#note").focus()
    page.keyboard.type("李四误汇，已联系退回")
    page.keyboard.press("Tab")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert "差异已处理" in page.locator("main").inner_text()
    assert page.locator("#resolution-note").inner_text() == "李四误汇，已联系退回"
    _shot(page, "07-exception-resolved")

    # --- the lost callback: confirm the payment from the statement line; the receipt follows
    page.goto(run_url)
    row = page.locator("#exceptions tr", has_text="ICBC-LOST-1")
    with page.expect_navigation():
        row.get_by_role("link", name="银行到账无对应缴费").click()
    assert page.locator("#evidence-notice").is_visible()
    _shot(page, "08-exception-lost-callback")
    with page.expect_navigation():
        page.locator("#confirm-button").click()
    receipt = page.locator("#confirmed-receipt").inner_text()
    assert re.fullmatch(r"\d{4}-\d{8}", receipt), receipt
    _shot(page, "09-exception-confirmed")
    with page.expect_navigation():
        page.locator("#confirmed-receipt").click()
    assert receipt in page.locator("main h1").inner_text()
    notice = live_server.api().get(f"/api/v1/notices/{live_server.notices['BDC']}",
                                   headers=live_server.staff.headers("finance")).json
    assert notice["status"] == "paid"

    # --- both resolved on the run page; download the report
    page.goto(run_url + "?status=open&type=statement_line_unmatched")
    assert page.locator("#exceptions tbody tr[data-exception-id]").count() == 0
    page.goto(run_url)
    _shot(page, "10-run-after")
    href = page.locator("#report-pdf").get_attribute("href")
    response = page.context.request.get(href)
    assert response.status == 200 and response.headers["content-type"] == "application/pdf"
    pdf = bytes(response.body())
    assert pdf.startswith(b"%PDF")
    words = _pdf_first_page(pdf, "11-report-pdf")
    assert "对账" in words
    with page.expect_download() as download:
        page.locator("#report-csv").click()
    csv_path = download.value.path()
    assert Path(csv_path).read_bytes().startswith(b"\xef\xbb\xbf")

    page.goto("/finance")
    assert page.locator("#runs tbody tr[data-run-id]").count() == 1
    _shot(page, "12-desk-after")
