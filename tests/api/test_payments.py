"""The cashier window, receipts, voids, refunds, the certificate gate and shift close (API)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from flask.testing import FlaskClient

import notices.service
from core.clock import today
from tests.conftest import Staff, issue


def pay(client: FlaskClient, staff: Staff, number: str, amount: int, method: str = "cash",
        **headers: str) -> Any:
    return client.post(f"/api/v1/notices/{number}/payments", json={"amount": amount, "method": method},
                       headers=staff.headers("cashier", **headers))


def new_notice(client: FlaskClient, staff: Staff, quantity: int = 1) -> dict[str, Any]:
    response = issue(client, staff, items=[{"fee_code": "BDC-ZZ", "quantity": quantity}])
    assert response.status_code == 201
    return dict(response.json)


def test_cashier_payment_creates_payment_and_receipt_and_marks_the_notice_paid(client: FlaskClient,
                                                                               staff: Staff) -> None:
    notice = new_notice(client, staff)
    response = pay(client, staff, notice["number"], 8000, "card")
    assert response.status_code == 201, response.json
    payment, receipt = response.json["payment"], response.json["receipt"]
    assert (payment["status"], payment["amount"], payment["method"], payment["channel"]) == (
        "confirmed", 8000, "card", "cashier")
    year = today("Asia/Shanghai").year
    assert receipt["number"] == f"{year}-00000001"
    assert len(receipt["verification_code"]) >= 8 and receipt["verification_code"].isalnum()
    assert receipt["verification_url"].endswith(f"/verify/{receipt['number']}?code={receipt['verification_code']}")
    fetched = client.get(f"/api/v1/notices/{notice['number']}", headers=staff.headers("window")).json
    assert fetched["status"] == "paid"


@pytest.mark.parametrize(
    ("prepare", "amount", "status", "code"),
    [
        ("paid", 8000, 409, "notice-already-paid"),
        ("cancelled", 8000, 409, "notice-cancelled"),
        ("expired", 8000, 409, "notice-expired"),
        ("issued", 7999, 422, "amount-mismatch"),
        ("issued", 8001, 422, "amount-mismatch"),
    ],
)
def test_payments_that_must_be_refused(client: FlaskClient, staff: Staff, monkeypatch: pytest.MonkeyPatch,
                                       prepare: str, amount: int, status: int, code: str) -> None:
    if prepare == "expired":
        monkeypatch.setattr(notices.service, "utcnow", lambda: datetime(2026, 1, 5, 2, 0, tzinfo=UTC))
    number = new_notice(client, staff)["number"]
    monkeypatch.undo()
    if prepare == "paid":
        assert pay(client, staff, number, 8000).status_code == 201
    if prepare == "cancelled":
        client.post(f"/api/v1/notices/{number}/cancel", json={"reason": "撤回"}, headers=staff.headers("window"))
    response = pay(client, staff, number, amount)
    assert response.status_code == status
    assert response.json["type"].endswith("/" + code)
    receipts_issued = 1 if prepare == "paid" else 0
    assert client.get(f"/api/v1/receipts/{today('Asia/Shanghai').year}-0000000{receipts_issued + 1}",
                      headers=staff.headers("finance")).status_code == 404


def test_receipt_numbers_follow_each_other_within_the_year(client: FlaskClient, staff: Staff) -> None:
    numbers = []
    for _ in range(3):
        notice = new_notice(client, staff)
        numbers.append(pay(client, staff, notice["number"], 8000).json["receipt"]["number"])
    year = today("Asia/Shanghai").year
    assert numbers == [f"{year}-00000001", f"{year}-00000002", f"{year}-00000003"]


def test_a_failed_payment_takes_no_receipt_number(client: FlaskClient, staff: Staff) -> None:
    first, second = new_notice(client, staff), new_notice(client, staff)
    assert pay(client, staff, first["number"], 1).status_code == 422
    assert pay(client, staff, second["number"], 8000).json["receipt"]["number"].endswith("-00000001")


def test_idempotency_key_replays_refuses_another_body_and_never_pays_twice(client: FlaskClient,
                                                                            staff: Staff) -> None:
    number = new_notice(client, staff)["number"]
    first = pay(client, staff, number, 8000, **{"Idempotency-Key": "k-1"})
    replay = client.post(f"/api/v1/notices/{number}/payments", data='{ "method": "cash",  "amount": 8000 }',
                         content_type="application/json",
                         headers=staff.headers("cashier", **{"Idempotency-Key": "k-1"}))
    assert first.status_code == replay.status_code == 201
    assert replay.json == first.json
    assert replay.headers.get("Idempotent-Replayed") == "true"
    reuse = pay(client, staff, number, 8000, "card", **{"Idempotency-Key": "k-1"})
    assert reuse.status_code == 422 and reuse.json["type"].endswith("/idempotency-key-reuse")
    again = pay(client, staff, number, 8000, **{"Idempotency-Key": "k-2"})
    assert again.status_code == 409


def test_void_makes_the_payment_refund_due_and_the_notice_payable_again(client: FlaskClient,
                                                                       staff: Staff) -> None:
    number = new_notice(client, staff)["number"]
    paid = pay(client, staff, number, 8000).json
    receipt_number, payment_id = paid["receipt"]["number"], paid["payment"]["id"]
    assert client.post(f"/api/v1/receipts/{receipt_number}/void", json={"reason": "收错"},
                       headers=staff.headers("cashier")).status_code == 403
    voided = client.post(f"/api/v1/receipts/{receipt_number}/void", json={"reason": "缴款人重复缴费"},
                         headers=staff.headers("finance"))
    assert voided.status_code == 200, voided.json
    assert voided.json["status"] == "voided" and voided.json["number"] == receipt_number
    payment = client.get(f"/api/v1/payments/{payment_id}", headers=staff.headers("finance")).json
    assert payment["status"] == "refund_due"
    assert client.get(f"/api/v1/notices/{number}", headers=staff.headers("window")).json["status"] == "issued"
    again = client.post(f"/api/v1/receipts/{receipt_number}/void", json={"reason": "x"},
                        headers=staff.headers("finance"))
    assert again.status_code == 409
    refunded = client.post(f"/api/v1/payments/{payment_id}/refund", json={"method": "cash", "reference": "R1"},
                           headers=staff.headers("finance"))
    assert refunded.status_code == 200 and refunded.json["status"] == "refunded"
    assert client.post(f"/api/v1/payments/{payment_id}/refund", json={"method": "cash"},
                       headers=staff.headers("finance")).status_code == 409
    second = pay(client, staff, number, 8000)
    assert second.status_code == 201
    assert second.json["receipt"]["number"].endswith("-00000002")


def test_certificate_gate(client: FlaskClient, staff: Staff) -> None:
    number = new_notice(client, staff)["number"]
    path = f"/api/v1/notices/{number}/certificate"
    before = client.post(path, json={}, headers=staff.headers("window"))
    assert before.status_code == 409 and before.json["type"].endswith("/payment-required")
    receipt_number = pay(client, staff, number, 8000).json["receipt"]["number"]
    assert client.post(path, json={}, headers=staff.headers("window_other")).status_code == 403
    issued = client.post(path, json={"certificate_number": "BDC-2026-0001"}, headers=staff.headers("window"))
    assert issued.status_code == 201, issued.json
    assert issued.json["certificate"]["receipt_number"] == receipt_number
    twice = client.post(path, json={}, headers=staff.headers("window"))
    assert twice.status_code == 409 and twice.json["type"].endswith("/certificate-already-issued")
    void = client.post(f"/api/v1/receipts/{receipt_number}/void", json={"reason": "x"},
                       headers=staff.headers("finance"))
    assert void.status_code == 409 and void.json["type"].endswith("/certificate-issued")


def test_certificate_after_a_void_needs_a_new_payment(client: FlaskClient, staff: Staff) -> None:
    number = new_notice(client, staff)["number"]
    receipt_number = pay(client, staff, number, 8000).json["receipt"]["number"]
    client.post(f"/api/v1/receipts/{receipt_number}/void", json={"reason": "x"}, headers=staff.headers("finance"))
    response = client.post(f"/api/v1/notices/{number}/certificate", json={}, headers=staff.headers("window"))
    assert response.status_code == 409 and response.json["type"].endswith("/payment-required")


def test_public_verification_masks_the_payer_and_needs_the_code(client: FlaskClient, staff: Staff) -> None:
    number = new_notice(client, staff)["number"]
    receipt = pay(client, staff, number, 8000).json["receipt"]
    ok = client.get(f"/api/v1/public/receipts/{receipt['number']}?code={receipt['verification_code']}")
    assert ok.status_code == 200
    assert ok.json["valid"] is True and ok.json["payer_name"] == "张*" and ok.json["amount"] == 8000
    assert ok.json["department"] == "县不动产登记中心"
    for query in ["?code=AAAAAAAAAA", "", f"?code={receipt['verification_code'].lower()}x"]:
        assert client.get(f"/api/v1/public/receipts/{receipt['number']}{query}").json == {"valid": False}
    assert client.get(f"/api/v1/public/receipts/1999-00000001?code={receipt['verification_code']}").json == {
        "valid": False}
    assert client.get("/api/v1/public/receipts/garbage?code=x").json == {"valid": False}
    client.post(f"/api/v1/receipts/{receipt['number']}/void", json={"reason": "x"}, headers=staff.headers("finance"))
    voided = client.get(f"/api/v1/public/receipts/{receipt['number']}?code={receipt['verification_code']}").json
    assert voided["valid"] is False and voided["status"] == "voided"


def test_shift_close_reports_totals_and_the_cash_difference(client: FlaskClient, staff: Staff) -> None:
    for method in ("cash", "cash", "card", "transfer"):
        pay(client, staff, new_notice(client, staff)["number"], 8000, method)
    current = client.get("/api/v1/shifts/current", headers=staff.headers("cashier")).json
    assert (current["recorded_cash"], current["recorded_card"], current["recorded_transfer"]) == (16000, 8000, 8000)
    closed = client.post("/api/v1/shifts/current/close", json={"declared_cash": 15900, "note": "少一元"},
                         headers=staff.headers("cashier"))
    assert closed.status_code == 200, closed.json
    assert closed.json["cash_difference"] == -100 and closed.json["closed_at"]
    again = client.post("/api/v1/shifts/current/close", json={"declared_cash": 0}, headers=staff.headers("cashier"))
    assert again.status_code == 409
    pdf = client.get(f"/api/v1/shifts/{closed.json['id']}/pdf", headers=staff.headers("cashier"))
    assert pdf.status_code == 200 and pdf.data.startswith(b"%PDF")


def test_a_confirmed_payment_is_refunded_only_by_voiding_its_receipt(client: FlaskClient, staff: Staff) -> None:
    paid = pay(client, staff, new_notice(client, staff)["number"], 8000).json
    response = client.post(f"/api/v1/payments/{paid['payment']['id']}/refund-due", json={"reason": "退回"},
                           headers=staff.headers("finance"))
    assert response.status_code == 409 and response.json["type"].endswith("/refund-not-due")
    receipt = client.get(f"/api/v1/receipts/{paid['receipt']['number']}", headers=staff.headers("finance")).json
    assert receipt["status"] == "valid"


def test_the_notice_shows_its_payment_receipt_and_certificate(client: FlaskClient, staff: Staff) -> None:
    number = new_notice(client, staff)["number"]
    unpaid = client.get(f"/api/v1/notices/{number}", headers=staff.headers("window")).json
    assert (unpaid["payment"], unpaid["receipt"], unpaid["certificate"]) == (None, None, None)
    paid = pay(client, staff, number, 8000).json
    client.post(f"/api/v1/notices/{number}/certificate", json={"certificate_number": "C-1"},
                headers=staff.headers("window"))
    shown = client.get(f"/api/v1/notices/{number}", headers=staff.headers("window")).json
    assert shown["payment"]["id"] == paid["payment"]["id"]
    assert shown["receipt"]["number"] == paid["receipt"]["number"]
    assert shown["certificate"]["number"] == "C-1"
