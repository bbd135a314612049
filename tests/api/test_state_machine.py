"""The payment / receipt / certificate state machine as a table: (state, action) → result."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.conftest import Staff, issue

STATES = ["issued", "paid", "certified", "voided", "refunded", "cancelled", "paid_again"]
ACTIONS = ["pay", "void", "refund", "certificate", "cancel"]

# (state, action) → (status, problem code or None, notice status afterwards)
EXPECTED: dict[tuple[str, str], tuple[int, str | None, str]] = {
    ("issued", "pay"): (201, None, "paid"),
    ("issued", "void"): (404, "not-found", "issued"),
    ("issued", "refund"): (404, "not-found", "issued"),
    ("issued", "certificate"): (409, "payment-required", "issued"),
    ("issued", "cancel"): (200, None, "cancelled"),
    ("paid", "pay"): (409, "notice-already-paid", "paid"),
    ("paid", "void"): (200, None, "issued"),
    ("paid", "refund"): (409, "refund-not-due", "paid"),
    ("paid", "certificate"): (201, None, "paid"),
    ("paid", "cancel"): (409, "notice-already-paid", "paid"),
    ("certified", "pay"): (409, "notice-already-paid", "paid"),
    ("certified", "void"): (409, "certificate-issued", "paid"),
    ("certified", "refund"): (409, "refund-not-due", "paid"),
    ("certified", "certificate"): (409, "certificate-already-issued", "paid"),
    ("certified", "cancel"): (409, "notice-already-paid", "paid"),
    ("voided", "pay"): (201, None, "paid"),
    ("voided", "void"): (409, "receipt-voided", "issued"),
    ("voided", "refund"): (200, None, "issued"),
    ("voided", "certificate"): (409, "payment-required", "issued"),
    ("voided", "cancel"): (200, None, "cancelled"),
    ("refunded", "pay"): (201, None, "paid"),
    ("refunded", "void"): (409, "receipt-voided", "issued"),
    ("refunded", "refund"): (409, "refund-not-due", "issued"),
    ("refunded", "certificate"): (409, "payment-required", "issued"),
    ("refunded", "cancel"): (200, None, "cancelled"),
    ("cancelled", "pay"): (409, "notice-cancelled", "cancelled"),
    ("cancelled", "void"): (404, "not-found", "cancelled"),
    ("cancelled", "refund"): (404, "not-found", "cancelled"),
    ("cancelled", "certificate"): (409, "payment-required", "cancelled"),
    ("cancelled", "cancel"): (409, "notice-cancelled", "cancelled"),
    # paid again after a void: the new receipt works, the old one stays voided
    ("paid_again", "pay"): (409, "notice-already-paid", "paid"),
    ("paid_again", "void"): (409, "receipt-voided", "paid"),
    ("paid_again", "refund"): (200, None, "paid"),
    ("paid_again", "certificate"): (201, None, "paid"),
    ("paid_again", "cancel"): (409, "notice-already-paid", "paid"),
}


def test_the_table_is_complete() -> None:
    assert set(EXPECTED) == {(s, a) for s in STATES for a in ACTIONS}


def _pay(client: FlaskClient, staff: Staff, number: str) -> dict[str, Any]:
    response = client.post(f"/api/v1/notices/{number}/payments", json={"amount": 8000, "method": "cash"},
                           headers=staff.headers("cashier"))
    assert response.status_code == 201, response.json
    return {"receipt": response.json["receipt"]["number"], "payment": response.json["payment"]["id"]}


def _void(client: FlaskClient, staff: Staff, receipt: str) -> None:
    assert client.post(f"/api/v1/receipts/{receipt}/void", json={"reason": "收错"},
                       headers=staff.headers("finance")).status_code == 200


def bring_to(client: FlaskClient, staff: Staff, state: str) -> dict[str, Any]:
    """A notice in `state`; returns its number and the receipt/payment an action should act on."""
    number = issue(client, staff).json["number"]
    made: dict[str, Any] = {"number": number, "receipt": "2026-99999999", "payment": 2147483000}
    if state == "cancelled":
        client.post(f"/api/v1/notices/{number}/cancel", json={"reason": "撤回"}, headers=staff.headers("window"))
    if state in {"paid", "certified", "voided", "refunded", "paid_again"}:
        made.update(_pay(client, staff, number))
    if state == "certified":
        assert client.post(f"/api/v1/notices/{number}/certificate", json={},
                           headers=staff.headers("window")).status_code == 201
    if state in {"voided", "refunded", "paid_again"}:
        _void(client, staff, made["receipt"])
    if state == "refunded":
        assert client.post(f"/api/v1/payments/{made['payment']}/refund", json={"method": "cash"},
                           headers=staff.headers("finance")).status_code == 200
    if state == "paid_again":
        old_payment = made["payment"]
        second = _pay(client, staff, number)
        # void the old receipt again (refused); refund the old, refund_due payment (allowed)
        made.update(payment=old_payment, new_receipt=second["receipt"])
    return made


def act(client: FlaskClient, staff: Staff, action: str, made: dict[str, Any]) -> Any:
    number = made["number"]
    if action == "pay":
        return client.post(f"/api/v1/notices/{number}/payments", json={"amount": 8000, "method": "cash"},
                           headers=staff.headers("cashier"))
    if action == "void":
        return client.post(f"/api/v1/receipts/{made['receipt']}/void", json={"reason": "再次冲红"},
                           headers=staff.headers("finance"))
    if action == "refund":
        return client.post(f"/api/v1/payments/{made['payment']}/refund", json={"method": "transfer"},
                           headers=staff.headers("finance"))
    if action == "certificate":
        return client.post(f"/api/v1/notices/{number}/certificate", json={}, headers=staff.headers("window"))
    return client.post(f"/api/v1/notices/{number}/cancel", json={"reason": "撤回"}, headers=staff.headers("window"))


@pytest.mark.parametrize(("state", "action"), sorted(EXPECTED))
def test_state_action(client: FlaskClient, staff: Staff, state: str, action: str) -> None:
    status, code, notice_after = EXPECTED[(state, action)]
    made = bring_to(client, staff, state)
    response = act(client, staff, action, made)
    assert response.status_code == status, response.json
    if code is not None:
        assert response.json["type"].endswith("/" + code)
    notice = client.get(f"/api/v1/notices/{made['number']}", headers=staff.headers("finance")).json
    assert notice["status"] == notice_after
    valid_receipts = [r for r in [notice["receipt"]] if r and r["status"] == "valid"]
    assert len(valid_receipts) == (1 if notice_after == "paid" else 0)
