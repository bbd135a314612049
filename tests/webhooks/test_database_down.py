"""The database unavailable → 503 problem+json with Retry-After (the bank retries on its
schedule), nothing partial written, and the same event retried afterwards is confirmed once."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, func, select

from core.clock import today
from core.db import Database
from payments.models import Payment
from receipts.models import Receipt
from tests.conftest import make_test_app, table_counts
from tests.webhooks.conftest import TZ, Bank, now_seconds, sign
from webhooks.simulator import callback_body

UNREACHABLE_POSTGRES = "postgresql+psycopg://root@127.0.0.1:1/feeservice_nowhere"


@contextmanager
def database_refuses_connections(db: Database) -> Iterator[None]:
    """As if the server were stopped: every new connection fails; pooled ones are gone."""
    engine = db.engine

    def refuse(*_args: Any) -> None:
        raise engine.dialect.loaded_dbapi.OperationalError("could not connect to server: Connection refused")

    engine.dispose()
    event.listen(engine, "do_connect", refuse)
    try:
        yield
    finally:
        event.remove(engine, "do_connect", refuse)
        engine.dispose()


@contextmanager
def statement_fails(db: Database, table: str) -> Iterator[list[str]]:
    """The connection drops at the INSERT into `table` (also when it is the data-modifying CTE of a
    statement, as the audit entry's on PostgreSQL), after the earlier writes of the transaction
    went through; yields the statements that did run before it."""
    engine = db.engine
    ran: list[str] = []
    insert = re.compile(rf"^\s*(WITH\s+\w+\s+AS\s*\(\s*)?INSERT INTO {table}\s", re.IGNORECASE)

    def fail(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if insert.match(statement):
            raise engine.dialect.loaded_dbapi.OperationalError("server closed the connection unexpectedly")
        ran.append(statement)

    event.listen(engine, "before_cursor_execute", fail)
    try:
        yield ran
    finally:
        event.remove(engine, "before_cursor_execute", fail)


def assert_503(response: Any) -> None:
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    assert response.json["type"].endswith("/unavailable") and response.json["status"] == 503
    assert int(response.headers["Retry-After"]) > 0


def assert_confirmed_once(bank: Bank, db: Database, body: bytes, webhook_id: str) -> None:
    retried = bank.post_raw(body, sign(bank.secret, webhook_id, body, now_seconds()))
    assert retried.status_code == 200 and retried.json["result"] == "confirmed", retried.get_data(as_text=True)
    # The failed attempt took no receipt number: the first one is still free.
    assert retried.json["receipt_number"] == f"{today(TZ).year}-00000001"
    again = bank.post_raw(body, sign(bank.secret, webhook_id, body, now_seconds()))
    assert again.json == {"result": "duplicate"}
    with db.reading() as session:
        assert session.scalar(select(func.count()).select_from(Payment)) == 1
        assert session.scalar(select(func.count()).select_from(Receipt)) == 1


def test_database_stopped_is_503_and_the_retry_is_confirmed_once(
        bank: Bank, notice_factory: Callable[..., str], db: Database) -> None:
    number = notice_factory()
    body = callback_body(number, 8000).encode()
    before = table_counts(db)
    with database_refuses_connections(db):
        assert_503(bank.post_raw(body, sign(bank.secret, "msg_down", body, now_seconds())))
        # A forged callback cannot be told apart without the database either: 503, not 401.
        assert_503(bank.post_raw(body, sign("whsec_" + "A" * 44, "msg_x", body, now_seconds())))
        query = bank.query(number)
        assert_503(query)
    assert table_counts(db) == before
    assert_confirmed_once(bank, db, body, "msg_down")


@pytest.mark.parametrize("table", ["bank_events", "payments", "receipts", "audit_entries", "outbox_events"])
def test_connection_lost_mid_transaction_leaves_nothing_partial(
        table: str, bank: Bank, notice_factory: Callable[..., str], db: Database) -> None:
    number = notice_factory()
    body = callback_body(number, 8000).encode()
    before = table_counts(db)
    with statement_fails(db, table) as ran:
        assert_503(bank.post_raw(body, sign(bank.secret, "msg_mid", body, now_seconds())))
    if table != "bank_events":
        assert any(s.lstrip().upper().startswith("INSERT INTO BANK_EVENTS") for s in ran), \
            "the failure must come after earlier writes of the same transaction"
    assert table_counts(db) == before, "a failed transaction leaves nothing behind"
    assert_confirmed_once(bank, db, body, "msg_mid")


def test_a_flagged_payment_is_not_half_written_either(bank: Bank, notice_factory: Callable[..., str],
                                                      db: Database) -> None:
    number = notice_factory()
    body = callback_body(number, 7000).encode()  # amount mismatch → flagged
    before = table_counts(db)
    with statement_fails(db, "audit_entries"):
        assert_503(bank.post_raw(body, sign(bank.secret, "msg_f", body, now_seconds())))
    assert table_counts(db) == before
    retried = bank.post_raw(body, sign(bank.secret, "msg_f", body, now_seconds()))
    assert retried.json == {"result": "flagged", "reason": "amount-mismatch"}


def test_an_unreachable_postgresql_is_503() -> None:
    app = make_test_app(UNREACHABLE_POSTGRES)
    try:
        client = app.test_client()
        body = b'{"notice_number": "99000126000000000119"}'
        for path in ("/webhooks/bank/ICBC-T", "/webhooks/bank/ICBC-T/query"):
            response = client.post(path, data=body, headers=sign("whsec_" + "A" * 44, "m", body, now_seconds()))
            assert_503(response)
    finally:
        app.extensions["db"].engine.dispose()
