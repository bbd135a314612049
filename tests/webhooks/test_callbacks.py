"""Bank callbacks as API.md describes them: confirmed, duplicate, flagged, refused."""

from __future__ import annotations

from collections.abc import Callable

from flask.testing import FlaskClient
from sqlalchemy import func, select

from core.db import Database
from payments.models import Payment
from tests.conftest import Staff, table_counts
from tests.webhooks.conftest import Bank
from webhooks.models import BankEvent


def test_a_signed_callback_confirms_the_payment_and_issues_a_receipt(
        bank: Bank, notice_factory: Callable[..., str], client: FlaskClient, staff: Staff) -> None:
    number = notice_factory()
    response = bank.pay(number, 8000, webhook_id="msg_1")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.json["result"] == "confirmed"
    receipt_number = response.json["receipt_number"]
    notice = client.get(f"/api/v1/notices/{number}", headers=staff.headers("finance")).json
    assert notice["status"] == "paid" and notice["receipt"]["number"] == receipt_number
    assert notice["payment"]["channel"] == "bank" and notice["payment"]["bank_reference"] == "REF-msg_1"


def test_flagged_reasons(bank: Bank, notice_factory: Callable[..., str], db: Database, client: FlaskClient,
                         staff: Staff) -> None:
    paid = notice_factory()
    assert bank.pay(paid, 8000, webhook_id="a").json["result"] == "confirmed"
    cancelled = notice_factory()
    client.post(f"/api/v1/notices/{cancelled}/cancel", json={"reason": "撤回"}, headers=staff.headers("window"))
    cases = {
        "notice-already-paid": (paid, 8000),
        "amount-mismatch": (notice_factory(), 7000),
        "notice-cancelled": (cancelled, 8000),
        "unknown-notice": ("99000126999999999905", 8000),
    }
    for index, (reason, (number, amount)) in enumerate(cases.items()):
        response = bank.pay(number, amount, webhook_id=f"f{index}")
        assert response.status_code == 200
        assert response.json == {"result": "flagged", "reason": reason}
    with db.reading() as session:
        flagged = session.scalar(select(func.count()).select_from(Payment).where(Payment.status == "flagged"))
        assert flagged == 4
        assert session.scalar(select(func.count()).select_from(BankEvent)) == 5


def test_bad_signature_records_nothing(bank: Bank, notice_factory: Callable[..., str], db: Database) -> None:
    number = notice_factory()
    before = table_counts(db)
    response = bank.pay(number, 8000, webhook_id="x", secret="whsec_" + "A" * 44)
    assert response.status_code == 401
    assert response.mimetype == "application/problem+json"
    assert table_counts(db) == before
