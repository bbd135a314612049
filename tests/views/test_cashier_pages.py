"""The cashier window and receipt pages through the Flask test client (HTML)."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import Staff, issue
from tests.views.conftest import signed_in


def notice_number(client: FlaskClient, staff: Staff) -> str:
    return str(issue(client, staff).json["number"])


def pay_form(number: str, key: str = "key-1", **extra: Any) -> dict[str, Any]:
    return {"number": number, "amount": "8000", "method": "cash", "idempotency_key": key, **extra}


def test_scan_shows_the_notice_and_a_double_submit_pays_once(client: FlaskClient, staff: Staff,
                                                             html_app: Flask) -> None:
    number = notice_number(client, staff)
    cashier = signed_in(html_app, staff.usernames["cashier"])
    spaced = " ".join(number[i:i + 4] for i in range(0, 20, 4))
    page = cashier.get(f"/cashier?number={spaced}").get_data(as_text=True)
    assert "张三" in page and "80.00" in page and 'id="pay-form"' in page
    first = cashier.post("/cashier/pay", data=pay_form(number))
    second = cashier.post("/cashier/pay", data=pay_form(number))
    assert first.status_code == second.status_code == 303
    assert first.headers["Location"] == second.headers["Location"]
    receipt_page = cashier.get(first.headers["Location"]).get_data(as_text=True)
    assert "收费成功" in receipt_page
    other_key = cashier.post("/cashier/pay", data=pay_form(number, key="key-2"))
    assert other_key.status_code == 409
    assert "已经缴费" in other_key.get_data(as_text=True)
    receipts = client.get(f"/api/v1/notices/{number}", headers=staff.headers("cashier")).json
    assert receipts["status"] == "paid"


@pytest.mark.parametrize(
    ("query", "message"),
    [("99000126000000000118", "校验位不符"), ("123", "20 位数字"), ("99000126999999999905", "没有编号")],
)
def test_mistyped_and_unknown_numbers_are_explained_before_any_money(client: FlaskClient, staff: Staff,
                                                                     html_app: Flask, query: str,
                                                                     message: str) -> None:
    from notices.numbers import compose_notice_number

    if message == "没有编号":
        query = compose_notice_number("990001", 2026, 9_999_999_999)
    cashier = signed_in(html_app, staff.usernames["cashier"])
    page = cashier.get(f"/cashier?number={query}").get_data(as_text=True)
    assert message in page
    assert 'id="pay-form"' not in page


def test_cancelled_notice_is_refused_in_large_text(client: FlaskClient, staff: Staff, html_app: Flask) -> None:
    number = notice_number(client, staff)
    client.post(f"/api/v1/notices/{number}/cancel", json={"reason": "撤回"}, headers=staff.headers("window"))
    cashier = signed_in(html_app, staff.usernames["cashier"])
    page = cashier.get(f"/cashier?number={number}").get_data(as_text=True)
    assert 'id="cashier-blocked"' in page and "已作废" in page
    assert 'id="pay-form"' not in page


def test_receipt_print_is_marked_copy_after_the_first(client: FlaskClient, staff: Staff, html_app: Flask) -> None:
    import pypdfium2 as pdfium

    number = notice_number(client, staff)
    cashier = signed_in(html_app, staff.usernames["cashier"])
    location = cashier.post("/cashier/pay", data=pay_form(number)).headers["Location"]
    receipt_number = location.rsplit("/", 1)[-1]

    def text_of(pdf: bytes) -> str:
        document = pdfium.PdfDocument(pdf)
        try:
            return str(document[0].get_textpage().get_text_range())
        finally:
            document.close()

    first = cashier.get(f"/receipts/{receipt_number}/print")
    assert first.status_code == 200 and first.mimetype == "application/pdf"
    assert "补打" not in text_of(first.data)
    again = text_of(cashier.get(f"/receipts/{receipt_number}/print").data)
    assert "补打" in again and receipt_number in again


def test_public_verify_page(client: FlaskClient, staff: Staff, html_app: Flask) -> None:
    number = notice_number(client, staff)
    receipt = client.post(f"/api/v1/notices/{number}/payments", json={"amount": 8000, "method": "cash"},
                          headers=staff.headers("cashier")).json["receipt"]
    anonymous = html_app.test_client()
    good = anonymous.get(f"/verify/{receipt['number']}?code={receipt['verification_code']}").get_data(as_text=True)
    assert "真实有效" in good and "张*" in good and "张三" not in good
    bad = anonymous.get(f"/verify/{receipt['number']}?code=WRONGCODE1").get_data(as_text=True)
    assert "核验未通过" in bad and "张" not in bad.split("核验未通过")[1]


def test_certificate_button_flow_and_shift_close(client: FlaskClient, staff: Staff, html_app: Flask) -> None:
    number = notice_number(client, staff)
    window = signed_in(html_app, staff.usernames["window"])
    window.post(f"/notices/{number}/certificate", data={})
    assert client.post(f"/api/v1/notices/{number}/certificate", json={},
                       headers=staff.headers("window")).status_code == 409
    cashier = signed_in(html_app, staff.usernames["cashier"])
    cashier.post("/cashier/pay", data=pay_form(number))
    window.post(f"/notices/{number}/certificate", data={"certificate_number": "BDC-CERT-1"})
    again = client.post(f"/api/v1/notices/{number}/certificate", json={}, headers=staff.headers("window"))
    assert again.json["type"].endswith("/certificate-already-issued")
    closed = cashier.post("/cashier/shift", data={"declared_cash": "80.00"}).get_data(as_text=True)
    assert "现金相符" in closed
