"""The pages as a clerk uses them, in headless Chromium, with a screenshot of every page."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest

from notices.numbers import group_digits
from tests.browser.conftest import SCREENSHOTS, LiveServer, screenshot, sign_in

pytestmark = pytest.mark.browser

GROUPED_NUMBER = re.compile(r"^\d{4}( \d{4}){4}$")


def _assert_focus(page: Any, element_id: str) -> None:
    """The keyboard focus is (or within 2 s comes to be) on the element with this id."""
    try:
        page.wait_for_function("id => document.activeElement && document.activeElement.id === id",
                               arg=element_id, timeout=2_000)
    except Exception:
        focused = page.evaluate("document.activeElement && document.activeElement.id")
        raise AssertionError(f"focus is on {focused!r}, not {element_id!r}") from None


def _decode_barcodes(png: bytes) -> list[str]:
    import zxingcpp
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        return [b.text for b in zxingcpp.read_barcodes(image.convert("L"))]


def test_public_home_and_login_page(page: Any) -> None:
    page.goto("/")
    assert page.locator("html").get_attribute("lang") == "zh-CN"
    screenshot(page, "01-public-home")
    page.get_by_role("link", name="工作人员登录").first.click()
    page.wait_for_url(re.compile(r"/login"))
    _assert_focus(page, "username")
    screenshot(page, "02-login")
    page.goto("/problems/invalid-notice-number")
    assert "编号" in page.locator("main h1").inner_text()
    screenshot(page, "02b-problem-type")


def test_wrong_password_shows_a_chinese_error_and_keeps_the_username(page: Any) -> None:
    page.goto("/login")
    _assert_focus(page, "username")
    # keyboard only: the cursor starts in the user name, Tab to the password, Enter submits
    page.keyboard.type("clerk-bdc")
    page.keyboard.press("Tab")
    page.keyboard.type("wrong-password")
    with page.expect_response(re.compile(r"/login")) as answer:
        page.keyboard.press("Enter")
    assert answer.value.status == 401
    page.wait_for_load_state()
    assert "用户名或密码不正确" in page.get_by_role("alert").inner_text()
    assert page.get_by_label("用户名", exact=True).input_value() == "clerk-bdc"
    assert page.get_by_label("密码", exact=True).input_value() == ""
    _assert_focus(page, "password")
    screenshot(page, "03-login-wrong-password")


def test_window_clerk_issues_a_notice_and_opens_its_pdf(page: Any, live_server: LiveServer) -> None:
    sign_in(page, "clerk-bdc")
    screenshot(page, "04-staff-home-window")
    page.get_by_role("link", name="开具缴款通知书").first.click()
    page.wait_for_url(re.compile(r"/notices/new$"))
    _assert_focus(page, "payer_name")
    screenshot(page, "05-notice-form")

    page.get_by_label("缴款人姓名或单位名称").fill("李四")
    page.get_by_label("证件号码").fill("110101199003071234")
    page.get_by_label("业务受理编号").fill("BDC-2026-0001")
    page.get_by_label("收费项目 1", exact=True).select_option("BDC-ZZ")
    page.get_by_label("数量 1", exact=True).fill("2")
    page.get_by_label("收费项目 2", exact=True).select_option("BDC-GBF")
    page.get_by_label("数量 2", exact=True).fill("3")
    page.get_by_label("减免后金额 2", exact=True).fill("10")
    page.get_by_label("减免原因 2", exact=True).fill("困难群众减免")
    assert page.locator("#form-total").inner_text() == "170.00"  # the preview; the server prices it again
    screenshot(page, "05b-notice-form-filled")
    page.get_by_role("button", name="开具缴款通知书").click()
    page.wait_for_url(re.compile(r"/notices/\d{20}$"))

    number = page.url.rsplit("/", 1)[1]
    shown = page.locator("#notice-number").inner_text().strip()
    assert GROUPED_NUMBER.match(shown) and shown == group_digits(number)
    assert "已开具" in page.locator(".alert-ok").inner_text()
    assert page.locator(".notice-status [data-status]").get_attribute("data-status") == "issued"
    assert page.locator(".notice-status").inner_text().strip() == "待缴费"
    assert page.locator(".barcode svg rect").count() > 20
    assert page.locator("#notice-total").inner_text().strip() == "170.00"
    assert "壹佰柒拾元整" in page.locator(".capitals").inner_text()
    lines = page.locator("table.lines-out tbody tr")
    assert lines.count() == 2
    assert "困难群众减免" in lines.nth(1).inner_text()
    assert "李四" in page.locator("main").inner_text()
    screenshot(page, "06-notice-issued")

    for link_id, size in (("#print-a4", "a4"), ("#print-a5", "a5")):
        href = page.locator(link_id).get_attribute("href")
        assert href is not None
        response = page.context.request.get(href)
        assert response.status == 200
        assert response.headers["content-type"] == "application/pdf"
        pdf = response.body()
        assert pdf.startswith(b"%PDF")
        image = _pdf_as_png(pdf, f"07-notice-pdf-{size}")
        assert number in _decode_barcodes(image), f"the {size} PDF's barcode does not scan as {number}"
    # Without the session the PDF is not handed out.
    anonymous = page.context.browser.new_context()
    try:
        response = anonymous.request.get(live_server.url + href, max_redirects=0)
        assert response.status == 302 and "/login" in response.headers["location"]
    finally:
        anonymous.close()


def _pdf_as_png(pdf: bytes, name: str) -> bytes:
    """Page 1 at 200 dpi, saved beside the screenshots to be looked at; returns the PNG."""
    import pypdfium2

    document = pypdfium2.PdfDocument(pdf)
    try:
        pdf_page = document[0]
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
    return out.getvalue()


def test_the_barcode_on_the_notice_page_scans_as_the_number(page: Any, live_server: LiveServer) -> None:
    """The inline SVG, as Chromium draws it, decodes to the 20 digits (the demo region starts with 99)."""
    number = live_server.notices["BDC"]
    sign_in(page, "clerk-bdc")
    page.goto(f"/notices/{number}")
    barcode = page.locator(".barcode svg")
    assert _decode_barcodes(barcode.screenshot()) == [number]


def test_window_clerk_cancels_a_notice_with_a_reason(page: Any, live_server: LiveServer) -> None:
    number = live_server.issue("BDC", payer={"name": "孙七"})
    sign_in(page, "clerk-bdc")
    page.goto(f"/notices/{number}")
    assert page.locator(".notice-status").inner_text().strip() == "待缴费"
    page.get_by_label("作废原因").fill("缴款人信息填写错误，重新开具")
    page.get_by_role("button", name="作废此通知书").click()
    page.wait_for_load_state()
    assert page.url.endswith(f"/notices/{number}")
    assert page.locator(".notice-status").inner_text().strip() == "已作废"
    assert "缴款人信息填写错误，重新开具" in page.locator("main").inner_text()
    assert "已作废" in page.get_by_role("alert").inner_text()
    assert page.get_by_role("button", name="作废此通知书").count() == 0
    screenshot(page, "08-notice-cancelled")


def test_the_form_shows_chinese_errors_beside_the_fields_and_keeps_the_input(page: Any) -> None:
    sign_in(page, "clerk-bdc")
    page.goto("/notices/new")
    page.get_by_label("证件号码").fill("110101199003071234")
    page.get_by_label("业务受理编号").fill("BDC-2026-0002")
    page.get_by_label("收费项目 1", exact=True).select_option("BDC-FZZ")
    page.get_by_label("数量 1", exact=True).fill("2")
    page.get_by_label("减免后金额 1", exact=True).fill("500.50")
    with page.expect_response(re.compile(r"/notices/new$")) as answer:
        page.get_by_role("button", name="开具缴款通知书").click()
    assert answer.value.status == 422
    page.wait_for_load_state()

    assert "请更正" in page.get_by_role("alert").first.inner_text()
    payer_error = page.locator("#payer_name-error").inner_text()
    assert re.search(r"[\u4e00-\u9fff]", payer_error) and not re.search(r"[A-Za-z]{3}", payer_error), payer_error
    assert page.get_by_label("缴款人姓名或单位名称").get_attribute("aria-invalid") == "true"
    assert "减免必须填写原因" in page.locator("#items-0-override_reason-error").inner_text()
    # the first field in error has the focus, and everything typed is still there
    _assert_focus(page, "payer_name")
    assert page.get_by_label("证件号码").input_value() == "110101199003071234"
    assert page.get_by_label("业务受理编号").input_value() == "BDC-2026-0002"
    assert page.get_by_label("收费项目 1", exact=True).input_value() == "BDC-FZZ"
    assert page.get_by_label("数量 1", exact=True).input_value() == "2"
    assert page.get_by_label("减免后金额 1", exact=True).input_value() == "500.50"
    screenshot(page, "09-notice-form-errors")


def test_public_fee_schedule_lists_departments_and_the_version_in_force(page: Any) -> None:
    page.goto("/fees")
    headings = page.locator("section h2").all_inner_texts()
    for name in ("县不动产登记中心", "县公安局户政窗口", "县公安局车管窗口", "县住房和城乡建设局", "县人防办"):
        assert any(name in heading for heading in headings), headings
    assert _fee_amount(page, "BDC-ZZ") == "80.00"
    assert _fee_amount(page, "BDC-FZZ") == "550.00"
    screenshot(page, "10-fee-schedule")

    page.goto("/fees?on=2026-06-30")
    assert _fee_amount(page, "ZJ-PTF") == "120.00"
    assert "2026-06-30" in page.locator("#fee-ZJ-PTF").inner_text()
    page.get_by_label("查询日期").fill("2026-07-01")
    page.get_by_role("button", name="查询").click()
    page.wait_for_url(re.compile(r"on=2026-07-01"))
    assert _fee_amount(page, "ZJ-PTF") == "135.00"
    screenshot(page, "11-fee-schedule-2026-07-01")

    page.goto("/fees?on=2026-13-01")
    assert "日期格式" in page.get_by_role("alert").inner_text()
    screenshot(page, "12-fee-schedule-bad-date")


def _fee_amount(page: Any, code: str) -> str:
    return str(page.locator(f"#fee-{code} td.num").inner_text().strip())


def test_cashier_sees_the_notices_of_every_department(page: Any, live_server: LiveServer) -> None:
    sign_in(page, "cashier-1")
    screenshot(page, "13-staff-home-cashier")
    assert page.get_by_role("link", name="开具缴款通知书").count() == 0
    page.get_by_role("link", name="缴款通知书", exact=True).first.click()
    page.wait_for_url(re.compile(r"/notices$"))
    table = page.locator("table.notices").inner_text()
    for department, name in (("BDC", "县不动产登记中心"), ("GA", "县公安局户政窗口")):
        assert group_digits(live_server.notices[department]) in table
        assert name in table
    screenshot(page, "14-notice-list-cashier")
    # a scanned number (20 digits, no spaces) finds its notice
    page.get_by_label("编号 / 缴款人 / 业务编号").fill(live_server.notices["GA"])
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"q=\d{20}"))
    rows = page.locator("table.notices tbody tr")
    assert rows.count() == 1 and "赵六" in rows.inner_text()
    page.get_by_role("button", name="退出").click()
    page.wait_for_url(re.compile(r"/login"))


def test_window_clerk_sees_only_own_department_in_the_list(page: Any, live_server: LiveServer) -> None:
    sign_in(page, "clerk-bdc")
    page.goto("/notices")
    table = page.locator("table.notices").inner_text()
    assert group_digits(live_server.notices["BDC"]) in table
    assert group_digits(live_server.notices["GA"]) not in table
    page.get_by_label("状态").select_option("cancelled")
    page.get_by_role("button", name="查询").click()
    page.wait_for_url(re.compile(r"status=cancelled"))
    assert group_digits(live_server.notices["BDC"]) not in page.locator("table.notices").inner_text()
    screenshot(page, "15-notice-list-window-filtered")


def test_window_clerk_of_another_department_gets_a_chinese_403(page: Any, live_server: LiveServer) -> None:
    sign_in(page, "clerk-ga")
    response = page.goto(f"/notices/{live_server.notices['BDC']}")
    assert response is not None and response.status == 403
    text = page.locator("main").inner_text()
    assert "无权" in text and "其他部门" in text
    assert live_server.notices["BDC"] not in page.content()
    screenshot(page, "16-forbidden-other-department")

    response = page.goto(f"/notices/{live_server.notices['BDC'][:-1]}0")
    assert response is not None and response.status in (404, 422)
    assert re.search(r"[\u4e00-\u9fff]", page.locator("main h1").inner_text())
    screenshot(page, "17-bad-notice-number")


# Collected before any page script runs (Playwright's init scripts are not subject to the page's CSP).
_CSP_LISTENER = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', function (e) {
  window.__cspViolations.push(e.violatedDirective + ' ' + (e.blockedURI || 'inline') + ' ' + (e.sample || ''));
});
"""


def _csp_violations(page: Any) -> list[str]:
    return list(page.evaluate("window.__cspViolations"))


def test_no_page_breaks_the_content_security_policy(page: Any, live_server: LiveServer) -> None:
    """Every page, as each role sees it, with its scripts at work: nothing is refused by the CSP
    (the page fixture also fails on the console error a refusal logs)."""
    page.context.add_init_script(_CSP_LISTENER)
    number = live_server.notices["BDC"]
    seen: dict[str, list[str]] = {}

    def visit(path: str) -> None:
        response = page.goto(path)
        assert response is not None and response.ok, path
        assert "frame-ancestors 'none'" in (response.header_value("content-security-policy") or "")
        page.wait_for_load_state("load")
        if violations := _csp_violations(page):
            seen[path] = violations

    for path in ("/", "/fees", "/login", "/verify/2026-00000001?code=X"):
        visit(path)
    for who, paths in {
        "window": ["/", "/notices/new", "/notices", f"/notices/{number}"],
        "cashier": ["/cashier", f"/cashier?number={number}", "/cashier/shift"],
        "finance": ["/finance"],
        "admin": ["/admin/webhooks"],
    }.items():
        sign_in(page, live_server.staff.usernames[who])
        for path in paths:
            visit(path)
        page.context.clear_cookies()
    # The pages' own scripts ran (app.js): the notice form totals its first line as it is chosen.
    sign_in(page, live_server.staff.usernames["window"])
    page.goto("/notices/new")
    page.locator("tr[data-line] select").first.select_option(index=1)
    page.wait_for_function("document.getElementById('form-total').textContent !== '0.00'")
    assert not seen, seen
    # And the listener does see a refusal: an inline script added to another tab (whose console
    # errors the page fixture does not watch) is blocked and reported.
    other = page.context.new_page()
    try:
        other.goto("/")
        other.evaluate("() => { const s = document.createElement('script'); s.textContent = 'window.x = 1';"
                       " document.body.appendChild(s); }")
        other.wait_for_function("window.__cspViolations.length > 0")
        assert any("script-src" in v for v in _csp_violations(other))
        assert other.evaluate("window.x") is None
    finally:
        other.close()
