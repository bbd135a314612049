"""Bank callbacks as API.md describes them, after the signature was verified: confirmed,
duplicate, 409 for a reused webhook-id, flagged (every reason), 400 for a malformed body — and
the bank's queries."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from core.audit import AuditEntry, verify_audit_chain
from core.clock import today, zone
from core.db import Database
from core.outbox import OutboxEvent
from notices.models import Notice
from notices.numbers import compose_notice_number
from notices.service import expire_overdue, settings_from_config
from payments.models import Payment
from receipts.models import Receipt
from tests.conftest import AUDIT_KEY, Staff, table_counts
from tests.webhooks.conftest import Bank, now_seconds, sign
from webhooks.models import BankEvent, SecurityEvent
from webhooks.simulator import callback_body

TZ = "Asia/Shanghai"


def counts_changed(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {table: after[table] - before[table] for table in after if after[table] != before[table]}


def notice_status(db: Database, number: str) -> str:
    with db.reading() as session:
        return str(session.scalar(select(Notice.status).where(Notice.number == number)))


def run_expiry_job(number: str) -> None:
    from flask import current_app

    db: Database = current_app.extensions["db"]
    with db.unit_of_work() as session:
        assert number in expire_overdue(session, settings_from_config(current_app.config), today(TZ))


def body_of(number: str, amount: Any = 8000, **data: Any) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(callback_body(number, 8000, bank_reference="REF-1"))
    document["data"]["amount"] = amount
    for key, value in data.items():
        if value is _DROP:
            del document["data"][key]
        else:
            document["data"][key] = value
    return document


_DROP = object()


def post_signed(bank: Bank, raw: bytes, webhook_id: str = "msg_1") -> Any:
    return bank.post_raw(raw, sign(bank.secret, webhook_id, raw, now_seconds()))


# --- confirmed and duplicate ---------------------------------------------------------------------

def test_a_signed_callback_confirms_the_payment_and_issues_a_receipt(
        bank: Bank, notice_factory: Callable[..., str], client: FlaskClient, staff: Staff, db: Database) -> None:
    number = notice_factory()
    before = table_counts(db)
    response = bank.pay(number, 8000, webhook_id="msg_1")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    assert response.json == {"result": "confirmed", "receipt_number": f"{today(TZ).year}-00000001"}
    notice: Any = client.get(f"/api/v1/notices/{number}", headers=staff.headers("finance")).json
    assert notice["status"] == "paid" and notice["receipt"]["number"] == response.json["receipt_number"]
    assert notice["payment"]["channel"] == "bank" and notice["payment"]["bank_reference"] == "REF-msg_1"
    changed = counts_changed(before, table_counts(db))
    assert changed["payments"] == changed["receipts"] == changed["bank_events"] == changed["outbox_events"] == 1
    assert "security_events" not in changed
    with db.reading() as session:
        event = session.scalar(select(BankEvent))
        assert event is not None
        assert (event.bank_code, event.webhook_id, event.result) == ("ICBC-T", "msg_1", "confirmed")
        assert json.loads(event.response_body) == response.json and event.response_status == 200
        headers = json.loads(event.headers)
        assert headers["webhook-id"] == "msg_1" and "webhook-timestamp" in headers
        assert "webhook-signature" not in headers
        payment = session.get(Payment, event.payment_id)
        assert payment is not None and (payment.status, payment.channel, payment.bank_code) == (
            "confirmed", "bank", "ICBC-T")
        outbox = session.scalar(select(OutboxEvent))
        assert outbox is not None and outbox.event_type == "notice.paid"
        assert json.loads(outbox.payload)["data"]["receipt_number"] == response.json["receipt_number"]
        assert verify_audit_chain(session, AUDIT_KEY).ok


def test_headers_a_bank_should_not_send_are_not_stored(bank: Bank, notice_factory: Callable[..., str],
                                                       db: Database) -> None:
    number = notice_factory()
    raw = callback_body(number, 8000).encode()
    headers = sign(bank.secret, "msg_h", raw, now_seconds())
    headers.update({"Authorization": "Bearer s3cr3t-token", "Cookie": "session=s3cr3t-cookie"})
    assert bank.post_raw(raw, headers).json["result"] == "confirmed"
    with db.reading() as session:
        stored = session.scalar(select(BankEvent.headers))
    assert stored is not None and "s3cr3t" not in stored


def test_a_retried_event_is_a_duplicate_whatever_its_first_result(bank: Bank, notice_factory: Callable[..., str],
                                                                    db: Database) -> None:
    number = notice_factory()
    confirmed = callback_body(number, 8000, bank_reference="R1")
    flagged = callback_body(number, 7000, bank_reference="R2")
    assert bank.post(confirmed, webhook_id="c").json["result"] == "confirmed"
    assert bank.post(flagged, webhook_id="f").json["result"] == "flagged"
    before = table_counts(db)
    for webhook_id, body in [("c", confirmed), ("f", flagged), ("c", confirmed), ("f", flagged)]:
        response = bank.post(body, webhook_id=webhook_id)
        assert response.status_code == 200 and response.json == {"result": "duplicate"}
    assert table_counts(db) == before


def test_the_same_money_under_a_new_webhook_id_is_not_applied_twice(bank: Bank, notice_factory: Callable[..., str],
                                                                     db: Database) -> None:
    number = notice_factory()
    assert bank.pay(number, 8000, webhook_id="first", reference="SAME").json["result"] == "confirmed"
    again = bank.pay(number, 8000, webhook_id="second", reference="SAME")
    assert again.status_code == 200 and again.json == {"result": "duplicate"}
    with db.reading() as session:
        assert session.scalar(select(func.count()).select_from(Payment)) == 1
        assert session.scalar(select(func.count()).select_from(Receipt)) == 1


def test_the_event_identity_is_bank_and_webhook_id(bank: Bank, other_bank: Bank,
                                                   notice_factory: Callable[..., str]) -> None:
    first, second = notice_factory(), notice_factory()
    assert bank.pay(first, 8000, webhook_id="msg_1").json["result"] == "confirmed"
    assert other_bank.pay(second, 8000, webhook_id="msg_1").json["result"] == "confirmed"


# --- 409: the same webhook-id with another body ---------------------------------------------------

@pytest.mark.parametrize("change", ["another amount", "whitespace only", "another notice"])
def test_same_webhook_id_with_another_body_is_409_and_has_no_effect(
        bank: Bank, notice_factory: Callable[..., str], db: Database, change: str) -> None:
    number, other = notice_factory(), notice_factory()
    original = callback_body(number, 8000, bank_reference="R1")
    assert bank.post(original, webhook_id="msg_1").json["result"] == "confirmed"
    changed = {
        "another amount": original.replace('"amount": 8000', '"amount": 9000'),
        "whitespace only": original.replace(", ", ",  ", 1),  # the same JSON value, other bytes
        "another notice": callback_body(other, 8000, bank_reference="R2"),
    }[change]
    assert changed != original
    before = table_counts(db)
    response = bank.post(changed, webhook_id="msg_1")
    assert response.status_code == 409, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    assert response.json["type"].endswith("/webhook-id-reused")
    assert counts_changed(before, table_counts(db)) == {"security_events": 1}
    with db.reading() as session:
        security = session.scalar(select(SecurityEvent))
        assert security is not None
        assert (security.kind, security.bank_code, security.webhook_id) == ("webhook-id-reused", "ICBC-T", "msg_1")
    assert notice_status(db, other) == "issued"
    # The original is still answered as the duplicate it is.
    assert bank.post(original, webhook_id="msg_1").json == {"result": "duplicate"}


# --- flagged: the bank has the money; finance must act --------------------------------------------

def _paid_at_cashier(client: FlaskClient, staff: Staff, number: str) -> None:
    response = client.post(f"/api/v1/notices/{number}/payments", json={"amount": 8000, "method": "cash"},
                           headers=staff.headers("cashier"))
    assert response.status_code == 201, response.json


def _cancelled(client: FlaskClient, staff: Staff, number: str) -> None:
    response = client.post(f"/api/v1/notices/{number}/cancel", json={"reason": "撤回"},
                           headers=staff.headers("window"))
    assert response.status_code == 200, response.json


UNKNOWN = compose_notice_number("990001", 26, 9_999_999_999)
MISTYPED = UNKNOWN[:-1] + str((int(UNKNOWN[-1]) + 1) % 10)

FLAG_CASES: dict[str, tuple[str, str, int, str]] = {
    # case: (how the notice is prepared, which number is sent, amount, reason)
    "unknown notice": ("issued", "unknown", 8000, "unknown-notice"),
    "mistyped number": ("issued", "mistyped", 8000, "unknown-notice"),
    "not a number at all": ("issued", "garbage", 8000, "unknown-notice"),
    "amount too low": ("issued", "notice", 7999, "amount-mismatch"),
    "amount too high": ("issued", "notice", 8001, "amount-mismatch"),
    "already paid at the cashier": ("paid-cashier", "notice", 8000, "notice-already-paid"),
    "already paid by this bank": ("paid-bank", "notice", 8000, "notice-already-paid"),
    "cancelled": ("cancelled", "notice", 8000, "notice-cancelled"),
    "expired, job not yet run": ("overdue", "notice", 8000, "notice-expired"),
    "expired by the nightly job": ("expired", "notice", 8000, "notice-expired"),
}


@pytest.mark.parametrize("case", FLAG_CASES.values(), ids=FLAG_CASES.keys())
def test_every_flag_reason_records_a_flagged_payment_without_receipt(
        case: tuple[str, str, int, str], bank: Bank, notice_factory: Callable[..., str], client: FlaskClient,
        staff: Staff, db: Database) -> None:
    prepare, which, amount, reason = case
    number = notice_factory(overdue=prepare in ("overdue", "expired"))
    if prepare == "expired":
        run_expiry_job(number)
    if prepare == "paid-cashier":
        _paid_at_cashier(client, staff, number)
    elif prepare == "paid-bank":
        assert bank.pay(number, 8000, webhook_id="earlier").json["result"] == "confirmed"
    elif prepare == "cancelled":
        _cancelled(client, staff, number)
    sent = {"notice": number, "unknown": UNKNOWN, "mistyped": MISTYPED, "garbage": "NOT-A-NOTICE"}[which]
    status_before = notice_status(db, number)
    before = table_counts(db)

    body = callback_body(sent, amount, bank_reference="BANKREF-9")
    response = bank.post(body, webhook_id="msg_flag")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.json == {"result": "flagged", "reason": reason}

    changed = counts_changed(before, table_counts(db))
    assert changed.get("payments") == 1 and changed.get("bank_events") == 1
    assert "receipts" not in changed and "outbox_events" not in changed and "security_events" not in changed
    assert notice_status(db, number) == status_before
    with db.reading() as session:
        payment = session.scalar(select(Payment).where(Payment.bank_reference == "BANKREF-9"))
        assert payment is not None
        assert (payment.status, payment.flag_reason, payment.amount, payment.channel, payment.bank_code) == (
            "flagged", reason, amount, "bank", "ICBC-T")
        assert payment.notice_number_given == sent
        assert (payment.notice_id is None) == (which != "notice")
        event = session.scalar(select(BankEvent).where(BankEvent.webhook_id == "msg_flag"))
        assert event is not None and (event.result, event.reason, event.payment_id) == ("flagged", reason, payment.id)
        audit = session.scalar(select(AuditEntry).where(AuditEntry.action == "payment.flagged"))
        assert audit is not None and reason in (audit.after or "")
        assert verify_audit_chain(session, AUDIT_KEY).ok

    # The bank retrying the flagged event: duplicate, no second flagged payment.
    again = table_counts(db)
    assert bank.post(body, webhook_id="msg_flag").json == {"result": "duplicate"}
    assert table_counts(db) == again


@pytest.mark.parametrize("job_ran", [False, True], ids=["job not run", "job ran"])
@pytest.mark.parametrize("paid_at", ["due date 23:59:59 +08:00", "due date 15:59:59Z", "due date 09:00 +08:00"])
def test_paid_on_the_due_date_but_called_back_after_expiry_is_confirmed(
        bank: Bank, notice_factory: Callable[..., str], db: Database, job_ran: bool, paid_at: str) -> None:
    number = notice_factory(overdue=True)
    if job_ran:
        run_expiry_job(number)
    due = today(TZ) - timedelta(days=1)
    moment = {
        "due date 23:59:59 +08:00": datetime.combine(due, time(23, 59, 59), zone(TZ)),
        "due date 15:59:59Z": datetime.combine(due, time(15, 59, 59), UTC),  # = 23:59:59 in Shanghai
        "due date 09:00 +08:00": datetime.combine(due, time(9, 0), zone(TZ)),
    }[paid_at]
    response = bank.post(callback_body(number, 8000, paid_at=moment), webhook_id="late")
    assert response.status_code == 200 and response.json["result"] == "confirmed", response.json
    assert notice_status(db, number) == "paid"
    with db.reading() as session:
        payment = session.scalar(select(Payment))
        assert payment is not None and payment.paid_at == moment


def test_paid_the_day_after_the_due_date_is_flagged_expired(bank: Bank, notice_factory: Callable[..., str],
                                                            db: Database) -> None:
    number = notice_factory(overdue=True)
    due = today(TZ) - timedelta(days=1)
    moment = datetime.combine(due + timedelta(days=1), time(0, 0), zone(TZ))
    response = bank.post(callback_body(number, 8000, paid_at=moment), webhook_id="late")
    assert response.json == {"result": "flagged", "reason": "notice-expired"}


# --- 400: verified, but not the body of API.md -----------------------------------------------------

def _deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


MALFORMED: dict[str, Callable[[str], bytes]] = {
    "not JSON": lambda n: b"amount=8000&notice=" + n.encode(),
    "empty body": lambda n: b"",
    "truncated JSON": lambda n: callback_body(n, 8000).encode()[:-5],
    "JSON null": lambda n: b"null",
    "JSON array": lambda n: json.dumps([body_of(n)]).encode(),
    "JSON string": lambda n: json.dumps(callback_body(n, 8000)).encode(),
    "deeply nested": lambda n: _deep(100_000),
    "wrong event type": lambda n: json.dumps({**body_of(n), "type": "payment.failed"}).encode(),
    "data not an object": lambda n: json.dumps({**body_of(n), "data": "8000"}).encode(),
    "float amount": lambda n: json.dumps(body_of(n, 8000.0)).encode(),
    "fractional amount": lambda n: json.dumps(body_of(n, 8000.5)).encode(),
    "string amount": lambda n: json.dumps(body_of(n, "8000")).encode(),
    "boolean amount": lambda n: json.dumps(body_of(n, True)).encode(),
    "zero amount": lambda n: json.dumps(body_of(n, 0)).encode(),
    "negative amount": lambda n: json.dumps(body_of(n, -8000)).encode(),
    "huge amount": lambda n: json.dumps(body_of(n, 10**13)).encode(),
    "amount NaN": lambda n: json.dumps(body_of(n, float("nan"))).encode(),
    "currency USD": lambda n: json.dumps(body_of(n, currency="USD")).encode(),
    "missing data": lambda n: json.dumps({k: v for k, v in body_of(n).items() if k != "data"}).encode(),
    "missing type": lambda n: json.dumps({k: v for k, v in body_of(n).items() if k != "type"}).encode(),
    "missing notice_number": lambda n: json.dumps(body_of(n, notice_number=_DROP)).encode(),
    "missing amount": lambda n: json.dumps({**body_of(n), "data": {
        k: v for k, v in body_of(n)["data"].items() if k != "amount"}}).encode(),
    "missing currency": lambda n: json.dumps(body_of(n, currency=_DROP)).encode(),
    "missing paid_at": lambda n: json.dumps(body_of(n, paid_at=_DROP)).encode(),
    "missing bank_reference": lambda n: json.dumps(body_of(n, bank_reference=_DROP)).encode(),
    "blank bank_reference": lambda n: json.dumps(body_of(n, bank_reference="   ")).encode(),
    "bank_reference too long": lambda n: json.dumps(body_of(n, bank_reference="R" * 65)).encode(),
    "payer_name too long": lambda n: json.dumps(body_of(n, payer_name="张" * 101)).encode(),
    "NUL in payer_name": lambda n: json.dumps(body_of(n, payer_name="张\x00三")).encode(),
    "lone surrogate in bank_reference": lambda n: json.dumps(body_of(n, bank_reference="R\ud800")).encode(),
    "naive paid_at": lambda n: json.dumps(body_of(n, paid_at="2026-11-25T10:00:00")).encode(),
    "date-only paid_at": lambda n: json.dumps(body_of(n, paid_at="2026-11-25")).encode(),
    "paid_at not a date": lambda n: json.dumps(body_of(n, paid_at="yesterday")).encode(),
    "paid_at in year 1": lambda n: json.dumps(body_of(n, paid_at="0001-01-01T00:00:00+08:00")).encode(),
    "paid_at in year 9999": lambda n: json.dumps(body_of(n, paid_at="9999-12-31T23:59:59-05:00")).encode(),
    "naive timestamp": lambda n: json.dumps({**body_of(n), "timestamp": "2026-11-25T10:00:00"}).encode(),
}


@pytest.mark.parametrize("make", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_body_after_a_valid_signature_is_400_and_only_a_security_event(
        make: Callable[[str], bytes], bank: Bank, notice_factory: Callable[..., str], db: Database) -> None:
    number = notice_factory()
    raw = make(number)
    before = table_counts(db)
    response = post_signed(bank, raw, "msg_bad")
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    problem = response.json
    assert problem["status"] == 400 and problem["detail"]
    assert problem["type"].rsplit("/", 1)[1] in ("malformed-json", "malformed-callback")
    assert counts_changed(before, table_counts(db)) == {"security_events": 1}
    with db.reading() as session:
        security = session.scalar(select(SecurityEvent))
        assert security is not None and security.bank_code == "ICBC-T" and security.webhook_id == "msg_bad"
    assert notice_status(db, number) == "issued"
    # The bank fixes its body and retries under the same webhook-id: processed, not a 409.
    fixed = callback_body(number, 8000).encode()
    assert post_signed(bank, fixed, "msg_bad").json["result"] == "confirmed"


@pytest.mark.parametrize(("raw", "code"), [
    (b"{not json", "malformed-json"),
    (b"\"just a string\"", "malformed-callback"),
])
def test_the_400_names_the_problem(raw: bytes, code: str, bank: Bank) -> None:
    response = post_signed(bank, raw)
    assert response.json["type"].endswith("/" + code), response.json


def test_a_schema_400_says_which_fields(bank: Bank, notice_factory: Callable[..., str]) -> None:
    raw = json.dumps(body_of(notice_factory(), "8000", paid_at="2026-11-25T10:00:00")).encode()
    errors = post_signed(bank, raw).json["errors"]
    assert set(errors) == {"data.amount", "data.paid_at"}


def test_a_webhook_id_too_long_to_store_is_refused_cleanly(bank: Bank, notice_factory: Callable[..., str],
                                                           db: Database) -> None:
    number = notice_factory()
    before = table_counts(db)
    response = post_signed(bank, callback_body(number, 8000).encode(), "m" * 300)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    assert counts_changed(before, table_counts(db)) == {"security_events": 1}


@pytest.mark.parametrize("webhook_id", ["msg\x00nul", "msg\x01ctl", "msg\x7fdel"])
def test_a_webhook_id_with_control_characters_is_refused_cleanly(webhook_id: str, bank: Bank,
                                                                 notice_factory: Callable[..., str],
                                                                 db: Database) -> None:
    number = notice_factory()
    before = table_counts(db)
    response = post_signed(bank, callback_body(number, 8000).encode(), webhook_id)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert counts_changed(before, table_counts(db)) == {"security_events": 1}
    with db.reading() as session:
        stored = session.scalar(select(SecurityEvent.webhook_id))
        assert stored is not None and stored.startswith("msg") and stored.isprintable()


def test_a_body_too_large_is_refused_before_anything(bank: Bank, db: Database, app: Any) -> None:
    raw = b" " * (app.config["MAX_CONTENT_LENGTH"] + 1)
    before = table_counts(db)
    response = post_signed(bank, raw)
    assert response.status_code == 413
    assert response.mimetype == "application/problem+json"
    assert table_counts(db) == before


# --- queries -----------------------------------------------------------------------------------------

def test_a_signed_query_says_what_is_due_with_the_payer_masked(bank: Bank, notice_factory: Callable[..., str],
                                                               db: Database) -> None:
    number = notice_factory(payer={"name": "欧阳娜娜"})
    before = table_counts(db)
    spaced = " ".join(number[i:i + 4] for i in range(0, 20, 4))
    response = bank.query(spaced)
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.json
    assert body == {"notice_number": number, "status": "issued", "total": 8000, "currency": "CNY",
                    "payer_name": "欧***", "department": body["department"],
                    "due_date": body["due_date"]}
    assert body["department"] and date.fromisoformat(body["due_date"]) >= today(TZ)
    assert "欧阳" not in response.get_data(as_text=True)
    assert table_counts(db) == before, "a query writes nothing"


def test_a_query_tells_paid_and_expired(bank: Bank, notice_factory: Callable[..., str], db: Database) -> None:
    paid, overdue = notice_factory(), notice_factory(overdue=True)
    assert bank.pay(paid, 8000, webhook_id="p").json["result"] == "confirmed"
    assert bank.query(paid).json["status"] == "paid"
    assert bank.query(overdue).json["status"] == "expired"


@pytest.mark.parametrize(("number", "status", "code"), [
    (MISTYPED, 422, "invalid-notice-number"),
    ("12345", 422, "invalid-notice-number"),
    (UNKNOWN, 404, "not-found"),
])
def test_a_query_for_a_mistyped_or_unknown_number(bank: Bank, number: str, status: int, code: str) -> None:
    response = bank.query(number)
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    assert response.json["type"].endswith("/" + code)


def test_a_query_must_be_signed_by_this_bank(bank: Bank, other_bank: Bank, notice_factory: Callable[..., str],
                                             db: Database) -> None:
    number = notice_factory()
    body = json.dumps({"notice_number": number}).encode()
    before = table_counts(db)
    unsigned = bank.client.post(f"/webhooks/bank/{bank.code}/query", data=body,
                                headers={"content-type": "application/json"})
    assert unsigned.status_code == 401 and unsigned.mimetype == "application/problem+json"
    assert bank.query(number, secret=other_bank.secret).status_code == 401
    stale = sign(bank.secret, "q-old", body, now_seconds() - 301)
    assert bank.client.post(f"/webhooks/bank/{bank.code}/query", data=body, headers=stale).status_code == 401
    assert table_counts(db) == before


@pytest.mark.parametrize("raw", [b"{oops", b"[]", b"{}", b'{"notice_number": 99000126}'])
def test_a_malformed_query_is_400(bank: Bank, raw: bytes) -> None:
    response = bank.client.post(f"/webhooks/bank/{bank.code}/query", data=raw,
                                headers=sign(bank.secret, "q", raw, now_seconds()))
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
