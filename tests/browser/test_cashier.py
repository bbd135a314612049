"""The cashier window, receipts, the certificate gate and 日结, in headless Chromium.

Money is taken with the keyboard alone (a barcode scanner is a keyboard that types the 20 digits
and Enter); every refusal is shown in large text before any pay form appears; the receipt PDF's QR
code is decoded and followed to the public verification page. Screenshots: artifacts/screenshots/2x-*.
"""

from __future__ import annotations

import io
import re
import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text

from core.audit import Actor
from core.clock import today, utcnow
from notices.numbers import compose_notice_number, group_digits
from tests.browser.conftest import SCREENSHOTS, LiveServer, screenshot, sign_in
from tests.conftest import AUDIT_KEY, PASSWORD

pytestmark = pytest.mark.browser

RECEIPT_NUMBER = re.compile(r"\d{4}-\d{8}")
BDC_ZZ = 8000  # the demo schedule's 不动产权证书工本费, in fen: one line of it is every notice's total here


# ---------------------------------------------------------------------------------------------- helpers


def _assert_focus(page: Any, element_id: str) -> None:
    """The keyboard focus is (or within 2 s comes to be) on the element with this id."""
    try:
        page.wait_for_function("id => document.activeElement && document.activeElement.id === id",
                               arg=element_id, timeout=2_000)
    except Exception:
        focused = page.evaluate("document.activeElement && (document.activeElement.id || document.activeElement.name"
                                " || document.activeElement.tagName)")
        raise AssertionError(f"focus is on {focused!r}, not {element_id!r}") from None


def _keyboard_sign_in(page: Any, username: str, target: str) -> None:
    """Open a staff page, get sent to the login form, sign in with the keyboard, land on the page."""
    page.goto(target)
    page.wait_for_url(re.compile(r"/login\?next="))
    _assert_focus(page, "username")
    page.keyboard.type(username)
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(re.escape(target) + r"\??$"))


def _scan(page: Any, number: str) -> None:
    """What a scanner does: type the characters and Enter, wherever the focus is on the cashier page."""
    with page.expect_navigation():
        page.keyboard.type(number)
        page.keyboard.press("Enter")
    shown = page.locator("#number")
    assert shown.count() == 0 or shown.input_value() == number.strip(), "the scan was added to an old number"


def _payments_of(live: LiveServer, number: str) -> list[tuple[str, str, int]]:
    """(method, status, amount) of every payment row of the notice, straight from the database."""
    with live.app.extensions["db"].engine.connect() as conn:
        rows = conn.execute(text("SELECT p.method, p.status, p.amount FROM payments p JOIN notices n "
                                 "ON n.id = p.notice_id WHERE n.number = :n ORDER BY p.id"), {"n": number}).all()
    return [(str(m), str(s), int(a)) for m, s, a in rows]


def _receipt_count(live: LiveServer, number: str) -> int:
    with live.app.extensions["db"].engine.connect() as conn:
        return int(conn.scalar(text("SELECT count(*) FROM receipts r JOIN notices n ON n.id = r.notice_id "
                                    "WHERE n.number = :n"), {"n": number}) or 0)


def _api_notice(live: LiveServer, number: str) -> dict[str, Any]:
    response = live.api().get(f"/api/v1/notices/{number}", headers=live.staff.headers("cashier"))
    assert response.status_code == 200, response.json
    return dict(response.json)


def _api_pay(live: LiveServer, number: str, method: str = "cash", who: str = "cashier",
             headers: dict[str, str] | None = None) -> dict[str, Any]:
    """Pay through the API (not the page under test); returns the receipt as the API shows it."""
    response = live.api().post(f"/api/v1/notices/{number}/payments", json={"amount": BDC_ZZ, "method": method},
                               headers=headers or live.staff.headers(who, **{"Idempotency-Key": uuid.uuid4().hex}))
    assert response.status_code == 201, response.json
    return dict(response.json["receipt"])


def _api_certificate(live: LiveServer, number: str) -> None:
    response = live.api().post(f"/api/v1/notices/{number}/certificate", json={},
                               headers=live.staff.headers("window", **{"Idempotency-Key": uuid.uuid4().hex}))
    assert response.status_code == 201, response.json


def _font_px(locator: Any) -> float:
    return float(locator.evaluate("e => parseFloat(getComputedStyle(e).fontSize)"))


def _assert_no_pay_form(page: Any) -> None:
    assert page.locator("#pay-form").count() == 0
    assert page.locator("#confirm").count() == 0
    assert page.locator("input[name=method]").count() == 0


def _pdf_pages(pdf: bytes, name: str) -> tuple[bytes, str]:
    """Page 1 rendered at 200 dpi (saved as artifacts/screenshots/<name>.png) and its text."""
    import pypdfium2

    assert pdf.startswith(b"%PDF")
    document = pypdfium2.PdfDocument(pdf)
    try:
        pdf_page = document[0]
        textpage = pdf_page.get_textpage()
        words = textpage.get_text_range()
        textpage.close()
        bitmap = pdf_page.render(scale=200 / 72)
        image = bitmap.to_pil()
        out = io.BytesIO()
        image.save(out, format="PNG")
        image.close()
        bitmap.close()
        pdf_page.close()
    finally:
        document.close()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    (SCREENSHOTS / f"{name}.png").write_bytes(out.getvalue())
    return out.getvalue(), words


def _decode_qr(png: bytes) -> list[str]:
    import zxingcpp
    from PIL import Image

    qr_only = zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.QRCode)
    with Image.open(io.BytesIO(png)) as image:
        return [b.text for b in zxingcpp.read_barcodes(image.convert("L"), formats=qr_only)]


def _get_pdf(page: Any, href: str) -> bytes:
    """The PDF behind a link, fetched with the page's own session cookie."""
    response = page.context.request.get(href)
    assert response.status == 200, response.status
    assert response.headers["content-type"] == "application/pdf"
    return bytes(response.body())


# ---------------------------------------------------------------------------------------------- tests


def test_cashier_takes_money_with_the_keyboard_alone_and_a_double_enter_pays_once(
        page: Any, live_server: LiveServer) -> None:
    number = live_server.issue("BDC", payer={"name": "张三"})
    _keyboard_sign_in(page, "cashier-1", "/cashier")
    _assert_focus(page, "number")
    screenshot(page, "20-cashier-ready")

    # the scanner (or a person) types the number; spaces as printed on the notice are fine
    _scan(page, group_digits(number))
    assert re.search(r"/cashier\?number=", page.url)
    panel = page.locator(".notice-panel")
    assert "张三" in panel.inner_text() and "县不动产登记中心" in panel.inner_text()
    assert page.locator("#amount-due").inner_text().strip() == "¥ 80.00"
    assert "捌拾元整" in panel.inner_text()
    assert page.locator("#cashier-error, #cashier-blocked").count() == 0
    # the first method (现金) has the focus, ready for the arrow keys
    assert page.evaluate("[document.activeElement.name, document.activeElement.value]") == ["method", "cash"]
    screenshot(page, "21-cashier-notice")

    assert "现金" in page.locator("#confirm").inner_text()
    # arrow keys choose the method (the confirm button names it); Enter on it only moves on to the button
    page.keyboard.press("ArrowRight")
    assert page.locator("input[name=method]:checked").get_attribute("value") == "card"
    assert page.locator("#confirm-method").inner_text() == "银行卡"
    page.keyboard.press("Enter")
    _assert_focus(page, "confirm")
    assert re.search(r"/cashier\?number=", page.url), "Enter on a method must not submit the payment"
    assert _payments_of(live_server, number) == []
    assert "80.00" in page.locator("#confirm").inner_text()
    screenshot(page, "21b-cashier-method-chosen")
    form = page.evaluate("Object.fromEntries(new FormData(document.getElementById('pay-form')))")

    # the deliberate Enter takes the money; an impatient second Enter must not take it again
    page.keyboard.press("Enter")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/cashier/receipts/\d{4}-\d{8}$"))
    receipt = page.url.rsplit("/", 1)[1]
    banner = page.locator("#paid-banner").inner_text()
    assert "收费成功" in banner and receipt in banner and "80.00" in banner
    assert page.locator("#receipt-number").inner_text().strip() == receipt
    _assert_focus(page, "print-receipt")  # the next Enter prints
    assert page.locator("#print-receipt").get_attribute("href") == f"/receipts/{receipt}/print"
    screenshot(page, "22-cashier-paid-receipt")

    assert _payments_of(live_server, number) == [("card", "confirmed", BDC_ZZ)]
    assert _receipt_count(live_server, number) == 1
    assert _api_notice(live_server, number)["status"] == "paid"

    # the same form sent again (a resubmit, a double click that got through) shows the first receipt
    again = page.context.request.post("/cashier/pay", form=form, max_redirects=0)
    assert again.status == 303 and again.headers["location"].endswith(f"/cashier/receipts/{receipt}")
    # a fresh form for the same notice (another tab) is refused: it is paid already
    other = page.context.request.post("/cashier/pay", form={**form, "idempotency_key": uuid.uuid4().hex},
                                      max_redirects=0)
    assert other.status == 409 and "已经缴费" in other.text()
    assert _payments_of(live_server, number) == [("card", "confirmed", BDC_ZZ)]
    assert _receipt_count(live_server, number) == 1

    # the next scan starts from the receipt page without touching the mouse
    second = live_server.issue("BDC", payer={"name": "李四"})
    _scan(page, second)
    assert "李四" in page.locator(".notice-panel").inner_text()
    page.locator("#confirm").dblclick()  # a double click on the button
    page.wait_for_url(re.compile(r"/cashier/receipts/\d{4}-\d{8}$"))
    second_receipt = page.url.rsplit("/", 1)[1]
    assert int(second_receipt[-8:]) == int(receipt[-8:]) + 1  # the next number, no gap
    assert _payments_of(live_server, second) == [("cash", "confirmed", BDC_ZZ)]
    assert _receipt_count(live_server, second) == 1


def test_every_refusal_is_explained_in_large_text_before_any_money(
        page: Any, live_server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
    tz = live_server.app.config["FEESVC_TIMEZONE"]
    cancelled = live_server.issue("BDC", payer={"name": "周八"})
    response = live_server.api().post(f"/api/v1/notices/{cancelled}/cancel", json={"reason": "缴款人信息有误"},
                                      headers=live_server.staff.headers("window"))
    assert response.status_code == 200, response.json
    paid = live_server.issue("BDC", payer={"name": "吴九"})
    _api_pay(live_server, paid)
    expired = live_server.issue("BDC", payer={"name": "郑十"}, due_date=today(tz).isoformat())
    good = live_server.issue("BDC")
    mistyped = good[:-3] + str((int(good[-3]) + 1) % 10) + good[-2:]  # one wrong digit
    unknown = compose_notice_number(good[:6], int(good[6:8]), 9_999_999_999)

    _keyboard_sign_in(page, "cashier-1", "/cashier")
    cases = [
        ("23-refused-mistyped", group_digits(mistyped), "#cashier-error", "校验位不符"),
        ("23b-refused-too-short", "9900 0126", "#cashier-error", "20 位数字"),
        ("23c-refused-unknown", unknown, "#cashier-error", "没有编号"),
        ("23d-refused-cancelled", cancelled, "#cashier-blocked", "已作废"),
        ("23e-refused-paid", group_digits(paid), "#cashier-blocked", "已经缴费"),
    ]
    for name, typed, selector, message in cases:
        _assert_focus(page, "number")  # ready for the next scan, with the last one's digits selected
        _scan(page, typed)
        alert = page.locator(selector)
        assert alert.is_visible(), name
        assert message in alert.inner_text(), (name, alert.inner_text())
        assert _font_px(alert) >= 24, name
        assert alert.get_attribute("role") == "alert"
        assert page.locator("main [role=alert]").count() == 1, name  # said once
        _assert_no_pay_form(page)
        if page.locator(".notice-panel").count():  # the refusal is read before the amount
            assert alert.bounding_box()["y"] < page.locator(".notice-panel").bounding_box()["y"], name
        screenshot(page, name)
    assert "吴九" in page.locator(".notice-panel").inner_text()

    # a notice whose due date has passed: two days later at the window
    real_utcnow = utcnow
    monkeypatch.setattr("payments.views.utcnow", lambda: real_utcnow() + timedelta(days=2))
    _scan(page, expired)
    alert = page.locator("#cashier-blocked")
    assert "过期" in alert.inner_text() and "重新开具" in alert.inner_text()
    assert _font_px(alert) >= 24
    _assert_no_pay_form(page)
    screenshot(page, "23f-refused-expired")
    monkeypatch.undo()

    # the notice is cancelled while its pay form is open: the confirm is refused, nothing is taken
    _scan(page, good)
    assert page.locator("#pay-form").is_visible()
    response = live_server.api().post(f"/api/v1/notices/{good}/cancel", json={"reason": "重复开具"},
                                      headers=live_server.staff.headers("window"))
    assert response.status_code == 200, response.json
    page.locator("#confirm").focus()
    with page.expect_response(re.compile(r"/cashier/pay$")) as answer:
        page.keyboard.press("Enter")
    assert answer.value.status == 409
    page.wait_for_load_state()
    assert "已作废" in page.locator("#cashier-error").inner_text()
    assert page.locator("main [role=alert]").count() == 1  # not twice (error and blocked)
    _assert_no_pay_form(page)
    screenshot(page, "23g-refused-cancelled-meanwhile")

    for number in (cancelled, expired, good):
        assert _payments_of(live_server, number) == [], number
    assert len(_payments_of(live_server, paid)) == 1


def test_window_certificate_button_is_disabled_until_paid_then_issues(page: Any, live_server: LiveServer) -> None:
    number = live_server.issue("BDC", payer={"name": "张三"})
    sign_in(page, "clerk-bdc")
    page.goto(f"/notices/{number}")
    button = page.locator("#issue-certificate")
    assert button.is_disabled()
    assert "凭有效收据才能发证" in page.locator("#certificate-help").inner_text()
    assert "尚未缴费" in page.locator("#payment-and-certificate").inner_text()
    assert "未发证" in page.locator("#certificate-state").inner_text()
    screenshot(page, "24-certificate-disabled")
    # the disabled button cannot be forced: the server refuses too
    refused = live_server.api().post(f"/api/v1/notices/{number}/certificate", json={},
                                     headers=live_server.staff.headers("window"))
    assert refused.status_code == 409 and refused.json["code"] == "payment-required"

    receipt = _api_pay(live_server, number)
    page.reload()
    assert button.is_enabled()
    assert page.locator("#certificate-help").count() == 0
    assert page.locator("#receipt-link").inner_text().strip() == receipt["number"]
    screenshot(page, "24b-certificate-enabled")

    page.get_by_label("证照编号（可不填，自动生成）").fill("BDC-ZS-2026-0001")
    button.click()
    page.wait_for_load_state()
    assert page.url.endswith(f"/notices/{number}")
    assert "已发证：BDC-ZS-2026-0001" in page.get_by_role("status").inner_text()
    assert "已发证" in page.locator("#certificate-state").inner_text()
    assert "BDC-ZS-2026-0001" in page.locator("#certificate-state").inner_text()
    assert page.locator("#issue-certificate").count() == 0  # once
    screenshot(page, "24c-certificate-issued")


def test_receipt_pdf_qr_leads_to_the_public_verification_and_a_reprint_says_copy(
        page: Any, live_server: LiveServer) -> None:
    number = live_server.issue("BDC", payer={"name": "张三"})
    receipt = _api_pay(live_server, number, method="cash")
    sign_in(page, "cashier-1")
    page.goto(f"/receipts/{receipt['number']}")
    assert "有效" in page.locator("h1").inner_text()
    assert "已打印 0 次" in page.locator("main").inner_text()
    assert "收费窗口 · 现金" in page.locator("main").inner_text()
    screenshot(page, "25-receipt-staff")

    link = page.get_by_role("link", name="打印收据")
    href = link.get_attribute("href")
    assert href == f"/receipts/{receipt['number']}/print"
    png, words = _pdf_pages(_get_pdf(page, href), "25b-receipt-pdf")
    assert "补打" not in words
    for expected in (receipt["number"], "张三", "80.00", "捌拾元整", "现金", "县不动产登记中心", group_digits(number)):
        assert expected in words, expected
    url = f"{live_server.url}/verify/{receipt['number']}?code={receipt['verification_code']}"
    assert _decode_qr(png) == [url]
    assert len(receipt["verification_code"]) >= 8

    # the second print is a copy (补打), and the page says so
    copy_png, copy_words = _pdf_pages(_get_pdf(page, href), "25c-receipt-pdf-copy")
    assert "补打" in copy_words
    assert _decode_qr(copy_png) == [url]
    page.reload()
    assert "已打印 2 次" in page.locator("main").inner_text()
    assert page.get_by_role("link", name="补打收据").count() == 1

    # anyone with a phone follows the QR code: no login, payer masked
    anonymous = page.context.browser.new_context(base_url=live_server.url, locale="zh-CN",
                                                 viewport={"width": 390, "height": 844})
    try:
        public = anonymous.new_page()
        response = public.goto(url)
        assert response is not None and response.status == 200
        assert "真实有效" in public.locator("#verify-result").inner_text()
        body = public.locator("main").inner_text()
        assert "张*" in body and "张三" not in body and "80.00" in body
        assert public.evaluate("document.activeElement.id") != "code"  # no phone keyboard over the result
        screenshot(public, "25d-verify-valid-phone")
        response = public.goto(f"/verify/{receipt['number']}?code=WRONGCODE")
        assert response is not None
        assert "核验未通过" in public.locator("#verify-result").inner_text()
        assert "张*" not in public.locator("main").inner_text()
        screenshot(public, "25e-verify-wrong-code")
    finally:
        anonymous.close()


def _text_under_the_qr_code(pdf: bytes) -> str:
    """The characters of page 1 whose boxes overlap the QR code (as zxing-cpp finds it at 200 dpi)."""
    import pypdfium2
    import zxingcpp

    scale = 200 / 72
    document = pypdfium2.PdfDocument(pdf)
    try:
        pdf_page = document[0]
        height = pdf_page.get_height()
        bitmap = pdf_page.render(scale=scale)
        image = bitmap.to_pil().convert("L")
        bitmap.close()
        codes = zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.QRCode))
        image.close()
        assert len(codes) == 1
        corners = codes[0].position
        xs = [p.x / scale for p in (corners.top_left, corners.top_right, corners.bottom_left, corners.bottom_right)]
        ys = [height - p.y / scale for p in (corners.top_left, corners.top_right, corners.bottom_left,
                                              corners.bottom_right)]
        textpage = pdf_page.get_textpage()
        under = []
        for index in range(textpage.count_chars()):
            char = textpage.get_text_range(index, 1)
            left, bottom, right, top = textpage.get_charbox(index)
            if char.strip() and left < max(xs) and right > min(xs) and bottom < max(ys) and top > min(ys):
                under.append(char)
        textpage.close()
        pdf_page.close()
    finally:
        document.close()
    return "".join(under)


def test_the_receipt_qr_code_covers_no_text(live_server: LiveServer) -> None:
    receipt = _api_pay(live_server, live_server.issue("BDC"))
    response = live_server.api().get(f"/api/v1/receipts/{receipt['number']}/pdf",
                                     headers=live_server.staff.headers("cashier"))
    assert response.status_code == 200
    assert _text_under_the_qr_code(response.data) == ""


def test_finance_voids_then_records_the_refund_and_the_public_page_says_voided(
        page: Any, live_server: LiveServer) -> None:
    number = live_server.issue("BDC", payer={"name": "张三"})
    receipt = _api_pay(live_server, number, method="card")
    certified = live_server.issue("BDC", payer={"name": "王二"})
    certified_receipt = _api_pay(live_server, certified)
    _api_certificate(live_server, certified)

    sign_in(page, "finance-1")
    # a receipt that a certificate was issued on cannot be voided
    page.goto(f"/receipts/{certified_receipt['number']}")
    page.locator("#reason").fill("误收")
    page.get_by_role("button", name="冲红此收据").click()
    page.wait_for_load_state()
    assert "不能冲红" in page.get_by_role("alert").inner_text()
    assert "有效" in page.locator("h1").inner_text()
    screenshot(page, "26-void-refused-certificate")

    page.goto(f"/receipts/{receipt['number']}")
    screenshot(page, "26b-receipt-finance")
    page.locator("#reason").fill("缴款人申请撤回办件")
    page.get_by_role("button", name="冲红此收据").click()
    page.wait_for_load_state()
    assert "收据已冲红" in page.get_by_role("status").inner_text()
    assert "已冲红" in page.locator("h1").inner_text()
    main = page.locator("main").inner_text()
    assert "缴款人申请撤回办件" in main and "待退款" in main
    assert page.get_by_role("button", name="冲红此收据").count() == 0
    assert _payments_of(live_server, number) == [("card", "refund_due", BDC_ZZ)]
    assert _api_notice(live_server, number)["status"] == "issued"  # payable again
    screenshot(page, "26c-receipt-voided")

    assert page.get_by_label("退款方式").input_value() == "card"  # by default the way it was paid
    page.get_by_label("退款方式").select_option("transfer")
    page.get_by_label("退款凭证号").fill("TK20260001")
    page.get_by_role("button", name="登记退款").click()
    page.wait_for_load_state()
    assert "已登记退款" in page.get_by_role("status").inner_text()
    assert "已退款（转账 TK20260001）" in page.locator("main").inner_text()
    assert page.get_by_role("button", name="登记退款").count() == 0
    assert _payments_of(live_server, number) == [("card", "refunded", BDC_ZZ)]
    screenshot(page, "26d-receipt-refunded")

    anonymous = page.context.browser.new_context(locale="zh-CN")
    try:
        public = anonymous.new_page()
        public.goto(receipt["verification_url"].replace("http://localhost", live_server.url))
        result = public.locator("#verify-result").inner_text()
        assert "已冲红" in result and "真实有效" not in result
        screenshot(public, "26e-verify-voided")
    finally:
        anonymous.close()


def test_shift_close_by_keyboard_shows_the_cash_difference_and_prints(page: Any, live_server: LiveServer) -> None:
    from core.users import create_token, create_user

    app = live_server.app
    with app.app_context(), app.extensions["db"].unit_of_work() as session:
        create_user(session, AUDIT_KEY, Actor.system("browser-tests"), username="cashier-2", role="cashier",
                    department_code=None, password=PASSWORD)
        token = create_token(session, AUDIT_KEY, Actor.system("browser-tests"), username="cashier-2")
    for method in ("cash", "cash", "card"):
        _api_pay(live_server, live_server.issue("BDC"), method=method,
                 headers={"Authorization": f"Bearer {token}", "Idempotency-Key": uuid.uuid4().hex})

    _keyboard_sign_in(page, "cashier-2", "/cashier/shift")
    _assert_focus(page, "declared_cash")
    totals = page.locator("#shift-totals").inner_text()
    assert re.search(r"现金（系统记录）\s+160\.00", totals) and re.search(r"银行卡\s+80\.00", totals), totals
    assert "共 3 笔" in page.locator("main").inner_text()
    screenshot(page, "27-shift")

    page.keyboard.type("150.50")
    assert page.locator("#cash-preview").inner_text() == "短款 9.50 元"  # before the irreversible close
    screenshot(page, "27a-shift-declared")
    page.keyboard.press("Tab")
    page.keyboard.type("找零时多找出 9.50 元")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    difference = page.locator("#shift-difference")
    assert "现金短款 9.50 元" in difference.inner_text() and "-9.50" in difference.inner_text()
    assert page.locator("#shift-note").inner_text() == "找零时多找出 9.50 元"
    assert _font_px(difference) >= 24
    assert "alert-error" in (difference.get_attribute("class") or "")
    screenshot(page, "27b-shift-closed")

    href = page.get_by_role("link", name="打印日结单").get_attribute("href")
    assert href is not None and re.fullmatch(r"/cashier/shifts/\d+/print", href)
    _png, words = _pdf_pages(_get_pdf(page, href), "27c-shift-report-pdf")
    for expected in ("收费员日结单", "cashier-2", "160.00", "150.50", "-9.50", "80.00", "找零时多找出"):
        assert expected in words, expected

    page.goto("/cashier/shift")
    assert "当前没有未结班次" in page.locator("main").inner_text()
    screenshot(page, "27d-shift-none-open")
