"""Issue 10, defect 2: a new event that reuses a bank reference for other money is a conflict.

The bank's `bank_reference` names one transfer. The same transfer sent again under a new
webhook-id (same notice, same amount) is the duplicate it looks like. The same reference on
another notice or amount is other money the bank says it holds: it must be kept for finance as a
flagged payment and a security event, never answered "duplicate" and dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from core.db import Database
from payments.models import Payment
from receipts.models import Receipt
from tests.conftest import table_counts
from tests.webhooks.conftest import Bank
from webhooks.models import SecurityEvent
from webhooks.simulator import callback_body


def _payments(db: Database) -> list[Payment]:
    with db.reading() as session:
        return list(session.scalars(select(Payment).order_by(Payment.id)))


@pytest.mark.parametrize("change", ["another notice", "another amount"])
def test_a_reused_bank_reference_for_other_money_is_flagged_for_finance(
        bank: Bank, notice_factory: Callable[..., str], db: Database, change: str) -> None:
    first, second = notice_factory(), notice_factory()
    assert bank.pay(first, 8000, webhook_id="evt-1", reference="TXN-1").json["result"] == "confirmed"
    number, amount = (second, 8000) if change == "another notice" else (first, 9000)
    before = table_counts(db)
    response = bank.post(callback_body(number, amount, bank_reference="TXN-1"), webhook_id="evt-2")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.json == {"result": "flagged", "reason": "bank-reference-conflict"}
    after = table_counts(db)
    assert after["payments"] - before["payments"] == 1
    assert after["receipts"] == before["receipts"]
    assert after["security_events"] - before["security_events"] == 1
    flagged = _payments(db)[-1]
    assert (flagged.status, flagged.flag_reason) == ("flagged", "bank-reference-conflict")
    assert (flagged.bank_reference, flagged.amount, flagged.notice_number_given) == ("TXN-1", amount, number)
    with db.reading() as session:
        security = session.scalars(select(SecurityEvent)).one()
        assert (security.kind, security.webhook_id) == ("bank-reference-conflict", "evt-2")
        assert "TXN-1" in security.detail
        assert session.scalar(select(Receipt.id).where(Receipt.payment_id == flagged.id)) is None
    # The bank retrying that event: the duplicate of what was recorded, nothing more.
    again = bank.post(callback_body(number, amount, bank_reference="TXN-1"), webhook_id="evt-2")
    assert again.json == {"result": "duplicate"}
    assert table_counts(db) == after


def test_the_same_transfer_under_a_new_webhook_id_stays_a_duplicate(
        bank: Bank, notice_factory: Callable[..., str], db: Database) -> None:
    number = notice_factory()
    assert bank.pay(number, 8000, webhook_id="evt-1", reference="TXN-1").json["result"] == "confirmed"
    spaced = " ".join(number[i:i + 4] for i in range(0, len(number), 4))  # as a bank may print it
    response = bank.post(callback_body(spaced, 8000, bank_reference="TXN-1"), webhook_id="evt-2")
    assert response.json == {"result": "duplicate"}
    assert len(_payments(db)) == 1


def test_a_reference_of_flagged_money_reused_for_other_money_is_flagged_too(
        bank: Bank, notice_factory: Callable[..., str], db: Database) -> None:
    first, second = notice_factory(), notice_factory()
    wrong: dict[str, Any] = bank.post(callback_body(first, 7000, bank_reference="TXN-9"), webhook_id="evt-1").json
    assert wrong == {"result": "flagged", "reason": "amount-mismatch"}
    assert bank.post(callback_body(first, 7000, bank_reference="TXN-9"),
                     webhook_id="evt-2").json == {"result": "duplicate"}
    other = bank.post(callback_body(second, 8000, bank_reference="TXN-9"), webhook_id="evt-3").json
    assert other == {"result": "flagged", "reason": "bank-reference-conflict"}
    assert [p.flag_reason for p in _payments(db)] == ["amount-mismatch", "bank-reference-conflict"]


def test_finance_sees_the_conflict_as_a_duplicate_payment_exception_that_says_what_happened(
        app: Any, bank: Bank, notice_factory: Callable[..., str], db: Database) -> None:
    from core.clock import today
    from receipts.service import receipt_settings
    from reconciliation.models import ReconciliationException
    from reconciliation.service import reconcile
    from reconciliation.texts import describe

    first, second = notice_factory(), notice_factory()
    assert bank.pay(first, 8000, webhook_id="evt-1", reference="TXN-1").json["result"] == "confirmed"
    bank.post(callback_body(second, 8000, bank_reference="TXN-1"), webhook_id="evt-2")
    business_date = today(app.config["FEESVC_TIMEZONE"])
    reconcile(db, receipt_settings(app.config), business_date, started_by="test")
    with db.reading() as session:
        found = [e for e in session.scalars(select(ReconciliationException)
                                            .where(ReconciliationException.business_date == business_date))
                 if e.detail_code == "bank-reference-conflict"]
        assert [(e.type, e.actual_amount) for e in found] == [("duplicate_payment", 8000)]
        assert "流水号" in describe(found[0]) and "80.00" in describe(found[0])
