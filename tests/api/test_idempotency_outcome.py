"""Issue 10, defect 1: a keyed payment's outcome is never misreported.

The payment and the stored idempotent result are one transaction, so there is no moment where
the payment is committed and the key's result is not. When the outcome is unknown (the commit's
answer was lost), the client is told so, and its retry with the same key replays the first 201.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import event, func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from core.db import Database
from payments.models import Payment
from tests.conftest import Staff, issue

PAY = {"amount": 8000, "method": "cash"}


def _notice(client: FlaskClient, staff: Staff) -> str:
    response = issue(client, staff)
    assert response.status_code == 201, response.json
    return str(response.json["number"])


def _payments(db: Database) -> int:
    with db.reading() as session:
        return int(session.scalar(select(func.count()).select_from(Payment)) or 0)


@contextmanager
def _failing_key_write(db: Database) -> Iterator[list[str]]:
    """The first write of the key's result after the payment is inserted fails as a dropped
    connection would: wherever the key's result is stored, that statement does not happen."""
    failed: list[str] = []

    def fail(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if failed or not statement.lstrip().upper().startswith("UPDATE IDEMPOTENCY_KEYS"):
            return
        failed.append(statement)
        raise OperationalError(statement, {}, Exception("server closed the connection unexpectedly"))

    event.listen(db.engine, "before_cursor_execute", fail)
    try:
        yield failed
    finally:
        event.remove(db.engine, "before_cursor_execute", fail)


def test_a_failure_storing_the_keys_result_never_leaves_a_payment_the_client_was_told_did_not_happen(
        client: FlaskClient, staff: Staff, db: Database) -> None:
    number = _notice(client, staff)
    headers = staff.headers("cashier", **{"Idempotency-Key": "pay-once"})
    with _failing_key_write(db) as failed:
        first = client.post(f"/api/v1/notices/{number}/payments", json=PAY, headers=headers)
    assert failed, "the injected failure did not fire"
    assert first.status_code == 503, first.json
    if first.json["code"] == "unavailable":  # "nothing written" must then be true
        assert _payments(db) == 0
    retry = client.post(f"/api/v1/notices/{number}/payments", json=PAY, headers=headers)
    assert retry.status_code == 201, retry.json
    assert _payments(db) == 1


def test_a_commit_whose_answer_is_lost_says_the_outcome_is_unknown_and_the_retry_replays_the_201(
        client: FlaskClient, staff: Staff, db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    number = _notice(client, staff)
    headers = staff.headers("cashier", **{"Idempotency-Key": "lost-ack"})
    real_commit = Session.commit
    lost: list[bool] = []

    def commit_then_lose_the_answer(self: Session) -> None:
        real_commit(self)
        if not lost:
            lost.append(True)
            raise OperationalError("COMMIT", {}, Exception("server closed the connection unexpectedly"))

    monkeypatch.setattr(Session, "commit", commit_then_lose_the_answer)
    first = client.post(f"/api/v1/notices/{number}/payments", json=PAY, headers=headers)
    monkeypatch.setattr(Session, "commit", real_commit)
    assert first.status_code == 503
    assert first.json["code"] == "outcome-unknown"
    assert "Idempotency-Key" in first.json["detail"]
    assert first.headers["Retry-After"]
    retry = client.post(f"/api/v1/notices/{number}/payments", json=PAY, headers=headers)
    assert retry.status_code == 201, retry.json
    assert retry.headers.get("Idempotent-Replayed") == "true"
    assert retry.json["receipt"]["notice_number"] == number
    assert _payments(db) == 1


def test_a_commit_whose_answer_is_lost_without_a_key_is_not_called_nothing_written(
        client: FlaskClient, staff: Staff, db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    number = _notice(client, staff)
    real_commit = Session.commit
    lost: list[bool] = []

    def commit_then_lose_the_answer(self: Session) -> None:
        real_commit(self)
        if not lost:
            lost.append(True)
            raise OperationalError("COMMIT", {}, Exception("connection reset"))

    monkeypatch.setattr(Session, "commit", commit_then_lose_the_answer)
    first = client.post(f"/api/v1/notices/{number}/payments", json=PAY, headers=staff.headers("cashier"))
    monkeypatch.setattr(Session, "commit", real_commit)
    assert first.status_code == 503
    assert first.json["code"] == "outcome-unknown"
    assert "未生效" not in first.json["detail"]
    assert _payments(db) == 1


def test_a_refused_keyed_request_is_replayed_and_writes_nothing(client: FlaskClient, staff: Staff,
                                                              db: Database) -> None:
    number = _notice(client, staff)
    headers = staff.headers("cashier", **{"Idempotency-Key": "wrong-amount"})
    body = {"amount": 7999, "method": "cash"}
    first = client.post(f"/api/v1/notices/{number}/payments", json=body, headers=headers)
    assert first.status_code == 422 and first.json["code"] == "amount-mismatch", first.json
    again = client.post(f"/api/v1/notices/{number}/payments", json=body, headers=headers)
    assert again.status_code == 422 and again.headers.get("Idempotent-Replayed") == "true"
    assert again.json == first.json
    assert _payments(db) == 0


def test_the_cashier_page_stores_its_key_with_the_payment(client: FlaskClient, staff: Staff, db: Database,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The scanner flow: a lost commit answer, then the same form again, shows the first receipt."""
    from tests.conftest import make_test_app
    from tests.views.conftest import signed_in

    number = _notice(client, staff)
    html_app = make_test_app(client.application.config["DATABASE_URL"], WTF_CSRF_ENABLED=False)
    page = signed_in(html_app, staff.usernames["cashier"])
    form = {"number": number, "amount": "8000", "method": "cash", "idempotency_key": "form-1"}
    real_commit = Session.commit
    lost: list[bool] = []

    def commit_then_lose_the_answer(self: Session) -> None:
        real_commit(self)
        if not lost and _payments(db) == 1:
            lost.append(True)
            raise OperationalError("COMMIT", {}, Exception("connection reset"))

    monkeypatch.setattr(Session, "commit", commit_then_lose_the_answer)
    first = page.post("/cashier/pay", data=form)
    monkeypatch.setattr(Session, "commit", real_commit)
    assert lost and first.status_code == 503
    again = page.post("/cashier/pay", data=form)
    assert again.status_code == 303, again.get_data(as_text=True)
    assert "/cashier/receipts/" in again.headers["Location"]
    assert _payments(db) == 1
    html_app.extensions["db"].engine.dispose()
