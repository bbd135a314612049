"""A bank callback's shape: the event's identity claimed in one statement, the receipt counter and the
audit chain head taken last, nothing but the final writes after them (bench/RESULTS-payments.md)."""

from __future__ import annotations

from flask.testing import FlaskClient
from sqlalchemy import text

from core.audit import verify_audit_chain
from core.db import Database
from tests.api.test_confirm_path import AFTER_COUNTER, after_counter, new_notice, statements
from tests.conftest import AUDIT_KEY, Staff
from tests.webhooks.conftest import Bank


def test_a_bank_callback_takes_the_counter_and_the_audit_head_last(bank: Bank, client: FlaskClient, staff: Staff,
                                                                  db: Database) -> None:
    first, second = new_notice(client, staff), new_notice(client, staff)
    assert bank.pay(first, 8000, webhook_id="evt-1").json["result"] == "confirmed"
    with statements(db) as seen:
        response = bank.pay(second, 8000, webhook_id="evt-2")
    assert response.status_code == 200 and response.json["result"] == "confirmed", response.json
    tail = after_counter(seen)
    assert all(AFTER_COUNTER.match(s) for s in tail), tail
    assert sum(s.startswith("UPDATE bank_events") for s in tail) == 1
    # the event's identity is claimed in one statement; no savepoint anywhere
    claims = [s for s in seen if s.startswith("INSERT INTO bank_events")]
    assert len(claims) == 1 and "ON CONFLICT" in claims[0]
    assert not any(s.startswith("SAVEPOINT") for s in seen)
    with db.reading() as session:
        row = session.execute(text("SELECT result, payment_id, response_status, response_body FROM bank_events "
                                   "WHERE webhook_id = 'evt-2'")).one()
        assert row[0] == "confirmed" and row[1] is not None and row[2] == 200 and "receipt_number" in row[3]
        assert verify_audit_chain(session, AUDIT_KEY).ok


def test_a_known_bank_reference_for_another_payable_notice_pays_nothing(bank: Bank, client: FlaskClient,
                                                                        staff: Staff, db: Database) -> None:
    """The reference's unique index refuses the payment (ON CONFLICT DO NOTHING, no savepoint before
    it): the other notice stays payable, no receipt number is taken, and the money the event claims
    is kept as a flagged conflict (issue 10: never answered "duplicate" and dropped)."""
    first, other = new_notice(client, staff), new_notice(client, staff)
    assert bank.pay(first, 8000, webhook_id="evt-1", reference="SAME").json["result"] == "confirmed"
    with statements(db) as seen:
        again = bank.pay(other, 8000, webhook_id="evt-2", reference="SAME")
    assert again.status_code == 200 and again.json == {"result": "flagged", "reason": "bank-reference-conflict"}
    assert not any(s.startswith("UPDATE receipt_counters") for s in seen)
    with db.reading() as session:
        assert session.execute(text("SELECT status FROM notices WHERE number = :n"), {"n": other}).scalar() == "issued"
        assert session.execute(text("SELECT count(*) FROM payments WHERE status = 'flagged'")).scalar() == 1
        assert session.execute(text("SELECT count(*) FROM receipts")).scalar() == 1
        row = session.execute(text("SELECT result, reason FROM bank_events WHERE webhook_id = 'evt-2'")).one()
        assert tuple(row) == ("flagged", "bank-reference-conflict")
        assert verify_audit_chain(session, AUDIT_KEY).ok
